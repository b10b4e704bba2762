package idem_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/adcp-go/idempotency/idem"
)

func ring(t testing.TB, current string, ids ...string) *idem.KeyRing {
	t.Helper()
	keys := map[string][]byte{}
	for i, id := range ids {
		keys[id] = bytes.Repeat([]byte{byte(i + 1)}, 32)
	}
	r, err := idem.NewKeyRing(current, keys)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestKeyRingSealsAndOpens(t *testing.T) {
	r := ring(t, "a", "a")
	plain := []byte(`{"media_buy_id":"mb_1"}`)
	sealed, err := r.Seal(plain, []byte("scope-1"))
	if err != nil || bytes.Contains(sealed, []byte("mb_1")) {
		t.Fatalf("Seal = %q, %v", sealed, err)
	}
	again, _ := r.Seal(plain, []byte("scope-1"))
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of one answer are equal: the nonce is not random")
	}
	if got, err := r.Open(sealed, []byte("scope-1")); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := r.Open(sealed, []byte("scope-2")); err == nil {
		t.Fatal("an answer opened under other associated data")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := r.Open(tampered, []byte("scope-1")); err == nil {
		t.Fatal("a tampered answer opened")
	}
	for _, bad := range [][]byte{nil, {1}, {1, 5, 'a'}, plain} {
		if _, err := r.Open(bad, []byte("scope-1")); err == nil {
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	if got, err := r.AcceptPlaintext().Open(plain, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("AcceptPlaintext: %q, %v", got, err)
	}
}

func TestKeyRingRotation(t *testing.T) {
	old := ring(t, "a", "a")
	sealed, _ := old.Seal([]byte("answer"), nil)
	rotated := ring(t, "b", "a", "b")
	if got, err := rotated.Open(sealed, nil); err != nil || string(got) != "answer" {
		t.Fatalf("old answer after rotation: %q, %v", got, err)
	}
	fresh, _ := rotated.Seal([]byte("answer"), nil)
	if string(fresh[2:3]) != "b" {
		t.Fatalf("new answers are not sealed under the current key: %q", fresh[:3])
	}
	retired := ring(t, "b", "b")
	if _, err := retired.Open(sealed, nil); err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("answer under a retired key: %v", err)
	}
}

func TestNewKeyRingRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		current string
		keys    map[string][]byte
	}{
		"current missing": {"x", map[string][]byte{"a": make([]byte, 32)}},
		"short key":       {"a", map[string][]byte{"a": make([]byte, 16)}},
		"empty id":        {"", map[string][]byte{"": make([]byte, 32)}},
	} {
		if _, err := idem.NewKeyRing(tc.current, tc.keys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAccountScope(t *testing.T) {
	salt := []byte("seller-local-secret-0123456789")
	a, err := idem.AccountScope(salt, []byte(`{"brand":{"domain":"acme.example"},"operator":"agency.example"}`))
	if err != nil {
		t.Fatal(err)
	}
	// The scope is part of every stored key's identity: its formula never
	// changes (the canonical form of this account is the account itself).
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("adcp/account-scope/v1\x00{\"brand\":{\"domain\":\"acme.example\"},\"operator\":\"agency.example\"}"))
	if want := "nk:" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)); a != want {
		t.Fatalf("scope %q, want %q", a, want)
	}
	b, _ := idem.AccountScope(salt, []byte(`{ "operator" : "agency.example", "brand": {"domain":"acme.example"} }`))
	if a != b || !strings.HasPrefix(a, "nk:") || strings.Contains(a, "acme") {
		t.Fatalf("scopes %q and %q: want equal, opaque", a, b)
	}
	c, _ := idem.AccountScope([]byte("another-sellers-secret-000000"), []byte(`{"brand":{"domain":"acme.example"},"operator":"agency.example"}`))
	d, _ := idem.AccountScope(salt, []byte(`{"brand":{"domain":"acme.example"},"operator":"other.example"}`))
	if c == a || d == a {
		t.Fatal("another salt or another account gave the same scope")
	}
	if _, err := idem.AccountScope([]byte("short"), []byte(`{}`)); err == nil {
		t.Fatal("a short salt was accepted")
	}
	if _, err := idem.AccountScope(salt, []byte(`"acme"`)); err == nil {
		t.Fatal("a non-object account was accepted")
	}
}

func TestDownstreamKeys(t *testing.T) {
	root := []byte("kms-managed-root-secret-0123456789")
	gam, xandr := idem.ProviderKey(root, "gam"), idem.ProviderKey(root, "xandr")
	key := "0b4c1e9a-7d2f-4f65-9a8e-3c1d2b7e6f50"
	dg, dx := idem.DownstreamKey(gam, key), idem.DownstreamKey(xandr, key)
	if dg == dx || dg != idem.DownstreamKey(gam, key) || strings.Contains(dg, key) {
		t.Fatalf("downstream keys %q, %q: want stable, per provider, not the buyer's", dg, dx)
	}
	if err := idem.ValidateKey(dg); err != nil {
		t.Fatalf("a downstream key is not a valid AdCP key: %v", err)
	}
	cause := errors.New("upstream 409: duplicate request " + key + " (as " + dg + ")")
	scrubbed := idem.ScrubKeys(cause, key, dg)
	if strings.Contains(scrubbed.Error(), key) || strings.Contains(scrubbed.Error(), dg) || !errors.Is(scrubbed, cause) {
		t.Fatalf("ScrubKeys = %v", scrubbed)
	}
	if idem.ScrubKeys(nil, key) != nil {
		t.Fatal("ScrubKeys(nil) is not nil")
	}
}
