package examples

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestRefusedConfigs: configs that would leave a token usable from more
// places than written are refused by the real binary, at their line, by
// caddy adapt, caddy validate and a running Caddy's POST /load alike (the
// running config keeps serving), and
// no error shows the token.
func TestRefusedConfigs(t *testing.T) {
	bin := testkit.CaddyBin(t)
	const secret = "partner-secret-token-0123"
	cases := []struct {
		name, block, want string
		line              int
	}{
		{"unset {$VAR} leaves a range as the token (finding 3)",
			"token {$IPAL_SURELY_UNSET_PARTNER} 203.0.113.0/24 127.0.0.1",
			"the token is an IP address, range or keyword, not a secret; if it was written as {$VAR}, that variable is unset", 4},
		{"two placeholders run together (finding 4)", "token {env.IPAL_A}{env.IPAL_B} 127.0.0.1", "the token has { or }", 4},
		{"unclosed placeholder (finding 4)", "token {env.IPAL_A 127.0.0.1", "the token has { or }", 4},
		{"short token (finding 13)", "token abc123 127.0.0.1", "the token is 6 bytes", 4},
		{"arguments swapped (finding 15)", "token 203.0.113.7 " + secret, "the token is an IP address, range or keyword", 4},
		{"a secret in a range's place", "token other-token-0123456789 " + secret, "(an entry of 25 characters, not shown in case it is a token): unknown ip_set", 4},
		{"over-broad entry", "token " + secret + " 127.0.0.1 10.0.0.0/7", `admits 33,554,432 IPv4 addresses, more than an IPv4 /8`, 4},
		{"every IPv4 address", "token " + secret + " 0.0.0.0/0", "write any", 4},
		{"unlisted_tokens deny (finding 20)", "unlisted_tokens deny", "write unlisted_tokens none", 4},
		{"watch without a file (finding 20)", "watch", "there is no tokens_file to watch", 2},
	}
	dir := t.TempDir()
	running := testkit.StartCaddy(t, "good.Caddyfile", func(admin, site string) string {
		return fmt.Sprintf("{\n\tadmin %s\n\tdefault_bind 127.0.0.1\n}\nhttp://%s {\n\trespond ok\n}\n", admin, site)
	}, inRepo())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, "Caddyfile")
			cfg := fmt.Sprintf("http://127.0.0.1:1 {\n\tip_allowlist {\n\t\t%s\n\t}\n\trespond ok\n}\n", strings.ReplaceAll(tc.block, "\n", "\n\t\t"))
			// The block's first line is line 3 of the file; the token
			// checks report the token's line.
			cfg = strings.Replace(cfg, "ip_allowlist {\n", "ip_allowlist {\n\t\ttoken good-token-0123456789 127.0.0.1\n", 1)
			testkit.WriteFile(t, file, cfg)
			for _, cmd := range []string{"adapt", "validate"} {
				out, err := exec.Command(bin, cmd, "--config", file, "--adapter", "caddyfile").CombinedOutput()
				if err == nil {
					t.Fatalf("caddy %s accepted:\n%s\n%s", cmd, cfg, out)
				}
				at := fmt.Sprintf("Caddyfile:%d", tc.line)
				// Caddy logs JSON: unquote what it escaped.
				out = []byte(strings.ReplaceAll(string(out), `\"`, `"`))
				if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), at) {
					t.Errorf("caddy %s: want %q at %s, got:\n%s", cmd, tc.want, at, out)
				}
				if strings.Contains(string(out), secret) {
					t.Errorf("caddy %s shows the token:\n%s", cmd, out)
				}
			}
			status, body := running.AdminDo("POST", "/load", "text/caddyfile", cfg)
			if status != 400 || !strings.Contains(body, tc.want) || strings.Contains(body, secret) {
				t.Errorf("POST /load: %d %s, want 400 and %q", status, body, tc.want)
			}
			if got := running.Do(testkit.Request{}); got.Status != 200 {
				t.Errorf("after a refused load the running config answers %v", got)
			}
		})
	}
}

// TestRevokedNotRemoved: under unlisted_tokens any, deleting a token through
// the admin API makes it usable from anywhere (and Caddy says so); marking it
// revoked refuses it everywhere (finding 2).
func TestRevokedNotRemoved(t *testing.T) {
	const tok = "partner-a-token-0123456789"
	c := testkit.StartCaddy(t, "revoke.json", func(admin, site string) string {
		return fmt.Sprintf(`{"admin": {"listen": %q}, "apps": {"http": {"servers": {"s": {"listen": [%q], "routes": [{"handle": [
			{"handler": "ip_allowlist", "@id": "allowlist",
			 "tokens": {"partner-a": {"token_sha256": %q, "allow": ["127.0.0.1"]}}},
			{"handler": "static_response", "body": "ok {http.auth.user.id}"}]}]}}}}}`, admin, site, testkit.Digest(tok))
	}, inRepo())
	if got := c.Do(testkit.Request{Header: testkit.Bearer(tok)}); got.Status != 200 || got.Body != "ok partner-a" {
		t.Fatalf("partner-a from its address: %v, want 200 \"ok partner-a\"", got)
	}
	if got := c.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tok)}); got.Status != 401 {
		t.Fatalf("partner-a from elsewhere: %v, want 401", got)
	}
	// Revoke: refused from its own address too.
	if status, body := c.AdminDo("POST", "/id/allowlist/tokens/partner-a/revoked", "application/json", "true"); status != 200 {
		t.Fatalf("revoking: %d %s", status, body)
	}
	for _, local := range []string{"127.0.0.1", "127.0.0.2"} {
		if got := c.Do(testkit.Request{Local: local, Header: testkit.Bearer(tok)}); got.Status != 401 {
			t.Errorf("revoked partner-a from %s: %v, want 401", local, got)
		}
	}
	out := c.WaitOutput(func(out string) bool { return strings.Contains(out, `"reason":"token_revoked"`) })
	if !strings.Contains(out, `"reason":"token_revoked"`) {
		t.Errorf("no token_revoked denial logged:\n%s", out)
	}
	// Delete: the token is unlisted now, and Caddy warns that it is.
	if status, body := c.AdminDo("DELETE", "/id/allowlist/tokens/partner-a", "", ""); status != 200 {
		t.Fatalf("deleting: %d %s", status, body)
	}
	if got := c.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tok)}); got.Status != 200 {
		t.Errorf("deleted partner-a from elsewhere: %v, want 200 (unlisted_tokens any)", got)
	}
	out = c.WaitOutput(func(out string) bool { return strings.Contains(out, "token no longer listed") })
	if !strings.Contains(out, "token no longer listed") || !strings.Contains(out, `"token_label":"partner-a"`) {
		t.Errorf("no warning names the token that left the list:\n%s", out)
	}
	if strings.Contains(out, tok) {
		t.Error("the token is in Caddy's output")
	}
}
