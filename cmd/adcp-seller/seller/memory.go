package seller

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/adcp-go/idempotency/adcp"
	"github.com/adcp-go/idempotency/idem"
	"github.com/adcp-go/idempotency/memstore"
	"github.com/adcp-go/idempotency/webhook"
)

// memoryStore keeps everything in this process: media buys and tasks in
// maps, idempotency entries in memstore behind a Guard, webhooks delivered
// and tasks completed from goroutines. A restart forgets it all, queued
// webhooks included: memory mode is for trying the seller, not for
// selling (Postgres mode is durable).
type memoryStore struct {
	mem      *memstore.Store
	g        *idem.Guard
	sender   *webhook.Sender
	log      *slog.Logger
	complete func(ctx context.Context, id string) error

	mu    sync.Mutex
	byID  map[string]*mediaBuy
	owned map[string][]string // media buy ids by principal, oldest first
	tasks map[string]*task
	// accts is each principal's accounts, oldest first.
	accts map[string][]account
	// library is each principal's creatives, oldest first.
	library map[string][]storedCreative
	// delivered is what media buys delivered, by principal, media buy,
	// package and day.
	delivered map[deliveryKey]deliveryRow
	// finishing serialises task completions, so that one task completes
	// once.
	finishing sync.Mutex

	ctx    context.Context // ends at close; background work stops
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newMemoryStore(cfg *idem.Config, sender *webhook.Sender, log *slog.Logger, complete func(context.Context, string) error) (*memoryStore, error) {
	mem := memstore.New(nil)
	g, err := idem.NewGuard(mem, cfg)
	if err != nil {
		_ = mem.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &memoryStore{mem: mem, g: g, sender: sender, log: log, complete: complete,
		byID: map[string]*mediaBuy{}, owned: map[string][]string{}, tasks: map[string]*task{}, accts: map[string][]account{}, library: map[string][]storedCreative{}, delivered: map[deliveryKey]deliveryRow{}, ctx: ctx, cancel: cancel}, nil
}

func (m *memoryStore) mode() string { return "memory" }

func (m *memoryStore) capability() idem.Capability { return m.g.Capability() }

func (m *memoryStore) guard() *idem.Guard { return m.g }

// mutating runs h with a memTx whose writes apply only if h succeeds, so
// that a failed request changes nothing, as in Postgres.
func (m *memoryStore) mutating(opts *adcp.Options, h func(context.Context, writer, *adcp.Call) (any, error)) adcp.Runner {
	return adcp.Mutating(m.g, opts, func(ctx context.Context, c *adcp.Call) (any, error) {
		tx := &memTx{m: m}
		v, err := h(ctx, tx, c)
		if err != nil {
			return nil, err
		}
		tx.commit()
		return v, nil
	})
}

// memTx collects a request's writes and applies them together.
type memTx struct {
	m     *memoryStore
	ops   []func()
	after []func()
}

func (t *memTx) commit() {
	t.m.mu.Lock()
	for _, op := range t.ops {
		op()
	}
	t.m.mu.Unlock()
	for _, f := range t.after {
		f()
	}
}

func (t *memTx) buy(_ context.Context, principal, id string) (mediaBuy, bool, error) {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	b, ok := t.m.byID[id]
	if !ok || b.Principal != principal {
		return mediaBuy{}, false, nil
	}
	return cloneBuy(*b), true, nil
}

func (t *memTx) account(_ context.Context, principal, id string) (account, bool, error) {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	return t.m.findAccount(principal, id)
}

func (t *memTx) accountForUpdate(ctx context.Context, principal, id string) (account, bool, error) {
	return t.account(ctx, principal, id)
}

func (t *memTx) putAccount(_ context.Context, principal string, a account) error {
	t.ops = append(t.ops, func() { t.m.storeAccount(principal, a, true) })
	return nil
}

func (t *memTx) openAccount(_ context.Context, principal string, a account) error {
	t.ops = append(t.ops, func() { t.m.storeAccount(principal, a, false) })
	return nil
}

// findAccount finds principal's account id; m.mu is held.
func (m *memoryStore) findAccount(principal, id string) (account, bool, error) {
	for _, a := range m.accts[principal] {
		if a.AccountID == id {
			return cloneAccount(a), true, nil
		}
	}
	return account{}, false, nil
}

// storeAccount adds principal's account a, or replaces the one of its id
// when replace is set; m.mu is held.
func (m *memoryStore) storeAccount(principal string, a account, replace bool) {
	a = cloneAccount(a)
	list := m.accts[principal]
	if i := slices.IndexFunc(list, func(o account) bool { return o.AccountID == a.AccountID }); i >= 0 {
		if replace {
			list[i] = a
		}
		return
	}
	m.accts[principal] = append(list, a)
}

func cloneAccount(a account) account {
	if a.Brand != nil {
		b := *a.Brand
		a.Brand = &b
	}
	return a
}

func (t *memTx) taskExists(_ context.Context, id string) (bool, error) {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	_, ok := t.m.tasks[id]
	return ok, nil
}

func (t *memTx) putBuy(_ context.Context, b mediaBuy, isNew bool) error {
	b = cloneBuy(b)
	t.ops = append(t.ops, func() {
		if isNew {
			t.m.owned[b.Principal] = append(t.m.owned[b.Principal], b.ID)
		}
		t.m.byID[b.ID] = &b
	})
	return nil
}

func (t *memTx) putTask(_ context.Context, tk task, _ bool) error {
	t.ops = append(t.ops, func() { t.m.tasks[tk.ID] = &tk })
	return nil
}

func (t *memTx) notify(_ context.Context, d webhook.Delivery) error {
	t.after = append(t.after, func() { t.m.deliver(d) })
	return nil
}

func (t *memTx) schedule(_ context.Context, id string, delay time.Duration) error {
	t.after = append(t.after, func() {
		t.m.wg.Go(func() {
			select {
			case <-t.m.ctx.Done():
				return
			case <-time.After(delay):
			}
			if err := t.m.complete(t.m.ctx, id); err != nil && t.m.ctx.Err() == nil {
				t.m.log.Warn("completing a task failed", "task_id", id, "error", err)
			}
		})
	})
	return nil
}

// deliver sends d from a goroutine, retrying on the sender's schedule until
// it is delivered, refused for good, past the retry horizon, or the store
// closes.
func (m *memoryStore) deliver(d webhook.Delivery) {
	m.wg.Go(func() {
		first := time.Now()
		for attempt := 1; ; attempt++ {
			err := m.sender.Send(m.ctx, d)
			if err == nil {
				return
			}
			next, ok := m.sender.Retry().Next(attempt, first, time.Now())
			if webhook.IsPermanent(err) || !ok {
				m.log.Warn("webhook delivery abandoned", "attempt", attempt, "error", err)
				return
			}
			m.log.Info("webhook delivery failed; will retry", "attempt", attempt, "error", err)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
		}
	})
}

func (m *memoryStore) buys(_ context.Context, principal string, ids []string) ([]mediaBuy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []mediaBuy{}
	for _, id := range m.owned[principal] {
		if len(ids) == 0 || slices.Contains(ids, id) {
			out = append(out, cloneBuy(*m.byID[id]))
		}
	}
	return out, nil
}

func (m *memoryStore) seedBuy(_ context.Context, b mediaBuy) (bool, error) {
	b = cloneBuy(b)
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.byID[b.ID]
	switch {
	case ok && old.Principal != b.Principal:
		return false, errSeedBuyTaken
	case ok:
		m.byID[b.ID] = &b
		return false, nil
	}
	m.byID[b.ID] = &b
	m.owned[b.Principal] = append(m.owned[b.Principal], b.ID)
	m.storeAccount(b.Principal, b.Account, false)
	return true, nil
}

// storedCreative is a creative of a principal's library, in memory.
type storedCreative struct {
	id       string
	creative json.RawMessage
}

func (m *memoryStore) putCreative(_ context.Context, principal, id string, creative json.RawMessage) (bool, error) {
	creative = slices.Clone(creative)
	m.mu.Lock()
	defer m.mu.Unlock()
	lib := m.library[principal]
	if i := slices.IndexFunc(lib, func(c storedCreative) bool { return c.id == id }); i >= 0 {
		lib[i].creative = creative
		return false, nil
	}
	m.library[principal] = append(lib, storedCreative{id, creative})
	return true, nil
}

func (m *memoryStore) creatives(_ context.Context, principal string) ([]json.RawMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]json.RawMessage, 0, len(m.library[principal]))
	for _, c := range m.library[principal] {
		out = append(out, slices.Clone(c.creative))
	}
	return out, nil
}

// deliveryKey is a row of memoryStore.delivered.
type deliveryKey struct{ principal, buy, pkg, day string }

func (m *memoryStore) addDelivery(_ context.Context, principal string, rows []deliveryRow) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range rows {
		k := deliveryKey{principal, r.BuyID, r.PackageID, r.Day}
		sum := m.delivered[k]
		sum.BuyID, sum.PackageID, sum.Day = r.BuyID, r.PackageID, r.Day
		sum.Impressions += r.Impressions
		sum.Clicks += r.Clicks
		sum.Conversions += r.Conversions
		sum.Spend += r.Spend
		m.delivered[k] = sum
	}
	return nil
}

func (m *memoryStore) deliveries(_ context.Context, principal string, ids []string) ([]deliveryRow, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []deliveryRow{}
	for k, r := range m.delivered {
		if k.principal == principal && slices.Contains(ids, k.buy) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b deliveryRow) int {
		return cmp.Or(strings.Compare(a.BuyID, b.BuyID), strings.Compare(a.PackageID, b.PackageID), strings.Compare(a.Day, b.Day))
	})
	return out, nil
}

func (m *memoryStore) count(_ context.Context, principal string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.owned[principal]), nil
}

func (m *memoryStore) accounts(_ context.Context, principal string) ([]account, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]account, 0, len(m.accts[principal]))
	for _, a := range m.accts[principal] {
		out = append(out, cloneAccount(a))
	}
	return out, nil
}

func (m *memoryStore) setAccountStatus(_ context.Context, principal, id, status string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, a := range m.accts[principal] {
		if a.AccountID == id {
			m.accts[principal][i].Status = status
			return a.Status, true, nil
		}
	}
	return "", false, nil
}

func (m *memoryStore) task(_ context.Context, principal, id string) (task, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok || t.Principal != principal {
		return task{}, false, nil
	}
	return *t, true, nil
}

func (m *memoryStore) finish(ctx context.Context, id string, done func(context.Context, writer, *task) error) (bool, error) {
	m.finishing.Lock()
	defer m.finishing.Unlock()
	m.mu.Lock()
	cur, ok := m.tasks[id]
	var t task
	if ok {
		t = *cur
	}
	m.mu.Unlock()
	if !ok || t.Status != "submitted" {
		return false, nil
	}
	tx := &memTx{m: m}
	if err := done(ctx, tx, &t); err != nil {
		return false, err
	}
	tx.commit()
	return true, nil
}

// run has nothing to do: memstore sweeps by itself, and deliveries and
// completions run as soon as they are queued.
func (m *memoryStore) run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (m *memoryStore) close() {
	m.cancel()
	m.wg.Wait()
	_ = m.mem.Close()
}

func cloneBuy(b mediaBuy) mediaBuy {
	b.Packages = slices.Clone(b.Packages)
	return b
}
