package examples

import (
	"encoding/base64"
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
	// allow lets them through from anywhere (dXNlcjpwYXNz is user:pass,
	// no listed token).
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

// The credential forms of issue 21, which backends read a token from (see
// module/backends_test.go for the models): each must bring the token's
// policy, against the real binary, under the defaults (unlisted tokens and
// requests without one pass) and under unlisted_tokens none with
// missing_token deny. A value too large to read is refused under both.
func TestCredentialFormsAreRead(t *testing.T) {
	basic := func(userPass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass))
	}
	auth := func(v string) []string { return []string{"Authorization", v} }
	cases := []struct {
		name   string
		path   string
		header []string
	}{
		{"rails token, quoted", "", auth(`Token token="` + bypassToken + `"`)},
		{"rails token, bare", "", auth("Token token=" + bypassToken)},
		{"rails token with options", "", auth(`Token token="` + bypassToken + `", nonce="abc"`)},
		{"bearer token=", "", auth("Bearer token=" + bypassToken)},
		{"bearer, comma", "", auth("Bearer " + bypassToken + ",nonce=x")},
		{"bearer, semicolon", "", auth("Bearer " + bypassToken + ";x")},
		{"bearer, quoted", "", auth(`Bearer "` + bypassToken + `"`)},
		{"bearer access_token=", "", auth("Bearer access_token=" + bypassToken)},
		{"bearer after another scheme", "", auth("Basic x, Bearer " + bypassToken)},
		{"basic user", "", auth(basic(bypassToken + ":"))},
		{"basic password", "", auth(basic("api:" + bypassToken))},
		{"basic user without a colon, more after the padding", "", auth(basic(bypassToken) + "AAAA")},
		{"basic user without a colon, a word after it", "", auth(basic(bypassToken) + " AAAA")},
		{"query with a scheme", "/v1/items?access_token=Bearer%20" + bypassToken, nil},
		{"query array", "/v1/items?access_token[]=" + bypassToken, nil},
		{"cookie", "", []string{"Cookie", "a=1; access_token=" + bypassToken}},
		{"cookie, quoted", "", []string{"Cookie", `access_token="` + bypassToken + `"`}},
	}
	for _, cfg := range []struct{ name, policy string }{
		{"defaults", ""},
		{"unlisted none, missing deny", "unlisted_tokens none\n\t\tmissing_token deny"},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			c := testkit.StartCaddy(t, "credentials.Caddyfile", credentialsConfig(cfg.policy), inRepo())
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if got := c.Do(testkit.Request{Local: "127.0.0.2", Path: tc.path, Header: tc.header}); got.Status != http.StatusUnauthorized {
						t.Errorf("from 127.0.0.2: %v, want 401", got)
					}
					if got := c.Do(testkit.Request{Local: "127.0.0.1", Path: tc.path, Header: tc.header}); got.Status != http.StatusOK {
						t.Errorf("from 127.0.0.1: %v, want 200", got)
					}
				})
			}
			t.Run("a 17 KiB credential is refused", func(t *testing.T) {
				big := auth("Bearer " + strings.Repeat("t", 17<<10))
				if got := c.Do(testkit.Request{Local: "127.0.0.1", Header: big}); got.Status != http.StatusUnauthorized {
					t.Errorf("%v, want 401", got)
				}
				if n, ok := c.Metric("caddy_http_ip_allowlist_requests_total", "reason", "credential_malformed"); !ok || n != 1 {
					t.Errorf("credential_malformed counted %v (found %v), want 1", n, ok)
				}
			})
			t.Run("token never in output", func(t *testing.T) {
				if strings.Contains(c.Output(), bypassToken) {
					t.Errorf("the token is in Caddy's output:\n%s", c.Output())
				}
			})
		})
	}
}

// credentialsConfig reads the Bearer header, the access_token query
// parameter and the access_token cookie, and allows bypassToken from
// 127.0.0.1 only; policy holds further subdirectives. Caddy's header
// limit is raised so that a 17 KiB credential reaches the handler.
func credentialsConfig(policy string) func(admin, site string) string {
	return func(admin, site string) string {
		return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	servers {
		max_header_size 1MiB
	}
}
http://%s {
	ip_allowlist {
		token_from header Authorization Bearer
		token_from query access_token
		token_from cookie access_token
		token %s {
			label bypass
			allow 127.0.0.1
		}
		%s
	}
	respond "ok"
}
`, admin, site, bypassToken, policy)
	}
}
