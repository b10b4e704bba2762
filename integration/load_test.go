package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
)

// cmd/adcp-load, the load generator of docs/BENCHMARKS.md's A2A vs MCP
// section, against the seller command in memory: a short run of every
// transport and mode measures requests and reports no error (each answer
// is checked: a fresh media buy, or the primed one replayed).
func TestLoadGenerator(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "adcp-load")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/adcp-go/idempotency/cmd/adcp-load").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	_, url := sellerProcess(t, "-tokens", "load="+sellertest.Token, "-dev", "-insert-rate", "0", "-log-level", "warn")
	cmd := exec.Command(bin, "-url", strings.TrimSuffix(url, "/mcp"), "-token", sellertest.Token,
		"-transport", "mcp,a2a", "-mode", "fresh,replay", "-concurrency", "2", "-duration", "500ms", "-warmup", "0", "-json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("adcp-load: %v: %s", err, out)
	}
	var res struct {
		Results []struct {
			Transport, Mode  string
			Requests, Errors int
			RPS              float64 `json:"rps"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("adcp-load -json: %v: %s", err, out)
	}
	seen := map[string]bool{}
	for _, r := range res.Results {
		seen[r.Transport+"/"+r.Mode] = true
		if r.Requests == 0 || r.Errors != 0 || r.RPS <= 0 {
			t.Errorf("%s %s: %d requests, %d errors, %v req/s", r.Transport, r.Mode, r.Requests, r.Errors, r.RPS)
		}
	}
	if len(seen) != 4 {
		t.Fatalf("phases %v, want mcp and a2a, fresh and replay: %s", seen, out)
	}

	// A load against the wrong token is all errors, and says so.
	bad := exec.Command(bin, "-url", strings.TrimSuffix(url, "/mcp"), "-token", "sk_wrong_0123456789abcdef",
		"-transport", "a2a", "-mode", "fresh", "-duration", "200ms", "-warmup", "0")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "HTTP 401") {
		t.Fatalf("a load with a wrong token: %v: %s", err, out)
	}
}
