package idem_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
		case errors.As(err, &ie):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]any{"adcp_error": idem.Wire(err)})
			return
		case err != nil:
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
