package examples

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestWatchedTokensFile: with watch set, a change to a tokens file takes
// effect without a reload; a malformed file is refused and logged while the
// table in force keeps serving.
func TestWatchedTokensFile(t *testing.T) {
	const tokA, tokB = "watched-token-a-51", "watched-token-b-62"
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	write := func(body string) { testkit.WriteFile(t, path, body) }
	entry := func(label, tok, allow string) string {
		return fmt.Sprintf("%q: {\"token_sha256\": %q, \"allow\": [%q]}", label, testkit.Digest(tok), allow)
	}
	write("{" + entry("a", tokA, "127.0.0.1") + "}")
	c := testkit.StartCaddy(t, "watch.Caddyfile", func(admin, site string) string {
		return fmt.Sprintf("{\n\tadmin %s\n\tdefault_bind 127.0.0.1\n}\nhttp://%s {\n\tip_allowlist {\n\t\ttokens_file %s\n\t\twatch 100ms\n\t\tunlisted_tokens none\n\t}\n\trespond \"ok\"\n}\n", admin, site, path)
	}, inRepo())
	pid := c.Pid()
	// until waits for the status of tok to become want, and says how long.
	until := func(step, tok string, want int) time.Duration {
		t.Helper()
		return testkit.EventuallyLast(t, fmt.Sprintf("%s: %s gets %d", step, tok, want), 5*time.Second, func() (bool, string) {
			got := c.Do(testkit.Request{Header: testkit.Bearer(tok)})
			return got.Status == want, got.String()
		})
	}

	until("start", tokA, 200)
	until("start", tokB, 401)

	write("{" + entry("a", tokA, "127.0.0.1") + "," + entry("b", tokB, "127.0.0.1") + "}")
	took := until("token added", tokB, 200)
	t.Logf("watched tokens file: an added token took effect after %v (watch 100ms)", took.Round(time.Millisecond))

	write("{" + entry("a", tokA, "10.0.0.1/8") + "}") // host bits set: refused
	c.WaitOutput(func(out string) bool { return strings.Contains(out, "tokens files refused") })
	if got := c.Do(testkit.Request{Header: testkit.Bearer(tokB)}); got.Status != 200 {
		t.Errorf("after a refused file: b gets %d, want 200 from the table in force", got.Status)
	}
	if out := c.Output(); !strings.Contains(out, `token \"a\": allow[0] \"10.0.0.1/8\"`) {
		t.Errorf("the refusal does not name the entry:\n%s", out)
	}

	write("{" + entry("a", tokA, "127.0.0.1") + "}")
	until("token removed", tokB, 401)
	until("token removed", tokA, 200)

	if !c.Running() || c.Pid() != pid {
		t.Error("caddy restarted")
	}
	if out := c.Output(); strings.Contains(out, tokA) || strings.Contains(out, tokB) {
		t.Error("a token is in Caddy's output")
	}
	if n := strings.Count(c.Output(), "tokens files reloaded"); n != 2 {
		t.Errorf("%d reloads logged, want 2", n)
	}
}
