package ipallowlist

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"
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
