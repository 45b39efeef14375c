// Command ratios reads go test -bench output on standard input, copies it
// to standard output, and then prints the ratios make bench reports, each
// beside its goal, from the median ns/op of each benchmark:
//
//   - BenchmarkServeHTTPParallel at -cpu 1 over -cpu 2 (goal >= 1.8);
//   - BenchmarkServeHTTPOverlay with a 10,000-entry overlay over none
//     (goal <= 1.10: within 10%).
//
// Beside each, the ratio of the fastest runs: on a machine shared with
// other work, the least disturbed. It fails if either benchmark is missing
// from the input.
package main

import (
	"bufio"
	"fmt"
	"log"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// resultLine is a benchmark result: name, the -cpu suffix (absent for 1),
// and ns/op.
var resultLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-(\d+))?\s+\d+\s+([0-9.]+) ns/op`)

func main() {
	log.SetFlags(0)
	// ns/op of each run, by name and -cpu.
	runs := map[string]map[int][]float64{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cpu := 1
		if m[2] != "" {
			cpu, _ = strconv.Atoi(m[2])
		}
		ns, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		if runs[m[1]] == nil {
			runs[m[1]] = map[int][]float64{}
		}
		runs[m[1]][cpu] = append(runs[m[1]][cpu], ns)
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ratios: load average %s (2 CPUs shared: figures are noisy, ratios were measured in one run)\n", loadAverage())
	ok := parallel(runs)
	ok = overlay(runs) && ok
	if !ok {
		os.Exit(1)
	}
}

// parallel prints each BenchmarkServeHTTPParallel case's ns/op at -cpu 1
// over -cpu 2.
func parallel(runs map[string]map[int][]float64) bool {
	const prefix = "BenchmarkServeHTTPParallel/"
	names := named(runs, prefix)
	if len(names) == 0 {
		fmt.Println("ratios: no BenchmarkServeHTTPParallel results in the input")
		return false
	}
	fmt.Println("ratios: BenchmarkServeHTTPParallel, ns/op at -cpu 1 over -cpu 2 (median of each); goal >= 1.8")
	ok := true
	for _, name := range names {
		one, two := runs[name][1], runs[name][2]
		if len(one) == 0 || len(two) == 0 {
			fmt.Printf("ratios:   %-28s missing -cpu 1 or -cpu 2 (run with -cpu 1,2)\n", strings.TrimPrefix(name, prefix))
			ok = false
			continue
		}
		r := median(one) / median(two)
		fmt.Printf("ratios:   %-28s -cpu 1 %8.1f ns/op, -cpu 2 %8.1f ns/op (%d runs each): %.2fx %s; fastest runs' ratio %.2fx\n",
			strings.TrimPrefix(name, prefix), median(one), median(two), min(len(one), len(two)), r, verdict(r >= 1.8), slices.Min(one)/slices.Min(two))
	}
	return ok
}

// overlay prints each BenchmarkServeHTTPOverlay case with an overlay over
// the case without one, at each -cpu it was run with.
func overlay(runs map[string]map[int][]float64) bool {
	const prefix = "BenchmarkServeHTTPOverlay/"
	none := prefix + "overlay=none/token_in_base"
	if runs[none] == nil {
		fmt.Println("ratios: no BenchmarkServeHTTPOverlay results in the input")
		return false
	}
	fmt.Println("ratios: BenchmarkServeHTTPOverlay, ns/op with a 10,000-entry overlay over none (median of each); goal <= 1.10")
	for _, name := range named(runs, prefix) {
		if name == none {
			continue
		}
		for _, cpu := range sortedKeys(runs[name]) {
			base, with := runs[none][cpu], runs[name][cpu]
			if len(base) == 0 {
				continue
			}
			r := median(with) / median(base)
			fmt.Printf("ratios:   %-32s -cpu %d: %7.1f ns/op against %7.1f with none (%d runs each): %.3f %s; fastest runs' ratio %.3f\n",
				strings.TrimPrefix(name, prefix), cpu, median(with), median(base), min(len(base), len(with)), r, verdict(r <= 1.10), slices.Min(with)/slices.Min(base))
		}
	}
	return true
}

func verdict(met bool) string {
	if met {
		return "(goal met)"
	}
	return "(goal MISSED)"
}

func named(runs map[string]map[int][]float64, prefix string) []string {
	var out []string
	for name := range runs {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func sortedKeys(m map[int][]float64) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
