package ipallowlist

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

func labelOf(t *testing.T, s string) *labelRef {
	t.Helper()
	blob := append([]byte{byte(len(s))}, s...)
	return (*labelRef)(&blob[0])
}

// TestObservedBoundedUnderChurn: a million distinct addresses for one token
// keep at most observedPerLabel entries, an address making one in eight of
// the token's requests survives the churn with its exact count, and memory
// does not grow with the addresses.
func TestObservedBoundedUnderChurn(t *testing.T) {
	o := newObservedAddrs()
	label := labelOf(t, "partner-a")
	heavy := netip.MustParseAddr("203.0.113.7")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i))
		o.record(label, netip.AddrFrom4(b), outcomeDenied, int64(i))
		if i%7 == 0 {
			o.record(label, heavy, outcomeAllowed, int64(i))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	got := o.snapshot("partner-a")["partner-a"]
	if len(got) > observedPerLabel {
		t.Fatalf("%d addresses kept, want at most %d", len(got), observedPerLabel)
	}
	if got[0].IP != heavy.String() || got[0].Allowed != 142858 {
		t.Errorf("most used: %+v, want %s with 142858 allowed", got[0], heavy)
	}
	for _, a := range got[1:] {
		if a.Allowed+a.Denied != 1 {
			t.Errorf("%+v: an address seen once reports %d uses", a, a.Allowed+a.Denied)
		}
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
		t.Errorf("heap grew by %d bytes over a million addresses", grew)
	}

	for i := range 2 * observedLabels {
		o.record(labelOf(t, fmt.Sprint("label-", i)), heavy, outcomeAllowed, int64(2_000_000+i))
	}
	if n := o.labelCount(); n > observedLabels {
		t.Errorf("%d labels kept, want at most %d", n, observedLabels)
	}
	if len(o.snapshot("label-0")) != 0 {
		t.Error("the label seen longest ago was kept over newer ones")
	}
}

// TestObservedDropsLeastRecentlySeen: when the labels are at their bound, a
// new label takes the place of one its shard saw least recently, so a
// token in steady use is never dropped by a stream of one-off tokens, and
// what a dropped label held is reused, not leaked.
func TestObservedDropsLeastRecentlySeen(t *testing.T) {
	o := newObservedAddrs()
	steady := labelOf(t, "steady")
	addr := netip.MustParseAddr("203.0.113.7")
	o.record(steady, addr, outcomeAllowed, 0)
	for i := range 3 * observedLabels {
		o.record(labelOf(t, fmt.Sprint("once-", i)), addr, outcomeAllowed, int64(1+2*i))
		o.record(steady, addr, outcomeAllowed, int64(2+2*i))
	}
	if n := o.labelCount(); n > observedLabels {
		t.Errorf("%d labels kept, want at most %d", n, observedLabels)
	}
	got := o.snapshot("steady")["steady"]
	if len(got) != 1 || got[0].Allowed != 3*observedLabels+1 {
		t.Errorf("the label in steady use: %+v, want it kept with %d requests", got, 3*observedLabels+1)
	}
	if len(o.snapshot("once-0")) != 0 {
		t.Error("the label seen least recently was kept")
	}
	if len(o.snapshot(fmt.Sprint("once-", 3*observedLabels-1))) == 0 {
		t.Error("the newest label was dropped")
	}
	known := labelOf(t, "steady")
	if allocs := testing.AllocsPerRun(1000, func() { o.record(known, addr, outcomeAllowed, 1) }); allocs != 0 {
		t.Errorf("recording a known label allocates %.0f times", allocs)
	}
	// A new label in a full shard reuses the summary it evicts: only the
	// copy of its name is allocated.
	fresh := make([]*labelRef, 1001)
	for i := range fresh {
		fresh[i] = labelOf(t, fmt.Sprintf("new-%04d", i))
	}
	n := 0
	if allocs := testing.AllocsPerRun(1000, func() { o.record(fresh[n], addr, outcomeAllowed, 1); n++ }); allocs > 1 {
		t.Errorf("a new label evicting another allocates %.1f times, want 1 (its name)", allocs)
	}
}

// TestObservedConcurrent: requests of many tokens record from every CPU
// while the admin routes read and reset; run under -race. Once the readers
// are done, the counts of what is recorded after are exact.
func TestObservedConcurrent(t *testing.T) {
	o := newObservedAddrs()
	labels := make([]*labelRef, 100)
	for i := range labels {
		labels[i] = labelOf(t, fmt.Sprint("t", i))
	}
	var wg sync.WaitGroup
	record := func(w int) {
		defer wg.Done()
		for i := range 20_000 {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i%50))
			o.record(labels[(i*(w+1))%len(labels)], netip.AddrFrom4(b), outcomeAllowed, int64(i))
		}
	}
	for w := range 4 {
		wg.Add(1)
		go record(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			o.snapshot("")
			o.snapshot("t1")
			if i%50 == 0 {
				o.drop("t2")
				o.drop("")
			}
		}
	}()
	wg.Wait()
	o.drop("")
	wg.Add(1)
	record(0)
	total := uint64(0)
	for _, list := range o.drop("") {
		for _, a := range list {
			total += a.uses()
		}
	}
	// Each of t0..t99 sees 50 addresses, more than observedPerLabel, so a
	// summary keeps a bounded number of them, with counts exact since
	// each entered: at least one request per kept entry, at most all.
	if total == 0 || total > 20_000 {
		t.Errorf("%d requests counted after a reset and 20,000 recorded, want between 1 and 20,000", total)
	}
	if o.labelCount() != 0 {
		t.Errorf("%d labels after dropping all", o.labelCount())
	}
}

// TestObservedSurvivesReload: the summary is shared through a UsagePool,
// so the new config's handler keeps what the old one recorded.
func TestObservedSurvivesReload(t *testing.T) {
	provisionIn := func() *Handler {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		h := decisionConfig()
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h
	}
	old := provisionIn()
	serve(old, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	serve(old, newRequest("198.51.100.1:1", "/", testkit.Bearer(tokA)...))

	next := provisionIn() // the new config is provisioned before the old one stops
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	serve(next, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	got := next.observed.snapshot("a")["a"]
	if len(got) != 2 || got[0].IP != "203.0.113.9" || got[0].Allowed != 2 || got[1].IP != "198.51.100.1" || got[1].Denied != 1 {
		t.Errorf("after the reload: %+v, want 203.0.113.9 allowed twice and 198.51.100.1 denied once", got)
	}
	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// With no config left, the pool lets go of the summary.
	fresh := provisionIn()
	defer fresh.Cleanup()
	if n := len(fresh.observed.snapshot("")); n != 0 {
		t.Errorf("a new store after every config is gone holds %d labels", n)
	}
}

// TestObservedUnlisted: unlisted tokens are observed too, under a name no
// token can have, so a listed and an unknown token take the same path.
func TestObservedUnlisted(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	serve(h, newRequest("10.9.9.9:1", "/", testkit.Bearer("not-listed-1")...))
	serve(h, newRequest("10.9.9.9:1", "/", testkit.Bearer("not-listed-2")...))
	serve(h, newRequest("10.9.9.9:1", "/")) // no token: nothing to observe
	got := h.observed.snapshot(unlistedObservedLabel)[unlistedObservedLabel]
	if len(got) != 1 || got[0].IP != "10.9.9.9" || got[0].Allowed != 2 || got[0].Denied != 0 {
		t.Errorf("unlisted observed: %+v, want 10.9.9.9 allowed twice (the unlisted policy allows 10.0.0.0/8)", got)
	}
	if checkLabel(unlistedObservedLabel) == nil {
		t.Error("a token could be labelled like the unlisted entry")
	}
	res := serve(h, newRequest("10.9.9.9:1", "/", testkit.Bearer("not-listed-1")...))
	if res.placeholder(placeholderLabel) != "" {
		t.Error("the unlisted entry's name leaked into the token_label placeholder")
	}
}

// TestObservedKeysDoNotPinTables: the store outlives the tables whose labels
// it is given, so its keys must be copies, not views into a table's blob.
func TestObservedKeysDoNotPinTables(t *testing.T) {
	o := newObservedAddrs()
	blob := append([]byte{9}, "partner-a"...)
	o.record((*labelRef)(&blob[0]), netip.MustParseAddr("203.0.113.7"), outcomeAllowed, 1)
	for key := range o.shard("partner-a").labels {
		start := uintptr(unsafe.Pointer(unsafe.StringData(key)))
		lo := uintptr(unsafe.Pointer(&blob[0]))
		if start >= lo && start < lo+uintptr(len(blob)) {
			t.Error("the observed key points into the table's label blob")
		}
	}
}

// TestObservedOutcomeByMode: each request is counted as what happened to
// it: allowed, refused in enforce mode, or let through by report mode
// where enforce mode would refuse it.
func TestObservedOutcomeByMode(t *testing.T) {
	tests := []struct {
		name                       string
		mode                       string
		remote                     string
		tok, label                 string
		allowed, denied, wouldDeny uint64
	}{
		{"enforce, listed address: allowed", ModeEnforce, "203.0.113.9:1", tokA, "a", 1, 0, 0},
		{"enforce, address outside allow: denied", ModeEnforce, "198.51.100.9:1", tokA, "a", 0, 1, 0},
		{"enforce, address in deny: denied", ModeEnforce, "192.0.2.15:1", tokB, "b", 0, 1, 0},
		{"enforce, unlisted token outside unlisted: denied", ModeEnforce, "198.51.100.9:1", "not-listed", unlistedObservedLabel, 0, 1, 0},
		{"report, listed address: allowed", ModeReport, "203.0.113.9:1", tokA, "a", 1, 0, 0},
		{"report, address outside allow: would_deny", ModeReport, "198.51.100.9:1", tokA, "a", 0, 0, 1},
		{"report, address in deny: would_deny", ModeReport, "192.0.2.15:1", tokB, "b", 0, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := decisionConfig()
			cfg.Mode = tc.mode
			h, _ := provisioned(t, cfg)
			h.observed.drop("")
			serve(h, newRequest(tc.remote, "/", testkit.Bearer(tc.tok)...))
			got := h.observed.snapshot(tc.label)[tc.label]
			if len(got) != 1 || got[0].Allowed != tc.allowed || got[0].Denied != tc.denied || got[0].WouldDeny != tc.wouldDeny {
				t.Errorf("observed %+v, want allowed %d, denied %d, would_deny %d", got, tc.allowed, tc.denied, tc.wouldDeny)
			}
		})
	}
}

// TestObservedCaddyfileNeverAllowsRefused: the allow line to paste lists
// no address that enforce mode refused, however often it was seen; those
// are reported after it. Addresses report mode would have refused are
// listed: the learn-then-restrict flow depends on it.
func TestObservedCaddyfileNeverAllowsRefused(t *testing.T) {
	addr := func(ip string, allowed, denied, wouldDeny uint64) observedAddress {
		return observedAddress{IP: ip, Allowed: allowed, Denied: denied, WouldDeny: wouldDeny}
	}
	tests := []struct {
		name string
		list []observedAddress
		want string
	}{
		{"allowed addresses only", []observedAddress{addr("127.0.0.2", 3, 0, 0), addr("127.0.0.3", 2, 0, 0)},
			"allow 127.0.0.2 127.0.0.3\n"},
		{"a refused address, even the most used, is left out and reported",
			[]observedAddress{addr("198.51.100.9", 0, 12, 0), addr("127.0.0.1", 3, 0, 0)},
			"allow 127.0.0.1\n# refused in enforce mode, not listed above: 198.51.100.9 (12 requests refused)\n"},
		{"an address both allowed and refused is left out",
			[]observedAddress{addr("203.0.113.9", 40, 1, 0), addr("127.0.0.1", 3, 0, 0)},
			"allow 127.0.0.1\n# refused in enforce mode, not listed above: 203.0.113.9 (1 request refused, 40 allowed)\n"},
		{"an address report mode would refuse is listed",
			[]observedAddress{addr("198.51.100.9", 0, 0, 5), addr("127.0.0.1", 3, 0, 0)},
			"allow 198.51.100.9 127.0.0.1\n# would have been refused in report mode, listed above: 198.51.100.9 (5 requests would have been refused)\n"},
		{"an address refused before its counts began is left out and reported",
			[]observedAddress{{IP: "192.0.2.66", WouldDeny: 3, RefusedEarlier: true}, addr("127.0.0.1", 3, 0, 0)},
			"allow 127.0.0.1\n# refused in enforce mode before these counts, not listed above: 192.0.2.66 (3 requests would have been refused)\n"},
		{"every address refused: no allow line",
			[]observedAddress{addr("198.51.100.9", 0, 2, 0)},
			"# no address to allow: every observed address was refused in enforce mode\n# refused in enforce mode, not listed above: 198.51.100.9 (2 requests refused)\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := observedCaddyfile(tc.list); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// adminCall sends one request to the observed-addresses route.
func adminCall(t *testing.T, method, target string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	err := handleObserved(w, httptest.NewRequest(method, target, nil))
	var apiErr caddy.APIError
	switch {
	case err == nil:
		return w.Code, w.Body.String()
	case errors.As(err, &apiErr):
		return apiErr.HTTPStatus, apiErr.Err.Error()
	}
	t.Fatalf("%s %s: %v", method, target, err)
	return 0, ""
}

// TestObservedRouteRefusedAddressNotInAllowLine reproduces the report: a
// token allowed from one address and refused, more often, from another.
// format=caddyfile must not hand the refused address back as allowed.
func TestObservedRouteRefusedAddressNotInAllowLine(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	h.observed.drop("")
	serve(h, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	for range 12 {
		serve(h, newRequest("198.51.100.9:1", "/", testkit.Bearer(tokA)...))
	}
	status, body := adminCall(t, http.MethodGet, "/ip-allowlist/observed/a?format=caddyfile")
	want := "allow 203.0.113.9\n# refused in enforce mode, not listed above: 198.51.100.9 (12 requests refused)\n"
	if status != 200 || body != want {
		t.Errorf("format=caddyfile: %d\n%s\nwant\n%s", status, body, want)
	}
	status, body = adminCall(t, http.MethodGet, "/ip-allowlist/observed/a")
	if status != 200 || !strings.Contains(body, `{"ip":"198.51.100.9","allowed":0,"denied":12,"would_deny":0,`) ||
		!strings.Contains(body, `{"ip":"203.0.113.9","allowed":1,"denied":0,"would_deny":0,`) {
		t.Errorf("JSON: %d %s, want the three counts of both addresses", status, body)
	}
}

// TestObservedRouteFormats: json (or none) and caddyfile are the formats;
// anything else is a 400 that names them, not a silent JSON answer.
func TestObservedRouteFormats(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	h.observed.drop("")
	serve(h, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	tests := []struct {
		name, target string
		status       int
		body         string // contained in the answer
	}{
		{"no format is JSON", "/ip-allowlist/observed/a", 200, `[{"ip":"203.0.113.9"`},
		{"format=json", "/ip-allowlist/observed/a?format=json", 200, `[{"ip":"203.0.113.9"`},
		{"format=caddyfile", "/ip-allowlist/observed/a?format=caddyfile", 200, "allow 203.0.113.9\n"},
		{"format=yaml is refused naming the formats", "/ip-allowlist/observed/a?format=yaml", 400, `format "yaml": want json (the default) or caddyfile`},
		{"format=CaddyFile is refused", "/ip-allowlist/observed/a?format=CaddyFile", 400, "want json (the default) or caddyfile"},
		{"an unknown format is refused for every label too", "/ip-allowlist/observed?format=yaml", 400, "want json (the default) or caddyfile"},
		{"caddyfile needs a label", "/ip-allowlist/observed?format=caddyfile", 400, "needs a label"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := adminCall(t, http.MethodGet, tc.target)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("%d %q, want %d containing %q", status, body, tc.status, tc.body)
			}
		})
	}
}

// TestObservedRouteDelete: DELETE drops one label's addresses, or every
// label's, and answers with what it dropped; an unknown label is a 404.
func TestObservedRouteDelete(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	h.observed.drop("")
	serve(h, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	serve(h, newRequest("198.51.100.7:1", "/", testkit.Bearer(tokC)...))

	steps := []struct {
		name, method, target string
		status               int
		body                 string // the whole answer, or its prefix when it ends in "…"
	}{
		{"an unknown label is not found", http.MethodDelete, "/ip-allowlist/observed/nobody", 404, `no address observed for token "nobody"`},
		{"one label: answers its addresses", http.MethodDelete, "/ip-allowlist/observed/a", 200, `[{"ip":"203.0.113.9","allowed":1,"denied":0,"would_deny":0,…`},
		{"the dropped label is gone", http.MethodGet, "/ip-allowlist/observed/a", 404, `no address observed for token "a"`},
		{"the other label is kept", http.MethodGet, "/ip-allowlist/observed/c", 200, `[{"ip":"198.51.100.7","allowed":1,…`},
		{"a label dropped twice is not found", http.MethodDelete, "/ip-allowlist/observed/a", 404, `no address observed for token "a"`},
		{"all labels: answers every label", http.MethodDelete, "/ip-allowlist/observed", 200, `{"c":[{"ip":"198.51.100.7","allowed":1,…`},
		{"nothing is left", http.MethodGet, "/ip-allowlist/observed", 200, "{}\n"},
		{"all labels when none is left", http.MethodDelete, "/ip-allowlist/observed/", 200, "{}\n"},
		{"other methods are refused", http.MethodPost, "/ip-allowlist/observed", 405, "method POST not allowed"},
	}
	for _, s := range steps {
		status, body := adminCall(t, s.method, s.target)
		want, prefix := strings.CutSuffix(s.body, "…")
		if status != s.status || (prefix && !strings.HasPrefix(body, want)) || (!prefix && body != want) {
			t.Fatalf("%s: %s %s: %d %q, want %d %q", s.name, s.method, s.target, status, body, s.status, s.body)
		}
	}
	// Recording goes on after a reset.
	serve(h, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	if got := h.observed.snapshot("a")["a"]; len(got) != 1 || got[0].Allowed != 1 {
		t.Errorf("after the reset: %+v, want 203.0.113.9 allowed once", got)
	}
}

// TestObservedOneBusyTokenCountsExactly: requests of one label from few
// addresses take the shard's lock to read only (recordSeen), and every one
// of them is still counted, with the latest time kept.
func TestObservedOneBusyTokenCountsExactly(t *testing.T) {
	o := newObservedAddrs()
	label := labelOf(t, "busy")
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10_000 {
				out := outcomeAllowed
				if i%4 == 0 {
					out = outcomeDenied
				}
				o.record(label, addrs[i%2], out, int64(w*10_000+i))
			}
		}()
	}
	wg.Wait()
	got := o.snapshot("busy")["busy"]
	var allowed, denied uint64
	var last time.Time
	for _, a := range got {
		allowed += a.Allowed
		denied += a.Denied
		if a.LastSeen.After(last) {
			last = a.LastSeen
		}
	}
	if len(got) != 2 || allowed != 30_000 || denied != 10_000 {
		t.Errorf("%d addresses, %d allowed and %d denied, want 2, 30,000 and 10,000", len(got), allowed, denied)
	}
	if want := time.Unix(0, 39_999); !last.Equal(want) {
		t.Errorf("last seen %v, want %v", last, want)
	}
}

// promoteAfter runs the steps of finding 6 against a store token: it is
// created in enforce mode, allowed from 198.51.100.7 only, and then steps
// run; promote with min_requests 3 answers last.
func promoteAfter(t *testing.T, steps func(h *Handler, tok string)) promoteResult {
	t.Helper()
	h, _ := storeHandler(t, "")
	h.observed.forget("cust-1")
	tok := applyTok(1)
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	steps(h, tok)
	r := routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/promote", `{"min_requests": 3}`)
	var p promoteResult
	r.json(t, &p)
	if r.status != 200 {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	return p
}

// send serves n requests of tok from addr, which must be answered as the
// token's mode says: refused (enforce) or let through (report).
func send(t *testing.T, h *Handler, tok, addr string, n int, through bool) {
	t.Helper()
	for range n {
		if res := serve(h, newRequest(addr+":1", "/", testkit.Bearer(tok)...)); res.next != through {
			t.Fatalf("a request from %s: let through %v, want %v", addr, res.next, through)
		}
	}
}

// toReport switches cust-1 to report mode, as an operator does to learn.
func toReport(t *testing.T, tok string) {
	t.Helper()
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"], "mode": "report"}`); r.status != 200 {
		t.Fatalf("switching to report mode: %d %s", r.status, r.body)
	}
}

// flood sends each request from n addresses of 10.77.0.0/16 times
// times, in report mode.
func flood(t *testing.T, h *Handler, tok string, n, times int) {
	t.Helper()
	for i := range n {
		send(t, h, tok, fmt.Sprintf("10.77.%d.%d", i/250, 1+i%250), times, true)
	}
}

// TestPromoteNeverAddsAnAddressRefusedInEnforce is finding 6: an address
// refused in enforce mode must not be promoted when it comes back in report
// mode, after a flood of addresses used once (which no longer pushes it out
// of the 16-address summary), after a flood of addresses used often (which
// does), or after a DELETE of the summary; promote says which addresses it
// left out, and why. A legitimate address seen 10 times keeps its place
// through a flood of 300 addresses used once and is promoted.
func TestPromoteNeverAddsAnAddressRefusedInEnforce(t *testing.T) {
	const attacker, legit = "192.0.2.66", "203.0.113.10"
	// Each case runs, in this order: the attacker refused 5 times in
	// enforce mode; the switch to report mode; the legitimate address seen
	// legitUses times; one address in turn of floodN, each floodTimes; the
	// summary reset; the attacker back 3 times.
	tests := []struct {
		name                string
		refused             bool
		legitUses           int
		floodN, floodTimes  int
		reset, attackerBack bool
		promoted            string
		leftOut             string // ip reason, ...
	}{
		{"refused 5 times, 120 addresses once each, back 3 times: left out",
			true, 0, 120, 1, false, true, "", attacker + " refused"},
		{"refused 5 times, flooded out of the summary by 120 addresses twice each, back 3 times: left out",
			true, 0, 120, 2, false, true, "", attacker + " refused_earlier"},
		{"refused, then the summary reset by DELETE, back 3 times: left out",
			true, 0, 0, 0, true, true, "", attacker + " refused_earlier"},
		{"refused and still in the summary: left out by its counts",
			true, 0, 0, 0, false, true, "", attacker + " refused"},
		{"seen 10 times in report mode, then a flood of 300 addresses used once: promoted",
			false, 10, 300, 1, false, false, legit, ""},
		{"both: the legitimate address is promoted, the refused one left out",
			true, 10, 120, 1, false, true, legit, attacker + " refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := promoteAfter(t, func(h *Handler, tok string) {
				if tc.refused {
					send(t, h, tok, attacker, 5, false)
				}
				toReport(t, tok)
				send(t, h, tok, legit, tc.legitUses, true)
				flood(t, h, tok, tc.floodN, tc.floodTimes)
				if tc.reset {
					if status, body := adminCall(t, http.MethodDelete, "/ip-allowlist/observed/cust-1"); status != 200 {
						t.Fatalf("DELETE: %d %s", status, body)
					}
				}
				if tc.attackerBack {
					send(t, h, tok, attacker, 3, true)
				}
			})
			var left []string
			for _, l := range p.LeftOut {
				if l.Reason != leftOutTooFew {
					left = append(left, l.IP+" "+l.Reason)
				}
			}
			if got := strings.Join(p.Promoted, ","); got != tc.promoted {
				t.Errorf("promoted %q, want %q", got, tc.promoted)
			}
			if got := strings.Join(left, ","); got != tc.leftOut {
				t.Errorf("left out %q, want %q (all: %+v)", got, tc.leftOut, p.LeftOut)
			}
			if slices.Contains(p.Entry.Allow, attacker) {
				t.Errorf("the allow list %v holds %s, which enforce mode refused", p.Entry.Allow, attacker)
			}
		})
	}
}

// TestObservedRepeatedAddressOutlastsOneShotFlood: a flood of addresses
// used once takes turns in one entry of the summary, so addresses seen
// again, however few times, keep their places and their exact counts,
// whatever the flood's length.
func TestObservedRepeatedAddressOutlastsOneShotFlood(t *testing.T) {
	tests := []struct {
		name        string
		uses, flood int
	}{
		{"seen 10 times, 120 addresses once each", 10, 120},
		{"seen twice, 120 addresses once each", 2, 120},
		{"seen 10 times, 100,000 addresses once each", 10, 100_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newObservedAddrs()
			label := labelOf(t, "cust-1")
			var kept []netip.Addr
			for i := range observedPerLabel - 1 {
				kept = append(kept, netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}))
			}
			for range tc.uses {
				for _, a := range kept {
					o.record(label, a, outcomeWouldDeny, 1)
				}
			}
			for i := range tc.flood {
				o.record(label, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), outcomeWouldDeny, int64(2+i))
			}
			got := map[string]uint64{}
			for _, a := range o.snapshot("cust-1")["cust-1"] {
				got[a.IP] = a.WouldDeny
			}
			for _, a := range kept {
				if got[a.String()] != uint64(tc.uses) {
					t.Errorf("%s: %d requests kept, want %d", a, got[a.String()], tc.uses)
				}
			}
		})
	}
}

// TestObservedRefusedRecordOutlivesTheSummary: the record of refused
// addresses is kept apart from the 16 entries: a refused address pushed
// out by a million others, or reset by DELETE, is still known refused when
// it comes back; it never says "not refused" of one that was (no false
// negatives, checked over 20,000 refused addresses). Forgetting the label,
// for a new token, drops it.
func TestObservedRefusedRecordOutlivesTheSummary(t *testing.T) {
	o := newObservedAddrs()
	label := labelOf(t, "cust-1")
	first := netip.MustParseAddr("192.0.2.66")
	o.record(label, first, outcomeDenied, 1)
	for i := range 1_000_000 {
		o.record(label, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), outcomeWouldDeny, int64(2+i))
	}
	back := func(addr netip.Addr) observedAddress {
		t.Helper()
		o.record(label, addr, outcomeWouldDeny, 2_000_000)
		for _, a := range o.snapshot("cust-1")["cust-1"] {
			if a.IP == addr.String() {
				return a
			}
		}
		t.Fatalf("%s, just seen, is not in the summary", addr)
		return observedAddress{}
	}
	if a := back(first); a.Denied != 0 || !a.RefusedEarlier {
		t.Errorf("after a million addresses: %+v, want denied 0 and refused_earlier", a)
	}
	o.drop("cust-1")
	if a := back(first); !a.RefusedEarlier {
		t.Errorf("after DELETE: %+v, want refused_earlier", a)
	}
	for i := range 20_000 {
		o.record(label, netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), outcomeDenied, 3_000_000)
	}
	for i := range 20_000 {
		if a := back(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})); !a.RefusedEarlier && a.Denied == 0 {
			t.Fatalf("%s was refused and is reported as never refused", a.IP)
		}
	}
	if allocs := testing.AllocsPerRun(1000, func() { o.record(label, first, outcomeDenied, 4_000_000) }); allocs != 0 {
		t.Errorf("recording a refusal allocates %.0f times", allocs)
	}
	o.forget("cust-1")
	if a := back(first); a.RefusedEarlier || a.Denied != 0 {
		t.Errorf("after the label was forgotten: %+v, want nothing refused", a)
	}
	if got := o.snapshot(""); len(got) != 1 {
		t.Errorf("snapshot of every label: %v", got)
	}
	o.drop("")
	if got := o.snapshot(""); len(got) != 0 {
		t.Errorf("after DELETE of every label, a label with a record of refusals but no address shows: %v", got)
	}
}

// TestObservedLostRefusalsErrTowardsRefused: when a label's summary, and
// with it its record of refused addresses, makes room for new labels, its
// shard remembers that it was lost, and every address of that label is
// then taken as maybe refused: promote adds none of them, and says why.
func TestObservedLostRefusalsErrTowardsRefused(t *testing.T) {
	o := newObservedAddrs()
	victim, quiet := labelOf(t, "victim"), labelOf(t, "quiet")
	addr := netip.MustParseAddr("192.0.2.66")
	o.record(victim, addr, outcomeDenied, 0)
	o.record(quiet, addr, outcomeAllowed, 0) // never refused: nothing to lose
	for i := range 3 * observedLabels {
		o.record(labelOf(t, fmt.Sprint("other-", i)), addr, outcomeAllowed, int64(1+i))
	}
	if o.refusalsLost("quiet") {
		t.Error("a label never refused is marked as having lost its refusals")
	}
	for range 3 {
		o.record(victim, addr, outcomeWouldDeny, 4*observedLabels)
	}
	if !o.refusalsLost("victim") {
		t.Fatal("the label whose record of refusals was dropped is not marked")
	}
	seen := o.snapshot("victim")["victim"]
	if len(seen) != 1 || !seen[0].RefusedEarlier {
		t.Fatalf("after its record was lost: %+v, want the address refused_earlier", seen)
	}
	learned, leftOut := promotable(seen, true, 3)
	if len(learned) != 0 || len(leftOut) != 1 || leftOut[0].Reason != leftOutRefusalsLost {
		t.Errorf("promotable: %v, %+v, want nothing learned and %s left out as %s", learned, leftOut, addr, leftOutRefusalsLost)
	}
}

// TestObservedMemoryPerToken: a label's summary, its 16 addresses and its
// record of refused addresses included, costs a bounded amount of heap:
// measured with every label full and refused from many addresses, after
// GC. The figure is in docs/operations.md.
func TestObservedMemoryPerToken(t *testing.T) {
	// Half the bound, so that no shard is full and no summary is reused.
	const labels = observedLabels / 2
	names := make([]*labelRef, labels)
	for i := range names {
		names[i] = labelOf(t, fmt.Sprintf("customer-%05d", i))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	o := newObservedAddrs()
	for i, l := range names {
		for j := range 2 * observedPerLabel {
			o.record(l, netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), byte(j)}), outcomeDenied, int64(j))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := o.labelCount(); n != labels {
		t.Fatalf("%d labels kept, want %d", n, labels)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / labels
	t.Logf("%d bytes per token, %d tokens", per, labels)
	if per > 1700 {
		t.Errorf("%d bytes of heap per token, want at most 1,700", per)
	}
	runtime.KeepAlive(o)
}

// TestConsoleObservedRefusedEarlier: the console marks an address refused
// before its counts began as refused, as it marks one the counts show
// refused, so that its "Add all" leaves it out and adding it asks first.
func TestConsoleObservedRefusedEarlier(t *testing.T) {
	const attacker = "192.0.2.66"
	h, _ := storeHandler(t, "")
	h.observed.forget("cust-1")
	c := newConsole(t, &Console{})
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`)
	send(t, h, tok, attacker, 2, false)
	toReport(t, tok)
	if status, body := adminCall(t, http.MethodDelete, "/ip-allowlist/observed/cust-1"); status != 200 {
		t.Fatalf("DELETE: %d %s", status, body)
	}
	send(t, h, tok, attacker, 1, true)
	send(t, h, tok, "203.0.113.10", 1, true)
	var seen struct{ Addresses []consoleObserved }
	consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1/observed", "").json(t, &seen)
	status := map[string]string{}
	for _, a := range seen.Addresses {
		status[a.IP] = a.Status
	}
	if status[attacker] != "refused" || status["203.0.113.10"] != "learned" {
		t.Errorf("observed: %v, want %s refused and 203.0.113.10 learned", status, attacker)
	}
}
