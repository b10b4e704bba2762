package adcpa2a_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2aclient"
	"github.com/a2aproject/a2a-go/a2aclient/agentcard"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpa2a"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/idem/backend"
	"github.com/adcp-go/idempotency/memstore"
)

// tokens are the bearer tokens the test servers accept, and their
// principals.
var tokens = map[string]string{"tok-a": "agent-a", "tok-b": "agent-b"}

func bearerPrincipal(r *http.Request) string {
	return tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
}

type mediaBuy struct {
	MediaBuyID string `json:"media_buy_id,omitempty"`
	Status     string `json:"status"`
	TaskID     string `json:"task_id,omitempty"`
	Principal  string `json:"principal,omitempty"`
}

// seller is one idempotency store with the runners of three tasks; the
// same runners can be served over A2A and MCP.
type seller struct {
	store *memstore.Store
	guard *idem.Guard
	runs  atomic.Int64 // runs of create_media_buy's work
	// gate, when set, is waited on by create_media_buy's work.
	gate chan struct{}

	create, list, capabilities adcp.Runner
}

// newSeller builds a seller on memstore; cfg defaults to an unlimited
// key rate.
func newSeller(t testing.TB, cfg *idem.Config) *seller {
	t.Helper()
	s := &seller{store: memstore.New(&memstore.Options{SweepInterval: -1})}
	t.Cleanup(func() { _ = s.store.Close() })
	if cfg == nil {
		cfg = &idem.Config{Limiter: idem.Unlimited}
	}
	g, err := idem.NewGuard(s.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.guard = g
	s.create = adcp.Mutating(g, nil, func(_ context.Context, c *adcp.Call) (mediaBuy, error) {
		var in struct {
			Budget float64 `json:"budget"`
		}
		if err := c.Decode(&in); err != nil {
			return mediaBuy{}, err
		}
		if in.Budget < 0 {
			return mediaBuy{}, &adcp.Error{Code: "INVALID_REQUEST", Message: "budget must not be negative", Recovery: "correctable", Field: "budget"}
		}
		if s.gate != nil {
			<-s.gate
		}
		n := s.runs.Add(1)
		if in.Budget == 7 { // an IO to sign first
			return mediaBuy{Status: "submitted", TaskID: fmt.Sprintf("adcp-task-%d", n)}, nil
		}
		return mediaBuy{MediaBuyID: fmt.Sprintf("mb_%d", n), Status: "pending_creatives", Principal: c.Principal}, nil
	})
	s.list = adcp.ReadOnly(nil, func(_ context.Context, c *adcp.Call) (map[string]any, error) {
		return map[string]any{"media_buys": []any{}, "principal": c.Principal}, nil
	})
	s.capabilities = adcp.ReadOnly(nil, func(context.Context, *adcp.Call) (map[string]any, error) {
		return map[string]any{"adcp": map[string]any{"major_versions": []int{3}}}, nil
	})
	return s
}

func (s *seller) skills() []adcpa2a.Skill {
	return []adcpa2a.Skill{
		{ID: "create_media_buy", Description: "Create a media buy.", Run: s.create},
		{ID: "get_media_buys", Run: s.list},
		{ID: "get_adcp_capabilities", Run: s.capabilities},
	}
}

// a2aServer serves the seller's skills at /a2a of an httptest server, with
// the card there and at the root, and principals from bearer tokens
// (unless opts says otherwise).
type a2aServer struct {
	*httptest.Server
	endpoint string // the JSON-RPC URL
}

func serve(t testing.TB, s *seller, opts *adcpa2a.Options) *a2aServer {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if opts == nil {
		opts = &adcpa2a.Options{Principal: bearerPrincipal}
	}
	h, err := adcpa2a.NewHandler(adcpa2a.Agent{Name: "Test seller", Description: "Sells test inventory.", URL: srv.URL + "/a2a"}, s.skills(), opts)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/a2a", h)
	mux.Handle("/a2a/.well-known/agent-card.json", h)
	mux.Handle("/.well-known/agent-card.json", h)
	return &a2aServer{Server: srv, endpoint: srv.URL + "/a2a"}
}

// buyer is an a2a-go client of the server, authenticated with token
// through the card's bearer scheme.
type buyer struct {
	client *a2aclient.Client
	ctx    context.Context
}

func newBuyer(t testing.TB, srv *a2aServer, token string) *buyer {
	t.Helper()
	ctx := context.Background()
	card, err := agentcard.NewResolver(srv.Client()).Resolve(ctx, srv.endpoint)
	if err != nil {
		t.Fatalf("resolving the agent card: %v", err)
	}
	creds := a2aclient.NewInMemoryCredentialsStore()
	creds.Set("session", "bearer", a2aclient.AuthCredential(token))
	client, err := a2aclient.NewFromCard(ctx, card,
		a2aclient.WithJSONRPCTransport(srv.Client()),
		a2aclient.WithInterceptors(&a2aclient.AuthInterceptor{Service: creds}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Destroy() })
	return &buyer{client: client, ctx: a2aclient.WithSessionID(ctx, "session")}
}

// invoke sends one DataPart {skill, member: args}.
func (b *buyer) invoke(t testing.TB, skill, member string, args map[string]any) (*a2a.Task, map[string]any) {
	t.Helper()
	task, data, err := b.tryInvoke(skill, member, args)
	if err != nil {
		t.Fatalf("message/send %s: %v", skill, err)
	}
	return task, data
}

func (b *buyer) tryInvoke(skill, member string, args map[string]any) (*a2a.Task, map[string]any, error) {
	msg := a2a.NewMessage(a2a.MessageRoleUser, a2a.DataPart{Data: map[string]any{"skill": skill, member: args}})
	res, err := b.client.SendMessage(b.ctx, &a2a.MessageSendParams{Message: msg})
	if err != nil {
		return nil, nil, err
	}
	task, ok := res.(*a2a.Task)
	if !ok {
		return nil, nil, fmt.Errorf("message/send answered %T, want a task", res)
	}
	data, err := taskData(task)
	return task, data, err
}

// taskData checks the shape of an answered task and returns its DataPart.
func taskData(task *a2a.Task) (map[string]any, error) {
	if task.Status.State != a2a.TaskStateCompleted || len(task.Artifacts) != 1 || len(task.Artifacts[0].Parts) != 1 {
		return nil, fmt.Errorf("task %+v: want state completed and one artifact with one part", task)
	}
	part, ok := task.Artifacts[0].Parts[0].(a2a.DataPart)
	if !ok {
		return nil, fmt.Errorf("artifact part is %T, want a DataPart", task.Artifacts[0].Parts[0])
	}
	raw, err := json.Marshal(part.Data)
	if err != nil {
		return nil, err
	}
	var data map[string]any
	return data, json.Unmarshal(raw, &data)
}

// adcpError is the adcp_error object of an answer, or nil.
func adcpError(data map[string]any) map[string]any {
	e, _ := data["adcp_error"].(map[string]any)
	return e
}

// post sends a raw JSON-RPC body to the server with a bearer token (none
// if empty) and decodes the answer.
func post(t testing.TB, url, token, body string, header ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer %q (HTTP %d) is not a JSON object: %v", raw, resp.StatusCode, err)
	}
	return resp, out
}

// sendBody is a message/send request whose message has the given parts
// (JSON).
func sendBody(parts ...string) string {
	return `{"jsonrpc":"2.0","id":7,"method":"message/send","params":{"message":{"kind":"message","messageId":"m1","role":"user","parts":[` +
		strings.Join(parts, ",") + `]}}}`
}

// rpcError returns the error object of a JSON-RPC answer and its
// adcp_error, failing the test if there is none.
func rpcError(t testing.TB, answer map[string]any) (e, adcpErr map[string]any) {
	t.Helper()
	e, _ = answer["error"].(map[string]any)
	if e == nil {
		raw, _ := json.Marshal(answer)
		t.Fatalf("answer %s is not a JSON-RPC error", raw)
	}
	data, _ := e["data"].(map[string]any)
	adcpErr, _ = data["adcp_error"].(map[string]any)
	return e, adcpErr
}

func compactJSON(v any) string {
	var b bytes.Buffer
	raw, _ := json.Marshal(v)
	_ = json.Compact(&b, raw)
	return b.String()
}

var zeroTime time.Time

func ref(principal, key string) backend.Ref { return backend.Ref{Principal: principal, Key: key} }

// conflictOnly reports whether e is an IDEMPOTENCY_CONFLICT that says
// nothing beyond its code, its message and (as package idem decides) its
// recovery class: no field, no details.
func conflictOnly(e map[string]any) bool {
	if e["code"] != "IDEMPOTENCY_CONFLICT" || e["message"] == "" {
		return false
	}
	for k := range e {
		if k != "code" && k != "message" && k != "recovery" {
			return false
		}
	}
	return true
}
