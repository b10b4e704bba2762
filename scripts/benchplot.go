//go:build ignore

// benchplot draws the growth figures of docs/BENCHMARKS.md as SVG line
// plots, from raw `go test -bench` output: BenchmarkPostgresGrowth's
// throughput against concurrency (a line per table size) and p99 latency
// against table size (a line per concurrency), for misses and replays, and
// BenchmarkMemstoreBytesPerEntry's heap per stored key against the answer's
// size. A figure run several times (rounds name#01, #02..., or -count) is
// drawn at its median, with a bar from its smallest to its largest sample.
// Standard library only; scripts/growth-bench.sh runs it after the
// benchmarks.
//
//	go run scripts/benchplot.go -growth growth.txt -entrysize entrysize.txt \
//	    -loadavg loadavg.txt -o docs/plots
//
// It writes growth-throughput.svg, growth-p99.svg, growth-wal.svg (WAL
// bytes per miss against table size) and memstore-bytes-per-entry.svg
// into -o, each titled with the CPU that go
// test reports, the date of the run and the load average sampled during it
// (-loadavg: lines "<RFC 3339 time> <1 min> <5 min> <15 min>"), and prints
// the figures as Markdown tables (medians, ranges in parentheses).
package main

import (
	"bufio"
	"cmp"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	growth := flag.String("growth", "", "go test output of BenchmarkPostgresGrowth")
	entry := flag.String("entrysize", "", "go test output of BenchmarkMemstoreBytesPerEntry")
	loadavg := flag.String("loadavg", "", "load average samples taken during the run (optional)")
	note := flag.String("note", "", "a line to print under every title (optional)")
	out := flag.String("o", "docs/plots", "directory for the SVG files")
	flag.Parse()
	if err := run(*growth, *entry, *loadavg, *note, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(growthPath, entryPath, loadPath, note, out string) error {
	load, err := readLoad(loadPath)
	if err != nil {
		return err
	}
	if growthPath != "" {
		res, err := readBench(growthPath)
		if err != nil {
			return err
		}
		if err := growthPlots(res, load, note, out); err != nil {
			return err
		}
	}
	if entryPath != "" {
		res, err := readBench(entryPath)
		if err != nil {
			return err
		}
		if err := entryPlot(res, load, note, out); err != nil {
			return err
		}
	}
	return nil
}

// ---- reading ----

// benchResults holds every sample of every metric of one go test output,
// by benchmark name without "Benchmark", the round suffix and the
// -GOMAXPROCS suffix.
type benchResults struct {
	cpu   string
	procs string
	data  map[string]map[string][]float64
}

var (
	benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-(\d+))?\s+\d+\s+(.*)$`)
	roundTag  = regexp.MustCompile(`#\d+`)
)

func readBench(path string) (*benchResults, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &benchResults{data: map[string]map[string][]float64{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		text := sc.Text()
		if cpu, ok := strings.CutPrefix(text, "cpu: "); ok {
			r.cpu = strings.TrimSpace(cpu)
			continue
		}
		m := benchLine.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		name := roundTag.ReplaceAllString(m[1], "")
		r.procs = m[2]
		f := strings.Fields(m[3])
		if len(f)%2 != 0 {
			continue
		}
		if r.data[name] == nil {
			r.data[name] = map[string][]float64{}
		}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %q: %v", path, text, err)
			}
			r.data[name][f[i+1]] = append(r.data[name][f[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(r.data) == 0 {
		return nil, fmt.Errorf("%s: no benchmark results", path)
	}
	return r, nil
}

// loadInfo summarises the 1-minute load average samples of the run.
type loadInfo struct {
	from, to    time.Time
	lo, med, hi float64
	samples     int
	known       bool
}

func readLoad(path string) (loadInfo, error) {
	var li loadInfo
	if path == "" {
		return li, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return li, err
	}
	var vs []float64
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		at, err := time.Parse(time.RFC3339, f[0])
		if err != nil {
			return li, fmt.Errorf("%s: %q: %v", path, line, err)
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return li, fmt.Errorf("%s: %q: %v", path, line, err)
		}
		if len(vs) == 0 {
			li.from = at
		}
		li.to = at
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return li, nil
	}
	li.lo, li.med, li.hi = summary(vs)
	li.samples, li.known = len(vs), true
	return li, nil
}

// summary returns the smallest, median and largest of vs.
func summary(vs []float64) (lo, med, hi float64) {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return s[0], med, s[n-1]
}

// ---- the plots ----

// growthKey is one sub-benchmark of BenchmarkPostgresGrowth.
type growthKey struct {
	op   string
	c    int
	rows int64
}

var growthName = regexp.MustCompile(`^PostgresGrowth/c=(\d+)/rows=(\d+)([kM]?)/op=(\w+)$`)

func growthPlots(res *benchResults, load loadInfo, note, out string) error {
	figures := map[growthKey]map[string][]float64{}
	var cs []int
	var rows []int64
	rounds := 0
	for name, metrics := range res.data {
		m := growthName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		c, _ := strconv.Atoi(m[1])
		n, _ := strconv.ParseInt(m[2], 10, 64)
		n *= map[string]int64{"": 1, "k": 1000, "M": 1_000_000}[m[3]]
		figures[growthKey{m[4], c, n}] = metrics
		cs = append(cs, c)
		rows = append(rows, n)
		rounds = max(rounds, len(metrics["ns/op"]))
	}
	if len(figures) == 0 {
		return fmt.Errorf("no PostgresGrowth/c=N/rows=N/op=X results")
	}
	slices.Sort(cs)
	cs = slices.Compact(cs)
	slices.Sort(rows)
	rows = slices.Compact(rows)
	ops := []string{"miss", "replay"}

	// Throughput against concurrency, a line per table size. ns/op is wall
	// time over calls, so 1e9/ns/op is calls per second.
	var tput []panel
	for _, op := range ops {
		p := panel{
			title: "RunInTx " + op + "es: throughput",
			x:     axis{label: "concurrency (goroutines, log scale)", log: true},
			y:     axis{label: "throughput (requests/s)"},
		}
		if op == "replay" {
			p.title = "RunInTx replays: throughput"
		}
		for _, c := range cs {
			p.x.ticks = append(p.x.ticks, tick{float64(c), strconv.Itoa(c)})
		}
		for _, n := range rows {
			s := series{name: rowsLabel(n) + " rows"}
			for _, c := range cs {
				if ns := figures[growthKey{op, c, n}]["ns/op"]; len(ns) > 0 {
					lo, med, hi := summary(ns)
					s.pts = append(s.pts, pt{float64(c), 1e9 / med, 1e9 / hi, 1e9 / lo})
				}
			}
			p.series = append(p.series, s)
		}
		tput = append(tput, p)
	}
	sub := subtitle(res, load, note, fmt.Sprintf("Postgres 15 in a container (fsync=off, defaults otherwise); medians of %d rounds, bars from the smallest to the largest", rounds))
	if err := writeSVG(filepath.Join(out, "growth-throughput.svg"), "Idempotency-key table growth: throughput against concurrency", sub, tput); err != nil {
		return err
	}

	// p99 against table size, a line per concurrency; the x axis places
	// the sizes evenly (0 has no place on a log scale).
	var p99 []panel
	for _, op := range ops {
		p := panel{
			title: "RunInTx " + op + "es: p99 latency",
			x:     axis{label: "rows already in the table (evenly spaced, not to scale)"},
			y:     axis{label: "p99 latency (ms, log scale)", log: true},
		}
		if op == "replay" {
			p.title = "RunInTx replays: p99 latency"
		}
		for i, n := range rows {
			p.x.ticks = append(p.x.ticks, tick{float64(i), rowsLabel(n)})
		}
		for _, c := range cs {
			s := series{name: fmt.Sprintf("c=%d", c)}
			for i, n := range rows {
				if us := figures[growthKey{op, c, n}]["p99-us"]; len(us) > 0 {
					lo, med, hi := summary(us)
					s.pts = append(s.pts, pt{float64(i), med / 1e3, lo / 1e3, hi / 1e3})
				}
			}
			p.series = append(p.series, s)
		}
		p99 = append(p99, p)
	}
	if err := writeSVG(filepath.Join(out, "growth-p99.svg"), "Idempotency-key table growth: p99 latency against table size", sub, p99); err != nil {
		return err
	}

	// WAL per miss against table size, a line per concurrency (replays
	// write none).
	wal := panel{
		title: "RunInTx misses: WAL written per call",
		x:     axis{label: "rows already in the table (evenly spaced, not to scale)"},
		y:     axis{label: "WAL per miss (bytes)"},
	}
	for i, n := range rows {
		wal.x.ticks = append(wal.x.ticks, tick{float64(i), rowsLabel(n)})
	}
	for _, c := range cs {
		s := series{name: fmt.Sprintf("c=%d", c)}
		for i, n := range rows {
			if b := figures[growthKey{"miss", c, n}]["WAL-B/op"]; len(b) > 0 {
				lo, med, hi := summary(b)
				s.pts = append(s.pts, pt{float64(i), med, lo, hi})
			}
		}
		wal.series = append(wal.series, s)
	}
	if err := writeSVG(filepath.Join(out, "growth-wal.svg"), "Idempotency-key table growth: WAL per miss against table size", sub, []panel{wal}); err != nil {
		return err
	}

	// The same figures as a Markdown table, on standard output.
	fmt.Println("| op | c | rows | throughput (req/s) | p50 (ms) | p99 (ms) | WAL B/call | table + indexes (MB) |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, op := range ops {
		for _, c := range cs {
			for _, n := range rows {
				f := figures[growthKey{op, c, n}]
				if len(f["ns/op"]) == 0 {
					continue
				}
				lo, med, hi := summary(f["ns/op"])
				_, p50, _ := summary(f["p50-us"])
				p99lo, p99, p99hi := summary(f["p99-us"])
				_, wal, _ := summary(f["WAL-B/op"])
				_, mb, _ := summary(f["table-MB"])
				fmt.Printf("| %s | %d | %s | %s (%s–%s) | %s | %s (%s–%s) | %s | %s |\n", op, c, rowsLabel(n),
					num(1e9/med), num(1e9/hi), num(1e9/lo), num(p50/1e3), num(p99/1e3), num(p99lo/1e3), num(p99hi/1e3), num(wal), num(mb))
			}
		}
	}
	return nil
}

var entryName = regexp.MustCompile(`^MemstoreBytesPerEntry/answer=(\d+)B$`)

func entryPlot(res *benchResults, load loadInfo, note, out string) error {
	type point struct {
		size           float64
		perEntry, keys []float64
	}
	var points []point
	for name, metrics := range res.data {
		m := entryName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		size, _ := strconv.ParseFloat(m[1], 64)
		points = append(points, point{size, metrics["B/entry"], metrics["keys"]})
	}
	if len(points) == 0 {
		return fmt.Errorf("no MemstoreBytesPerEntry/answer=NB results")
	}
	slices.SortFunc(points, func(a, b point) int { return cmp.Compare(a.size, b.size) })
	p := panel{
		title: "memstore: heap per stored key",
		x:     axis{label: "stored answer (bytes, log scale)", log: true},
		y:     axis{label: "live heap per key (bytes, log scale)", log: true},
	}
	measured := series{name: "heap per key (measured)"}
	alone := series{name: "the answer's bytes alone", dashed: true}
	overhead := series{name: "heap per key minus the answer"}
	runs := 0
	for _, q := range points {
		p.x.ticks = append(p.x.ticks, tick{q.size, byteLabel(q.size)})
		lo, med, hi := summary(q.perEntry)
		measured.pts = append(measured.pts, pt{q.size, med, lo, hi})
		alone.pts = append(alone.pts, pt{q.size, q.size, q.size, q.size})
		overhead.pts = append(overhead.pts, pt{q.size, med - q.size, lo - q.size, hi - q.size})
		runs = max(runs, len(q.perEntry))
	}
	p.series = []series{measured, alone, overhead}
	fmt.Println("| stored answer | keys | heap per key (B) | beyond the answer (B) |")
	fmt.Println("| --- | --- | --- | --- |")
	for _, q := range points {
		lo, med, hi := summary(q.perEntry)
		_, keys, _ := summary(q.keys)
		fmt.Printf("| %s | %.0f | %.0f (%.0f–%.0f) | %.0f |\n", byteLabel(q.size), keys, med, lo, hi, med-q.size)
	}
	p.labels = true
	sub := subtitle(res, load, note, fmt.Sprintf("idem.Do on memstore, up to 100 000 keys of one principal, live heap after GC over keys; medians of %d runs", runs))
	return writeSVG(filepath.Join(out, "memstore-bytes-per-entry.svg"), "memstore: memory per stored key against the answer's size", sub, []panel{p})
}

func subtitle(res *benchResults, load loadInfo, note, what string) []string {
	machine := "cpu: " + cmp.Or(res.cpu, "unknown")
	if res.procs != "" {
		machine += ", GOMAXPROCS " + res.procs
	}
	if load.known {
		machine += fmt.Sprintf("; run %s–%s UTC; load average (1 min) %.2f–%.2f, median %.2f over %d samples",
			load.from.UTC().Format("2006-01-02 15:04"), load.to.UTC().Format("15:04"), load.lo, load.hi, load.med, load.samples)
	}
	lines := []string{machine, what}
	if note != "" {
		lines = append(lines, note)
	}
	return lines
}

func rowsLabel(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.FormatInt(n/1_000_000, 10) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.FormatInt(n/1000, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}

func byteLabel(n float64) string {
	if n >= 1024 && math.Mod(n, 1024) == 0 {
		return strconv.FormatFloat(n/1024, 'f', -1, 64) + " KiB"
	}
	return strconv.FormatFloat(n, 'f', -1, 64) + " B"
}

// ---- drawing ----

type pt struct{ x, y, lo, hi float64 }

type series struct {
	name   string
	pts    []pt
	dashed bool
}

type tick struct {
	v     float64
	label string
}

// axis: x axes have their ticks given (the measured points); y axes get
// round ticks from the data. A linear y axis starts at 0.
type axis struct {
	label string
	log   bool
	ticks []tick
}

type panel struct {
	title  string
	x, y   axis
	series []series
	labels bool // print each point's value beside it
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"}

const panelW, panelH = 560, 400

func writeSVG(path, title string, sub []string, panels []panel) error {
	w := max(panelW*len(panels), 800)
	var lines []string
	for _, line := range sub {
		lines = append(lines, wrap(line, w/7)...)
	}
	top := 42 + 15*len(lines) + 6
	h := top + panelH
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="12" y="22" font-size="16" font-weight="bold" fill="#222">%s</text>`+"\n", esc(title))
	for i, line := range lines {
		fmt.Fprintf(&b, `<text x="12" y="%d" fill="#555">%s</text>`+"\n", 42+i*15, esc(line))
	}
	for i, p := range panels {
		drawPanel(&b, p, i*w/len(panels), top, w/len(panels), panelH)
	}
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// scale maps data values to pixels on [p0, p1].
type scale struct {
	log    bool
	lo, hi float64
	p0, p1 float64
	ticks  []tick
}

func (s scale) at(v float64) float64 {
	if s.log {
		return s.p0 + (s.p1-s.p0)*(math.Log10(v)-math.Log10(s.lo))/(math.Log10(s.hi)-math.Log10(s.lo))
	}
	return s.p0 + (s.p1-s.p0)*(v-s.lo)/(s.hi-s.lo)
}

func drawPanel(b *strings.Builder, p panel, x0, y0, w, h int) {
	px0, px1 := float64(x0+78), float64(x0+w-20)
	py0, py1 := float64(y0+28), float64(y0+h-92) // top, bottom of the plot area
	fmt.Fprintf(b, `<text x="%.0f" y="%d" font-size="14" font-weight="bold" fill="#222">%s</text>`+"\n", px0, y0+16, esc(p.title))

	// x: padded around the given ticks.
	xs := scale{log: p.x.log, p0: px0, p1: px1, ticks: p.x.ticks}
	xlo, xhi := p.x.ticks[0].v, p.x.ticks[len(p.x.ticks)-1].v
	if xs.log {
		pad := max(math.Pow(xhi/xlo, 0.06), 1.5)
		xs.lo, xs.hi = xlo/pad, xhi*pad
	} else {
		pad := math.Max(xhi-xlo, 1) * 0.08
		xs.lo, xs.hi = xlo-pad, xhi+pad
	}

	// y: from the data, bars included.
	ylo, yhi := math.Inf(1), math.Inf(-1)
	for _, s := range p.series {
		for _, q := range s.pts {
			ylo, yhi = min(ylo, q.lo, q.y), max(yhi, q.hi, q.y)
		}
	}
	ys := scale{log: p.y.log, p0: py1, p1: py0}
	if ys.log {
		ys.lo, ys.hi, ys.ticks = logTicks(ylo, yhi)
	} else {
		ys.lo, ys.hi, ys.ticks = 0, 0, nil
		top, step := niceTop(yhi)
		ys.hi = top
		for v := 0.0; v <= top+step/2; v += step {
			ys.ticks = append(ys.ticks, tick{v, num(v)})
		}
	}

	// Frame, grid, ticks.
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#fafafa" stroke="#999"/>`+"\n", px0, py0, px1-px0, py1-py0)
	for _, t := range ys.ticks {
		y := ys.at(t.v)
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e2e2e2"/>`+"\n", px0, y, px1, y)
		fmt.Fprintf(b, `<text x="%.0f" y="%.1f" fill="#444" text-anchor="end">%s</text>`+"\n", px0-6, y+4, esc(t.label))
	}
	for _, t := range xs.ticks {
		x := xs.at(t.v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e2e2e2"/>`+"\n", x, py0, x, py1)
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" fill="#444" text-anchor="middle">%s</text>`+"\n", x, py1+16, esc(t.label))
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="#222" text-anchor="middle">%s</text>`+"\n", (px0+px1)/2, py1+34, esc(p.x.label))
	fmt.Fprintf(b, `<text transform="translate(%d,%.0f) rotate(-90)" fill="#222" text-anchor="middle">%s</text>`+"\n", x0+16, (py0+py1)/2, esc(p.y.label))

	// Lines, points, bars.
	for i, s := range p.series {
		color := palette[i%len(palette)]
		var path strings.Builder
		for k, q := range s.pts {
			fmt.Fprintf(&path, "%s%.1f,%.1f ", map[bool]string{true: "M", false: "L"}[k == 0], xs.at(q.x), ys.at(q.y))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="5,4"`
		}
		fmt.Fprintf(b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.TrimSpace(path.String()), color, dash)
		for _, q := range s.pts {
			x := xs.at(q.x)
			if q.hi > q.lo {
				fmt.Fprintf(b, `<path d="M%.1f,%.1f L%.1f,%.1f M%.1f,%.1f L%.1f,%.1f M%.1f,%.1f L%.1f,%.1f" stroke="%s" stroke-width="1"/>`+"\n",
					x, ys.at(q.lo), x, ys.at(q.hi), x-4, ys.at(q.lo), x+4, ys.at(q.lo), x-4, ys.at(q.hi), x+4, ys.at(q.hi), color)
			}
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %s</title></circle>`+"\n", x, ys.at(q.y), color, esc(s.name), num(q.y))
			if p.labels && !s.dashed {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="%s" font-size="10">%s</text>`+"\n", x+5, ys.at(q.y)-6, color, num(q.y))
			}
		}
	}

	// Legend under the axis label, entries side by side while they fit.
	lx, ly := px0, py1+54
	for i, s := range p.series {
		width := 40 + 6.8*float64(len(s.name))
		if lx > px0 && lx+width > px1 {
			lx, ly = px0, ly+16
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="5,4"`
		}
		color := palette[i%len(palette)]
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly-4, lx+22, ly-4, color, dash)
		fmt.Fprintf(b, `<text x="%.0f" y="%.0f" fill="#222">%s</text>`+"\n", lx+28, ly, esc(s.name))
		lx += width
	}
}

// niceTop returns a round top for a linear axis from 0 and its tick step.
func niceTop(maxV float64) (top, step float64) {
	if maxV <= 0 || math.IsNaN(maxV) || math.IsInf(maxV, 0) {
		maxV = 1
	}
	raw := maxV / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step = 10 * mag
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return step * math.Ceil(maxV*1.05/step), step
}

// logTicks returns the bounds of a log axis covering lo..hi and its ticks
// at 1, 2 and 5 times the powers of ten (only the powers of ten when the
// range spans more than three decades, more when it spans less than one).
func logTicks(lo, hi float64) (float64, float64, []tick) {
	lo, hi = lo/1.15, hi*1.15
	var ticks []tick
	mults := []float64{1, 2, 5}
	switch decades := math.Log10(hi / lo); {
	case decades > 3:
		mults = []float64{1}
	case decades < 1:
		mults = []float64{1, 1.5, 2, 3, 4, 5, 6, 8}
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range mults {
			v := m * math.Pow(10, e)
			if v >= lo && v <= hi {
				ticks = append(ticks, tick{v, num(v)})
			}
		}
	}
	return lo, hi, ticks
}

// num prints v with about three significant digits and thousands as k.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 10_000:
		return strconv.FormatFloat(v/1000, 'f', 0, 64) + "k"
	case a >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + "k"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a == 0:
		return "0"
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
