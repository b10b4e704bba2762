package adcp

import (
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// members calls fn with the name and the raw value of each top-level
// member of the JSON object data, in order (duplicates included), and
// reports whether data is a JSON object. The value is a sub-slice of data,
// the bytes a json.RawMessage would hold, capped so that appending to it
// cannot write into data. A name written with escapes (or with invalid
// UTF-8) is passed as encoding/json decodes it; fn must not keep name, and returning false
// stops the walk.
//
// It reads the members of every request and answer, which a
// map[string]json.RawMessage would copy one by one: it allocates nothing
// but the rare escaped name.
func members(data []byte, fn func(name, value []byte) bool) bool {
	if !json.Valid(data) {
		return false
	}
	// data is valid JSON from here on: the walk only finds the boundaries.
	i := skipSpace(data, 0)
	if data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return true
	}
	for {
		end := stringEnd(data, i)
		name := data[i+1 : end-1]
		if slices.Contains(name, '\\') || !utf8.Valid(name) {
			var unquoted string
			_ = json.Unmarshal(data[i:end], &unquoted)
			name = []byte(unquoted)
		}
		i = skipSpace(data, end)
		i = skipSpace(data, i+1) // past ':'
		vend := valueEnd(data, i)
		if !fn(name, data[i:vend:vend]) {
			return true
		}
		i = skipSpace(data, vend)
		if data[i] == '}' {
			return true
		}
		i = skipSpace(data, i+1) // past ','
	}
}

// hasMember reports whether the JSON object body has a top-level member
// name.
func hasMember(body json.RawMessage, name string) bool {
	found := false
	members(body, func(n, _ []byte) bool {
		found = string(n) == name
		return !found
	})
	return found
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at i.
func stringEnd(data []byte, i int) int {
	for i++; ; i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// valueEnd returns the index just past the value that starts at i.
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch data[i] {
			case '"':
				i = stringEnd(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(data) && !isDelimiter(data[i]) {
		i++
	}
	return i
}

// isDelimiter reports whether c ends a number, true, false or null.
func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}
