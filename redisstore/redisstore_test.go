package redisstore

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/adcp-go/idempotency/idem/backend"
)

// The Lua scripts run against real Redis in the integration module
// (integration/redis_test.go); these tests cover what needs no server.

func TestKeysNeverCollide(t *testing.T) {
	s := &Store{prefix: DefaultPrefix}
	refs := []backend.Ref{
		{Principal: "ali", Key: "ce:x-0000000000000001"},
		{Principal: "alice", Key: ":x-0000000000000001"},
		{Principal: "alice:", Key: "x-0000000000000001"},
		{Principal: "alice", Key: "x-0000000000000001"},
		{Principal: "", Key: "alice:x-0000000000000001"},
		{Principal: "{alice}", Key: "x-0000000000000001"},
		{Principal: "alice}:{", Key: "x-0000000000000001"},
		{Principal: "bob", Key: "x-0000000000000001"},
	}
	seen := map[string]backend.Ref{}
	for _, ref := range refs {
		k := s.key(ref)
		if other, dup := seen[k]; dup {
			t.Fatalf("%+v and %+v share the key %q", ref, other, k)
		}
		seen[k] = ref
		// One hash tag, around the whole per-entry part, and the key
		// decodes back to its ref.
		rest, ok := strings.CutPrefix(k, "idem:{")
		if !ok || !strings.HasSuffix(rest, "}") || strings.ContainsAny(rest[:len(rest)-1], "{}") {
			t.Fatalf("key %q for %+v: want idem:{...} with one hash tag", k, ref)
		}
		enc, key, _ := strings.Cut(rest[:len(rest)-1], ":")
		principal, err := base64.RawURLEncoding.DecodeString(enc)
		if err != nil || string(principal) != ref.Principal || key != ref.Key {
			t.Fatalf("key %q decodes to (%q, %q), want %+v", k, principal, key, ref)
		}
		if !strings.HasPrefix(k, strings.TrimSuffix(s.pattern(), "*")) {
			t.Fatalf("key %q does not match the sweep pattern %q", k, s.pattern())
		}
	}
}

func TestPrefixesDoNotOverlap(t *testing.T) {
	a, b := &Store{prefix: "app"}, &Store{prefix: "app:x"}
	ref := backend.Ref{Principal: "alice", Key: "key-0000000000000001"}
	if strings.HasPrefix(b.key(ref), strings.TrimSuffix(a.pattern(), "*")) {
		t.Fatalf("prefix %q's sweep pattern %q matches prefix %q's key %q", a.prefix, a.pattern(), b.prefix, b.key(ref))
	}
}

func TestNewValidates(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, nil, nil); err == nil {
		t.Fatal("New without a client succeeded")
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: time.Second, MaxRetries: -1})
	defer client.Close()
	for _, p := range []string{"idem{x}", "a*", "with space", "a?", "a[b]", strings.Repeat("p", 65)} {
		if _, err := New(ctx, client, &Options{Prefix: p}); err == nil || !strings.Contains(err.Error(), "Prefix") {
			t.Errorf("Prefix %q: %v, want it refused", p, err)
		}
	}
	// Nothing listens on port 1: New reports that Redis cannot be reached.
	_, err := New(ctx, client, &Options{Prefix: "ok_prefix-1.2/3:x"})
	if err == nil || !strings.Contains(err.Error(), "reaching Redis") {
		t.Fatalf("New on a closed port: %v, want a connection error", err)
	}
}

func TestParseEntry(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	if e, err := parseEntry([]any{int64(1000)}); e != nil || err != nil {
		t.Fatalf("no entry: %+v, %v", e, err)
	}
	e, err := parseEntry([]any{int64(1000), int64(61000), "create_media_buy", hash, nil})
	if err != nil || e.Response != nil || e.ExpiresAt.Sub(e.Now) != time.Minute || e.Hash[0] != 0xab {
		t.Fatalf("in flight: %+v, %v", e, err)
	}
	e, err = parseEntry([]any{int64(1000), int64(61000), "create_media_buy", hash, ""})
	if err != nil || e.Response == nil || len(e.Response) != 0 {
		t.Fatalf("completed with an empty answer: %+v, %v; want a non-nil empty Response", e, err)
	}
	for _, bad := range [][]any{{}, {"x"}, {int64(1), int64(2)}, {int64(1), int64(2), "op", "zz", nil}, {int64(1), int64(2), "op", hash, int64(3)}} {
		if _, err := parseEntry(bad); err == nil {
			t.Errorf("parseEntry(%v) succeeded", bad)
		}
	}
}
