package ipallowlist

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/miekg/dns"
	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// newConsole provisions a console as Caddy would.
func newConsole(t *testing.T, c *Console) *Console {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := c.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return c
}

// consoleCall serves one request through the console, as user (none when
// ""), from 192.0.2.50. A POST is sent as the console's own page sends it:
// same origin, JSON; header overrides.
func consoleCall(t *testing.T, c *Console, user, method, target, body string, header ...string) reply {
	t.Helper()
	req := httptest.NewRequest(method, "http://console.test"+target, strings.NewReader(body))
	req.RemoteAddr = "192.0.2.50:4000"
	if method == http.MethodPost {
		req.Header.Set("Origin", "http://console.test")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, nil, &caddyhttp.Server{})
	if user != "" {
		repl.Set(placeholderUserID, user)
	}
	return serveConsole(t, c, req)
}

func serveConsole(t *testing.T, c *Console, req *http.Request) reply {
	t.Helper()
	w := httptest.NewRecorder()
	if err := c.ServeHTTP(w, req, nil); err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return reply{w.Code, w.Header(), w.Body.Bytes()}
}

func (r reply) errorText(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.json(t, &e)
	return e.Error
}

func TestConsoleRefusesUnauthenticated(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{})
	for _, target := range []string{"/", "/-/app.js", "/-/api/me", "/-/api/tokens"} {
		r := consoleCall(t, c, "", "GET", target, "")
		if r.status != http.StatusUnauthorized || !strings.Contains(r.errorText(t), "put basic_auth, or another authentication handler, before ip_allowlist_console") {
			t.Errorf("GET %s without a user: %d %s", target, r.status, r.body)
		}
	}
	if r := consoleCall(t, c, "alice", "GET", "/-/api/me", ""); r.status != http.StatusOK {
		t.Errorf("alice: %d %s", r.status, r.body)
	}
}

// An API token's label that ip_allowlist made the user id is no login,
// even when the token is listed and allowed.
func TestConsoleRefusesAPITokenIdentity(t *testing.T) {
	h, _ := storeHandler(t, "")
	c := newConsole(t, &Console{})
	req := newRequest("192.0.2.1:5000", "http://console.test/-/api/tokens", testkit.Bearer(applyTok(0))...)
	var console reply
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		console = serveConsole(t, c, r)
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
		t.Fatalf("ip_allowlist refused its own listed token: %v", err)
	}
	if console.status != http.StatusUnauthorized {
		t.Fatalf("a listed API token opened the console: %d %s", console.status, console.body)
	}
	// An authentication handler after ip_allowlist sets a login of its
	// own: that one is served.
	req = newRequest("192.0.2.1:5000", "http://console.test/-/api/me", testkit.Bearer(applyTok(0))...)
	next = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set(placeholderUserID, "alice")
		console = serveConsole(t, c, r)
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
		t.Fatal(err)
	}
	if console.status != http.StatusOK {
		t.Fatalf("alice after the API token: %d %s", console.status, console.body)
	}
}

func TestConsoleHeadersAndPages(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{})
	for target, ctype := range map[string]string{"/": "text/html", "/console/": "text/html", "/-/app.js": "text/javascript", "/console/-/app.css": "text/css", "/-/api/me": "application/json"} {
		r := consoleCall(t, c, "alice", "GET", target, "")
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %q", target, r.status, r.header.Get("Content-Type"))
		}
		csp := r.header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: CSP %q, nosniff %q", target, csp, r.header.Get("X-Content-Type-Options"))
		}
	}
	if r := consoleCall(t, c, "alice", "GET", "/console", ""); r.status != http.StatusPermanentRedirect || r.header.Get("Location") != "./console/" {
		t.Errorf("GET /console: %d %q", r.status, r.header.Get("Location"))
	}
	if r := consoleCall(t, c, "alice", "GET", "/-/nothing", ""); r.status != http.StatusNotFound {
		t.Errorf("GET /-/nothing: %d", r.status)
	}
}

// A change a page of another site could send is refused, and changes
// nothing.
func TestConsoleRefusesCrossOriginChanges(t *testing.T) {
	h, _ := storeHandler(t, "")
	c := newConsole(t, &Console{})
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	body := `{"entries": ["192.0.2.77"]}`
	for name, header := range map[string][]string{
		"no Origin":                 {"Origin", "", "Sec-Fetch-Site", ""},
		"another Origin":            {"Origin", "http://evil.test"},
		"another scheme":            {"Origin", "https://console.test"},
		"Origin null":               {"Origin", "null"},
		"Sec-Fetch-Site cross-site": {"Sec-Fetch-Site", "cross-site"},
		"Sec-Fetch-Site same-site":  {"Sec-Fetch-Site", "same-site"},
		"a form's body":             {"Content-Type", "application/x-www-form-urlencoded"},
		"text/plain":                {"Content-Type", "text/plain"},
	} {
		r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/allow", body, header...)
		if r.status != http.StatusForbidden && r.status != http.StatusUnsupportedMediaType {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if got := decided(h, applyTok(1), "192.0.2.77"); got != "ip_not_allowed cust-1" {
		t.Fatalf("a refused change took effect: %s", got)
	}
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/allow", body); r.status != http.StatusOK {
		t.Fatalf("same origin: %d %s", r.status, r.body)
	}
	if got := decided(h, applyTok(1), "192.0.2.77"); got != "allowed cust-1" {
		t.Fatalf("after the change: %s", got)
	}
	for _, m := range []string{"PUT", "DELETE", "PATCH"} {
		if r := consoleCall(t, c, "alice", m, "/-/api/tokens/cust-1", "{}"); r.status != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d", m, r.status)
		}
	}
}

func TestConsoleChangesAndAudit(t *testing.T) {
	h, logs := storeHandler(t, "")
	c := newConsole(t, &Console{})
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`)

	// A bad entry is refused, naming it, and nothing changes.
	before := consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1", "")
	r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/allow", `{"entries": ["192.0.2.7", "192.0.2.999"]}`)
	if r.status != http.StatusBadRequest || !strings.Contains(r.errorText(t), `192.0.2.999`) {
		t.Fatalf("bad entry: %d %s", r.status, r.body)
	}
	if after := consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1", ""); string(after.body) != string(before.body) {
		t.Fatalf("a refused change changed the entry:\n%s\n%s", before.body, after.body)
	}
	if got := decided(h, tok, "192.0.2.7"); got != "ip_not_allowed cust-1" {
		t.Fatalf("a refused change took effect: %s", got)
	}

	// Add with a note, remove, suspend, resume: each in force at once.
	r = consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/allow", `{"entries": ["192.0.2.7"], "note": "office", "ttl": "1h"}`)
	var e consoleToken
	r.json(t, &e)
	if r.status != http.StatusOK || !slices.Contains(e.Allow, "192.0.2.7") || e.Notes["192.0.2.7"] != "office" || e.Expires["192.0.2.7"] == "" {
		t.Fatalf("add: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.7"); got != "allowed cust-1" {
		t.Fatalf("after add: %s", got)
	}
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/suspend", `{}`); r.status != http.StatusOK {
		t.Fatalf("suspend: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.7"); got != "token_suspended cust-1" {
		t.Fatalf("after suspend: %s", got)
	}
	consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/resume", `{}`)
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/remove", `{"entry": "192.0.2.7"}`); r.status != http.StatusOK {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.7"); got != "ip_not_allowed cust-1" {
		t.Fatalf("after remove: %s", got)
	}
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/remove", `{"entry": "192.0.2.7"}`); r.status != http.StatusNotFound {
		t.Errorf("removing an absent entry: %d %s", r.status, r.body)
	}
	// Each change is logged with who made it.
	n := 0
	for _, l := range logs.FilterMessage("token changed").All() {
		if l.ContextMap()["source"] == "console" {
			n++
			if l.ContextMap()["user_id"] != "alice" {
				t.Errorf("audit line without the user: %v", l.ContextMap())
			}
		}
	}
	if n != 4 {
		t.Errorf("%d audit lines from the console, want 4 (add, suspend, resume, remove)", n)
	}

	// The decision tester.
	var res checkResult
	r = consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1/check?ip=198.51.100.7", "")
	r.json(t, &res)
	if res.Decision != "allow" || res.Reason != "allowed" {
		t.Errorf("check: %s", r.body)
	}
	r = consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1/check?ip=192.0.2.7", "")
	r.json(t, &res)
	if res.Decision != "deny" || res.Reason != "ip_not_allowed" {
		t.Errorf("check: %s", r.body)
	}
	if r := consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1/check?ip=nope", ""); r.status != http.StatusBadRequest {
		t.Errorf("check of a bad address: %d", r.status)
	}

	// The config's token is shown, where it is defined, and not changed.
	r = consoleCall(t, c, "alice", "GET", "/-/api/tokens/config-a", "")
	r.json(t, &e)
	if e.Source != "config" || e.Where == "" || !slices.Equal(e.Allow, []string{"192.0.2.1"}) {
		t.Errorf("config token: %s", r.body)
	}
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/config-a/allow", `{"entries": ["192.0.2.8"]}`); r.status != http.StatusConflict {
		t.Errorf("changing a config token: %d %s", r.status, r.body)
	}
}

// A new token is shown once, works at once, and only its digest is kept.
func TestConsoleCreatesToken(t *testing.T) {
	h, logs := storeHandler(t, "")
	c := newConsole(t, &Console{})
	r := consoleCall(t, c, "alice", "POST", "/-/api/tokens", `{"label": "new-1", "allow": ["192.0.2.60"], "note": "made here"}`)
	if r.status != http.StatusCreated || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %d %s (Cache-Control %q)", r.status, r.body, r.header.Get("Cache-Control"))
	}
	var made struct {
		Token string       `json:"token"`
		Entry consoleToken `json:"entry"`
	}
	r.json(t, &made)
	if len(made.Token) < 40 || made.Entry.Label != "new-1" {
		t.Fatalf("create: %s", r.body)
	}
	if got := decided(h, made.Token, "192.0.2.60"); got != "allowed new-1" {
		t.Fatalf("the new token: %s", got)
	}
	got := consoleCall(t, c, "alice", "GET", "/-/api/tokens/new-1", "")
	exported := routeCall(t, "GET", "/ip-allowlist/export", "")
	for _, b := range [][]byte{got.body, exported.body} {
		if strings.Contains(string(b), made.Token) {
			t.Fatalf("the token is kept: %s", b)
		}
	}
	for _, l := range logs.All() {
		if b, _ := json.Marshal(l.ContextMap()); strings.Contains(string(b)+l.Message, made.Token) {
			t.Fatalf("the token is logged: %s %s", l.Message, b)
		}
	}
	// The label is taken; an empty list is a mistake; neither changes anything.
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens", `{"label": "new-1", "allow": ["192.0.2.61"]}`); r.status != http.StatusConflict {
		t.Errorf("a taken label: %d %s", r.status, r.body)
	}
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens", `{"label": "new-2", "allow": []}`); r.status != http.StatusBadRequest {
		t.Errorf("no allow entry: %d %s", r.status, r.body)
	}
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens", `{"label": "config-a", "allow": ["192.0.2.61"]}`); r.status != http.StatusConflict {
		t.Errorf("the config's label: %d %s", r.status, r.body)
	}
}

// An owner sees and changes their own tokens only; another's is not
// found, in every route.
func TestConsoleOwnersSeeOnlyTheirOwn(t *testing.T) {
	h, _ := storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	routeCall(t, "PUT", "/ip-allowlist/tokens/acme-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.1"], "owner": "acme"}`)
	routeCall(t, "PUT", "/ip-allowlist/tokens/acme-2", `{"token": "`+applyTok(2)+`", "allow": ["198.51.100.2"], "owner": "acme"}`)
	routeCall(t, "PUT", "/ip-allowlist/tokens/globex-1", `{"token": "`+applyTok(3)+`", "allow": ["198.51.100.3"], "owner": "globex"}`)
	// A refusal of each, for the refusals list.
	serve(h, newRequest("192.0.2.99:1", "/", testkit.Bearer(applyTok(1))...))
	serve(h, newRequest("192.0.2.98:1", "/", testkit.Bearer(applyTok(3))...))

	labels := func(user, query string) []string {
		var page struct {
			Tokens []listedToken `json:"tokens"`
		}
		consoleCall(t, c, user, "GET", "/-/api/tokens"+query, "").json(t, &page)
		var out []string
		for _, tk := range page.Tokens {
			out = append(out, tk.Label)
		}
		return out
	}
	if got := labels("acme", ""); !slices.Equal(got, []string{"acme-1", "acme-2"}) {
		t.Errorf("acme's list: %q", got)
	}
	if got := labels("root", ""); !slices.Equal(got, []string{"acme-1", "acme-2", "config-a", "globex-1"}) {
		t.Errorf("the operator's list: %q", got)
	}
	if got := labels("nobody", ""); len(got) != 0 {
		t.Errorf("a user who owns nothing: %q", got)
	}
	for _, call := range []struct{ method, target, body string }{
		{"GET", "/-/api/tokens/globex-1", ""},
		{"GET", "/-/api/tokens/globex-1/check?ip=198.51.100.3", ""},
		{"GET", "/-/api/tokens/globex-1/observed", ""},
		{"GET", "/-/api/refusals?label=globex-1", ""},
		{"GET", "/-/api/tokens/config-a", ""},
		{"POST", "/-/api/tokens/globex-1/allow", `{"entries": ["192.0.2.5"]}`},
		{"POST", "/-/api/tokens/globex-1/remove", `{"entry": "198.51.100.3"}`},
		{"POST", "/-/api/tokens/globex-1/suspend", `{}`},
	} {
		r := consoleCall(t, c, "acme", call.method, call.target, call.body)
		if r.status != http.StatusNotFound || strings.Contains(string(r.body), "198.51.100.3") {
			t.Errorf("acme %s %s: %d %s", call.method, call.target, r.status, r.body)
		}
	}
	if got := decided(h, applyTok(3), "198.51.100.3"); got != "allowed globex-1" {
		t.Errorf("globex's token after acme's tries: %s", got)
	}
	var rs struct{ Refusals []refusal }
	consoleCall(t, c, "acme", "GET", "/-/api/refusals", "").json(t, &rs)
	for _, r := range rs.Refusals {
		if r.Label != "acme-1" {
			t.Errorf("acme sees a refusal of %q", r.Label)
		}
	}
	if len(rs.Refusals) == 0 {
		t.Errorf("acme sees none of its own refusals")
	}
	// An owner's change to their own; the owner field is an operator's.
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens/acme-1/allow", `{"entries": ["192.0.2.5"]}`); r.status != http.StatusOK {
		t.Errorf("acme's own: %d %s", r.status, r.body)
	}
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens/acme-1/owner", `{"owner": "globex"}`); r.status != http.StatusForbidden {
		t.Errorf("acme gives its token away: %d %s", r.status, r.body)
	}
	// An owner's new token is theirs, whatever the body says.
	r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "acme-3", "allow": ["192.0.2.6"], "owner": "globex"}`)
	var made struct{ Entry consoleToken }
	r.json(t, &made)
	if made.Entry.Owner != "acme" {
		t.Errorf("acme's new token belongs to %q", made.Entry.Owner)
	}
	// The operator moves one; the index follows.
	if r := consoleCall(t, c, "root", "POST", "/-/api/tokens/acme-2/owner", `{"owner": "globex"}`); r.status != http.StatusOK {
		t.Fatalf("owner change: %d %s", r.status, r.body)
	}
	if got := labels("acme", ""); !slices.Equal(got, []string{"acme-1", "acme-3"}) {
		t.Errorf("acme's list after the move: %q", got)
	}
	if got := labels("globex", ""); !slices.Equal(got, []string{"acme-2", "globex-1"}) {
		t.Errorf("globex's list after the move: %q", got)
	}
	if r := consoleCall(t, c, "acme", "GET", "/-/api/tokens/acme-2", ""); r.status != http.StatusNotFound {
		t.Errorf("acme reads the token it lost: %d", r.status)
	}
}

func TestConsoleListPagesByPrefix(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{})
	for i := range 7 {
		label := []string{"b-1", "b-2", "b-3", "c-1", "a-1", "cz", "b-4"}[i]
		routeCall(t, "PUT", "/ip-allowlist/tokens/"+label, `{"token": "`+applyTok(10+i)+`", "allow": ["198.51.100.1"]}`)
	}
	pages := func(query string) [][]string {
		var out [][]string
		after := ""
		for range 10 {
			var page struct {
				Tokens []listedToken
				Next   string
			}
			consoleCall(t, c, "alice", "GET", "/-/api/tokens?limit=2&after="+after+query, "").json(t, &page)
			var labels []string
			for _, tk := range page.Tokens {
				labels = append(labels, tk.Label)
			}
			out = append(out, labels)
			if page.Next == "" {
				return out
			}
			after = page.Next
		}
		t.Fatalf("more than 10 pages")
		return nil
	}
	got := pages("")
	want := [][]string{{"a-1", "b-1"}, {"b-2", "b-3"}, {"b-4", "c-1"}, {"config-a", "cz"}}
	if len(got) != len(want) {
		t.Fatalf("pages: %q, want %q", got, want)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("page %d: %q, want %q", i, got[i], want[i])
		}
	}
	if got := pages("&prefix=c"); len(got) != 2 || !slices.Equal(got[0], []string{"c-1", "config-a"}) || !slices.Equal(got[1], []string{"cz"}) {
		t.Errorf("prefix c: %q", got)
	}
	if r := consoleCall(t, c, "alice", "GET", "/-/api/tokens?limit=5000", ""); r.status != http.StatusBadRequest {
		t.Errorf("limit 5000: %d", r.status)
	}
}

func TestConsoleObservedAndRefusals(t *testing.T) {
	h, _ := storeHandler(t, "")
	c := newConsole(t, &Console{})
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	serve(h, newRequest("198.51.100.7:1", "/", testkit.Bearer(applyTok(1))...))
	serve(h, newRequest("192.0.2.66:1", "/", testkit.Bearer(applyTok(1))...))
	var seen struct{ Addresses []consoleObserved }
	consoleCall(t, c, "alice", "GET", "/-/api/tokens/cust-1/observed", "").json(t, &seen)
	status := map[string]string{}
	for _, a := range seen.Addresses {
		status[a.IP] = a.Status
	}
	if status["198.51.100.7"] != "allowed" || status["192.0.2.66"] != "refused" {
		t.Errorf("observed: %v", status)
	}
	var rs struct{ Refusals []refusal }
	consoleCall(t, c, "alice", "GET", "/-/api/refusals?label=cust-1", "").json(t, &rs)
	if len(rs.Refusals) == 0 || rs.Refusals[0].IP != "192.0.2.66" || rs.Refusals[0].Reason != "ip_not_allowed" {
		t.Errorf("refusals: %+v", rs.Refusals)
	}
	// Newest first, bounded however many come.
	for i := range refusalRing + 10 {
		serve(h, newRequest("192.0.2.67:1", "/", testkit.Bearer(applyTok(1))...))
		_ = i
	}
	serve(h, newRequest("192.0.2.68:1", "/", testkit.Bearer(applyTok(1))...))
	consoleCall(t, c, "alice", "GET", "/-/api/refusals", "").json(t, &rs)
	if len(rs.Refusals) != refusalsShown || rs.Refusals[0].IP != "192.0.2.68" || rs.Refusals[1].IP != "192.0.2.67" {
		t.Errorf("%d refusals, first %+v", len(rs.Refusals), rs.Refusals[:2])
	}
}

func TestConsoleMe(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	var me struct {
		User     string `json:"user"`
		Operator bool   `json:"operator"`
		ClientIP string `json:"client_ip"`
	}
	consoleCall(t, c, "acme", "GET", "/-/api/me", "").json(t, &me)
	if me.User != "acme" || me.Operator || me.ClientIP != "192.0.2.50" {
		t.Errorf("me: %+v", me)
	}
	consoleCall(t, c, "root", "GET", "/-/api/me", "").json(t, &me)
	if !me.Operator {
		t.Errorf("root is no operator: %+v", me)
	}
}

// What a customer given the console can make the store keep is bounded,
// and a refusal says so and changes nothing.
func TestConsoleBoundsWhatOwnersKeep(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	defer func(n int) { consoleMaxOwned = n }(consoleMaxOwned)
	consoleMaxOwned = 2
	for i, label := range []string{"acme-1", "acme-2"} {
		if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", fmt.Sprintf(`{"label": %q, "allow": ["192.0.2.%d"]}`, label, i+1)); r.status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", label, r.status, r.body)
		}
	}
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "acme-3", "allow": ["192.0.2.3"]}`); r.status != http.StatusForbidden || !strings.Contains(r.errorText(t), "the most the console makes for one owner") {
		t.Errorf("a third token: %d %s", r.status, r.body)
	}
	if r := consoleCall(t, c, "root", "POST", "/-/api/tokens", `{"label": "root-1", "allow": ["192.0.2.3"], "owner": "acme"}`); r.status != http.StatusCreated {
		t.Errorf("an operator is not bounded so: %d %s", r.status, r.body)
	}
	before := consoleCall(t, c, "acme", "GET", "/-/api/tokens/acme-1", "")
	long := strings.Repeat("n", consoleMaxText+1)
	many := make([]string, consoleMaxAdd+1)
	for i := range many {
		many[i] = fmt.Sprintf(`"10.1.%d.%d"`, i/250, i%250)
	}
	for name, call := range map[string][2]string{
		"a long note":          {"/-/api/tokens/acme-1/allow", `{"entries": ["192.0.2.9"], "note": "` + long + `"}`},
		"many entries at once": {"/-/api/tokens/acme-1/allow", `{"entries": [` + strings.Join(many, ",") + `]}`},
		"a new token's note":   {"/-/api/tokens", `{"label": "acme-4", "allow": ["192.0.2.9"], "note": "` + long + `"}`},
	} {
		if r := consoleCall(t, c, "acme", "POST", call[0], call[1]); r.status != http.StatusBadRequest && r.status != http.StatusForbidden {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if after := consoleCall(t, c, "acme", "GET", "/-/api/tokens/acme-1", ""); string(after.body) != string(before.body) {
		t.Errorf("a refused change changed the entry:\n%s\n%s", before.body, after.body)
	}
}

// Review findings: each is pinned here.
func TestConsoleReviewFindings(t *testing.T) {
	h, _ := storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})

	// A last path segment that reads as a scheme is redirected as a path.
	if r := consoleCall(t, c, "root", "GET", "/console/https:evil.example", ""); r.header.Get("Location") != "./https:evil.example/" {
		t.Errorf("redirect: %q", r.header.Get("Location"))
	}
	// To an owner, the config's label is taken, not listed somewhere.
	r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "config-a", "allow": ["192.0.2.3"]}`)
	if r.status != http.StatusConflict || strings.Contains(r.errorText(t), "tokens") && !strings.Contains(r.errorText(t), "label is taken") {
		t.Errorf("owner, config label: %d %s", r.status, r.body)
	}
	if strings.Contains(r.errorText(t), "listed in") {
		t.Errorf("owner learns where the label is listed: %s", r.body)
	}
	// "." and ".." are no labels.
	for _, l := range []string{".", ".."} {
		if r := consoleCall(t, c, "root", "POST", "/-/api/tokens", `{"label": "`+l+`", "allow": ["192.0.2.3"]}`); r.status != http.StatusBadRequest {
			t.Errorf("label %q: %d %s", l, r.status, r.body)
		}
	}
	// A label taken again after its entry was removed shows nothing of
	// the earlier token's refusals or addresses to the new owner.
	routeCall(t, "PUT", "/ip-allowlist/tokens/globex-1", `{"token": "`+applyTok(3)+`", "allow": ["198.51.100.3"], "owner": "globex"}`)
	serve(h, newRequest("198.51.100.3:1", "/", testkit.Bearer(applyTok(3))...))
	serve(h, newRequest("192.0.2.97:1", "/", testkit.Bearer(applyTok(3))...))
	routeCall(t, "DELETE", "/ip-allowlist/tokens/globex-1?unrestrict=true", "")
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "globex-1", "allow": ["192.0.2.4"]}`); r.status != http.StatusCreated {
		t.Fatalf("acme takes the label: %d %s", r.status, r.body)
	}
	for _, target := range []string{"/-/api/tokens/globex-1/observed", "/-/api/refusals?label=globex-1", "/-/api/refusals"} {
		if r := consoleCall(t, c, "acme", "GET", target, ""); strings.Contains(string(r.body), "198.51.100.3") || strings.Contains(string(r.body), "192.0.2.97") {
			t.Errorf("acme sees the earlier token's %s: %s", target, r.body)
		}
	}
	// A login named as an API token's label, set after ip_allowlist
	// set the label, is a login.
	req := newRequest("192.0.2.1:5000", "http://console.test/-/api/me", testkit.Bearer(applyTok(0))...)
	var console reply
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set(placeholderUserID, "config-a")
		console = serveConsole(t, c, r)
		return nil
	})
	if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
		t.Fatal(err)
	}
	if console.status != http.StatusOK {
		t.Errorf("the login config-a after the token config-a: %d %s", console.status, console.body)
	}
}

// Refusals by another site's handler, not using the console's store, are
// not the console's, whatever their label.
func TestConsoleRefusalsOfItsOwnStoreOnly(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	other, _ := provisioned(t, &Handler{Tokens: map[string]*TokenPolicy{"acme-1": {Token: applyTok(5), Allow: []string{"192.0.2.1"}}}})
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "acme-1", "allow": ["192.0.2.4"]}`); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	serve(other, newRequest("192.0.2.96:1", "/", testkit.Bearer(applyTok(5))...))
	for _, user := range []string{"acme", "root"} {
		if r := consoleCall(t, c, user, "GET", "/-/api/refusals", ""); strings.Contains(string(r.body), "192.0.2.96") {
			t.Errorf("%s sees another site's refusal: %s", user, r.body)
		}
	}
	if r := consoleCall(t, c, "acme", "GET", "/-/api/tokens/acme-1/observed", ""); r.status != http.StatusConflict || strings.Contains(string(r.body), "192.0.2.96") {
		t.Errorf("acme, observed under a label another site lists: %d %s", r.status, r.body)
	}
}

// A token's JSON says what each of its dns: entries admits on this node:
// a store token's, a config token's and a tokens file's, to an owner as
// to an operator, and in the answer to a change; the tester says which
// name admitted an address.
func TestConsoleDNSNames(t *testing.T) {
	srv := testkit.DNS(t)
	srv.Set("office.test", 300, "192.0.2.10", "2001:db8::10")
	srv.Set("cust.test", 300, "198.51.100.30")
	srv.Set("file.test", 300, "203.0.113.40")
	srv.Set("globex.test", 300, "198.51.100.99")
	srv.SetRcode("broken.test", dns.RcodeServerFailure)
	dir := t.TempDir()
	file := testkit.WriteFile(t, filepath.Join(dir, "tokens.json"),
		`{"file-a": {"token_sha256": "`+testkit.Digest(applyTok(3))+`", "allow": ["dns:file.test"]}}`)
	h := &Handler{
		Resolvers: []string{srv.Addr},
		Tokens: map[string]*TokenPolicy{
			"config-a": {Token: applyTok(0), Allow: []string{"192.0.2.1", "dns:office.test"}, Owner: "acme"},
			"globex-a": {Token: applyTok(2), Allow: []string{"dns:globex.test"}, Owner: "globex"},
		},
		TokensFiles: []string{file},
		Store:       &TokenStore{File: filepath.Join(dir, "tokens.db")},
	}
	provisionLogging(t, h, zapcore.InfoLevel)
	c := newConsole(t, &Console{Operators: []string{"root"}, OwnerDNS: true}) // acme adds names
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["203.0.113.5"], "owner": "acme"}`)

	// names is a token's names as "name state addresses ttl".
	names := func(r reply) []string {
		t.Helper()
		var tk consoleToken
		r.json(t, &tk)
		var out []string
		for _, n := range tk.Names {
			out = append(out, strings.Join([]string{n.Name, n.State, strings.Join(n.Addresses, ","), n.TTL}, " "))
		}
		return out
	}
	if r := consoleCall(t, c, "acme", "GET", "/-/api/tokens/cust-1", ""); strings.Contains(string(r.body), `"names"`) {
		t.Errorf("a token without dns: entries: %s, want no names", r.body)
	}
	r := consoleCall(t, c, "acme", "POST", "/-/api/tokens/cust-1/allow", `{"entries": ["dns:cust.test", "dns:broken.test"]}`)
	if got := names(r); len(got) != 2 || !strings.HasPrefix(got[0], "cust.test ") || !strings.HasPrefix(got[1], "broken.test ") {
		t.Errorf("the answer to the change has names %q, want cust.test and broken.test", got)
	}
	for _, name := range []string{"office.test", "cust.test", "file.test", "globex.test", "broken.test"} {
		lookedUp(t, poolName(t, h, name), time.Time{})
	}

	for _, tc := range []struct {
		user, label string
		want        []string
	}{
		{"acme", "cust-1", []string{"cust.test resolved 198.51.100.30 5m0s", "broken.test failing  30s"}},
		{"acme", "config-a", []string{"office.test resolved 192.0.2.10,2001:db8::10 5m0s"}},
		{"root", "file-a", []string{"file.test resolved 203.0.113.40 5m0s"}},
		{"globex", "globex-a", []string{"globex.test resolved 198.51.100.99 5m0s"}},
	} {
		r := consoleCall(t, c, tc.user, "GET", "/-/api/tokens/"+tc.label, "")
		if got := names(r); !slices.Equal(got, tc.want) {
			t.Errorf("%s's %s: names %q, want %q", tc.user, tc.label, got, tc.want)
		}
	}
	var tk consoleToken
	consoleCall(t, c, "acme", "GET", "/-/api/tokens/cust-1", "").json(t, &tk)
	if len(tk.Names) != 2 || !strings.Contains(tk.Names[1].Failing, "SERVFAIL") || len(tk.Names[1].Addresses) != 0 {
		t.Errorf("cust-1's names %+v, want broken.test failing with SERVFAIL and no address", tk.Names)
	}
	if r := consoleCall(t, c, "acme", "GET", "/-/api/tokens/globex-a", ""); r.status != http.StatusNotFound || strings.Contains(string(r.body), "198.51.100.99") {
		t.Errorf("acme reads globex's names: %d %s", r.status, r.body)
	}

	for _, tc := range []struct{ label, ip, decision, name string }{
		{"cust-1", "198.51.100.30", "allow", "cust.test"},
		{"cust-1", "203.0.113.5", "allow", ""}, // a range admits it
		{"cust-1", "198.51.100.31", "deny", ""},
		{"config-a", "2001:db8::10", "allow", "office.test"},
		{"file-a", "203.0.113.40", "allow", "file.test"},
	} {
		var res checkResult
		r := consoleCall(t, c, "root", "GET", "/-/api/tokens/"+tc.label+"/check?ip="+tc.ip, "")
		r.json(t, &res)
		if res.Decision != tc.decision || res.DNSName != tc.name {
			t.Errorf("check %s from %s: %s, want %s by %q", tc.label, tc.ip, r.body, tc.decision, tc.name)
		}
	}
}
