package httpsig_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/httpsig"
	"github.com/adcp-go/idempotency/httpsig/httpsigtest"
)

// policyCase is one entry of body-integrity-policy.json. Unknown members
// fail the test, so a spec drop that adds a new fact forces the harness to
// learn it instead of silently ignoring it.
type policyCase struct {
	ID                          string               `json:"id"`
	EndpointProfile             string               `json:"endpoint_profile"`
	Mode                        string               `json:"mode"`
	LegacyDigestPolicy          httpsig.DigestPolicy `json:"legacy_digest_policy"`
	RequestBodyAdCPVersion      string               `json:"request_body_adcp_version"`
	SignatureHeaderState        string               `json:"signature_header_state"`
	HasBody                     bool                 `json:"has_body"`
	SignaturePresent            bool                 `json:"signature_present"`
	CoversContentDigest         *bool                `json:"covers_content_digest"`
	DigestMatchesBody           *bool                `json:"digest_matches_body"`
	CryptographicSignatureValid *bool                `json:"cryptographic_signature_valid"`
	FallbackAuthValid           bool                 `json:"fallback_auth_valid"`
	Expected                    struct {
		Action                 string `json:"action"`
		ErrorCode              string `json:"error_code"`
		AuthenticationSource   string `json:"authentication_source"`
		VerifiedSignerIdentity bool   `json:"verified_signer_identity"`
	} `json:"expected"`
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

func TestBodyIntegrityPolicyVectors(t *testing.T) {
	dir := filepath.Join(specDir(t), "test-vectors", "request-signing")
	var doc struct {
		ProfileVersion string            `json:"profile_version"`
		SpecReference  string            `json:"spec_reference"`
		Description    string            `json:"description"`
		Cases          []json.RawMessage `json:"cases"`
	}
	httpsigtest.ReadJSON(t, filepath.Join(dir, "body-integrity-policy.json"), &doc)
	if len(doc.Cases) == 0 {
		t.Fatal("no body-integrity cases")
	}
	keys := httpsigtest.LoadKeys(t, filepath.Join(dir, "keys.json"))
	key := keys["test-ed25519-2026"]
	now := time.Unix(1776520800, 0)

	pass := 0
	for _, raw := range doc.Cases {
		var c policyCase
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("case %s: %v", raw, err)
		}
		ok := t.Run(c.ID, func(t *testing.T) {
			profile := map[string]httpsig.Profile{"3.2": httpsig.ProfileRequest, "3.1": httpsig.ProfileRequestLegacy, "3.0": httpsig.ProfileRequestLegacy}[c.EndpointProfile]
			if profile == 0 {
				t.Fatalf("unknown endpoint_profile %q", c.EndpointProfile)
			}
			mode, known := map[string]httpsig.Mode{
				"supported_for": httpsig.ModeOptional, "protocol_methods_supported_for": httpsig.ModeOptional,
				"warn_for": httpsig.ModeWarn, "protocol_methods_warn_for": httpsig.ModeWarn,
				"required_for": httpsig.ModeRequired, "protocol_methods_required_for": httpsig.ModeRequired,
			}[c.Mode]
			if !known {
				t.Fatalf("unknown mode %q", c.Mode)
			}

			var body []byte
			if c.HasBody {
				body = []byte(`{"plan_id":"plan_001"}`)
				if c.RequestBodyAdCPVersion != "" {
					body = []byte(`{"adcp_version":"` + c.RequestBodyAdCPVersion + `","plan_id":"plan_001"}`)
				}
			}
			r, err := http.NewRequest(http.MethodPost, "https://seller.example.com/adcp/create_media_buy", nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.HasBody {
				r.Header.Set("Content-Type", "application/json")
			}
			received := body

			if c.SignaturePresent {
				s, err := httpsig.NewSigner(profile, key.Kid, key.Signer(t))
				if err != nil {
					t.Fatal(err)
				}
				s.Now = func() time.Time { return now }
				covers := boolOr(c.CoversContentDigest, true)
				if !covers {
					s.Components = []string{"@method", "@target-uri", "@authority"}
					if c.HasBody {
						s.Components = append(s.Components, "content-type")
					}
				}
				if _, err := s.Sign(r, body); err != nil {
					t.Fatal(err)
				}
				digestOK := boolOr(c.DigestMatchesBody, true)
				cryptoOK := boolOr(c.CryptographicSignatureValid, true)
				substituted := []byte(`{"plan_id":"plan_666"}`)
				switch {
				case covers && !digestOK && cryptoOK:
					received = substituted // body swapped in transit
				case covers && digestOK && !cryptoOK:
					received = substituted // body and digest rewritten
					r.Header.Set("Content-Digest", httpsig.ContentDigest(profile, substituted))
				case covers && !digestOK && !cryptoOK:
					r.Header.Set("Content-Digest", httpsig.ContentDigest(profile, substituted))
				case !cryptoOK:
					r.Header.Set("Signature", "sig1=:"+string(bytes.Repeat([]byte("A"), 86))+"==:")
				}
				if c.SignatureHeaderState == "malformed_pair" {
					r.Header.Del("Signature-Input")
				} else if c.SignatureHeaderState != "" {
					t.Fatalf("unknown signature_header_state %q", c.SignatureHeaderState)
				}
			}

			ver := httpsig.NewVerifier(profile, &httpsig.JWKS{Keys: []httpsig.JWK{key.JWK}})
			ver.Now = func() time.Time { return now }
			ver.LegacyDigestPolicy = c.LegacyDigestPolicy
			_, verr := ver.Verify(context.Background(), r, received)

			d := httpsig.Requirement{Mode: mode, FallbackAuthenticated: c.FallbackAuthValid}.Decide(verr)
			if d.Action.String() != c.Expected.Action {
				t.Fatalf("action %s, want %s (verify: %v)", d.Action, c.Expected.Action, verr)
			}
			if c.Expected.ErrorCode != "" {
				var e *httpsig.Error
				if !errors.As(d.Err, &e) || e.Code != c.Expected.ErrorCode {
					t.Fatalf("error %v, want code %s", d.Err, c.Expected.ErrorCode)
				}
			}
			if c.Expected.AuthenticationSource != "" && d.Source.String() != c.Expected.AuthenticationSource {
				t.Fatalf("source %q, want %q", d.Source, c.Expected.AuthenticationSource)
			}
			if d.VerifiedSigner() != c.Expected.VerifiedSignerIdentity {
				t.Fatalf("verified signer %v, want %v", d.VerifiedSigner(), c.Expected.VerifiedSignerIdentity)
			}
		})
		if ok {
			pass++
		}
	}
	t.Logf("body-integrity-policy.json: %d/%d cases passed", pass, len(doc.Cases))
}

func TestCapabilityModeFor(t *testing.T) {
	c := httpsig.Capability{
		Supported:                  true,
		RequiredFor:                []string{"create_media_buy"},
		WarnFor:                    []string{"update_media_buy"},
		ProtocolMethodsRequiredFor: []string{"tasks/cancel"},
	}
	if err := c.Validate(httpsig.ProfileRequest); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		op   httpsig.Operation
		want httpsig.Mode
	}{
		{httpsig.Operation{Name: "create_media_buy"}, httpsig.ModeRequired},
		{httpsig.Operation{Name: "create_media_buy", Method: "tools/call"}, httpsig.ModeRequired},
		{httpsig.Operation{Name: "update_media_buy"}, httpsig.ModeWarn},
		{httpsig.Operation{Method: "tasks/cancel"}, httpsig.ModeRequired},
		// Namespaces never cross: a tools/call named like a protocol
		// method, or a protocol method named like an operation.
		{httpsig.Operation{Name: "tasks/cancel", Method: "tools/call"}, httpsig.ModeOptional},
		{httpsig.Operation{Name: "create_media_buy", Method: "tasks/get"}, httpsig.ModeOptional},
		{httpsig.Operation{Name: "get_products"}, httpsig.ModeOptional},
	} {
		if got := c.ModeFor(tc.op); got != tc.want {
			t.Errorf("ModeFor(%+v) = %v, want %v", tc.op, got, tc.want)
		}
	}
	bad := []httpsig.Capability{
		{RequiredFor: []string{"tasks/cancel"}},
		{ProtocolMethodsRequiredFor: []string{"create_media_buy"}},
		{CoversContentDigest: "either"},
		{CoversContentDigest: "sometimes"},
	}
	for _, b := range bad {
		if b.Validate(httpsig.ProfileRequest) == nil {
			t.Errorf("Validate(%+v) accepted", b)
		}
	}
}

func TestCarriesWebhookAuthentication(t *testing.T) {
	for body, want := range map[string]bool{
		`{"push_notification_config":{"url":"https://b.example/w","authentication":{"scheme":"HMAC-SHA256"}}}`:                   true,
		`{"push_notification_config":{"url":"https://b.example/w"}}`:                                                             false,
		`{"accounts":[{"notification_configs":[{"url":"u"},{"url":"v","authentication":{"credentials":"x"}}]}]}`:                 true,
		`{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"push_notification_config":{"authentication":{"a":1}}}}}`: true,
		`{"notification_configs":[{"authentication":null}]}`:                                                                     false,
		`not json`: false,
	} {
		if got := httpsig.CarriesWebhookAuthentication([]byte(body)); got != want {
			t.Errorf("%s: got %v, want %v", body, got, want)
		}
	}
}

func TestRequestOperation(t *testing.T) {
	for _, c := range []struct {
		url, body string
		want      httpsig.Operation
	}{
		{"https://s.example/mcp", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_media_buy","arguments":{}}}`, httpsig.Operation{Method: "tools/call", Name: "create_media_buy"}},
		{"https://s.example/mcp", `{"jsonrpc":"2.0","id":1,"method":"tasks/cancel","params":{"name":"create_media_buy"}}`, httpsig.Operation{Method: "tasks/cancel"}},
		{"https://s.example/adcp/update_media_buy?x=1", `{"media_buy_id":"mb_1"}`, httpsig.Operation{Name: "update_media_buy"}},
		{"https://s.example/adcp/sync_creatives", `not json`, httpsig.Operation{Name: "sync_creatives"}},
	} {
		r, err := http.NewRequest(http.MethodPost, c.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := httpsig.RequestOperation(r, []byte(c.body)); got != c.want {
			t.Errorf("%s %s: %+v, want %+v", c.url, c.body, got, c.want)
		}
	}
}
