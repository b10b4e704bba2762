package integration

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

// Isolation and leakage (issue 7, part 5).

// isoDo runs one request for principal with key and budget; with a hold,
// the handler signals that it runs (so the key is claimed) and waits for
// its release before it does its work.
type isoDo func(ctx context.Context, principal, key string, budget int, h *hold) (idem.Result[chaosBuy], error)

type hold struct{ started, release chan struct{} }

func (h *hold) wait() {
	if h != nil {
		close(h.started)
		<-h.release
	}
}

// A principal can never read, replay, conflict with, wait for, or learn the
// existence of another principal's key: principal B with A's key is always
// a fresh execution, even while A's request still runs; and a conflict
// error carries nothing about the stored request or answer.
func TestReliabilityIsolation(t *testing.T) {
	t.Parallel()
	var ids atomic.Int64
	guardDo := func(g *idem.Guard) isoDo {
		return func(ctx context.Context, principal, key string, budget int, h *hold) (idem.Result[chaosBuy], error) {
			return idem.Do(ctx, g, request(principal, key, chaosPayload(budget)), func(context.Context) (chaosBuy, error) {
				h.wait()
				return chaosBuy{ID: ids.Add(1), Budget: budget}, nil
			})
		}
	}
	// WaitLimit is long: a B that waited for A's in-flight request would
	// hang visibly rather than get IN_FLIGHT.
	cfg := idem.Config{Limiter: idem.Unlimited, WaitLimit: 5 * time.Minute}
	backends := []struct {
		name string
		do   func(t *testing.T) isoDo
	}{
		{"RunInTx", func(t *testing.T) isoDo {
			pool := chaosSchema(t)
			s := newStore(t, &cfg)
			return func(ctx context.Context, principal, key string, budget int, h *hold) (idem.Result[chaosBuy], error) {
				return idem.RunInTx(ctx, s, pool, request(principal, key, chaosPayload(budget)), func(ctx context.Context, tx pgx.Tx) (chaosBuy, error) {
					h.wait()
					return chaosWrite(principal, key, budget)(ctx, tx)
				})
			}
		}},
		{"PostgresBackend", func(t *testing.T) isoDo {
			g, err := idem.NewGuard(&idem.PostgresBackend{DB: newSchema(t)}, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			return guardDo(g)
		}},
		{"redisstore", func(t *testing.T) isoDo {
			needRedis(t)
			g, err := idem.NewGuard(newRedisStore(t, newRedisClient(t, redisURL, nil), "iso-"+randomID(6)), &cfg)
			if err != nil {
				t.Fatal(err)
			}
			return guardDo(g)
		}},
		{"memstore", func(t *testing.T) isoDo {
			m := memstore.New(nil)
			t.Cleanup(func() { _ = m.Close() })
			g, err := idem.NewGuard(m, &cfg)
			if err != nil {
				t.Fatal(err)
			}
			return guardDo(g)
		}},
	}
	checks := 0
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			do := b.do(t)
			fresh := func(what string, res idem.Result[chaosBuy], err error, not ...chaosBuy) {
				t.Helper()
				checks++
				if err != nil || res.Replayed {
					t.Fatalf("%s: %+v, %v; want a fresh execution", what, res, err)
				}
				for _, v := range not {
					if res.Value == v {
						t.Fatalf("%s: got %+v, another principal's answer", what, v)
					}
				}
			}
			k1, k2, k3 := newKey(), newKey(), newKey()
			a1, err := do(ctx, "alice", k1, 5000, nil)
			fresh("alice's first request", a1, err)

			// Same key, same payload: not a replay of alice's answer.
			b1, err := do(ctx, "bob", k1, 5000, nil)
			fresh("bob with alice's key and payload", b1, err, a1.Value)
			// Same key, another payload: not a conflict.
			a2, err := do(ctx, "alice", k2, 5000, nil)
			fresh("alice's second key", a2, err)
			b2, err := do(ctx, "bob", k2, 9999, nil)
			fresh("bob with alice's key and another payload", b2, err, a2.Value)
			// A principal differing only in case, or with a separator, is
			// another principal.
			// (A principal with a NUL byte, invalid UTF-8 or over 1 KiB is
			// not tried: RunInTx and Do refuse it with ErrMissingPrincipal
			// before any backend sees it; see idem's
			// TestPrepareRejectsUnusablePrincipals.)
			for _, p := range []string{"Alice", "alice ", "alice:", " alice", "alice\u200b"} {
				r, err := do(ctx, p, k1, 5000, nil)
				fresh(fmt.Sprintf("principal %q with alice's key", p), r, err, a1.Value, b1.Value)
			}
			// While alice's request holds k3, bob's request with k3 neither
			// waits for it nor gets IN_FLIGHT.
			h := &hold{started: make(chan struct{}), release: make(chan struct{})}
			aliceDone := make(chan error, 1)
			go func() {
				_, err := do(ctx, "alice", k3, 5000, h)
				aliceDone <- err
			}()
			<-h.started // alice holds k3
			bobDone := make(chan error, 1)
			var b3 idem.Result[chaosBuy]
			go func() {
				var err error
				b3, err = do(ctx, "bob", k3, 5000, nil)
				bobDone <- err
			}()
			select {
			case err := <-bobDone:
				fresh("bob with the key alice's running request holds", b3, err)
			case <-time.After(60 * time.Second):
				close(h.release)
				t.Fatal("bob's request with alice's in-flight key waited for it: bob can learn that alice uses the key")
			}
			close(h.release)
			if err := <-aliceDone; err != nil {
				t.Fatal(err)
			}

			// Alice's answers are untouched by bob's entries.
			for _, c := range []struct {
				key  string
				want idem.Result[chaosBuy]
			}{{k1, a1}, {k2, a2}} {
				r, err := do(ctx, "alice", c.key, 5000, nil)
				checks++
				if err != nil || !r.Replayed || r.Value != c.want.Value {
					t.Fatalf("alice's replay = %+v, %v; want %+v", r, err, c.want.Value)
				}
			}

			// A conflict says nothing about what is stored.
			_, err = do(ctx, "alice", k1, 1234, nil)
			if !errors.Is(err, idem.ErrConflict) {
				t.Fatalf("alice's conflicting request: %v", err)
			}
			checks++
			wire, _ := json.Marshal(idem.Wire(err))
			var fields map[string]any
			_ = json.Unmarshal(wire, &fields)
			if len(fields) != 3 || fields["code"] != "IDEMPOTENCY_CONFLICT" || fields["recovery"] != "correctable" {
				t.Fatalf("conflict wire form %s, want code, message and recovery only", wire)
			}
			stored, _ := idem.CanonicalJSONSHA256([]byte(chaosPayload(5000)))
			sent, _ := idem.CanonicalJSONSHA256([]byte(chaosPayload(1234)))
			text := string(wire) + " " + err.Error() + " " + fmt.Sprintf("%+v", err)
			for _, secret := range []string{
				hex.EncodeToString(stored[:]), hex.EncodeToString(stored[:4]), hex.EncodeToString(sent[:]), hex.EncodeToString(sent[:4]),
				string(a1.Response), fmt.Sprint(a1.Value.ID), "5000", "1234", k1, "alice", "bob",
			} {
				if strings.Contains(text, secret) {
					t.Fatalf("the conflict error %q carries %q", text, secret)
				}
			}
		})
	}
	figure(t, "isolation", "%d backends (RunInTx, PostgresBackend, redisstore, memstore): %d checks passed (another principal with the same key and payload, with another payload, with a look-alike principal, while the key is in flight: always a fresh execution without waiting; the owner's replays unaffected; conflict errors carry code, message and recovery only, no hash, key or stored data)",
		len(backends), checks)
}

// logCanary marks every secret value of the log test: keys, payload
// fields, context, the push URL and its query. No log line may contain it.
const logCanary = "LEAKCANARY"

// Logs never contain raw keys or payloads by default: the seller's and
// adcpmcp's slog output (the seller passes its logger to adcpmcp),
// captured at debug level through requests that succeed, replay,
// conflict, are refused, fail in storage and fail in the handler.
func TestReliabilityLogsCarryNoKeysOrPayloads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const doomedToken, doomedPrincipal = "sk_test_doomed_0123456789abcde", "doomed-buyer"
	tokens := sellertest.Tokens()
	tokens[doomedToken] = doomedPrincipal
	canaryArgs := func(key, push string) map[string]any {
		args := sellertest.CreateArgs(key, 31337, push, logCanary+"-correlation")
		args["brand"] = map[string]any{"domain": strings.ToLower(logCanary) + "-brand.example"}
		args["packages"] = []any{map[string]any{"product_id": logCanary + "-product", "budget": 31337, "pricing_option_id": logCanary + "-pricing"}}
		return args
	}
	newKey := func(what string) string { return logCanary + "-" + what + "-" + randomID(6) }

	type rig struct {
		url       string
		logs      *syncBuffer
		doomedKey string // postgres: the key whose answer cannot be stored
	}
	start := func(t *testing.T, memory bool) rig {
		var logs syncBuffer
		log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg := seller.Config{Tokens: tokens, AllowLoopbackWebhooks: true,
			Idempotency: &idem.Config{Limiter: idem.Unlimited}, Logger: log,
			Sandbox: map[string]bool{sellertest.Principal: true, doomedPrincipal: true}}
		doomedKey := newKey("storage-failure")
		if !memory {
			schema := newSchema(t)
			// A pool whose requests die where the test says: at storing
			// the response for one key, and at every media buy insert of
			// the doomed principal (a handler failure).
			pool, err := tracedPool(ctx, schema.Config().ConnString(), 0, func(ctx context.Context, conn *pgx.Conn, step string, start bool, args []any, _ error) {
				if start && ((step == stepStore && argsContain(args, doomedKey)) || (step == stepBuyInsert && argsContain(args, doomedPrincipal))) {
					if err := terminate(ctx, schema, conn.PgConn()); err != nil {
						t.Errorf("terminate: %v", err)
					}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			cfg.DB = pool
		}
		s, err := seller.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(s.Close)
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		// The canary product, seeded through the test controller (whose
		// requests must not leak into the logs either).
		cs := sellertest.Connect(t, srv.URL+"/mcp", sellertest.Token)
		for scenario, params := range map[string]map[string]any{
			"seed_product":        {"product_id": logCanary + "-product", "fixture": map[string]any{"name": logCanary}},
			"seed_pricing_option": {"product_id": logCanary + "-product", "pricing_option_id": logCanary + "-pricing", "fixture": map[string]any{"fixed_price": 1}},
		} {
			if a, err := callTool(cs, "comply_test_controller", map[string]any{"scenario": scenario, "params": params}); err != nil || a.Body["success"] != true {
				t.Fatalf("%s: %v %s", scenario, err, a.Raw)
			}
		}
		return rig{srv.URL + "/mcp", &logs, doomedKey}
	}
	assertClean := func(t *testing.T, logs *syncBuffer) {
		t.Helper()
		out := logs.String()
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, logCanary) || strings.Contains(strings.ToLower(line), strings.ToLower(logCanary)) ||
				strings.Contains(line, sellertest.Token) || strings.Contains(line, doomedToken) {
				t.Errorf("a log line carries a key, payload or token: %s", line)
			}
		}
		t.Logf("%d log lines, none with a key, payload field or token", strings.Count(out, "\n"))
	}

	for _, memory := range []bool{false, true} {
		mode := map[bool]string{false: "postgres", true: "memory"}[memory]
		t.Run(mode+"/requests", func(t *testing.T) {
			r := start(t, memory)
			cs := sellertest.Connect(t, r.url, sellertest.Token)
			receiver := newHookReceiver(t)
			key := newKey("fresh")
			calls := []map[string]any{
				canaryArgs(key, receiver.URL("/hook/"+logCanary)), // fresh, with a webhook
				canaryArgs(key, receiver.URL("/hook/"+logCanary)), // replay
				canaryArgs(key, ""),                                           // conflict
				canaryArgs(logCanary+" not a key", ""),                        // invalid key
				canaryArgs(logCanary+"-short", ""),                            // too short
				canaryArgs(newKey("bad-url"), "ftp://"+logCanary+".example/"), // refused webhook URL
				{"idempotency_key": newKey("no-packages"), "context": map[string]any{"x": logCanary}},
			}
			if !memory {
				calls = append(calls, canaryArgs(r.doomedKey, "")) // ErrStorage, logged by adcpmcp
			}
			for _, args := range calls {
				if _, err := callTool(cs, "create_media_buy", args); err != nil {
					t.Fatal(err)
				}
			}
			if !memory {
				// A handler failure (the media buy insert dies), logged by
				// adcpmcp as "handler failed".
				doomed := sellertest.Connect(t, r.url, doomedToken)
				a, err := callTool(doomed, "create_media_buy", canaryArgs(newKey("handler-failure"), ""))
				if err != nil || errorCode(a) != "SERVICE_UNAVAILABLE" {
					t.Fatalf("doomed create: %v %s", err, a.Raw)
				}
			}
			if a, err := callTool(cs, "get_media_buys", map[string]any{"media_buy_ids": []any{logCanary}}); err != nil || a.IsError {
				t.Fatalf("get_media_buys: %v %s", err, a.Raw)
			}
			waitFor(t, func() bool { return len(receiver.deliveries("/hook/"+logCanary)) == 1 })
			out := r.logs.String()
			if !memory && (!strings.Contains(out, "idempotency storage failed") || !strings.Contains(out, "handler failed")) {
				t.Fatalf("the failures were not logged at all; logs: %s", out)
			}
			assertClean(t, r.logs)
		})

		// Regression test: the outbox logs a failed delivery with the
		// *url.Error of net/http, whose text is `Post "<the full push URL>":
		// <cause>`; the URL is the buyer's push_notification_config.url,
		// payload, and often carries a secret (a token in its path or
		// query). The database column last_error gets the same text.
		//
		// Fix (cmd/adcp-seller/seller/webhook.go, poster.post): on a failed
		// client.Do, return the cause without the URL, e.g.
		//
		//	if err != nil {
		//		var ue *url.Error
		//		if errors.As(err, &ue) {
		//			err = fmt.Errorf("webhook POST failed: %w", ue.Err)
		//		}
		//		return err
		//	}
		t.Run(mode+"/webhook failures", func(t *testing.T) {
			r := start(t, memory)
			cs := sellertest.Connect(t, r.url, sellertest.Token)
			// A receiver that answers 500, and one that is not there.
			failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
			defer failing.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gone := "http://" + ln.Addr().String()
			_ = ln.Close()
			for _, push := range []string{
				failing.URL + "/hook/" + logCanary + "-path?token=" + logCanary + "-secret",
				gone + "/hook/" + logCanary + "-path?token=" + logCanary + "-secret",
			} {
				if a, err := callTool(cs, "create_media_buy", canaryArgs(newKey("webhook"), push)); err != nil || a.IsError {
					t.Fatalf("create: %v %s", err, a.Raw)
				}
			}
			waitFor(t, func() bool { return strings.Count(r.logs.String(), "webhook delivery failed") >= 2 })
			assertClean(t, r.logs)
		})
	}
	figure(t, "log leakage", "seller (postgres and memory mode) and adcpmcp logs captured at debug level across success, replay, conflict, invalid key, refused webhook URL, invalid arguments, storage failure, handler failure and webhook delivery failures; see the subtests for lines carrying a key, payload field or token")
}
