package examples

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

const dnsExampleTok = "dns-example-token-office-5b2e17"

// examples/dns.Caddyfile against the real binary: the token is admitted
// from the address its name resolves to, the answer and the access log say
// which name admitted it, a name that never resolves (NXDOMAIN, SERVFAIL)
// matches nothing, and a store token's dns: entry works as the config's.
func TestDNSExample(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("office.example.com", 300, "203.0.113.21", "2001:db8::21")
	srv.Set("store.example.com", 300, "203.0.113.31")
	srv.SetRcode("broken.example.com", dns.RcodeServerFailure)
	c := testkit.StartCaddyFile(t, "dns.Caddyfile", "8086", testkit.Options{Env: []string{"IPA_RESOLVER=" + srv.Addr}})
	from := func(tok, addr string) testkit.Reply {
		return c.Do(testkit.Request{Header: append(testkit.Bearer(tok), "X-Forwarded-For", addr)})
	}
	// Resolved off the request path, without blocking the start.
	testkit.Wait(5*time.Second, func() bool { return from(dnsExampleTok, "203.0.113.21").Status == 200 })
	r := from(dnsExampleTok, "203.0.113.21")
	if r.Status != 200 || r.Body != "hello, office (by office.example.com)" {
		t.Fatalf("from the name's address: %v", r)
	}
	if r := from(dnsExampleTok, "2001:db8::21"); r.Status != 200 {
		t.Errorf("from the name's IPv6 address: %v", r)
	}
	if r := from(dnsExampleTok, "198.51.100.7"); r.Status != 200 || r.Body != "hello, office (by )" {
		t.Errorf("from the listed address: %v", r)
	}
	if r := from(dnsExampleTok, "203.0.113.22"); r.Status != 401 {
		t.Errorf("from elsewhere: %v, want 401", r)
	}
	// The README's DNS names block, against this Caddy: its curl line
	// answers what the README says.
	cmds := readmeCurls(t, "### DNS names", map[string]string{"<an address office.example.com resolves to>": "203.0.113.21"})
	if len(cmds) != 1 {
		t.Fatalf("the README's DNS names block has %d curl lines, want 1", len(cmds))
	}
	var header []string
	words := shellWords(t, cmds[0])
	for i := 1; i < len(words); i++ {
		switch {
		case words[i] == "-H" && i+1 < len(words):
			i++
			k, v, _ := strings.Cut(words[i], ": ")
			header = append(header, k, v)
		case words[i] != "http://127.0.0.1:8086/":
			t.Fatalf("README curl line %q: word %q is not understood by this test", cmds[0], words[i])
		}
	}
	if r := c.Do(testkit.Request{Header: header}); r.Status != 200 || !strings.Contains(readmeSection(t, "### DNS names"), "# "+r.Body+"\n") {
		t.Errorf("the README's curl line: %v, which the README does not say", r)
	}
	out := c.WaitOutput(func(out string) bool { return strings.Contains(out, `"ip_allowlist_dns_name":"office.example.com"`) })
	if !strings.Contains(out, `"msg":"dns name resolved"`) || !strings.Contains(out, `"dns_name":"office.example.com"`) {
		t.Error("no 'dns name resolved' line for office.example.com")
	}

	// A store token, and names that never resolve.
	tok := storeTok("dns-store")
	putToken(t, c, "cust-1", tok, "dns:store.example.com", "dns:broken.example.com", "dns:gone.example.com")
	testkit.Wait(5*time.Second, func() bool { return from(tok, "203.0.113.31").Status == 200 })
	if r := from(tok, "203.0.113.31"); r.Body != "hello, cust-1 (by store.example.com)" {
		t.Errorf("the store token from its name's address: %v", r)
	}
	c.WaitOutput(func(out string) bool {
		return strings.Contains(out, `"msg":"dns name lookup failed; it matches nothing until it resolves","dns_name":"broken.example.com"`) &&
			strings.Contains(out, `"msg":"dns name resolves to no address: it matches nothing","dns_name":"gone.example.com"`)
	})
	if r := from(tok, "203.0.113.21"); r.Status != 401 {
		t.Errorf("the store token from another token's name: %v, want 401", r)
	}
	check := c.AdminCall("GET", "/ip-allowlist/check?label=cust-1&ip=203.0.113.31", "")
	if !strings.Contains(check.Body, `"dns_name":"store.example.com"`) {
		t.Errorf("check: %v, want it to name store.example.com", check)
	}
	if strings.Contains(c.Output(), tok) {
		t.Error("the output holds the token")
	}
	// Lookups are counted by result: office, store and gone answered,
	// broken failed.
	if n, _ := c.Metric("caddy_http_ip_allowlist_dns_lookups_total", `result="answered"`); n < 3 {
		t.Errorf("dns_lookups_total answered %v, want at least 3", n)
	}
	if n, _ := c.Metric("caddy_http_ip_allowlist_dns_lookups_total", `result="failed"`); n < 1 {
		t.Errorf("dns_lookups_total failed %v, want at least 1", n)
	}
}

// caddy validate provisions the config but resolves nothing: the DNS
// server is not asked.
func TestDNSValidateResolvesNothing(t *testing.T) {
	bin := testkit.CaddyBin(t)
	srv := testkit.DNS(t)
	srv.Set("office.example.com", 300, "203.0.113.21")
	home := t.TempDir()
	cmd := exec.Command(bin, "validate", "--config", "dns.Caddyfile", "--adapter", "caddyfile")
	cmd.Env = append(testkit.CaddyEnv(home), "IPA_RESOLVER="+srv.Addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	if q := srv.Queries("office.example.com"); len(q) != 0 {
		t.Errorf("caddy validate asked the DNS server %d times, want none", len(q))
	}
	if _, err := os.Stat(filepath.Join(home, "caddy", "ip-allowlist", "tokens.db")); err == nil {
		t.Error("caddy validate created the store file")
	}
}

// dnsConfig is a Caddyfile whose token office may be used from
// dns:office.example.com, resolved through resolver.
func dnsConfig(resolver string) func(admin, site string) string {
	return func(admin, site string) string {
		return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}
http://%s {
	ip_allowlist {
		resolvers %s
		token %s {
			label office
			allow dns:office.example.com
		}
	}
	respond "ok" 200
}
`, admin, site, resolver, dnsExampleTok)
	}
}

// startDNSCaddy starts a DNS server with office.example.com at addr (ttl
// 30 s) and a Caddy that resolves it, and waits until addr is admitted.
func startDNSCaddy(t *testing.T, addr string) (*testkit.DNSServer, *testkit.Caddy, func(addr string) int) {
	srv := testkit.DNS(t)
	srv.Set("office.example.com", 30, addr)
	c := testkit.StartCaddy(t, "Caddyfile", dnsConfig(srv.Addr), testkit.Options{})
	from := func(addr string) int {
		return c.Do(testkit.Request{Header: append(testkit.Bearer(dnsExampleTok), "X-Forwarded-For", addr)}).Status
	}
	testkit.Wait(5*time.Second, func() bool { return from(addr) == 200 })
	if s := from(addr); s != 200 {
		t.Fatalf("from %s, the name's address: %d", addr, s)
	}
	return srv, c, from
}

// A record that changes: the new address is admitted within the TTL (30 s)
// plus one second of the change, and the old one is refused from then on.
func TestDNSRecordChangeAgainstTheBinary(t *testing.T) {
	t.Parallel()
	srv, _, from := startDNSCaddy(t, "203.0.113.41")
	changed := time.Now()
	srv.Set("office.example.com", 30, "203.0.113.42")
	testkit.Wait(35*time.Second, func() bool { return from("203.0.113.42") == 200 })
	took := time.Since(changed)
	if from("203.0.113.42") != 200 {
		t.Fatalf("the new address is not admitted %v after the change", took)
	}
	if took > 31*time.Second {
		t.Errorf("the new address was admitted %v after the change, want within the TTL (30 s) plus one second", took)
	}
	if s := from("203.0.113.41"); s != 401 {
		t.Errorf("the old address after the change: %d, want 401", s)
	}
	t.Logf("record change to admission: %v", took.Round(time.Millisecond))
}

// A server that stops answering: at the next lookup, which fails, the
// last good address keeps serving, and the failure is logged once.
func TestDNSServerStopsAgainstTheBinary(t *testing.T) {
	t.Parallel()
	srv, c, from := startDNSCaddy(t, "203.0.113.51")
	stopped := time.Now()
	srv.Silent(true)
	testkit.Wait(40*time.Second, func() bool {
		return strings.Contains(c.Output(), `"msg":"dns name lookup failed; its last good addresses keep serving"`)
	})
	asked := srv.Queries("office.example.com")
	if len(asked) == 0 || !asked[len(asked)-1].After(stopped) {
		t.Fatal("the failure was logged before the server was asked again")
	}
	if s := from("203.0.113.51"); s != 200 {
		t.Errorf("the last good address after the failed lookup: %d, want 200", s)
	}
	if s := from("203.0.113.52"); s != 401 {
		t.Errorf("another address: %d, want 401", s)
	}
	out := c.Output()
	if n := strings.Count(out, `"msg":"dns name lookup failed`); n != 1 {
		t.Errorf("%d failure lines, want 1", n)
	}
	if !strings.Contains(out, `no answer (timeout)`) {
		t.Error("the failure line does not say the lookup timed out")
	}
}
