package idem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unsafe"
)

// encodeValue is the stored form of a handler's value: its JSON encoding.
// A json.RawMessage is stored as it is (after checking that it is JSON),
// which spares a re-encoding on the hot path of adapters that produce JSON
// themselves.
func encodeValue[T any](v T) ([]byte, error) {
	if raw, ok := any(v).(json.RawMessage); ok {
		switch {
		case raw == nil:
			return []byte("null"), nil
		case !json.Valid(raw):
			return nil, errors.New("idem: the handler's json.RawMessage is not valid JSON")
		}
		return raw, nil
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("idem: encoding the handler's result: %w", err)
	}
	return body, nil
}

// decodeValue decodes a stored answer. A json.RawMessage gets a copy of the
// stored bytes, without parsing them again; that is the replay fast path, so
// it avoids boxing: a nil slice converts to an interface without allocating,
// and once T is known to be json.RawMessage, v is written through its own
// type.
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
		return v, fmt.Errorf("idem: decoding the stored response: %w", err)
	}
	return v, nil
}
