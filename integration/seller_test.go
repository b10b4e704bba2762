package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
	"github.com/adcp-go/idempotency/idem"
)

func newSeller(t *testing.T, pool *pgxpool.Pool) *seller.Seller {
	t.Helper()
	return newSellerWith(t, pool, &idem.Config{Limiter: idem.Unlimited})
}

func newSellerWith(t *testing.T, pool *pgxpool.Pool, cfg *idem.Config) *seller.Seller {
	t.Helper()
	s, err := seller.New(context.Background(), seller.Config{
		Tokens: sellertest.Tokens(), DB: pool, AllowLoopbackWebhooks: true, Idempotency: cfg,
		Sandbox: map[string]bool{sellertest.Principal: true}, AccountSalt: []byte("a test account salt"), TaskDelay: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// The seller in Postgres mode, over real MCP and real A2A: the storyboard's scenarios,
// concurrent creates with one key, isolation, webhooks once.
func TestPostgresSeller(t *testing.T) {
	t.Parallel()
	pool := newSchema(t)
	s := newSeller(t, pool)
	env := sellertest.EnvFor(t, s)
	sellertest.Run(t, env)
	sellertest.Run32(t, env)
	t.Run("A2A", func(t *testing.T) {
		sellertest.Run(t, env.OverA2A())
		sellertest.Run32(t, env.OverA2A())
	})
	// Every committed media buy has its stored answer: the create's own,
	// or, for a buy a task made, the submitted answer of its task; except
	// the buys comply_test_controller seeded (no request made them; the
	// scenarios give them ids starting "seeded_").
	orphans := count(t, pool, `SELECT count(*) FROM seller_media_buys b WHERE b.media_buy_id NOT LIKE 'seeded\_%' AND NOT EXISTS (
		SELECT 1 FROM idempotency_keys k WHERE convert_from(k.response, 'UTF8')::jsonb->>'media_buy_id' = b.media_buy_id)
	AND NOT EXISTS (
		SELECT 1 FROM seller_tasks tk JOIN idempotency_keys k ON convert_from(k.response, 'UTF8')::jsonb->>'task_id' = tk.task_id
		WHERE tk.status = 'completed' AND tk.result->>'media_buy_id' = b.media_buy_id)`)
	if orphans != 0 {
		t.Fatalf("%d media buys without a stored idempotent answer", orphans)
	}
}

// The 3.2 idempotency storyboard's rate_limit_replay_invariant phase, on
// Postgres.
func TestPostgresSellerRateLimitNotReplayed(t *testing.T) {
	t.Parallel()
	s := newSellerWith(t, newSchema(t), &idem.Config{Limiter: idem.NewLimiter(idem.Limits{
		Writes: idem.Rate{PerSecond: 1, Burst: 1}, Reads: idem.Rate{PerSecond: 100, Burst: 100},
	})})
	url := sellertest.Start(t, s)
	sellertest.RateLimitNotReplayed(t, url)
	t.Run("A2A", func(t *testing.T) { sellertest.RateLimitNotReplayed(t, strings.TrimSuffix(url, "/mcp")+"/a2a") })
}

// One store behind MCP and A2A, on Postgres: a key replays across
// transports, a concurrent mix on one key makes one media buy, and another
// principal never sees it.
func TestPostgresSellerCrossTransport(t *testing.T) {
	t.Parallel()
	sellertest.CrossTransport(t, sellertest.EnvFor(t, newSeller(t, newSchema(t))))
}

// buildSeller compiles cmd/adcp-seller once per test binary.
var buildSeller = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "adcp-seller-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "adcp-seller")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/adcp-go/idempotency/cmd/adcp-seller").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

var servingLine = regexp.MustCompile(`serving MCP at (http://\S+)`)

// sellerKey seals the answers of every seller process the tests start.
var sellerKey = []byte("0123456789abcdef0123456789abcdef")

// sellerAnswers opens the answers that seller processes stored (sealed with
// sellerKey) and returns, per idempotency key, the media_buy_id each names.
func sellerAnswers(t testing.TB, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	ring, err := idem.NewKeyRing("test", map[string][]byte{"test": sellerKey})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(context.Background(), `SELECT principal_id, account_id, key, operation, response FROM idempotency_keys WHERE response IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var principal, account, key, op string
		var stored []byte
		if err := rows.Scan(&principal, &account, &key, &op, &stored); err != nil {
			t.Fatal(err)
		}
		plain, err := idem.OpenStoredAnswer(ring, principal, account, key, op, stored)
		if err != nil {
			t.Fatalf("opening the answer of %s: %v", op, err)
		}
		var a struct {
			MediaBuyID string `json:"media_buy_id"`
		}
		_ = json.Unmarshal(plain, &a)
		out[key] = a.MediaBuyID
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sellerProcess starts the real command on a free loopback port and returns
// it with its MCP URL; it is killed when t ends.
func sellerProcess(t *testing.T, args ...string) (*child, string) {
	t.Helper()
	bin, err := buildSeller()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	// One key for every seller process of the test run: processes that
	// share a database must open each other's answers.
	cmd.Env = append(os.Environ(), "ADCP_SELLER_ENCRYPTION_KEYS=test="+base64.StdEncoding.EncodeToString(sellerKey),
		// One webhook signing key and one account salt for every process
		// of a test, as replicas must share them.
		"ADCP_SELLER_WEBHOOK_SIGNING_KEY=test="+base64.StdEncoding.EncodeToString(sellerKey),
		"ADCP_SELLER_ACCOUNT_SALT="+base64.StdEncoding.EncodeToString(sellerKey[:16]))
	c, err := startChild(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.kill() })
	line, err := c.waitLine("adcp-seller: serving", time.Minute)
	m := servingLine.FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("seller printed %q (%v)", line, err)
	}
	return c, m[1]
}

// A seller killed after a media buy committed but before its webhook was
// delivered delivers it after a restart, once.
func TestSellerDeliversWebhookAfterCrash(t *testing.T) {
	t.Parallel()
	pool := newSchema(t)
	dsn := pool.Config().ConnString()
	tokens := "p1=" + sellertest.Token
	receiver := sellertest.NewReceiver(t)
	receiver.SetStatus(http.StatusServiceUnavailable) // nothing gets through yet

	first, url := sellerProcess(t, "-database-url", dsn, "-tokens", tokens, "-dev")
	cs := sellertest.Connect(t, url, sellertest.Token)
	key := "crash-webhook-" + randomID(8)
	hook := "/step/create_media_buy_initial/op-" + key
	created := sellertest.Call(t, cs, "create_media_buy", sellertest.CreateArgs(key, 5000, receiver.URL(hook), "crash"))
	if created.IsError {
		t.Fatalf("create: %s", created.Raw)
	}
	// Committed, with its delivery job in River; wait for a failed attempt
	// to be recorded so the kill lands between commit and delivery, not in
	// the middle of an attempt, whose job River would only rescue later.
	waitFor(t, func() bool {
		return count(t, pool, `SELECT count(*) FROM `+sellerWebhooks+` WHERE w.attempt > 0 AND w.state = 'retryable'`) == 1
	})
	first.kill()
	if n := len(receiver.Deliveries(hook)); n != 0 {
		t.Fatalf("%d deliveries before the restart", n)
	}

	receiver.SetStatus(0)
	_, url2 := sellerProcess(t, "-database-url", dsn, "-tokens", tokens, "-dev")
	events := receiver.WaitFor(t, hook, 1)
	if r, _ := events[0]["result"].(map[string]any); r["media_buy_id"] != created.Body["media_buy_id"] {
		t.Fatalf("delivered event = %v", events[0])
	}
	// The replay after the restart answers from the store and sends nothing.
	replay := sellertest.Call(t, sellertest.Connect(t, url2, sellertest.Token), "create_media_buy",
		sellertest.CreateArgs(key, 5000, receiver.URL(hook), "after-restart"))
	if replay.Body["replayed"] != true || replay.Body["media_buy_id"] != created.Body["media_buy_id"] {
		t.Fatalf("replay after restart = %s", replay.Raw)
	}
	waitFor(t, func() bool {
		return count(t, pool, `SELECT count(*) FROM `+sellerWebhooks+` WHERE w.state = 'completed'`) == 1
	})
	if b, o := count(t, pool, `SELECT count(*) FROM seller_media_buys`), count(t, pool, `SELECT count(*) FROM `+sellerWebhooks); b != 1 || o != 1 {
		t.Fatalf("%d media buys, %d webhook jobs; want 1 and 1", b, o)
	}
	if n := len(receiver.Deliveries(hook)); n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
}

// Two seller processes on one database: concurrent creates with one key
// make one media buy.
func TestTwoSellerProcessesOneKey(t *testing.T) {
	t.Parallel()
	pool := newSchema(t)
	dsn := pool.Config().ConnString()
	tokens := "p1=" + sellertest.Token
	_, urlA := sellerProcess(t, "-database-url", dsn, "-tokens", tokens)
	_, urlB := sellerProcess(t, "-database-url", dsn, "-tokens", tokens)
	sellertest.CreateConcurrently(t, []string{urlA, urlB}, "two-processes-"+randomID(8), 10)
	if b := count(t, pool, `SELECT count(*) FROM seller_media_buys`); b != 1 {
		t.Fatalf("%d media buys, want 1", b)
	}
	// The answer both processes replay is sealed at rest: nothing of the
	// media buy is readable in the table.
	var id string
	var stored []byte
	if err := pool.QueryRow(context.Background(), `SELECT b.media_buy_id, k.response FROM seller_media_buys b, idempotency_keys k`).Scan(&id, &stored); err != nil {
		t.Fatal(err)
	}
	if len(stored) == 0 || stored[0] != 0x01 || strings.Contains(string(stored), id) || strings.Contains(string(stored), "media_buy_id") {
		t.Fatalf("the stored answer is readable: %q", stored)
	}
}

// sellerWebhooks is the reference seller's webhook deliveries (the River
// jobs of package riverdelivery), each with the media buy its event
// reports, as a FROM item named w.
const sellerWebhooks = `(SELECT j.id, j.state, j.attempt,
		convert_from(decode(j.args->>'body', 'base64'), 'UTF8')::jsonb->'result'->>'media_buy_id' AS media_buy_id
	FROM river_job j WHERE j.kind = 'adcp_webhook_delivery') AS w`

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
