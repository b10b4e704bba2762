package idem

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/adcp-go/idempotency/idem/backend"
)

// Key length bounds from AdCP: ^[A-Za-z0-9_.:-]{16,255}$.
const (
	MinKeyLen = 16
	MaxKeyLen = 255
)

// MaxOperationLen bounds Request.Operation, in bytes.
const MaxOperationLen = 255

// MaxPrincipalLen bounds Request.Principal, in bytes. A principal must also
// be valid UTF-8 without NUL bytes (Postgres text cannot hold them).
const MaxPrincipalLen = 1024

// ValidateKey reports whether key is a well-formed AdCP idempotency key:
// 16 to 255 characters, each a letter, digit, '_', '.', ':' or '-'. It returns
// an [*Error] matching [ErrMissingKey] or [ErrInvalidKey], whose message says
// what is wrong without echoing the key.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return newError(ErrMissingKey, "idempotency_key is required on mutating requests")
	case len(key) < MinKeyLen:
		return newError(ErrInvalidKey, fmt.Sprintf("idempotency_key must be at least %d characters", MinKeyLen))
	case len(key) > MaxKeyLen:
		return newError(ErrInvalidKey, fmt.Sprintf("idempotency_key must be at most %d characters", MaxKeyLen))
	}
	for i := 0; i < len(key); i++ {
		if !keyChar[key[i]] {
			return newError(ErrInvalidKey, "idempotency_key may contain only A-Z, a-z, 0-9 and _ . : -")
		}
	}
	return nil
}

// validateOperation checks an operation name: 1 to MaxOperationLen
// characters from the key alphabet plus '/'. Operation names come from the
// server (tool names), so a bad one is a server bug; it is refused before
// any backend sees it, and its bytes are never echoed.
func validateOperation(op string) error {
	switch {
	case op == "":
		return newError(ErrMissingOperation, "")
	case len(op) > MaxOperationLen:
		return newError(ErrInvalidOperation, fmt.Sprintf("the operation name is longer than %d bytes", MaxOperationLen))
	}
	for i := 0; i < len(op); i++ {
		if !keyChar[op[i]] && op[i] != '/' {
			return newError(ErrInvalidOperation, "the operation name may contain only A-Z, a-z, 0-9 and _ . : - /")
		}
	}
	return nil
}

var keyChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "_.:-" {
		t[c] = true
	}
	return t
}()

// Request identifies one idempotent request.
type Request struct {
	// Principal is the authenticated caller; keys are scoped by it, and one
	// principal never sees another's keys. It must come from authentication
	// (a verified token, a client certificate), never from the request body.
	// Required.
	Principal string
	// Account is the account the request acts for, if it names one: AdCP
	// 3.2 scopes keys by (authenticated agent, account). Pass an id that is
	// not guessable: a server-assigned account id, or for a natural-key
	// account ({brand, operator}) the value of [AccountScope]. Empty means
	// the principal's own namespace. At most 1024 bytes of text.
	Account string
	// Key is the client's idempotency_key. Required; see [ValidateKey].
	Key string
	// Operation names the task (for AdCP, the tool name, e.g.
	// "create_media_buy"). A key reused on another operation is a conflict.
	// Required: 1 to 255 characters, each a letter, digit, '_', '.', ':',
	// '-' or '/'.
	Operation string
	// Payload is the request as received: a JSON object. Its canonical hash
	// ([CanonicalJSONSHA256]) decides whether a retry is the same request.
	Payload json.RawMessage
	// Read marks a read (a keyed read: AdCP replays a read when the caller
	// supplies a key). New keys of reads count against the read budget of
	// the rate limiter, new keys of writes against the write budget.
	Read bool
}

// prepared is a validated request with its hash.
type prepared struct {
	Request
	hash backend.Hash
}

// ref is the entry the request claims.
func (p prepared) ref() backend.Ref {
	return backend.Ref{Principal: p.Principal, Account: p.Account, Key: p.Key}
}

// prepare validates r in the order AdCP asks for (principal, key, operation,
// payload) and hashes the payload. Nothing is stored for a request that fails
// here.
func prepare(r Request, maxPayload int) (prepared, error) {
	if r.Principal == "" {
		return prepared{}, newError(ErrMissingPrincipal, "the request has no authenticated principal")
	}
	if len(r.Principal) > MaxPrincipalLen || !utf8.ValidString(r.Principal) || strings.IndexByte(r.Principal, 0) >= 0 {
		// Principals come from authentication, so this is a server bug; it
		// fails closed, before any backend sees the value.
		return prepared{}, newError(ErrMissingPrincipal, "the request's principal is not usable (over 1024 bytes, or not text)")
	}
	if len(r.Account) > MaxPrincipalLen || !utf8.ValidString(r.Account) || strings.IndexByte(r.Account, 0) >= 0 {
		// Accounts come from the server's resolution of the request, so
		// this too is a server bug.
		return prepared{}, newError(ErrInvalidPayload, "the request's account is not usable (over 1024 bytes, or not text)")
	}
	if err := ValidateKey(r.Key); err != nil {
		return prepared{}, err
	}
	if err := validateOperation(r.Operation); err != nil {
		return prepared{}, err
	}
	if len(r.Payload) > maxPayload {
		return prepared{}, newError(ErrInvalidPayload, fmt.Sprintf("request is larger than %d bytes", maxPayload))
	}
	h, err := CanonicalJSONSHA256(r.Payload)
	if err != nil {
		return prepared{}, err
	}
	return prepared{Request: r, hash: h}, nil
}
