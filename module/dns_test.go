package ipallowlist

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

const dnsTok = "dns-test-token-0123456789"

// Every bad dns: entry, and every bad resolver, is refused at provision
// with a message naming the label and the entry.
func TestDNSEntryRules(t *testing.T) {
	tests := []struct {
		name string
		h    *Handler
		want string
	}{
		{"no name", &Handler{Tokens: tok("dns:")}, `allow[0] "dns:": no name after dns:`},
		{"upper case", &Handler{Tokens: tok("dns:Office.Example.com")}, `write the name in lower case: dns:office.example.com`},
		{"trailing dot", &Handler{Tokens: tok("dns:office.example.com.")}, `drop the trailing dot: names are always absolute (dns:office.example.com)`},
		{"one label", &Handler{Tokens: tok("dns:office")}, `write the name in full, as in dns:office.example.com`},
		{"address", &Handler{Tokens: tok("dns:203.0.113.7")}, `203.0.113.7 is an address, not a name: write it without dns:`},
		{"prefix", &Handler{Tokens: tok("dns:203.0.113.0/24")}, `is a prefix, not a name`},
		{"empty label", &Handler{Tokens: tok("dns:office..example.com")}, `each label of a DNS name has 1 to 63 characters`},
		{"wildcard", &Handler{Tokens: tok("dns:*.example.com")}, `a wildcard names no address`},
		{"hyphen", &Handler{Tokens: tok("dns:-office.example.com")}, `label "-office": a label neither starts nor ends with -`},
		{"odd character", &Handler{Tokens: tok("dns:off!ce.example.com")}, `(an entry of 22 characters that is no address`},
		{"in deny", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Token: secret, Allow: []string{"any"}, Deny: []string{"dns:bad.example.com"}}}},
			`token "partner-a": deny[0] "dns:bad.example.com": a dns: name may be only in a token's allow list`},
		{"in unlisted", &Handler{Unlisted: &Policy{Allow: []string{"dns:office.example.com"}}},
			`unlisted: allow[0] "dns:office.example.com": a dns: name may be only in a token's allow list`},
		{"in a set", &Handler{IPSets: map[string][]string{"office": {"dns:office.example.com"}}, Tokens: tok("office")},
			`ip_set "office": [0] "dns:office.example.com": a set holds ranges only`},
		{"resolver name", &Handler{Resolvers: []string{"ns.example.com"}, Tokens: tok("dns:office.example.com")},
			`resolvers[0] "ns.example.com": want an IP address`},
		{"resolver port 0", &Handler{Resolvers: []string{"192.0.2.53:0"}, Tokens: tok("dns:office.example.com")},
			`resolvers[0] "192.0.2.53:0": port 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := provisionErr(tt.h)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("provision: %v\nwant an error containing %s", err, tt.want)
			}
		})
	}
}

// dnsHandler provisions a handler whose token partner-a may be used from
// allow, resolving through srv, and returns it with its logs.
func dnsHandler(t *testing.T, srv *testkit.DNSServer, allow []string, deny ...string) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	h := &Handler{
		Resolvers: []string{srv.Addr},
		Tokens:    map[string]*TokenPolicy{"partner-a": {Token: dnsTok, Allow: allow, Deny: deny}},
	}
	logs := provisionLogging(t, h, zapcore.InfoLevel)
	return h, logs
}

// resolvedName provisions a handler whose token partner-a may be used
// from dns:name, and returns it once name is looked up.
func resolvedName(t *testing.T, srv *testkit.DNSServer, name string) (*Handler, *observer.ObservedLogs, *dnsName) {
	t.Helper()
	h, logs := dnsHandler(t, srv, []string{"dns:" + name})
	n := poolName(t, h, name)
	lookedUp(t, n, time.Time{})
	return h, logs, n
}

// poolName is the name h's pool resolves.
func poolName(t testing.TB, h *Handler, name string) *dnsName {
	t.Helper()
	p := h.dns.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.names[name]
	if n == nil {
		t.Fatalf("the pool does not resolve %s", name)
	}
	return n
}

// lookedUp waits until a lookup of n ends after since, and returns its
// state.
func lookedUp(t testing.TB, n *dnsName, since time.Time) *nameState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := n.state.Load(); s != nil && s.tried.After(since) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no lookup of %s ended within 10 s", n.name)
	return nil
}

// resolveNow makes n due now, as when its TTL runs out, and returns when
// that was.
func resolveNow(h *Handler, n *dnsName) time.Time {
	p := h.dns.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	n.due = now
	if n.queued {
		heap.Init(&p.due)
		select {
		case p.wake <- struct{}{}:
		default:
		}
	} else {
		p.queue(n)
	}
	return now
}

func dnsRequest(h *Handler, from string) result {
	return serve(h, newRequest(from+":1234", "/", "Authorization", "Bearer "+dnsTok))
}

func wantDecision(t *testing.T, h *Handler, from, reason, name string) {
	t.Helper()
	r := dnsRequest(h, from)
	if got := r.placeholder(placeholderReason); got != reason {
		t.Errorf("from %s: reason %q, want %q", from, got, reason)
	}
	if got := r.placeholder(placeholderDNSName); got != name {
		t.Errorf("from %s: dns_name %q, want %q", from, got, name)
	}
	if want := reason == ReasonAllowed; r.next != want {
		t.Errorf("from %s: passed on %v, want %v", from, r.next, want)
	}
}

// A name admits the A and AAAA addresses it resolves to, through CNAMEs,
// says which name did, and deny still applies to them.
func TestDNSNameAdmits(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10", "192.0.2.11", "2001:db8::10")
	srv.SetCNAME("alias.test", "target.test", 300)
	srv.Set("target.test", 300, "198.51.100.20")
	h, _ := dnsHandler(t, srv, []string{"203.0.113.1", "dns:api.test", "dns:alias.test"}, "192.0.2.11")
	lookedUp(t, poolName(t, h, "alias.test"), time.Time{})
	lookedUp(t, poolName(t, h, "api.test"), time.Time{})

	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	wantDecision(t, h, "[2001:db8::10]", ReasonAllowed, "api.test")
	wantDecision(t, h, "198.51.100.20", ReasonAllowed, "alias.test")
	wantDecision(t, h, "203.0.113.1", ReasonAllowed, "") // a range admitted it
	wantDecision(t, h, "192.0.2.11", ReasonIPDenied, "")
	wantDecision(t, h, "192.0.2.12", ReasonIPNotAllowed, "")

	// The check route says which name admits an address.
	rec := httptest.NewRecorder()
	if err := handleCheck(rec, httptest.NewRequest("GET", "/ip-allowlist/check?label=partner-a&ip=192.0.2.10", nil)); err != nil {
		t.Fatal(err)
	}
	var got struct{ Results []checkResult }
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range got.Results {
		found = found || r.DNSName == "api.test" && r.Decision == decisionAllow
	}
	if !found {
		t.Errorf("check: %s, want allow by dns_name api.test", rec.Body)
	}
}

// The Go benchmark's figure is kept honest: an address a name admits is
// admitted without an allocation.
func TestDNSAdmitAllocs(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10")
	h, _ := dnsHandler(t, srv, []string{"203.0.113.1", "dns:api.test"})
	lookedUp(t, poolName(t, h, "api.test"), time.Time{})
	v := h.current.Load()
	req := newRequest("192.0.2.10:1234", "/", "Authorization", "Bearer "+dnsTok)
	if n := testing.AllocsPerRun(100, func() {
		if d := h.decide(req, v); d.name == nil {
			t.Fatal("not admitted by the name")
		}
	}); n != 0 {
		t.Errorf("%v allocations per decision, want 0", n)
	}
	// The whole request too, its placeholders set.
	w := &discardWriter{header: http.Header{}}
	if n := testing.AllocsPerRun(100, func() {
		if err := h.ServeHTTP(w, req, okHandler); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per request admitted by a name, want 0", n)
	}
}

// A request that its token's ranges refuse, before the token's names were
// ever looked up (Caddy just started, or the name was just added), waits
// for that first lookup instead of being refused in the moment before.
func TestDNSFirstLookupAwaited(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10")
	srv.Delay(300 * time.Millisecond)
	h, _ := dnsHandler(t, srv, []string{"dns:api.test"})
	began := time.Now()
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	if took := time.Since(began); took < 200*time.Millisecond {
		t.Errorf("admitted after %v: the lookup was not awaited (it takes 300 ms)", took)
	}
	// Once looked up, a refusal waits for nothing.
	began = time.Now()
	wantDecision(t, h, "192.0.2.11", ReasonIPNotAllowed, "")
	if took := time.Since(began); took > 100*time.Millisecond {
		t.Errorf("a refusal after the first lookup took %v", took)
	}
}

// A changed record is in force at the next lookup: the new address is
// admitted and the old one no longer.
func TestDNSRecordChange(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 30, "192.0.2.10")
	h, logs := dnsHandler(t, srv, []string{"dns:api.test"})
	n := poolName(t, h, "api.test")
	s := lookedUp(t, n, time.Time{})
	if s.ttl != dnsMinTTL {
		t.Errorf("ttl %v, want %v", s.ttl, dnsMinTTL)
	}
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	srv.Set("api.test", 30, "192.0.2.20")
	lookedUp(t, n, resolveNow(h, n))
	wantDecision(t, h, "192.0.2.20", ReasonAllowed, "api.test")
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "")
	if got := logs.FilterMessage("dns name resolved").Len(); got != 2 {
		t.Errorf("%d 'dns name resolved' lines, want 2 (first answer, change)", got)
	}
	// The same answer again logs nothing.
	lookedUp(t, n, resolveNow(h, n))
	if got := logs.FilterMessage("dns name resolved").Len(); got != 2 {
		t.Errorf("%d 'dns name resolved' lines after an unchanged answer, want 2", got)
	}
}

// TTLs are clamped to 30 s to 1 h.
func TestDNSTTLClamp(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("short.test", 1, "192.0.2.10")
	srv.Set("long.test", 86400, "192.0.2.11")
	srv.Set("mid.test", 300, "192.0.2.12")
	h, _ := dnsHandler(t, srv, []string{"dns:short.test", "dns:long.test", "dns:mid.test"})
	for name, want := range map[string]time.Duration{"short.test": dnsMinTTL, "long.test": dnsMaxTTL, "mid.test": 300 * time.Second} {
		if s := lookedUp(t, poolName(t, h, name), time.Time{}); s.ttl != want {
			t.Errorf("%s: ttl %v, want %v", name, s.ttl, want)
		}
	}
}

// A server that stops answering, or fails, leaves a name its last good
// addresses; the failure is logged once, and the recovery once.
func TestDNSServerStops(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 30, "192.0.2.10")
	h, logs, n := resolvedName(t, srv, "api.test")

	srv.Silent(true)
	for range 2 {
		s := lookedUp(t, n, resolveNow(h, n))
		if !strings.Contains(s.failing, "no answer (timeout)") {
			t.Errorf("failing %q, want a timeout", s.failing)
		}
		wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	}
	srv.Silent(false)
	srv.SetRcode("api.test", dns.RcodeServerFailure)
	s := lookedUp(t, n, resolveNow(h, n))
	if !strings.Contains(s.failing, "SERVFAIL") {
		t.Errorf("failing %q, want SERVFAIL", s.failing)
	}
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	if st := n.status(); st.State != "failing" || st.FailingSince.IsZero() || !st.FailingSince.After(s.resolved) || st.FailingSince.After(s.tried) {
		t.Errorf("status %+v, want failing since the first failed lookup", st)
	}
	if got := logs.FilterMessage("dns name lookup failed; its last good addresses keep serving").Len(); got != 1 {
		t.Errorf("%d failure lines over three failed lookups, want 1", got)
	}
	srv.Set("api.test", 30, "192.0.2.10")
	lookedUp(t, n, resolveNow(h, n))
	lookedUp(t, n, resolveNow(h, n))
	if got := logs.FilterMessage("dns name lookup recovered").Len(); got != 1 {
		t.Errorf("%d recovery lines, want 1", got)
	}
	if st := n.status(); st.State != "resolved" || st.Failing != "" {
		t.Errorf("status %+v, want resolved", st)
	}
}

// A family whose lookup fails keeps its last good addresses while the
// other takes its new answer: a server that fails AAAA questions does not
// freeze a name's A records, nor drop its IPv6 addresses.
func TestDNSOneFamilyFails(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 30, "192.0.2.10", "2001:db8::10")
	h, _, n := resolvedName(t, srv, "api.test")
	srv.Set("api.test", 30, "192.0.2.20", "2001:db8::20")
	srv.FailType("api.test", dns.TypeAAAA, dns.RcodeServerFailure)
	s := lookedUp(t, n, resolveNow(h, n))
	if !strings.HasPrefix(s.failing, "AAAA: ") {
		t.Errorf("failing %q, want the AAAA lookup's failure", s.failing)
	}
	wantDecision(t, h, "192.0.2.20", ReasonAllowed, "api.test")
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "")
	wantDecision(t, h, "[2001:db8::10]", ReasonAllowed, "api.test")
	wantDecision(t, h, "[2001:db8::20]", ReasonIPNotAllowed, "")
}

// A name that has never resolved matches nothing: one whose server never
// answers, and one that does not exist.
func TestDNSNeverResolves(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Silent(true)
	h, logs := dnsHandler(t, srv, []string{"dns:api.test"})
	n := poolName(t, h, "api.test")
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "") // pending
	s := lookedUp(t, n, time.Time{})
	if s.failing == "" || len(s.v4)+len(s.v6) != 0 {
		t.Errorf("state %+v, want failing with no address", s)
	}
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "")
	if logs.FilterMessage("dns name lookup failed; it matches nothing until it resolves").Len() != 1 {
		t.Errorf("no failure line saying the name matches nothing")
	}

	srv2 := testkit.DNS(t)
	h2, logs2 := dnsHandler(t, srv2, []string{"dns:missing.test"})
	s = lookedUp(t, poolName(t, h2, "missing.test"), time.Time{})
	if s.failing != "" || len(s.v4)+len(s.v6) != 0 {
		t.Errorf("NXDOMAIN state %+v, want no address, no failure", s)
	}
	wantDecision(t, h2, "192.0.2.10", ReasonIPNotAllowed, "")
	if logs2.FilterMessage("dns name resolves to no address: it matches nothing").Len() != 1 {
		t.Errorf("no line saying the name resolves to no address")
	}
}

// A record removed is an answer, not a failure: the name admits nothing,
// so a customer who deletes the record revokes the address.
func TestDNSRecordRemoved(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 30, "192.0.2.10")
	h, _, n := resolvedName(t, srv, "api.test")
	srv.Set("api.test", 30) // exists, no address
	lookedUp(t, n, resolveNow(h, n))
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "")
}

// A name that resolves to more than maxNameAddrs addresses is refused at
// that lookup, logged, and keeps its last good addresses.
func TestDNSTooManyAddresses(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 30, "192.0.2.10")
	h, logs, n := resolvedName(t, srv, "api.test")
	var many []string
	for i := range maxNameAddrs + 1 {
		many = append(many, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
	}
	srv.Set("api.test", 30, many...) // over UDP, truncated: asked again over TCP
	s := lookedUp(t, n, resolveNow(h, n))
	if want := fmt.Sprintf("resolves to %d addresses, more than %d", maxNameAddrs+1, maxNameAddrs); s.refusal != want {
		t.Errorf("refusal %q, want %q", s.refusal, want)
	}
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	wantDecision(t, h, "10.1.0.1", ReasonIPNotAllowed, "")
	if logs.FilterMessage("dns name refused: it resolves to more addresses than a name may admit; its last good addresses keep serving").Len() != 1 {
		t.Error("no refusal line")
	}
	srv.Set("api.test", 30, many[:maxNameAddrs]...)
	lookedUp(t, n, resolveNow(h, n))
	wantDecision(t, h, "10.1.0.1", ReasonAllowed, "api.test")
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "")
}

// A store token's dns: entry is resolved as a config token's is, at once;
// removing it takes effect at once, and the pool forgets the name.
func TestDNSStoreToken(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("cust.test", 300, "192.0.2.30")
	h := &Handler{Resolvers: []string{srv.Addr}, Store: &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}}
	provisionLogging(t, h, zapcore.InfoLevel)
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+dnsTok+`", "allow": ["dns:cust.test"]}`); r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	n := poolName(t, h, "cust.test")
	lookedUp(t, n, time.Time{})
	wantDecision(t, h, "192.0.2.30", ReasonAllowed, "cust.test")
	if r := routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1/allow/dns:cust.test", ""); r.status >= 300 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	wantDecision(t, h, "192.0.2.30", ReasonIPNotAllowed, "")
	h.dns.pool.mu.Lock()
	_, still := h.dns.pool.names["cust.test"]
	h.dns.pool.mu.Unlock()
	if still || !n.gone {
		t.Error("the pool still resolves a name no token lists once the change removed it")
	}
}

// Store changes one after another, each listing names, compile into a
// copy of the overlay in force: the copy has its own names, and the table
// requests read is never written.
func TestDNSStoreChangesInTurn(t *testing.T) {
	srv := testkit.DNS(t)
	for i := range 3 {
		srv.Set(fmt.Sprintf("c%d.test", i), 300, fmt.Sprintf("192.0.2.%d", 40+i))
	}
	h := &Handler{Resolvers: []string{srv.Addr}, Store: &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}}
	provisionLogging(t, h, zapcore.InfoLevel)
	var before *view
	named := 0
	for i := range 3 {
		body := fmt.Sprintf(`{"token": "dns-test-token-%d-0123456789", "allow": ["dns:c%d.test"]}`, i, i)
		if r := routeCall(t, "PUT", fmt.Sprintf("/ip-allowlist/tokens/cust-%d", i), body); r.status != http.StatusCreated {
			t.Fatalf("PUT %d: %d %s", i, r.status, r.body)
		}
		if before != nil && before.over != nil && len(before.over.dns) != named {
			t.Errorf("change %d wrote into the overlay in force before it: %d named tokens, had %d", i, len(before.over.dns), named)
		}
		before = h.current.Load()
		named = len(before.over.dns)
		lookedUp(t, poolName(t, h, fmt.Sprintf("c%d.test", i)), time.Time{})
	}
	for i := range 3 {
		r := serve(h, newRequest(fmt.Sprintf("192.0.2.%d:1234", 40+i), "/", "Authorization", fmt.Sprintf("Bearer dns-test-token-%d-0123456789", i)))
		if got := r.placeholder(placeholderDNSName); got != fmt.Sprintf("c%d.test", i) {
			t.Errorf("cust-%d: dns_name %q", i, got)
		}
	}
	// A token changed again drops its old names from the copy.
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-0", `{"token": "dns-test-token-0-0123456789", "allow": ["192.0.2.99"]}`); r.status >= 300 {
		t.Fatalf("PUT again: %d %s", r.status, r.body)
	}
	v := h.current.Load()
	if _, p := v.byLabel("cust-0"); p == nil || p.named {
		t.Error("cust-0 still named after its names were replaced")
	}
	if got := v.over.dnsNames(); got != 2 {
		t.Errorf("the overlay lists %d names, want 2", got)
	}
}

// A handler provisioned beside one in force (a reload) shares its pool:
// a name resolved already admits at once, with no lookup to wait for.
func TestDNSReloadKeepsAnswers(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10")
	old, _ := dnsHandler(t, srv, []string{"dns:api.test"})
	lookedUp(t, poolName(t, old, "api.test"), time.Time{})
	srv.Silent(true) // the new handler can only have it from the pool
	h, _ := dnsHandler(t, srv, []string{"dns:api.test"})
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	if h.dns.pool != old.dns.pool {
		t.Error("the new handler has a pool of its own")
	}
	_ = old.Cleanup()
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	_ = h.Cleanup()
	dnsPools.Lock()
	_, left := dnsPools.m[srv.Addr]
	dnsPools.Unlock()
	if left {
		t.Error("the pool stays after its last handler is cleaned up")
	}
}

// The system's resolvers are read from resolv.conf.
func TestSystemResolvers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	testkit.WriteFile(t, path, "search example.com\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	old := resolvConf
	resolvConf = path
	t.Cleanup(func() { resolvConf = old })
	got, err := systemResolvers()
	if err != nil || strings.Join(got, " ") != "192.0.2.53:53 [2001:db8::53]:53" {
		t.Errorf("systemResolvers() = %v, %v", got, err)
	}
	resolvConf = filepath.Join(t.TempDir(), "none")
	if _, err := systemResolvers(); err == nil || !strings.Contains(err.Error(), "give resolvers") {
		t.Errorf("without resolv.conf: %v, want an error saying to give resolvers", err)
	}
}

const dnsTok2 = "dns-test-token-abcdefghij"

// A build that began before the handler was cleaned up (a watched file, a
// merge) and compiles names after it does not crash: its names are
// detached, never resolved, and its table never published.
func TestDNSBuildAfterCleanup(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10")
	h, _ := dnsHandler(t, srv, []string{"dns:api.test", "dns:new.test"})
	_ = h.Cleanup()
	tb, err := h.build()
	if err != nil {
		t.Fatal(err)
	}
	if n := tb.dns[tb.policies[0].label].names[1]; n.state.Load() != nil || n.fqdn != "" {
		t.Errorf("a name compiled after Cleanup is resolved: %+v", n)
	}
	_ = h.Cleanup() // twice, as Caddy may
}

// An expiring entry of a store token that lists a name is recompiled by
// the expiry goroutine, into a copy of the overlay, without a crash.
func TestDNSExpiryOfNamedStoreToken(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("a.test", 300, "192.0.2.30")
	h := &Handler{Resolvers: []string{srv.Addr}, Store: &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}}
	provisionLogging(t, h, zapcore.InfoLevel)
	at := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	body := `{"token": "` + dnsTok + `", "allow": ["dns:a.test", "192.0.2.9"], "expires": {"192.0.2.9": "` + at + `"}}`
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", body); r.status >= 300 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	wantDecision(t, h, "192.0.2.9", ReasonAllowed, "")
	testkit.Wait(5*time.Second, func() bool { return dnsRequest(h, "192.0.2.9").placeholder(placeholderReason) != ReasonAllowed })
	wantDecision(t, h, "192.0.2.9", ReasonIPNotAllowed, "")
	wantDecision(t, h, "192.0.2.30", ReasonAllowed, "a.test")
}

// Names whose zone never answers do not hold up another tenant's: its
// owner's turn comes first, and the pool's goroutines stay few however
// many names there are.
func TestDNSBrokenZoneStarvesNoOne(t *testing.T) {
	good := testkit.DNS(t)
	good.Set("office.good.test", 300, "192.0.2.10")
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		if len(q.Question) == 1 && strings.HasSuffix(q.Question[0].Name, ".broken.test.") {
			return // dropped
		}
		good.ServeDNS(w, q)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	// 200 names: the other tenant's 4 tokens of 50 (dnsNamesPerToken).
	tokens := func() map[string]*TokenPolicy {
		m := map[string]*TokenPolicy{}
		for k := range 4 {
			var broken []string
			for i := range 50 {
				broken = append(broken, fmt.Sprintf("dns:h%d.broken.test", 50*k+i))
			}
			m[fmt.Sprintf("a-other-tenant-%d", k)] = &TokenPolicy{Token: fmt.Sprintf("%s-%d", dnsTok2, k), Owner: "other", Allow: broken}
		}
		return m
	}
	resolver := pc.LocalAddr().String()
	goroutines := runtime.NumGoroutine()
	old := &Handler{Resolvers: []string{resolver}, Tokens: tokens()}
	provisionLogging(t, old, zapcore.InfoLevel)
	time.Sleep(100 * time.Millisecond) // every worker is waiting on a broken zone
	if n := runtime.NumGoroutine() - goroutines; n > 3*dnsLookups+10 {
		t.Errorf("%d goroutines for 200 names, want at most %d", n, 3*dnsLookups+10)
	}
	both := tokens()
	both["b-office"] = &TokenPolicy{Token: dnsTok, Allow: []string{"dns:office.good.test"}}
	h := &Handler{Resolvers: []string{resolver}, Tokens: both}
	provisionLogging(t, h, zapcore.InfoLevel)
	_ = old.Cleanup()
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "office.good.test")
}

// A name with no good answer for dnsMaxStale lets go of its last good
// addresses, family by family; a name that keeps failing is tried less and
// less often.
func TestDNSMaxStaleAndBackoff(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10")
	h, logs, n := resolvedName(t, srv, "api.test")
	srv.SetRcode("api.test", dns.RcodeServerFailure)
	if s := lookedUp(t, n, resolveNow(h, n)); s.ttl != dnsRetry {
		t.Errorf("retry after one failure: %v, want %v", s.ttl, dnsRetry)
	}
	if s := lookedUp(t, n, resolveNow(h, n)); s.ttl != 2*dnsRetry {
		t.Errorf("retry after two failures: %v, want %v", s.ttl, 2*dnsRetry)
	}
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	// As if the last good answer were older than dnsMaxStale.
	s := *n.state.Load()
	s.good4 = time.Now().Add(-dnsMaxStale - time.Minute)
	n.state.Store(&s)
	lookedUp(t, n, resolveNow(h, n))
	wantDecision(t, h, "192.0.2.10", ReasonIPNotAllowed, "")
	if logs.FilterMessage("dns name has had no good answer for too long: its last good addresses no longer admit; it matches nothing until it resolves").Len() != 1 {
		t.Error("no line saying the last good addresses were let go of")
	}
	srv.Set("api.test", 300, "192.0.2.10")
	if s := lookedUp(t, n, resolveNow(h, n)); s.ttl != 300*time.Second {
		t.Errorf("ttl after recovery %v, want the answer's", s.ttl)
	}
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
}

// One family failing for ever does not make the other stale: A answers,
// AAAA fails, and past dnsMaxStale the A addresses still admit.
func TestDNSStaleFamilyByFamily(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 300, "192.0.2.10", "2001:db8::10")
	h, _, n := resolvedName(t, srv, "api.test")
	srv.FailType("api.test", dns.TypeAAAA, dns.RcodeServerFailure)
	s := *n.state.Load()
	s.good4 = time.Now().Add(-dnsMaxStale - time.Minute)
	s.good6 = s.good4
	n.state.Store(&s)
	lookedUp(t, n, resolveNow(h, n))
	wantDecision(t, h, "192.0.2.10", ReasonAllowed, "api.test")
	wantDecision(t, h, "[2001:db8::10]", ReasonIPNotAllowed, "")
}

// A user that leaves the pool (a refused load) takes its logger with it:
// the pool logs to the config still in force.
func TestDNSPoolLoggerOfTheConfigInForce(t *testing.T) {
	inForce, _ := testkit.Logs(zapcore.InfoLevel)
	refused, _ := testkit.Logs(zapcore.InfoLevel)
	a, b := &dnsHold{logger: inForce}, &dnsHold{logger: refused}
	p := openDNSPool([]string{"192.0.2.53:53"}, a)
	q := openDNSPool([]string{"192.0.2.53:53"}, b)
	if p != q {
		t.Fatal("two pools for the same resolvers")
	}
	q.close(b)
	p.mu.Lock()
	got := p.logger()
	p.mu.Unlock()
	if got != inForce {
		t.Error("the pool logs to the refused config's logger")
	}
	p.close(a)
}

// A change that removes a name one token lists keeps it for the others
// that list it: it is still resolved, and its changes still apply.
func TestDNSNameKeptWhileListed(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("shared.test", 300, "192.0.2.50")
	h := &Handler{Resolvers: []string{srv.Addr}, Store: &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}}
	provisionLogging(t, h, zapcore.InfoLevel)
	for i, tok := range []string{dnsTok, dnsTok2} {
		body := `{"token": "` + tok + `", "allow": ["dns:shared.test", "198.51.100.1"]}`
		if r := routeCall(t, "PUT", fmt.Sprintf("/ip-allowlist/tokens/cust-%d", i), body); r.status != http.StatusCreated {
			t.Fatalf("PUT: %d %s", r.status, r.body)
		}
	}
	if r := routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-0/allow/dns:shared.test", ""); r.status >= 300 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	n := poolName(t, h, "shared.test")
	srv.Set("shared.test", 300, "192.0.2.51")
	lookedUp(t, n, resolveNow(h, n))
	r := serve(h, newRequest("192.0.2.51:1234", "/", "Authorization", "Bearer "+dnsTok2))
	if got := r.placeholder(placeholderDNSName); got != "shared.test" {
		t.Errorf("cust-1 from the name's new address: dns_name %q, want shared.test", got)
	}
}

// A name whose AAAA lookups keep failing is asked again at its A TTL, not
// on the failure backoff: a removed A record goes as soon as its TTL says.
func TestDNSHalfFailingNameKeepsTTL(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("api.test", 30, "192.0.2.10", "2001:db8::10")
	h, _, n := resolvedName(t, srv, "api.test")
	srv.FailType("api.test", dns.TypeAAAA, dns.RcodeServerFailure)
	var s *nameState
	for range 5 {
		s = lookedUp(t, n, resolveNow(h, n))
	}
	if s.ttl > 30*time.Second {
		t.Errorf("A TTL 30 s, AAAA failing: next lookup in %v", s.ttl)
	}
}

// A refused change leaves no name in the pool; a change to a token of the
// base that removes its name lets go of it, though the masked base policy
// still lists it.
func TestDNSRefusedAndBaseChangesLetGo(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("leak.test", 300, "192.0.2.77")
	srv.Set("base.test", 300, "192.0.2.30")
	h := &Handler{Resolvers: []string{srv.Addr}, Store: &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}}
	provisionLogging(t, h, zapcore.InfoLevel)
	held := func(name string) bool {
		h.dns.pool.mu.Lock()
		defer h.dns.pool.mu.Unlock()
		_, ok := h.dns.pool.names[name]
		return ok
	}
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+dnsTok+`", "allow": ["dns:leak.test", "no_such_set"]}`); r.status < 400 {
		t.Fatalf("PUT accepted: %d", r.status)
	}
	if held("leak.test") {
		t.Error("a refused change left leak.test in the pool")
	}
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-2", `{"token": "`+dnsTok2+`", "allow": ["dns:base.test", "198.51.100.1"]}`)
	h.merge() // now in the base
	if !held("base.test") {
		t.Fatal("base.test not held after the merge")
	}
	routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-2/allow/dns:base.test", "")
	if held("base.test") {
		t.Error("base.test still resolved; only a masked base policy lists it")
	}
}

// acquireFor acquires name in p for the token label of owner.
func acquireFor(p *dnsPool, name, owner, label string) *dnsName {
	return p.acquire(name, dnsTenant{owner: owner, label: label})
}

// Lookups are granted in turn: each owner with names ready gets one before
// any gets another, and within an owner each of its tokens; a token with no
// owner is an owner of its own. Counted over the first grants, whatever
// each holds.
func TestDNSLookupsGrantedInTurnByOwnerAndToken(t *testing.T) {
	type tenant struct {
		owner, label string
		names        int
	}
	tests := []struct {
		name    string
		tenants []tenant
		grants  int
		want    map[string]int // grants by label
	}{
		{"a token of 999 names and one of 10", []tenant{{"", "hostile", 999}, {"", "victim", 10}}, 20,
			map[string]int{"hostile": 10, "victim": 10}},
		{"a token's names added first go no sooner", []tenant{{"", "victim", 3}, {"", "hostile", 999}}, 10,
			map[string]int{"hostile": 7, "victim": 3}},
		{"an owner's tokens share its turn", []tenant{{"acme", "acme-1", 500}, {"acme", "acme-2", 500}, {"", "solo", 500}}, 40,
			map[string]int{"acme-1": 10, "acme-2": 10, "solo": 20}},
		{"an owner's many tokens get one turn", []tenant{{"acme", "a1", 99}, {"acme", "a2", 99}, {"acme", "a3", 99}, {"acme", "a4", 99}, {"", "solo", 99}}, 40,
			map[string]int{"a1": 5, "a2": 5, "a3": 5, "a4": 5, "solo": 20}},
		{"owners apart from tokens of the same label", []tenant{{"acme", "x", 50}, {"", "x", 50}}, 20,
			map[string]int{"x": 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newDNSPool("")
			p.servers.Store(&resolverList{})
			owner := map[string]string{}
			for _, tn := range tt.tenants {
				for i := range tn.names {
					acquireFor(p, fmt.Sprintf("%s-%s-%d.test", tn.owner, tn.label, i), tn.owner, tn.label)
				}
			}
			for _, tn := range tt.tenants {
				owner[tn.label] = tn.owner
			}
			got := map[string]int{}
			now := time.Now()
			for range tt.grants {
				n, _ := p.next(now)
				if n == nil {
					t.Fatal("no name granted while names are ready")
				}
				label := strings.SplitN(n.name, "-", 2)[1]
				label = label[:strings.LastIndex(label, "-")]
				got[label]++
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("grants %v, want %v", got, tt.want)
			}
		})
	}
}

// A name that two tenants list is looked up once a turn, in whichever's
// turn comes first, and a name let go of is granted to no one.
func TestDNSSharedNameLookedUpOnceATurn(t *testing.T) {
	p := newDNSPool("")
	p.servers.Store(&resolverList{})
	shared := acquireFor(p, "shared.test", "", "a")
	acquireFor(p, "shared.test", "", "b")
	gone := acquireFor(p, "gone.test", "", "b")
	p.release(gone)
	now := time.Now()
	if n, _ := p.next(now); n != shared {
		t.Fatalf("granted %v, want shared.test", n)
	}
	if n, wait := p.next(now); n != nil || wait != dnsMaxTTL {
		t.Errorf("then granted %v (wait %v), want none: the name was looked up in this turn", n, wait)
	}
	shared.due = now.Add(time.Second)
	p.queue(shared)
	if n, wait := p.next(now); n != nil || wait != time.Second {
		t.Errorf("before it is due: %v, %v", n, wait)
	}
	if n, _ := p.next(now.Add(time.Second)); n != shared {
		t.Errorf("when due: %v, want shared.test", n)
	}
	if len(p.owners) != 2 {
		t.Errorf("%d owners, want 2: b's queue goes with gone.test, not with shared.test", len(p.owners))
	}
}

// A name that many tokens list is in the queues of dnsMaxTenants of them,
// so that listing it costs a token no more, however many do.
func TestDNSNameListedByManyTokensBounded(t *testing.T) {
	p := newDNSPool("")
	p.servers.Store(&resolverList{})
	var n *dnsName
	for i := range 1000 {
		n = acquireFor(p, "office.test", "", fmt.Sprintf("t%d", i))
	}
	if len(n.tenants) != dnsMaxTenants || len(p.owners) != dnsMaxTenants {
		t.Errorf("%d tenants, %d owners, want %d", len(n.tenants), len(p.owners), dnsMaxTenants)
	}
	if got, _ := p.next(time.Now()); got != n {
		t.Errorf("granted %v, want office.test", got)
	}
}

// lookupSim runs p's turns against a controllable clock: dnsLookups
// lookups at most at once, each taking took(n), each name due again ttl
// after its lookup ends, and add called every step to acquire names. It
// returns when each name's lookups were granted.
func lookupSim(p *dnsPool, span time.Duration, took func(*dnsName) time.Duration, ttl time.Duration, add func(now time.Time)) map[string][]time.Time {
	type running struct {
		n   *dnsName
		end time.Time
	}
	const step = 100 * time.Millisecond
	start := time.Now()
	var run []running
	granted := map[string][]time.Time{}
	for now := start; now.Before(start.Add(span)); now = now.Add(step) {
		if add != nil {
			add(now)
		}
		kept := run[:0]
		for _, r := range run {
			if r.end.After(now) {
				kept = append(kept, r)
				continue
			}
			p.mu.Lock()
			r.n.due = r.end.Add(ttl)
			p.queue(r.n)
			p.mu.Unlock()
		}
		run = kept
		for len(run) < dnsLookups {
			n, _ := p.next(now)
			if n == nil {
				break
			}
			granted[n.name] = append(granted[n.name], now)
			run = append(run, running{n, now.Add(took(n))})
		}
	}
	return granted
}

// slowHostile is the lookup time of the hostile tenant's names in the
// report: 8 CNAMEs, 0.64 s a query.
func slowHostile(n *dnsName) time.Duration {
	if strings.HasPrefix(n.name, "hostile") {
		return 8 * 640 * time.Millisecond
	}
	return 10 * time.Millisecond
}

// One tenant's 999 slow names, more than the lookups can keep up with,
// do not hold back another token's name: due again every TTL, it is looked
// up within the TTL and one lookup's time (dnsDeadline) of the last, not
// later and later.
func TestDNSRenewalNotStarvedBySlowTenant(t *testing.T) {
	p := newDNSPool("")
	p.servers.Store(&resolverList{})
	for i := range 999 {
		acquireFor(p, fmt.Sprintf("hostile%d.test", i), "", "hostile")
	}
	acquireFor(p, "victim.test", "", "victim")
	granted := lookupSim(p, 10*time.Minute, slowHostile, dnsMinTTL, nil)
	v := granted["victim.test"]
	if len(v) < 2 {
		t.Fatalf("victim.test looked up %d times in 10 minutes", len(v))
	}
	bound := dnsMinTTL + dnsDeadline + time.Second
	for i := 1; i < len(v); i++ {
		if gap := v[i].Sub(v[i-1]); gap > bound {
			t.Fatalf("lookups %d and %d of victim.test %v apart, more than the TTL and one lookup (%v); all: %v", i-1, i, gap, bound, gaps(v))
		}
	}
	if hostile := len(granted["hostile0.test"]); hostile == 0 {
		t.Error("the hostile tenant's names are never looked up: the turns are not shared")
	}
}

// A stream of new names from one tenant does not keep another's new name
// pending: it is looked up within one lookup's time of being added.
func TestDNSNewNameNotHeldBackByStream(t *testing.T) {
	p := newDNSPool("")
	p.servers.Store(&resolverList{})
	added := 0
	var victimAdded time.Time
	start := time.Now()
	granted := lookupSim(p, 5*time.Minute, slowHostile, dnsMinTTL, func(now time.Time) {
		for range 3 { // 30 a second: 9,000 in the run
			acquireFor(p, fmt.Sprintf("hostile%d.test", added), "", "hostile")
			added++
		}
		if victimAdded.IsZero() && now.Sub(start) >= time.Minute {
			victimAdded = now
			acquireFor(p, "victim.test", "", "victim")
		}
	})
	v := granted["victim.test"]
	if len(v) == 0 {
		t.Fatalf("victim.test, added a minute in, never looked up while %d names were added", added)
	}
	if wait := v[0].Sub(victimAdded); wait > dnsDeadline {
		t.Errorf("victim.test first looked up %v after it was added, more than one lookup's time (%v)", wait, dnsDeadline)
	}
}

func gaps(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]).Round(time.Second))
	}
	return out
}

// quotaNames is k dns: entries, prefix0.test on.
func quotaNames(prefix string, k int) []string {
	out := make([]string, k)
	for i := range out {
		out[i] = fmt.Sprintf("dns:%s%d.test", prefix, i)
	}
	return out
}

// A token lists at most dnsNamesPerToken dns: entries, and the tokens of
// one owner dnsNamesPerOwner together; tokens with no owner are bounded
// one by one. The error names the token and the entry past the quota.
func TestDNSNameQuotas(t *testing.T) {
	srv := testkit.DNS(t)
	tokens := func(owner string, sizes ...int) map[string]*TokenPolicy {
		m := map[string]*TokenPolicy{}
		for i, k := range sizes {
			m[fmt.Sprintf("t%d", i)] = &TokenPolicy{Token: fmt.Sprintf("quota-token-%02d-0123456789", i), Owner: owner,
				Allow: quotaNames(fmt.Sprintf("t%d-", i), k)}
		}
		return m
	}
	tests := []struct {
		name   string
		tokens map[string]*TokenPolicy
		want   string // "" for none
	}{
		{"a token at its quota", tokens("", dnsNamesPerToken), ""},
		{"a token past its quota", tokens("", dnsNamesPerToken+1),
			fmt.Sprintf(`token "t0": allow[%d] "dns:t0-%d.test": more than %d dns: entries in one token`, dnsNamesPerToken, dnsNamesPerToken, dnsNamesPerToken)},
		{"an owner at its quota", tokens("acme", 64, 64, 64, 64), ""},
		{"an owner past its quota", tokens("acme", 64, 64, 64, 64, 1),
			`token "t4": allow[0] "dns:t4-0.test": owner "acme": more than 256 dns: entries in its tokens together`},
		{"tokens without an owner", tokens("", 64, 64, 64, 64, 64), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Resolvers: []string{srv.Addr}, Tokens: tt.tokens}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.provisionWithLogger(ctx, zap.NewNop())
			defer h.Cleanup()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("provision: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("provision: %v\nwant an error containing %s", err, tt.want)
			}
		})
	}
}

// A change through the routes is held to its owner's quota, counting the
// owner's other tokens and not the one it replaces.
func TestDNSOwnerQuotaOnChanges(t *testing.T) {
	srv := testkit.DNS(t)
	h := &Handler{Resolvers: []string{srv.Addr}, Store: &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}}
	provisionLogging(t, h, zapcore.InfoLevel)
	put := func(label string, i, k int, prefix string) reply {
		allow, _ := json.Marshal(quotaNames(prefix, k))
		return routeCall(t, "PUT", "/ip-allowlist/tokens/"+label,
			fmt.Sprintf(`{"token": "quota-change-token-%02d-0123456789", "owner": "acme", "allow": %s}`, i, allow))
	}
	for i := range 4 {
		if r := put(fmt.Sprintf("cust-%d", i), i, 64, fmt.Sprintf("c%d-", i)); r.status >= 300 {
			t.Fatalf("cust-%d, 64 names: %d %s", i, r.status, r.body)
		}
	}
	if r := put("cust-0", 0, 64, "other-"); r.status >= 300 {
		t.Errorf("cust-0's 64 names replaced by 64 others: %d %s", r.status, r.body)
	}
	r := put("cust-4", 4, 1, "c4-")
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `owner \"acme\": more than 256 dns: entries`) {
		t.Errorf("a fifth token of acme: %d %s, want 400 naming the owner's quota", r.status, r.body)
	}
}

// Matching never uses addresses past dnsMaxStale: a name whose last good
// answer is older than that, with no lookup since, matches nothing, before
// any lookup comes to let go of them.
func TestDNSStaleAddressesMatchNothingBeforeTheNextLookup(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("office.test", 3600, "192.0.2.10")
	h, _, n := resolvedName(t, srv, "office.test")
	p := h.dns.pool
	tests := []struct {
		name   string
		age    time.Duration // of the last good answer
		reason string
		by     string
	}{
		{"within the bound", dnsMaxStale - time.Minute, ReasonAllowed, "office.test"},
		{"past the bound", dnsMaxStale + 2*time.Second, ReasonIPNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.mu.Lock()
			p.settle(n, answer{addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, ttl: time.Hour},
				answer{ttl: time.Hour}, time.Now().Add(-tt.age))
			p.mu.Unlock()
			wantDecision(t, h, "192.0.2.10", tt.reason, tt.by)
		})
	}
}
