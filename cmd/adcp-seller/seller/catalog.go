package seller

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/adcp-go/idempotency/idem"
)

// formatAgent is the agent that defines the standard creative formats this
// seller's products take.
const formatAgent = "https://creative.adcontextprotocol.org"

// maxSeeds bounds what comply_test_controller may add to the catalog, so a
// sandbox caller cannot grow it without limit.
const maxSeeds = 1000

// catalog is what the seller sells: its products (each with its pricing
// options) and the creative formats they take. It starts with a sandbox
// catalog (newCatalog) and grows through comply_test_controller's seed
// scenarios. Products and formats are JSON objects as get_products and
// list_creative_formats answer them, so a seeded fixture is served as
// given, over the defaults it does not set.
//
// The catalog lives in the process, in both storage modes: it is sandbox
// configuration, not buyer state (a restart returns to the built-in
// catalog; storyboards seed what they need before they run).
type catalog struct {
	mu       sync.RWMutex
	products map[string]map[string]any
	order    []string // product ids, in the order they were added
	formats  map[string]map[string]any
	fOrder   []string
	// byAccount are the formats seeded for one account (by accountKey),
	// in the order they were seeded: list_creative_formats for that
	// account lists them alone.
	byAccount map[string][]map[string]any
	seeds     map[string][sha256.Size]byte // seed key -> canonical hash of its fixture
}

// pricingOption is what create_media_buy needs of a product's pricing
// option.
type pricingOption struct {
	ID       string
	Model    string
	Currency string
	Fixed    *float64 // fixed_price: the seller's rate
	Floor    *float64 // floor_price: the lowest bid an auction option takes
	MinSpend *float64 // min_spend_per_package
}

func newCatalog() *catalog {
	c := &catalog{products: map[string]map[string]any{}, formats: map[string]map[string]any{}, seeds: map[string][sha256.Size]byte{},
		byAccount: map[string][]map[string]any{}}
	c.putFormat("display_300x250", map[string]any{"name": "Medium rectangle 300x250", "type": "display",
		"renders": []any{map[string]any{"role": "primary", "dimensions": map[string]any{"width": 300, "height": 250}}}})
	c.putFormat("display_728x90", map[string]any{"name": "Leaderboard 728x90", "type": "display",
		"renders": []any{map[string]any{"role": "primary", "dimensions": map[string]any{"width": 728, "height": 90}}}})
	c.putProduct("test-product", map[string]any{
		"name":          "Sandbox display run of network",
		"description":   "Display inventory across the sandbox publisher's site, sold per thousand impressions. Nothing is bought for real.",
		"delivery_type": "non_guaranteed",
		"channels":      []any{"display"},
		"format_ids":    []any{formatRef("display_300x250"), formatRef("display_728x90")},
		"pricing_options": []any{
			map[string]any{"pricing_option_id": "default", "pricing_model": "cpm", "currency": "USD", "fixed_price": 5.0},
			map[string]any{"pricing_option_id": "test-pricing", "pricing_model": "cpm", "currency": "USD", "floor_price": 1.0},
		},
	})
	return c
}

func formatRef(id string) map[string]any { return map[string]any{"agent_url": formatAgent, "id": id} }

// defaultProduct is what every product has unless its fixture says
// otherwise: the members AdCP requires of a product.
func defaultProduct(id string) map[string]any {
	return map[string]any{
		"product_id":           id,
		"name":                 id,
		"description":          "Sandbox product " + id + ".",
		"publisher_properties": []any{map[string]any{"publisher_domain": "sandbox.example", "selection_type": "all"}},
		"format_ids":           []any{formatRef("display_300x250")},
		"delivery_type":        "non_guaranteed",
		"pricing_options":      []any{},
		"reporting_capabilities": map[string]any{
			"available_reporting_frequencies": []any{"daily"},
			"expected_delay_minutes":          240,
			"timezone":                        "UTC",
			"supports_webhooks":               false,
			"available_metrics":               []any{"impressions", "spend", "clicks"},
			"date_range_support":              "date_range",
		},
	}
}

// putProduct sets product id to the defaults overlaid with fields.
func (c *catalog) putProduct(id string, fields map[string]any) {
	p := defaultProduct(id)
	maps.Copy(p, fields)
	p["product_id"] = id
	// A format id names the agent that defines the format; fixtures often
	// give only the id of a standard format, which is formatAgent's.
	for _, f := range asSlice(p["format_ids"]) {
		if m, ok := f.(map[string]any); ok {
			if _, set := m["agent_url"]; !set {
				m["agent_url"] = formatAgent
			}
		}
	}
	if _, ok := c.products[id]; !ok {
		c.order = append(c.order, id)
	}
	c.products[id] = p
}

func (c *catalog) putFormat(id string, fields map[string]any) {
	f := map[string]any{"format_id": formatRef(id), "name": id}
	maps.Copy(f, fields)
	f["format_id"] = formatRef(id)
	if _, ok := c.formats[id]; !ok {
		c.fOrder = append(c.fOrder, id)
	}
	c.formats[id] = f
}

// seedError is a refused seed: comply_test_controller answers it as
// {success: false, error: Code}.
type seedError struct{ Code, Detail string }

func (e *seedError) Error() string { return e.Code + ": " + e.Detail }

// seed records a fixture under key and applies it, unless key was seeded
// with an equivalent fixture (a replay: applied again, reported fresh
// false) or a different one (INVALID_PARAMS: seeds are idempotent).
func (c *catalog) seed(key string, fixture map[string]any, apply func()) (fresh bool, err error) {
	raw, _ := json.Marshal(fixture)
	h, err := idem.CanonicalJSONSHA256(raw)
	if err != nil {
		return false, &seedError{"INVALID_PARAMS", "the fixture is not valid JSON"}
	}
	prior, seen := c.seeds[key]
	switch {
	case seen && prior != h:
		return false, &seedError{"INVALID_PARAMS", "a different fixture was already seeded under this id; seed replays must carry an equivalent fixture"}
	case !seen && len(c.seeds) >= maxSeeds:
		return false, &seedError{"INVALID_STATE", fmt.Sprintf("the sandbox catalog is full (%d seeds)", maxSeeds)}
	}
	c.seeds[key] = h
	apply()
	return !seen, nil
}

// seedProduct adds or replaces a product from a fixture.
func (c *catalog) seedProduct(id string, fixture map[string]any) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seed("product:"+id, fixture, func() {
		fields := maps.Clone(fixture)
		if old, ok := c.products[id]; ok {
			// Keep pricing options seeded before, unless the fixture sets
			// its own.
			if _, set := fields["pricing_options"]; !set {
				fields["pricing_options"] = old["pricing_options"]
			}
		}
		c.putProduct(id, fields)
	})
}

// seedPricingOption adds or replaces one pricing option of a product,
// creating the product with defaults if needed.
func (c *catalog) seedPricingOption(productID, optionID string, fixture map[string]any) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seed("pricing:"+productID+"/"+optionID, fixture, func() {
		if _, ok := c.products[productID]; !ok {
			c.putProduct(productID, nil)
		}
		p := c.products[productID]
		opt := map[string]any{"pricing_model": "cpm", "currency": "USD"}
		maps.Copy(opt, fixture)
		opt["pricing_option_id"] = optionID
		// Seed fixtures name the floor "floor_price" or, in older kits,
		// "floor"; both mean the lowest accepted bid.
		if f, ok := opt["floor"]; ok {
			if _, set := opt["floor_price"]; !set {
				opt["floor_price"] = f
			}
			delete(opt, "floor")
		}
		if _, fixed := opt["fixed_price"]; !fixed {
			if _, floor := opt["floor_price"]; !floor {
				opt["floor_price"] = 0.01
			}
		}
		var opts []any
		for _, o := range asSlice(p["pricing_options"]) {
			if m, _ := o.(map[string]any); m["pricing_option_id"] != optionID {
				opts = append(opts, o)
			}
		}
		p["pricing_options"] = append(opts, opt)
	})
}

// seedFormat adds or replaces a creative format: one of the catalog's, or,
// when acct (an accountKey) is set, one of that account's.
func (c *catalog) seedFormat(acct, id string, fixture map[string]any) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if acct == "" {
		return c.seed("format:"+id, fixture, func() { c.putFormat(id, fixture) })
	}
	return c.seed("format:"+acct+"/"+id, fixture, func() {
		f := map[string]any{"name": id}
		maps.Copy(f, fixture)
		f["format_id"] = formatRef(id)
		fs := c.byAccount[acct]
		if i := slices.IndexFunc(fs, func(o map[string]any) bool { return o["format_id"].(map[string]any)["id"] == id }); i >= 0 {
			fs[i] = f
			return
		}
		c.byAccount[acct] = append(fs, f)
	})
}

// productList returns the products (deep copies, so callers may not
// change the catalog), filtered by delivery type and channels when set.
func (c *catalog) productList(deliveryType string, channels []string) []map[string]any {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := []map[string]any{}
	for _, id := range c.order {
		p := c.products[id]
		if deliveryType != "" && p["delivery_type"] != deliveryType {
			continue
		}
		if len(channels) > 0 && !slices.ContainsFunc(asSlice(p["channels"]), func(ch any) bool {
			s, _ := ch.(string)
			return slices.Contains(channels, s)
		}) {
			continue
		}
		out = append(out, deepCopy(p))
	}
	return out
}

// formatList returns the formats (deep copies) list_creative_formats
// lists for acct (an accountKey, or ""): those seeded for that account if
// any were, else the catalog's.
func (c *catalog) formatList(acct string) []map[string]any {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if fs := c.byAccount[acct]; acct != "" && len(fs) > 0 {
		out := make([]map[string]any, 0, len(fs))
		for _, f := range fs {
			out = append(out, deepCopy(f))
		}
		return out
	}
	out := make([]map[string]any, 0, len(c.fOrder))
	for _, id := range c.fOrder {
		out = append(out, deepCopy(c.formats[id]))
	}
	return out
}

// pricing resolves a package's product and pricing option.
func (c *catalog) pricing(productID, optionID string) (pricingOption, bool, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	p, ok := c.products[productID]
	if !ok {
		return pricingOption{}, false, false
	}
	for _, o := range asSlice(p["pricing_options"]) {
		m, _ := o.(map[string]any)
		if m["pricing_option_id"] != optionID {
			continue
		}
		po := pricingOption{ID: optionID}
		po.Model, _ = m["pricing_model"].(string)
		po.Currency, _ = m["currency"].(string)
		po.Fixed, po.Floor, po.MinSpend = number(m["fixed_price"]), number(m["floor_price"]), number(m["min_spend_per_package"])
		return po, true, true
	}
	return pricingOption{}, true, false
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func number(v any) *float64 {
	if f, ok := v.(float64); ok {
		return &f
	}
	return nil
}

// deepCopy copies a JSON value built of maps, slices and scalars.
func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}
