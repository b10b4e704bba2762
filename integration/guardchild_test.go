package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/redisstore"
)

// A Guard in a process of its own, on redisstore: this test binary re-run
// with IDEM_GUARD_CHILD set to a guardSpec. In "serve" mode it is one
// replica of a seller whose idempotency lives in Redis: it serves POST /do
// (form values key and budget), which runs idem.Do with a handler that
// records its run in Redis, and answers the outcome as JSON. In "crash"
// mode it runs one request and pauses at a crash point for the parent to
// kill it (see TestReliabilityRedisCrashMatrix).
//
// A run is recorded as RPUSH <prefix>-runs:<key> <run id>; a run id is
// gen<<32 | n, so the parent can tell which process made it. A run's
// answer (chaosBuy) carries its run id.

const guardChildEnv = "IDEM_GUARD_CHILD"

func init() {
	// The child's main; TestMain is not involved: init runs first.
	if spec := os.Getenv(guardChildEnv); spec != "" {
		runGuardChild(spec)
	}
}

// guardSpec is what a Guard child runs, passed as JSON.
type guardSpec struct {
	Mode     string // "serve" or "crash"
	Gen      int64  // identifies the process in its run ids
	RedisURL string
	Prefix   string // of the store's keys and of the run lists
	LeaseMs  int

	// crash mode
	Key     string
	Budget  int
	Point   string // a name of redisCrashPoints
	PauseMs int    // the pause at Point: random in [0, PauseMs]
}

// runsKey is the Redis list of the runs of key's handler.
func runsKey(prefix, key string) string { return prefix + "-runs:" + key }

// runID makes the run id of the n-th run of process gen.
func runID(gen, n int64) int64 { return gen<<32 | n }

// runGen is the process that made a run.
func runGen(id int64) int64 { return id >> 32 }

// guardOutcome is the JSON answer of POST /do.
type guardOutcome struct {
	Kind string `json:"kind"` // as idemOutcome names it
	ID   string `json:"id"`
}

func runGuardChild(raw string) {
	var spec guardSpec
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "guard child:", err)
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fail(err)
	}
	opts, err := redis.ParseURL(spec.RedisURL)
	if err != nil {
		fail(err)
	}
	opts.ContextTimeoutEnabled = true
	ctx := context.Background()
	business := redis.NewClient(opts) // the handler's own writes
	client := redis.NewClient(opts)   // the store's
	var stage func(name string)
	if spec.Mode == "crash" {
		stage = crashStages(client, spec)
	}
	store, err := redisstore.New(ctx, client, &redisstore.Options{Prefix: spec.Prefix, RequireNoEviction: true})
	if err != nil {
		fail(err)
	}
	g, err := idem.NewGuard(store, &idem.Config{Limiter: idem.Unlimited, Lease: time.Duration(spec.LeaseMs) * time.Millisecond})
	if err != nil {
		fail(err)
	}
	var runs atomic.Int64
	handler := func(key string, budget int) func(context.Context) (chaosBuy, error) {
		return func(ctx context.Context) (chaosBuy, error) {
			if stage != nil {
				stage("after_claim")
			}
			id := runID(spec.Gen, runs.Add(1))
			if err := business.RPush(ctx, runsKey(spec.Prefix, key), id).Err(); err != nil {
				return chaosBuy{}, err
			}
			if stage != nil {
				stage("after_handler")
			} else {
				time.Sleep(5*time.Millisecond + jitter(10)) // the same key's duplicates wait meanwhile
			}
			return chaosBuy{ID: id, Budget: budget}, nil
		}
	}
	switch spec.Mode {
	case "crash":
		res, err := idem.Do(ctx, g, request("alice", spec.Key, chaosPayload(spec.Budget)), handler(spec.Key, spec.Budget))
		fmt.Printf("DONE id=%d replayed=%v err=%v\n", res.Value.ID, res.Replayed, err)
	case "serve":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail(err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("POST /do", func(w http.ResponseWriter, r *http.Request) {
			key := r.FormValue("key")
			budget, _ := strconv.Atoi(r.FormValue("budget"))
			o := idemOutcome(idem.Do(r.Context(), g, request("alice", key, chaosPayload(budget)), handler(key, budget)))
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(guardOutcome{o.kind, o.id})
		})
		fmt.Printf("URL http://%s\n", ln.Addr())
		go func() { _ = http.Serve(ln, mux) }()
	default:
		fail(fmt.Errorf("unknown mode %q", spec.Mode))
	}
	time.Sleep(time.Hour) // the parent kills us before this ends
	os.Exit(3)
}

// startGuardChild runs this test binary as a Guard child with spec; in
// serve mode it returns the child's base URL.
func startGuardChild(spec guardSpec) (*child, string, error) {
	raw, _ := json.Marshal(spec)
	c, err := startChild(selfCommand(guardChildEnv, string(raw)))
	if err != nil || spec.Mode != "serve" {
		return c, "", err
	}
	line, err := c.waitLine("URL ", 60*time.Second)
	if err != nil {
		c.kill()
		return nil, "", err
	}
	return c, strings.TrimPrefix(line, "URL "), nil
}

// postGuard sends one request to a serve-mode child (or a proxy in front
// of some) and returns its outcome; a transport failure or an HTTP status
// other than 200 is an error.
func postGuard(base, key string, budget int) (guardOutcome, error) {
	resp, err := guardHTTP.PostForm(base+"/do", url.Values{"key": {key}, "budget": {strconv.Itoa(budget)}})
	if err != nil {
		return guardOutcome{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return guardOutcome{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var o guardOutcome
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		return guardOutcome{}, fmt.Errorf("reading the answer: %w", err)
	}
	return o, nil
}

var guardHTTP = &http.Client{Timeout: 60 * time.Second}

// The crash points of a Guard request on Redis, in order:
//
//	claim           the claim script is about to be sent
//	after_claim     the claim returned (the key is ours); the handler has
//	                not written anything
//	after_handler   the handler's write returned; Complete is not sent
//	after_complete  Complete returned (the answer is stored); Do has not
//	                returned to its caller
var redisCrashPoints = []crashPoint{{name: "claim"}, {name: "after_claim"}, {name: "after_handler"}, {name: "after_complete"}}

// crashStages returns the child's stage function and installs, on the
// store's client, a hook that reports the claim (the first script call)
// and Complete (the first script call after the handler) as stages. Each
// stage prints "STAGE name"; at spec.Point it pauses for a random time in
// [0, spec.PauseMs].
func crashStages(client *redis.Client, spec guardSpec) func(string) {
	var mu sync.Mutex
	seen := map[string]bool{}
	stage := func(name string) {
		mu.Lock()
		first := !seen[name]
		seen[name] = true
		mu.Unlock()
		if !first {
			return
		}
		fmt.Printf("STAGE %s\n", name)
		if name == spec.Point && spec.PauseMs > 0 {
			time.Sleep(time.Duration(rand.IntN(spec.PauseMs+1)) * time.Millisecond)
		}
	}
	passed := func(name string) bool { mu.Lock(); defer mu.Unlock(); return seen[name] }
	client.AddHook(stageHook{before: func(cmd redis.Cmder) {
		if isScript(cmd) && !passed("after_claim") {
			stage("claim")
		}
	}, after: func(cmd redis.Cmder) {
		if isScript(cmd) && passed("after_handler") && cmd.Err() == nil {
			stage("after_complete")
		}
	}})
	return stage
}

func isScript(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" }

// stageHook calls before and after around every command.
type stageHook struct{ before, after func(redis.Cmder) }

func (h stageHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h stageHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h stageHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.before(cmd)
		err := next(ctx, cmd)
		h.after(cmd)
		return err
	}
}
