package examples

import (
	"encoding/json"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// Tokens of examples/Caddyfile. partner-b's comes from the environment;
// ci-runner and mobile-backend are configured by digest only.
const (
	tokPartnerA = "demo-partner-a-token"
	tokPartnerB = "env-partner-b-7c1d93"
	tokCI       = "demo-ci-token"
	tokMobile   = "demo-mobile-token"
	denyBody    = `{"error":"unauthorized"}`
)

func startExample(t *testing.T) *testkit.Caddy {
	return testkit.StartCaddyFile(t, "Caddyfile", "8080", inRepo("PARTNER_A_TOKEN="+tokPartnerA, "PARTNER_B_TOKEN="+tokPartnerB))
}

func TestExampleCaddyfile(t *testing.T) {
	c := startExample(t)
	xff := func(tok, addr string) []string { return append(testkit.Bearer(tok), "X-Forwarded-For", addr) }
	cases := []struct {
		name   string
		req    testkit.Request
		status int
		body   string
	}{
		{"literal token from its address", testkit.Request{Local: "127.0.0.1", Header: testkit.Bearer(tokPartnerA)}, 200, "hello, partner-a"},
		{"literal token from another address", testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tokPartnerA)}, 401, denyBody},
		{"env token from its address", testkit.Request{Local: "127.0.0.3", Header: testkit.Bearer(tokPartnerB)}, 200, "hello, partner-b"},
		{"env token from another address", testkit.Request{Local: "127.0.0.1", Header: testkit.Bearer(tokPartnerB)}, 401, denyBody},
		{"digest token from its address", testkit.Request{Local: "127.0.0.4", Header: testkit.Bearer(tokCI)}, 200, "hello, ci-runner"},
		{"digest token forwarded from range start", testkit.Request{Header: xff(tokCI, "192.0.2.10")}, 200, "hello, ci-runner"},
		{"digest token forwarded from range end", testkit.Request{Header: xff(tokCI, "192.0.2.20")}, 200, "hello, ci-runner"},
		{"digest token forwarded from past the range", testkit.Request{Header: xff(tokCI, "192.0.2.21")}, 401, denyBody},
		{"deny exception", testkit.Request{Header: xff(tokPartnerB, "198.51.100.13")}, 401, denyBody},
		{"beside the deny exception", testkit.Request{Header: xff(tokPartnerB, "198.51.100.14")}, 200, "hello, partner-b"},
		{"ip_set over IPv6", testkit.Request{Header: xff(tokPartnerA, "2001:db8:10::7")}, 200, "hello, partner-a"},
		{"untrusted peer cannot forward", testkit.Request{Local: "127.0.0.2", Header: xff(tokPartnerA, "127.0.0.1")}, 401, denyBody},
		{"tokens_file token in custom header", testkit.Request{Local: "127.0.0.5", Header: []string{"X-Api-Key", tokMobile}}, 200, "hello, mobile-backend"},
		{"tokens_file token in query", testkit.Request{Local: "127.0.0.5", Path: "/v1/items?api_key=" + tokMobile}, 200, "hello, mobile-backend"},
		{"tokens_file token in query elsewhere", testkit.Request{Local: "127.0.0.6", Path: "/v1/items?api_key=" + tokMobile}, 401, denyBody},
		{"header and query disagree", testkit.Request{Local: "127.0.0.5", Path: "/v1/items?api_key=other", Header: []string{"X-Api-Key", tokMobile}}, 401, denyBody},
		{"unlisted token", testkit.Request{Header: testkit.Bearer("not-a-listed-token")}, 401, denyBody},
		{"missing token", testkit.Request{}, 401, denyBody},
	}
	var denials []testkit.Reply
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Do(tc.req)
			if got.Status != tc.status || got.Body != tc.body {
				t.Fatalf("got %v, want %d %q", got, tc.status, tc.body)
			}
			if got.Status == 401 {
				denials = append(denials, got)
			}
		})
	}

	t.Run("every denial is the same response", func(t *testing.T) {
		if len(denials) < 5 {
			t.Fatalf("only %d denials collected", len(denials))
		}
		first := denials[0]
		first.Header.Del("Date")
		if first.Header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` || first.Header.Get("Content-Type") != "application/json" {
			t.Errorf("deny headers = %v", first.Header)
		}
		for _, d := range denials[1:] {
			d.Header.Del("Date")
			if d.Status != first.Status || d.Body != first.Body || !reflect.DeepEqual(d.Header, first.Header) {
				t.Errorf("denials differ:\n%v %v\n%v %v", first, first.Header, d, d.Header)
			}
		}
	})

	t.Run("decisions counted in metrics", func(t *testing.T) {
		const name = "caddy_http_ip_allowlist_requests_total"
		allowed, _ := c.Metric(name, `decision="allow"`)
		denied, _ := c.Metric(name, `decision="deny"`)
		notAllowed, found := c.Metric(name, `reason="ip_not_allowed"`)
		if int(allowed) != len(cases)-len(denials) || int(denied) != len(denials) || !found || notAllowed < 1 {
			t.Errorf("metrics: %v allowed, %v denied (%v ip_not_allowed); want %d and %d", allowed, denied, notAllowed, len(cases)-len(denials), len(denials))
		}
	})

	t.Run("one request denied log entry per denial", func(t *testing.T) {
		out := c.WaitOutput(func(out string) bool {
			return strings.Count(out, `"msg":"request denied"`) >= len(denials)
		})
		var n int
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, `"msg":"request denied"`) {
				continue
			}
			n++
			var entry map[string]any
			if err := json.Unmarshal([]byte(line), &entry); err != nil {
				t.Fatalf("log line is not JSON: %s", line)
			}
			for _, f := range []string{"reason", "token_label", "client_ip", "remote_ip", "method", "host", "path"} {
				if _, ok := entry[f]; !ok {
					t.Errorf("entry lacks %s: %s", f, line)
				}
			}
			if entry["logger"] != "http.handlers.ip_allowlist" || entry["level"] != "info" {
				t.Errorf("entry logger/level: %s", line)
			}
		}
		if n != len(denials) {
			t.Errorf("%d request denied entries for %d denials", n, len(denials))
		}
	})

	// Done-when 7: the planted tokens appear nowhere in Caddy's output,
	// though they were sent in Authorization, X-Api-Key and the query.
	t.Run("tokens never in output", func(t *testing.T) {
		// Every request's access log entry, so the scan covers them all.
		out := c.WaitOutput(func(out string) bool {
			return strings.Count(out, `"msg":"handled request"`) >= len(cases)
		})
		if !strings.Contains(out, `"ip_allowlist_token_label":"mobile-backend"`) {
			t.Fatalf("the access log did not record the requests; the scan would prove nothing:\n%s", out)
		}
		for _, tok := range []string{tokPartnerA, tokPartnerB, tokCI, tokMobile, "not-a-listed-token"} {
			if n := strings.Count(out, tok); n != 0 {
				t.Errorf("token %q appears %d times in Caddy's output", tok, n)
			}
		}
	})
}

// The control for "tokens never in output": the same config without its
// log filters. Caddy's access log then records the custom header and the
// query string as sent, so the filters are what keeps those tokens out,
// and the scan above would see a leak.
func TestExampleCaddyfileWithoutLogFilters(t *testing.T) {
	raw, err := os.ReadFile("Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	unfiltered := strings.NewReplacer(
		"\t\t\trequest>headers>X-Api-Key delete\n", "",
		"\t\t\trequest>uri query {\n\t\t\t\tdelete api_key\n\t\t\t}\n", "",
	).Replace(string(raw))
	if unfiltered == string(raw) {
		t.Fatal("the example's log filters were not found")
	}
	c := testkit.StartCaddy(t, "Caddyfile", func(admin, site string) string {
		cfg := strings.ReplaceAll(unfiltered, "127.0.0.1:2019", admin)
		return strings.ReplaceAll(cfg, "127.0.0.1:8080", site)
	}, inRepo("PARTNER_A_TOKEN="+tokPartnerA, "PARTNER_B_TOKEN="+tokPartnerB))
	c.Do(testkit.Request{Local: "127.0.0.5", Header: []string{"X-Api-Key", tokMobile}})
	c.Do(testkit.Request{Local: "127.0.0.5", Path: "/v1/items?api_key=" + tokMobile})
	c.Do(testkit.Request{Header: testkit.Bearer(tokPartnerA)})
	out := c.WaitOutput(func(out string) bool { return strings.Count(out, `"msg":"handled request"`) >= 3 })
	if n := strings.Count(out, tokMobile); n < 2 {
		t.Errorf("without filters the token appears %d times; want it in the header and the query of the access log", n)
	}
	// Authorization is redacted by Caddy itself, filter or not.
	if strings.Contains(out, tokPartnerA) {
		t.Error("the Authorization token is in the output")
	}
}

// The "Add More" flow: an address is appended to one token's allow list
// through the admin API and takes effect without a restart; a bad config
// pushed through /load is refused and the running one keeps serving.
func TestExampleAdminAPI(t *testing.T) {
	c := startExample(t)
	from2 := testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tokPartnerA)}
	if got := c.Do(from2); got.Status != 401 {
		t.Fatalf("before: %v, want 401", got)
	}
	pid := c.Pid()

	status, body := c.AdminDo(http.MethodPost, "/id/api_allowlist/tokens/partner-a/allow", "application/json", `"127.0.0.2"`)
	if status != 200 {
		t.Fatalf("POST allow: %d %s", status, body)
	}
	if got := c.Do(from2); got.Status != 200 || got.Body != "hello, partner-a" {
		t.Fatalf("after Add More: %v, want 200", got)
	}
	const check = "/ip-allowlist/check?label=partner-a&ip=127.0.0.2"
	const allowed = `{"results":[{"label":"partner-a","ip":"127.0.0.2","decision":"allow","reason":"allowed","mode":"enforce"}]}`
	if status, body := c.AdminDo(http.MethodGet, check, "", ""); status != 200 || strings.TrimSpace(body) != allowed {
		t.Fatalf("check route after Add More: %d %s", status, body)
	}
	if !c.Running() || c.Pid() != pid {
		t.Fatal("caddy restarted")
	}

	// A bad range through /load: refused, naming label and entry.
	status, cfg := c.AdminDo(http.MethodGet, "/config/", "", "")
	if status != 200 {
		t.Fatalf("GET /config/: %d", status)
	}
	bad := strings.Replace(cfg, `"127.0.0.2"`, `"127.0.0.2","10.0.0.1/8"`, 1)
	if bad == cfg {
		t.Fatal("the running config does not hold the added address")
	}
	status, body = c.AdminDo(http.MethodPost, "/load", "application/json", bad)
	if status != http.StatusBadRequest || !strings.Contains(body, `token \"partner-a\": allow[3] \"10.0.0.1/8\": prefix \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8`) {
		t.Fatalf("POST /load with a bad range: %d %s", status, body)
	}
	if strings.Contains(body, tokPartnerB) {
		t.Error("the error names a token")
	}
	// A bad Caddyfile: refused with file and line.
	status, body = c.AdminDo(http.MethodPost, "/load", "text/caddyfile", "http://127.0.0.1:1 {\n\tip_allowlist {\n\t\ttoken x-0123456789abcdef 010.0.0.1\n\t}\n}\n")
	if status != http.StatusBadRequest || !strings.Contains(body, `leading zero, at Caddyfile:3`) {
		t.Fatalf("POST /load with a bad Caddyfile: %d %s", status, body)
	}
	// The old config, with the added address, keeps serving, and is what
	// the check route answers from.
	if got := c.Do(from2); got.Status != 200 {
		t.Fatalf("after refused loads: %v, want 200", got)
	}
	if status, body := c.AdminDo(http.MethodGet, check, "", ""); status != 200 || strings.TrimSpace(body) != allowed {
		t.Fatalf("check route after refused loads: %d %s", status, body)
	}
	if got := c.Do(testkit.Request{Local: "127.0.0.6", Header: testkit.Bearer(tokPartnerA)}); got.Status != 401 {
		t.Fatalf("after refused loads, elsewhere: %v, want 401", got)
	}
}

// TestExampleAdminAPIReadmeSequence runs the README's "Admin API" block as
// written, against examples/Caddyfile: every curl line must answer 200 and
// have the effect the README says. A README that changes the block without
// this test fails it.
func TestExampleAdminAPIReadmeSequence(t *testing.T) {
	const newTok = "new-partner-token-5e2"
	cmds := readmeCurls(t, "## Admin API", map[string]string{"<64 hex>": testkit.Digest(newTok)})
	c := startExample(t)
	from := func(addr, tok string) testkit.Request {
		// 127.0.0.1 is a trusted proxy in examples/Caddyfile.
		return testkit.Request{Header: append(testkit.Bearer(tok), "X-Forwarded-For", addr)}
	}
	expect := func(step string, r testkit.Request, status int) {
		t.Helper()
		if got := c.Do(r); got.Status != status {
			t.Errorf("after %s: %+v: %v, want %d", step, r, got, status)
		}
	}
	// One check per curl line, in the README's order.
	checks := []func(step, body string){
		func(step, _ string) { // POST: Add More
			expect(step, from("198.51.100.9", tokPartnerA), 200)
		},
		func(step, body string) { // GET the list
			if strings.TrimSpace(body) != `["office","127.0.0.1","198.51.100.9"]` {
				t.Errorf("%s: %s", step, body)
			}
		},
		func(step, _ string) { // PATCH: replace the list
			expect(step, from("198.51.100.77", tokPartnerA), 200)
			expect(step, from("203.0.113.7", tokPartnerA), 200)
			expect(step, from("203.0.113.8", tokPartnerA), 401) // office is gone
			expect(step, testkit.Request{Header: testkit.Bearer(tokPartnerA)}, 401)
		},
		func(step, _ string) { // DELETE entry 0
			expect(step, from("198.51.100.77", tokPartnerA), 401)
			expect(step, from("203.0.113.7", tokPartnerA), 200)
		},
		func(step, _ string) { // PUT a token by digest
			expect(step, from("192.0.2.7", newTok), 200)
			expect(step, from("192.0.2.8", newTok), 401)
		},
		func(step, _ string) { // POST revoked: refused from its own address
			expect(step, from("192.0.2.7", newTok), 401)
		},
		func(step, _ string) { // DELETE the token: unlisted, and unlisted_tokens none here
			expect(step, from("192.0.2.7", newTok), 401)
		},
	}
	if len(cmds) != len(checks) {
		t.Fatalf("the README's Admin API block has %d curl lines, the test checks %d: update them together\n%q", len(cmds), len(checks), cmds)
	}
	for i, cmd := range cmds {
		method, path, contentType, body := curlRequest(t, cmd, "ADMIN", strings.TrimPrefix(c.Admin, "http://")+"/id/api_allowlist")
		status, out := c.AdminDo(method, path, contentType, body)
		if status != 200 {
			t.Fatalf("README line %q: %d %s", cmd, status, out)
		}
		checks[i](cmd, out)
	}
}

// readmeSection is ../README.md from the heading that begins with heading
// (such as "## Add More") to the next heading of its level or above,
// outside code blocks (where a "# " line is a shell comment).
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(raw), "\n"+heading)
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	level := len(heading) - len(strings.TrimLeft(heading, "#"))
	var b strings.Builder
	code := false
	for i, line := range strings.SplitAfter(after, "\n") {
		if strings.HasPrefix(line, "```") {
			code = !code
		}
		if n := len(line) - len(strings.TrimLeft(line, "#")); i > 0 && !code && n > 0 && n <= level && strings.HasPrefix(line[n:], " ") {
			break
		}
		b.WriteString(line)
	}
	return b.String()
}

// readmeCurls returns the curl lines of the first sh block of heading's
// section in ../README.md, continuation lines joined, with each key of
// subst replaced by its value.
func readmeCurls(t *testing.T, heading string, subst map[string]string) []string {
	t.Helper()
	_, after, ok := strings.Cut(readmeSection(t, heading), "```sh\n")
	block, _, closed := strings.Cut(after, "```")
	if !ok || !closed {
		t.Fatalf("no sh block after %q", heading)
	}
	block = strings.ReplaceAll(block, "\\\n", " ")
	var cmds []string
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "curl ") {
			continue
		}
		for k, v := range subst {
			line = strings.ReplaceAll(line, k, v)
		}
		cmds = append(cmds, line)
	}
	return cmds
}

// curlRequest reads the method, path, content type and body of a curl
// command line written like the README's (-X, -H, -d, one URL holding
// $variable, which is replaced by host+prefix), its words split by
// shellWords.
func curlRequest(t *testing.T, cmd, variable, prefix string) (method, path, contentType, body string) {
	t.Helper()
	words := shellWords(t, cmd)
	method = http.MethodGet
	for i := 1; i < len(words); i++ {
		switch w := words[i]; {
		case w == "-X" && i+1 < len(words):
			i++
			method = words[i]
		case w == "-H" && i+1 < len(words):
			i++
			if v, ok := strings.CutPrefix(words[i], "Content-Type: "); ok {
				contentType = v
			}
		case w == "-d" && i+1 < len(words):
			i++
			body = words[i]
			if method == http.MethodGet {
				method = http.MethodPost // as curl does
			}
		case strings.HasPrefix(w, "$"+variable):
			path = strings.TrimPrefix(w, "$"+variable)
			_, prefixPath, _ := strings.Cut(prefix, "/")
			path = "/" + prefixPath + path
		default:
			t.Fatalf("curl line %q: word %q is not understood by this test", cmd, w)
		}
	}
	if path == "" {
		t.Fatalf("curl line %q: no $%s URL", cmd, variable)
	}
	return method, path, contentType, body
}

// TestExampleAdminAPIBadEntryIs500 pins what Caddy v2.11.9 answers when a
// change through its config routes does not provision: 500, with the
// plugin's error (naming label and entry) in the body, and nothing
// changed. The plugin cannot make it 400: changeConfig wraps the load
// error as text and handleError answers 500 for anything that is not a
// caddy.APIError. POST /load answers the same refusal 400.
func TestExampleAdminAPIBadEntryIs500(t *testing.T) {
	c := startExample(t)
	const allow = "/id/api_allowlist/tokens/partner-a/allow"
	errorOf := func(body string) string {
		var e struct{ Error string }
		if json.Unmarshal([]byte(body), &e) != nil {
			t.Fatalf("not a JSON error: %s", body)
		}
		return e.Error
	}
	unchanged := func(step string) {
		t.Helper()
		if status, body := c.AdminDo(http.MethodGet, allow, "", ""); status != 200 || strings.TrimSpace(body) != `["office","127.0.0.1"]` {
			t.Errorf("after %s, the list: %d %s", step, status, body)
		}
		if got := c.Do(testkit.Request{Header: testkit.Bearer(tokPartnerA)}); got.Status != 200 {
			t.Errorf("after %s, partner-a from 127.0.0.1: %v", step, got)
		}
	}
	for _, tc := range []struct {
		name, method, path, body, want string
	}{
		{"an entry that is not a range", http.MethodPost, allow, `"not-an-ip"`, `token "partner-a": allow[2] "not-an-ip"`},
		{"a prefix with host bits", http.MethodPost, allow, `"10.0.0.1/8"`, `token "partner-a": allow[2] "10.0.0.1/8": prefix "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8`},
		{"the last entry of a list", http.MethodPatch, "/id/api_allowlist/tokens/ci-runner/allow", `[]`, `token "ci-runner": allow is empty`},
	} {
		status, body := c.AdminDo(tc.method, tc.path, "application/json", tc.body)
		if status != http.StatusInternalServerError || !strings.Contains(errorOf(body), tc.want) {
			t.Errorf("%s: %d %s, want 500 containing %s", tc.name, status, body, tc.want)
		}
		unchanged(tc.name)
	}
	// Emptying a list by deleting its entries: the last DELETE is refused.
	if status, body := c.AdminDo(http.MethodPatch, allow, "application/json", `["127.0.0.1"]`); status != 200 {
		t.Fatalf("PATCH to one entry: %d %s", status, body)
	}
	if status, body := c.AdminDo(http.MethodDelete, allow+"/0", "", ""); status != http.StatusInternalServerError || !strings.Contains(errorOf(body), `token "partner-a": allow is empty`) {
		t.Errorf("DELETE of the last entry: %d %s, want 500 allow is empty", status, body)
	}
	if got := c.Do(testkit.Request{Header: testkit.Bearer(tokPartnerA)}); got.Status != 200 {
		t.Errorf("after the refused DELETE: %v", got)
	}
	// The same bad entry through /load is 400.
	status, cfg := c.AdminDo(http.MethodGet, "/config/", "", "")
	bad := strings.Replace(cfg, `"partner-a":{"allow":["127.0.0.1"]`, `"partner-a":{"allow":["127.0.0.1","not-an-ip"]`, 1)
	if status != 200 || bad == cfg {
		t.Fatalf("GET /config/: %d %s", status, cfg)
	}
	if status, body := c.AdminDo(http.MethodPost, "/load", "application/json", bad); status != http.StatusBadRequest || !strings.Contains(errorOf(body), `"not-an-ip"`) {
		t.Errorf("POST /load with the bad entry: %d %s, want 400", status, body)
	}
}

func TestExampleJSON(t *testing.T) {
	const tok = "demo-json-partner-token"
	c := testkit.StartCaddyFile(t, "caddy.json", "8081", inRepo())
	key := func(addr string) testkit.Request {
		return testkit.Request{Header: []string{"X-Api-Key", tok, "X-Forwarded-For", addr}}
	}
	for _, tc := range []struct {
		addr   string
		status int
	}{
		{"203.0.113.7", 200}, {"203.0.113.66", 401}, {"198.51.100.7", 200}, {"198.51.100.8", 401}, {"192.0.2.1", 401},
	} {
		if got := c.Do(key(tc.addr)); got.Status != tc.status {
			t.Errorf("from %s: %v, want %d", tc.addr, got, tc.status)
		}
	}
	if got := c.Do(testkit.Request{Header: []string{"X-Api-Key", "other", "X-Forwarded-For", "203.0.113.7"}}); got.Status != 401 {
		t.Errorf("unlisted: %v, want 401", got)
	}
	if got := c.Do(testkit.Request{Header: testkit.Bearer(tok)}); got.Status != 401 || got.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("Bearer is not a source here: %v %v", got, got.Header)
	}
	status, body := c.AdminDo(http.MethodPost, "/id/partners/tokens/partner-a/allow", "application/json", `"192.0.2.1"`)
	if status != 200 {
		t.Fatalf("POST allow: %d %s", status, body)
	}
	if got := c.Do(key("192.0.2.1")); got.Status != 200 || got.Body != "hello, partner-a" {
		t.Errorf("after Add More: %v", got)
	}
}

func TestExampleReportMode(t *testing.T) {
	const tok = "report-token-91-abcdef"
	c := testkit.StartCaddyFile(t, "report-mode.Caddyfile", "8082", inRepo("PARTNER_A_TOKEN="+tok))
	if got := c.Do(testkit.Request{Header: testkit.Bearer(tok)}); got.Status != 200 || got.Body != "hello" {
		t.Fatalf("report mode: %v, want 200 hello", got)
	}
	out := c.WaitOutput(func(out string) bool {
		return strings.Contains(out, `"msg":"request would be denied"`) && strings.Contains(out, `"msg":"handled request"`)
	})
	for _, want := range []string{
		`"msg":"request would be denied"`, `"reason":"ip_not_allowed"`, `"token_label":"partner-a"`,
		`"ip_allowlist_decision":"deny"`, `"ip_allowlist_token_label":"partner-a"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}
	if strings.Contains(out, `"msg":"request denied"`) {
		t.Error("report mode logged request denied")
	}
	if strings.Contains(out, tok) {
		t.Error("the token is in the output")
	}
}
