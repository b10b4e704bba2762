package idem_test

import (
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/idem"
)

// principalFrom stands for the seller's authentication: the principal is the
// verified caller, never a field of the request body.
func principalFrom(r *http.Request) string { return r.Header.Get("X-Authenticated-Principal") }

type mediaBuy struct {
	MediaBuyID string `json:"media_buy_id"`
	Status     string `json:"status"`
}

// RunInTx inside an HTTP handler: the media buy row and the stored answer
// commit in one transaction.
func ExampleRunInTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/seller") // tables created with package migrations
	if err != nil {
		panic(err)
	}
	store, err := idem.NewStore(&idem.Config{TTL: 24 * time.Hour})
	if err != nil {
		panic(err)
	}

	http.HandleFunc("POST /media_buys", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read body", http.StatusBadRequest)
			return
		}
		var in struct {
			IdempotencyKey string `json:"idempotency_key"`
			Budget         int    `json:"budget"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			http.Error(w, "invalid JSON", http.StatusBadRequest)
			return
		}
		res, err := idem.RunInTx(r.Context(), store, pool, idem.Request{
			Principal: principalFrom(r),
			Key:       in.IdempotencyKey,
			Operation: "create_media_buy",
			Payload:   body,
		}, func(ctx context.Context, tx pgx.Tx) (mediaBuy, error) {
			// Every business write goes through tx.
			var b mediaBuy
			err := tx.QueryRow(ctx, `INSERT INTO media_buys (budget) VALUES ($1)
				RETURNING 'mb_' || id, 'pending_creatives'`, in.Budget).Scan(&b.MediaBuyID, &b.Status)
			return b, err
		})
		var ie *idem.Error
		switch {
		case errors.As(err, &ie): // validation, conflict, in flight, expired, rate limited, storage
			wire := idem.Wire(err)
			if wire.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(wire.RetryAfter))
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(adcp.HTTPStatus(wire.Code))
			_ = json.NewEncoder(w).Encode(map[string]any{"adcp_error": wire})
			return
		case err != nil: // the handler's own error: nothing was stored
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"media_buy_id": res.Value.MediaBuyID,
			"status":       res.Value.Status,
			"replayed":     res.Replayed,
		})
	})
}

// Behind PgBouncer in transaction mode (before 1.21), pgx must not rely on
// statements it prepared on one server connection: use the exec mode.
func ExampleRunInTx_pgbouncer() {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig("postgres://seller@pgbouncer:6432/seller") // PgBouncer's address
	if err != nil {
		panic(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	// RunInTx as usual: everything it does is transaction-local.
}

// Do runs any handler idempotently on a backend.Backend; here Postgres outside the
// handler's transaction, for work that calls another service.
func ExampleDo() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/seller")
	if err != nil {
		panic(err)
	}
	guard, err := idem.NewGuard(&idem.PostgresBackend{DB: pool}, &idem.Config{Lease: 5 * time.Minute})
	if err != nil {
		panic(err)
	}
	res, err := idem.Do(ctx, guard, idem.Request{
		Principal: "agency-42",
		Key:       "5b1f7e0c-8a55-4c2e-9d0b-6f7c1a2e3d4f",
		Operation: "sync_creatives",
		Payload:   []byte(`{"creatives":[{"creative_id":"c1"}]}`),
	}, func(ctx context.Context) (map[string]int, error) {
		// Call the ad server. The Guard renews its lease while this runs.
		return map[string]int{"synced": 1}, nil
	})
	if err != nil {
		panic(err)
	}
	_ = res.Replayed
}

// Count outcomes per operation: a spike of in_flight means slow handlers or
// lock contention, storage_error a database in trouble, conflict a buyer
// reusing keys. expvar here; any metrics library works the same way.
func ExampleConfig_observe() {
	outcomes := expvar.NewMap("idempotency_outcomes")
	latency := expvar.NewMap("idempotency_seconds_total")
	store, err := idem.NewStore(&idem.Config{
		Observer: idem.ObserverFunc(func(_ context.Context, o idem.Observation) {
			outcomes.Add(o.Operation+":"+string(o.Outcome), 1)
			latency.AddFloat(o.Operation, o.Duration.Seconds())
		}),
	})
	if err != nil {
		panic(err)
	}
	_ = store
}
