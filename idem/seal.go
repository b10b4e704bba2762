package idem

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"

	"github.com/adcp-go/idempotency/idem/backend"
)

// Sealer encrypts stored answers at rest. AdCP requires the idempotency
// cache to be encrypted at rest like the data it holds; set Config.Sealer
// (a [*KeyRing]) to do it. Without one, stored answers are kept in
// plaintext: anyone who can read the table (or the Redis keys, or a backup)
// can read every answer of the replay window.
//
// The engine seals each answer with associated data naming its scope
// (principal, account), key and operation, so that a sealed answer copied
// to another key or principal fails to open. Implementations must be safe
// for concurrent use.
type Sealer interface {
	// Seal encrypts plaintext and authenticates it with ad.
	Seal(plaintext, ad []byte) ([]byte, error)
	// Open decrypts what Seal returned for the same ad; it fails when the
	// sealed bytes were altered, sealed with other ad, or under a key it
	// does not hold.
	Open(sealed, ad []byte) ([]byte, error)
}

// sealedTag starts every answer a KeyRing sealed. JSON and the engine's
// markers never start with it.
const sealedTag = 0x01

// KeyRing is a [Sealer] with AES-256-GCM keys named by ids. It seals under
// the current key and opens under any key of the ring, so keys rotate
// without stopping anything: add the new key, make it current, and retire
// the old one once every answer sealed under it has outlived the replay
// window and its tombstone. A KeyRing is safe for concurrent use.
type KeyRing struct {
	current         string
	aeads           map[string]cipher.AEAD
	acceptPlaintext bool
}

// NewKeyRing returns a KeyRing that seals under current, one of keys; each
// key is 32 bytes (AES-256) and each id 1 to 255 bytes.
func NewKeyRing(current string, keys map[string][]byte) (*KeyRing, error) {
	if _, ok := keys[current]; !ok {
		return nil, fmt.Errorf("idem: NewKeyRing: the current key %q is not in the ring", current)
	}
	r := &KeyRing{current: current, aeads: make(map[string]cipher.AEAD, len(keys))}
	for id, k := range keys {
		if len(id) == 0 || len(id) > 255 {
			return nil, errors.New("idem: NewKeyRing: key ids must be 1 to 255 bytes")
		}
		if len(k) != 32 {
			return nil, fmt.Errorf("idem: NewKeyRing: key %q is %d bytes, want 32 (AES-256)", id, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		if r.aeads[id], err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// AcceptPlaintext makes the ring open answers stored before encryption was
// turned on as they are, for the replay window after the switch. Use it
// only for that window: a plaintext answer carries no proof of where it
// came from.
func (r *KeyRing) AcceptPlaintext() *KeyRing {
	c := *r
	c.acceptPlaintext = true
	return &c
}

// Seal implements [Sealer]: the tag byte, the key id's length and the id,
// a random 96-bit nonce, then the ciphertext and its 128-bit tag.
func (r *KeyRing) Seal(plaintext, ad []byte) ([]byte, error) {
	aead := r.aeads[r.current]
	out := make([]byte, 0, 2+len(r.current)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, sealedTag, byte(len(r.current)))
	out = append(out, r.current...)
	nonce := out[len(out) : len(out)+aead.NonceSize()]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = out[:len(out)+aead.NonceSize()]
	return aead.Seal(out, nonce, plaintext, ad), nil
}

// Open implements [Sealer].
func (r *KeyRing) Open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) == 0 || sealed[0] != sealedTag {
		if r.acceptPlaintext {
			return sealed, nil
		}
		return nil, errors.New("the stored answer is not sealed")
	}
	if len(sealed) < 2 || len(sealed) < 2+int(sealed[1]) {
		return nil, errors.New("the sealed answer is truncated")
	}
	id := string(sealed[2 : 2+int(sealed[1])])
	aead, ok := r.aeads[id]
	if !ok {
		return nil, fmt.Errorf("the answer is sealed under key %q, which the ring does not hold", id)
	}
	rest := sealed[2+len(id):]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("the sealed answer is truncated")
	}
	return aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], ad)
}

// sealAD is the associated data of an answer: its scope, key and
// operation, each length-prefixed.
func sealAD(ref backend.Ref, operation string) []byte {
	ad := make([]byte, 0, 32+len(ref.Principal)+len(ref.Account)+len(ref.Key)+len(operation))
	ad = append(ad, "adcp-idem/v1"...)
	for _, f := range []string{ref.Principal, ref.Account, ref.Key, operation} {
		ad = strconv.AppendInt(ad, int64(len(f)), 10)
		ad = append(ad, ':')
		ad = append(ad, f...)
	}
	return ad
}

// seal is what the engine stores for an answer (or marker) of p.
func (s settings) seal(p prepared, body []byte) ([]byte, error) {
	if s.sealer == nil {
		return body, nil
	}
	sealed, err := s.sealer.Seal(body, sealAD(p.ref(), p.Operation))
	if err != nil {
		return nil, storageError("seal", err)
	}
	return sealed, nil
}

// open reverses seal; an answer that does not open is ErrUnreadable.
func (s settings) open(p prepared, stored []byte) ([]byte, error) {
	if s.sealer == nil {
		return stored, nil
	}
	plain, err := s.sealer.Open(stored, sealAD(p.ref(), p.Operation))
	if err != nil {
		e := newError(ErrUnreadable, "the stored answer for this idempotency_key cannot be opened by this seller")
		e.cause = err
		return nil, e
	}
	return plain, nil
}

// OpenStoredAnswer opens an answer as a backend stores it (the response
// column of the Postgres table, say) for an operator's tool or a test that
// inspects the storage: s is the Sealer the Store or Guard was configured
// with, and principal, account, key and operation name the entry. It fails
// as a replay would, with an error matching [ErrUnreadable].
func OpenStoredAnswer(s Sealer, principal, account, key, operation string, stored []byte) ([]byte, error) {
	return settings{sealer: s}.open(prepared{Request: Request{Principal: principal, Account: account, Key: key, Operation: operation}}, stored)
}
