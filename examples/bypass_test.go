package examples

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The bypass report, against the real binary: with missing_token allow,
// a credential the plugin read as "no token" reached a backend that found
// the token anyway. Each such credential must now bring its token's
// policy: 401 from an address the token is not allowed from, 200 from the
// one it is.
func TestBypassCredentialsAreRead(t *testing.T) {
	// The server keeps X_Api_Key and X.Api.Key, which Caddy drops by
	// default (and then drops X-Api-Key instead), as a server in front of
	// a backend that expects them would be set up.
	c := testkit.StartCaddy(t, "bypass.Caddyfile", bypassConfig(`servers {
		expected_underscore_headers X_Api_Key
		expected_dot_headers X.Api.Key
	}`, `respond "ok"`), inRepo())
	cases := []struct {
		name   string
		path   string
		header []string
	}{
		{"tab after the scheme", "", []string{"Authorization", "Bearer\t" + bypassToken}},
		{"another scheme word", "", []string{"Authorization", "Token " + bypassToken}},
		{"upper-case query key", "/v1/items?API_KEY=" + bypassToken, nil},
		{"semicolon separator", "/v1/items?x=1;api_key=" + bypassToken, nil},
		{"array query key", "/v1/items?api_key%5B%5D=" + bypassToken, nil},
		{"underscore header name", "", []string{"X_Api_Key", bypassToken}},
		{"dotted header name", "", []string{"X.Api.Key", bypassToken}},
	}
	denied := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.Do(testkit.Request{Local: "127.0.0.2", Path: tc.path, Header: tc.header}); got.Status != http.StatusUnauthorized {
				t.Errorf("from 127.0.0.2: %v, want 401", got)
			} else {
				denied++
			}
			if got := c.Do(testkit.Request{Local: "127.0.0.1", Path: tc.path, Header: tc.header}); got.Status != http.StatusOK {
				t.Errorf("from 127.0.0.1: %v, want 200", got)
			}
		})
	}
	// Credentials for other purposes are still no token: missing_token
	// allow lets them through from anywhere.
	t.Run("basic credentials are no token", func(t *testing.T) {
		req := testkit.Request{Local: "127.0.0.2", Header: []string{"Authorization", "Basic dXNlcjpwYXNz"}}
		if got := c.Do(req); got.Status != http.StatusOK {
			t.Errorf("%v, want 200", got)
		}
	})
	t.Run("token never in output", func(t *testing.T) {
		out := c.WaitOutput(func(out string) bool { return strings.Count(out, `"msg":"request denied"`) >= denied })
		if n := strings.Count(out, `"msg":"request denied"`); n != denied {
			t.Errorf("%d request denied entries for %d denials", n, denied)
		}
		if strings.Contains(out, bypassToken) {
			t.Errorf("the token is in Caddy's output:\n%s", out)
		}
	})
}

// With the server's default options Caddy drops X_Api_Key before any
// handler runs, so neither the plugin nor a backend behind it sees it:
// the request carries no token, and the header is gone.
func TestBypassUnderscoreHeaderDroppedByDefault(t *testing.T) {
	c := testkit.StartCaddy(t, "bypass.Caddyfile", bypassConfig("", `respond "[{header.X_Api_Key}]"`), inRepo())
	for _, local := range []string{"127.0.0.2", "127.0.0.1"} {
		got := c.Do(testkit.Request{Local: local, Header: []string{"X_Api_Key", bypassToken}})
		if got.Status != http.StatusOK || got.Body != "[]" {
			t.Errorf("from %s: %v, want 200 with the header dropped", local, got)
		}
	}
}

const bypassToken = "bypass-token-4c8e1f"

// bypassConfig reads the token from the three sources of the bypass
// report and allows it from 127.0.0.1 only; anything else passes.
func bypassConfig(serverOptions, respond string) func(admin, site string) string {
	return func(admin, site string) string {
		return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	%s
}
http://%s {
	ip_allowlist {
		token_from header Authorization Bearer
		token_from header X-Api-Key
		token_from query api_key
		token %s {
			label bypass
			allow 127.0.0.1
		}
		missing_token allow
		unlisted_tokens any
	}
	%s
}
`, admin, serverOptions, site, bypassToken, respond)
	}
}
