//go:build compliance

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/adcp-go/idempotency/cmd/adcp-seller/sellertest"
)

// peerDir is the AdCP peer kit (../shared/peer beside the repository).
func peerDir(t *testing.T) string {
	if d := os.Getenv("ADCP_PEER_DIR"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../shared/peer")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var storyboardTally = regexp.MustCompile(`storyboard: (\d+) passed, (\d+) failed, (\d+) skipped`)

// TestComplianceStoryboard runs the official AdCP runner's idempotency
// storyboard (through the peer kit's storyboard script, which grades every
// step) against the real seller command in both storage modes. It passes
// only if every step passed and none was skipped. Run it with
// `make compliance`.
func TestComplianceStoryboard(t *testing.T) {
	storyboard := filepath.Join(peerDir(t), "storyboard")
	for _, mode := range []string{"memory", "postgres"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"-tokens", "compliance=" + sellertest.Token, "-dev"}
			if mode == "postgres" {
				args = append(args, "-database-url", newSchema(t).Config().ConnString())
			}
			_, url := sellerProcess(t, args...)
			out, err := exec.Command(storyboard, url, "--auth", sellertest.Token, "--out", t.TempDir()).CombinedOutput()
			t.Logf("%s storyboard against %s:\n%s", mode, url, out)
			m := storyboardTally.FindSubmatch(out)
			if err != nil || m == nil || string(m[2]) != "0" || string(m[3]) != "0" || string(m[1]) == "0" {
				t.Fatalf("%s seller: the idempotency storyboard did not pass every step (exit: %v)", mode, err)
			}
		})
	}
}
