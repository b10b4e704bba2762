package httpsig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/dunglas/httpsfv"
)

// This file is a strict RFC 8941 Dictionary parser. It follows the parsing
// algorithms of RFC 8941 §4.2 step by step, with three deliberate
// restrictions for the AdCP profile:
//
//   - duplicate dictionary keys and duplicate parameter keys are rejected
//     (RFC 8941 permits "last wins"; the profile forbids it because a
//     proxy could otherwise smuggle a second label or a second tag);
//   - byte sequences are decoded with the alphabet the profile selects
//     (binaryMode), so legacy Base64URL and RFC 8941 Base64 never mix;
//   - only the RFC 8941 bare-item types are accepted (no RFC 9651 dates or
//     display strings).
//
// Parsed values are returned as github.com/dunglas/httpsfv types, whose
// serializer produces the canonical form used in signature bases.

var errSFV = errors.New("malformed structured field")

type sfParser struct {
	s   string
	off int
	bin binaryMode
}

func sfErr(p *sfParser, msg string) error {
	return fmt.Errorf("%w: %s at offset %d", errSFV, msg, p.off)
}

// parseDictionary parses the combined field lines of a Dictionary field.
func parseDictionary(lines []string, bin binaryMode) (*httpsfv.Dictionary, error) {
	in := strings.Join(lines, ", ")
	for i := 0; i < len(in); i++ {
		if (in[i] < 0x20 && in[i] != '\t') || in[i] > 0x7e {
			return nil, fmt.Errorf("%w: non-printable or non-ASCII byte", errSFV)
		}
	}
	p := &sfParser{s: in, bin: bin}
	p.skipSP()
	d, err := p.dictionary()
	if err != nil {
		return nil, err
	}
	p.skipSP()
	if !p.eof() {
		return nil, sfErr(p, "trailing characters")
	}
	return d, nil
}

func (p *sfParser) eof() bool  { return p.off >= len(p.s) }
func (p *sfParser) peek() byte { return p.s[p.off] }

func (p *sfParser) skipSP() {
	for !p.eof() && p.peek() == ' ' {
		p.off++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.off++
	}
}

// RFC 8941 §4.2.2.
func (p *sfParser) dictionary() (*httpsfv.Dictionary, error) {
	d := httpsfv.NewDictionary()
	for !p.eof() {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		if _, dup := d.Get(key); dup {
			return nil, sfErr(p, "duplicate dictionary key "+strconv.Quote(key))
		}
		var m httpsfv.Member
		if !p.eof() && p.peek() == '=' {
			p.off++
			m, err = p.itemOrInnerList()
		} else {
			var params *httpsfv.Params
			params, err = p.params()
			m = httpsfv.Item{Value: true, Params: params}
		}
		if err != nil {
			return nil, err
		}
		d.Add(key, m)
		p.skipOWS()
		if p.eof() {
			return d, nil
		}
		if p.peek() != ',' {
			return nil, sfErr(p, "expected ','")
		}
		p.off++
		p.skipOWS()
		if p.eof() {
			return nil, sfErr(p, "trailing ','")
		}
	}
	return d, nil
}

// RFC 8941 §4.2.1.1.
func (p *sfParser) itemOrInnerList() (httpsfv.Member, error) {
	if !p.eof() && p.peek() == '(' {
		return p.innerList()
	}
	return p.item()
}

// RFC 8941 §4.2.1.2.
func (p *sfParser) innerList() (httpsfv.InnerList, error) {
	p.off++ // '('
	var items []httpsfv.Item
	for !p.eof() {
		p.skipSP()
		if p.eof() {
			break
		}
		if p.peek() == ')' {
			p.off++
			params, err := p.params()
			if err != nil {
				return httpsfv.InnerList{}, err
			}
			return httpsfv.InnerList{Items: items, Params: params}, nil
		}
		it, err := p.item()
		if err != nil {
			return httpsfv.InnerList{}, err
		}
		items = append(items, it)
		if p.eof() || (p.peek() != ' ' && p.peek() != ')') {
			return httpsfv.InnerList{}, sfErr(p, "expected ' ' or ')' in inner list")
		}
	}
	return httpsfv.InnerList{}, sfErr(p, "unterminated inner list")
}

// RFC 8941 §4.2.3.
func (p *sfParser) item() (httpsfv.Item, error) {
	v, err := p.bareItem()
	if err != nil {
		return httpsfv.Item{}, err
	}
	params, err := p.params()
	if err != nil {
		return httpsfv.Item{}, err
	}
	return httpsfv.Item{Value: v, Params: params}, nil
}

// RFC 8941 §4.2.3.2.
func (p *sfParser) params() (*httpsfv.Params, error) {
	params := httpsfv.NewParams()
	for !p.eof() && p.peek() == ';' {
		p.off++
		p.skipSP()
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		if _, dup := params.Get(key); dup {
			return nil, sfErr(p, "duplicate parameter "+strconv.Quote(key))
		}
		var v any = true
		if !p.eof() && p.peek() == '=' {
			p.off++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
		}
		params.Add(key, v)
	}
	return params, nil
}

// RFC 8941 §4.2.3.3.
func (p *sfParser) key() (string, error) {
	if p.eof() || !(isLCAlpha(p.peek()) || p.peek() == '*') {
		return "", sfErr(p, "invalid key")
	}
	start := p.off
	for !p.eof() {
		c := p.peek()
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.off++
	}
	return p.s[start:p.off], nil
}

// RFC 8941 §4.2.3.1.
func (p *sfParser) bareItem() (any, error) {
	if p.eof() {
		return nil, sfErr(p, "missing bare item")
	}
	switch c := p.peek(); {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		return p.token(), nil
	case c == ':':
		return p.binary()
	case c == '?':
		return p.boolean()
	}
	return nil, sfErr(p, "unrecognised bare item")
}

// RFC 8941 §4.2.4.
func (p *sfParser) number() (any, error) {
	decimal := false
	neg := false
	if p.peek() == '-' {
		neg = true
		p.off++
	}
	if p.eof() || !isDigit(p.peek()) {
		return nil, sfErr(p, "number without digits")
	}
	start := p.off
	intDigits := 0
	for !p.eof() {
		c := p.peek()
		if isDigit(c) {
			p.off++
		} else if !decimal && c == '.' {
			if p.off-start > 12 {
				return nil, sfErr(p, "decimal integer part too long")
			}
			intDigits = p.off - start
			decimal = true
			p.off++
		} else {
			break
		}
		if !decimal && p.off-start > 15 {
			return nil, sfErr(p, "integer too long")
		}
		if decimal && p.off-start > 16 {
			return nil, sfErr(p, "decimal too long")
		}
	}
	num := p.s[start:p.off]
	if !decimal {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return nil, sfErr(p, "invalid integer")
		}
		if neg {
			n = -n
		}
		return n, nil
	}
	if num[len(num)-1] == '.' {
		return nil, sfErr(p, "decimal ends with '.'")
	}
	if len(num)-intDigits-1 > 3 {
		return nil, sfErr(p, "decimal fraction too long")
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return nil, sfErr(p, "invalid decimal")
	}
	if neg {
		f = -f
	}
	return f, nil
}

// RFC 8941 §4.2.5.
func (p *sfParser) str() (string, error) {
	p.off++ // '"'
	var b strings.Builder
	for !p.eof() {
		c := p.peek()
		p.off++
		switch {
		case c == '\\':
			if p.eof() {
				return "", sfErr(p, "unterminated escape")
			}
			n := p.peek()
			if n != '"' && n != '\\' {
				return "", sfErr(p, "invalid escape")
			}
			p.off++
			b.WriteByte(n)
		case c == '"':
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", sfErr(p, "invalid string character")
		default:
			b.WriteByte(c)
		}
	}
	return "", sfErr(p, "unterminated string")
}

// RFC 8941 §4.2.6.
func (p *sfParser) token() httpsfv.Token {
	start := p.off
	p.off++
	for !p.eof() && (isTChar(p.peek()) || p.peek() == ':' || p.peek() == '/') {
		p.off++
	}
	return httpsfv.Token(p.s[start:p.off])
}

// RFC 8941 §4.2.7, with the profile's alphabet.
func (p *sfParser) binary() ([]byte, error) {
	p.off++ // ':'
	start := p.off
	for !p.eof() && p.peek() != ':' {
		p.off++
	}
	if p.eof() {
		return nil, sfErr(p, "unterminated byte sequence")
	}
	raw := p.s[start:p.off]
	p.off++
	b, err := decodeBinary(raw, p.bin)
	if err != nil {
		return nil, sfErr(p, err.Error())
	}
	return b, nil
}

// RFC 8941 §4.2.8.
func (p *sfParser) boolean() (bool, error) {
	p.off++ // '?'
	if !p.eof() {
		switch p.peek() {
		case '0':
			p.off++
			return false, nil
		case '1':
			p.off++
			return true, nil
		}
	}
	return false, sfErr(p, "invalid boolean")
}

// decodeBinary decodes the content of a byte sequence. Non-zero pad bits
// are tolerated, as RFC 8941 §4.2.7 recommends; the alphabet and the
// padding rule are not.
func decodeBinary(raw string, mode binaryMode) ([]byte, error) {
	std, url := false, false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case isAlpha(c) || isDigit(c):
		case c == '+' || c == '/' || c == '=':
			std = true
		case c == '-' || c == '_':
			url = true
		default:
			return nil, errors.New("invalid base64 character")
		}
	}
	if std && url {
		return nil, errors.New("base64 alphabets mixed")
	}
	useURL := false
	switch mode {
	case binStd:
		if url {
			return nil, errors.New("base64url alphabet in sf-binary")
		}
	case binURL:
		if std {
			return nil, errors.New("standard base64 alphabet or padding in legacy base64url value")
		}
		useURL = true
	case binEither:
		// An unmarked value is read as unpadded Base64URL unless its
		// length says it is padded Base64; both readings agree on the
		// bytes whenever both succeed.
		useURL = url || (!std && len(raw)%4 != 0)
	}
	if useURL {
		return base64.RawURLEncoding.DecodeString(raw)
	}
	return base64.StdEncoding.DecodeString(raw)
}

func encodeBinary(b []byte, mode binaryMode) string {
	if mode == binURL {
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

// isTChar reports whether c is an RFC 9110 tchar.
func isTChar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
