package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The store part: a real Caddy with a file token store of each of
// -store-sizes tokens, filled through POST /ip-allowlist/import (streamed),
// then -store-calls route calls on one keep-alive admin connection, each
// timed from request to the end of its answer and checked by the next
// request to the site. Then -store-merge PUTs of as many new tokens, so
// that the overlay is merged into a new table during the run (at 1,024
// changed tokens); and a restart on the largest filled file.
var (
	storeSizes    = flag.String("store-sizes", "1000,1000000", "tokens in the file store, one run each, comma-separated")
	storeCalls    = flag.Int("store-calls", 500, "route calls timed per store size (five per token: add, remove, put, suspend, resume)")
	storeMerge    = flag.Int("store-merge", 1100, "PUTs of new tokens after those, so the overlay merges; 0 skips")
	storeAnyCalls = flag.Int("store-any-calls", 50, "route calls timed after the restart on the largest store, with unlisted_tokens any (the default)")
	storeChunk    = flag.Int("store-import-chunk", 50_000, "tokens per import call; 0 imports all in one")
)

// storeLabel and storeToken name token i of the store part's stores. Its
// two ranges (twoRanges) never hold 127.0.0.1, from where the checks are
// sent: the token is admitted only while a change lists that address.
func storeLabel(i int) string { return "sb-" + strconv.Itoa(i) }
func storeToken(i int) string { return "store-bench-token-" + strconv.Itoa(i) }

// storeRun is one store size's figures.
type storeRun struct {
	tokens          int
	imported        time.Duration
	importCalls     int
	importSlowest   time.Duration
	importSplit     int // calls cut short by the read deadline, made again in halves
	calls           []time.Duration
	byOp            map[string][]time.Duration
	merge           []time.Duration
	anyCalls        []time.Duration // after the restart, unlisted_tokens any
	fileMiB, rssMiB int64
}

func store(dir string) error {
	var sizes []int
	for _, f := range strings.Split(*storeSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-store-sizes: %q is not a number of tokens", f)
		}
		sizes = append(sizes, n)
	}
	fmt.Printf("store: load average at the start %s\n", loadAverage())
	var runs []*storeRun
	for _, n := range sizes {
		run, err := storeSize(dir, n, n == slices.Max(sizes))
		if err != nil {
			return fmt.Errorf("store with %d tokens: %w", n, err)
		}
		runs = append(runs, run)
	}
	printStore(runs)
	fmt.Printf("store: load average at the end %s (2 CPUs shared with other work: figures are noisy)\n", loadAverage())
	return nil
}

// loadAverage is the 1, 5 and 15 minute load averages.
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// storeSize fills a file store of n tokens and times the route calls on it;
// restart: then start Caddy again on the filled file and time its start.
func storeSize(dir string, n int, restart bool) (*storeRun, error) {
	run := &storeRun{tokens: n, byOp: map[string][]time.Duration{}}
	sub := filepath.Join(dir, fmt.Sprintf("store-%d", n))
	if err := os.Mkdir(sub, 0o700); err != nil {
		return nil, err
	}
	c, err := startStore(sub, filepath.Join(sub, "tokens.db"), "none")
	if err != nil {
		return nil, err
	}
	defer c.stop()
	if err := c.fill(sub, n, storeEntry, run); err != nil {
		return nil, err
	}
	if err := c.expect(n-1, http.StatusUnauthorized, "the import"); err != nil {
		return nil, err
	}

	// The mix: five calls per token, tokens spread over the store.
	groups := max(1, *storeCalls/5)
	if err := c.mix(n, groups, 0, run.byOp); err != nil {
		return nil, err
	}
	for _, op := range storeOps {
		run.calls = append(run.calls, run.byOp[op]...)
	}

	// New tokens, one PUT each, until the overlay has merged at least
	// once: the calls above changed groups tokens of the overlayMerge.
	for i := n; i < n+*storeMerge; i++ {
		put, _ := json.Marshal(map[string]any{"token_sha256": testkit.Digest(storeToken(i)), "allow": []string{"127.0.0.1"}})
		took, err := c.timed(http.MethodPut, "/ip-allowlist/tokens/"+storeLabel(i), string(put))
		if err != nil {
			return nil, err
		}
		run.merge = append(run.merge, took)
		if err := c.expect(i, http.StatusOK, "put (merge run)"); err != nil {
			return nil, err
		}
	}
	if info, err := os.Stat(c.storeFile); err == nil {
		run.fileMiB = info.Size() >> 20
	}
	if run.rssMiB, err = peakRSS(c.proc.Cmd.Process.Pid); err != nil {
		return nil, err
	}
	run.rssMiB >>= 20
	fmt.Printf("store: %d tokens: imported in %.2fs (%d calls, %d of them cut short by the admin server's 10 s read deadline and made again in halves; the slowest %.2fs), %d route calls, then %d new tokens PUT; store file %d MiB, peak RSS %d MiB\n",
		n, run.imported.Seconds(), run.importCalls, run.importSplit, run.importSlowest.Seconds(), len(run.calls), len(run.merge), run.fileMiB, run.rssMiB)
	if !restart {
		return run, nil
	}

	// Caddy started again on the filled file, with unlisted_tokens left
	// at its default (any): until the store has opened and the routes
	// answer, and until a store token is admitted. Then a short mix, as
	// every change warns of the tokens no longer listed when unlisted
	// tokens are admitted anywhere.
	c.stop()
	began := time.Now()
	c2, err := startStore(sub, c.storeFile, "")
	if err != nil {
		return nil, err
	}
	defer c2.stop()
	opened := time.Since(began)
	if _, ok := testkit.Wait(time.Minute, func() bool { return c2.site(0) == http.StatusOK }); !ok {
		return nil, fmt.Errorf("after the restart, a store token was not admitted within a minute")
	}
	admitted := time.Since(began)
	hwm, err := peakRSS(c2.proc.Cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	fmt.Printf("store: %d tokens: Caddy started again on the filled store file: routes answering after %.2fs, a store token admitted after %.2fs, peak RSS %d MiB (goal <= 5 s, <= 1 GiB)\n",
		n, opened.Seconds(), admitted.Seconds(), hwm>>20)
	if *storeAnyCalls > 0 {
		byOp := map[string][]time.Duration{}
		if err := c2.mix(n, max(1, *storeAnyCalls/5), 1, byOp); err != nil {
			return nil, fmt.Errorf("unlisted_tokens any: %w", err)
		}
		run.anyCalls = slices.Concat(slices.Collect(maps.Values(byOp))...)
	}
	return run, nil
}

// importEntry is one token of an import: its label, its token (written
// as its digest), its allow list and its owner ("": none).
type importEntry = testkit.Entry

// storeEntry is token i of the store part's stores.
func storeEntry(i int) importEntry {
	return importEntry{Label: storeLabel(i), Token: storeToken(i), Allow: twoRanges(i)}
}

// fill imports tokens 0 to n (not included), entry(i) for each, into c's
// store: -store-import-chunk tokens in each call, streamed from a file.
// Caddy's admin server reads a request for 10 s at most (its
// ReadTimeout), which one call of 1,000,000 tokens overruns, and so may
// one of 50,000 into a large store on a loaded machine: a call that
// overruns it is made again as two of half the size (the entries it kept
// are replaced).
func (c *storeCaddy) fill(dir string, n int, entry func(int) importEntry, run *storeRun) error {
	chunk := *storeChunk
	if chunk <= 0 || chunk > n {
		chunk = n
	}
	for from := 0; from < n; from += chunk {
		if err := c.importRange(dir, from, min(from+chunk, n), entry, run); err != nil {
			return err
		}
	}
	return nil
}

// importRange imports tokens from to to (not included) in one call, or,
// if the admin server's read deadline cuts the call short, in two halves.
func (c *storeCaddy) importRange(dir string, from, to int, entry func(int) importEntry, run *storeRun) error {
	path := filepath.Join(dir, "import.json")
	if err := testkit.WriteTokens(path, to-from, func(i int) testkit.Entry { return entry(from + i) }); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	began := time.Now()
	code, body, err := c.call(http.MethodPost, "/ip-allowlist/import", f)
	took := time.Since(began)
	f.Close()
	run.imported += took
	run.importCalls++
	run.importSlowest = max(run.importSlowest, took)
	if err != nil {
		return fmt.Errorf("import of tokens %d to %d: %w", from, to-1, err)
	}
	if code == http.StatusBadRequest && strings.Contains(body, "i/o timeout") && to-from > 1000 {
		run.importSplit++
		mid := from + (to-from)/2
		if err := c.importRange(dir, from, mid, entry, run); err != nil {
			return err
		}
		return c.importRange(dir, mid, to, entry, run)
	}
	if want := fmt.Sprintf(`"imported":%d,`, to-from); code != http.StatusOK || !strings.Contains(body, want) {
		return fmt.Errorf("import of tokens %d to %d: %d %s", from, to-1, code, body)
	}
	return nil
}

// storeOps are the mix's calls, in the order mix makes them.
var storeOps = []string{"add", "remove", "put", "suspend", "resume"}

// mix makes the five calls of storeOps on each of groups tokens spread
// over the store's n (the first at offset), checks each with the next
// request, and adds each call's time to byOp.
func (c *storeCaddy) mix(n, groups, offset int, byOp map[string][]time.Duration) error {
	for g := range groups {
		i := offset + g*(n/groups)
		label, digest := storeLabel(i), testkit.Digest(storeToken(i))
		put, _ := json.Marshal(map[string]any{"token_sha256": digest, "allow": append([]string{"127.0.0.1"}, twoRanges(i)...)})
		for k, op := range []struct {
			method, path, body string
			want               int // the site's answer to token i from 127.0.0.1 after the call
		}{
			{http.MethodPost, "/ip-allowlist/tokens/" + label + "/allow", `{"entries": ["127.0.0.1"], "ttl": "1h"}`, http.StatusOK},
			{http.MethodDelete, "/ip-allowlist/tokens/" + label + "/allow/127.0.0.1", "", http.StatusUnauthorized},
			{http.MethodPut, "/ip-allowlist/tokens/" + label, string(put), http.StatusOK},
			{http.MethodPost, "/ip-allowlist/tokens/" + label + "/suspend", "", http.StatusUnauthorized},
			{http.MethodPost, "/ip-allowlist/tokens/" + label + "/resume", "", http.StatusOK},
		} {
			took, err := c.timed(op.method, op.path, op.body)
			if err != nil {
				return err
			}
			byOp[storeOps[k]] = append(byOp[storeOps[k]], took)
			if err := c.expect(i, op.want, storeOps[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// printStore prints the sizes side by side.
func printStore(runs []*storeRun) {
	fmt.Printf("store: route call latency (ms), %d calls per size on one keep-alive admin connection, each checked by the next request:\n", len(runs[0].calls))
	row := func(name string, cell func(*storeRun) string, goal string) {
		fmt.Printf("store:   %-24s", name)
		for _, r := range runs {
			fmt.Printf(" %14s", cell(r))
		}
		fmt.Printf("   %s\n", goal)
	}
	row("", func(r *storeRun) string { return fmt.Sprintf("%d tokens", r.tokens) }, "goal")
	row("median", func(r *storeRun) string { return ms(quantile(r.calls, 0.5)) }, "<= 2 ms")
	row("p99", func(r *storeRun) string { return ms(quantile(r.calls, 0.99)) }, "<= 20 ms")
	row("max", func(r *storeRun) string { return ms(slices.Max(r.calls)) }, "")
	for _, op := range storeOps {
		row("  median "+op, func(r *storeRun) string { return ms(quantile(r.byOp[op], 0.5)) }, "")
	}
	if len(runs[0].merge) > 0 {
		row(fmt.Sprintf("merge run (%d): median", len(runs[0].merge)), func(r *storeRun) string { return ms(quantile(r.merge, 0.5)) }, "")
		row("  p99", func(r *storeRun) string { return ms(quantile(r.merge, 0.99)) }, "")
		row("  max (the merge)", func(r *storeRun) string { return ms(slices.Max(r.merge)) }, "")
	}
	if last := runs[len(runs)-1]; len(last.anyCalls) > 0 {
		fmt.Printf("store:   with unlisted_tokens any (the default), after the restart, %d calls with %d tokens: median %s ms, p99 %s ms, max %s ms (goal <= 2 ms, <= 20 ms)\n",
			len(last.anyCalls), last.tokens, ms(quantile(last.anyCalls, 0.5)), ms(quantile(last.anyCalls, 0.99)), ms(slices.Max(last.anyCalls)))
	}
	row("import (s)", func(r *storeRun) string { return fmt.Sprintf("%.2f", r.imported.Seconds()) }, fmt.Sprintf("%d tokens per call", *storeChunk))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()*1000) }

// quantile is the q-th of ds, sorted: the element below which q of them
// lie.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*q))]
}

// storeCaddy is a Caddy with its admin endpoint and a file store, and a
// keep-alive client for each.
type storeCaddy struct {
	*server
	admin, storeFile string
	adminClient      *http.Client
	siteClient       *http.Client
}

// startStore runs Caddy with an admin endpoint and one site behind
// ip_allowlist on the file store at storeFile, with unlisted_tokens
// unlisted ("" leaves it at its default), and waits until both accept
// connections and the store has opened.
func startStore(dir, storeFile, unlisted string) (*storeCaddy, error) {
	if unlisted != "" {
		unlisted = "\t\tunlisted_tokens " + unlisted + "\n"
	}
	route := fmt.Sprintf("\tip_allowlist {\n%s\t\tstore file %s\n\t}\n\trespond \"ok\"\n", unlisted, storeFile)
	return startStoreRoute(dir, "store", storeFile, route)
}

// startStoreRoute is startStore with the site's route given whole: it
// must open the file store at storeFile.
func startStoreRoute(dir, name, storeFile, route string) (*storeCaddy, error) {
	admin, err := testkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	srv, err := startAdmin(dir, name, admin, route)
	if err != nil {
		return nil, err
	}
	c := &storeCaddy{
		server:      srv,
		admin:       "http://" + admin,
		storeFile:   storeFile,
		adminClient: keepAliveClient(),
		siteClient:  keepAliveClient(),
	}
	// The store opens when the config's apps start, which may be after
	// the site listens; until then the routes refuse.
	if _, ok := testkit.Wait(time.Minute, func() bool {
		code, _, err := c.call(http.MethodGet, "/ip-allowlist/tokens?limit=1", nil)
		return err == nil && code == http.StatusOK
	}); !ok {
		srv.stop()
		out := nodeLog(dir, srv)
		return nil, fmt.Errorf("caddy (%s): the token store did not open within a minute:\n%s", name, out)
	}
	c.ready = time.Since(srv.began)
	return c, nil
}

// keepAliveClient keeps one connection open and reuses it.
func keepAliveClient() *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
	}}
}

// call sends one request to the admin endpoint and reads the answer whole.
func (c *storeCaddy) call(method, path string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, c.admin+path, body)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.adminClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), err
}

// timed is one route call that must succeed, and how long it took.
func (c *storeCaddy) timed(method, path, body string) (time.Duration, error) {
	began := time.Now()
	code, answer, err := c.call(method, path, bytes.NewReader([]byte(body)))
	took := time.Since(began)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if code/100 != 2 {
		return 0, fmt.Errorf("%s %s: %d %s", method, path, code, answer)
	}
	return took, nil
}

// site is the site's status for token i from 127.0.0.1.
func (c *storeCaddy) site(i int) int {
	req, _ := http.NewRequest(http.MethodGet, c.url, nil)
	req.Header.Set("Authorization", "Bearer "+storeToken(i))
	resp, err := c.siteClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// expect checks that the next request with token i gets want.
func (c *storeCaddy) expect(i, want int, after string) error {
	if got := c.site(i); got != want {
		return fmt.Errorf("after %s, token %s got %d from the next request, want %d", after, storeLabel(i), got, want)
	}
	return nil
}
