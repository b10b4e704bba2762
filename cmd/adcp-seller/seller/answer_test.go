package seller

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/adcp-go/idempotency/adcp"
)

// buyAnswer encodes to the bytes of the map it replaced (json.Marshal
// sorts a map's keys), so that answers stored before it replay the same.
func TestBuyAnswerEncoding(t *testing.T) {
	bid := 2.5
	buys := []mediaBuy{
		{ID: "mb_1", Account: account{AccountID: "acc_1", Name: "acme", Status: "active", Brand: &brandRef{Domain: "acme.example"}, Operator: "acme.example"},
			Name: "spring <sale> & more", Status: "pending_creatives", Currency: "USD", TotalBudget: 100.25, Revision: 3,
			Packages:    []pkg{{PackageID: "pkg_1", ProductID: "p", PricingOptionID: "default", Budget: 100.25, BidPrice: &bid, Targeting: json.RawMessage(`{"geo":["US"]}`)}},
			ConfirmedAt: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)},
		{ID: "mb_2", Status: "", Packages: nil}, // every member at its zero value
	}
	for _, b := range buys {
		for _, v := range []adcp.Version{adcp.V3_0, adcp.V3_1, adcp.V3_2} {
			for _, key := range []string{"", "key-0000000000000001"} {
				want := map[string]any{
					"media_buy_id": b.ID, "account": b.Account, "confirmed_at": b.ConfirmedAt.Format(time.RFC3339),
					"revision": b.Revision, "currency": b.Currency, "total_budget": b.TotalBudget, "packages": b.Packages,
				}
				if b.Name != "" {
					want["name"] = b.Name
				}
				if v.AtLeast(adcp.V3_1) {
					want["media_buy_status"] = b.Status
				} else {
					want["status"] = b.Status
				}
				if key != "" {
					want["idempotency_key"] = key
				}
				if got, want := string(mustJSON(buyAnswer(b, v, key))), string(mustJSON(want)); got != want {
					t.Errorf("buy %s at %s, key %q:\n got %s\nwant %s", b.ID, v, key, got, want)
				}
			}
		}
	}
}
