package idem

import (
	"bytes"
	"encoding/json"
	"errors"
	"unsafe"
)

// Markers are what is stored instead of an answer when a request ran but no
// answer could be stored. They start with a NUL byte, which no JSON text
// does, so no handler's value can ever be mistaken for one. A retry that
// finds a marker gets the marker's error, never a second run.
var (
	markerUnencodable = []byte("\x00idem:unencodable")
	markerTxEnded     = []byte("\x00idem:tx-ended")
)

// markerError returns the error a stored marker stands for, or nil when
// stored is an answer.
func markerError(stored []byte) error {
	switch {
	case len(stored) == 0 || stored[0] != 0:
		return nil
	case bytes.Equal(stored, markerUnencodable):
		return newError(ErrUnencodable, "an earlier request with this idempotency_key ran, but the seller could not encode its answer; it will not run again under this key (look the resource up, or use a fresh key)")
	case bytes.Equal(stored, markerTxEnded):
		return newError(ErrTxEnded, "an earlier request with this idempotency_key ran, but the seller's handler ended its transaction, so no answer was stored; it will not run again under this key (look the resource up, or use a fresh key)")
	default:
		return newError(ErrUndecodable, "the stored answer for this idempotency_key is not readable by this seller")
	}
}

// encodeValue is the stored form of a handler's value: its JSON encoding.
// A json.RawMessage is stored as it is (after checking that it is JSON),
// which spares a re-encoding on the hot path of adapters that produce JSON
// themselves. Failures match [ErrUnencodable].
func encodeValue[T any](v T) ([]byte, error) {
	if raw, ok := any(v).(json.RawMessage); ok {
		switch {
		case raw == nil:
			return []byte("null"), nil
		case !json.Valid(raw):
			return nil, unencodable(errors.New("the handler's json.RawMessage is not valid JSON"))
		}
		return raw, nil
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, unencodable(err)
	}
	return body, nil
}

// unencodable is the error for a handler value that cannot be encoded.
func unencodable(cause error) *Error {
	e := newError(ErrUnencodable, "the request ran, but the seller could not encode its answer")
	e.cause = cause
	return e
}

// decodeValue decodes a stored answer. A json.RawMessage gets a copy of the
// stored bytes, without parsing them again; that is the replay fast path, so
// it avoids boxing: a nil slice converts to an interface without allocating,
// and once T is known to be json.RawMessage, v is written through its own
// type. Failures match [ErrUndecodable].
func decodeValue[T any](stored []byte) (T, error) {
	var v T
	if _, ok := any(v).(json.RawMessage); !ok {
		return unmarshal[T](stored)
	}
	*(*json.RawMessage)(unsafe.Pointer(&v)) = bytes.Clone(stored)
	return v, nil
}

// unmarshal is decodeValue's general case, apart so that its escaping
// pointer does not move the fast path's value to the heap.
func unmarshal[T any](stored []byte) (T, error) {
	var v T
	if err := json.Unmarshal(stored, &v); err != nil {
		e := newError(ErrUndecodable, "the stored answer for this idempotency_key cannot be read by this version of the seller")
		e.cause = err
		return v, e
	}
	return v, nil
}
