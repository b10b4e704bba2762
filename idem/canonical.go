package idem

import (
	"crypto/sha256"
	"errors"

	"github.com/adcp-go/idempotency/idem/internal/jcs"
)

// CanonicalJSONSHA256 returns the SHA-256 of the RFC 8785 (JSON
// Canonicalization Scheme) form of an AdCP request payload, after removing
// the fields that AdCP excludes from request equivalence (a closed list):
//
//   - idempotency_key, which is the key itself;
//   - context, when it is an object (the caller's echo-back data, which may
//     change on every retry);
//   - governance_context, which may be a refreshed token on retry;
//   - push_notification_config.authentication.credentials, which may be a
//     rotated secret (the URL and scheme stay in the hash).
//
// All of these are top-level fields. Key order, whitespace and number
// spelling never change the hash; a missing field and an explicit null do.
// Two requests with one key are the same request when their hashes (and
// operations) match.
//
// The payload must be a JSON object. What RFC 8785 cannot represent is
// rejected with an error matching [ErrInvalidPayload]: invalid JSON,
// invalid UTF-8 or lone surrogates in strings, duplicate member names,
// numbers beyond the float64 range, nesting deeper than 128 levels. The
// error names an offset, never the content.
func CanonicalJSONSHA256(payload []byte) ([sha256.Size]byte, error) {
	h, err := jcs.RequestHash(payload)
	if err != nil {
		var je *jcs.Error
		msg := "payload is not canonicalisable JSON"
		if errors.As(err, &je) {
			msg = "payload: " + je.Error()
		}
		return h, newError(ErrInvalidPayload, msg)
	}
	return h, nil
}
