package seller

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
)

// store is where the seller keeps its media buys, and how its mutating
// tools run at most once per key: in memory (memory.go) or in Postgres
// (postgres.go). The tools (tools.go) are written once, against it.
type store interface {
	// mode names the store: "memory" or "postgres".
	mode() string
	// capability is the adcp.idempotency fragment of the capabilities.
	capability() idem.Capability
	// mutating makes h an idempotent tool handler. h writes through the
	// writer it gets; in Postgres that is the transaction that also stores
	// the answer.
	mutating(opts *adcpmcp.Options, h func(ctx context.Context, w writer, c *adcp.Call) (any, error)) mcp.ToolHandler
	// list returns principal's media buys, all of them or those named.
	list(ctx context.Context, principal string, ids []string) ([]mediaBuy, error)
	// count reports how many media buys principal has.
	count(ctx context.Context, principal string) (int, error)
	// run does the store's background work until ctx ends.
	run(ctx context.Context)
	// close releases what the store holds.
	close()
}

// writer is what a mutating tool writes through.
type writer interface {
	// addBuy stores a media buy of principal.
	addBuy(ctx context.Context, principal string, b mediaBuy) error
	// enqueue schedules a webhook event for delivery once the request's
	// writes are kept.
	enqueue(ctx context.Context, e event) error
}
