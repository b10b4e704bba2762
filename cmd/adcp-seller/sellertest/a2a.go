package sellertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2aclient"
	"github.com/a2aproject/a2a-go/a2aclient/agentcard"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Client calls the seller's tools over one transport: an MCP session
// (*mcp.ClientSession, from Connect) or an A2A client (*A2AClient, from
// ConnectA2A). Dial picks the transport from the URL.
type Client interface {
	CallTool(ctx context.Context, params *mcp.CallToolParams) (*mcp.CallToolResult, error)
}

// Dial connects to url with token: over A2A when url is the seller's A2A
// endpoint (its path ends in /a2a), over MCP otherwise.
func Dial(t testing.TB, url, token string) Client {
	t.Helper()
	if IsA2A(url) {
		return ConnectA2A(t, url, token)
	}
	return Connect(t, url, token)
}

// IsA2A reports whether url is an A2A endpoint (its path ends in /a2a).
func IsA2A(url string) bool { return strings.HasSuffix(url, "/a2a") }

// baseURL is the seller's origin, from its MCP or A2A URL.
func baseURL(url string) string {
	return strings.TrimSuffix(strings.TrimSuffix(url, "/mcp"), "/a2a")
}

// A2AClient calls the seller's skills over A2A with the a2a-go client
// (A2A 0.3 JSON-RPC, the protocol generation of the AdCP runner's
// client). It implements Client, so that every scenario runs over A2A
// unchanged: a tool call is a message/send of one DataPart {"skill": tool,
// Member: arguments}, and the answer is the completed task's artifact,
// whose DataPart is the same object MCP returns as structuredContent.
type A2AClient struct {
	client *a2aclient.Client
	// Member is the DataPart member that carries the arguments: "input"
	// (the AdCP A2A profile, the default) or "parameters" (what the AdCP
	// client SDKs and the runner send).
	Member string
}

// ConnectA2A resolves the agent card under url (the seller's A2A
// endpoint, …/a2a, where the runner looks too) and returns a client of the
// JSON-RPC endpoint the card names, authenticated with token.
func ConnectA2A(t testing.TB, url, token string) *A2AClient {
	t.Helper()
	hc := &http.Client{Transport: bearer{token: token}}
	ctx := context.Background()
	card, err := agentcard.NewResolver(http.DefaultClient).Resolve(ctx, url)
	if err != nil {
		t.Fatalf("A2A: resolving the agent card under %s: %v", url, err)
	}
	if card.URL != url {
		t.Fatalf("A2A: the agent card names %s as its endpoint, want %s", card.URL, url)
	}
	c, err := a2aclient.NewFromCard(ctx, card, a2aclient.WithJSONRPCTransport(hc))
	if err != nil {
		t.Fatalf("A2A: client: %v", err)
	}
	t.Cleanup(func() { _ = c.Destroy() })
	return &A2AClient{client: c, Member: "input"}
}

// CallTool implements Client: message/send of the skill params.Name with
// params.Arguments ({} when nil). An AdCP error answer is a completed task
// whose artifact is named "error"; it becomes IsError. Anything else than
// a completed task with one artifact holding one DataPart, or an error
// artifact without adcp_error (or the reverse), is an error.
func (c *A2AClient) CallTool(ctx context.Context, params *mcp.CallToolParams) (*mcp.CallToolResult, error) {
	args := params.Arguments
	if m, ok := args.(map[string]any); args == nil || ok && m == nil {
		args = map[string]any{} // MCP sends null: arguments are optional there
	}
	msg := a2a.NewMessage(a2a.MessageRoleUser, a2a.DataPart{Data: map[string]any{"skill": params.Name, c.Member: args}})
	res, err := c.client.SendMessage(ctx, &a2a.MessageSendParams{Message: msg})
	if err != nil {
		return nil, fmt.Errorf("A2A message/send %s: %w", params.Name, err)
	}
	task, ok := res.(*a2a.Task)
	if !ok {
		return nil, fmt.Errorf("A2A message/send %s: answered %T, want a task", params.Name, res)
	}
	if task.Status.State != a2a.TaskStateCompleted || len(task.Artifacts) != 1 || len(task.Artifacts[0].Parts) != 1 {
		raw, _ := json.Marshal(task)
		return nil, fmt.Errorf("A2A message/send %s: task %s, want state completed with one artifact of one part", params.Name, raw)
	}
	art := task.Artifacts[0]
	part, ok := art.Parts[0].(a2a.DataPart)
	if !ok {
		return nil, fmt.Errorf("A2A message/send %s: the artifact's part is %T, want a DataPart", params.Name, art.Parts[0])
	}
	raw, err := json.Marshal(part.Data)
	if err != nil {
		return nil, err
	}
	_, hasError := part.Data["adcp_error"]
	if isError := art.Name == "error"; isError != hasError {
		return nil, fmt.Errorf("A2A message/send %s: artifact %q with data %s: an error artifact must hold adcp_error, and only it", params.Name, art.Name, raw)
	}
	if status, _ := part.Data["status"].(string); status == "submitted" && art.Name != "submitted" {
		return nil, fmt.Errorf("A2A message/send %s: a submitted answer in artifact %q, want \"submitted\"", params.Name, art.Name)
	} else if status == "submitted" && art.Metadata["adcp_task_id"] != part.Data["task_id"] {
		return nil, fmt.Errorf("A2A message/send %s: the artifact's adcp_task_id %v is not the answer's task_id %v", params.Name, art.Metadata["adcp_task_id"], part.Data["task_id"])
	}
	return &mcp.CallToolResult{IsError: hasError, StructuredContent: json.RawMessage(raw)}, nil
}

// AgentCard fetches the agent card under url (an A2A endpoint) without
// credentials: it is public.
func AgentCard(t testing.TB, url string) *a2a.AgentCard {
	t.Helper()
	card, err := agentcard.NewResolver(http.DefaultClient).Resolve(context.Background(), url)
	if err != nil {
		t.Fatalf("A2A: the agent card under %s: %v", url, err)
	}
	return card
}

// bareMessageSend is the runner's missing-key probe over A2A, as the 6.11
// runner sends it: message/send with {skill, parameters}, Accept:
// application/json, the token in Authorization and in x-adcp-auth. The
// AdCP error comes back inside a completed task; without a valid token the
// answer is 401; a malformed invocation is a JSON-RPC error and stores
// nothing.
func bareMessageSend(t *testing.T, env Env) {
	send := func(data string, header ...string) (int, map[string]any) {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":"probe-1","method":"message/send","params":{"message":{"kind":"message","messageId":"m-probe","role":"user","parts":[{"kind":"data","data":` + data + `}]}}}`
		req, _ := http.NewRequest(http.MethodPost, env.URL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("message/send: HTTP %d, the body is not JSON: %v", resp.StatusCode, err)
		}
		return resp.StatusCode, out
	}
	missingKey := `{"skill":"create_media_buy","parameters":{"packages":[{"product_id":"p","budget":1}],"context":{"correlation_id":"probe"}}}`
	for _, auth := range [][]string{
		{"Authorization", "Bearer " + Token, "X-Adcp-Auth", Token},
		{"X-Adcp-Auth", Token},
	} {
		status, out := send(missingKey, auth...)
		res, _ := out["result"].(map[string]any)
		st, _ := res["status"].(map[string]any)
		arts, _ := res["artifacts"].([]any)
		var data map[string]any
		if len(arts) == 1 {
			parts, _ := arts[0].(map[string]any)["parts"].([]any)
			if len(parts) == 1 {
				data, _ = parts[0].(map[string]any)["data"].(map[string]any)
			}
		}
		e, _ := data["adcp_error"].(map[string]any)
		c, _ := data["context"].(map[string]any)
		if status != http.StatusOK || res["kind"] != "task" || st["state"] != "completed" || arts[0].(map[string]any)["name"] != "error" ||
			e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" || c["correlation_id"] != "probe" {
			raw, _ := json.Marshal(out)
			t.Fatalf("missing-key probe with %s: HTTP %d %s", auth[0], status, raw)
		}
	}
	for name, auth := range map[string][]string{
		"no token":      nil,
		"unknown token": {"Authorization", "Bearer sk_not_a_token_0123456789"},
		"basic auth":    {"Authorization", "Basic " + Token},
	} {
		if status, out := send(missingKey, auth...); status != http.StatusUnauthorized || out["error"] == nil {
			t.Fatalf("%s: HTTP %d %v, want 401 with a JSON-RPC error", name, status, out)
		}
	}
	before := env.Count(Principal)
	for name, data := range map[string]string{
		"no skill":            `{"parameters":` + createJSON(t, newKey("bad")) + `}`,
		"unknown skill":       `{"skill":"create_media_buys","input":` + createJSON(t, newKey("bad")) + `}`,
		"input not an object": `{"skill":"create_media_buy","input":"` + newKey("bad") + `"}`,
		"both members":        `{"skill":"create_media_buy","input":` + createJSON(t, newKey("bad")) + `,"parameters":{}}`,
		"an extra member":     `{"skill":"create_media_buy","input":` + createJSON(t, newKey("bad")) + `,"idempotency_key":"` + newKey("bad") + `"}`,
	} {
		status, out := send(data, "Authorization", "Bearer "+Token)
		e, _ := out["error"].(map[string]any)
		ed, _ := e["data"].(map[string]any)
		ae, _ := ed["adcp_error"].(map[string]any)
		if status != http.StatusOK || e["code"] != -32602.0 || ae["code"] != "INVALID_REQUEST" || out["result"] != nil {
			raw, _ := json.Marshal(out)
			t.Fatalf("%s: HTTP %d %s, want JSON-RPC error -32602 with adcp_error INVALID_REQUEST", name, status, raw)
		}
	}
	if got := env.Count(Principal) - before; got != 0 {
		t.Fatalf("malformed invocations made %d media buys", got)
	}
}

// createJSON is a valid create_media_buy request under key, as JSON.
func createJSON(t *testing.T, key string) string {
	raw, err := json.Marshal(CreateArgs(key, 5, "", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// cardSkills: the agent card, public, at both well-known paths, names the
// A2A endpoint, declares the AdCP extension, and lists exactly the tools
// MCP lists, with the same descriptions (one table serves both).
func cardSkills(t *testing.T, env Env) {
	card := AgentCard(t, env.URL)
	atRoot := AgentCard(t, baseURL(env.URL))
	a, _ := json.Marshal(card)
	b, _ := json.Marshal(atRoot)
	if string(a) != string(b) {
		t.Fatalf("the agent card differs between %s and the origin:\n%s\n%s", env.URL, a, b)
	}
	if card.URL != env.URL || card.ProtocolVersion != "0.3.0" || len(card.Capabilities.Extensions) != 1 ||
		card.Capabilities.Extensions[0].URI != "https://adcontextprotocol.org/extensions/adcp/v3" {
		t.Fatalf("agent card: %s", a)
	}
	tools, err := Connect(t, baseURL(env.URL)+"/mcp", Token).ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, tool := range tools.Tools {
		want[tool.Name] = tool.Description
	}
	got := map[string]string{}
	for _, s := range card.Skills {
		got[s.ID] = s.Description
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(want) < 9 {
		t.Fatalf("the card's skills differ from the MCP tools:\nA2A %v\nMCP %v", got, want)
	}
}
