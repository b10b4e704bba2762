package adcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"unicode/utf8"

	"github.com/adcp-go/idempotency/idem"
)

// Arguments are a task's arguments with the members this package reads
// itself.
type Arguments struct {
	// Raw is the whole arguments object, as received.
	Raw json.RawMessage
	// Key is the idempotency_key member as sent, nil when absent.
	Key json.RawMessage
	// Context is the context member as sent, nil when absent.
	Context json.RawMessage
	// Account is the account member as sent, nil when absent.
	Account json.RawMessage
	// AdcpVersion and AdcpMajorVersion are the version pins as sent.
	AdcpVersion, AdcpMajorVersion json.RawMessage
}

// ParseArguments reads a task's arguments: a JSON object (empty input or null means
// {}). The members this package reads are matched by their exact names, as
// the canonical hash's exclusion list matches them (encoding/json would also
// take "IDEMPOTENCY_KEY" for a struct field); the members are slices of raw,
// not copies. Anything but an object is INVALID_REQUEST.
func ParseArguments(raw json.RawMessage) (Arguments, error) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		raw = json.RawMessage(`{}`) // no arguments
	}
	a := Arguments{Raw: raw}
	isObject := members(raw, func(name, value []byte) bool {
		switch string(name) { // a duplicate member: the last one counts, as in a map
		case "idempotency_key":
			a.Key = value
		case "context":
			a.Context = value
		case "account":
			a.Account = value
		case "adcp_version":
			a.AdcpVersion = value
		case "adcp_major_version":
			a.AdcpMajorVersion = value
		}
		return true
	})
	if !isObject {
		return Arguments{}, &Error{Code: "INVALID_REQUEST", Message: "task arguments must be a JSON object", Recovery: "correctable"}
	}
	return a, nil
}

// IdempotencyKey returns the validated idempotency_key, or an idem error
// (INVALID_REQUEST, field idempotency_key) saying what is wrong without
// echoing it.
func (a Arguments) IdempotencyKey() (string, error) {
	if !a.HasKey() {
		return "", idem.ValidateKey("")
	}
	key, plain := plainString(a.Key)
	if !plain {
		if err := json.Unmarshal(a.Key, &key); err != nil {
			return "", idem.NewError(idem.ErrInvalidKey, "idempotency_key must be a string")
		}
	}
	if err := idem.ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// plainString returns the JSON string raw decodes to when it is written
// without escapes (every valid key is): its bytes between the quotes, valid
// UTF-8 and no control character. Otherwise it returns false, for
// encoding/json to decode.
func plainString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	s := raw[1 : len(raw)-1]
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(s) {
		return "", false
	}
	return string(s), true
}

// HasKey reports whether the arguments carry an idempotency_key (null
// counts as none).
func (a Arguments) HasKey() bool { return len(a.Key) > 0 && string(a.Key) != "null" }

// Version is an AdCP release (VERSION.RELEASE).
type Version struct{ Major, Minor int }

// The releases this library implements.
var (
	V3_0 = Version{3, 0}
	V3_1 = Version{3, 1}
	V3_2 = Version{3, 2}
	// Latest is the newest release this library implements, served to a
	// request that pins none.
	Latest = V3_2
	// SupportedVersions are the releases this library implements, oldest
	// first: the value of adcp.supported_versions in capabilities.
	SupportedVersions = []Version{V3_0, V3_1, V3_2}
)

// String is the release-precision form, "3.2".
func (v Version) String() string { return strconv.Itoa(v.Major) + "." + strconv.Itoa(v.Minor) }

// MarshalJSON encodes the release-precision string.
func (v Version) MarshalJSON() ([]byte, error) { return json.Marshal(v.String()) }

// AtLeast reports whether v is release o or later.
func (v Version) AtLeast(o Version) bool {
	return v.Major > o.Major || v.Major == o.Major && v.Minor >= o.Minor
}

var versionPattern = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)?$`)

// Version negotiates the release to serve: the adcp_version pin, or the
// newest supported release below it within its major; with only the
// deprecated adcp_major_version (a client of AdCP 3.0, which had no
// adcp_version), 3.0; with neither, [Latest]. Another major, or a malformed
// pin, is VERSION_UNSUPPORTED with the supported versions in its details.
func (a Arguments) Version() (Version, error) {
	if len(a.AdcpVersion) > 0 && string(a.AdcpVersion) != "null" {
		var s string
		m := []string(nil)
		if json.Unmarshal(a.AdcpVersion, &s) == nil {
			m = versionPattern.FindStringSubmatch(s)
		}
		if m == nil {
			return Version{}, unsupported("adcp_version must be a release such as \"3.2\"")
		}
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		pin := Version{major, minor}
		best, ok := Version{}, false
		for _, v := range SupportedVersions {
			if v.Major == pin.Major && pin.AtLeast(v) {
				best, ok = v, true
			}
		}
		if !ok {
			return Version{}, unsupported(fmt.Sprintf("AdCP %s is not supported", pin))
		}
		return best, nil
	}
	if len(a.AdcpMajorVersion) > 0 && string(a.AdcpMajorVersion) != "null" {
		var major int
		if json.Unmarshal(a.AdcpMajorVersion, &major) != nil || major != 3 {
			return Version{}, unsupported("adcp_major_version must be 3")
		}
		return V3_0, nil
	}
	return Latest, nil
}

func unsupported(msg string) *Error {
	versions := make([]string, len(SupportedVersions))
	for i, v := range SupportedVersions {
		versions[i] = v.String()
	}
	return &Error{Code: "VERSION_UNSUPPORTED", Message: msg, Recovery: "correctable",
		Details: map[string]any{"supported_versions": versions, "supported_majors": []int{3}}}
}

// ScopeAccount returns the account that scopes a request's key: "" when
// salt is nil or v is AdCP 3.0 (scoped by principal alone), the account_id
// when the account names one, and for a natural-key account ({brand,
// operator}) idem.AccountScope of it with salt. A request without an
// account is scoped by principal alone.
func (a Arguments) ScopeAccount(salt []byte, v Version) (string, error) {
	if salt == nil || !v.AtLeast(V3_1) || len(a.Account) == 0 || string(a.Account) == "null" {
		return "", nil
	}
	var acct struct {
		AccountID *string `json:"account_id"`
	}
	if err := json.Unmarshal(a.Account, &acct); err != nil {
		return "", &Error{Code: "INVALID_REQUEST", Message: "account must be an object", Recovery: "correctable", Field: "account"}
	}
	if acct.AccountID != nil {
		if *acct.AccountID == "" {
			return "", &Error{Code: "INVALID_REQUEST", Message: "account.account_id must not be empty", Recovery: "correctable", Field: "account.account_id"}
		}
		return "id:" + *acct.AccountID, nil
	}
	scope, err := idem.AccountScope(salt, a.Account)
	if err != nil {
		return "", &Error{Code: "INVALID_REQUEST", Message: "account is not a valid natural key", Recovery: "correctable", Field: "account"}
	}
	return scope, nil
}
