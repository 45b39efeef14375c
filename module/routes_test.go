package ipallowlist

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// storeHandler provisions a handler with a file store in a new directory,
// a config token and an ip_set, and returns it with its logs.
func storeHandler(t *testing.T, path string) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "tokens.db")
	}
	h := &Handler{
		IPSets: map[string][]string{"office": {"203.0.113.0/24"}},
		Tokens: map[string]*TokenPolicy{"config-a": {Token: applyTok(0), Allow: []string{"192.0.2.1"}}},
		Store:  &TokenStore{File: path},
	}
	logs := provisionLogging(t, h, zapcore.InfoLevel)
	return h, logs
}

// reply is one admin route's answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %s: %v", r.status, r.body, err)
	}
}

// adminCall serves one request through the admin routes as Caddy's admin
// endpoint does, errors included, and checks the exchange against the
// OpenAPI document.
func routeCall(t *testing.T, method, target, body string, header ...string) reply {
	t.Helper()
	var route caddy.AdminHandler
	for _, rt := range (adminAPI{}).Routes() {
		p := strings.SplitN(target, "?", 2)[0]
		if p == rt.Pattern || strings.HasSuffix(rt.Pattern, "/") && strings.HasPrefix(p, rt.Pattern) {
			route = rt.Handler
		}
	}
	if route == nil {
		t.Fatalf("no route for %s", target)
	}
	rec := serveAdmin(t, route, method, target, []byte(body), headerOf(header...))
	return reply{rec.Code, rec.Header(), rec.Body.Bytes()}
}

func headerOf(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func decided(h *Handler, tok, addr string) string {
	return viewOutcome(h, h.current.Load(), tok, netip.MustParseAddr(addr))
}

func TestStoreRoutesChangeOneTokenInPlace(t *testing.T) {
	h, logs := storeHandler(t, "")
	base := h.current.Load().base
	tok := applyTok(1)

	// Created from a literal token: hashed on arrival, never kept.
	r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"], "owner": "acct-9", "note": "first"}`)
	if r.status != http.StatusCreated || r.header.Get("ETag") == "" {
		t.Fatalf("create: %d %s (ETag %q)", r.status, r.body, r.header.Get("ETag"))
	}
	if strings.Contains(string(r.body), tok) {
		t.Fatalf("the answer holds the token: %s", r.body)
	}
	if got := decided(h, tok, "198.51.100.7"); got != "allowed cust-1" {
		t.Fatalf("after create: %s", got)
	}
	if got := decided(h, tok, "192.0.2.200"); got != "ip_not_allowed cust-1" {
		t.Fatalf("after create, elsewhere: %s", got)
	}

	// Add More, then remove by value.
	r = routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.200", "office"], "note": "new office"}`)
	if r.status != http.StatusOK {
		t.Fatalf("add: %d %s", r.status, r.body)
	}
	for _, addr := range []string{"192.0.2.200", "203.0.113.9", "198.51.100.7"} {
		if got := decided(h, tok, addr); got != "allowed cust-1" {
			t.Errorf("after add, %s: %s", addr, got)
		}
	}
	again := routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["office"]}`)
	if again.status != http.StatusOK || again.header.Get("ETag") != r.header.Get("ETag") {
		t.Errorf("adding a present entry: %d, ETag %s then %s; want a no-op", again.status, r.header.Get("ETag"), again.header.Get("ETag"))
	}
	r = routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1/allow/198.51.100.7", "")
	if r.status != http.StatusOK {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "198.51.100.7"); got != "ip_not_allowed cust-1" {
		t.Errorf("after remove: %s", got)
	}
	var e entryOut
	r.json(t, &e)
	if strings.Join(e.Allow, ",") != "192.0.2.200,office" || e.Notes["office"] != "new office" || e.Owner != "acct-9" {
		t.Errorf("entry after add and remove: %+v", e.TokenPolicy)
	}

	// Suspend and resume.
	routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/suspend", "")
	if got := decided(h, tok, "192.0.2.200"); got != "token_suspended cust-1" {
		t.Errorf("suspended: %s", got)
	}
	routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/resume", "")
	if got := decided(h, tok, "192.0.2.200"); got != "allowed cust-1" {
		t.Errorf("resumed: %s", got)
	}

	// DELETE revokes; the digest stays bound; PUT lists it again.
	if r = routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1", ""); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.200"); got != "token_revoked cust-1" {
		t.Errorf("revoked: %s", got)
	}
	if r = routeCall(t, "PUT", "/ip-allowlist/tokens/cust-2", `{"token": "`+tok+`", "allow": ["any"]}`); r.status != http.StatusConflict {
		t.Errorf("the revoked token under another label: %d %s, want 409", r.status, r.body)
	}
	if r = routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["192.0.2.201"]}`); r.status != http.StatusOK {
		t.Fatalf("PUT on a revoked label: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.201"); got != "allowed cust-1" {
		t.Errorf("listed again: %s", got)
	}

	// unrestrict removes it: it falls under the unlisted policy (any).
	if r = routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1?unrestrict=true", ""); r.status != http.StatusNoContent {
		t.Fatalf("unrestrict: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.200"); got != "allowed " {
		t.Errorf("unrestricted: %s, want allowed as unlisted", got)
	}
	if r = routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", ""); r.status != http.StatusNotFound {
		t.Errorf("GET after unrestrict: %d", r.status)
	}
	if logs.FilterMessage("token unrestricted: removed from the token store, it is now usable wherever unlisted_tokens allows; PUT it again to restrict it").Len() != 1 {
		t.Error("no WARN for unrestrict")
	}

	if h.current.Load().base != base {
		t.Error("a change rebuilt the base table; it should apply in place")
	}
	// One audit line per change, never the token or its digest.
	changed := logs.FilterMessage("token changed").All()
	if len(changed) != 8 {
		t.Errorf("%d token changed lines, want 8 (the no-op and the refusal write none)", len(changed))
	}
	for _, l := range changed {
		m := l.ContextMap()
		if m["token_label"] != "cust-1" || m["source"] != "admin" || m["action"] == "" {
			t.Errorf("audit line %v", m)
		}
	}
	for _, l := range logs.All() {
		for _, f := range l.Context {
			if s := f.String; strings.Contains(s, tok) || strings.Contains(s, testkit.Digest(tok)) {
				t.Errorf("log %q holds the token or its digest", l.Message)
			}
		}
	}
}

func TestStoreRoutesRefuseBadChanges(t *testing.T) {
	h, _ := storeHandler(t, "")
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token_sha256": "`+testkit.Digest(applyTok(1))+`", "allow": ["198.51.100.7"]}`); r.status != http.StatusCreated {
		t.Fatalf("setup: %d %s", r.status, r.body)
	}
	etag := routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", "").header.Get("ETag")
	sha := func(i int) string { return testkit.Digest(applyTok(i)) }
	for _, tt := range []struct {
		name, method, target, body string
		header                     []string
		status                     int
		want                       string
	}{
		{"unknown field", "PUT", "/ip-allowlist/tokens/cust-2", `{"token_sha256": "` + sha(2) + `", "alow": ["any"]}`, nil, 400, `token "cust-2": request body: json: unknown field "alow"`},
		{"bad range", "PUT", "/ip-allowlist/tokens/cust-2", `{"token_sha256": "` + sha(2) + `", "allow": ["10.0.0.1/8"]}`, nil, 400, `token "cust-2": allow[0] "10.0.0.1/8"`},
		{"unknown set", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["ofice"]}`, nil, 400, `allow[1] "ofice": unknown ip_set`},
		{"bad entry added", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.300"]}`, nil, 400, `"192.0.2.300"`},
		{"empty allow", "PUT", "/ip-allowlist/tokens/cust-2", `{"token_sha256": "` + sha(2) + `"}`, nil, 400, "allow is empty"},
		{"empty allow replacing", "PUT", "/ip-allowlist/tokens/cust-1", `{"token_sha256": "` + sha(1) + `"}`, nil, 400, "allow is empty"},
		{"short token", "PUT", "/ip-allowlist/tokens/cust-2", `{"token": "short", "allow": ["any"]}`, nil, 400, `token "cust-2"`},
		{"bad label", "PUT", "/ip-allowlist/tokens/cust%202", `{"token_sha256": "` + sha(2) + `", "allow": ["any"]}`, nil, 400, `token "cust 2"`},
		{"config label", "PUT", "/ip-allowlist/tokens/config-a", `{"token_sha256": "` + sha(2) + `", "allow": ["any"]}`, nil, 409, `token "config-a": the label is listed in tokens`},
		{"config token", "PUT", "/ip-allowlist/tokens/cust-2", `{"token": "` + applyTok(0) + `", "allow": ["any"]}`, nil, 409, `same token as "config-a", listed in tokens`},
		{"store token", "PUT", "/ip-allowlist/tokens/cust-2", `{"token_sha256": "` + sha(1) + `", "allow": ["any"]}`, nil, 409, `same token as "cust-1"`},
		{"new token on a label", "PUT", "/ip-allowlist/tokens/cust-1", `{"token_sha256": "` + sha(3) + `", "allow": ["any"]}`, nil, 409, "a label's token cannot change"},
		{"stale If-Match", "PUT", "/ip-allowlist/tokens/cust-1", `{"token_sha256": "` + sha(1) + `", "allow": ["any"]}`, []string{"If-Match", `"999"`}, 412, "precondition failed"},
		{"If-None-Match on a present label", "PUT", "/ip-allowlist/tokens/cust-1", `{"token_sha256": "` + sha(1) + `", "allow": ["any"]}`, []string{"If-None-Match", "*"}, 412, "precondition failed"},
		{"unknown label", "POST", "/ip-allowlist/tokens/nobody/allow", `{"entries": ["192.0.2.1"]}`, nil, 404, `"nobody"`},
		{"unknown entry", "DELETE", "/ip-allowlist/tokens/cust-1/allow/192.0.2.99", "", nil, 404, `no allow entry "192.0.2.99"`},
		{"ttl and expires", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "ttl": "1h", "expires": "2030-01-01T00:00:00Z"}`, nil, 400, "not both"},
		{"past expiry", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "expires": "2020-01-01T00:00:00Z"}`, nil, 400, "in the past"},
		{"bad limit", "GET", "/ip-allowlist/tokens?limit=0", "", nil, 400, "limit"},
		{"unknown store", "GET", "/ip-allowlist/tokens?store=other", "", nil, 404, `no token store named "other"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.current.Load()
			r := routeCall(t, tt.method, tt.target, tt.body, tt.header...)
			var e struct{ Error string }
			r.json(t, &e)
			if r.status != tt.status || !strings.Contains(e.Error, tt.want) {
				t.Errorf("%d %q, want %d with %q", r.status, e.Error, tt.status, tt.want)
			}
			if h.current.Load() != before {
				t.Error("a refused change published a view")
			}
			if got := routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", "").header.Get("ETag"); got != etag {
				t.Errorf("a refused change changed the entry: ETag %s, was %s", got, etag)
			}
		})
	}
}

func TestStoreKeepsChangesAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	h, _ := storeHandler(t, path)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/suspend", "")
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	h2, _ := storeHandler(t, path)
	if got := decided(h2, applyTok(1), "198.51.100.7"); got != "token_suspended cust-1" {
		t.Errorf("after reopening: %s", got)
	}
}

// Two handlers (two sites) on one store file share it: a change reaches
// both, and a change one of them refuses reaches neither.
func TestStoreSharedByHandlers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	a, _ := storeHandler(t, path)
	b := &Handler{Tokens: map[string]*TokenPolicy{"config-b": {Token: applyTok(5), Allow: []string{"any"}}}, Store: &TokenStore{File: path}}
	provisionLogging(t, b, zapcore.WarnLevel)
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`); r.status != http.StatusCreated {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for name, h := range map[string]*Handler{"a": a, "b": b} {
		if got := decided(h, applyTok(1), "198.51.100.7"); got != "allowed cust-1" {
			t.Errorf("handler %s: %s", name, got)
		}
	}
	// b's config holds config-b; a's does not, and must not get it either.
	r := routeCall(t, "PUT", "/ip-allowlist/tokens/config-b", `{"token_sha256": "`+testkit.Digest(applyTok(6))+`", "allow": ["any"]}`)
	if r.status != http.StatusConflict {
		t.Errorf("a label another handler's config lists: %d %s", r.status, r.body)
	}
	if got := decided(a, applyTok(6), "198.51.100.7"); got != "allowed " {
		t.Errorf("handler a after the refusal: %s, want the token unlisted", got)
	}
}

func TestStoreEntryExpires(t *testing.T) {
	h, logs := storeHandler(t, "")
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`)
	if r := routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.50"], "ttl": "1s"}`); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.50"); got != "allowed cust-1" {
		t.Fatalf("before expiry: %s", got)
	}
	began := time.Now()
	testkit.Eventually(t, "the entry to expire", 4*time.Second, func() bool { return decided(h, tok, "192.0.2.50") == "ip_not_allowed cust-1" })
	t.Logf("expired %.1fs after it was added with ttl 1s", time.Since(began).Seconds())
	if got := decided(h, tok, "198.51.100.7"); got != "allowed cust-1" {
		t.Errorf("the permanent entry after expiry: %s", got)
	}
	if logs.FilterMessage("token entry expired").Len() != 1 {
		t.Errorf("token entry expired lines: %d", logs.FilterMessage("token entry expired").Len())
	}
	// The last entry expiring leaves the token listed, refused everywhere.
	routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1/allow/198.51.100.7", "")
	if got := decided(h, tok, "198.51.100.7"); got != "ip_not_allowed cust-1" {
		t.Errorf("with no entry left: %s, want refused, still listed", got)
	}
}

func TestStoreImportExport(t *testing.T) {
	h, _ := storeHandler(t, "")
	var b strings.Builder
	b.WriteString("{")
	for i := 10; i < 30; i++ {
		if i > 10 {
			b.WriteString(",")
		}
		b.WriteString(`"imp-` + string(rune('a'+i-10)) + `": {"token": "` + applyTok(i) + `", "allow": ["198.51.100.7"]}`)
	}
	b.WriteString("}")
	r := routeCall(t, "POST", "/ip-allowlist/import", b.String())
	var res importResult
	r.json(t, &res)
	if r.status != 200 || res.Imported != 20 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	if got := decided(h, applyTok(12), "198.51.100.7"); got != "allowed imp-c" {
		t.Errorf("imported token: %s", got)
	}
	r = routeCall(t, "GET", "/ip-allowlist/export", "")
	if strings.Contains(string(r.body), applyTok(12)) || !strings.Contains(string(r.body), testkit.Digest(applyTok(12))) {
		t.Errorf("export holds the literal token or lacks its digest")
	}
	var exported map[string]*TokenPolicy
	r.json(t, &exported)
	if len(exported) != 20 {
		t.Errorf("exported %d entries", len(exported))
	}
	// A bad entry in an import names it and keeps nothing of its batch.
	r = routeCall(t, "POST", "/ip-allowlist/import", `{"imp-z": {"token": "`+applyTok(40)+`", "allow": ["10.0.0.1/8"]}}`)
	if r.status != 400 || !strings.Contains(string(r.body), `imp-z`) {
		t.Errorf("bad import: %d %s", r.status, r.body)
	}
	if got := decided(h, applyTok(40), "198.51.100.7"); got != "allowed " {
		t.Errorf("the refused import's token: %s", got)
	}
	// The page through labels.
	r = routeCall(t, "GET", "/ip-allowlist/tokens?limit=15", "")
	var page tokenList
	r.json(t, &page)
	if len(page.Tokens) != 15 || page.Next != "imp-o" {
		t.Errorf("first page: %d tokens, next %q", len(page.Tokens), page.Next)
	}
	r = routeCall(t, "GET", "/ip-allowlist/tokens?limit=15&after="+page.Next, "")
	page = tokenList{}
	r.json(t, &page)
	if len(page.Tokens) != 5 || page.Next != "" {
		t.Errorf("second page: %d tokens, next %q", len(page.Tokens), page.Next)
	}
}

func TestStorePromote(t *testing.T) {
	h, _ := storeHandler(t, "")
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"], "mode": "report"}`)
	for range 3 {
		serve(h, newRequest("192.0.2.60:1", "/", testkit.Bearer(tok)...))
	}
	serve(h, newRequest("192.0.2.61:1", "/", testkit.Bearer(tok)...))
	res := serve(h, newRequest("192.0.2.60:1", "/", testkit.Bearer(tok)...))
	if !res.next {
		t.Fatal("report mode refused the request")
	}
	r := routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/promote", `{"min_requests": 3}`)
	var p promoteResult
	r.json(t, &p)
	if r.status != 200 || strings.Join(p.Promoted, ",") != "192.0.2.60" || p.Entry.Mode != ModeEnforce {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "192.0.2.61"); got != "ip_not_allowed cust-1" {
		t.Errorf("an address seen once, after promote: %s", got)
	}
	res = serve(h, newRequest("192.0.2.61:1", "/", testkit.Bearer(tok)...))
	if res.next {
		t.Error("enforce mode let a refused address through after promote")
	}
	if !errors.Is(res.err, errDenied) && res.status != 401 {
		t.Errorf("after promote: %d %v", res.status, res.err)
	}
}

// The routes serve their own OpenAPI document.
func TestStoreRoutesServeOpenAPI(t *testing.T) {
	storeHandler(t, "")
	rec := httptest.NewRecorder()
	if err := handleOpenAPI(rec, httptest.NewRequest("GET", "/ip-allowlist/openapi.json", nil)); err != nil || rec.Code != 200 {
		t.Fatalf("%d %v", rec.Code, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc["openapi"] == nil {
		t.Fatalf("not an OpenAPI document: %v", err)
	}
}

// A config token's entry may expire too: the handler rebuilds then.
func TestConfigEntryExpires(t *testing.T) {
	at := time.Now().Add(1500 * time.Millisecond).UTC().Format(time.RFC3339)
	h := &Handler{Tokens: map[string]*TokenPolicy{"c": {Token: applyTok(1), Allow: []string{"192.0.2.1", "192.0.2.2"}, Expires: map[string]string{"192.0.2.2": at}}}}
	provisionLogging(t, h, zapcore.WarnLevel)
	if got := decided(h, applyTok(1), "192.0.2.2"); got != "allowed c" {
		t.Fatalf("before expiry: %s", got)
	}
	testkit.Eventually(t, "the config entry to expire", 4*time.Second, func() bool { return decided(h, applyTok(1), "192.0.2.2") == "ip_not_allowed c" })
	if got := decided(h, applyTok(1), "192.0.2.1"); got != "allowed c" {
		t.Errorf("the permanent entry: %s", got)
	}
	// An expiry that is not RFC 3339, or names no allow entry, is refused.
	for _, exp := range []map[string]string{{"192.0.2.2": "tomorrow"}, {"192.0.2.9": at}} {
		err := provisionErr(&Handler{Tokens: map[string]*TokenPolicy{"c": {Token: applyTok(1), Allow: []string{"192.0.2.2"}, Expires: exp}}})
		if err == nil || !strings.Contains(err.Error(), `token "c": expires`) {
			t.Errorf("expires %v: %v", exp, err)
		}
	}
}

// A route called while Caddy starts, before the app that opens the store
// file has started, waits for it instead of failing.
func TestStoreRoutesWaitForTheStoreToOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s := newFileStore(path, "starting", zap.NewNop())
	fileStores.LoadOrStore(path, s)
	t.Cleanup(func() { _, _ = fileStores.Delete(path) })
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = s.start()
	}()
	if r := routeCall(t, "GET", "/ip-allowlist/tokens?store=starting", ""); r.status != http.StatusOK {
		t.Errorf("listing while the store opens: %d %s, want 200 once it has", r.status, r.body)
	}
}

// A token's own report mode learns its addresses; it never lets a
// suspended or revoked token through.
func TestStoreReportModeNeverPassesSuspended(t *testing.T) {
	h, _ := storeHandler(t, "")
	tok := applyTok(1)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"], "mode": "report"}`)
	if res := serve(h, newRequest("192.0.2.70:1", "/", testkit.Bearer(tok)...)); !res.next {
		t.Fatalf("report mode refused an address not listed: %d", res.status)
	}
	for _, step := range []string{"/ip-allowlist/tokens/cust-1/suspend", "/ip-allowlist/tokens/cust-1/resume", ""} {
		if step == "" {
			routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1", "")
		} else {
			routeCall(t, "POST", step, "")
		}
		res := serve(h, newRequest("198.51.100.7:1", "/", testkit.Bearer(tok)...))
		if resumed := strings.HasSuffix(step, "resume"); res.next != resumed {
			t.Errorf("after %q: passed %v", step, res.next)
		}
	}
}

// Every route names a label a config lists as the config's, not as
// missing from the store; and a body too large is said to be.
func TestStoreRoutesConfigLabelsAndLimits(t *testing.T) {
	storeHandler(t, "")
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/ip-allowlist/tokens/config-a/suspend", ""},
		{"POST", "/ip-allowlist/tokens/config-a/allow", `{"entries": ["192.0.2.1"]}`},
		{"DELETE", "/ip-allowlist/tokens/config-a/allow/192.0.2.1", ""},
		{"DELETE", "/ip-allowlist/tokens/config-a", ""},
	} {
		r := routeCall(t, c.method, c.path, c.body)
		if r.status != http.StatusConflict || !strings.Contains(string(r.body), `the label is listed in tokens`) {
			t.Errorf("%s %s: %d %s, want 409 naming the config", c.method, c.path, r.status, r.body)
		}
	}
	big := `{"entries": ["` + strings.Repeat("1", maxBody) + `"]}`
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	if r := routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/allow", big); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the limit: %d %.200s", r.status, r.body)
	}
}

// A reload may rename a store: the routes answer to the new name.
func TestStoreRenamedByReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	storeHandler(t, path)
	renamed := &Handler{Store: &TokenStore{File: path, Name: "customers"}}
	provisionLogging(t, renamed, zapcore.WarnLevel)
	if r := routeCall(t, "GET", "/ip-allowlist/tokens?store=customers", ""); r.status != http.StatusOK {
		t.Errorf("the new name: %d %s", r.status, r.body)
	}
}

// A change made while a new config's handler builds (a reload) reaches
// that handler too: its build waits, or sees it. The tokens file is a FIFO,
// so the test holds the new handler's build until it has revoked.
func TestStoreChangeDuringReloadReachesTheNewConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.db")
	old, _ := storeHandler(t, path)
	tok := applyTok(1)
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`); r.status != http.StatusCreated {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	fifo := filepath.Join(dir, "tokens.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	nu := &Handler{TokensFiles: []string{fifo}, Store: &TokenStore{File: path}}
	done := make(chan struct{})
	go func() { defer close(done); provisionLogging(t, nu, zapcore.WarnLevel) }()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0) // opens once nu's build reads the file
	if err != nil {
		t.Fatal(err)
	}
	revoked := make(chan reply, 1)
	go func() { revoked <- routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1", "") }()
	time.Sleep(100 * time.Millisecond) // the revoke waits for nu's build, or would be lost by it
	_, _ = w.Write([]byte(`{"cfg": {"token_sha256": "` + testkit.Digest(applyTok(9)) + `", "allow": ["any"]}}`))
	w.Close()
	<-done
	if r := <-revoked; r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	for name, h := range map[string]*Handler{"old": old, "new": nu} {
		if got := decided(h, tok, "198.51.100.7"); got != "token_revoked cust-1" {
			t.Errorf("%s config after the revoke: %s, want token_revoked", name, got)
		}
	}
}

// An import whose rebuild fails (a tokens file the operator left broken,
// watch off) is still put in force, through the overlay, before the 200.
func TestStoreImportInForceWhenTheRebuildFails(t *testing.T) {
	dir := t.TempDir()
	tf := testkit.WriteFile(t, filepath.Join(dir, "tokens.json"), `{"cfg": {"token_sha256": "`+testkit.Digest(applyTok(9))+`", "allow": ["any"]}}`)
	h := &Handler{TokensFiles: []string{tf}, Store: &TokenStore{File: filepath.Join(dir, "tokens.db")}}
	provisionLogging(t, h, zapcore.WarnLevel)
	tok := applyTok(1)
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+tok+`", "allow": ["198.51.100.7"]}`); r.status != http.StatusCreated {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	testkit.WriteFile(t, tf, `{"cfg": {`) // half saved
	r := routeCall(t, "POST", "/ip-allowlist/import", `{"cust-1": {"token_sha256": "`+testkit.Digest(tok)+`", "allow": ["198.51.100.7"], "revoked": true}, "cust-2": {"token": "`+applyTok(2)+`", "allow": ["198.51.100.8"]}}`)
	if r.status != http.StatusOK {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "198.51.100.7"); got != "token_revoked cust-1" {
		t.Errorf("after a 200 import revoking cust-1: %s", got)
	}
	if got := decided(h, applyTok(2), "198.51.100.8"); got != "allowed cust-2" {
		t.Errorf("after a 200 import adding cust-2: %s", got)
	}
}

// An import is checked whole before anything of it is written: an entry
// refused past the first batch refuses all of it, and keeps none.
func TestStoreImportAllOrNothing(t *testing.T) {
	h, _ := storeHandler(t, "")
	var b strings.Builder
	b.WriteString("{")
	n := storeImportBatch + 50
	for i := range n {
		fmt.Fprintf(&b, `"imp-%05d": {"token_sha256": "%s", "allow": ["198.51.100.7"]},`, i, testkit.Digest(fmt.Sprint("import-all-or-nothing-", i)))
	}
	// The last entry repeats the first one's token.
	fmt.Fprintf(&b, `"imp-last": {"token_sha256": "%s", "allow": ["198.51.100.7"]}}`, testkit.Digest("import-all-or-nothing-0"))
	before := h.current.Load()
	r := routeCall(t, "POST", "/ip-allowlist/import", b.String())
	var e struct{ Error string }
	r.json(t, &e)
	if r.status != http.StatusBadRequest || !strings.Contains(e.Error, `token "imp-last": same token as "imp-00000"`) || strings.Contains(e.Error, "were imported") {
		t.Fatalf("import: %d %.300s", r.status, r.body)
	}
	if h.current.Load() != before {
		t.Error("a refused import published a view")
	}
	if r := routeCall(t, "GET", "/ip-allowlist/tokens/imp-00000", ""); r.status != http.StatusNotFound {
		t.Errorf("the first entry of a refused import: %d, want 404", r.status)
	}
}
