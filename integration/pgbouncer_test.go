package integration

// The library through PgBouncer in transaction pooling mode, the way many
// sellers run Postgres. See docs/OPERATIONS.md, "PgBouncer and other
// transaction poolers".
//
// PgBouncer is a plain process each test starts from a generated ini file;
// no system service is involved. The tests need the pgbouncer binary: on
// Debian or Ubuntu `apt-get install -y pgbouncer` (CI must run it before
// `make test`). Without it they fail, as skipped tests count as failures.
//
// The test schema: newSchema's trick, a search_path startup parameter in the
// URL, does not survive PgBouncer. It forwards only the startup parameters it
// can track (client_encoding, datestyle, timezone, standard_conforming_strings,
// application_name) and closes the connection on any other, with "unsupported
// startup parameter: search_path" (or ": options" for options=-csearch_path=).
// A `SET search_path` after connecting would be session state, which
// transaction pooling hands to whichever client gets that server connection
// next: exactly what an application must not rely on behind PgBouncer. So
// each test gets a database of its own instead, set up over a direct
// connection (migrations.Up holds a session advisory lock, which a
// transaction pooler would also break), and reaches it through PgBouncer with
// nothing but a database name; the tables live in its public schema.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/migrations"
)

// pgbouncerInstall is the command that provides the pgbouncer binary on
// Debian and Ubuntu (Debian 12 ships 1.18, Ubuntu 24.04 1.22).
const pgbouncerInstall = "apt-get install -y pgbouncer"

// pgbouncerPoolSize is PgBouncer's default_pool_size in these tests: several
// server connections, far fewer than the 40 client connections of each pgx
// pool, so that transactions of one client land on different server
// connections.
const pgbouncerPoolSize = 6

// pgbouncerBin is the pgbouncer binary and its version.
type pgbouncerBin struct {
	path         string
	major, minor int
	version      string // the first line of pgbouncer --version
}

// preparedStatements reports whether this PgBouncer tracks protocol-level
// prepared statements across server connections (1.21 and later, when
// max_prepared_statements is set).
func (b pgbouncerBin) preparedStatements() bool {
	return b.major > 1 || b.major == 1 && b.minor >= 21
}

var findPgbouncer = sync.OnceValues(func() (pgbouncerBin, error) {
	path, err := exec.LookPath("pgbouncer")
	if err != nil {
		// Debian installs it in /usr/sbin, which an ordinary user's PATH may lack.
		for _, p := range []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"} {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				path = p
				break
			}
		}
	}
	if path == "" {
		return pgbouncerBin{}, errors.New("no pgbouncer in PATH, /usr/sbin or /usr/local")
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return pgbouncerBin{}, fmt.Errorf("%s --version: %v: %s", path, err, out)
	}
	m := regexp.MustCompile(`PgBouncer (\d+)\.(\d+)`).FindSubmatch(out)
	if m == nil {
		return pgbouncerBin{}, fmt.Errorf("%s --version printed no version: %q", path, out)
	}
	b := pgbouncerBin{path: path, version: strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])}
	b.major, _ = strconv.Atoi(string(m[1]))
	b.minor, _ = strconv.Atoi(string(m[2]))
	return b, nil
})

func requirePgbouncer(t testing.TB) pgbouncerBin {
	t.Helper()
	b, err := findPgbouncer()
	if err != nil {
		// Not a skip: `make integration` counts skips as failures, and CI
		// (IDEM_REQUIRE_DOCKER=1) must not pass without this test.
		how := "these tests need the pgbouncer binary"
		if os.Getenv("IDEM_REQUIRE_DOCKER") == "1" {
			how += " (IDEM_REQUIRE_DOCKER=1: CI must install it before `make test`)"
		}
		t.Fatalf("pgbouncer is not installed: %v; %s. On Debian or Ubuntu run: %s", err, how, pgbouncerInstall)
	}
	return b
}

// bouncer is a PgBouncer in transaction pooling mode in front of a database
// of the test's own.
type bouncer struct {
	bin    pgbouncerBin
	dbName string
	direct *pgxpool.Pool // straight to Postgres, that database: setup and checks
	url    string        // the same database through PgBouncer
	log    *syncBuffer   // PgBouncer's output
}

// newBouncer creates a database with the migrations and the business table
// applied (over a direct connection), and starts a PgBouncer in transaction
// mode in front of it with pgbouncerPoolSize server connections.
func newBouncer(t *testing.T) *bouncer {
	t.Helper()
	ctx := context.Background()
	b := &bouncer{bin: requirePgbouncer(t), dbName: "pgb_" + randomID(6), log: &syncBuffer{}}

	base, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.ConnectConfig(ctx, base)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	// UTF8 whatever the cluster's default (some Postgres images are
	// SQL_ASCII): pgx's simple protocol refuses any other client_encoding.
	_, err = admin.Exec(ctx, "CREATE DATABASE "+b.dbName+" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
	_ = admin.Close(ctx)
	if err != nil {
		t.Fatalf("create database (the test user needs CREATEDB): %v", err)
	}
	t.Cleanup(func() { // registered first, so it runs after PgBouncer and every pool are gone
		c, err := pgx.ConnectConfig(context.Background(), base)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE "+b.dbName+" WITH (FORCE)")
			_ = c.Close(context.Background())
		}
	})

	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Database = b.dbName
	pcfg.ConnConfig.RuntimeParams["application_name"] = "idem-direct"
	pcfg.MaxConns = 4
	sqlDB := stdlib.OpenDB(*pcfg.ConnConfig)
	defer sqlDB.Close()
	if _, err := migrations.Up(ctx, sqlDB); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	if b.direct, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.direct.Close)
	if _, err := b.direct.Exec(ctx, `CREATE TABLE media_buys (
		id bigserial PRIMARY KEY, principal text NOT NULL, budget int NOT NULL)`); err != nil {
		t.Fatalf("create business table: %v", err)
	}

	b.start(t, base)
	return b
}

// start writes the ini file and the userlist in t.TempDir() and runs
// pgbouncer on a free port of 127.0.0.1 until the test ends.
func (b *bouncer) start(t *testing.T, server *pgx.ConnConfig) {
	t.Helper()
	dir := t.TempDir()
	authType := "scram-sha-256" // pgx logs in to PgBouncer with the test's own password
	if server.Password == "" {
		authType = "trust"
	}
	userlist := fmt.Sprintf("%s %s\n", iniQuote(server.User), iniQuote(server.Password))
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(userlist), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := ""
	if b.bin.preparedStatements() {
		// 1.21+: PgBouncer prepares protocol-level named statements on each
		// server connection a client's transaction lands on.
		extra = "max_prepared_statements = 200\n"
	}

	// PgBouncer refuses to run as root ("PgBouncer should not run as root").
	// Its -u flag switches user only after loading the files, but a process
	// that changes its own user loses the parent-death signal. So as root
	// the test starts it as an unprivileged user directly (Go sets the
	// credentials, then the parent-death signal, in the child before exec),
	// and makes the files readable by that user: PgBouncer dies with the test
	// binary even when a timeout kills it before any cleanup runs.
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = b.unprivileged(t, dir)
	}

	var lastErr error
	for attempt := range 3 { // another process may take the free port first
		port := freePort(t)
		ini := fmt.Sprintf(`[databases]
%s = host=%s port=%d dbname=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = %s
auth_file = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = %d
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
%s`, b.dbName, server.Host, server.Port, b.dbName, port, authType, filepath.Join(dir, "userlist.txt"),
			pgbouncerPoolSize, pgbouncerPoolSize, extra)
		iniPath := filepath.Join(dir, "pgbouncer.ini")
		if err := os.WriteFile(iniPath, []byte(ini), 0o600); err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			chown(t, iniPath, cred)
			chown(t, filepath.Join(dir, "userlist.txt"), cred)
		}
		b.log.Reset()
		cmd := exec.Command(b.bin.path, iniPath)
		cmd.Stdout, cmd.Stderr = b.log, b.log
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", b.bin.path, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if lastErr = waitListening(port, exited); lastErr != nil {
			stop()
			t.Logf("pgbouncer attempt %d: %v\n%s", attempt+1, lastErr, b.log.String())
			continue
		}
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				t.Logf("pgbouncer log:\n%s", b.log.String())
			}
		})
		u := url.URL{
			Scheme:   "postgres",
			User:     url.UserPassword(server.User, server.Password),
			Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			Path:     "/" + b.dbName,
			RawQuery: "sslmode=disable",
		}
		b.url = u.String()
		t.Logf("%s on 127.0.0.1:%d, pool_mode = transaction, default_pool_size = %d%s",
			b.bin.version, port, pgbouncerPoolSize, map[bool]string{true: ", max_prepared_statements = 200"}[extra != ""])
		return
	}
	t.Fatalf("pgbouncer did not start: %v", lastErr)
}

// unprivileged returns the credentials of a user PgBouncer may run as, and
// gives it dir (and a way through dir's parent, the test's own temporary
// folder).
func (b *bouncer) unprivileged(t *testing.T, dir string) *syscall.Credential {
	t.Helper()
	for _, name := range []string{"nobody", "postgres", "daemon"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		chown(t, dir, cred)
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			t.Fatal(err)
		}
		return cred
	}
	t.Fatal("running as root, and none of the users nobody, postgres, daemon exists for pgbouncer to run as")
	return nil
}

func chown(t testing.TB, path string, c *syscall.Credential) {
	t.Helper()
	if err := os.Chown(path, int(c.Uid), int(c.Gid)); err != nil {
		t.Fatal(err)
	}
}

func iniQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(port int, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return errors.New("pgbouncer exited")
		default:
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on port %d after 10s: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pool is a pgx pool of 40 connections through PgBouncer, with mode as
// its default query exec mode.
func (b *bouncer) pool(t *testing.T, mode pgx.QueryExecMode) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(b.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = mode
	cfg.MaxConns = 40
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pool through pgbouncer: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// serverConns counts the Postgres backends PgBouncer holds for the test's
// database.
func (b *bouncer) serverConns(t testing.TB) int {
	return count(t, b.direct, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> 'idem-direct'`)
}

// keyBuy is a handler writing one business row for the request's key, so
// that the committed rows per key can be counted.
func keyBuy(key string, pause time.Duration, executions *sync.Map) func(context.Context, pgx.Tx) (buy, error) {
	return func(ctx context.Context, tx pgx.Tx) (buy, error) {
		n, _ := executions.LoadOrStore(key, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		time.Sleep(pause)
		return createBuy(key, 5000)(ctx, tx)
	}
}

// replica is what one seller process has: a Store (whose in-memory state,
// such as duplicates of a key waiting for each other, is per process) and a
// pool of its own through PgBouncer.
type replica struct {
	s    *idem.Store
	pool *pgxpool.Pool
}

// replicas returns n replicas through b with the given exec mode.
func (b *bouncer) replicas(t *testing.T, n int, mode pgx.QueryExecMode, cfg func() *idem.Config) []replica {
	rs := make([]replica, n)
	for i := range rs {
		rs[i] = replica{newStore(t, cfg()), b.pool(t, mode)}
	}
	return rs
}

// workload is many concurrent RunInTx calls, spread over the replicas: 16
// keys sent by 4 goroutines each at the same moment, and 48 keys sent once.
type workload struct {
	keys       []string
	calls      []string // the key of each call
	results    []idem.Result[buy]
	errs       []error
	executions sync.Map // key -> *atomic.Int32: handler runs, committed or not
}

func runWorkload(ctx context.Context, rs []replica) *workload {
	w := &workload{}
	for i := range 64 {
		k := newKey()
		w.keys = append(w.keys, k)
		copies := 1
		if i < 16 {
			copies = 4
		}
		for range copies {
			w.calls = append(w.calls, k)
		}
	}
	w.results = make([]idem.Result[buy], len(w.calls))
	w.errs = make([]error, len(w.calls))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, k := range w.calls {
		wg.Go(func() {
			<-start
			r := rs[i%len(rs)]
			// A duplicate that waited out its WaitLimit (a loaded machine
			// queues 112 transactions on a few server connections) is
			// told IDEMPOTENCY_IN_FLIGHT and retries, as a buyer does.
			for deadline := time.Now().Add(60 * time.Second); ; {
				w.results[i], w.errs[i] = idem.RunInTx(ctx, r.s, r.pool, request("alice", k, payload), keyBuy(k, 10*time.Millisecond, &w.executions))
				if !errors.Is(w.errs[i], idem.ErrInFlight) || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	close(start)
	wg.Wait()
	return w
}

// atMostOncePerKey checks what must hold even when calls fail: no key has
// more than one committed business row.
func atMostOncePerKey(t *testing.T, b *bouncer) {
	t.Helper()
	if n := count(t, b.direct, `SELECT count(*) FROM (SELECT principal FROM media_buys GROUP BY principal HAVING count(*) > 1) d`); n != 0 {
		t.Fatalf("%d keys have more than one committed media buy", n)
	}
	if n := count(t, b.direct, `SELECT count(*) FROM media_buys m
		WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.key = m.principal AND k.response IS NOT NULL)`); n != 0 {
		t.Fatalf("%d committed media buys without their stored answer", n)
	}
}

// checkAllSucceeded checks a workload in which every call must succeed: one
// execution and one fresh answer per key, the same value for every caller.
func (w *workload) checkAllSucceeded(t *testing.T, b *bouncer) {
	t.Helper()
	fresh := map[string]int{}
	first := map[string]buy{}
	for i, k := range w.calls {
		if w.errs[i] != nil {
			t.Fatalf("call %d (key %s): %v", i, k, w.errs[i])
		}
		if !w.results[i].Replayed {
			fresh[k]++
		}
		if v, ok := first[k]; ok && v != w.results[i].Value {
			t.Fatalf("key %s: callers got %+v and %+v", k, v, w.results[i].Value)
		}
		first[k] = w.results[i].Value
	}
	for _, k := range w.keys {
		n, _ := w.executions.Load(k)
		if n == nil || n.(*atomic.Int32).Load() != 1 || fresh[k] != 1 {
			t.Fatalf("key %s: %v executions, %d fresh answers; want 1 and 1", k, n, fresh[k])
		}
	}
	if got := count(t, b.direct, `SELECT count(*) FROM media_buys WHERE principal = ANY($1)`, w.keys); got != len(w.keys) {
		t.Fatalf("%d media buys, want %d", got, len(w.keys))
	}
	atMostOncePerKey(t, b)
}

// TestPgBouncerTransactionModeStatementCache shows why the exec mode
// matters: with pgx's default, QueryExecModeCacheStatement, each client
// connection prepares named statements ("stmtcache_<hash of the SQL>") once
// and then only executes them. In transaction mode before PgBouncer 1.21 the
// next transaction of that client runs on whichever server connection is
// free, where the statement does not exist, or where another client already
// prepared the same name. The calls fail (none is run twice); with 1.21+ and
// max_prepared_statements, PgBouncer re-prepares them and everything works.
func TestPgBouncerTransactionModeStatementCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBouncer(t)
	rs := b.replicas(t, 2, pgx.QueryExecModeCacheStatement, func() *idem.Config { return nil })

	w := runWorkload(ctx, rs)
	if b.bin.preparedStatements() {
		t.Logf("%s tracks prepared statements: the default exec mode must work", b.bin.version)
		w.checkAllSucceeded(t, b)
		return
	}

	failed, statementErrors := 0, 0
	codes := map[string]int{}
	examples := map[string]string{} // SQLSTATE -> the first message
	for _, err := range w.errs {
		if err == nil {
			continue
		}
		failed++
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			codes[pgErr.Code]++
			// 26000 invalid_sql_statement_name: prepared statement "stmtcache_..." does not exist
			// 42P05 duplicate_prepared_statement: prepared statement "stmtcache_..." already exists
			if (pgErr.Code == "26000" || pgErr.Code == "42P05") && strings.Contains(pgErr.Message, `prepared statement "stmtcache_`) {
				statementErrors++
				if examples[pgErr.Code] == "" {
					examples[pgErr.Code] = err.Error()
				}
			}
		} else {
			codes["(no SQLSTATE) "+err.Error()]++
		}
	}
	t.Logf("%s, pgx %s mode: %d of %d calls failed; SQLSTATEs %v", b.bin.version, pgx.QueryExecModeCacheStatement, failed, len(w.calls), codes)
	for _, code := range []string{"26000", "42P05"} {
		if examples[code] != "" {
			t.Logf("for example: %s", examples[code])
		}
	}
	if statementErrors == 0 {
		t.Fatalf("%s is before 1.21, yet no call failed on a prepared statement through it in transaction mode (SQLSTATEs %v): is the pool really in transaction mode?", b.bin.version, codes)
	}
	// Failing loudly is all the broken mode does: no key ran twice.
	atMostOncePerKey(t, b)
}

// TestPgBouncerTransactionMode runs the library's behaviour through
// PgBouncer in transaction mode with the exec modes that do not depend on
// named prepared statements surviving between transactions.
func TestPgBouncerTransactionMode(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheDescribe} {
		t.Run(strings.ReplaceAll(mode.String(), " ", "_"), func(t *testing.T) {
			t.Parallel()
			testThroughPgBouncer(t, mode)
		})
	}
}

func testThroughPgBouncer(t *testing.T, mode pgx.QueryExecMode) {
	ctx := context.Background()
	b := newBouncer(t)
	// Two replicas: duplicates within one process may wait for each other
	// in memory, duplicates from two wait in Postgres, on the key's row,
	// holding a server connection. A WaitLimit of their own, so that a
	// lock_timeout left on a server connection would show (see "no session
	// state").
	rs := b.replicas(t, 2, mode, func() *idem.Config { return &idem.Config{WaitLimit: 4321 * time.Millisecond} })
	s, pool := rs[0].s, rs[0].pool

	t.Run("first call then replay", func(t *testing.T) {
		key := newKey()
		first, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy(key, 5000))
		if err != nil || first.Replayed || first.Value.MediaBuyID == 0 {
			t.Fatalf("first call = %+v, %v; want a fresh execution", first, err)
		}
		second, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(context.Context, pgx.Tx) (buy, error) {
			t.Error("handler ran on a replay")
			return buy{}, nil
		})
		if err != nil || !second.Replayed || second.Value != first.Value || string(second.Response) != string(first.Response) {
			t.Fatalf("replay = %+v (%s), %v; want the stored %+v (%s) with Replayed", second, second.Response, err, first, first.Response)
		}
		if n := count(t, b.direct, `SELECT count(*) FROM media_buys WHERE principal = $1`, key); n != 1 {
			t.Fatalf("%d media buys, want 1", n)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		key := newKey()
		if _, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy(key, 5000)); err != nil {
			t.Fatal(err)
		}
		changed := strings.Replace(payload, "5000", "25000", 1)
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, changed), createBuy(key, 25000))
		if !errors.Is(err, idem.ErrConflict) {
			t.Fatalf("changed payload: %v, want ErrConflict", err)
		}
		if n := count(t, b.direct, `SELECT count(*) FROM media_buys WHERE principal = $1`, key); n != 1 {
			t.Fatalf("%d media buys, want 1", n)
		}
	})

	t.Run("32 concurrent retries from two replicas run once", func(t *testing.T) {
		key := newKey()
		var executions atomic.Int32
		const n = 32
		results := make([]idem.Result[buy], n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				r := rs[i%len(rs)]
				results[i], errs[i] = idem.RunInTx(ctx, r.s, r.pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
					executions.Add(1)
					time.Sleep(50 * time.Millisecond) // hold the claim while the others pile up
					return createBuy(key, 5000)(ctx, tx)
				})
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("caller %d: %v", i, errs[i])
			}
			if !results[i].Replayed {
				fresh++
			}
			if results[i].Value != results[0].Value {
				t.Fatalf("caller %d got %+v, caller 0 got %+v", i, results[i].Value, results[0].Value)
			}
		}
		if got := executions.Load(); got != 1 || fresh != 1 {
			t.Fatalf("%d executions, %d fresh answers; want 1 and 1", got, fresh)
		}
		if c := count(t, b.direct, `SELECT count(*) FROM media_buys WHERE principal = $1`, key); c != 1 {
			t.Fatalf("%d media buys, want 1", c)
		}
	})

	t.Run("handler error rolls back", func(t *testing.T) {
		key := newKey()
		boom := errors.New("upstream ad server said no")
		_, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
			if _, err := createBuy(key, 5000)(ctx, tx); err != nil {
				return buy{}, err
			}
			return buy{}, boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("error = %v, want the handler's", err)
		}
		if m, k := count(t, b.direct, `SELECT count(*) FROM media_buys WHERE principal = $1`, key),
			count(t, b.direct, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, key); m != 0 || k != 0 {
			t.Fatalf("after a handler error: %d media buys, %d keys; want none", m, k)
		}
		res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), createBuy(key, 5000))
		if err != nil || res.Replayed {
			t.Fatalf("retry after an error = %+v, %v; want a fresh execution", res, err)
		}
	})

	for _, dup := range []struct {
		name    string
		r       replica
		inPgsql bool // the wait shows in Postgres as a lock wait
	}{
		{"concurrent duplicate from the same replica waits then replays", rs[0], false},
		{"concurrent duplicate from another replica waits on the row lock then replays", rs[1], true},
	} {
		t.Run(dup.name, func(t *testing.T) {
			key := newKey()
			holding, release := make(chan struct{}), make(chan struct{})
			type outcome struct {
				res idem.Result[buy]
				err error
			}
			first, second := make(chan outcome, 1), make(chan outcome, 1)
			go func() {
				res, err := idem.RunInTx(ctx, s, pool, request("alice", key, payload), func(ctx context.Context, tx pgx.Tx) (buy, error) {
					close(holding)
					<-release
					return createBuy(key, 5000)(ctx, tx)
				})
				first <- outcome{res, err}
			}()
			<-holding
			go func() {
				res, err := idem.RunInTx(ctx, dup.r.s, dup.r.pool, request("alice", key, payload), func(context.Context, pgx.Tx) (buy, error) {
					return buy{}, errors.New("the duplicate's handler ran")
				})
				second <- outcome{res, err}
			}()
			waiting := func() bool {
				if !dup.inPgsql {
					time.Sleep(300 * time.Millisecond) // wherever it waits, it must not answer yet
					return true
				}
				// It reached Postgres through PgBouncer and waits there on
				// the first request's row lock.
				return count(t, b.direct, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock'`) > 0
			}
			deadline := time.Now().Add(3 * time.Second)
			for !waiting() {
				if time.Now().After(deadline) {
					close(release)
					t.Fatal("the duplicate never waited on a lock in Postgres")
				}
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case o := <-second:
				close(release)
				t.Fatalf("the duplicate returned while the first request held the key: %+v, %v", o.res, o.err)
			default:
			}
			close(release)
			f := <-first
			if f.err != nil || f.res.Replayed {
				t.Fatalf("first request = %+v, %v", f.res, f.err)
			}
			d := <-second
			if d.err != nil || !d.res.Replayed || d.res.Value != f.res.Value {
				t.Fatalf("duplicate = %+v, %v; want the replay of %+v", d.res, d.err, f.res.Value)
			}
		})
	}

	t.Run("many goroutines, distinct and same keys", func(t *testing.T) {
		w := runWorkload(ctx, rs)
		w.checkAllSucceeded(t, b)
		// Transaction pooling really multiplexed the replicas' client
		// connections onto a few server connections.
		clients := 0
		for _, r := range rs {
			clients += int(r.pool.Stat().TotalConns())
		}
		if servers := b.serverConns(t); clients <= pgbouncerPoolSize || servers > pgbouncerPoolSize {
			t.Fatalf("%d client connections on %d server connections; want more than %d on at most %d",
				clients, servers, pgbouncerPoolSize, pgbouncerPoolSize)
		}
	})

	t.Run("no session state", func(t *testing.T) {
		// The claim changes lock_timeout for its own transaction only. Hold a
		// transaction on every server connection at once and look at each.
		var want string
		if err := b.direct.QueryRow(ctx, `SELECT current_setting('lock_timeout')`).Scan(&want); err != nil {
			t.Fatal(err)
		}
		pids := map[int32]bool{}
		for range pgbouncerPoolSize {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			var pid int32
			var got string
			if err := tx.QueryRow(ctx, `SELECT pg_backend_pid(), current_setting('lock_timeout')`).Scan(&pid, &got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("server connection %d: lock_timeout = %q after RunInTx calls, want the server's %q", pid, got, want)
			}
			pids[pid] = true
		}
		if len(pids) != pgbouncerPoolSize {
			t.Fatalf("%d open transactions ran on %d server connections, want one each", pgbouncerPoolSize, len(pids))
		}
	})
}
