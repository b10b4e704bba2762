// Package jcs is the RFC 8785 JSON Canonicalization Scheme, with AdCP's
// exclusion list for request equivalence. Package idem exposes it as
// idem.CanonicalJSONSHA256; nothing else of it is API.
package jcs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is how deeply arrays and objects may nest in a payload. AdCP
// requests nest a handful of levels; the bound keeps hostile input from
// exhausting the stack.
const MaxDepth = 128

// Canonicalize returns the RFC 8785 (JSON Canonicalization Scheme) form of
// the JSON text in data: object members sorted by the UTF-16 code units of
// their names, numbers in ECMAScript form, strings with the minimal escapes,
// no insignificant whitespace.
//
// It rejects, with an [*Error], what JCS cannot represent: invalid JSON,
// invalid UTF-8 or lone surrogates in strings, duplicate member names,
// numbers beyond the float64 range, and nesting deeper than [MaxDepth]. The
// error reports an offset, never the content.
func Canonicalize(data []byte) ([]byte, error) {
	c := getCanon(data)
	defer putCanon(c)
	if err := c.document(excludeNone); err != nil {
		return nil, err
	}
	return bytes.Clone(c.out), nil
}

// RequestHash returns the SHA-256 of the RFC 8785 form of an AdCP
// request payload, after removing the fields that AdCP excludes from request
// equivalence (a closed list):
//
//   - idempotency_key, which is the key itself;
//   - context, when it is an object (the caller's echo-back data, which may
//     change on every retry);
//   - governance_context, which may be a refreshed token on retry;
//   - push_notification_config.authentication.credentials, which may be a
//     rotated secret (the URL and scheme stay in the hash).
//
// All of these are top-level fields. Key order and whitespace never change
// the hash; a missing field and an explicit null do. The payload must be a
// JSON object; anything [Canonicalize] rejects is rejected here too.
func RequestHash(payload []byte) ([sha256.Size]byte, error) {
	c := getCanon(payload)
	defer putCanon(c)
	if err := c.document(excludeTop); err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(c.out), nil
}

// exclusion says which members an object being canonicalised drops.
type exclusion uint8

const (
	excludeNone     exclusion = iota
	excludeTop                // the request object itself
	excludePush               // push_notification_config
	excludePushAuth           // push_notification_config.authentication
)

type canon struct {
	in      []byte
	pos     int
	out     []byte
	scratch []byte   // where unsorted objects are reassembled
	members []member // stack of members of the objects being parsed
	keys    []byte   // decoded member names, for sorting
}

type member struct {
	keyStart, keyEnd int // in keys
	start, end       int // the whole `"name":value` in out
}

var canonPool = sync.Pool{New: func() any { return new(canon) }}

func getCanon(in []byte) *canon {
	c := canonPool.Get().(*canon)
	c.in, c.pos = in, 0
	c.out, c.scratch, c.members, c.keys = c.out[:0], c.scratch[:0], c.members[:0], c.keys[:0]
	return c
}

func putCanon(c *canon) {
	if cap(c.out) > 1<<20 || cap(c.scratch) > 1<<20 {
		return // do not pin huge buffers
	}
	c.in = nil
	canonPool.Put(c)
}

// Error is why a text cannot be canonicalised. Its message names an offset,
// never the content.
type Error struct{ msg string }

// Error implements error.
func (e *Error) Error() string { return e.msg }

func (c *canon) fail(format string, args ...any) error {
	return &Error{msg: fmt.Sprintf(format, args...)}
}

func (c *canon) document(ex exclusion) error {
	c.skipSpace()
	if ex == excludeTop && (c.pos >= len(c.in) || c.in[c.pos] != '{') {
		return c.fail("request must be a JSON object")
	}
	if err := c.value(0, ex); err != nil {
		return err
	}
	c.skipSpace()
	if c.pos != len(c.in) {
		return c.fail("unexpected data after the JSON value at offset %d", c.pos)
	}
	return nil
}

func (c *canon) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canon) value(depth int, ex exclusion) error {
	if c.pos >= len(c.in) {
		return c.fail("unexpected end of JSON")
	}
	switch b := c.in[c.pos]; {
	case b == '{':
		return c.object(depth+1, ex)
	case b == '[':
		return c.array(depth + 1)
	case b == '"':
		return c.string()
	case b == '-' || (b >= '0' && b <= '9'):
		return c.number()
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	default:
		return c.fail("unexpected character at offset %d", c.pos)
	}
}

func (c *canon) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return c.fail("invalid literal at offset %d", c.pos)
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

func (c *canon) array(depth int) error {
	if depth > MaxDepth {
		return c.fail("nesting deeper than %d levels", MaxDepth)
	}
	c.pos++ // [
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return nil
	}
	for {
		c.skipSpace()
		if err := c.value(depth, excludeNone); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.fail("unexpected end of JSON in array")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return nil
		default:
			return c.fail("expected ',' or ']' at offset %d", c.pos)
		}
	}
}

// object writes members in input order, remembering where each one went and
// its decoded name; only if the names were not already in order does it
// reassemble them sorted.
func (c *canon) object(depth int, ex exclusion) error {
	if depth > MaxDepth {
		return c.fail("nesting deeper than %d levels", MaxDepth)
	}
	openAt := c.pos
	c.pos++ // {
	start := len(c.out)
	c.out = append(c.out, '{')
	base, keysBase := len(c.members), len(c.keys)
	defer func() { c.members, c.keys = c.members[:base], c.keys[:keysBase] }()
	sorted := true
	var seen uint8 // names on the exclusion list met so far

	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return nil
	}
	for {
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.fail("expected a member name at offset %d", c.pos)
		}
		before := len(c.out)
		if len(c.members) > base {
			c.out = append(c.out, ',')
		}
		memberStart := len(c.out)
		keyStart := len(c.keys)
		if err := c.key(); err != nil {
			return err
		}
		keyEnd := len(c.keys)
		name := c.keys[keyStart:keyEnd]
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.fail("expected ':' at offset %d", c.pos)
		}
		c.pos++
		c.out = append(c.out, ':')
		c.skipSpace()
		special, drop, child := excludedMember(ex, name, c.pos < len(c.in) && c.in[c.pos] == '{')
		if special != 0 {
			// Names on the exclusion list may be dropped before the duplicate
			// check below sees them, so they are checked here.
			if seen&special != 0 {
				return c.fail("duplicate member name in object at offset %d", openAt)
			}
			seen |= special
		}
		if err := c.value(depth, child); err != nil {
			return err
		}
		if drop {
			c.out = c.out[:before]
			c.keys = c.keys[:keyStart]
		} else {
			if n := len(c.members); n > base {
				prev := c.members[n-1]
				switch cmp := compareUTF16(c.keys[prev.keyStart:prev.keyEnd], name); {
				case cmp == 0:
					return c.fail("duplicate member name in object at offset %d", openAt)
				case cmp > 0:
					sorted = false
				}
			}
			c.members = append(c.members, member{keyStart, keyEnd, memberStart, len(c.out)})
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.fail("unexpected end of JSON in object")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
		case '}':
			c.pos++
			if !sorted {
				if err := c.sortMembers(start, base, openAt); err != nil {
					return err
				}
			}
			c.out = append(c.out, '}')
			return nil
		default:
			return c.fail("expected ',' or '}' at offset %d", c.pos)
		}
	}
}

// excludedMember tells how the member called name of an object under
// exclusion ex is treated: special is a bit identifying a name on the
// exclusion list (0 for others), drop whether the member leaves the canonical
// form, child the exclusion that applies inside its value.
func excludedMember(ex exclusion, name []byte, isObject bool) (special uint8, drop bool, child exclusion) {
	switch ex {
	case excludeTop:
		switch string(name) {
		case "idempotency_key":
			return 1, true, excludeNone
		case "governance_context":
			return 2, true, excludeNone
		case "context":
			return 4, isObject, excludeNone
		case "push_notification_config":
			return 0, false, excludePush
		}
	case excludePush:
		if string(name) == "authentication" {
			return 0, false, excludePushAuth
		}
	case excludePushAuth:
		if string(name) == "credentials" {
			return 8, true, excludeNone
		}
	}
	return 0, false, excludeNone
}

func (c *canon) sortMembers(start, base, openAt int) error {
	ms := c.members[base:]
	slices.SortFunc(ms, func(a, b member) int {
		return compareUTF16(c.keys[a.keyStart:a.keyEnd], c.keys[b.keyStart:b.keyEnd])
	})
	for i := 1; i < len(ms); i++ {
		if bytes.Equal(c.keys[ms[i-1].keyStart:ms[i-1].keyEnd], c.keys[ms[i].keyStart:ms[i].keyEnd]) {
			return c.fail("duplicate member name in object at offset %d", openAt)
		}
	}
	s := append(c.scratch[:0], '{')
	for i, m := range ms {
		if i > 0 {
			s = append(s, ',')
		}
		s = append(s, c.out[m.start:m.end]...)
	}
	c.out = append(c.out[:start], s...)
	c.scratch = s
	return nil
}

// compareUTF16 orders two UTF-8 names by their UTF-16 code units, as RFC 8785
// requires. Byte order agrees with that except where a character beyond the
// BMP meets one in U+E000..U+FFFF, so only the first differing character is
// decoded.
func compareUTF16(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == n {
		return len(a) - len(b)
	}
	if a[i] < utf8.RuneSelf && b[i] < utf8.RuneSelf {
		return int(a[i]) - int(b[i])
	}
	for i > 0 && !utf8.RuneStart(a[i]) {
		i--
	}
	ra, _ := utf8.DecodeRune(a[i:])
	rb, _ := utf8.DecodeRune(b[i:])
	return int(firstUnit(ra)) - int(firstUnit(rb))
}

// firstUnit maps r to a number that orders runes as their UTF-16 encodings
// do: the first code unit, shifted, with the low surrogate's bits beneath it
// for supplementary characters.
func firstUnit(r rune) rune {
	if r < 0x10000 {
		return r << 10
	}
	hi, lo := utf16.EncodeRune(r)
	return hi<<10 | (lo - 0xDC00)
}

// key decodes a member name into c.keys and writes it, re-escaped, to c.out.
func (c *canon) key() error {
	outStart := len(c.out)
	if err := c.string(); err != nil {
		return err
	}
	// The canonical string is the name with minimal escapes; undo them for
	// sorting. Only '"', '\\' and control characters are escaped.
	s := c.out[outStart+1 : len(c.out)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		c.keys = append(c.keys, s...)
		return nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			c.keys = append(c.keys, s[i])
			continue
		}
		i++
		switch s[i] {
		case 'b':
			c.keys = append(c.keys, '\b')
		case 'f':
			c.keys = append(c.keys, '\f')
		case 'n':
			c.keys = append(c.keys, '\n')
		case 'r':
			c.keys = append(c.keys, '\r')
		case 't':
			c.keys = append(c.keys, '\t')
		case 'u':
			v, _ := strconv.ParseUint(string(s[i+1:i+5]), 16, 8)
			c.keys = append(c.keys, byte(v))
			i += 4
		default: // '"' or '\\'
			c.keys = append(c.keys, s[i])
		}
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// string reads a JSON string and writes it in canonical form: literal UTF-8
// except '"', '\\' and control characters, which get the short escape or
// \u00xx.
func (c *canon) string() error {
	open := c.pos
	c.pos++ // "
	c.out = append(c.out, '"')
	in := c.in
	for {
		// Copy the longest run of bytes that need no attention.
		run := c.pos
		for run < len(in) {
			b := in[run]
			if b < 0x20 || b == '"' || b == '\\' || b >= utf8.RuneSelf {
				break
			}
			run++
		}
		c.out = append(c.out, in[c.pos:run]...)
		c.pos = run
		if c.pos >= len(in) {
			return c.fail("unterminated string starting at offset %d", open)
		}
		switch b := in[c.pos]; {
		case b == '"':
			c.pos++
			c.out = append(c.out, '"')
			return nil
		case b < 0x20:
			return c.fail("control character in string at offset %d", c.pos)
		case b >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(in[c.pos:])
			if r == utf8.RuneError && size <= 1 {
				return c.fail("invalid UTF-8 in string at offset %d", c.pos)
			}
			c.out = append(c.out, in[c.pos:c.pos+size]...)
			c.pos += size
		default: // backslash
			if err := c.escape(); err != nil {
				return err
			}
		}
	}
}

func (c *canon) escape() error {
	at := c.pos
	if c.pos+1 >= len(c.in) {
		return c.fail("unterminated escape at offset %d", at)
	}
	e := c.in[c.pos+1]
	c.pos += 2
	var r rune
	switch e {
	case '"', '\\', '/':
		r = rune(e)
	case 'b':
		r = '\b'
	case 'f':
		r = '\f'
	case 'n':
		r = '\n'
	case 'r':
		r = '\r'
	case 't':
		r = '\t'
	case 'u':
		u, ok := c.hex4()
		if !ok {
			return c.fail("invalid \\u escape at offset %d", at)
		}
		r = rune(u)
		if utf16.IsSurrogate(r) {
			if r >= 0xDC00 || c.pos+1 >= len(c.in) || c.in[c.pos] != '\\' || c.in[c.pos+1] != 'u' {
				return c.fail("lone surrogate in string at offset %d", at)
			}
			c.pos += 2
			lo, ok := c.hex4()
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return c.fail("lone surrogate in string at offset %d", at)
			}
			r = utf16.DecodeRune(r, rune(lo))
		}
	default:
		return c.fail("invalid escape at offset %d", at)
	}
	c.appendRune(r)
	return nil
}

func (c *canon) hex4() (uint16, bool) {
	if c.pos+4 > len(c.in) {
		return 0, false
	}
	var v uint16
	for _, b := range c.in[c.pos : c.pos+4] {
		switch {
		case b >= '0' && b <= '9':
			b -= '0'
		case b >= 'a' && b <= 'f':
			b -= 'a' - 10
		case b >= 'A' && b <= 'F':
			b -= 'A' - 10
		default:
			return 0, false
		}
		v = v<<4 | uint16(b)
	}
	c.pos += 4
	return v, true
}

func (c *canon) appendRune(r rune) {
	switch r {
	case '"':
		c.out = append(c.out, '\\', '"')
	case '\\':
		c.out = append(c.out, '\\', '\\')
	case '\b':
		c.out = append(c.out, '\\', 'b')
	case '\f':
		c.out = append(c.out, '\\', 'f')
	case '\n':
		c.out = append(c.out, '\\', 'n')
	case '\r':
		c.out = append(c.out, '\\', 'r')
	case '\t':
		c.out = append(c.out, '\\', 't')
	default:
		if r < 0x20 {
			c.out = append(c.out, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
		} else {
			c.out = utf8.AppendRune(c.out, r)
		}
	}
}

// number reads a JSON number and writes it as ECMAScript's Number::toString
// would, which is what RFC 8785 prescribes.
func (c *canon) number() error {
	start := c.pos
	in := c.in
	p := c.pos
	if in[p] == '-' {
		p++
	}
	intStart := p
	switch {
	case p < len(in) && in[p] == '0':
		p++
	case p < len(in) && in[p] >= '1' && in[p] <= '9':
		for p < len(in) && in[p] >= '0' && in[p] <= '9' {
			p++
		}
	default:
		return c.fail("invalid number at offset %d", start)
	}
	integer := true
	if p < len(in) && in[p] == '.' {
		integer = false
		p++
		d := p
		for p < len(in) && in[p] >= '0' && in[p] <= '9' {
			p++
		}
		if p == d {
			return c.fail("invalid number at offset %d", start)
		}
	}
	if p < len(in) && (in[p] == 'e' || in[p] == 'E') {
		integer = false
		p++
		if p < len(in) && (in[p] == '+' || in[p] == '-') {
			p++
		}
		d := p
		for p < len(in) && in[p] >= '0' && in[p] <= '9' {
			p++
		}
		if p == d {
			return c.fail("invalid number at offset %d", start)
		}
	}
	c.pos = p
	text := in[start:p]
	// Fast path: integers of up to 15 digits are exact in float64 and already
	// canonical, except for negative zero.
	if integer && p-intStart <= 15 {
		if p-intStart == 1 && in[intStart] == '0' {
			c.out = append(c.out, '0')
		} else {
			c.out = append(c.out, text...)
		}
		return nil
	}
	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
		return c.fail("number out of range at offset %d", start)
	}
	c.out = appendES6Number(c.out, f)
	return nil
}

// appendES6Number formats f as ECMAScript's Number::toString (ECMA-262,
// 7.1.12.1): the shortest digits that round-trip, in fixed notation for
// 1e-7 <= |f| < 1e21 and exponential notation otherwise.
func appendES6Number(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // also for -0
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // d[.ddd]e±xx
	mark := bytes.IndexByte(e, 'e')
	exp, _ := strconv.Atoi(string(e[mark+1:]))
	var digits [24]byte
	k := 0
	for _, b := range e[:mark] {
		if b != '.' {
			digits[k] = b
			k++
		}
	}
	d := digits[:k]
	n := exp + 1 // f = 0.d × 10^n
	switch {
	case k <= n && n <= 21:
		dst = append(dst, d...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, d[:n]...)
		dst = append(dst, '.')
		dst = append(dst, d[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, d...)
	default:
		dst = append(dst, d[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}
