package ipallowlist

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// FuzzStoreRoutes sends any method, path and body to the store routes: no
// input is answered 500 or panics, and a change answered 4xx publishes
// nothing. Run: make fuzz (or go test ./module -run '^$' -fuzz
// FuzzStoreRoutes).
func FuzzStoreRoutes(f *testing.F) {
	for _, seed := range []struct{ method, path, body string }{
		{"PUT", "cust-1", `{"token_sha256": "` + strings.Repeat("ab", 32) + `", "allow": ["192.0.2.1"]}`},
		{"PUT", "cust-1", `{"token": "0123456789abcdef0123", "allow": ["office", "2001:db8::/48"], "expires": {"office": "2030-01-01T00:00:00Z"}}`},
		{"POST", "cust-1/allow", `{"entries": ["198.51.100.0/24"], "ttl": "1h"}`},
		{"POST", "cust-1/allow", `{"entries": ["198.51.100.0/24"], "expires": "2030-01-01T00:00:00Z", "note": "n"}`},
		{"DELETE", "cust-1/allow/198.51.100.0%2F24", ""},
		{"POST", "cust-1/suspend", ""},
		{"POST", "cust-1/promote", `{"min_requests": 2}`},
		{"DELETE", "cust-1?unrestrict=true", ""},
		{"PUT", "config-a", `{"token_sha256": "` + strings.Repeat("cd", 32) + `", "allow": ["any"]}`},
		{"GET", "?after=a&limit=3", ""},
		{"PUT", "%zz", `{}`},
		{"PUT", "x", `{"allow": ["1.2.3.4"], "token_sha256": "sha256:` + strings.Repeat("0", 64) + `"} {}`},
	} {
		f.Add(seed.method, seed.path, seed.body)
	}
	h := &Handler{
		IPSets: map[string][]string{"office": {"203.0.113.0/24"}},
		Tokens: map[string]*TokenPolicy{"config-a": {Token: applyTok(0), Allow: []string{"192.0.2.1"}}},
		Store:  &TokenStore{File: filepath.Join(f.TempDir(), "tokens.db"), Name: "fuzz"},
	}
	provisionLogging(f, h, zapcore.ErrorLevel)
	f.Fuzz(func(t *testing.T, method, path, body string) {
		switch method {
		case "GET", "PUT", "POST", "DELETE":
		default:
			method = "PUT"
		}
		target := "/ip-allowlist/tokens/" + path
		if strings.ContainsAny(target, " \t\r\n#") {
			return // not a request line
		}
		if !strings.Contains(target, "?") {
			target += "?store=fuzz"
		} else {
			target += "&store=fuzz"
		}
		before := h.current.Load()
		req, err := http.NewRequest(method, "http://localhost"+target, bytes.NewReader([]byte(body)))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		err = handleTokens(rec, req)
		status := rec.Code
		if err != nil {
			// As Caddy's admin endpoint: a bare APIError keeps its status.
			status = http.StatusInternalServerError
			if api, ok := err.(caddy.APIError); ok {
				status = api.HTTPStatus
			}
		}
		if status >= 500 {
			t.Fatalf("%s %s %q: %d %v", method, target, body, status, err)
		}
		if status >= 400 && h.current.Load() != before {
			t.Fatalf("%s %s %q: refused (%d) but published a view", method, target, body, status)
		}
	})
}

// FuzzConsole sends any method, path, body, user and Origin to the
// console: nothing is answered 500 or panics, a change refused publishes
// nothing, a change from another origin or without a login is refused,
// and an owner's change never reaches another owner's token. Run: make
// fuzz (or go test ./module -run '^$' -fuzz FuzzConsole).
func FuzzConsole(f *testing.F) {
	for _, seed := range []struct{ method, path, body, user, origin string }{
		{"POST", "tokens/cust-1/allow", `{"entries": ["198.51.100.0/24"], "ttl": "1h", "note": "n"}`, "root", "same"},
		{"POST", "tokens/cust-1/remove", `{"entry": "192.0.2.1"}`, "acme", "same"},
		{"POST", "tokens/cust-1/suspend", `{}`, "globex", "same"},
		{"POST", "tokens/cust-1/owner", `{"owner": "globex"}`, "acme", "same"},
		{"POST", "tokens", `{"label": "new-1", "allow": ["192.0.2.9"]}`, "acme", "same"},
		{"POST", "tokens/cust-1/allow", `{"entries": ["192.0.2.7"]}`, "root", "http://evil.test"},
		{"POST", "tokens/cust-1/allow", `{"entries": ["192.0.2.7"]}`, "", "same"},
		{"GET", "tokens?prefix=c&after=a&limit=3", "", "acme", ""},
		{"GET", "tokens/cust-1/check?ip=192.0.2.1", "", "globex", ""},
		{"GET", "refusals?label=cust-1", "", "acme", ""},
		{"POST", "tokens/config-a/allow", `{"entries": ["192.0.2.7"]}`, "root", "same"},
		{"POST", "tokens/%zz/allow", `{}`, "root", "same"},
	} {
		f.Add(seed.method, seed.path, seed.body, seed.user, seed.origin)
	}
	h := &Handler{
		Tokens: map[string]*TokenPolicy{"config-a": {Token: applyTok(0), Allow: []string{"192.0.2.1"}}},
		Store:  &TokenStore{File: filepath.Join(f.TempDir(), "tokens.db"), Name: "fuzzconsole"},
	}
	provisionLogging(f, h, zapcore.ErrorLevel)
	s := storesNamed("fuzzconsole")[0]
	if _, _, err := s.putEntry("cust-1", TokenPolicy{Token: applyTok(1), Allow: []string{"192.0.2.1"}, Owner: "acme"}, tokenstore.Cond{}, false, audit{}); err != nil {
		f.Fatal(err)
	}
	c := &Console{Store: "fuzzconsole", Operators: []string{"root"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	f.Cleanup(cancel)
	if err := c.Provision(ctx); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, body, user, origin string) {
		switch method {
		case "GET", "POST":
		default:
			method = "POST"
		}
		target := "/console/-/api/" + path
		if strings.ContainsAny(target, " \t\r\n#") {
			return // not a request line
		}
		req, err := http.NewRequest(method, "http://console.test"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		if origin == "same" {
			origin = "http://console.test"
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		req.Header.Set("Content-Type", "application/json")
		repl := caddy.NewReplacer()
		req = caddyhttp.PrepareRequest(req, repl, nil, &caddyhttp.Server{})
		if user != "" {
			repl.Set(placeholderUserID, user)
		}
		before := h.current.Load()
		owned, _ := s.get("cust-1")
		rec := httptest.NewRecorder()
		if err := c.ServeHTTP(rec, req, nil); err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		status := rec.Code
		changed := h.current.Load() != before
		switch {
		case status >= 500:
			t.Fatalf("%s %s %q as %q: %d %s", method, target, body, user, status, rec.Body)
		case status >= 400 && changed:
			t.Fatalf("%s %s %q as %q: refused (%d) but published a view", method, target, body, user, status)
		case changed && (user == "" || origin != "http://console.test"):
			t.Fatalf("%s %s %q as %q from %q: changed", method, target, body, user, origin)
		case changed && user != "root" && owned.tp.Owner != user && strings.Contains(path, "cust-1"):
			t.Fatalf("%s %s %q: %q changed %q's token", method, target, body, user, owned.tp.Owner)
		}
	})
}
