package integration

// Benchmarks of the Postgres paths, against the server that TestMain starts:
// untuned, as testcontainers' Postgres module starts it, which is with
// fsync=off (see TEST_DATABASE_URL below) and otherwise PostgreSQL's defaults
// (synchronous_commit=on, shared_buffers=128MB, ...). Run them
// with `make bench` from the repository root, or for instance:
//
//	cd integration && IDEM_BENCH_ROUNDS=5 go test -run '^$' -bench PostgresMiss -timeout 60m
//
// Every sub-benchmark that compares the library with a plain baseline runs
// both sides on the same server, one after the other, in the same process.
// Concurrency is explicit: c=N runs exactly N goroutines (whatever
// GOMAXPROCS is), each taking calls from a shared counter until b.N calls
// are done, so ns/op is wall time divided by calls (1/throughput); at c=1 it
// is the mean latency. Besides ns/op each reports:
//
//	p50-us, p99-us  the latency percentiles of the calls, measured per call
//	WAL-B/op        bytes of WAL the server wrote per call (pg_current_wal_lsn
//	                before and after the timed calls; includes whatever the
//	                server's background processes wrote meanwhile)
//	RT/op           statements and batches the client sent per call, each one
//	                network round trip (counted by a pgx tracer; BEGIN, COMMIT
//	                and ROLLBACK included)
//	client-CPU-us/op, server-CPU-us/op, proxy-CPU-us/op
//	                CPU time per call of this process, of the Postgres
//	                container and of the docker-proxy forwarding its port
//	                (see sampleCPU)
//
// Environment:
//
//	IDEM_BENCH_ROWS        table sizes for BenchmarkPostgresGrowth, comma
//	                       separated (default 1000000,10000000; 0 is always run;
//	                       100000000 needs about 45 GB of disk, see
//	                       docs/BENCHMARKS.md)
//	IDEM_BENCH_GROWTH_C    concurrencies of BenchmarkPostgresGrowth, comma
//	                       separated (default 1,4,16)
//	IDEM_BENCH_SWEEP_ROWS  rows in the table BenchmarkPostgresSweep sweeps,
//	                       a third of them past retention (default 1000000)
//	IDEM_BENCH_ROUNDS      rounds of the comparison benchmarks (default 1;
//	                       see benchRounds)
//	TEST_DATABASE_URL      run against this server instead of a container
//	                       (as the tests do); testcontainers' Postgres module
//	                       starts its server with -c fsync=off, which no SQL
//	                       can undo, so a run with fsync=on needs a server of
//	                       one's own (the CPU metrics of the server and the
//	                       proxy are then not reported)

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/migrations"
)

// benchPayload is a 1330-byte AdCP create_media_buy request, the 1 KB
// payload of idem's BenchmarkCanonicalHash (size=1KB).
var benchPayload = json.RawMessage(`{"idempotency_key":"6f1c2a9e-6c1b-4a7e-9d4f-0b9a8f3e2d1c","buyer_ref":"acme-q3-2026-launch","brand":{"domain":"acme.example","name":"ACME Corp. \u0026 Söhne"},"po_number":"PO-2026-000417","start_time":"2026-07-01T00:00:00Z","end_time":"2026-09-30T23:59:59Z","packages":[{"buyer_ref":"pkg-0000","product_id":"prod_video_30s_093","pricing_option_id":"cpm-usd-front_loaded","format_ids":[{"agent_url":"https://creative.adcontextprotocol.org","id":"display_728x90"},{"agent_url":"https://creative.adcontextprotocol.org","id":"native_in_feed"}],"budget":42468.48,"bid_price":28.50,"pacing":"asap","impressions":4169351,"targeting_overlay":{"geo_country_any_of":["FR","ES"],"geo_region_any_of":["FR-IDF"],"geo_metro_any_of":["878"],"axe_include_segment":"seg_939643","frequency_cap":{"suppress_minutes":480},"keywords":["sports","outdoor","family travel"]},"creative_ids":["cr_28c2fc47","cr_73a48380"],"name":"Ñandú \u0026 Co. — São Paulo"}],"budget":{"total":1000.00,"currency":"USD"},"context":{"correlation_id":"c0rr-7d3f","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},"push_notification_config":{"url":"https://buyer.example/adcp/webhooks/media-buy","authentication":{"schemes":["Bearer"],"credentials":"s3cr3t-token-rotated-often-0123456789abcdef"}},"ext":{"buyer_platform":"acme-dsp","version":3}}`)

const insertBuySQL = `INSERT INTO media_buys (principal, budget) VALUES ($1, $2) RETURNING id`

// benchRun makes the miss-path keys of this process unique, so that a
// server reused through TEST_DATABASE_URL never sees a key twice.
var (
	benchRun = randomID(4)
	benchSeq atomic.Int64
)

// benchPrincipal spreads calls over 100 principals.
func benchPrincipal(i int64) string { return fmt.Sprintf("principal-%04d", i%100) }

func benchMissKey(i int64) string { return fmt.Sprintf("bench-%s-%014d", benchRun, i) }

// rtCounter counts what a pool sends: every Exec, Query, QueryRow and
// SendBatch (one network round trip each, in steady state, once the
// statement is prepared on the connection).
type rtCounter struct{ n atomic.Int64 }

func (c *rtCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *rtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *rtCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *rtCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *rtCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

type benchDB struct {
	pool *pgxpool.Pool
	rt   *rtCounter
}

var (
	benchMu  sync.Mutex
	benchDBs = map[string]*benchDB{}
)

// benchSchema returns a pool on schema bench_<name>, which the first call
// in this process creates (dropping one left by an earlier run) with the
// migrations and the media_buys table, then prepares with setup (may be
// nil). Unlike newSchema it outlives the benchmark that asked for it, so
// that -count runs and sub-benchmarks share a filled table; the container
// goes away with the process. With TEST_DATABASE_URL the bench_* schemas
// stay until the next run drops them.
func benchSchema(b *testing.B, name string, setup func(context.Context, *pgxpool.Pool) error) *benchDB {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if d := benchDBs[name]; d != nil {
		return d
	}
	ctx := context.Background()
	schema := "bench_" + name
	admin, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; CREATE SCHEMA "+schema); err != nil {
		b.Fatalf("create schema: %v", err)
	}
	url := withSearchPath(databaseURL, schema)
	sqlDB := openSQL(b, url)
	defer sqlDB.Close()
	if _, err := migrations.Up(ctx, sqlDB); err != nil {
		b.Fatalf("migrations.Up: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 40
	rt := &rtCounter{}
	cfg.ConnConfig.Tracer = rt
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatalf("pool: %v", err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE media_buys (
		id bigserial PRIMARY KEY, principal text NOT NULL, budget int NOT NULL)`); err != nil {
		b.Fatalf("create business table: %v", err)
	}
	if setup != nil {
		start := time.Now()
		if err := setup(ctx, pool); err != nil {
			b.Fatalf("setting up %s: %v", schema, err)
		}
		b.Logf("set up %s in %v", schema, time.Since(start).Round(time.Millisecond))
	}
	d := &benchDB{pool: pool, rt: rt}
	benchDBs[name] = d
	return d
}

// benchOp is one call; i is unique in the process.
type benchOp func(ctx context.Context, i int64) error

// measure runs b.N calls of op on exactly c goroutines, after 4c untimed
// warm-up calls (which open and prepare the connections), and reports the
// latency percentiles, WAL bytes and round trips per call.
func measure(b *testing.B, d *benchDB, c int, op benchOp) {
	b.Helper()
	ctx := context.Background()
	run := func(n int, lat []time.Duration) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, c)
		for range c {
			wg.Go(func() {
				for {
					j := next.Add(1) - 1
					if j >= int64(n) {
						return
					}
					t0 := time.Now()
					err := op(ctx, benchSeq.Add(1))
					if lat != nil {
						lat[j] = time.Since(t0)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := run(4*c, nil); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	lsn0 := walLSN(b, d.pool)
	rt0 := d.rt.n.Load()
	lat := make([]time.Duration, b.N)
	cpu0 := sampleCPU()
	b.ResetTimer()
	err := run(b.N, lat)
	b.StopTimer()
	cpu1 := sampleCPU()
	if err != nil {
		b.Fatal(err)
	}
	rt := d.rt.n.Load() - rt0
	cpu1.report(b, cpu0)
	wal := walBytesSince(b, d.pool, lsn0)
	slices.Sort(lat)
	b.ReportMetric(us(percentile(lat, 0.50)), "p50-us")
	b.ReportMetric(us(percentile(lat, 0.99)), "p99-us")
	b.ReportMetric(float64(wal)/float64(b.N), "WAL-B/op")
	b.ReportMetric(float64(rt)/float64(b.N), "RT/op")
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// cpuSample is the CPU time used so far by this process (the client: pgx,
// the library, the benchmark), by the Postgres container (its cgroup) and by
// the docker-proxy that forwards the container's published port on
// 127.0.0.1. The last two are known only for a container these tests started
// on a Linux host with cgroupfs v1 or v2; the proxy's figure has a 10 ms
// resolution.
type cpuSample struct {
	client, server, proxy time.Duration
	hasServer, hasProxy   bool
}

func (c cpuSample) report(b *testing.B, before cpuSample) {
	n := float64(b.N)
	b.ReportMetric(us(c.client-before.client)/n, "client-CPU-us/op")
	if c.hasServer && before.hasServer {
		b.ReportMetric(us(c.server-before.server)/n, "server-CPU-us/op")
	}
	if c.hasProxy && before.hasProxy {
		b.ReportMetric(us(c.proxy-before.proxy)/n, "proxy-CPU-us/op")
	}
}

func sampleCPU() cpuSample {
	var s cpuSample
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if postgresContainer == nil {
		return s
	}
	id := postgresContainer.GetContainerID()
	if raw, err := os.ReadFile("/sys/fs/cgroup/cpuacct/docker/" + id + "/cpuacct.usage"); err == nil {
		if ns, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64); err == nil {
			s.server, s.hasServer = time.Duration(ns), true
		}
	} else if raw, err := os.ReadFile("/sys/fs/cgroup/system.slice/docker-" + id + ".scope/cpu.stat"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					s.server, s.hasServer = time.Duration(n)*time.Microsecond, true
				}
			}
		}
	}
	for _, pid := range proxyPIDs() {
		raw, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// Fields 14 and 15 (utime, stime, in clock ticks of 1/100 s), counted
		// after the command name, which is in parentheses.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			s.proxy += time.Duration(u+k) * 10 * time.Millisecond
			s.hasProxy = true
		}
	}
	return s
}

var (
	proxyOnce sync.Once
	proxyPids []string
)

// proxyPIDs finds the docker-proxy processes forwarding the port of
// databaseURL, if any.
func proxyPIDs() []string {
	proxyOnce.Do(func() {
		cfg, err := pgx.ParseConfig(databaseURL)
		if err != nil {
			return
		}
		want := "\x00-host-port\x00" + strconv.Itoa(int(cfg.Port)) + "\x00"
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			cmd, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
			if err == nil && strings.Contains(string(cmd), "docker-proxy") && strings.Contains(string(cmd), want) {
				proxyPids = append(proxyPids, d.Name())
			}
		}
	})
	return proxyPids
}

// percentile of sorted latencies (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

func walLSN(b *testing.B, pool *pgxpool.Pool) string {
	b.Helper()
	var lsn string
	if err := pool.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		b.Fatal(err)
	}
	return lsn
}

func walBytesSince(b *testing.B, pool *pgxpool.Pool, lsn string) int64 {
	b.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`, lsn).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

var concurrencies = []int{1, 16}

// benchRounds is how many times BenchmarkPostgresRoundTrip, Miss,
// MissSeller, MissPartitioned, Replay and Growth run their sub-benchmarks in
// turn (IDEM_BENCH_ROUNDS, default 1). go test's -count runs each
// sub-benchmark count times back to back, so the two sides of a ratio
// would run minutes apart on a shared machine; rounds interleave them
// instead (names repeat with a #01, #02... suffix, which
// scripts/benchratio.go folds). make bench uses 5 rounds, -count 1.
func benchRounds() int {
	if v := os.Getenv("IDEM_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			panic(fmt.Sprintf("IDEM_BENCH_ROUNDS=%q: want a positive integer", v))
		}
		return n
	}
	return 1
}

// BenchmarkPostgresRoundTrip is the floor the other figures are made of:
// impl=select1 is one round trip doing nothing; impl=empty-tx is BEGIN and
// COMMIT with no statement (two round trips, no WAL, no fsync);
// impl=insert-autocommit is the business insert alone in its own implicit
// transaction (one round trip plus the commit's WAL flush).
func BenchmarkPostgresRoundTrip(b *testing.B) {
	d := benchSchema(b, "roundtrip", nil)
	var version, settings string
	if err := d.pool.QueryRow(context.Background(), `SELECT version(), string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
		FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'shared_buffers',
		'max_wal_size', 'checkpoint_timeout', 'wal_level', 'jit', 'autovacuum', 'max_connections', 'work_mem')`).Scan(&version, &settings); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("Server: %s; %s\n", version, settings) // printed: a parent benchmark's log is not shown
	for range benchRounds() {
		roundTrips(b, d)
	}
}

func roundTrips(b *testing.B, d *benchDB) {
	b.Run("impl=select1", func(b *testing.B) {
		measure(b, d, 1, func(ctx context.Context, i int64) error {
			_, err := d.pool.Exec(ctx, `SELECT 1`)
			return err
		})
	})
	b.Run("impl=empty-tx", func(b *testing.B) {
		measure(b, d, 1, func(ctx context.Context, i int64) error {
			tx, err := d.pool.Begin(ctx)
			if err != nil {
				return err
			}
			return tx.Commit(ctx)
		})
	})
	b.Run("impl=insert-autocommit", func(b *testing.B) {
		measure(b, d, 1, func(ctx context.Context, i int64) error {
			var id int64
			return d.pool.QueryRow(ctx, insertBuySQL, benchPrincipal(i), 5000).Scan(&id)
		})
	})
}

// plainTxMiss is the floor of the miss path: the business insert in a
// transaction of its own, without idempotency (BEGIN, INSERT, COMMIT).
func plainTxMiss(d *benchDB) benchOp {
	return func(ctx context.Context, i int64) error {
		tx, err := d.pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		var id int64
		if err := tx.QueryRow(ctx, insertBuySQL, benchPrincipal(i), 5000).Scan(&id); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
}

// runInTxMiss is the library's miss path: a fresh key, key(i), the same
// insert as plainTxMiss in the handler.
func runInTxMiss(d *benchDB, s *idem.Store, key func(int64) string) benchOp {
	return func(ctx context.Context, i int64) error {
		p := benchPrincipal(i)
		res, err := idem.RunInTx(ctx, s, d.pool, idem.Request{
			Principal: p, Key: key(i), Operation: "create_media_buy", Payload: benchPayload,
		}, createBuy(p, 5000))
		if err == nil && res.Replayed {
			err = errors.New("a fresh key was replayed")
		}
		return err
	}
}

// BenchmarkPostgresMiss compares idem.RunInTx on a fresh key (impl=RunInTx)
// with the same business insert in a plain transaction (impl=plain-tx), at
// c=1 and c=16. The goal is RunInTx/plain-tx <= 1.3 at c=16. RunInTx sends
// BEGIN with the one-statement claim (IdempotencyKeyClaim) in one batch,
// the handler's INSERT, and the answer's UPDATE with COMMIT in one batch: 3
// round trips, as many as plain-tx. impl=RunInTx-preread is the same with
// Config.ReplayPreRead, which adds its read to every miss (4 round trips).
//
// After the library, the sub-benchmarks of missPrototypes run: designs
// that are not the library (prototypes_test.go says what each is).
func BenchmarkPostgresMiss(b *testing.B) {
	d := benchSchema(b, "miss", nil)
	s := newStore(b, nil)
	pre := newStore(b, &idem.Config{ReplayPreRead: true})
	for range benchRounds() {
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d/impl=plain-tx", c), func(b *testing.B) { measure(b, d, c, plainTxMiss(d)) })
			b.Run(fmt.Sprintf("c=%d/impl=RunInTx", c), func(b *testing.B) { measure(b, d, c, runInTxMiss(d, s, benchMissKey)) })
			b.Run(fmt.Sprintf("c=%d/impl=RunInTx-preread", c), func(b *testing.B) { measure(b, d, c, runInTxMiss(d, pre, benchMissKey)) })
			for _, p := range missPrototypes {
				b.Run(fmt.Sprintf("c=%d/impl=%s", c, p.name), func(b *testing.B) { measure(b, d, c, p.op(d)) })
			}
		}
	}
}

const replayKeys = 1000

func replayKey(i int64) string { return fmt.Sprintf("replay-key-%012d", i%replayKeys) }

// replaySetup stores replayKeys completed keys through RunInTx.
func replaySetup(ctx context.Context, pool *pgxpool.Pool) error {
	if err := storeReplays(ctx, pool, replayKey); err != nil {
		return err
	}
	_, err := pool.Exec(ctx, `VACUUM ANALYZE idempotency_keys`)
	return err
}

// storeReplays stores replayKeys completed keys, key(0) to
// key(replayKeys-1), each for principal benchPrincipal(i), through RunInTx
// with benchPayload: the keys runInTxReplay replays.
func storeReplays(ctx context.Context, pool *pgxpool.Pool, key func(int64) string) error {
	s, err := idem.NewStore(&idem.Config{Limiter: idem.Unlimited})
	if err != nil {
		return err
	}
	for i := range int64(replayKeys) {
		p := benchPrincipal(i)
		if _, err := idem.RunInTx(ctx, s, pool, idem.Request{
			Principal: p, Key: key(i), Operation: "create_media_buy", Payload: benchPayload,
		}, createBuy(p, 5000)); err != nil {
			return err
		}
	}
	return nil
}

// runInTxReplay is the library's replay path: key(i) must name one of the
// replayKeys keys that a setup stored for principal benchPrincipal(i %
// replayKeys) through RunInTx with benchPayload; a call that runs the
// handler or is not replayed fails.
func runInTxReplay(d *benchDB, s *idem.Store, key func(int64) string) benchOp {
	return func(ctx context.Context, i int64) error {
		p := benchPrincipal(i % replayKeys)
		res, err := idem.RunInTx(ctx, s, d.pool, idem.Request{
			Principal: p, Key: key(i), Operation: "create_media_buy", Payload: benchPayload,
		}, func(context.Context, pgx.Tx) (buy, error) { return buy{}, errors.New("the handler ran on a replay") })
		if err == nil && !res.Replayed {
			err = errors.New("not replayed")
		}
		return err
	}
}

// BenchmarkPostgresReplay compares idem.RunInTx on a completed key
// (impl=RunInTx; 1000 keys, walked in turn) with a primary-key SELECT of
// the stored response in a transaction (impl=select-tx: BEGIN, SELECT,
// COMMIT, and the response decoded as RunInTx does). The goal is
// RunInTx/select-tx <= 1.2 and no WAL.
//
// RunInTx sends BEGIN with the claim (which finds the row and returns it)
// in one batch, then ROLLBACK: 2 round trips against select-tx's 3.
// impl=RunInTx-preread (Config.ReplayPreRead) answers from one read
// outside any transaction: 1 round trip.
//
// After the library, the sub-benchmarks of replayPrototypes run.
func BenchmarkPostgresReplay(b *testing.B) {
	d := benchSchema(b, "replay", replaySetup)
	s := newStore(b, nil)
	pre := newStore(b, &idem.Config{ReplayPreRead: true})
	for range benchRounds() {
		for _, c := range concurrencies {
			b.Run(fmt.Sprintf("c=%d/impl=select-tx", c), func(b *testing.B) {
				measure(b, d, c, func(ctx context.Context, i int64) error {
					tx, err := d.pool.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(ctx)
					var resp []byte
					if err := tx.QueryRow(ctx, `SELECT response FROM idempotency_keys WHERE principal_id = $1 AND account_id = '' AND key = $2`,
						benchPrincipal(i%replayKeys), replayKey(i)).Scan(&resp); err != nil {
						return err
					}
					if err := tx.Commit(ctx); err != nil {
						return err
					}
					var v buy
					return json.Unmarshal(resp, &v)
				})
			})
			for _, impl := range []struct {
				name string
				s    *idem.Store
			}{{"RunInTx", s}, {"RunInTx-preread", pre}} {
				b.Run(fmt.Sprintf("c=%d/impl=%s", c, impl.name), func(b *testing.B) {
					measure(b, d, c, runInTxReplay(d, impl.s, replayKey))
				})
			}
			for _, p := range replayPrototypes {
				b.Run(fmt.Sprintf("c=%d/impl=%s", c, p.name), func(b *testing.B) { measure(b, d, c, p.op(d)) })
			}
		}
	}
}

// fillKeys inserts completed rows numbered from..to into idempotency_keys
// in one INSERT ... SELECT generate_series: keys are UUID strings (random
// order in the primary key), principals skewed over 1000 (the largest has
// about a tenth of the rows, as a few big buyers would), responses about
// 130 bytes. Row i was created ageFrom + span×(hi-i)/(hi-lo) seconds ago:
// rows lo..hi are spread evenly over that span, oldest first, so that the
// table's physical order follows time as it does when traffic fills it;
// expires_at is created_at + 24 h.
func fillKeys(ctx context.Context, pool *pgxpool.Pool, from, to, lo, hi, ageFrom, span int64) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL jit = off`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
		INSERT INTO idempotency_keys (principal_id, key, operation, request_hash, response, owner_token, created_at, expires_at)
		SELECT 'principal-' || lpad(floor(1000 * power(((i * 2654435761) % 1000003)::float8 / 1000003, 3))::int::text, 4, '0'),
		       md5('key' || i)::uuid::text,
		       'create_media_buy',
		       decode(md5('hash' || i) || md5('HASH' || i), 'hex'),
		       convert_to('{"media_buy_id":"mb_' || i || '","buyer_ref":"acme-' || (i % 9973) ||
		                  '","status":"pending_activation","packages":[{"package_id":"pkg_' || i || '","buyer_ref":"pkg-0000"}]}', 'UTF8'),
		       NULL,
		       now() - make_interval(secs => $3 + $4 * ($6 - i)::float8 / greatest($6 - $5, 1)),
		       now() - make_interval(secs => $3 + $4 * ($6 - i)::float8 / greatest($6 - $5, 1)) + interval '24 hours'
		FROM generate_series($1::bigint, $2::bigint) AS i`, from, to, ageFrom, span, lo, hi)
		return err
	})
}

func benchRows(env string, def []int64) []int64 {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var out []int64
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n < 0 {
			panic(fmt.Sprintf("%s=%q: want comma-separated row counts", env, v))
		}
		out = append(out, n)
	}
	return out
}

func rowsName(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.FormatInt(n, 10)
}

// BenchmarkPostgresGrowth measures the RunInTx miss path (op=miss, on
// fresh UUID-shaped keys: growthMissKey) and replay path (op=replay) on
// tables that already hold rows=N keys (filled
// with fillKeys over the last three days, so a third of them are
// tombstones past retention, then VACUUM ANALYZE) against an empty one
// (rows=0), at each concurrency of IDEM_BENCH_GROWTH_C (default 1, 4, 16).
// The goal is <= 1.2x the empty table's latency at 1M and 10M rows. Set
// IDEM_BENCH_ROWS to change the sizes.
//
// Replays walk growthReplayKeys: replayKeys keys stored through RunInTx
// after the fill, at random places in the primary key (UUID-shaped, as the
// fill's keys are) and at the end of the heap (they are the newest rows).
// Besides measure's metrics each sub-benchmark reports the table's size
// with its indexes after the timed calls (table-MB) and how much of the WAL
// per call was full-page images (FPI-B/op; counted from before the
// warm-up calls, so it is a little more than the timed calls' share).
// scripts/benchplot.go draws the results.
func BenchmarkPostgresGrowth(b *testing.B) {
	s := newStore(b, nil)
	sizes := append([]int64{0}, benchRows("IDEM_BENCH_ROWS", []int64{1_000_000, 10_000_000})...)
	sizes = slices.Compact(sizes)
	conc := benchRows("IDEM_BENCH_GROWTH_C", []int64{1, 4, 16})
	for range benchRounds() {
		for _, c := range conc {
			for _, n := range sizes {
				d := func(b *testing.B) *benchDB {
					return benchSchema(b, "growth_"+rowsName(n), func(ctx context.Context, pool *pgxpool.Pool) error {
						if err := fillTable(ctx, pool, n); err != nil {
							return err
						}
						return storeReplays(ctx, pool, growthReplayKey)
					})
				}
				for _, op := range []string{"miss", "replay"} {
					b.Run(fmt.Sprintf("c=%d/rows=%s/op=%s", c, rowsName(n), op), func(b *testing.B) {
						d := d(b)
						lsn := walLSN(b, d.pool)
						if op == "miss" {
							measure(b, d, int(c), runInTxMiss(d, s, growthMissKey))
						} else {
							measure(b, d, int(c), runInTxReplay(d, s, growthReplayKey))
						}
						b.ReportMetric(float64(fullPageImageBytes(b, d.pool, lsn))/float64(b.N), "FPI-B/op")
						var size int64
						if err := d.pool.QueryRow(context.Background(), `SELECT pg_total_relation_size('idempotency_keys')`).Scan(&size); err != nil {
							b.Fatal(err)
						}
						b.ReportMetric(float64(size)/1e6, "table-MB")
					})
				}
			}
		}
	}
}

// fullPageImageBytes is the size of the full-page images in the WAL
// written since lsn, by anyone (pg_walinspect): the whole pages that
// Postgres logs on the first change to a page after each checkpoint
// (full_page_writes). It is 0 where pg_walinspect cannot be installed.
func fullPageImageBytes(b *testing.B, pool *pgxpool.Pool, lsn string) int64 {
	b.Helper()
	ctx := context.Background()
	var schema string
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect`); err != nil {
		b.Logf("pg_walinspect: %v", err)
		return 0
	}
	if err := pool.QueryRow(ctx, `SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_walinspect'`).Scan(&schema); err != nil {
		b.Fatal(err)
	}
	// pg_get_wal_stats reads only flushed WAL; the WAL writer flushes what
	// a commit did not within wal_writer_delay (200 ms).
	time.Sleep(500 * time.Millisecond)
	var end string
	var none bool
	if err := pool.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_flush_lsn() <= $1::pg_lsn`, lsn).Scan(&end, &none); err != nil {
		b.Fatal(err)
	}
	if none { // pg_get_wal_stats wants start < end
		return 0
	}
	var n int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(fpi_size), 0)::bigint FROM `+schema+`.pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, false)`, lsn, end).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// growthMissKey is a fresh UUID-shaped key, unique in the process (and
// across processes, through benchRun): as the keys buyers send (AdCP's are
// UUIDs) and the fill's, each miss lands at a random place in its
// principal's part of the primary key, where benchMissKey's would all land
// at one place per principal.
func growthMissKey(i int64) string {
	return uuidShaped("growth-miss-" + benchRun + "-" + strconv.FormatInt(i, 10))
}

// uuidShaped formats the start of seed's SHA-256 as a UUID.
func uuidShaped(seed string) string {
	h := sha256.Sum256([]byte(seed))
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// growthReplayKeys are the keys that BenchmarkPostgresGrowth replays:
// UUID-shaped, so that they fall at random places among the fill's keys.
var growthReplayKeys = func() []string {
	keys := make([]string, replayKeys)
	for i := range keys {
		keys[i] = uuidShaped("growth-replay-" + strconv.Itoa(i))
	}
	return keys
}()

func growthReplayKey(i int64) string { return growthReplayKeys[i%replayKeys] }

// fillTable fills idempotency_keys with n rows, in statements of a million
// rows, then vacuums and analyses it. The two indexes are dropped during the
// fill and built again after it (which is many times faster than inserting
// 10M random keys into a B-tree): they start compact, so the benchmark's
// first inserts split more pages than they would in a table grown by
// traffic, which if anything penalises the large tables. Parallel
// maintenance is off for the session: it needs dynamic shared memory, and a
// container has 64 MB of /dev/shm.
func fillTable(ctx context.Context, pool *pgxpool.Pool, n int64) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	exec := func(sql string) error {
		_, err := conn.Exec(ctx, sql)
		return err
	}
	if err := exec(`SET max_parallel_maintenance_workers = 0`); err != nil {
		return err
	}
	defer conn.Exec(ctx, `RESET max_parallel_maintenance_workers`)
	if err := exec(`ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
		DROP INDEX idempotency_keys_expires_at_idx`); err != nil {
		return err
	}
	for from := int64(1); from <= n; from += 1_000_000 {
		if err := fillKeys(ctx, pool, from, min(from+999_999, n), 1, n, 0, 3*86400); err != nil {
			return err
		}
	}
	if err := exec(`ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (principal_id, account_id, key);
		CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at)`); err != nil {
		return err
	}
	return exec(`VACUUM (ANALYZE, PARALLEL 0) idempotency_keys`)
}

var sweepRound atomic.Int64

// BenchmarkPostgresSweep runs a sweep (batches of 1000 rows, the default)
// on a table of IDEM_BENCH_SWEEP_ROWS rows (default 1M), a third of them
// past retention, while 4 goroutines run RunInTx misses on the same table.
// It reports the sweep's rate (sweep-rows/s), the misses' p99 latency in the
// 5 s before the sweep (p99-quiet-us) and during it (p99-sweep-us), their
// ratio (p99-ratio; the question is whether it exceeds 1.2), and the misses'
// throughput and the server's WAL rate in both windows, the sweep's length
// (sweep-s) and how many misses started during it (sweep-misses: the p99 of
// fewer than a few hundred is close to their maximum). Each run refills the
// rows the previous one deleted, then runs VACUUM ANALYZE, before anything
// is timed. Use
// -benchtime 1x: one sweep is one run.
//
// sweep=Store.Sweep is the library, as it is: batch after batch (1000 rows
// each, by ctid); sweep=Store.Sweep-batch100 is the same with
// Config.SweepBatch 100; the sweepPrototypes follow (prototypes_test.go).
func BenchmarkPostgresSweep(b *testing.B) {
	total := benchRows("IDEM_BENCH_SWEEP_ROWS", []int64{1_000_000})[0]
	d := benchSchema(b, "sweep", func(ctx context.Context, pool *pgxpool.Pool) error {
		if err := fillTable(ctx, pool, total); err != nil {
			return err
		}
		return explainSweep(ctx, pool)
	})
	s := newStore(b, nil)
	small := newStore(b, &idem.Config{SweepBatch: 100})
	ctx := context.Background()
	batches := func(batch func(context.Context) (int64, error), pause time.Duration) func(context.Context) (int64, error) {
		return func(ctx context.Context) (int64, error) {
			var deleted int64
			for {
				n, err := batch(ctx)
				deleted += n
				if err != nil || n < 1000 {
					return deleted, err
				}
				time.Sleep(pause)
			}
		}
	}
	sweeps := []struct {
		name  string
		sweep func(context.Context) (int64, error)
	}{
		{"Store.Sweep", func(ctx context.Context) (int64, error) { n, err := s.Sweep(ctx, d.pool); return int64(n), err }},
		{"Store.Sweep-batch100", func(ctx context.Context) (int64, error) { n, err := small.Sweep(ctx, d.pool); return int64(n), err }},
	}
	for _, p := range sweepPrototypes {
		sweeps = append(sweeps, struct {
			name  string
			sweep func(context.Context) (int64, error)
		}{p.name, batches(p.batch(d), p.pause)})
	}
	for _, sw := range sweeps {
		b.Run("sweep="+sw.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				topUpExpired(ctx, b, d, total)
				b.StartTimer()
				sweepUnderLoad(b, d, runInTxMiss(d, s, benchMissKey), sw.sweep)
			}
		})
	}
}

// explainSweep prints the plans of one sweep batch, the library's
// statement and sketchSweepByJoin (the statement before it), each run and
// rolled back.
func explainSweep(ctx context.Context, pool *pgxpool.Pool) error {
	for _, st := range []struct{ name, sql string }{
		{"the statement of queries/idempotency_keys.sql", `DELETE FROM idempotency_keys
			WHERE ctid = ANY (ARRAY(
			    SELECT e.ctid FROM idempotency_keys AS e
			    WHERE e.expires_at < now() - $1::bigint * interval '1 millisecond'
			    ORDER BY e.expires_at LIMIT $2::int
			    FOR UPDATE SKIP LOCKED))`},
		{"sketchSweepByJoin", sketchSweepByJoin},
	} {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) `+st.sql, int64(24*time.Hour/time.Millisecond), 1000)
			if err != nil {
				return err
			}
			plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			fmt.Printf("Plan of one sweep batch, %s (rolled back):\n  %s\n", st.name, strings.Join(plan, "\n  "))
			return errors.New("roll back")
		})
		if err != nil && err.Error() != "roll back" {
			return err
		}
	}
	return nil
}

// topUpExpired brings the rows of idempotency_keys past retention back to
// a third of total (rows the last sweep removed are replaced by new ones,
// with keys no earlier round used), then vacuums and analyzes the table, so
// that every sweep round starts from the same shape.
func topUpExpired(ctx context.Context, b *testing.B, d *benchDB, total int64) {
	b.Helper()
	var doomed int64
	if err := d.pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE expires_at < now() - interval '24 hours'`).Scan(&doomed); err != nil {
		b.Fatal(err)
	}
	if want := total / 3; doomed < want {
		from := total + 1 + sweepRound.Add(1)*10_000_000
		to := from + want - doomed - 1
		if err := fillKeys(ctx, d.pool, from, to, from, to, 2*86400+60, 86400-120); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := d.pool.Exec(ctx, `VACUUM (ANALYZE, PARALLEL 0) idempotency_keys`); err != nil {
		b.Fatal(err)
	}
}

// sweepUnderLoad runs op on 4 goroutines, measures them for 5 s, then runs
// sweep while they go on, and reports the misses' figures in both windows.
func sweepUnderLoad(b *testing.B, d *benchDB, op benchOp, sweep func(context.Context) (int64, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const workers = 4
	type sample struct {
		start time.Time
		lat   time.Duration
	}
	samples := make([][]sample, workers)
	var wg sync.WaitGroup
	var opErr atomic.Pointer[error]
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := op(ctx, benchSeq.Add(1)); err != nil {
					if ctx.Err() == nil {
						opErr.Store(&err)
					}
					return
				}
				samples[w] = append(samples[w], sample{t0, time.Since(t0)})
			}
		})
	}
	time.Sleep(time.Second) // warm-up, not counted
	lsnQuiet := walLSN(b, d.pool)
	quietFrom := time.Now()
	time.Sleep(5 * time.Second)
	walQuiet := walBytesSince(b, d.pool, lsnQuiet)
	lsnSweep := walLSN(b, d.pool)
	sweepFrom := time.Now()
	n, err := sweep(ctx)
	sweepTo := time.Now()
	walSweep := walBytesSince(b, d.pool, lsnSweep)
	cancel()
	wg.Wait()
	if err != nil {
		b.Fatalf("sweep: %v", err)
	}
	if e := opErr.Load(); e != nil {
		b.Fatalf("miss during the sweep: %v", *e)
	}
	var quiet, during []time.Duration
	for _, ws := range samples {
		for _, x := range ws {
			switch {
			case !x.start.Before(quietFrom) && x.start.Before(sweepFrom):
				quiet = append(quiet, x.lat)
			case !x.start.Before(sweepFrom) && x.start.Before(sweepTo):
				during = append(during, x.lat)
			}
		}
	}
	slices.Sort(quiet)
	slices.Sort(during)
	sweepTime := sweepTo.Sub(sweepFrom)
	b.ReportMetric(float64(n), "swept-rows")
	b.ReportMetric(float64(n)/sweepTime.Seconds(), "sweep-rows/s")
	b.ReportMetric(float64(walQuiet)/1e6/sweepFrom.Sub(quietFrom).Seconds(), "quiet-WAL-MB/s")
	b.ReportMetric(float64(walSweep)/1e6/sweepTime.Seconds(), "sweep-WAL-MB/s")
	b.ReportMetric(us(percentile(quiet, 0.99)), "p99-quiet-us")
	b.ReportMetric(us(percentile(during, 0.99)), "p99-sweep-us")
	b.ReportMetric(float64(percentile(during, 0.99))/float64(percentile(quiet, 0.99)), "p99-ratio")
	b.ReportMetric(sweepTime.Seconds(), "sweep-s")
	b.ReportMetric(float64(len(during)), "sweep-misses")
	b.ReportMetric(float64(len(quiet))/sweepFrom.Sub(quietFrom).Seconds(), "quiet-ops/s")
	b.ReportMetric(float64(len(during))/sweepTime.Seconds(), "sweep-ops/s")
}

// BenchmarkPostgresWALRecords is evidence rather than a benchmark: it runs
// 1000 calls of each path (after 100 warm-up calls) and prints the WAL they
// wrote by record type (pg_walinspect's pg_get_wal_stats; a HOT update
// shows as Heap/HOT_UPDATE, any other as Heap/UPDATE plus one Btree/INSERT_LEAF
// per index), and the row updates the table's statistics counted
// (pg_stat_user_tables: n_tup_upd, of which n_tup_hot_upd were HOT). The
// RunInTx miss runs at c=1 and at c=16 (16 goroutines sharing the 1000
// calls), since concurrent inserts compete for the free space on the
// table's last pages that a HOT update needs. Run it with -benchtime 1x; its
// ns/op means nothing.
func BenchmarkPostgresWALRecords(b *testing.B) {
	ctx := context.Background()
	d := benchSchema(b, "walrecords", replaySetup)
	if _, err := d.pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_walinspect`); err != nil {
		b.Skipf("pg_walinspect: %v", err)
	}
	s := newStore(b, nil)
	paths := []struct {
		name string
		c    int
		op   benchOp
	}{
		{"plain-tx miss", 1, plainTxMiss(d)},
		{"RunInTx miss", 1, runInTxMiss(d, s, benchMissKey)},
		{"RunInTx miss, c=16", 16, runInTxMiss(d, s, benchMissKey)},
		{"RunInTx replay", 1, func(ctx context.Context, i int64) error {
			p := benchPrincipal(i % replayKeys)
			_, err := idem.RunInTx(ctx, s, d.pool, idem.Request{
				Principal: p, Key: replayKey(i), Operation: "create_media_buy", Payload: benchPayload,
			}, func(context.Context, pgx.Tx) (buy, error) { return buy{}, errors.New("the handler ran on a replay") })
			return err
		}},
	}
	for _, p := range walPrototypes {
		paths = append(paths, struct {
			name string
			c    int
			op   benchOp
		}{p.name, 1, p.op(d)})
	}
	calls := func(c, n int, op benchOp) {
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		for range c {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if err := op(ctx, benchSeq.Add(1)); err != nil {
						failed.Store(&err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
	}
	for range b.N {
		for _, p := range paths {
			calls(p.c, 100, p.op)
			upd0, hot0, statsErr := tableUpdates(ctx, d.pool)
			lsn := walLSN(b, d.pool)
			const n = 1000
			calls(p.c, n, p.op)
			var end string
			var none bool
			if err := d.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_current_wal_lsn() = $1::pg_lsn`, lsn).Scan(&end, &none); err != nil {
				b.Fatal(err)
			}
			upd1, hot1, err := tableUpdates(ctx, d.pool)
			stats := fmt.Sprintf("pg_stat_user_tables: %d row updates, %d of them HOT", upd1-upd0, hot1-hot0)
			if err = errors.Join(statsErr, err); err != nil {
				stats = fmt.Sprintf("pg_stat_user_tables: %v", err)
			}
			if none {
				fmt.Printf("WAL records, %s: no WAL at all in %d calls; %s\n", p.name, n, stats)
				continue
			}
			// pg_get_wal_stats reads only flushed WAL; the WAL writer flushes
			// what a commit did not within wal_writer_delay (200 ms).
			time.Sleep(500 * time.Millisecond)
			rows, err := d.pool.Query(ctx, `SELECT "resource_manager/record_type", count, record_size, fpi_size
				FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, true) WHERE count > 0 ORDER BY combined_size DESC`, lsn, end)
			if err != nil {
				b.Fatal(err)
			}
			var lines []string
			var total float64
			for rows.Next() {
				var typ string
				var k, rec, fpi int64
				if err := rows.Scan(&typ, &k, &rec, &fpi); err != nil {
					b.Fatal(err)
				}
				total += float64(rec+fpi) / n
				lines = append(lines, fmt.Sprintf("  %-24s %6.2f records/call %8.1f B/call (+ %6.1f B/call full-page images)", typ, float64(k)/n, float64(rec)/n, float64(fpi)/n))
			}
			if err := rows.Err(); err != nil {
				b.Fatal(err)
			}
			// Printed, not logged: go test keeps only the first 10 lines of a
			// benchmark's log.
			fmt.Printf("WAL records, %s: %.0f B of WAL per call; %s\n%s\n", p.name, total, stats, strings.Join(lines, "\n"))
		}
	}
}

// tableUpdates returns pg_stat_user_tables' n_tup_upd and n_tup_hot_upd for
// the pool's idempotency_keys, after making every idle connection of the
// pool flush its pending statistics (a backend otherwise sends them at most
// once a second, and up to 10 s late when it is idle).
func tableUpdates(ctx context.Context, pool *pgxpool.Pool) (upd, hot int64, err error) {
	for _, c := range pool.AcquireAllIdle(ctx) {
		if err == nil {
			_, err = c.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		}
		c.Release()
	}
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(100 * time.Millisecond)
	err = pool.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
		WHERE relid = 'idempotency_keys'::regclass`).Scan(&upd, &hot)
	return upd, hot, err
}
