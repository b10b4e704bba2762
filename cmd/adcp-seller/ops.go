package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/seller"
)

// newLogger logs to w in format ("text" or "json") from level up.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logStorage says, before anything else, where the seller keeps its state:
// memory (lost at exit) or Postgres, with the server's host, port,
// database and user but never the password, and whether DATABASE_URL in
// the environment chose Postgres.
func logStorage(log *slog.Logger, o options) {
	if o.dbURL == "" {
		log.Warn("storage: memory; media buys, idempotency keys and queued webhooks are lost when the process exits (set -database-url or DATABASE_URL for Postgres)",
			"storage", "memory")
		return
	}
	attrs := []any{"storage", "postgres"}
	if cfg, err := pgxpool.ParseConfig(o.dbURL); err == nil {
		c := cfg.ConnConfig
		attrs = append(attrs, "host", c.Host, "port", c.Port, "database", c.Database, "user", c.User)
	}
	source := "-database-url"
	if o.dbFromEnv {
		source = "DATABASE_URL"
	}
	attrs = append(attrs, "from", source)
	log.Info("storage: Postgres; state is kept in the database", attrs...)
	if o.dbFromEnv {
		log.Warn("storage: Postgres mode was chosen by DATABASE_URL in the environment; give -database-url= to run in memory")
	}
}

// openPool opens the Postgres pool, instrumented for tel. It connects
// lazily: seller.New's migrations make the first connection.
func openPool(ctx context.Context, dsn string, tel *seller.Telemetry) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn) // its errors hide the password
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	tel.InstrumentPool(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return pool, nil
}

// servers are the command's HTTP servers: the main one (MCP, probes, and
// /metrics unless -metrics-addr moves it to the second). Until serve is
// called, the main one answers /healthz and says "starting" to everything
// else.
type servers struct {
	main, metrics *http.Server // metrics is nil without -metrics-addr
	mainLn, metLn net.Listener
	handler       atomic.Pointer[http.Handler]
	errc          chan error // a server that stopped by itself
}

// listen opens the listeners and starts serving.
func listen(log *slog.Logger, o options, tel *seller.Telemetry) (*servers, error) {
	s := &servers{errc: make(chan error, 2)}
	var starting http.Handler = http.HandlerFunc(startingHandler)
	s.handler.Store(&starting)
	mux := http.NewServeMux()
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.handler.Load()).ServeHTTP(w, r) }))

	var err error
	if s.mainLn, err = net.Listen("tcp", o.addr); err != nil {
		return nil, err
	}
	if o.metricsAddr == "" {
		mux.Handle("GET /metrics", tel.Handler())
	} else {
		addr, err := loopbackByDefault(o.metricsAddr)
		if err == nil {
			s.metLn, err = net.Listen("tcp", addr)
		}
		if err != nil {
			_ = s.mainLn.Close()
			return nil, fmt.Errorf("-metrics-addr: %w", err)
		}
		metrics := http.NewServeMux()
		metrics.Handle("GET /metrics", tel.Handler())
		s.metrics = newServer(log, metrics)
		go s.run(s.metrics, s.metLn)
	}
	s.main = newServer(log, mux)
	go s.run(s.main, s.mainLn)
	attrs := []any{"addr", s.addr()}
	if s.metrics != nil {
		attrs = append(attrs, "metrics_addr", s.metricsAddr())
	}
	log.Info("listening; ready once the seller has started (see /readyz)", attrs...)
	return s, nil
}

func newServer(log *slog.Logger, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func (s *servers) run(srv *http.Server, ln net.Listener) {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		s.errc <- err
	}
}

// startingHandler answers while the seller starts: alive, not ready.
func startingHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/healthz" {
		_, _ = io.WriteString(w, "ok\n")
		return
	}
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "not ready: starting\n")
}

// serve hands the main server to h.
func (s *servers) serve(h http.Handler) { s.handler.Store(&h) }

func (s *servers) addr() string { return s.mainLn.Addr().String() }

func (s *servers) metricsAddr() string { return s.metLn.Addr().String() }

// shutdown stops accepting connections and waits up to timeout for the
// requests in flight; past it, it closes their connections.
func (s *servers) shutdown(log *slog.Logger, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, srv := range []*http.Server{s.main, s.metrics} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("shutdown: requests still in flight after the timeout; closing their connections", "timeout", timeout.String(), "error", err)
			_ = srv.Close()
		}
	}
	log.Info("HTTP servers stopped")
}

// close stops the servers at once (start-up failed).
func (s *servers) close() {
	for _, srv := range []*http.Server{s.main, s.metrics} {
		if srv != nil {
			_ = srv.Close()
		}
	}
}

// loopbackByDefault completes an address without a host ("9464" or
// ":9464") with the loopback address.
func loopbackByDefault(addr string) (string, error) {
	if _, err := strconv.ParseUint(addr, 10, 16); err == nil {
		return net.JoinHostPort("127.0.0.1", addr), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}
