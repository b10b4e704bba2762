package httpsig

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Punycode (RFC 3492) parameters.
const (
	pcBase        = 36
	pcTMin        = 1
	pcTMax        = 26
	pcSkew        = 38
	pcDamp        = 700
	pcInitialBias = 72
	pcInitialN    = 128
)

func pcAdapt(delta, numPoints int, first bool) int {
	if first {
		delta /= pcDamp
	} else {
		delta /= 2
	}
	delta += delta / numPoints
	k := 0
	for delta > ((pcBase-pcTMin)*pcTMax)/2 {
		delta /= pcBase - pcTMin
		k += pcBase
	}
	return k + (pcBase-pcTMin+1)*delta/(delta+pcSkew)
}

func pcDigit(d int) byte {
	if d < 26 {
		return byte('a' + d)
	}
	return byte('0' + d - 26)
}

// punycodeEncode implements the RFC 3492 §6.3 encoding procedure.
func punycodeEncode(label string) (string, error) {
	runes := []rune(label)
	var out strings.Builder
	basic := 0
	for _, r := range runes {
		if r < 0x80 {
			out.WriteByte(byte(r))
			basic++
		}
	}
	h := basic
	if basic > 0 {
		out.WriteByte('-')
	}
	n, delta, bias := pcInitialN, 0, pcInitialBias
	for h < len(runes) {
		m := int(unicode.MaxRune) + 1
		for _, r := range runes {
			if int(r) >= n && int(r) < m {
				m = int(r)
			}
		}
		if (m - n) > (1<<31-1-delta)/(h+1) {
			return "", errors.New("punycode overflow")
		}
		delta += (m - n) * (h + 1)
		n = m
		for _, r := range runes {
			if int(r) < n {
				delta++
			}
			if int(r) == n {
				q := delta
				for k := pcBase; ; k += pcBase {
					t := k - bias
					if t < pcTMin {
						t = pcTMin
					} else if t > pcTMax {
						t = pcTMax
					}
					if q < t {
						break
					}
					out.WriteByte(pcDigit(t + (q-t)%(pcBase-t)))
					q = (q - t) / (pcBase - t)
				}
				out.WriteByte(pcDigit(q))
				bias = pcAdapt(delta, h+1, h == basic)
				delta = 0
				h++
			}
		}
		delta++
		n++
	}
	return out.String(), nil
}

// idnaLabelToASCII converts one non-ASCII DNS label to its A-label.
//
// This is the subset of UTS-46 Nontransitional processing that the standard
// library can express: labels are lower-cased with Unicode case mapping
// (which covers the UTS-46 mapping of letters, e.g. "BÜCHER" → "bücher"),
// restricted to letters, combining marks, digits and hyphen, must not
// start with a combining mark, and are then Punycode-encoded. Input must
// already be in NFC; compatibility characters that UTS-46 would fold via
// NFKC are rejected rather than silently mapped differently.
func idnaLabelToASCII(label string) (string, error) {
	if !utf8.ValidString(label) {
		return "", errors.New("invalid UTF-8 in host")
	}
	lower := strings.ToLower(label)
	for i, r := range lower {
		switch {
		case r == '-' || (r < 0x80 && (isLCAlpha(byte(r)) || isDigit(byte(r)))):
		case r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			if unicode.Is(unicode.Lt, r) || unicode.Is(unicode.Lu, r) {
				return "", errors.New("host label has no lower-case mapping")
			}
		case r >= 0x80 && unicode.IsMark(r):
			if i == 0 {
				return "", errors.New("host label starts with a combining mark")
			}
		default:
			return "", errors.New("character not permitted in a host name")
		}
	}
	enc, err := punycodeEncode(lower)
	if err != nil {
		return "", err
	}
	return "xn--" + enc, nil
}
