//go:build compliance

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
)

// The runner's full assessment: `adcp storyboard run URL` with no
// storyboard id, the runner choosing the storyboards from the seller's
// get_adcp_capabilities. Run it with `make assessment` (not part of make
// test or make compliance: it takes minutes); docs/COMPLIANCE.md, "The
// runner's full assessment", has its table and explains every entry of
// allowedFailures.

// allowedFailures are the failed steps, by storyboard id and step id, that
// are not the seller's to fix: a runner bug or limitation, or a storyboard
// sample that contradicts the spec (and the runner's own verifier). Each
// has its evidence in docs/COMPLIANCE.md. Any other failed step fails the
// assessment.
var allowedFailures = map[string]string{
	"signed_requests/negative-007-missing-content-digest":                "runner limitation: the storyboard's probe (request-signing/probe-dispatch.js) passes no agent capability to the grader, so its capability_profile_mismatch skip never fires; 007 needs covers_content_digest 'required', 018 'forbidden' and the positive vectors accept uncovered requests: no one verifier policy passes all three",
	"signed_requests/negative-018-digest-covered-when-forbidden":         "runner limitation: as 007, the other side of the same conflict",
	"signed_requests/negative-025-jwk-alg-crv-mismatch":                  "runner bug: the vector is graded against the runner's own library verifier (grader.js gradeJwksOverrideNegative; no request reaches the seller) with http_status 0, which the step's http_status 401 check then fails",
	"security_baseline/assert_mechanism":                                 "runner limitation: the CLI passes no test kit (bin/adcp.js runFullAssessment), so the api_key phase (skip_if: !test_kit.auth.api_key) never runs, and an API-key-only agent must not fake OAuth metadata (the storyboard's own words)",
	"media_buy_seller/create_media_buy":                                  "storyboard contradicts the spec: an unsigned request registering push_notification_config.authentication must be refused with request_signature_required by a seller that verifies signatures (security.mdx; the runner's own verifier, signing/verifier.js, does the same)",
	"media_buy_seller/create_media_buy_async/create_media_buy_submitted": "storyboard contradicts the spec: as media_buy_seller/create_media_buy",
	"media_buy_seller/creative_fate_after_cancellation/create_buy":       "follows from the refusal above: the submitted arm that create_media_buy_async forced was never taken by its refused create, so the principal's next create takes it, as force_create_media_buy_arm specifies",
	"media_buy_seller/invalid_transitions/update_unknown_package":        "runner inconsistency: an expect_error step is sent as its sample verbatim (runner.js, 'For expect_error steps: sample_request directly'), with the fixture's account acmeoutdoor.example, while the create was routed to the run's sandbox account test.example: the buy is not under the account named",
	"media_buy_state_machine/pause_canceled_buy":                         "runner inconsistency: as media_buy_seller/invalid_transitions/update_unknown_package",
}

// sharedPrincipalFailures are failed steps that come from the full
// assessment running every storyboard under one principal (one token),
// while the storyboard assumes the principal holds only what it set up
// and sends no filter that could narrow a listing to it. Each is allowed
// in the full run only when its storyboard, run alone on a fresh seller,
// passes every step: the test runs it so (docs/COMPLIANCE.md has the
// evidence).
var sharedPrincipalFailures = map[string]string{
	"pagination_integrity_list_accounts/first_page": "the storyboard syncs three accounts and expects list_accounts (no filter in its request) to hold exactly those three (total_count 3, a terminal second page at max_results 2); in the full run the same principal holds the test.example account deterministic_testing synced and the idempotency storyboard bought under, so total_count is 4",
}

// assessmentResult is the part of the runner's --json result the grading
// reads.
type assessmentResult struct {
	Tracks  runnerTracks `json:"tracks"`
	Summary struct {
		StepsPassed  int `json:"steps_passed"`
		StepsFailed  int `json:"steps_failed"`
		StepsSkipped int `json:"steps_skipped"`
	} `json:"summary"`
	Failures []struct {
		StoryboardID string `json:"storyboard_id"`
		StepID       string `json:"step_id"`
		StepTitle    string `json:"step_title"`
		Error        string `json:"error"`
		Validation   *struct {
			Description string `json:"description"`
			Expected    any    `json:"expected"`
			Actual      any    `json:"actual"`
		} `json:"validation"`
	} `json:"failures"`
	StoryboardsExecuted []string `json:"storyboards_executed"`
}

// assessmentRow is one storyboard of the assessment's table.
type assessmentRow struct {
	id                      string
	passed, failed, skipped int
	skips                   []string // the runner's reasons, each once
	failures                []string // step id: why, and whether allowed
	alone                   bool     // counted from a run of this storyboard alone
}

// storyboardOf returns the executed storyboard a scenario belongs to: the
// longest executed id that prefixes "scenario/".
func storyboardOf(executed []string, scenario string) string {
	best := ""
	for _, id := range executed {
		if strings.HasPrefix(scenario, id+"/") && len(id) > len(best) {
			best = id
		}
	}
	return best
}

func parseAssessment(t *testing.T, raw []byte, stderr string, runErr error) assessmentResult {
	t.Helper()
	var res assessmentResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("runner: no result (%v; exit %v): %s", err, runErr, tail(stderr, 2000))
	}
	return res
}

// failureNote describes a failed step in the runner's words and says
// whether it is an allowed (documented) failure.
func failureNote(res assessmentResult, i int) (key, note string, allowed bool) {
	f := res.Failures[i]
	key = f.StoryboardID + "/" + f.StepID
	why := f.Error
	if why == "" && f.Validation != nil {
		why = fmt.Sprintf("%s: expected %v, got %v", f.Validation.Description, f.Validation.Expected, f.Validation.Actual)
	}
	_, allowed = allowedFailures[key]
	if _, shared := sharedPrincipalFailures[key]; shared {
		allowed = true
	}
	return key, tail(why, 300), allowed
}

// TestAssessment runs the runner's full assessment against the seller
// command in memory (-dev, trusting the runner's conformance signing keys
// on the runner's shifted clock) and fails on any failed step not in
// allowedFailures, on any skip without the runner's reason, and when the
// per-storyboard counts do not add up to the runner's totals. It logs the
// table docs/COMPLIANCE.md shows, and writes it and the runner's JSON to
// $ADCP_ASSESSMENT_OUT when set.
func TestAssessment(t *testing.T) {
	sellerArgs := []string{"-tokens", "compliance=" + sellertest.Token, "-dev", "-trust-conformance-keys", "-conformance-clock", runnerNow}
	_, url := sellerProcess(t, sellerArgs...)
	start := time.Now()
	raw, stderr, runErr := runRunner(t, url, "mcp", "", "--timeout", "600")
	res := parseAssessment(t, raw, stderr, runErr)
	took := time.Since(start).Round(time.Second)

	rows := map[string]*assessmentRow{}
	row := func(id string) *assessmentRow {
		if rows[id] == nil {
			rows[id] = &assessmentRow{id: id}
		}
		return rows[id]
	}
	for _, tr := range res.Tracks {
		for _, sc := range tr.Scenarios {
			id := storyboardOf(res.StoryboardsExecuted, sc.Scenario)
			if id == "" {
				t.Errorf("scenario %s: not a storyboard the runner says it executed", sc.Scenario)
				continue
			}
			r := row(id)
			for _, st := range sc.Steps {
				switch {
				case st.Skipped:
					r.skipped++
					why := st.Error
					if why == "" && len(st.Warnings) > 0 {
						why = st.Warnings[0]
					}
					if st.SkipReason == "" {
						t.Errorf("%s: %s: skipped without the runner's reason", sc.Scenario, st.Step)
					}
					why, _, _ = strings.Cut(why, "; agent tools: [") // the same list on every missing_tool
					note := st.SkipReason + ": " + head(why, 240)
					if !slices.Contains(r.skips, note) {
						r.skips = append(r.skips, note)
					}
				case st.Passed:
					r.passed++
				default:
					r.failed++
				}
			}
		}
	}
	// The runner's JSON details only the tracks it knows (comply.js
	// TRACK_ORDER): the security and security_transport storyboards appear
	// in its totals and failures only. Count each from a run of it alone,
	// on a fresh seller (signed_requests fills the replay cache).
	for _, id := range res.StoryboardsExecuted {
		if rows[id] != nil {
			continue
		}
		_, u := sellerProcess(t, sellerArgs...)
		rawAlone, stderrAlone, errAlone := runRunner(t, u, "mcp", "", id, "--timeout", "600")
		alone := parseAssessment(t, rawAlone, stderrAlone, errAlone)
		r := row(id)
		r.alone = true
		r.passed, r.failed, r.skipped = alone.Summary.StepsPassed, alone.Summary.StepsFailed, alone.Summary.StepsSkipped
		for i := range alone.Failures {
			key, _, allowed := failureNote(alone, i)
			if !allowed {
				t.Errorf("%s alone: step failed: %s", id, key)
			}
		}
	}

	var passed, failed, skipped int
	for _, r := range rows {
		passed, failed, skipped = passed+r.passed, failed+r.failed, skipped+r.skipped
	}
	if passed != res.Summary.StepsPassed || failed != res.Summary.StepsFailed || skipped != res.Summary.StepsSkipped {
		t.Errorf("the storyboards add up to %d passed, %d failed, %d skipped; the runner's totals are %d, %d, %d",
			passed, failed, skipped, res.Summary.StepsPassed, res.Summary.StepsFailed, res.Summary.StepsSkipped)
	}
	if len(res.Failures) != res.Summary.StepsFailed {
		t.Errorf("the runner lists %d failures for %d failed steps", len(res.Failures), res.Summary.StepsFailed)
	}
	seen := map[string]bool{}
	for i, f := range res.Failures {
		key, why, allowed := failureNote(res, i)
		seen[key] = true
		if _, shared := sharedPrincipalFailures[key]; shared {
			row(f.StoryboardID).failures = append(row(f.StoryboardID).failures, f.StepID+" (documented: one principal for every storyboard; passes alone)")
			assessAlone(t, sellerArgs, f.StoryboardID)
			continue
		}
		if allowed {
			row(f.StoryboardID).failures = append(row(f.StoryboardID).failures, f.StepID+" (documented: not the seller's to fix)")
			continue
		}
		row(f.StoryboardID).failures = append(row(f.StoryboardID).failures, f.StepID+": "+why)
		t.Errorf("step failed: %s (%s): %s", key, f.StepTitle, why)
	}
	for key := range allowedFailures {
		if !seen[key] {
			t.Logf("allowedFailures[%q] did not fail in this run: remove it if it no longer applies", key)
		}
	}
	if res.Summary.StepsPassed == 0 {
		t.Error("no step passed")
	}

	var md strings.Builder
	fmt.Fprintf(&md, "| storyboard | passed | failed | skipped | the runner's reasons for the skips; the failures |\n| --- | --- | --- | --- | --- |\n")
	for _, id := range res.StoryboardsExecuted {
		r := rows[id]
		if r == nil {
			continue
		}
		notes := append(slices.Clone(r.skips), r.failures...)
		if r.alone {
			notes = append([]string{"counted from a run of this storyboard alone (see below)"}, notes...)
		}
		fmt.Fprintf(&md, "| `%s` | %d | %d | %d | %s |\n", id, r.passed, r.failed, r.skipped,
			strings.ReplaceAll(strings.Join(notes, "<br>"), "|", "\\|"))
	}
	fmt.Fprintf(&md, "| **total** (%d storyboards) | **%d** | **%d** | **%d** | runner %s, %v |\n",
		len(res.StoryboardsExecuted), res.Summary.StepsPassed, res.Summary.StepsFailed, res.Summary.StepsSkipped, time.Now().UTC().Format("2006-01-02"), took)
	t.Logf("the runner's full assessment:\n%s", md.String())
	if out := os.Getenv("ADCP_ASSESSMENT_OUT"); out != "" {
		if err := os.MkdirAll(out, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"assessment.json": raw, "assessment.md": []byte(md.String())} {
			if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// assessAlone runs storyboard id alone against a fresh seller and fails
// the test unless every step passes (skips allowed) and at least one runs.
func assessAlone(t *testing.T, sellerArgs []string, id string) {
	t.Helper()
	_, u := sellerProcess(t, sellerArgs...)
	raw, stderr, err := runRunner(t, u, "mcp", "", id, "--timeout", "600")
	alone := parseAssessment(t, raw, stderr, err)
	if alone.Summary.StepsFailed != 0 || alone.Summary.StepsPassed == 0 {
		t.Errorf("%s alone on a fresh seller: %d passed, %d failed: a failure allowed only in the full run must pass alone", id, alone.Summary.StepsPassed, alone.Summary.StepsFailed)
		return
	}
	t.Logf("%s alone on a fresh seller: %d passed, %d failed, %d skipped", id, alone.Summary.StepsPassed, alone.Summary.StepsFailed, alone.Summary.StepsSkipped)
}

func head(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
