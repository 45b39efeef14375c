package examples

import (
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestStoreWithDefaultsWarnsNothingAboutUnlisted: a store with the default
// unlisted_tokens any starts without the WARN that unlisted_tokens is
// restricted (the table in force before the store has loaded refuses
// unlisted tokens for that while, which once read as restricted), and a
// restricted unlisted_tokens still gets it.
func TestStoreWithDefaultsWarnsNothingAboutUnlisted(t *testing.T) {
	const warning = "unlisted_tokens is restricted but missing_token is allow"
	for _, tc := range []struct {
		name     string
		unlisted string
		warns    bool
	}{
		{"defaults", "", false},
		{"unlisted_tokens restricted", "unlisted_tokens 10.0.0.0/8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testkit.StartCaddy(t, "warn.Caddyfile", func(admin, site string) string {
				return `{
	admin ` + admin + `
}
http://` + site + ` {
	ip_allowlist {
		token warn-test-token-0123456789 127.0.0.5
		store file
		` + tc.unlisted + `
	}
	respond "ok"
}
`
			}, testkit.Options{})
			// Provision logs the warning, if any, before the store opens.
			out := c.WaitOutput(func(s string) bool { return strings.Contains(s, "token store opened") })
			if got := strings.Contains(out, warning); got != tc.warns {
				t.Errorf("warned %v, want %v:\n%s", got, tc.warns, out)
			}
		})
	}
}
