package examples

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestHandleErrorsReverseProxy pins the README's warning next to the
// handle_errors example: Caddy runs error routes with the original
// request, so a catch-all handle_errors that proxies sends a refused
// request, token included, to the backend, and the client gets the
// backend's answer. A handle_errors 401 block answering inside Caddy comes
// first and ends the chain.
func TestHandleErrorsReverseProxy(t *testing.T) {
	const tok = "handle-errors-token-2d8"
	var reached, sawToken atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if strings.Contains(r.Header.Get("Authorization"), tok) {
			sawToken.Add(1)
		}
		fmt.Fprint(w, "from the backend")
	}))
	defer backend.Close()
	upstream := strings.TrimPrefix(backend.URL, "http://")

	tests := []struct {
		name       string
		errors     string
		status     int
		body       string
		backendHit bool
	}{
		{"catch-all proxy forwards the refused request", `handle_errors {
		reverse_proxy ` + upstream + `
	}`, 200, "from the backend", true},
		{"401 answered in Caddy first, proxy for other errors", `handle_errors 401 {
		respond "unauthorized" 401
	}
	handle_errors {
		reverse_proxy ` + upstream + `
	}`, 401, "unauthorized", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reached.Store(0)
			sawToken.Store(0)
			c := testkit.StartCaddy(t, "Caddyfile", func(admin, site string) string {
				return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
}

http://%s {
	ip_allowlist {
		token {env.HE_TOKEN} 192.0.2.1
	}
	respond "api"
	%s
}
`, admin, site, tc.errors)
			}, inRepo("HE_TOKEN="+tok))
			got := c.Do(testkit.Request{Header: testkit.Bearer(tok)}) // from 127.0.0.1: refused
			if got.Status != tc.status || got.Body != tc.body {
				t.Errorf("refused request: %v, want %d %q", got, tc.status, tc.body)
			}
			if hit := reached.Load() > 0; hit != tc.backendHit || (hit && sawToken.Load() == 0) {
				t.Errorf("backend reached %d times (%d with the token), want reached: %v", reached.Load(), sawToken.Load(), tc.backendHit)
			}
		})
	}
}
