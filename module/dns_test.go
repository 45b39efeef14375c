package ipallowlist

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
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

// Names whose zone never answers do not hold up the others: a name never
// looked up goes before any due again, and the pool's goroutines stay few
// however many names there are.
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
	var broken []string
	for i := range 200 {
		broken = append(broken, fmt.Sprintf("dns:h%d.broken.test", i))
	}
	resolver := pc.LocalAddr().String()
	goroutines := runtime.NumGoroutine()
	old := &Handler{Resolvers: []string{resolver}, Tokens: map[string]*TokenPolicy{"a-other-tenant": {Token: dnsTok2, Allow: broken}}}
	provisionLogging(t, old, zapcore.InfoLevel)
	time.Sleep(100 * time.Millisecond) // every worker is waiting on a broken zone
	if n := runtime.NumGoroutine() - goroutines; n > 3*dnsLookups+10 {
		t.Errorf("%d goroutines for 200 names, want at most %d", n, 3*dnsLookups+10)
	}
	h := &Handler{Resolvers: []string{resolver}, Tokens: map[string]*TokenPolicy{
		"a-other-tenant": {Token: dnsTok2, Allow: broken},
		"b-office":       {Token: dnsTok, Allow: []string{"dns:office.good.test"}},
	}}
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

// A stream of new names does not hold back the names due again: next
// gives them turn about.
func TestDNSDueNamesTakeTurns(t *testing.T) {
	p := &dnsPool{names: map[string]*dnsName{}, wake: make(chan struct{}, 1)}
	now := time.Now()
	for i := range 4 {
		p.fresh = append(p.fresh, &dnsName{name: fmt.Sprintf("fresh%d.test", i), queued: true})
		p.queue(&dnsName{name: fmt.Sprintf("due%d.test", i), due: now.Add(-time.Minute)})
	}
	var order []string
	for range 8 {
		n, _ := p.next(now)
		order = append(order, strings.TrimSuffix(n.name, ".test")[:3])
	}
	if got := strings.Join(order, " "); got != "due fre due fre due fre due fre" {
		t.Errorf("order %s, want due and fresh names in turn", got)
	}
	if n, wait := p.next(now); n != nil || wait != dnsMaxTTL {
		t.Errorf("next on an empty pool: %v, %v", n, wait)
	}
}
