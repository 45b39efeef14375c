package examples

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// examples/leak.Caddyfile: a listed token used from 25 distinct addresses
// outside its list raises
// exactly one WARN and one count of the metric, whatever follows in the
// window; with suspend, the store token is refused from its own address
// until it is resumed. The config's token is alerted, not suspended.
func TestLeakAlertAgainstTheBinary(t *testing.T) {
	c := testkit.StartCaddyFile(t, "leak.Caddyfile", "8085", testkit.Options{})
	tok := storeTok("leaky")
	putToken(t, c, "leaky", tok, "203.0.113.7")
	from := func(tok, addr string) testkit.Reply {
		return c.Do(testkit.Request{Header: append(testkit.Bearer(tok), "X-Forwarded-For", addr)})
	}
	if r := from(tok, "203.0.113.7"); r.Status != 200 {
		t.Fatalf("from its own address: %v", r)
	}
	for i := range 25 {
		if r := from(tok, fmt.Sprintf("192.0.2.%d", 10+i)); r.Status != 401 {
			t.Fatalf("from outside: %v", r)
		}
	}
	// More refusals in the same window, from new and old addresses.
	for i := range 10 {
		from(tok, fmt.Sprintf("198.18.0.%d", i))
	}
	out := c.WaitOutput(func(out string) bool { return strings.Contains(out, `"msg":"token may be leaked"`) })
	time.Sleep(200 * time.Millisecond) // any second line would be out by now
	out = c.Output()
	if n := strings.Count(out, `"msg":"token may be leaked"`); n != 1 {
		t.Fatalf("%d WARN lines token may be leaked, want exactly 1", n)
	}
	line := out[strings.Index(out, `"msg":"token may be leaked"`):]
	line = line[:strings.IndexByte(line, '\n')]
	for _, want := range []string{`"token_label":"leaky"`, `"distinct_addresses":25`, `"refusals":25`, `"192.0.2.10"`} {
		if !strings.Contains(line, want) {
			t.Errorf("the WARN line lacks %s: %s", want, line)
		}
	}
	if strings.Contains(out, tok) {
		t.Error("the output holds the token")
	}
	if n, found := c.Metric("caddy_http_ip_allowlist_leak_alerts_total", ""); !found || n != 1 {
		t.Errorf("caddy_http_ip_allowlist_leak_alerts_total %v (found %v), want 1", n, found)
	}
	// Suspended through the store: refused from its own address.
	testkit.Wait(5*time.Second, func() bool { return from(tok, "203.0.113.7").Status == 401 })
	if r := from(tok, "203.0.113.7"); r.Status != 401 {
		t.Fatalf("from its own address after the alert: %v, want 401 (suspended)", r)
	}
	if !strings.Contains(c.WaitOutput(func(out string) bool {
		return strings.Contains(out, `"source":"leak_alert"`)
	}), `"action":"suspend"`) {
		t.Error("no token changed line for the suspension")
	}
	mustRoute(t, c, 200, "POST", "/ip-allowlist/tokens/leaky/resume", "")
	if r := from(tok, "203.0.113.7"); r.Status != 200 {
		t.Fatalf("after resume: %v", r)
	}

	// The config's token: one alert, and it keeps working.
	cfg := storeTok("config-a")
	for i := range 25 {
		from(cfg, fmt.Sprintf("192.0.2.%d", 100+i))
	}
	c.WaitOutput(func(out string) bool { return strings.Count(out, `"msg":"token may be leaked"`) == 2 })
	if r := from(cfg, "198.51.100.5"); r.Status != 200 {
		t.Errorf("the config token after its alert: %v, want 200 (alerted, not suspended)", r)
	}
	if n, _ := c.Metric("caddy_http_ip_allowlist_leak_alerts_total", ""); n != 2 {
		t.Errorf("leak_alerts_total %v after the second alert, want 2", n)
	}
}
