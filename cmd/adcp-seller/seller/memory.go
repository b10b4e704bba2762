package seller

import (
	"context"
	"slices"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/adcpmcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
)

// memoryStore keeps everything in this process: media buys in a map, the
// idempotency entries in memstore behind a Guard, webhooks delivered from
// goroutines. A restart forgets it all.
type memoryStore struct {
	mem    *memstore.Store
	guard  *idem.Guard
	outbox *memoryOutbox

	mu   sync.Mutex
	buys map[string][]mediaBuy // by principal
}

func newMemoryStore(cfg *idem.Config, p *poster) (*memoryStore, error) {
	mem := memstore.New(nil)
	g, err := idem.NewGuard(mem, cfg)
	if err != nil {
		mem.Close()
		return nil, err
	}
	return &memoryStore{mem: mem, guard: g, outbox: newMemoryOutbox(p), buys: map[string][]mediaBuy{}}, nil
}

func (m *memoryStore) mode() string { return "memory" }

func (m *memoryStore) capability() idem.Capability { return m.guard.Capability() }

func (m *memoryStore) mutating(opts *adcpmcp.Options, h func(context.Context, writer, *adcp.Call) (any, error)) mcp.ToolHandler {
	return adcpmcp.Mutating(m.guard, opts, func(ctx context.Context, c *adcp.Call) (any, error) {
		return h(ctx, m, c)
	})
}

func (m *memoryStore) addBuy(_ context.Context, principal string, b mediaBuy) error {
	m.mu.Lock()
	m.buys[principal] = append(m.buys[principal], b)
	m.mu.Unlock()
	return nil
}

func (m *memoryStore) enqueue(_ context.Context, e event) error {
	m.outbox.enqueue(e)
	return nil
}

func (m *memoryStore) list(_ context.Context, principal string, ids []string) ([]mediaBuy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []mediaBuy{}
	for _, b := range m.buys[principal] {
		if len(ids) == 0 || slices.Contains(ids, b.MediaBuyID) {
			out = append(out, b)
		}
	}
	return out, nil
}

func (m *memoryStore) count(_ context.Context, principal string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buys[principal]), nil
}

// run has nothing to do: memstore sweeps by itself, and events leave as
// soon as they are enqueued.
func (m *memoryStore) run(context.Context) {}

func (m *memoryStore) close() {
	m.outbox.close()
	_ = m.mem.Close()
}
