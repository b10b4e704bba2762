//go:build ignore

// benchratio reads `go test -bench` output (any number of files, or
// standard input) and prints, as Markdown, the ratios and goals of
// docs/BENCHMARKS.md and a table of every benchmark's figures.
//
//	go run scripts/benchratio.go bench-out/*.txt
//
// A benchmark run several times (-count, or rounds: name#01, name#02...)
// has several samples. A figure is the median of its samples, with the
// range. A ratio pairs the k-th sample of one side with the k-th of the
// other and gives the median of those paired ratios and their range (with
// the rounds of IDEM_BENCH_ROUNDS, the k-th samples of both sides ran next
// to each other in time, on the same server); with unequal sample counts it
// divides the medians.
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A spec is one line of the ratio table. With den empty it reports num's
// metric itself against the goal.
type spec struct {
	label    string
	num, den string // benchmark names without "Benchmark" and the -GOMAXPROCS suffix
	metric   string
	goal     string // "<= 1.3", "< 1", "= 0", "" for information only
}

var specs = []spec{
	{"Postgres miss, c=1: RunInTx / plain tx", "PostgresMiss/c=1/impl=RunInTx", "PostgresMiss/c=1/impl=plain-tx", "ns/op", ""},
	{"Postgres miss, c=16: RunInTx / plain tx", "PostgresMiss/c=16/impl=RunInTx", "PostgresMiss/c=16/impl=plain-tx", "ns/op", "<= 1.3"},
	{"Postgres miss against the seller's create_media_buy writes, c=1: RunInTx / plain tx", "PostgresMissSeller/c=1/impl=RunInTx", "PostgresMissSeller/c=1/impl=plain-tx", "ns/op", ""},
	{"Postgres miss against the seller's create_media_buy writes, c=16: RunInTx / plain tx", "PostgresMissSeller/c=16/impl=RunInTx", "PostgresMissSeller/c=16/impl=plain-tx", "ns/op", "<= 1.15"},
	{"Postgres replay, c=1: RunInTx / SELECT in tx", "PostgresReplay/c=1/impl=RunInTx", "PostgresReplay/c=1/impl=select-tx", "ns/op", "<= 1"},
	{"Postgres replay, c=16: RunInTx / SELECT in tx", "PostgresReplay/c=16/impl=RunInTx", "PostgresReplay/c=16/impl=select-tx", "ns/op", "<= 1"},
	{"Postgres replay, c=1: RunInTx with ReplayPreRead / SELECT in tx", "PostgresReplay/c=1/impl=RunInTx-preread", "PostgresReplay/c=1/impl=select-tx", "ns/op", "<= 1"},
	{"Postgres replay, c=16: RunInTx with ReplayPreRead / SELECT in tx", "PostgresReplay/c=16/impl=RunInTx-preread", "PostgresReplay/c=16/impl=select-tx", "ns/op", "<= 1"},
	{"Postgres miss, c=1: RunInTx with ReplayPreRead / plain tx", "PostgresMiss/c=1/impl=RunInTx-preread", "PostgresMiss/c=1/impl=plain-tx", "ns/op", ""},
	{"Postgres miss, c=16: RunInTx with ReplayPreRead / plain tx", "PostgresMiss/c=16/impl=RunInTx-preread", "PostgresMiss/c=16/impl=plain-tx", "ns/op", ""},
	{"Postgres replay: WAL bytes per replay, c=1", "PostgresReplay/c=1/impl=RunInTx", "", "WAL-B/op", "= 0"},
	{"Postgres replay: WAL bytes per replay, c=16", "PostgresReplay/c=16/impl=RunInTx", "", "WAL-B/op", "= 0"},
	{"Postgres miss: WAL bytes per miss, RunInTx, c=1", "PostgresMiss/c=1/impl=RunInTx", "", "WAL-B/op", ""},
	{"Postgres miss: WAL bytes per miss, RunInTx, c=16", "PostgresMiss/c=16/impl=RunInTx", "", "WAL-B/op", ""},
	{"Postgres miss against the seller's writes: WAL bytes per miss, RunInTx, c=1", "PostgresMissSeller/c=1/impl=RunInTx", "", "WAL-B/op", ""},
	{"Postgres miss against the seller's writes: WAL bytes per call, plain tx, c=1", "PostgresMissSeller/c=1/impl=plain-tx", "", "WAL-B/op", ""},
	{"Postgres miss: WAL bytes per call, plain tx, c=1", "PostgresMiss/c=1/impl=plain-tx", "", "WAL-B/op", ""},
	{"Postgres miss: round trips per miss, RunInTx", "PostgresMiss/c=1/impl=RunInTx", "", "RT/op", ""},
	{"Postgres replay: round trips per replay, RunInTx", "PostgresReplay/c=1/impl=RunInTx", "", "RT/op", ""},
	{"Postgres replay: round trips per replay, RunInTx with ReplayPreRead", "PostgresReplay/c=1/impl=RunInTx-preread", "", "RT/op", ""},
	{"memstore Do replay, 1330 B payload, T=RawMessage (ns)", "MemstoreDo/payload=1330B/T=RawMessage/op=replay", "", "ns/op", "< 1000"},
	{"memstore Do replay, 1330 B payload, T=struct (ns)", "MemstoreDo/payload=1330B/T=struct/op=replay", "", "ns/op", "< 1000"},
	{"memstore Do replay, 34 B payload, T=RawMessage (ns)", "MemstoreDo/payload=34B/T=RawMessage/op=replay", "", "ns/op", "< 1000"},
	{"memstore Do replay, T=RawMessage (allocs)", "MemstoreDo/payload=1330B/T=RawMessage/op=replay", "", "allocs/op", "<= 3"},
	{"memstore Do replay, T=struct (allocs)", "MemstoreDo/payload=1330B/T=struct/op=replay", "", "allocs/op", ""},
	{"canonical hash 1 KB: idem / json.Marshal (time)", "CanonicalHash/size=1KB/impl=idem", "CanonicalHash/size=1KB/impl=json-marshal", "ns/op", "< 1"},
	{"canonical hash 1 KB: idem / jcs (time)", "CanonicalHash/size=1KB/impl=idem", "CanonicalHash/size=1KB/impl=jcs", "ns/op", "< 1"},
	{"canonical hash 10 KB: idem / json.Marshal (time)", "CanonicalHash/size=10KB/impl=idem", "CanonicalHash/size=10KB/impl=json-marshal", "ns/op", "< 1"},
	{"canonical hash 10 KB: idem / jcs (time)", "CanonicalHash/size=10KB/impl=idem", "CanonicalHash/size=10KB/impl=jcs", "ns/op", "< 1"},
	{"canonical hash 100 KB: idem / json.Marshal (time)", "CanonicalHash/size=100KB/impl=idem", "CanonicalHash/size=100KB/impl=json-marshal", "ns/op", "< 1"},
	{"canonical hash 100 KB: idem / jcs (time)", "CanonicalHash/size=100KB/impl=idem", "CanonicalHash/size=100KB/impl=jcs", "ns/op", "< 1"},
	{"table growth, c=1: 1M rows / empty (mean)", "PostgresGrowth/c=1/rows=1M/op=miss", "PostgresGrowth/c=1/rows=0/op=miss", "ns/op", "<= 1.2"},
	{"table growth, c=1: 1M rows / empty (p50)", "PostgresGrowth/c=1/rows=1M/op=miss", "PostgresGrowth/c=1/rows=0/op=miss", "p50-us", "<= 1.2"},
	{"table growth, c=1: 10M rows / empty (mean)", "PostgresGrowth/c=1/rows=10M/op=miss", "PostgresGrowth/c=1/rows=0/op=miss", "ns/op", "<= 1.2"},
	{"table growth, c=1: 10M rows / empty (p50)", "PostgresGrowth/c=1/rows=10M/op=miss", "PostgresGrowth/c=1/rows=0/op=miss", "p50-us", "<= 1.2"},
	{"table growth, c=16: 1M rows / empty (throughput)", "PostgresGrowth/c=16/rows=1M/op=miss", "PostgresGrowth/c=16/rows=0/op=miss", "ns/op", "<= 1.2"},
	{"table growth, c=16: 10M rows / empty (throughput)", "PostgresGrowth/c=16/rows=10M/op=miss", "PostgresGrowth/c=16/rows=0/op=miss", "ns/op", "<= 1.2"},
	{"table growth, c=1: 10M rows / empty (replay mean)", "PostgresGrowth/c=1/rows=10M/op=replay", "PostgresGrowth/c=1/rows=0/op=replay", "ns/op", "<= 1.2"},
	{"table growth, c=16: 10M rows / empty (replay throughput)", "PostgresGrowth/c=16/rows=10M/op=replay", "PostgresGrowth/c=16/rows=0/op=replay", "ns/op", "<= 1.2"},
	{"table growth: WAL bytes per miss, 10M rows, c=1", "PostgresGrowth/c=1/rows=10M/op=miss", "", "WAL-B/op", ""},
	{"sweep: miss p99 during Store.Sweep / before", "PostgresSweep/sweep=Store.Sweep", "", "p99-ratio", "<= 1.2"},
	{"sweep: Store.Sweep rows deleted per second (under load)", "PostgresSweep/sweep=Store.Sweep", "", "sweep-rows/s", ""},
	// What the prototypes in integration/bench_test.go would give.
	{"what-if miss, c=1: sketch-lock-batched / plain tx", "PostgresMiss/c=1/impl=sketch-lock-batched", "PostgresMiss/c=1/impl=plain-tx", "ns/op", ""},
	{"what-if miss, c=16: sketch-lock-batched / plain tx", "PostgresMiss/c=16/impl=sketch-lock-batched", "PostgresMiss/c=16/impl=plain-tx", "ns/op", "<= 1.3"},
	{"what-if miss, c=1: sketch-lock-pipelined / plain tx", "PostgresMiss/c=1/impl=sketch-lock-pipelined", "PostgresMiss/c=1/impl=plain-tx", "ns/op", ""},
	{"what-if miss, c=16: sketch-lock-pipelined / plain tx", "PostgresMiss/c=16/impl=sketch-lock-pipelined", "PostgresMiss/c=16/impl=plain-tx", "ns/op", "<= 1.3"},
	{"what-if miss: WAL bytes per miss, sketch-lock-pipelined, c=1", "PostgresMiss/c=1/impl=sketch-lock-pipelined", "", "WAL-B/op", ""},
	{"what-if sweep, 20 ms pause between batches: miss p99 during / before", "PostgresSweep/sweep=sketch-pause-20ms", "", "p99-ratio", "<= 1.2"},
	{"what-if sweep, 20 ms pause between batches: rows per second", "PostgresSweep/sweep=sketch-pause-20ms", "", "sweep-rows/s", ""},
	{"what-if partitioned by expiry, sweep by DROP TABLE: miss p99 during / before", "PostgresSweepPartitioned/sweep=drop", "", "p99-ratio", "<= 1.2"},
	{"what-if partitioned by expiry, sweep by DETACH then DROP: miss p99 during / before", "PostgresSweepPartitioned/sweep=detach-drop", "", "p99-ratio", "<= 1.2"},
	{"what-if partitioned by expiry, sweep by DETACH CONCURRENTLY then DROP: miss p99 during / before", "PostgresSweepPartitioned/sweep=detach-concurrently-drop", "", "p99-ratio", "<= 1.2"},
	{"what-if partitioned by expiry, sweep by DROP TABLE: rows per second", "PostgresSweepPartitioned/sweep=drop", "", "sweep-rows/s", ""},
	{"what-if partitioned by expiry, sweep by DETACH CONCURRENTLY then DROP: rows per second", "PostgresSweepPartitioned/sweep=detach-concurrently-drop", "", "sweep-rows/s", ""},
	{"what-if partitioned by expiry, miss c=1: sketch-lock-pipelined, 75 partitions / plain table", "PostgresMissPartitioned/c=1/table=partitioned", "PostgresMissPartitioned/c=1/table=plain", "ns/op", ""},
	{"what-if partitioned by expiry, miss c=16: sketch-lock-pipelined, 75 partitions / plain table", "PostgresMissPartitioned/c=16/table=partitioned", "PostgresMissPartitioned/c=16/table=plain", "ns/op", ""},
	{"sweep, batches of 100: miss p99 during / before", "PostgresSweep/sweep=Store.Sweep-batch100", "", "p99-ratio", "<= 1.2"},
	{"sweep, batches of 100: rows per second", "PostgresSweep/sweep=Store.Sweep-batch100", "", "sweep-rows/s", ""},
	{"before: sweep joining back through the primary key: miss p99 during / before", "PostgresSweep/sweep=sketch-join", "", "p99-ratio", "<= 1.2"},
	{"before: sweep joining back through the primary key: rows per second", "PostgresSweep/sweep=sketch-join", "", "sweep-rows/s", ""},
}

// results maps a full benchmark name (with its -GOMAXPROCS suffix) to its
// metrics' samples, in the order they were read.
type results struct {
	order []string
	data  map[string]map[string][]float64
	units map[string][]string
}

var (
	line  = regexp.MustCompile(`^Benchmark(\S+)\s+(\d+)\s+(.*)$`)
	round = regexp.MustCompile(`#\d+`)
)

func (r *results) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		// Rounds of the same sub-benchmark (name#01, name#02...) are samples
		// of one benchmark, like -count runs.
		name := round.ReplaceAllString(m[1], "")
		f := strings.Fields(m[3])
		if len(f)%2 != 0 {
			continue
		}
		if r.data[name] == nil {
			r.data[name] = map[string][]float64{}
			r.order = append(r.order, name)
		}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			unit := f[i+1]
			if _, ok := r.data[name][unit]; !ok {
				r.units[name] = append(r.units[name], unit)
			}
			r.data[name][unit] = append(r.data[name][unit], v)
		}
	}
	return sc.Err()
}

var procs = regexp.MustCompile(`-\d+$`)

// lookup finds the samples of a benchmark by its name without the
// -GOMAXPROCS suffix (the first match, in reading order).
func (r *results) lookup(name, metric string) []float64 {
	for _, full := range r.order {
		if full == name || procs.ReplaceAllString(full, "") == name {
			return r.data[full][metric]
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func spread(xs []float64) (float64, float64) { return slices.Min(xs), slices.Max(xs) }

func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1e6:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func meets(v float64, goal string) string {
	if goal == "" {
		return "(info)"
	}
	f := strings.Fields(goal)
	g, _ := strconv.ParseFloat(f[1], 64)
	ok := false
	switch f[0] {
	case "<=":
		ok = v <= g
	case "<":
		ok = v < g
	case "=":
		ok = math.Abs(v-g) < 0.5
	}
	if ok {
		return "yes"
	}
	return "**no**"
}

func main() {
	r := &results{data: map[string]map[string][]float64{}, units: map[string][]string{}}
	if len(os.Args) == 1 {
		if err := r.read(os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	for _, path := range os.Args[1:] {
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		err = r.read(f)
		f.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}

	fmt.Println("### Ratios and goals")
	fmt.Println()
	fmt.Println("| comparison | metric | value (median) | range over runs | runs | goal | meets goal |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	for _, s := range specs {
		a := r.lookup(s.num, s.metric)
		if len(a) == 0 {
			continue
		}
		if s.den == "" {
			lo, hi := spread(a)
			m := median(a)
			fmt.Printf("| %s | %s | %s | %s – %s | %d | %s | %s |\n", s.label, s.metric, num(m), num(lo), num(hi), len(a), s.goal, meets(m, s.goal))
			continue
		}
		b := r.lookup(s.den, s.metric)
		if len(b) == 0 {
			continue
		}
		var ratios []float64
		if len(a) == len(b) {
			for k := range a {
				ratios = append(ratios, a[k]/b[k])
			}
		} else {
			ratios = []float64{median(a) / median(b)}
		}
		m := median(ratios)
		lo, hi := spread(ratios)
		fmt.Printf("| %s | %s | %s× (%s / %s) | %s – %s | %d | %s | %s |\n", s.label, s.metric, num(m), num(median(a)), num(median(b)),
			num(lo), num(hi), len(ratios), s.goal, meets(m, s.goal))
	}

	fmt.Println()
	fmt.Println("### Every benchmark (median of the runs; range of ns/op)")
	fmt.Println()
	fmt.Println("| benchmark | runs | ns/op | ns/op range | other metrics (median) |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	for _, name := range r.order {
		ns := r.data[name]["ns/op"]
		if len(ns) == 0 {
			continue
		}
		lo, hi := spread(ns)
		var other []string
		for _, u := range r.units[name] {
			if u != "ns/op" {
				other = append(other, num(median(r.data[name][u]))+" "+u)
			}
		}
		fmt.Printf("| %s | %d | %s | %s – %s | %s |\n", name, len(ns), num(median(ns)), num(lo), num(hi), strings.Join(other, ", "))
	}
}
