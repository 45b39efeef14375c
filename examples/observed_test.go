package examples

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// observedConfig: partner-d may be used from 127.0.0.1 only (enforce
// mode); partner-e, under /report, is learning in report mode from
// 127.0.0.1 only. 127.0.0.1 may forward the client address, so a request
// can come "from" 198.51.100.9 through X-Forwarded-For.
func observedConfig(admin, site string) string {
	return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}

http://%s {
	handle /report* {
		ip_allowlist {
			mode report
			token {env.PARTNER_E_TOKEN} {
				label partner-e
				allow 127.0.0.1
			}
		}
		respond "report, {http.ip_allowlist.token_label}"
	}
	handle {
		ip_allowlist {
			token {env.PARTNER_D_TOKEN} {
				label partner-d
				allow 127.0.0.1
			}
		}
		respond "hello, {http.ip_allowlist.token_label}"
	}
}
`, admin, site)
}

const (
	tokPartnerD = "partner-d-token-4b1"
	tokPartnerE = "partner-e-token-0c7"
)

func startObserved(t *testing.T) *testkit.Caddy {
	return testkit.StartCaddy(t, "Caddyfile", observedConfig, inRepo("PARTNER_D_TOKEN="+tokPartnerD, "PARTNER_E_TOKEN="+tokPartnerE))
}

// TestObservedCaddyfileLeavesOutRefused is the reported hole: a token
// allowed from 127.0.0.1 and refused, more often, from 127.0.0.2 and from
// 198.51.100.9. The refused addresses rank first, and the allow line to
// paste must still hold 127.0.0.1 alone, with the refused ones reported
// after it. In report mode (partner-e), the addresses that would have been
// refused are what the operator is learning, so they are listed.
func TestObservedCaddyfileLeavesOutRefused(t *testing.T) {
	c := startObserved(t)
	send := func(n int, r testkit.Request, status int) {
		t.Helper()
		for range n {
			if got := c.Do(r); got.Status != status {
				t.Fatalf("%+v: %v, want %d", r, got, status)
			}
		}
	}
	send(2, testkit.Request{Local: "127.0.0.1", Header: testkit.Bearer(tokPartnerD)}, 200)
	send(5, testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tokPartnerD)}, 401)
	send(1, testkit.Request{Local: "127.0.0.1", Header: append(testkit.Bearer(tokPartnerD), "X-Forwarded-For", "198.51.100.9")}, 401)
	send(1, testkit.Request{Local: "127.0.0.1", Path: "/report", Header: testkit.Bearer(tokPartnerE)}, 200)
	send(3, testkit.Request{Local: "127.0.0.3", Path: "/report", Header: testkit.Bearer(tokPartnerE)}, 200)

	status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-d?format=caddyfile", "", "")
	want := "allow 127.0.0.1\n" +
		"# refused in enforce mode, not listed above: 127.0.0.2 (5 requests refused)\n" +
		"# refused in enforce mode, not listed above: 198.51.100.9 (1 request refused)\n"
	if status != 200 || body != want {
		t.Errorf("partner-d, format=caddyfile: %d\n%s\nwant\n%s", status, body, want)
	}
	allowLine, _, _ := strings.Cut(body, "\n")
	for _, refused := range []string{"127.0.0.2", "198.51.100.9"} {
		if strings.Contains(allowLine, refused) {
			t.Errorf("the allow line %q lists %s, which was refused", allowLine, refused)
		}
	}

	status, body = c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-d", "", "")
	var seen []struct {
		IP              string
		Allowed, Denied uint64
		WouldDeny       uint64 `json:"would_deny"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &seen) != nil || len(seen) != 3 ||
		seen[0].IP != "127.0.0.2" || seen[0].Denied != 5 || seen[0].Allowed != 0 ||
		seen[1].IP != "127.0.0.1" || seen[1].Allowed != 2 || seen[1].Denied != 0 ||
		seen[2].IP != "198.51.100.9" || seen[2].Denied != 1 || seen[0].WouldDeny+seen[1].WouldDeny+seen[2].WouldDeny != 0 {
		t.Errorf("partner-d, JSON: %d %s", status, body)
	}

	status, body = c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-e?format=caddyfile", "", "")
	want = "allow 127.0.0.3 127.0.0.1\n" +
		"# would have been refused in report mode, listed above: 127.0.0.3 (3 requests would have been refused)\n"
	if status != 200 || body != want {
		t.Errorf("partner-e (report mode), format=caddyfile: %d\n%s\nwant\n%s", status, body, want)
	}
	if status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-e", "", ""); status != 200 ||
		!strings.Contains(body, `{"ip":"127.0.0.3","allowed":0,"denied":0,"would_deny":3,`) {
		t.Errorf("partner-e, JSON: %d %s", status, body)
	}
	if out := c.Output(); strings.Contains(out, tokPartnerD) || strings.Contains(out, tokPartnerE) {
		t.Error("a token is in Caddy's output")
	}
}

// TestObservedUnknownFormatIs400: a format other than json or caddyfile is
// refused, naming the accepted ones, rather than answered as JSON.
func TestObservedUnknownFormatIs400(t *testing.T) {
	c := startObserved(t)
	c.Do(testkit.Request{Header: testkit.Bearer(tokPartnerD)})
	for _, path := range []string{"/ip-allowlist/observed/partner-d?format=yaml", "/ip-allowlist/observed?format=yaml"} {
		status, body := c.AdminDo(http.MethodGet, path, "", "")
		if status != http.StatusBadRequest || !strings.Contains(body, `format \"yaml\": want json (the default) or caddyfile`) {
			t.Errorf("GET %s: %d %s, want 400 naming json and caddyfile", path, status, body)
		}
	}
	if status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-d?format=json", "", ""); status != 200 || !strings.HasPrefix(body, `[{"ip":"127.0.0.1"`) {
		t.Errorf("format=json: %d %s", status, body)
	}
}

// TestObservedDeleteResets: DELETE of one label drops that label only and
// answers what it held; DELETE of the collection drops the rest; an
// unknown label is 404. Recording starts again from nothing.
func TestObservedDeleteResets(t *testing.T) {
	c := startObserved(t)
	c.Do(testkit.Request{Header: testkit.Bearer(tokPartnerD)})
	c.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tokPartnerD)})
	c.Do(testkit.Request{Path: "/report", Header: testkit.Bearer(tokPartnerE)})

	steps := []struct {
		name, method, path string
		status             int
		body               string // contained in the answer
	}{
		{"unknown label", http.MethodDelete, "/ip-allowlist/observed/nobody", 404, `no address observed for token \"nobody\"`},
		{"one label, answering what it held", http.MethodDelete, "/ip-allowlist/observed/partner-d", 200, `{"ip":"127.0.0.2","allowed":0,"denied":1,"would_deny":0,`},
		{"that label is gone", http.MethodGet, "/ip-allowlist/observed/partner-d", 404, "no address observed"},
		{"the other is kept", http.MethodGet, "/ip-allowlist/observed/partner-e", 200, `[{"ip":"127.0.0.1","allowed":1,`},
		{"every label", http.MethodDelete, "/ip-allowlist/observed", 200, `{"partner-e":[{"ip":"127.0.0.1"`},
		{"nothing left", http.MethodGet, "/ip-allowlist/observed", 200, "{}"},
	}
	for _, s := range steps {
		if status, body := c.AdminDo(s.method, s.path, "", ""); status != s.status || !strings.Contains(body, s.body) {
			t.Fatalf("%s: %s %s: %d %s, want %d containing %s", s.name, s.method, s.path, status, body, s.status, s.body)
		}
	}
	c.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tokPartnerD)})
	if status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-d?format=caddyfile", "", ""); status != 200 ||
		body != "# no address to allow: every observed address was refused in enforce mode\n# refused in enforce mode, not listed above: 127.0.0.2 (1 request refused)\n" {
		t.Errorf("after the reset, one refused request: %d %q", status, body)
	}
}

// TestPromoteLeavesOutAddressRefusedBeforeFlood is finding 6 against the
// real binary: a store token in enforce mode is refused 5 times from
// 127.0.5.66; the operator switches it to report mode; a legitimate
// client uses it 10 times from 127.0.7.10; one request comes from each of
// 120 other addresses, more than the 16 the summary keeps; 127.0.5.66
// comes back 3 times. Promote adds 127.0.7.10 and not 127.0.5.66, and says
// why it left that one out.
func TestPromoteLeavesOutAddressRefusedBeforeFlood(t *testing.T) {
	const attacker, legit = "127.0.5.66", "127.0.7.10"
	c := startStore(t)
	tok := storeTok("promoted")
	putToken(t, c, "cust-1", tok, "127.0.1.1")
	send := func(local string, n, status int) {
		t.Helper()
		for range n {
			if r := c.Do(testkit.Request{Local: local, Header: testkit.Bearer(tok)}); r.Status != status {
				t.Fatalf("from %s: %v, want %d", local, r, status)
			}
		}
	}
	send(attacker, 5, 401)
	body, _ := json.Marshal(map[string]any{"token": tok, "allow": []string{"127.0.1.1"}, "mode": "report"})
	mustRoute(t, c, 200, "PUT", "/ip-allowlist/tokens/cust-1", string(body))
	send(legit, 10, 200)
	for i := range 120 {
		send(fmt.Sprintf("127.0.6.%d", 1+i), 1, 200)
	}
	send(attacker, 3, 200)

	r := mustRoute(t, c, 200, "POST", "/ip-allowlist/tokens/cust-1/promote", `{"min_requests": 3}`)
	var p struct {
		Entry struct {
			Allow []string
			Mode  string
		}
		Promoted []string
		LeftOut  []struct{ IP, Reason, Detail string } `json:"left_out"`
	}
	if err := json.Unmarshal([]byte(r.Body), &p); err != nil {
		t.Fatalf("promote: %v: %s", err, r.Body)
	}
	if strings.Join(p.Promoted, ",") != legit || p.Entry.Mode != "enforce" {
		t.Errorf("promoted %v, mode %q, want %s alone and enforce", p.Promoted, p.Entry.Mode, legit)
	}
	if slices.Contains(p.Entry.Allow, attacker) {
		t.Errorf("the allow list %v holds %s, refused in enforce mode", p.Entry.Allow, attacker)
	}
	var why string
	for _, l := range p.LeftOut {
		if l.IP == attacker {
			why = l.Reason + ": " + l.Detail
		}
	}
	if !strings.HasPrefix(why, "refused: refused in enforce mode (5 requests refused, 3 would have been refused)") {
		t.Errorf("left out %+v, want %s as refused, with its counts", p.LeftOut, attacker)
	}
	send(attacker, 1, 401)
	send(legit, 1, 200)
}
