package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Real Redis and Postgres processes from the machine's own binaries, for
// the topologies a container per test makes awkward: a Redis Cluster, a
// Sentinel group, a Postgres primary with a streaming replica. Each process
// runs on free loopback ports with a configuration generated in a
// temporary folder, is started through startChild and killed when the test
// ends. ../shared/testenv/docker-up installs the binaries (Debian's
// redis-server, 7.0 or later for CLUSTER ADDSLOTSRANGE and cluster-port,
// and postgresql-15).
//
// Between a replica and its primary the tests can put a link: a TCP proxy
// that they stall (a network partition, or a replica lagging behind) and
// cut, so that the asynchronous replication window is as wide as the test
// says rather than whatever a loopback interface gives.

// serverBinary finds a server binary: the environment variable env if set,
// else the first of candidates that exists. A name is looked up in PATH; a
// glob pattern takes the last of its matches in lexical order.
func serverBinary(t testing.TB, env string, candidates ...string) string {
	t.Helper()
	if p := os.Getenv(env); env != "" && p != "" {
		return p
	}
	for _, c := range candidates {
		if strings.ContainsRune(c, '*') {
			matches, _ := filepath.Glob(c)
			slices.Sort(matches)
			if len(matches) > 0 {
				return matches[len(matches)-1]
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Fatalf("none of %v found; install it (../shared/testenv/docker-up does)%s", candidates, map[bool]string{true: " or set " + env}[env != ""])
	return ""
}

// logTail returns the last n lines of the file at path, for failure
// messages.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// redisNode is a redis-server process (a server or a sentinel).
type redisNode struct {
	port int
	dir  string
	proc *child
}

func (n *redisNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// client returns a client of this one node, closed when t ends.
func (n *redisNode) client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: n.addr(), DialTimeout: time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// kill sends SIGKILL to the node and waits for it to exit.
func (n *redisNode) kill() { n.proc.kill() }

// startRedisNode starts redis-server on a free port with the lines conf
// added to a generated configuration (sentinel: in sentinel mode), and
// waits until it answers PING. It is killed when t ends; if t failed, the
// end of its log is logged.
func startRedisNode(t *testing.T, sentinel bool, conf ...string) *redisNode {
	t.Helper()
	bin := serverBinary(t, "IDEM_TEST_REDIS_SERVER", "redis-server")
	dir, err := os.MkdirTemp(t.TempDir(), "redis-")
	if err != nil {
		t.Fatal(err)
	}
	n := &redisNode{port: freePort(t), dir: dir}
	lines := []string{
		"port " + strconv.Itoa(n.port), "bind 127.0.0.1", "dir " + dir,
		"logfile " + filepath.Join(dir, "redis.log"), // never stdout: startChild buffers only so many lines
	}
	if !sentinel {
		lines = append(lines, `save ""`, "appendonly no", "maxmemory-policy noeviction",
			"repl-diskless-sync-delay 0") // a new replica syncs at once, not 5 s later
	}
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(strings.Join(append(lines, conf...), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{path}
	if sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command(bin, args...)
	cmd.WaitDelay = 5 * time.Second // a fork (a replication snapshot) may hold the output pipes
	n.proc, err = startChild(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("redis-server on port %d, end of its log:\n%s", n.port, logTail(filepath.Join(dir, "redis.log"), 30))
		}
	})
	c := redis.NewClient(&redis.Options{Addr: n.addr(), DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d does not answer PING after 30s: %v\n%s", n.port, err, logTail(filepath.Join(dir, "redis.log"), 30))
		}
	}
}

// infoField reads one field of INFO section from c.
func infoField(ctx context.Context, c *redis.Client, section, field string) string {
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// eventually polls cond every 20 ms until it holds, or fails t after
// limit, describing what was awaited.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}

// pgServer is a postgres process from the machine's PostgreSQL binaries
// (PostgreSQL 15 on Debian), run as the postgres user when the tests run as
// root, because postgres refuses to run as root.
type pgServer struct {
	dir  string
	port int
	proc *child
}

// url is a connection URL of the server as user idem, database postgres.
func (s *pgServer) url() string {
	return fmt.Sprintf("postgres://idem@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// pgBin returns the path of one PostgreSQL program: in IDEM_TEST_PG_BINDIR
// if set, else beside /usr/lib/postgresql/*/bin/initdb (where Debian puts
// them), else beside the initdb in PATH.
func pgBin(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("IDEM_TEST_PG_BINDIR"); dir != "" {
		return filepath.Join(dir, name)
	}
	return filepath.Join(filepath.Dir(serverBinary(t, "", "/usr/lib/postgresql/*/bin/initdb", "initdb")), name)
}

// pgCredential returns the user the PostgreSQL programs run as: nil (this
// process's own) unless the tests run as root, then the postgres user.
func pgCredential(t testing.TB) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root, and there is no postgres user for the PostgreSQL programs to run as: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("postgres user: uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
}

// pgCommand is a PostgreSQL program run as pgCredential's user.
func pgCommand(t testing.TB, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(pgBin(t, name), args...)
	if c := pgCredential(t); c != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c}
	}
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	return cmd
}

// pgDataDir returns an empty folder for a data directory, owned by the user
// the server runs as, removed when t ends. It lies outside t.TempDir, whose
// folders only root may enter.
func pgDataDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "idem-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if c := pgCredential(t); c != nil {
		chown(t, dir, c)
	}
	return filepath.Join(dir, "data")
}

// runPG runs a PostgreSQL program to completion.
func runPG(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := pgCommand(t, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// startPG starts postgres on dir (a data directory) on a free port with
// the settings given as name=value, and waits until it accepts
// connections. It is stopped (immediate shutdown) when t ends.
func startPG(t *testing.T, dir string, settings ...string) *pgServer {
	t.Helper()
	s := &pgServer{dir: dir, port: freePort(t)}
	args := []string{"-D", dir, "-c", "port=" + strconv.Itoa(s.port), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=100"}
	for _, kv := range settings {
		args = append(args, "-c", kv)
	}
	cmd := pgCommand(t, "postgres", args...)
	cmd.WaitDelay = 10 * time.Second
	var err error
	if s.proc, err = startChild(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("postgres on port %d, end of its log:\n%s", s.port, lastLines(s.proc.stderr.String(), 30))
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.url())
		if err == nil {
			err = c.Ping(ctx)
			_ = c.Close(ctx)
		}
		cancel()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres on port %d does not accept connections after 60s: %v\n%s", s.port, err, lastLines(s.proc.stderr.String(), 30))
		}
	}
}

// stop ends the server the way pg_ctl stop -m immediate does (SIGQUIT: no
// shutdown checkpoint, no last WAL sent to replicas, every session cut),
// and waits until the postmaster and its children have exited.
func (s *pgServer) stop() {
	_ = s.proc.cmd.Process.Signal(syscall.SIGQUIT)
	exited := make(chan struct{})
	go func() { _ = s.proc.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = s.proc.cmd.Process.Kill()
		<-exited
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// pgExec runs one statement on a fresh connection to url.
func pgExec(ctx context.Context, url, sql string, args ...any) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// link is a TCP proxy on a loopback port in front of target: the network
// between a replica and its primary. stall stops it forwarding, both ways,
// with the bytes left where they are; cut closes every connection,
// dropping whatever the stall held back, and lets new connections through
// again.
type link struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	open  chan struct{} // closed while bytes flow
	conns map[net.Conn]struct{}
	done  bool
}

func newLink(t testing.TB, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, target: target, open: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(l.open)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *link) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

func (l *link) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.DialTimeout("tcp", l.target, time.Second)
		if err != nil {
			_ = in.Close()
			continue
		}
		l.mu.Lock()
		if l.done {
			l.mu.Unlock()
			_ = in.Close()
			_ = out.Close()
			return
		}
		l.conns[in], l.conns[out] = struct{}{}, struct{}{}
		l.mu.Unlock()
		go l.pipe(out, in)
		go l.pipe(in, out)
	}
}

func (l *link) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			open := l.open
			l.mu.Unlock()
			<-open
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			break
		}
	}
	l.drop(src, dst)
}

func (l *link) drop(conns ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
		delete(l.conns, c)
	}
}

// stall stops the link forwarding anything, in both directions.
func (l *link) stall() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.open:
		l.open = make(chan struct{})
	default: // already stalled
	}
}

// cut closes every connection through the link, dropping the bytes a stall
// held back, and lets new connections through.
func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Close()
		delete(l.conns, c)
	}
	select {
	case <-l.open:
	default:
		close(l.open)
	}
}

func (l *link) close() {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
	_ = l.ln.Close()
	l.cut()
}
