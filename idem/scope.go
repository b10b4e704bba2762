package idem

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/adcp-go/idempotency/idem/internal/jcs"
)

// AccountScope turns a natural-key account (AdCP's buyer-declared account,
// {brand, operator}, as JSON) into the opaque value to pass as
// Request.Account: an HMAC-SHA-256, under salt (a secret of the seller's,
// at least 16 bytes), of the account's RFC 8785 canonical form. AdCP
// requires it: the natural key is public by design, so used as it is it
// would let anyone who knows a brand probe that account's keys. Equal
// accounts get equal scopes however their JSON is spelled; the scope
// reveals nothing of the account without the salt.
func AccountScope(salt []byte, naturalKey []byte) (string, error) {
	if len(salt) < 16 {
		return "", errors.New("idem: AccountScope needs a salt of at least 16 bytes")
	}
	canon, err := jcs.Canonicalize(naturalKey)
	if err != nil || len(canon) == 0 || canon[0] != '{' {
		return "", errors.New("idem: the natural-key account is not a JSON object")
	}
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("adcp/account-scope/v1\x00"))
	m.Write(canon)
	// "nk:" and the base64 of the sum, built in place: one allocation, the
	// string.
	var sum [sha256.Size]byte
	var out [3 + (sha256.Size*8+5)/6]byte
	copy(out[:], "nk:")
	base64.RawURLEncoding.Encode(out[3:], m.Sum(sum[:0]))
	return string(out[:]), nil
}

// ProviderKey derives the key a seller uses for one downstream provider
// (an ad server, a payment provider) from its root secret, so that each
// downstream gets a key of its own (AdCP rule 10: one key per downstream,
// not one shared secret). Keep root in a KMS or secret store.
func ProviderKey(root []byte, provider string) []byte {
	m := hmac.New(sha256.New, root)
	m.Write([]byte("adcp/downstream-provider/v1\x00"))
	m.Write([]byte(provider))
	return m.Sum(nil)
}

// DownstreamKey is the idempotency key to send to a downstream provider for
// the buyer's key: HMAC-SHA-256(providerKey, key) in hex (64 characters,
// itself a valid AdCP key). AdCP rule 10 forbids passing the buyer's raw
// key to a downstream operated by another party; this derivative is stable
// across the buyer's retries, so the downstream's own deduplication works,
// and reveals nothing of the buyer's key.
func DownstreamKey(providerKey []byte, key string) string {
	m := hmac.New(sha256.New, providerKey)
	m.Write([]byte(key))
	return hex.EncodeToString(m.Sum(nil))
}

// ScrubKeys returns err with every occurrence of the given keys (the buyer's
// idempotency key, its downstream derivatives) replaced by
// "[idempotency_key]" in its message, so that an error a downstream
// returned can be answered or logged without them (AdCP rule 10). The
// result still matches err's chain with errors.Is and errors.As. It returns
// nil for a nil err.
func ScrubKeys(err error, keys ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, k := range keys {
		if k != "" {
			msg = strings.ReplaceAll(msg, k, "[idempotency_key]")
		}
	}
	return &scrubbed{msg: msg, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }
