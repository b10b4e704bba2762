package httpsig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"
)

// duplicateKeysError lists the duplicate object keys found in a JSON body,
// already sanitized for logging (checklist step 14b).
type duplicateKeysError struct{ keys []string }

func (e *duplicateKeysError) Error() string {
	return "duplicate JSON object keys: " + strings.Join(e.keys, ", ")
}

// checkJSON parses data as exactly one JSON value and rejects any object
// with a repeated member name (checklist step 14). It walks tokens with
// a per-object set of names, so duplicates at any depth, inside arrays
// included, are seen.
func checkJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var dups []string
	type frame struct {
		object bool
		names  map[string]struct{}
		expect bool // object: next token is a member name
	}
	var stack []*frame
	values := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) > 0 || values == 0 {
				return errors.New("invalid JSON: unexpected end of input")
			}
			break
		}
		if err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		if len(stack) == 0 {
			if values++; values > 1 {
				return errors.New("invalid JSON: more than one top-level value")
			}
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if name, isName := tok.(string); isName && top != nil && top.object && top.expect {
			if _, dup := top.names[name]; dup {
				dups = append(dups, name)
			}
			top.names[name] = struct{}{}
			top.expect = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, names: map[string]struct{}{}, expect: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true // a member value just ended
		}
	}
	if len(dups) > 0 {
		return &duplicateKeysError{keys: sanitizeKeyNames(dups)}
	}
	return nil
}

// isJSONMediaType reports whether a Content-Type names JSON
// (application/json or any +json type).
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// sanitizeKeyNames applies the step-14b logging rules to attacker-chosen
// key names: (a) cut at the first non-printable code point and replace the
// name with <sanitized:N>, N being the byte length of the kept prefix;
// (b) truncate to at most 32 bytes on a code point boundary; (c) log at
// most 4 names, then <...N more>.
func sanitizeKeyNames(names []string) []string {
	const maxNames, maxBytes = 4, 32
	var out []string
	for i, n := range names {
		if i == maxNames {
			out = append(out, fmt.Sprintf("<...%d more>", len(names)-maxNames))
			break
		}
		if cut := nonPrintableIndex(n); cut >= 0 {
			out = append(out, fmt.Sprintf("<sanitized:%d>", cut))
			continue
		}
		for len(n) > maxBytes {
			_, size := utf8.DecodeLastRuneInString(n)
			n = n[:len(n)-size]
		}
		out = append(out, n)
	}
	return out
}

// nonPrintableIndex returns the byte offset of the first code point that
// must not reach logs, or -1.
func nonPrintableIndex(s string) int {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			return i
		case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
			return i
		case r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return i
		case r == 0x2028, r == 0x2029, r >= 0x200b && r <= 0x200d, r == 0xfeff:
			return i
		case !unicode.IsPrint(r) && r != ' ':
			return i
		}
	}
	return -1
}
