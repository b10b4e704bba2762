//go:build ignore

// dashboard-svg scrapes a Prometheus /metrics endpoint periodically, and
// renders the panels of a Grafana dashboard (docs/grafana/*.json) from
// those scrapes as one SVG: a real picture of real data where no Grafana
// runs. It evaluates each panel's PromQL itself, for the forms the
// dashboard uses (sum [by (...)] of rate(...) or of a gauge, and
// histogram_quantile over summed bucket rates), with $__rate_interval a
// fixed window and every template variable "All". Standard library only.
//
//	go run scripts/dashboard-svg.go scrape -url http://127.0.0.1:8080/metrics -every 1s -out scrapes.prom
//	go run scripts/dashboard-svg.go render -in scrapes.prom -dashboard docs/grafana/idempotency-dashboard.json \
//	    -o docs/grafana/idempotency-dashboard-under-load.svg -note "what ran"
//
// scrape keeps the idempotency_* samples of each scrape, after a
// "# scrape <unix ms>" line, until it is stopped (SIGINT, SIGTERM). See
// scripts/dashboard-under-load.sh for a whole run.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-svg scrape|render [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "scrape":
		err = scrape(os.Args[2:])
	case "render":
		err = render(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboard-svg:", err)
		os.Exit(1)
	}
}

// ---- scraping ----

func scrape(args []string) error {
	fs := flag.NewFlagSet("scrape", flag.ExitOnError)
	url := fs.String("url", "", "the /metrics URL")
	every := fs.Duration("every", time.Second, "scrape interval")
	out := fs.String("out", "", "file to write")
	prefix := fs.String("prefix", "idempotency_", "keep the samples whose name starts with this")
	_ = fs.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t := time.NewTicker(*every)
	defer t.Stop()
	for n := 0; ; n++ {
		if err := scrapeOnce(ctx, *url, *prefix, f); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "dashboard-svg: scrape:", err)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "dashboard-svg: %d scrapes in %s\n", n+1, *out)
			return nil
		case <-t.C:
		}
	}
}

func scrapeOnce(ctx context.Context, url, prefix string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	at := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# scrape %d\n", at.UnixMilli())
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, prefix) {
			b.WriteString(stripScope(line))
			b.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	_, err = io.WriteString(w, b.String())
	return err
}

var scopeLabels = regexp.MustCompile(`,?otel_scope_[a-z_]+="[^"]*"`)

// stripScope drops the exporter's otel_scope_* labels, the same on every
// series of one scope.
func stripScope(line string) string {
	s := scopeLabels.ReplaceAllString(line, "")
	return strings.Replace(strings.Replace(s, "{,", "{", 1), "{}", "", 1)
}

// ---- the samples ----

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type snapshot struct {
	at      time.Time
	samples []sample
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func readScrapes(path string) ([]snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []snapshot
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if ms, ok := strings.CutPrefix(line, "# scrape "); ok {
			n, err := strconv.ParseInt(ms, 10, 64)
			if err != nil {
				return nil, err
			}
			out = append(out, snapshot{at: time.UnixMilli(n)})
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || len(out) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[p[1]] = p[2]
		}
		out[len(out)-1].samples = append(out[len(out)-1].samples, s)
	}
	return out, sc.Err()
}

// ---- PromQL, the forms the dashboard uses ----

type matcher struct {
	label, op, value string
	re               *regexp.Regexp
}

func (m matcher) matches(labels map[string]string) bool {
	v := labels[m.label]
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return m.re.MatchString(v)
	default: // !~
		return !m.re.MatchString(v)
	}
}

// query is sum [by (group)] (rate(selector[w]) | selector), optionally
// inside histogram_quantile(q, ...).
type query struct {
	quantile float64 // 0: none
	group    []string
	rate     bool
	metric   string
	matchers []matcher
}

var (
	reQuantile = regexp.MustCompile(`^histogram_quantile\(\s*([0-9.]+)\s*,\s*(.*)\)$`)
	reSum      = regexp.MustCompile(`^sum\s*(?:by\s*\(([^)]*)\)\s*)?\((.*)\)$`)
	reRate     = regexp.MustCompile(`^rate\((.*)\[\$__rate_interval\]\)$`)
	reSelector = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$`)
	reMatcher  = regexp.MustCompile(`\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?`)
)

func parseQuery(expr string, vars map[string]string) (query, error) {
	var q query
	e := strings.TrimSpace(expr)
	if m := reQuantile.FindStringSubmatch(e); m != nil {
		q.quantile, _ = strconv.ParseFloat(m[1], 64)
		e = strings.TrimSpace(m[2])
	}
	m := reSum.FindStringSubmatch(e)
	if m == nil {
		return q, fmt.Errorf("unsupported query %q", expr)
	}
	for l := range strings.SplitSeq(m[1], ",") {
		if l = strings.TrimSpace(l); l != "" && l != "le" {
			q.group = append(q.group, l)
		}
	}
	e = strings.TrimSpace(m[2])
	if m := reRate.FindStringSubmatch(e); m != nil {
		q.rate, e = true, m[1]
	}
	m = reSelector.FindStringSubmatch(e)
	if m == nil {
		return q, fmt.Errorf("unsupported selector in %q", expr)
	}
	q.metric = m[1]
	for _, mm := range reMatcher.FindAllStringSubmatch(m[2], -1) {
		v := mm[3]
		for name, val := range vars {
			v = strings.ReplaceAll(v, "$"+name, val)
		}
		mt := matcher{label: mm[1], op: mm[2], value: v}
		if strings.HasSuffix(mt.op, "~") {
			re, err := regexp.Compile("^(?:" + v + ")$")
			if err != nil {
				return q, err
			}
			mt.re = re
		}
		q.matchers = append(q.matchers, mt)
	}
	if q.quantile > 0 && (!q.rate || !strings.HasSuffix(q.metric, "_bucket")) {
		return q, fmt.Errorf("histogram_quantile wants rate of a _bucket: %q", expr)
	}
	return q, nil
}

// seriesKey is a sample's full label set, sorted, with its name.
func seriesKey(s sample) string {
	keys := make([]string, 0, len(s.labels))
	for k, v := range s.labels {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return s.name + "{" + strings.Join(keys, ",") + "}"
}

// point is one evaluated value per group at one scrape.
type evaluated struct {
	groups []string             // group keys, sorted
	labels []map[string]string  // group labels, by group
	values map[string][]float64 // by group: one per scrape, NaN where none
}

// eval evaluates q at every scrape, with rates over window scrapes.
func eval(q query, snaps []snapshot, window int) evaluated {
	type groupVals struct {
		labels map[string]string
		byLe   map[float64]float64 // for quantiles
		sum    float64
		seen   bool
	}
	history := map[string][]float64{} // series key -> value per scrape (NaN missing)
	ev := evaluated{values: map[string][]float64{}}
	groupLabels := map[string]map[string]string{}
	for i, snap := range snaps {
		groups := map[string]*groupVals{}
		for _, s := range snap.samples {
			if s.name != q.metric || !all(q.matchers, s.labels) {
				continue
			}
			key := seriesKey(s)
			h := history[key]
			for len(h) < i {
				h = append(h, math.NaN())
			}
			h = append(h, s.value)
			history[key] = h
			v := s.value
			if q.rate {
				j := max(0, i-window)
				for j < i && math.IsNaN(h[j]) {
					j++
				}
				if j == i {
					continue
				}
				v = (s.value - h[j]) / snaps[i].at.Sub(snaps[j].at).Seconds()
			}
			gl := map[string]string{}
			var parts []string
			for _, l := range q.group {
				gl[l] = s.labels[l]
				parts = append(parts, l+"="+s.labels[l])
			}
			gk := strings.Join(parts, ",")
			g := groups[gk]
			if g == nil {
				g = &groupVals{labels: gl, byLe: map[float64]float64{}}
				groups[gk] = g
			}
			g.seen = true
			if q.quantile > 0 {
				le, err := strconv.ParseFloat(s.labels["le"], 64)
				if err != nil {
					le = math.Inf(1)
				}
				g.byLe[le] += v
			} else {
				g.sum += v
			}
		}
		for gk, g := range groups {
			v := g.sum
			if q.quantile > 0 {
				v = quantile(q.quantile, g.byLe)
			}
			vals, ok := ev.values[gk]
			if !ok {
				vals = make([]float64, len(snaps))
				for k := range vals {
					vals[k] = math.NaN()
				}
				ev.values[gk] = vals
				groupLabels[gk] = g.labels
			}
			vals[i] = v
		}
	}
	for gk := range ev.values {
		ev.groups = append(ev.groups, gk)
	}
	sort.Strings(ev.groups)
	for _, gk := range ev.groups {
		ev.labels = append(ev.labels, groupLabels[gk])
	}
	return ev
}

func all(ms []matcher, labels map[string]string) bool {
	for _, m := range ms {
		if !m.matches(labels) {
			return false
		}
	}
	return true
}

// quantile is Prometheus's histogram_quantile over cumulative bucket
// rates: linear interpolation inside the bucket; NaN without
// observations.
func quantile(q float64, byLe map[float64]float64) float64 {
	les := make([]float64, 0, len(byLe))
	for le := range byLe {
		les = append(les, le)
	}
	slices.Sort(les)
	if len(les) < 2 || !math.IsInf(les[len(les)-1], 1) {
		return math.NaN()
	}
	total := byLe[les[len(les)-1]]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, le := range les {
		c := byLe[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return prevLe // the highest finite bound
			}
			if c == prevCount {
				return le
			}
			return prevLe + (le-prevLe)*(rank-prevCount)/(c-prevCount)
		}
		prevLe, prevCount = le, c
	}
	return prevLe
}

// ---- the dashboard ----

type dashboard struct {
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit   string `json:"unit"`
			Custom struct {
				FillOpacity float64 `json:"fillOpacity"`
				Stacking    struct {
					Mode string `json:"mode"`
				} `json:"stacking"`
			} `json:"custom"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

type line struct {
	name   string
	values []float64
}

var legendVar = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

func render(args []string) error {
	fs := flag.NewFlagSet("render", flag.ExitOnError)
	in := fs.String("in", "", "scrapes written by scrape")
	dashPath := fs.String("dashboard", "docs/grafana/idempotency-dashboard.json", "the Grafana dashboard")
	out := fs.String("o", "", "the SVG to write")
	window := fs.Duration("window", 5*time.Second, "$__rate_interval")
	note := fs.String("note", "", "what ran, for the caption")
	_ = fs.Parse(args)

	snaps, err := readScrapes(*in)
	if err != nil {
		return err
	}
	if len(snaps) < 3 {
		return errors.New("fewer than 3 scrapes")
	}
	raw, err := os.ReadFile(*dashPath)
	if err != nil {
		return err
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		return err
	}
	step := snaps[len(snaps)-1].at.Sub(snaps[0].at) / time.Duration(len(snaps)-1)
	windowScrapes := max(1, int(math.Round(float64(*window)/float64(step))))
	vars := map[string]string{"operation": ".*"}

	caption := wrap(fmt.Sprintf("Not a Grafana screenshot: rendered by scripts/dashboard-svg.go from %d real scrapes of /metrics, every %v from %s UTC (x axis: seconds since the first), "+
		"each panel's PromQL in %s evaluated on the scraped samples with $__rate_interval = %v and Operation = All. %s",
		len(snaps), step.Round(10*time.Millisecond), snaps[0].at.UTC().Format("2006-01-02 15:04:05"), *dashPath, *window, *note), 205)
	const colW, rowH, pad = 50, 30, 6
	top := 44 + 14*len(caption)
	rows := 0
	for _, p := range d.Panels {
		rows = max(rows, p.GridPos.Y+p.GridPos.H)
	}
	width, height := 24*colW, top+rows*rowH+8
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&svg, `<rect width="%d" height="%d" fill="#111217"/>`+"\n", width, height)
	fmt.Fprintf(&svg, `<text x="12" y="24" fill="#d8d9da" font-size="17" font-weight="bold">%s</text>`+"\n", esc(d.Title))
	for i, c := range caption {
		fmt.Fprintf(&svg, `<text x="12" y="%d" fill="#9fa7b3" font-size="11">%s</text>`+"\n", 42+i*14, esc(c))
	}

	for _, p := range d.Panels {
		x0, y0 := p.GridPos.X*colW+pad, top+p.GridPos.Y*rowH+pad
		w, h := p.GridPos.W*colW-2*pad, p.GridPos.H*rowH-2*pad
		var lines []line
		for _, tg := range p.Targets {
			q, err := parseQuery(tg.Expr, vars)
			if err != nil {
				return fmt.Errorf("panel %q: %w", p.Title, err)
			}
			ev := eval(q, snaps, windowScrapes)
			for gi, gk := range ev.groups {
				name := legendVar.ReplaceAllStringFunc(tg.LegendFormat, func(s string) string {
					return ev.labels[gi][legendVar.FindStringSubmatch(s)[1]]
				})
				lines = append(lines, line{name: name, values: ev.values[gk]})
			}
		}
		drawPanel(&svg, p, lines, snaps, x0, y0, w, h)
	}
	svg.WriteString("</svg>\n")
	return os.WriteFile(*out, []byte(svg.String()), 0o644)
}

var palette = []string{"#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17"}

func drawPanel(svg *strings.Builder, p panel, lines []line, snaps []snapshot, x0, y0, w, h int) {
	fmt.Fprintf(svg, `<g><rect x="%d" y="%d" width="%d" height="%d" rx="3" fill="#181b1f" stroke="#2c3235"/>`+"\n", x0, y0, w, h)
	fmt.Fprintf(svg, `<text x="%d" y="%d" fill="#ccccdc" font-size="13" font-weight="bold">%s</text>`+"\n", x0+8, y0+18, esc(p.Title))
	unit := p.FieldConfig.Defaults.Unit
	stacked := p.FieldConfig.Defaults.Custom.Stacking.Mode == "normal"

	// Drop the lines with no value at all.
	lines = slices.DeleteFunc(lines, func(l line) bool {
		return !slices.ContainsFunc(l.values, func(v float64) bool { return !math.IsNaN(v) })
	})
	legendRight := p.GridPos.W >= 12
	legendW, legendH := 0, 0
	if legendRight {
		legendW = 300
	} else {
		legendH = 14 * min(len(lines)+1, 5)
	}
	px, py := x0+72, y0+30
	pw, ph := w-72-12-legendW, h-30-24-legendH
	if len(lines) == 0 {
		fmt.Fprintf(svg, `<text x="%d" y="%d" fill="#8e8e8e" font-size="14" text-anchor="middle">No data</text></g>`+"\n", x0+w/2, y0+h/2)
		return
	}

	// Stack, then scale.
	n := len(snaps)
	drawn := make([][]float64, len(lines))
	base := make([]float64, n)
	yMax := 0.0
	for i, l := range lines {
		drawn[i] = make([]float64, n)
		for k, v := range l.values {
			if stacked {
				if !math.IsNaN(v) {
					base[k] += v
				}
				v = base[k]
			}
			drawn[i][k] = v
			if !math.IsNaN(v) {
				yMax = max(yMax, v)
			}
		}
	}
	yTop, ticks := niceScale(yMax)
	t0, span := snaps[0].at, snaps[n-1].at.Sub(snaps[0].at).Seconds()
	xOf := func(k int) float64 { return float64(px) + float64(pw)*snaps[k].at.Sub(t0).Seconds()/span }
	yOf := func(v float64) float64 { return float64(py+ph) - float64(ph)*v/yTop }

	for _, tv := range ticks {
		y := yOf(tv)
		fmt.Fprintf(svg, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#2c3235"/>`+"\n", px, y, px+pw, y)
		fmt.Fprintf(svg, `<text x="%d" y="%.1f" fill="#9fa7b3" text-anchor="end">%s</text>`+"\n", px-5, y+4, esc(format(tv, unit)))
	}
	for s := 0.0; s <= span+1e-9; s += tickStep(span) {
		x := float64(px) + float64(pw)*s/span
		fmt.Fprintf(svg, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#2c3235"/>`+"\n", x, py, x, py+ph)
		fmt.Fprintf(svg, `<text x="%.1f" y="%d" fill="#9fa7b3" text-anchor="middle">%ds</text>`+"\n", x, py+ph+14, int(s))
	}
	for i := len(lines) - 1; i >= 0; i-- {
		color := palette[i%len(palette)]
		var path strings.Builder
		var first, last = -1, -1
		for k := range n {
			v := drawn[i][k]
			if math.IsNaN(v) || math.IsNaN(lines[i].values[k]) {
				continue
			}
			cmd := "L"
			if first < 0 {
				cmd, first = "M", k
			}
			last = k
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, xOf(k), yOf(v))
		}
		if first < 0 {
			continue
		}
		if fill := p.FieldConfig.Defaults.Custom.FillOpacity; fill > 0 {
			fmt.Fprintf(svg, `<path d="%sL%.1f,%d L%.1f,%d Z" fill="%s" fill-opacity="%.2f" stroke="none"/>`+"\n",
				path.String(), xOf(last), py+ph, xOf(first), py+ph, color, fill/100)
		}
		fmt.Fprintf(svg, `<path d="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", path.String(), color)
	}

	// Legend: name, mean, max, last (not null).
	lx, ly := px+pw+14, py+4
	if !legendRight {
		lx, ly = px, py+ph+30
	}
	if legendRight {
		fmt.Fprintf(svg, `<text x="%d" y="%d" fill="#9fa7b3"><tspan>Name</tspan><tspan x="%d">Mean</tspan><tspan x="%d">Max</tspan><tspan x="%d">Last</tspan></text>`+"\n",
			lx, ly, lx+110, lx+173, lx+236)
		ly += 15
	}
	for i, l := range lines {
		if !legendRight && i >= 4 {
			fmt.Fprintf(svg, `<text x="%d" y="%d" fill="#9fa7b3">+%d more</text>`+"\n", lx, ly+i*14, len(lines)-4)
			break
		}
		mean, mx, last := stats(l.values)
		y := ly + i*14
		if legendRight && y > y0+h-8 {
			break
		}
		fmt.Fprintf(svg, `<rect x="%d" y="%d" width="10" height="4" fill="%s"/>`+"\n", lx, y-5, palette[i%len(palette)])
		if legendRight {
			fmt.Fprintf(svg, `<text x="%d" y="%d" fill="#ccccdc"><tspan>%s</tspan><tspan x="%d">%s</tspan><tspan x="%d">%s</tspan><tspan x="%d">%s</tspan></text>`+"\n",
				lx+14, y, esc(l.name), lx+110, esc(format(mean, unit)), lx+173, esc(format(mx, unit)), lx+236, esc(format(last, unit)))
		} else {
			fmt.Fprintf(svg, `<text x="%d" y="%d" fill="#ccccdc">%s   mean %s   max %s   last %s</text>`+"\n",
				lx+14, y, esc(l.name), esc(format(mean, unit)), esc(format(mx, unit)), esc(format(last, unit)))
		}
	}
	svg.WriteString("</g>\n")
}

func stats(vs []float64) (mean, mx, last float64) {
	n := 0
	mx, last = math.NaN(), math.NaN()
	for _, v := range vs {
		if math.IsNaN(v) {
			continue
		}
		mean += v
		n++
		if math.IsNaN(mx) || v > mx {
			mx = v
		}
		last = v
	}
	if n == 0 {
		return math.NaN(), mx, last
	}
	return mean / float64(n), mx, last
}

// niceScale returns a round top for the y axis and its ticks.
func niceScale(maxV float64) (float64, []float64) {
	if maxV <= 0 || math.IsNaN(maxV) {
		maxV = 1
	}
	raw := maxV / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	top := step * math.Ceil(maxV/step)
	var ticks []float64
	for v := 0.0; v <= top+step/2; v += step {
		ticks = append(ticks, v)
	}
	return top, ticks
}

func tickStep(span float64) float64 {
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300} {
		if span/s <= 8 {
			return s
		}
	}
	return 600
}

// format writes v in the panel's Grafana unit.
func format(v float64, unit string) string {
	if math.IsNaN(v) {
		return "-"
	}
	switch unit {
	case "s":
		switch {
		case v == 0:
			return "0"
		case v < 1e-3:
			return trim(v*1e6) + " µs"
		case v < 1:
			return trim(v*1e3) + " ms"
		default:
			return trim(v) + " s"
		}
	case "reqps":
		return short(v) + " req/s"
	default:
		return short(v)
	}
}

func short(v float64) string {
	if v == 0 {
		return "0"
	}
	if math.Abs(v) >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "K"
	}
	return trim(v)
}

func trim(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func esc(s string) string { return html.EscapeString(s) }

// wrap breaks s into lines of at most width bytes, at spaces.
func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, word := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(word) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(word)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
