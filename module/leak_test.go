package ipallowlist

import (
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

func TestLeakTrackerAlertsOncePerWindow(t *testing.T) {
	var got []leakEvent
	tr := newLeakTracker(&LeakAlert{Addresses: 3, Window: caddy.Duration(time.Minute)}, func(e leakEvent) { got = append(got, e) })
	l := labelOf(t, "cust-1")
	at := time.Now().UnixNano()
	from := func(ip string, dt time.Duration) { tr.refused(l, netip.MustParseAddr(ip), false, at+int64(dt)) }
	from("192.0.2.1", 0)
	from("192.0.2.1", time.Second) // the same address: not distinct
	from("192.0.2.2", 2*time.Second)
	if len(got) != 0 {
		t.Fatalf("alerted at 2 distinct addresses: %+v", got)
	}
	from("2001:db8::3", 3*time.Second)
	if len(got) != 1 || got[0].Distinct != 3 || got[0].Refusals != 4 || got[0].Label != "cust-1" || len(got[0].Addresses) != 3 {
		t.Fatalf("at 3: %+v", got)
	}
	for i := range 20 {
		from(fmt.Sprintf("198.51.100.%d", i), 4*time.Second)
	}
	if len(got) != 1 {
		t.Fatalf("%d alerts in one window, want 1", len(got))
	}
	// A new window counts afresh.
	from("192.0.2.1", 61*time.Second)
	from("192.0.2.2", 62*time.Second)
	if len(got) != 1 {
		t.Fatalf("alerted again after 2 addresses of a new window")
	}
	from("192.0.2.3", 63*time.Second)
	if len(got) != 2 || got[1].Distinct != 3 || got[1].Refusals != 3 {
		t.Fatalf("the next window: %+v", got)
	}
	// Another token has its own count.
	tr.refused(labelOf(t, "cust-2"), netip.MustParseAddr("192.0.2.1"), false, at)
	if len(got) != 2 {
		t.Fatal("cust-2's first refusal alerted")
	}
}

// The tracker's memory is bounded by tokens × addresses, whatever is
// sent, measured with the heap: 10,000 listed tokens, each refused from
// 1,000 distinct addresses (alerted at 50, so each keeps no address once
// alerted); and the worst case, 100 tokens refused from one address fewer
// than leak_alert's 1,000, each keeping all it saw.
func TestLeakTrackerMemoryIsBounded(t *testing.T) {
	for _, c := range []struct{ tokens, perToken, addresses int }{
		{10_000, 1_000, 50},
		{100, 999, 1_000},
	} {
		t.Run(fmt.Sprintf("tokens=%d/addresses=%d/leak_alert=%d", c.tokens, c.perToken, c.addresses), func(t *testing.T) {
			labels := make([]*labelRef, c.tokens)
			for i := range labels {
				labels[i] = labelOf(t, fmt.Sprintf("leak-token-%05d", i))
			}
			heap := func() uint64 {
				runtime.GC()
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				return m.HeapAlloc
			}
			before := heap()
			alerts := 0
			tr := newLeakTracker(&LeakAlert{Addresses: c.addresses, Window: caddy.Duration(time.Hour)}, func(leakEvent) { alerts++ })
			now := time.Now().UnixNano()
			for a := range c.perToken {
				addr := netip.AddrFrom4([4]byte{10, byte(a >> 8), byte(a), 1})
				for _, l := range labels {
					tr.refused(l, addr, false, now)
				}
			}
			used := int64(heap()) - int64(before)
			runtime.KeepAlive(tr)
			// The documented bound: per token tracked, at most addresses
			// × 16 bytes (with append's spare room, twice that), and 256
			// for its label, its state and the map's entry.
			bound := int64(c.tokens) * (int64(c.addresses)*16*2 + 256)
			t.Logf("%d tokens refused from %d distinct addresses each (leak_alert %d): the tracker holds %d KiB, %d bytes a token; bound %d KiB",
				c.tokens, c.perToken, c.addresses, used>>10, used/int64(c.tokens), bound>>10)
			if used > bound {
				t.Errorf("the tracker holds %d bytes, more than the bound %d", used, bound)
			}
			if want := map[bool]int{true: c.tokens, false: 0}[c.perToken >= c.addresses]; alerts != want {
				t.Errorf("%d alerts, want %d", alerts, want)
			}
		})
	}
}

// A store token refused from enough addresses is alerted once, counted,
// and suspended through the store; resume undoes it. A config token is
// alerted, not suspended.
func TestLeakAlertSuspendsStoreTokens(t *testing.T) {
	h, logs := storeHandler(t, "")
	h.LeakAlert = &LeakAlert{Addresses: 4, Window: caddy.Duration(time.Minute), Suspend: true}
	reg := prometheus.NewRegistry()
	var err error
	if h.metrics, err = newMetrics(reg, false); err != nil {
		t.Fatal(err)
	}
	h.leaks = newLeakTracker(h.LeakAlert, h.onLeak)
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`)
	for i := range 6 {
		if r := serve(h, newRequest(fmt.Sprintf("192.0.2.%d:1", 100+i), "/", testkit.Bearer(tok)...)); r.status != http.StatusUnauthorized {
			t.Fatalf("from outside: %d", r.status)
		}
	}
	// The suspension is in force before its record and audit line are
	// written: wait for all three.
	audited := func() bool {
		for _, l := range logs.FilterMessage("token changed").All() {
			if l.ContextMap()["source"] == "leak_alert" && l.ContextMap()["action"] == "suspend" {
				return true
			}
		}
		return false
	}
	testkit.Wait(5*time.Second, func() bool {
		ev, ok := latestLeak(h.fileStore, "cust-1")
		return decided(h, tok, "198.51.100.7") == "token_suspended cust-1" && ok && ev.Suspended && audited()
	})
	if got := decided(h, tok, "198.51.100.7"); got != "token_suspended cust-1" {
		t.Fatalf("from its own address after the alert: %s", got)
	}
	warns := logs.FilterMessage("token may be leaked").All()
	if len(warns) != 1 || warns[0].ContextMap()["distinct_addresses"] != int64(4) || warns[0].ContextMap()["token_label"] != "cust-1" {
		t.Fatalf("WARN lines: %+v", warns)
	}
	if n := testutil.ToFloat64(h.metrics.leaks); n != 1 {
		t.Errorf("leak_alerts_total %v, want 1", n)
	}
	if ev, ok := latestLeak(h.fileStore, "cust-1"); !ok || !ev.Suspended || ev.Distinct != 4 {
		t.Errorf("the console's record: %+v %v", ev, ok)
	}
	if !audited() {
		t.Error("no audit line for the suspension")
	}
	routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/resume", "")
	if got := decided(h, tok, "198.51.100.7"); got != "allowed cust-1" {
		t.Fatalf("after resume: %s", got)
	}

	// The config's token: alerted, never suspended.
	for i := range 4 {
		serve(h, newRequest(fmt.Sprintf("192.0.2.%d:1", 150+i), "/", testkit.Bearer(applyTok(0))...))
	}
	warns = logs.FilterMessage("token may be leaked").All()
	if len(warns) != 2 || !strings.Contains(fmt.Sprint(warns[1].ContextMap()["action"]), "alerted only") {
		t.Fatalf("config token's alert: %+v", warns)
	}
	time.Sleep(50 * time.Millisecond)
	if got := decided(h, applyTok(0), "192.0.2.1"); got != "allowed config-a" {
		t.Errorf("the config token after its alert: %s", got)
	}
}

// The console's token page answers the token's latest alert.
func TestLeakAlertShownByTheConsole(t *testing.T) {
	h, _ := storeHandler(t, "")
	h.LeakAlert = &LeakAlert{Addresses: 3, Window: caddy.Duration(time.Minute)}
	h.leaks = newLeakTracker(h.LeakAlert, h.onLeak)
	c := newConsole(t, &Console{})
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`)
	var e consoleToken
	consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1", "").json(t, &e)
	if e.LeakAlert != nil {
		t.Fatalf("an alert before any: %+v", e.LeakAlert)
	}
	for i := range 3 {
		serve(h, newRequest(fmt.Sprintf("192.0.2.%d:1", 200+i), "/", testkit.Bearer(tok)...))
	}
	consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1", "").json(t, &e)
	if e.LeakAlert == nil || e.LeakAlert.Distinct != 3 || e.LeakAlert.Suspended || len(e.LeakAlert.Addresses) != 3 {
		t.Fatalf("the console's alert: %+v", e.LeakAlert)
	}
}

// From the review of leak_alert: each finding pinned.
func TestLeakAlertReviewFindings(t *testing.T) {
	h, logs := storeHandler(t, "")
	h.LeakAlert = &LeakAlert{Addresses: 3, Window: caddy.Duration(time.Hour), Suspend: true}
	h.leaks = newLeakTracker(h.LeakAlert, h.onLeak)
	refuse := func(tok string, from ...int) {
		t.Helper()
		for _, i := range from {
			serve(h, newRequest(fmt.Sprintf("192.0.2.%d:1", i), "/", testkit.Bearer(tok)...))
		}
	}
	suspended := func(tok, label string) bool {
		return decided(h, tok, "198.51.100.7") == "token_suspended "+label
	}
	alerts := func() int { return len(logs.FilterMessage("token may be leaked").All()) }

	// A new token under a label inherits nothing of the old one's window.
	routeCall(t, "PUT", "/ip-allowlist/tokens/reused", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	refuse(applyTok(1), 10, 11)
	routeCall(t, "DELETE", "/ip-allowlist/tokens/reused?unrestrict=true", "")
	routeCall(t, "PUT", "/ip-allowlist/tokens/reused", `{"token": "`+applyTok(2)+`", "allow": ["198.51.100.7"]}`)
	refuse(applyTok(2), 12)
	time.Sleep(50 * time.Millisecond)
	if alerts() != 0 || suspended(applyTok(2), "reused") {
		t.Fatalf("the new token was alerted on the old one's refusals (%d alerts)", alerts())
	}

	// Resume counts afresh: the same window can suspend it again, after
	// as many new addresses.
	routeCall(t, "PUT", "/ip-allowlist/tokens/resumed", `{"token": "`+applyTok(3)+`", "allow": ["198.51.100.7"]}`)
	refuse(applyTok(3), 20, 21, 22)
	testkit.Wait(5*time.Second, func() bool { return suspended(applyTok(3), "resumed") })
	routeCall(t, "POST", "/ip-allowlist/tokens/resumed/resume", "")
	refuse(applyTok(3), 23, 24)
	time.Sleep(50 * time.Millisecond)
	if suspended(applyTok(3), "resumed") {
		t.Fatal("suspended again by two addresses after resume")
	}
	refuse(applyTok(3), 25)
	testkit.Wait(5*time.Second, func() bool { return suspended(applyTok(3), "resumed") })
	if !suspended(applyTok(3), "resumed") {
		t.Fatal("not suspended by three new addresses after resume")
	}

	// A token in report mode is alerted, not suspended.
	routeCall(t, "PUT", "/ip-allowlist/tokens/learning", `{"token": "`+applyTok(4)+`", "allow": ["198.51.100.7"], "mode": "report"}`)
	before := alerts()
	refuse(applyTok(4), 30, 31, 32)
	time.Sleep(100 * time.Millisecond)
	if alerts() != before+1 || suspended(applyTok(4), "learning") {
		t.Fatalf("report mode: %d new alerts, suspended %v", alerts()-before, suspended(applyTok(4), "learning"))
	}
	last := logs.FilterMessage("token may be leaked").All()
	if a := fmt.Sprint(last[len(last)-1].ContextMap()["action"]); !strings.Contains(a, "report mode") {
		t.Errorf("report mode's alert says %q", a)
	}
}

// A suspension under way when the config is let go of does not crash.
func TestLeakAlertSuspendDuringCleanup(t *testing.T) {
	for range 5 {
		h, _ := storeHandler(t, "")
		h.LeakAlert = &LeakAlert{Addresses: 2, Window: caddy.Duration(time.Minute), Suspend: true}
		h.leaks = newLeakTracker(h.LeakAlert, h.onLeak)
		routeCall(t, "PUT", "/ip-allowlist/tokens/c", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 2 {
				serve(h, newRequest(fmt.Sprintf("192.0.2.%d:1", i), "/", testkit.Bearer(applyTok(1))...))
			}
		}()
		_ = h.Cleanup()
		<-done
		time.Sleep(20 * time.Millisecond)
	}
}

// The suspension is written only to the entry that was alerted: one
// changed or re-created since is left alone, and the log says so.
func TestLeakSuspendOnlyTheAlertedEntry(t *testing.T) {
	h, logs := storeHandler(t, "")
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	then, err := h.fileStore.get("cust-1")
	if err != nil {
		t.Fatal(err)
	}
	routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["198.51.100.8"]}`)
	if h.suspendLeaked(h.fileStore, "cust-1", then.rev) {
		t.Fatal("suspended an entry changed since the alert")
	}
	if got := decided(h, applyTok(1), "198.51.100.7"); got != "allowed cust-1" {
		t.Fatalf("after the refused suspension: %s", got)
	}
	if logs.FilterMessage("a token that may be leaked was not suspended: its entry was changed or removed since the alert; look at it").Len() != 1 {
		t.Error("no line saying the suspension was not made")
	}
	now, _ := h.fileStore.get("cust-1")
	if !h.suspendLeaked(h.fileStore, "cust-1", now.rev) {
		t.Fatal("the entry as alerted was not suspended")
	}
}
