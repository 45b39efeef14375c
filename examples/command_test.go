package examples

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestTokenCommands: new-token prints a token and its digest, hash-token
// gives the same digest from the token, and a config holding only the
// digest lets the token in.
func TestTokenCommands(t *testing.T) {
	bin := testkit.CaddyBin(t)
	out, err := exec.Command(bin, "ip-allowlist", "new-token").Output()
	if err != nil {
		t.Fatalf("new-token: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || len(lines[0]) != 43 || !strings.HasPrefix(lines[1], "sha256:") || len(lines[1]) != 7+64 {
		t.Fatalf("new-token printed %q, want a token and its sha256:<hex>", out)
	}
	tok, digest := lines[0], lines[1]

	hash := exec.Command(bin, "ip-allowlist", "hash-token")
	hash.Stdin = strings.NewReader(tok + "\n")
	out, err = hash.Output()
	if err != nil {
		t.Fatalf("hash-token: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != digest {
		t.Fatalf("hash-token printed %q, want %q", got, digest)
	}

	bad := exec.Command(bin, "ip-allowlist", "hash-token")
	bad.Stdin = strings.NewReader(" " + tok)
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "white space") || strings.Contains(string(out), tok) {
		t.Errorf("hash-token of a token with a leading space: %v %q", err, out)
	}

	c := testkit.StartCaddy(t, "digest.Caddyfile", func(admin, site string) string {
		return fmt.Sprintf("{\n\tadmin %s\n\tdefault_bind 127.0.0.1\n}\nhttp://%s {\n\tip_allowlist {\n\t\ttoken %s 127.0.0.1\n\t}\n\trespond \"ok\"\n}\n", admin, site, digest)
	}, inRepo())
	if got := c.Do(testkit.Request{Header: testkit.Bearer(tok)}); got.Status != 200 {
		t.Errorf("the new token, configured by digest: %v, want 200", got)
	}
	if got := c.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tok)}); got.Status != 401 {
		t.Errorf("the new token from elsewhere: %v, want 401", got)
	}
}
