// Command adcp-load measures create_media_buy throughput and latency of an
// AdCP seller over MCP (JSON-RPC tools/call, streamable HTTP) and over A2A
// (JSON-RPC message/send), with fresh keys and with replays, so that the
// two transports of one seller can be compared with one client.
//
//	go run ./cmd/adcp-load -url http://127.0.0.1:8080 -token TOKEN \
//	    -transport mcp,a2a -mode fresh,replay -concurrency 2,16 -duration 10s
//
// -url is the seller's origin: MCP is posted to -url + /mcp, A2A to -url +
// /a2a (the reference seller's paths; -mcp-path and -a2a-path change them).
// Both are raw JSON-RPC over net/http, no SDK on either side of the
// comparison: each client keeps one keep-alive connection and sends its
// next call when the previous one is answered. MCP calls are bare
// tools/call requests without an initialize handshake, which a stateless
// streamable-HTTP server such as the reference seller answers (so does the
// AdCP runner's missing-key probe); A2A calls carry one DataPart {"skill":
// "create_media_buy", "input": {...}}. A fresh call carries a new
// idempotency key and must answer a media_buy_id without replayed: true; a
// replay re-sends one primed request per client and must answer
// replayed: true with the primed media_buy_id. Anything else (an HTTP
// error, a JSON-RPC error, an AdCP error, a wrong answer) counts as an error
// and is reported, latency included.
//
// For each concurrency, -rounds times, for each transport, then each mode,
// it runs a warm-up of fresh calls (-warmup, not reported) and the measured
// phase, and prints one line: requests per second, p50 and p99 in
// milliseconds, requests and errors (-json prints the rows as JSON). With
// several rounds the transports alternate in time, so that a machine
// shared with other work slows both alike, and a last table gives each
// figure's median over the rounds. The seller's rate
// limit on new keys must be off or above the load (the reference seller:
// -insert-rate 0), or fresh calls count RATE_LIMITED answers as errors.
//
// Loads are bounded: at most 5 minutes per phase and 256 clients, and only
// against a loopback host unless -allow-remote is given.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds on a run.
const (
	maxDuration    = 5 * time.Minute
	maxConcurrency = 256
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "adcp-load:", err)
		os.Exit(1)
	}
}

// config is a parsed command line.
type config struct {
	base               *url.URL
	mcpPath, a2aPath   string
	token              string
	transports, modes  []string
	concurrency        []int
	duration, warmup   time.Duration
	rounds             int
	timeout            time.Duration
	argsFile           string
	jsonOut, allowWide bool
}

func parse(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("adcp-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var base, transports, modes, conc string
	fs.StringVar(&base, "url", "http://127.0.0.1:8080", "the seller's origin (scheme, host and port)")
	fs.StringVar(&c.mcpPath, "mcp-path", "/mcp", "the MCP endpoint's path")
	fs.StringVar(&c.a2aPath, "a2a-path", "/a2a", "the A2A JSON-RPC endpoint's path")
	fs.StringVar(&c.token, "token", os.Getenv("ADCP_AUTH_TOKEN"), "bearer token (default $ADCP_AUTH_TOKEN)")
	fs.StringVar(&transports, "transport", "mcp,a2a", "transports to measure, comma-separated: mcp, a2a")
	fs.StringVar(&modes, "mode", "fresh,replay", "modes to measure, comma-separated: fresh (a new key per call), replay (one primed key per client)")
	fs.StringVar(&conc, "concurrency", "2", "numbers of clients, comma-separated (each a run of its own)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time per phase (at most 5m)")
	fs.IntVar(&c.rounds, "rounds", 1, "how many times to measure each phase, alternating the transports (1 to 20)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unreported fresh calls before each phase (0: none)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on one call")
	fs.StringVar(&c.argsFile, "args-file", "", "a JSON object to send as create_media_buy's arguments (idempotency_key and context are set per call); default: a sandbox request for test-product")
	fs.BoolVar(&c.jsonOut, "json", false, "print the results as JSON")
	fs.BoolVar(&c.allowWide, "allow-remote", false, "allow a target that is not a loopback address")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-url %q: want an http(s) origin", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c.base = u
	if !c.allowWide && !loopback(u.Hostname()) {
		return nil, fmt.Errorf("-url: %s is not a loopback address (pass -allow-remote)", u.Hostname())
	}
	if c.transports, err = list(transports, "mcp", "a2a"); err != nil {
		return nil, fmt.Errorf("-transport: %w", err)
	}
	if c.modes, err = list(modes, "fresh", "replay"); err != nil {
		return nil, fmt.Errorf("-mode: %w", err)
	}
	for f := range strings.SplitSeq(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxConcurrency {
			return nil, fmt.Errorf("-concurrency %q: want numbers from 1 to %d", conc, maxConcurrency)
		}
		c.concurrency = append(c.concurrency, n)
	}
	if c.rounds < 1 || c.rounds > 20 {
		return nil, fmt.Errorf("-rounds %d: want 1 to 20", c.rounds)
	}
	if c.duration <= 0 || c.duration > maxDuration || c.warmup < 0 || c.warmup > maxDuration || c.timeout <= 0 {
		return nil, fmt.Errorf("-duration and -warmup: at most %v each, -duration and -timeout positive", maxDuration)
	}
	return &c, nil
}

func list(s string, allowed ...string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(allowed, f) {
			return nil, fmt.Errorf("%q is not one of %s", f, strings.Join(allowed, ", "))
		}
		out = append(out, f)
	}
	return out, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// result is one measured phase.
type result struct {
	Transport   string  `json:"transport"`
	Round       int     `json:"round"`
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"duration_s"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	RPS         float64 `json:"rps"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

func run(args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	base := map[string]any{
		"account":    map[string]any{"brand": map[string]any{"domain": "test.example"}, "operator": "test.example", "sandbox": true},
		"brand":      map[string]any{"domain": "test.example"},
		"start_time": "2030-06-01T00:00:00Z",
		"end_time":   "2030-06-30T23:59:59Z",
		"packages":   []any{map[string]any{"product_id": "test-product", "budget": 5000, "pricing_option_id": "default"}},
	}
	if c.argsFile != "" {
		raw, err := os.ReadFile(c.argsFile)
		if err != nil {
			return err
		}
		base = nil
		if err := json.Unmarshal(raw, &base); err != nil || base == nil {
			return fmt.Errorf("-args-file: not a JSON object")
		}
	}
	ctx := context.Background()
	var results []result
	for _, n := range c.concurrency {
		for round := 1; round <= c.rounds; round++ {
			for _, tr := range c.transports {
				clients := make([]*client, n)
				for i := range clients {
					clients[i] = newClient(c, tr, i, base)
				}
				for _, mode := range c.modes {
					if c.warmup > 0 {
						phase(ctx, clients, "fresh", c.warmup)
					}
					r := phase(ctx, clients, mode, c.duration)
					r.Transport, r.Round = tr, round
					results = append(results, r)
					if !c.jsonOut {
						line := fmt.Sprintf("%-4s c=%-3d %-6s round %-2d %9.1f req/s   p50 %6.2f ms   p99 %6.2f ms   (n=%d, errors=%d, max %.1f ms)",
							r.Transport, r.Concurrency, r.Mode, r.Round, r.RPS, r.P50ms, r.P99ms, r.Requests, r.Errors, r.MaxMs)
						fmt.Fprintln(stdout, line)
						if r.FirstError != "" {
							fmt.Fprintln(stdout, "     first error:", r.FirstError)
						}
					}
				}
				for _, cl := range clients {
					cl.http.CloseIdleConnections()
				}
			}
		}
	}
	summary := medians(results)
	if c.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"url": c.base.String(), "at": time.Now().UTC().Format(time.RFC3339), "rounds": c.rounds,
			"results": results, "medians": summary})
	}
	if c.rounds > 1 {
		fmt.Fprintf(stdout, "medians over %d rounds:\n", c.rounds)
		for _, m := range summary {
			fmt.Fprintf(stdout, "%-4s c=%-3d %-6s %9.1f req/s   p50 %6.2f ms   p99 %6.2f ms   (errors=%d)\n",
				m.Transport, m.Concurrency, m.Mode, m.RPS, m.P50ms, m.P99ms, m.Errors)
		}
	}
	for _, r := range results {
		if r.Errors > 0 {
			return fmt.Errorf("%d phase(s) had errors", countErrors(results))
		}
	}
	return nil
}

func countErrors(rs []result) int {
	n := 0
	for _, r := range rs {
		if r.Errors > 0 {
			n++
		}
	}
	return n
}

// medians is, per transport, concurrency and mode (in the order first
// measured), the median over the rounds of req/s, p50 and p99, each taken
// on its own, and the sum of the errors.
func medians(rs []result) []result {
	type k struct {
		tr, mode string
		c        int
	}
	var order []k
	groups := map[k][]result{}
	for _, r := range rs {
		key := k{r.Transport, r.Mode, r.Concurrency}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], r)
	}
	med := func(g []result, f func(result) float64) float64 {
		v := make([]float64, len(g))
		for i, r := range g {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out := make([]result, 0, len(order))
	for _, key := range order {
		g := groups[key]
		m := result{Transport: key.tr, Mode: key.mode, Concurrency: key.c,
			RPS: med(g, func(r result) float64 { return r.RPS }), P50ms: med(g, func(r result) float64 { return r.P50ms }),
			P99ms: med(g, func(r result) float64 { return r.P99ms }), MaxMs: med(g, func(r result) float64 { return r.MaxMs })}
		for _, r := range g {
			m.Errors += r.Errors
			m.Requests += r.Requests
		}
		out = append(out, m)
	}
	return out
}

// phase runs clients for d in mode and measures them.
func phase(ctx context.Context, clients []*client, mode string, d time.Duration) result {
	var mu sync.Mutex
	var lat []time.Duration
	errs, firstErr := 0, ""
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, 1024)
			bad, first := 0, ""
			var primed string
			var replayArgs map[string]any
			if mode == "replay" {
				replayArgs = cl.args(newKey(), "prime")
				id, _, err := cl.create(ctx, replayArgs)
				if err != nil {
					bad, first = bad+1, "priming the replay key: "+err.Error()
				}
				primed = id
			}
			for n := 0; time.Now().Before(stop); n++ {
				args := replayArgs
				if mode == "fresh" {
					args = cl.args(newKey(), strconv.Itoa(n))
				}
				t0 := time.Now()
				id, replayed, err := cl.create(ctx, args)
				mine = append(mine, time.Since(t0))
				switch {
				case err != nil:
				case mode == "fresh" && replayed:
					err = errors.New("a fresh key answered replayed: true")
				case mode == "replay" && (!replayed || id != primed):
					err = fmt.Errorf("a replay answered media buy %q replayed %v, want %q replayed", id, replayed, primed)
				}
				if err != nil {
					bad++
					if first == "" {
						first = err.Error()
					}
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			if firstErr == "" {
				firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	r := result{Mode: mode, Concurrency: len(clients), DurationS: wall.Seconds(), Requests: len(lat), Errors: errs, FirstError: firstErr}
	if len(lat) > 0 {
		r.RPS = float64(len(lat)) / wall.Seconds()
		r.P50ms, r.P99ms, r.MaxMs = ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(lat[len(lat)-1])
	}
	return r
}

// percentile is the nearest-rank percentile of sorted (as load.mjs
// computes it).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(len(sorted)-1, i))]
}

func newKey() string { return "load-" + rand.Text() }

// client is one load client: one keep-alive connection, one transport.
type client struct {
	http      *http.Client
	transport string
	endpoint  string
	token     string
	id        int
	base      map[string]any
	rpcID     int
}

func newClient(c *config, transport string, id int, base map[string]any) *client {
	path := c.mcpPath
	if transport == "a2a" {
		path = c.a2aPath
	}
	u := *c.base
	u.Path += path
	return &client{
		http:      &http.Client{Timeout: c.timeout, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: false}},
		transport: transport, endpoint: u.String(), token: c.token, id: id, base: base,
	}
}

// args is a create_media_buy request with key and a correlation id.
func (c *client) args(key, n string) map[string]any {
	a := make(map[string]any, len(c.base)+2)
	for k, v := range c.base {
		a[k] = v
	}
	a["idempotency_key"] = key
	a["context"] = map[string]any{"correlation_id": fmt.Sprintf("load-%d-%s", c.id, n)}
	return a
}

// create sends create_media_buy and returns the media buy id and replayed
// of a success; any other answer is an error.
func (c *client) create(ctx context.Context, args map[string]any) (id string, replayed bool, err error) {
	c.rpcID++
	var body map[string]any
	if c.transport == "a2a" {
		body = map[string]any{"jsonrpc": "2.0", "id": c.rpcID, "method": "message/send", "params": map[string]any{
			"message": map[string]any{"kind": "message", "messageId": newKey(), "role": "user",
				"parts": []any{map[string]any{"kind": "data", "data": map[string]any{"skill": "create_media_buy", "input": args}}}},
		}}
	} else {
		body = map[string]any{"jsonrpc": "2.0", "id": c.rpcID, "method": "tools/call",
			"params": map[string]any{"name": "create_media_buy", "arguments": args}}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return "", false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(raw))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", false, err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", false, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("HTTP %d: %.300s", resp.StatusCode, out)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		out = lastSSEData(out)
	}
	answer, err := c.answer(out)
	if err != nil {
		return "", false, err
	}
	if e, ok := answer["adcp_error"]; ok {
		return "", false, fmt.Errorf("AdCP error %v", e)
	}
	id, _ = answer["media_buy_id"].(string)
	if id == "" {
		return "", false, fmt.Errorf("no media_buy_id in %.300s", out)
	}
	replayed, _ = answer["replayed"].(bool)
	return id, replayed, nil
}

// answer is the AdCP answer in a JSON-RPC response: MCP's
// structuredContent, or the DataPart of the A2A task's one artifact.
func (c *client) answer(raw []byte) (map[string]any, error) {
	var msg struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, fmt.Errorf("not a JSON-RPC response: %.300s", raw)
	}
	if msg.Error != nil {
		return nil, fmt.Errorf("JSON-RPC error %s", msg.Error)
	}
	if c.transport == "mcp" {
		var res struct {
			IsError           bool           `json:"isError"`
			StructuredContent map[string]any `json:"structuredContent"`
		}
		if err := json.Unmarshal(msg.Result, &res); err != nil || res.StructuredContent == nil {
			return nil, fmt.Errorf("a tools/call result without structuredContent: %.300s", raw)
		}
		if res.IsError {
			return nil, fmt.Errorf("isError: %.300s", raw)
		}
		return res.StructuredContent, nil
	}
	var task struct {
		Kind   string `json:"kind"`
		Status struct {
			State string `json:"state"`
		} `json:"status"`
		Artifacts []struct {
			Parts []struct {
				Kind string         `json:"kind"`
				Data map[string]any `json:"data"`
			} `json:"parts"`
		} `json:"artifacts"`
	}
	if err := json.Unmarshal(msg.Result, &task); err != nil || task.Kind != "task" || task.Status.State != "completed" ||
		len(task.Artifacts) != 1 || len(task.Artifacts[0].Parts) != 1 || task.Artifacts[0].Parts[0].Data == nil {
		return nil, fmt.Errorf("not a completed task with one DataPart: %.300s", raw)
	}
	return task.Artifacts[0].Parts[0].Data, nil
}

// lastSSEData is the data of the last event of an SSE body.
func lastSSEData(body []byte) []byte {
	var data []byte
	for block := range strings.SplitSeq(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n\n") {
		var lines []string
		for l := range strings.SplitSeq(block, "\n") {
			if v, ok := strings.CutPrefix(l, "data:"); ok {
				lines = append(lines, strings.TrimPrefix(v, " "))
			}
		}
		if len(lines) > 0 {
			data = []byte(strings.Join(lines, "\n"))
		}
	}
	return data
}
