package adcpa2a_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/a2aproject/a2a-go/a2a"
	"github.com/a2aproject/a2a-go/a2asrv"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpa2a"
)

const key = "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"

func TestFirstCallReplayConflict(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, nil), "tok-a")

	first, data := b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key, "budget": 5, "context": map[string]any{"id": "a"}})
	if adcpError(data) != nil || data["media_buy_id"] != "mb_1" || data["replayed"] != false || compactJSON(data["context"]) != `{"id":"a"}` {
		t.Fatalf("first call: %v", data)
	}
	if a := first.Artifacts[0]; a.Name != "result" || len(a.Extensions) != 1 || a.Extensions[0] != adcpa2a.ExtensionURI || a.Metadata != nil {
		t.Fatalf("first call's artifact: %+v", a)
	}

	// A retry (a new message, another context) replays: same body,
	// replayed true, the retry's own context.
	retry, again := b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key, "budget": 5, "context": map[string]any{"id": "b"}})
	if again["media_buy_id"] != "mb_1" || again["replayed"] != true || compactJSON(again["context"]) != `{"id":"b"}` {
		t.Fatalf("replay: %v", again)
	}
	if retry.ID == first.ID {
		t.Fatalf("the replay reused A2A task id %s", retry.ID)
	}
	delete(data, "replayed")
	delete(again, "replayed")
	delete(data, "context")
	delete(again, "context")
	if compactJSON(data) != compactJSON(again) {
		t.Fatalf("the replay's body %v differs from the first answer %v", again, data)
	}

	// The same key with another payload: IDEMPOTENCY_CONFLICT with code
	// and message only, as a completed task whose artifact is "error".
	conflict, data := b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key, "budget": 6})
	if !conflictOnly(adcpError(data)) || conflict.Artifacts[0].Name != "error" {
		t.Fatalf("conflict: %v (artifact %q), want IDEMPOTENCY_CONFLICT with code and message (and recovery) only", data, conflict.Artifacts[0].Name)
	}
	if _, ok := data["context"]; ok {
		t.Fatalf("the conflict echoed a context the request did not send: %v", data)
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("the work ran %d times, want 1", n)
	}

	// The handler's own AdCP error, and a retry after it (errors are not
	// stored).
	_, data = b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key + "-2", "budget": -1, "context": map[string]any{"id": "c"}})
	if e := adcpError(data); e["code"] != "INVALID_REQUEST" || e["field"] != "budget" || compactJSON(data["context"]) != `{"id":"c"}` {
		t.Fatalf("handler error: %v", data)
	}
	if _, data = b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key + "-2", "budget": 3}); data["replayed"] != false {
		t.Fatalf("retry after an error: %v", data)
	}
}

func TestMissingAndMalformedKey(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, nil), "tok-a")
	_, data := b.invoke(t, "create_media_buy", "input", map[string]any{"budget": 5, "context": map[string]any{"id": "m"}})
	e := adcpError(data)
	if e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" || e["recovery"] != "correctable" || compactJSON(data["context"]) != `{"id":"m"}` {
		t.Fatalf("missing key: %v", data)
	}
	for _, k := range []any{12345678901234567, true, []any{key}, map[string]any{"k": key}, "short"} {
		_, data := b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": k, "budget": 5})
		if e := adcpError(data); e["code"] != "INVALID_REQUEST" || e["field"] != "idempotency_key" {
			t.Fatalf("key %v: %v", k, data)
		}
	}
	if n := s.runs.Load(); n != 0 {
		t.Fatalf("the work ran %d times", n)
	}
}

func TestReadOnlySkill(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, nil), "tok-b")
	task, data := b.invoke(t, "get_media_buys", "input", map[string]any{"context": map[string]any{"id": "r"}})
	if adcpError(data) != nil || data["principal"] != "agent-b" || compactJSON(data["context"]) != `{"id":"r"}` || task.Artifacts[0].Name != "result" {
		t.Fatalf("get_media_buys: %v", data)
	}
	if _, ok := data["replayed"]; ok {
		t.Fatalf("a read-only answer says replayed: %v", data)
	}
}

// The runner's convention {skill, parameters} and the profile's {skill,
// input} reach the same runner with the same arguments, so one key serves
// both; with the profile activated, parameters is refused.
func TestParametersAndInput(t *testing.T) {
	s := newSeller(t, nil)
	srv := serve(t, s, nil)
	b := newBuyer(t, srv, "tok-a")
	args := map[string]any{"idempotency_key": key, "budget": 5}
	if _, data := b.invoke(t, "create_media_buy", "parameters", args); data["replayed"] != false {
		t.Fatalf("parameters: %v", data)
	}
	if _, data := b.invoke(t, "create_media_buy", "input", args); data["replayed"] != true || data["media_buy_id"] != "mb_1" {
		t.Fatalf("input after parameters: %v", data)
	}

	both := sendBody(`{"kind":"data","data":{"skill":"create_media_buy","input":{},"parameters":{}}}`)
	_, answer := post(t, srv.endpoint, "tok-a", both)
	if _, e := rpcError(t, answer); e["code"] != "INVALID_REQUEST" || e["field"] != "input" {
		t.Fatalf("input and parameters: %v", answer)
	}

	params := sendBody(`{"kind":"data","data":{"skill":"get_media_buys","parameters":{}}}`)
	for _, h := range []string{"A2A-Extensions", "X-A2A-Extensions"} {
		resp, answer := post(t, srv.endpoint, "tok-a", params, h, "https://example.com/other, "+adcpa2a.ExtensionURI)
		if _, e := rpcError(t, answer); e["code"] != "INVALID_REQUEST" || e["field"] != "input" || resp.Header.Get(h) != adcpa2a.ExtensionURI {
			t.Fatalf("%s activated, parameters: %v (echoed %q)", h, answer, resp.Header.Get(h))
		}
		input := sendBody(`{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`)
		resp, answer = post(t, srv.endpoint, "tok-a", input, h, adcpa2a.ExtensionURI)
		if answer["result"] == nil || resp.Header.Get(h) != adcpa2a.ExtensionURI {
			t.Fatalf("%s activated, input: %v, echoed %q", h, answer, resp.Header.Get(h))
		}
	}
	// Without activation nothing is echoed.
	if resp, _ := post(t, srv.endpoint, "tok-a", params); resp.Header.Get("A2A-Extensions") != "" || resp.Header.Get("X-A2A-Extensions") != "" {
		t.Fatalf("an unactivated request got the extension header echoed")
	}
}

// Malformed invocations never reach a runner: each gets a JSON-RPC error
// -32602 whose data names an AdCP INVALID_REQUEST.
func TestMalformedInvocations(t *testing.T) {
	s := newSeller(t, nil)
	srv := serve(t, s, nil)
	input := `"input":{"idempotency_key":"` + key + `","budget":5}`
	for name, body := range map[string]string{
		"text only":         sendBody(`{"kind":"text","text":"create a media buy for 5 dollars"}`),
		"no parts":          sendBody(),
		"two DataParts":     sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`, `{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`),
		"a file part":       sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`, `{"kind":"file","file":{"uri":"https://x"}}`),
		"missing skill":     sendBody(`{"kind":"data","data":{` + input + `}}`),
		"empty skill":       sendBody(`{"kind":"data","data":{"skill":"",` + input + `}}`),
		"skill not string":  sendBody(`{"kind":"data","data":{"skill":["create_media_buy"],` + input + `}}`),
		"unknown skill":     sendBody(`{"kind":"data","data":{"skill":"delete_everything",` + input + `}}`),
		"skill twice":       sendBody(`{"kind":"data","data":{"skill":"get_media_buys","skill":"create_media_buy",` + input + `}}`),
		"input not object":  sendBody(`{"kind":"data","data":{"skill":"create_media_buy","input":"` + key + `"}}`),
		"input null":        sendBody(`{"kind":"data","data":{"skill":"create_media_buy","input":null}}`),
		"no input":          sendBody(`{"kind":"data","data":{"skill":"create_media_buy"}}`),
		"unknown member":    sendBody(`{"kind":"data","data":{"skill":"create_media_buy",` + input + `,"idempotency_key":"` + key + `"}}`),
		"data not object":   sendBody(`{"kind":"data","data":[1]}`),
		"unknown part kind": sendBody(`{"kind":"video","data":{"skill":"create_media_buy",` + input + `}}`),
		"no message":        `{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}`,
	} {
		t.Run(name, func(t *testing.T) {
			resp, answer := post(t, srv.endpoint, "tok-a", body)
			e, ae := rpcError(t, answer)
			if resp.StatusCode != http.StatusOK || e["code"] != float64(-32602) || ae["code"] != "INVALID_REQUEST" || ae["recovery"] != "correctable" {
				t.Fatalf("HTTP %d %v", resp.StatusCode, answer)
			}
			msg, _ := e["message"].(string)
			if data, _ := e["data"].(map[string]any); msg == "" || data["error"] != msg || strings.Contains(msg, key) || strings.Contains(msg, "delete_everything") {
				t.Fatalf("error %v: want a message, repeated as data.error, echoing nothing", e)
			}
			if name != "no message" && answer["id"] != float64(7) {
				t.Fatalf("answer id %v, want 7", answer["id"])
			}
		})
	}
	if n := s.runs.Load(); n != 0 {
		t.Fatalf("malformed invocations ran the work %d times", n)
	}
	if e, err := s.store.Get(context.Background(), ref("agent-a", key), zeroTime); err != nil || e != nil {
		t.Fatalf("malformed invocations stored %+v (%v)", e, err)
	}
}

// Invoked names the skill of a message/send exactly when the handler gets
// as far as looking it up: malformed envelopes and invocations name none,
// and an unknown skill or bad input is still named (the handler refuses it
// after the lookup). FuzzA2ARequest checks that every skill that runs is
// the one Invoked names.
func TestInvoked(t *testing.T) {
	input := `"input":{"idempotency_key":"` + key + `","budget":5}`
	for name, tc := range map[string]struct{ body, method, skill string }{
		"input":                {sendBody(`{"kind":"data","data":{"skill":"create_media_buy",` + input + `}}`), "message/send", "create_media_buy"},
		"parameters":           {sendBody(`{"kind":"data","data":{"skill":"create_media_buy","parameters":{}}}`), "message/send", "create_media_buy"},
		"text beside the data": {sendBody(`{"kind":"text","text":"hi"}`, `{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`), "message/send", "get_media_buys"},
		"unknown skill":        {sendBody(`{"kind":"data","data":{"skill":"delete_everything",` + input + `}}`), "message/send", "delete_everything"},
		"input not object":     {sendBody(`{"kind":"data","data":{"skill":"create_media_buy","input":"x"}}`), "message/send", "create_media_buy"},
		"no input":             {sendBody(`{"kind":"data","data":{"skill":"create_media_buy"}}`), "message/send", "create_media_buy"},
		"text only":            {sendBody(`{"kind":"text","text":"buy"}`), "message/send", ""},
		"two DataParts":        {sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`, `{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`), "message/send", ""},
		"a file part":          {sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`, `{"kind":"file","file":{"uri":"https://x"}}`), "message/send", ""},
		"skill twice":          {sendBody(`{"kind":"data","data":{"skill":"get_media_buys","skill":"create_media_buy",` + input + `}}`), "message/send", ""},
		"unknown member":       {sendBody(`{"kind":"data","data":{"skill":"create_media_buy",` + input + `,"x":1}}`), "message/send", ""},
		"empty skill":          {sendBody(`{"kind":"data","data":{"skill":"",` + input + `}}`), "message/send", ""},
		"too many parts":       {sendBody(strings.Repeat(`{"kind":"text","text":"x"},`, 16) + `{"kind":"data","data":{"skill":"create_media_buy",` + input + `}}`), "message/send", ""},
		"no message":           {`{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}`, "message/send", ""},
		"not JSON-RPC 2.0":     {strings.Replace(sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`), `"2.0"`, `"1.0"`, 1), "message/send", ""},
		"object id":            {strings.Replace(sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`), `"id":7`, `"id":{}`, 1), "message/send", ""},
		"streaming":            {strings.Replace(sendBody(`{"kind":"data","data":{"skill":"create_media_buy",`+input+`}}`), "message/send", "message/stream", 1), "message/stream", ""},
		"tasks/get":            {`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"t"}}`, "tasks/get", ""},
		"not JSON":             {`{"jsonrpc":"2.0",`, "", ""},
		"a batch":              {`[{"jsonrpc":"2.0","id":1,"method":"tasks/get"}]`, "", ""},
	} {
		if method, skill := adcpa2a.Invoked([]byte(tc.body)); method != tc.method || skill != tc.skill {
			t.Errorf("%s: Invoked = %q, %q; want %q, %q", name, method, skill, tc.method, tc.skill)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	s := newSeller(t, nil)
	srv := serve(t, s, &adcpa2a.Options{Principal: bearerPrincipal, MaxBodyBytes: 4 << 10})
	for name, tc := range map[string]struct {
		body   string
		status int
		code   float64
	}{
		"not JSON":           {`{"jsonrpc":"2.0",`, 200, -32700},
		"trailing garbage":   {`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"x"}} x`, 200, -32700},
		"a batch":            {`[{"jsonrpc":"2.0","id":1,"method":"tasks/get"}]`, 200, -32600},
		"not JSON-RPC 2.0":   {`{"jsonrpc":"1.0","id":1,"method":"tasks/get"}`, 200, -32600},
		"no method":          {`{"jsonrpc":"2.0","id":1}`, 200, -32600},
		"object id":          {`{"jsonrpc":"2.0","id":{},"method":"tasks/get"}`, 200, -32600},
		"unknown method":     {`{"jsonrpc":"2.0","id":1,"method":"tasks/list"}`, 200, -32601},
		"streaming":          {strings.Replace(sendBody(`{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`), "message/send", "message/stream", 1), 200, -32004},
		"oversized":          {sendBody(`{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `","brand":"` + strings.Repeat("x", 5<<10) + `"}}}`), 413, -32600},
		"push configuration": {`{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"configuration":{"pushNotificationConfig":{"url":"https://buyer.example/hook"}},"message":{"kind":"message","messageId":"m","role":"user","parts":[{"kind":"data","data":{"skill":"create_media_buy","input":{"idempotency_key":"` + key + `"}}}]}}}`, 200, -32003},
	} {
		t.Run(name, func(t *testing.T) {
			resp, answer := post(t, srv.endpoint, "tok-a", tc.body)
			e, _ := rpcError(t, answer)
			if resp.StatusCode != tc.status || e["code"] != tc.code || e["message"] == "" {
				t.Fatalf("HTTP %d %v, want HTTP %d and code %v", resp.StatusCode, answer, tc.status, tc.code)
			}
		})
	}
	if n := s.runs.Load(); n != 0 {
		t.Fatalf("malformed requests ran the work %d times", n)
	}
	if e, err := s.store.Get(context.Background(), ref("agent-a", key), zeroTime); err != nil || e != nil {
		t.Fatalf("malformed requests stored %+v (%v)", e, err)
	}
	if resp, err := http.Get(srv.endpoint); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET of the JSON-RPC endpoint: %v %v", resp, err)
	}
}

func TestMissingPrincipalFailsClosed(t *testing.T) {
	s := newSeller(t, nil)
	srv := serve(t, s, nil)
	body := sendBody(`{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`)
	for _, token := range []string{"", "tok-unknown"} {
		resp, answer := post(t, srv.endpoint, token, body)
		_, e := rpcError(t, answer)
		if resp.StatusCode != http.StatusUnauthorized || e["code"] != "AUTH_REQUIRED" || resp.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Fatalf("token %q: HTTP %d %v", token, resp.StatusCode, answer)
		}
	}
	// The card stays public.
	if resp, err := http.Get(srv.URL + adcpa2a.AgentCardPath); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the card without a token: %v %v", resp, err)
	}
}

// Keys and tasks are per principal: the same key from two callers runs
// twice, and one caller cannot read the other's task.
func TestPrincipalIsolation(t *testing.T) {
	s := newSeller(t, nil)
	srv := serve(t, s, nil)
	a, b := newBuyer(t, srv, "tok-a"), newBuyer(t, srv, "tok-b")
	args := map[string]any{"idempotency_key": key, "budget": 5}
	taskA, dataA := a.invoke(t, "create_media_buy", "input", args)
	_, dataB := b.invoke(t, "create_media_buy", "input", args)
	if dataA["replayed"] != false || dataB["replayed"] != false || dataA["media_buy_id"] == dataB["media_buy_id"] ||
		dataA["principal"] != "agent-a" || dataB["principal"] != "agent-b" {
		t.Fatalf("agent-a got %v, agent-b got %v; want two fresh runs", dataA, dataB)
	}
	if got, err := a.client.GetTask(a.ctx, &a2a.TaskQueryParams{ID: taskA.ID}); err != nil || got.ID != taskA.ID {
		t.Fatalf("tasks/get of its own task: %v, %v", got, err)
	}
	if got, err := b.client.GetTask(b.ctx, &a2a.TaskQueryParams{ID: taskA.ID}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("tasks/get of another principal's task: %v, %v; want task not found", got, err)
	}
	if got, err := b.client.CancelTask(b.ctx, &a2a.TaskIDParams{ID: taskA.ID}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("tasks/cancel of another principal's task: %v, %v; want task not found", got, err)
	}
}

func TestTasksGetAndCancel(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, nil), "tok-a")
	task, data := b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key, "budget": 5, "context": map[string]any{"id": "g"}})
	got, err := b.client.GetTask(b.ctx, &a2a.TaskQueryParams{ID: task.ID})
	if err != nil {
		t.Fatal(err)
	}
	gotData, err := taskData(got)
	if err != nil || compactJSON(gotData) != compactJSON(data) || got.ContextID != task.ContextID || len(got.History) != 0 {
		t.Fatalf("tasks/get: %+v %v (%v), want the answered task without history", got, gotData, err)
	}
	if _, err := b.client.CancelTask(b.ctx, &a2a.TaskIDParams{ID: task.ID}); !errors.Is(err, a2a.ErrTaskNotCancelable) {
		t.Fatalf("tasks/cancel: %v, want task cannot be canceled", err)
	}
	// A non-blocking send gets the task at once: it is already complete.
	nonBlocking := false
	msg0 := a2a.NewMessage(a2a.MessageRoleUser, a2a.DataPart{Data: map[string]any{"skill": "get_media_buys", "input": map[string]any{}}})
	res, err := b.client.SendMessage(b.ctx, &a2a.MessageSendParams{Message: msg0, Config: &a2a.MessageSendConfig{Blocking: &nonBlocking}})
	if task, ok := res.(*a2a.Task); err != nil || !ok || task.Status.State != a2a.TaskStateCompleted {
		t.Fatalf("non-blocking send: %v, %v", res, err)
	}
	if _, err := b.client.GetTask(b.ctx, &a2a.TaskQueryParams{ID: "no-such-task"}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("tasks/get of an unknown task: %v", err)
	}
	// A message continuing a completed task is refused, and runs nothing.
	msg := a2a.NewMessageForTask(a2a.MessageRoleUser, task, a2a.DataPart{Data: map[string]any{
		"skill": "create_media_buy", "input": map[string]any{"idempotency_key": key + "-x", "budget": 1}}})
	if _, err := b.client.SendMessage(b.ctx, &a2a.MessageSendParams{Message: msg}); !errors.Is(err, a2a.ErrInvalidParams) {
		t.Fatalf("continuing a completed task: %v", err)
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("the work ran %d times, want 1", n)
	}
}

// The runner's clients echo the contextId of the first answer on later
// messages: the tasks stay in that context.
func TestContextIDIsKept(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, nil), "tok-a")
	first, _ := b.invoke(t, "get_media_buys", "input", map[string]any{})
	msg := a2a.NewMessage(a2a.MessageRoleUser, a2a.DataPart{Data: map[string]any{"skill": "get_media_buys", "parameters": map[string]any{}}})
	msg.ContextID = first.ContextID
	res, err := b.client.SendMessage(b.ctx, &a2a.MessageSendParams{Message: msg})
	if task, ok := res.(*a2a.Task); err != nil || !ok || task.ContextID != first.ContextID || task.ID == first.ID {
		t.Fatalf("second message in context %s: %v, %v", first.ContextID, res, err)
	}
}

// A submitted AdCP answer completes the A2A task; the AdCP handle is in
// the DataPart and in the artifact's metadata.
func TestSubmitted(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, nil), "tok-a")
	task, data := b.invoke(t, "create_media_buy", "input", map[string]any{"idempotency_key": key, "budget": 7})
	a := task.Artifacts[0]
	if data["status"] != "submitted" || data["task_id"] != "adcp-task-1" || a.Name != "submitted" || a.Metadata["adcp_task_id"] != "adcp-task-1" {
		t.Fatalf("submitted: task %+v, data %v", task, data)
	}
	if task.ID == "adcp-task-1" {
		t.Fatal("the A2A task id is the AdCP task id")
	}
}

func TestAgentCard(t *testing.T) {
	s := newSeller(t, nil)
	srv := serve(t, s, nil)
	for _, base := range []string{srv.endpoint, srv.URL} {
		resp, err := http.Get(base + adcpa2a.AgentCardPath)
		if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s%s: %v %v", base, adcpa2a.AgentCardPath, resp, err)
		}
		resp.Body.Close()
	}
	if resp, err := http.Get(srv.URL + "/.well-known/agent.json"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the A2A 0.2 card path: %v %v, want 404", resp, err)
	}
	b := newBuyer(t, srv, "tok-a")
	card, err := b.client.GetAgentCard(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sk := range card.Skills {
		ids = append(ids, sk.ID)
	}
	ext := card.Capabilities.Extensions
	bearer, _ := card.SecuritySchemes["bearer"].(a2a.HTTPAuthSecurityScheme)
	if card.URL != srv.endpoint || card.ProtocolVersion != "0.3.0" || card.PreferredTransport != a2a.TransportProtocolJSONRPC ||
		strings.Join(ids, ",") != "create_media_buy,get_media_buys,get_adcp_capabilities" ||
		len(ext) != 1 || ext[0].URI != adcpa2a.ExtensionURI || ext[0].Required || len(ext[0].Params) != 0 ||
		bearer.Scheme != "bearer" || len(card.Security) != 1 || card.Capabilities.Streaming || card.Capabilities.PushNotifications {
		t.Fatalf("card: %+v", card)
	}
}

func TestNewHandlerConfig(t *testing.T) {
	run := adcp.ReadOnly(nil, func(context.Context, *adcp.Call) (struct{}, error) { return struct{}{}, nil })
	agent := adcpa2a.Agent{Name: "n", Description: "d", URL: "https://seller.example/a2a"}
	for name, tc := range map[string]struct {
		agent  adcpa2a.Agent
		skills []adcpa2a.Skill
	}{
		"relative URL":   {adcpa2a.Agent{Name: "n", Description: "d", URL: "/a2a"}, nil},
		"no name":        {adcpa2a.Agent{Description: "d", URL: agent.URL}, nil},
		"no Run":         {agent, []adcpa2a.Skill{{ID: "get_products"}}},
		"no ID":          {agent, []adcpa2a.Skill{{Run: run}}},
		"bad ID":         {agent, []adcpa2a.Skill{{ID: "get products", Run: run}}},
		"duplicate ID":   {agent, []adcpa2a.Skill{{ID: "get_products", Run: run}, {ID: "get_products", Run: run}}},
		"ID over 255 ch": {agent, []adcpa2a.Skill{{ID: strings.Repeat("a", 256), Run: run}}},
	} {
		if _, err := adcpa2a.NewHandler(tc.agent, tc.skills, nil); !errors.Is(err, adcpa2a.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if _, err := adcpa2a.NewHandler(agent, []adcpa2a.Skill{{ID: "get_products", Run: run}}, nil); err != nil {
		t.Fatal(err)
	}
}

// By default the principal is the authenticated a2asrv.User that
// middleware put into the request's a2asrv.CallContext.
func TestDefaultPrincipalFromCallContext(t *testing.T) {
	s := newSeller(t, nil)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	endpoint := srv.URL + "/a2a"
	h, err := adcpa2a.NewHandler(adcpa2a.Agent{Name: "n", Description: "d", URL: endpoint}, s.skills(), nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if p := bearerPrincipal(r); p != "" {
				ctx, call := a2asrv.WithCallContext(r.Context(), nil)
				call.User = &a2asrv.AuthenticatedUser{UserName: p}
				r = r.WithContext(ctx)
			}
			next.ServeHTTP(w, r)
		})
	}
	mux.Handle("/a2a", auth(h))
	body := sendBody(`{"kind":"data","data":{"skill":"get_media_buys","input":{}}}`)
	_, answer := post(t, endpoint, "tok-b", body)
	result, _ := answer["result"].(map[string]any)
	if got := compactJSON(result["artifacts"]); !strings.Contains(got, `"principal":"agent-b"`) {
		t.Fatalf("answer %v, want principal agent-b", answer)
	}
	if resp, answer := post(t, endpoint, "", body); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no user: HTTP %d %v", resp.StatusCode, answer)
	}
}

// Tasks are kept up to Options.MaxTaskBytes, oldest evicted first; the
// newest always stays.
func TestTaskMemoryIsBounded(t *testing.T) {
	s := newSeller(t, nil)
	b := newBuyer(t, serve(t, s, &adcpa2a.Options{Principal: bearerPrincipal, MaxTaskBytes: 1}), "tok-a")
	first, _ := b.invoke(t, "get_media_buys", "input", map[string]any{})
	second, _ := b.invoke(t, "get_media_buys", "input", map[string]any{})
	if _, err := b.client.GetTask(b.ctx, &a2a.TaskQueryParams{ID: first.ID}); !errors.Is(err, a2a.ErrTaskNotFound) {
		t.Fatalf("the evicted task: %v, want task not found", err)
	}
	if got, err := b.client.GetTask(b.ctx, &a2a.TaskQueryParams{ID: second.ID}); err != nil || got.ID != second.ID {
		t.Fatalf("the newest task: %v, %v", got, err)
	}
}

// A runner whose answer is not a JSON object (a bug) gets a generic
// SERVICE_UNAVAILABLE, not a malformed task.
func TestRunnerAnswerNotAnObject(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	bad := func(context.Context, adcp.Task) adcp.Answer { return adcp.Answer{Body: []byte(`["secret"]`)} }
	h, err := adcpa2a.NewHandler(adcpa2a.Agent{Name: "n", Description: "d", URL: srv.URL + "/a2a"},
		[]adcpa2a.Skill{{ID: "get_products", Run: bad}}, &adcpa2a.Options{Principal: bearerPrincipal, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/a2a", h)
	_, answer := post(t, srv.URL+"/a2a", "tok-a", sendBody(`{"kind":"data","data":{"skill":"get_products","input":{}}}`))
	got := compactJSON(answer["result"])
	if !strings.Contains(got, `"name":"error"`) || !strings.Contains(got, `"code":"SERVICE_UNAVAILABLE"`) || strings.Contains(got, "secret") {
		t.Fatalf("answer %v", answer)
	}
}
