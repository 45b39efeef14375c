package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The console part: a real Caddy with a file store of -console-tokens
// tokens, filled through the import route as the store part fills its
// own (every consoleOwnedEvery-th token owned by consoleOwner), and the
// console (ip_allowlist_console) behind basic_auth. Then -console-calls
// calls of each kind of token list page, GET ROOT-/api/tokens, the kinds
// taking turns, on one keep-alive connection, each timed from request to
// the end of its answer and its page checked against the labels
// imported.
var (
	consoleTokens = flag.Int("console-tokens", 1_000_000, "tokens in the console part's file store")
	consoleCalls  = flag.Int("console-calls", 200, "token list calls timed per kind in the console part")
)

const (
	consoleOperator   = "bench" // the console's operator: sees every token
	consoleOwner      = "acme"  // an owner: sees only the tokens it owns
	consoleOwnedEvery = 1000    // token i is consoleOwner's when i%consoleOwnedEvery == 0
	consolePassword   = "bench-console-password"
	// The bcrypt cost of the users' hashes: the lowest. basic_auth keeps
	// the result of each (hash, password) it compared in its hash cache
	// (the Caddyfile adapter turns it on), so only each user's first
	// request compares at all; at cost 4 that one takes about a
	// millisecond, not the second of hash-password's default, 14.
	consoleBcryptCost = 4
)

func consoleEntry(i int) importEntry {
	e := storeEntry(i)
	if i%consoleOwnedEvery == 0 {
		e.Owner = consoleOwner
	}
	return e
}

// ownerOf is the owner consoleEntry gives the token labelled label.
func ownerOf(label string) string {
	i, err := strconv.Atoi(strings.TrimPrefix(label, "sb-"))
	if err != nil {
		return "?"
	}
	return consoleEntry(i).Owner
}

// consolePage is a token list page, as much of it as the checks read.
type consolePage struct {
	Tokens []struct {
		Label  string `json:"label"`
		Source string `json:"source"`
		Owner  string `json:"owner"`
		Allow  int    `json:"allow"`
	} `json:"tokens"`
	Next string `json:"next"`
}

// consoleKind is one kind of list call: user asks with query, and the
// page must hold want labels.
type consoleKind struct {
	name, user, query string
	want              []string // the page's labels, in order
	next              bool     // whether next must be set
	times             []time.Duration
}

func console(dir string) error {
	n := *consoleTokens
	if n < 1 {
		return fmt.Errorf("-console-tokens %d: want at least 1", n)
	}
	sub := filepath.Join(dir, "console")
	if err := os.Mkdir(sub, 0o700); err != nil {
		return err
	}
	out, err := exec.Command(*caddyBin, "hash-password", "--plaintext", consolePassword,
		"--algorithm", "bcrypt", "--bcrypt-cost", strconv.Itoa(consoleBcryptCost)).Output()
	if err != nil {
		return fmt.Errorf("caddy hash-password: %w", err)
	}
	hash := strings.TrimSpace(string(out))
	storeFile := filepath.Join(sub, "tokens.db")
	route := fmt.Sprintf("\thandle /console/* {\n\t\tbasic_auth {\n\t\t\t%s %s\n\t\t\t%s %s\n\t\t}\n"+
		"\t\tip_allowlist_console {\n\t\t\toperators %s\n\t\t}\n\t}\n"+
		"\thandle {\n\t\tip_allowlist {\n\t\t\tunlisted_tokens none\n\t\t\tstore file %s\n\t\t}\n\t\trespond \"ok\"\n\t}\n",
		consoleOperator, hash, consoleOwner, hash, consoleOperator, storeFile)
	fmt.Printf("console: load average at the start %s\n", loadAverage())
	c, err := startStoreRoute(sub, "console", storeFile, route)
	if err != nil {
		return err
	}
	defer c.stop()
	run := &storeRun{tokens: n}
	if err := c.fill(sub, n, consoleEntry, run); err != nil {
		return err
	}
	rssImport, err := peakRSS(c.proc.Cmd.Process.Pid)
	if err != nil {
		return err
	}
	owned := (n + consoleOwnedEvery - 1) / consoleOwnedEvery
	fmt.Printf("console: %d tokens (%d of them owned by %s) imported in %.2fs (%d calls, %d cut short and made again in halves)\n",
		n, owned, consoleOwner, run.imported.Seconds(), run.importCalls, run.importSplit)

	// The labels in the order the console lists them, to check its pages.
	all := make([]string, n)
	var mine []string
	for i := range n {
		all[i] = storeLabel(i)
	}
	slices.Sort(all)
	for _, l := range all {
		if ownerOf(l) == consoleOwner {
			mine = append(mine, l)
		}
	}
	page := func(labels []string, prefix, after string, limit int) ([]string, bool) {
		i, _ := slices.BinarySearch(labels, max(prefix, after))
		var out []string
		for ; i < len(labels) && strings.HasPrefix(labels[i], prefix); i++ {
			if labels[i] == after {
				continue
			}
			if len(out) == limit {
				return out, true
			}
			out = append(out, labels[i])
		}
		return out, false
	}
	// A prefix of a hundred or more labels: the label of token n/2,
	// shortened until it is.
	prefix := storeLabel(n / 2)
	for len(prefix) > len("sb-") {
		if got, _ := page(all, prefix, "", n); len(got) >= 100 {
			break
		}
		prefix = prefix[:len(prefix)-1]
	}
	mid, ownMid := all[len(all)/2], mine[len(mine)/2]

	cl := keepAliveClient()
	call := func(user, query string) (time.Duration, *consolePage, error) {
		req, err := http.NewRequest(http.MethodGet, c.url+"console/-/api/"+query, nil)
		if err != nil {
			return 0, nil, err
		}
		req.SetBasicAuth(user, consolePassword)
		began := time.Now()
		resp, err := cl.Do(req)
		if err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(began)
		if err != nil {
			return 0, nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, nil, fmt.Errorf("console %s as %s: %d %s", query, user, resp.StatusCode, body)
		}
		var p consolePage
		if err := json.Unmarshal(body, &p); err != nil {
			return 0, nil, fmt.Errorf("console %s as %s: %w", query, user, err)
		}
		return took, &p, nil
	}
	check := func(k *consoleKind, p *consolePage) error {
		var got []string
		for _, t := range p.Tokens {
			if t.Source != "store" || t.Allow != 2 || t.Owner != ownerOf(t.Label) {
				return fmt.Errorf("console, %s: row %+v, want a store token with 2 allow entries and owner %q", k.name, t, ownerOf(t.Label))
			}
			got = append(got, t.Label)
		}
		if !slices.Equal(got, k.want) || (p.Next != "") != k.next || k.next && p.Next != got[len(got)-1] {
			return fmt.Errorf("console, %s: got %d labels %.60q (next %q), want %d %.60q (next: %v)",
				k.name, len(got), got, p.Next, len(k.want), k.want, k.next)
		}
		return nil
	}
	kind := func(name, user string, labels []string, prefix, after string, limit int) *consoleKind {
		v := url.Values{}
		if prefix != "" {
			v.Set("prefix", prefix)
		}
		if after != "" {
			v.Set("after", after)
		}
		if limit != 0 {
			v.Set("limit", strconv.Itoa(limit))
		} else {
			limit = 50 // the console's default
		}
		want, next := page(labels, prefix, after, limit)
		q := "tokens"
		if len(v) > 0 {
			q += "?" + v.Encode()
		}
		return &consoleKind{name: name, user: user, query: q, want: want, next: next}
	}
	none := "sb-x"
	kinds := []*consoleKind{
		kind("first page", consoleOperator, all, "", "", 0),
		kind("first page, limit=500", consoleOperator, all, "", "", 500),
		kind("page after "+mid, consoleOperator, all, "", mid, 0),
		kind("prefix "+prefix+", limit=500", consoleOperator, all, prefix, "", 500),
		kind("prefix "+none+" (no match)", consoleOperator, all, none, "", 0),
		kind(consoleOwner+"'s first page", consoleOwner, mine, "", "", 0),
		kind(consoleOwner+"'s page after "+ownMid, consoleOwner, mine, "", ownMid, 0),
	}

	// Each user's first request: basic_auth compares the hash once and
	// caches the result. Not timed as a page: GET ROOT-/api/me.
	for _, u := range []struct {
		user     string
		operator bool
	}{{consoleOperator, true}, {consoleOwner, false}} {
		req, _ := http.NewRequest(http.MethodGet, c.url+"console/-/api/me", nil)
		req.SetBasicAuth(u.user, consolePassword)
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		var me struct {
			User     string `json:"user"`
			Operator bool   `json:"operator"`
		}
		err = json.NewDecoder(resp.Body).Decode(&me)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || me.User != u.user || me.Operator != u.operator {
			return fmt.Errorf("console me as %s: %d %+v %v", u.user, resp.StatusCode, me, err)
		}
	}
	// The first list call of each: an operator's may list the config's
	// labels (configLabelCache, once per build of the tables), an
	// owner's builds the owner index by one scan of the store.
	firstOp, p, err := call(consoleOperator, kinds[0].query)
	if err != nil {
		return err
	}
	if err := check(kinds[0], p); err != nil {
		return err
	}
	firstOwner, p, err := call(consoleOwner, kinds[5].query)
	if err != nil {
		return err
	}
	if err := check(kinds[5], p); err != nil {
		return err
	}
	// The owner sees all of its tokens, and only those, page by page.
	var seen []string
	for after := ""; ; {
		q := "tokens?limit=500"
		if after != "" {
			q += "&after=" + url.QueryEscape(after)
		}
		_, p, err := call(consoleOwner, q)
		if err != nil {
			return err
		}
		for _, t := range p.Tokens {
			seen = append(seen, t.Label)
		}
		if after = p.Next; after == "" {
			break
		}
	}
	if !slices.Equal(seen, mine) {
		return fmt.Errorf("console: %s's pages listed %d tokens, want the %d it owns", consoleOwner, len(seen), len(mine))
	}

	for range *consoleCalls {
		for _, k := range kinds {
			took, p, err := call(k.user, k.query)
			if err != nil {
				return err
			}
			if err := check(k, p); err != nil {
				return err
			}
			k.times = append(k.times, took)
		}
	}
	// One more token imported, an owned one: the import builds the
	// tables again, so the next operator call lists the config's labels
	// again, and drops the owner index, so the next owner call scans the
	// store again.
	j := (n + consoleOwnedEvery - 1) / consoleOwnedEvery * consoleOwnedEvery
	extra := &storeRun{}
	if err := c.importRange(sub, j, j+1, consoleEntry, extra); err != nil {
		return err
	}
	for _, labels := range []*[]string{&all, &mine} {
		i, _ := slices.BinarySearch(*labels, storeLabel(j))
		*labels = slices.Insert(*labels, i, storeLabel(j))
	}
	var again []time.Duration
	for _, k := range []*consoleKind{kind("first page", consoleOperator, all, "", "", 0), kind("owner's first page", consoleOwner, mine, "", "", 0)} {
		took, p, err := call(k.user, k.query)
		if err != nil {
			return err
		}
		if err := check(k, p); err != nil {
			return fmt.Errorf("after one more token imported: %w", err)
		}
		again = append(again, took)
	}

	rss, err := peakRSS(c.proc.Cmd.Process.Pid)
	if err != nil {
		return err
	}
	var fileMiB int64
	if info, err := os.Stat(storeFile); err == nil {
		fileMiB = info.Size() >> 20
	}

	fmt.Printf("console: token list latency (ms) with %d tokens, %d calls per kind taking turns on one keep-alive connection, each page checked;\n", n, *consoleCalls)
	fmt.Printf("console: basic_auth in front (bcrypt cost %d, its hash cache on: each user's password compared once, by a GET -/api/me before these)\n", consoleBcryptCost)
	fmt.Printf("console:   %-44s %6s %8s %8s %8s\n", "GET -/api/tokens", "rows", "median", "p99", "max")
	worst := time.Duration(0)
	for _, k := range kinds {
		fmt.Printf("console:   %-44s %6d %8s %8s %8s\n", k.name, len(k.want), ms(quantile(k.times, 0.5)), ms(quantile(k.times, 0.99)), ms(slices.Max(k.times)))
		worst = max(worst, slices.Max(k.times))
	}
	fmt.Printf("console:   first operator call after the import (configLabelCache built): %s ms\n", ms(firstOp))
	fmt.Printf("console:   first owner call after the import (owner index built by one scan): %s ms\n", ms(firstOwner))
	fmt.Printf("console:   after one more token imported (%.2fs: the tables built again, the owner index dropped): the next operator call %s ms, the next owner call %s ms\n",
		extra.imported.Seconds(), ms(again[0]), ms(again[1]))
	fmt.Printf("console: slowest page of the %d timed: %s ms (goal: a page in <= 100 ms with 1,000,000 tokens); store file %d MiB, Caddy's peak RSS %d MiB (%d MiB by the end of the first import)\n",
		len(kinds)*(*consoleCalls), ms(worst), fileMiB, rss>>20, rssImport>>20)
	fmt.Printf("console: load average at the end %s (2 CPUs shared with other work: figures are noisy)\n", loadAverage())
	return nil
}
