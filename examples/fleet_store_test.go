package examples

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/redis/go-redis/v9"
)

// Tokens of the store tests, at least 16 bytes as literal tokens must be.
const (
	tokStoreA = "fleet-store-token-a-2b7f0c"
	tokStoreB = "fleet-store-token-b-6e19d4"
	tokStoreC = "fleet-store-token-c-a40c53"
)

// startOpenFleetNode runs examples/fleet.Caddyfile with the default
// unlisted policy (any): a token that dropped out of the store's table
// would be usable from anywhere, so these tests see whether each path
// fails closed.
func startOpenFleetNode(t *testing.T, addr string) *testkit.Caddy {
	t.Helper()
	raw, err := os.ReadFile("fleet.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\t\tunlisted_tokens none\n") {
		t.Fatal("fleet.Caddyfile no longer says unlisted_tokens none")
	}
	return testkit.StartCaddy(t, "fleet.Caddyfile", func(admin, site string) string {
		return strings.NewReplacer(
			"127.0.0.1:2019", admin,
			"127.0.0.1:8080", site,
			"127.0.0.1:6379", addr,
			"\t\tunlisted_tokens none\n", "",
			"ip-allowlist-snapshot.json", t.TempDir()+"/snapshot.json",
		).Replace(string(raw))
	}, inRepo())
}

// tokensCLIResult runs `caddy ip-allowlist tokens <args>` and returns its
// standard output, standard error and exit error, failing on none.
func tokensCLIResult(t *testing.T, addr, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(testkit.CaddyBin(t), append([]string{"ip-allowlist", "tokens", "--redis", addr}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// waitStatus waits up to 10 s for the node to answer want for tok from local.
func waitStatus(t *testing.T, n *testkit.Caddy, local, tok string, want int) {
	t.Helper()
	testkit.EventuallyLast(t, fmt.Sprintf("token from %s answered %d", local, want), 10*time.Second, func() (bool, string) {
		got := n.Do(testkit.Request{Local: local, Header: testkit.Bearer(tok)})
		return got.Status == want, got.String()
	})
}

// TestFleetFailsClosed: with the real binary and a real redis-server, on a
// node whose unlisted tokens may be used from anywhere, no path drops a
// listed token into the unlisted policy by mistake: a second label for a
// token is refused by the CLI; an entry claiming another label's token
// leaves it to its rightful label; an entry the node cannot read refuses
// its token; delete revokes; only delete --unrestrict unlists. A set name
// the node does not define matches nothing.
func TestFleetFailsClosed(t *testing.T) {
	testkit.CaddyBin(t)
	srv := redistest.New(t)
	if out, _, err := tokensCLIResult(t, srv.Addr, tokStoreA, "put", "partner-a", "--allow", "127.0.0.2"); err != nil || out != "partner-a: added; allow 127.0.0.2\n" {
		t.Fatalf("put partner-a: %q %v", out, err)
	}
	tokensCLI(t, srv.Addr, tokStoreB, "put", "partner-b", "--allow", "127.0.0.4")
	node := startOpenFleetNode(t, srv.Addr)
	waitStatus(t, node, "127.0.0.2", tokStoreA, 200)
	waitStatus(t, node, "127.0.0.3", tokStoreA, 401)
	waitStatus(t, node, "127.0.0.3", tokStoreC, 200) // unlisted: anywhere

	// A second label for partner-a's token, by the token or its digest.
	before := tokensCLI(t, srv.Addr, "", "list")
	for _, args := range [][]string{
		{"put", "acme-test", "--allow", "any"},
		{"put", "acme-test", "--allow", "any", "--token-sha256", testkit.Digest(tokStoreA)},
		{"put", "partner-b", "--allow", "any", "--token-sha256", testkit.Digest(tokStoreA)},
	} {
		_, errOut, err := tokensCLIResult(t, srv.Addr, tokStoreA, args...)
		if err == nil || !strings.Contains(errOut, `"partner-a"`) || strings.Contains(errOut, tokStoreA) {
			t.Errorf("%v with partner-a's token: %v %q, want a failure naming partner-a", args, err, errOut)
		}
	}
	if after := tokensCLI(t, srv.Addr, "", "list"); after != before {
		t.Errorf("refused puts changed the store:\n%s\nthen\n%s", before, after)
	}

	// Written by hand, bypassing the CLI: an entry claiming partner-a's
	// token, and partner-b's entry with a field this node does not know.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, "ip_allowlist:entries", "acme-test", `{"token_sha256":"`+testkit.Digest(tokStoreA)+`","allow":["any"]}`)
		p.HSet(ctx, "ip_allowlist:entries", "partner-b", `{"token_sha256":"`+testkit.Digest(tokStoreB)+`","allow":["127.0.0.4"],"expires":"2030-01-01"}`)
		p.Incr(ctx, "ip_allowlist:version")
		p.Publish(ctx, "ip_allowlist:changes", "acme-test")
		p.Publish(ctx, "ip_allowlist:changes", "partner-b")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	node.WaitOutput(func(out string) bool { return strings.Count(out, "redis token entry skipped") >= 2 })
	waitStatus(t, node, "127.0.0.4", tokStoreB, 401) // refused, even where it was allowed
	waitStatus(t, node, "127.0.0.3", tokStoreB, 401) // and not unlisted
	waitStatus(t, node, "127.0.0.2", tokStoreA, 200) // partner-a keeps its token
	waitStatus(t, node, "127.0.0.3", tokStoreA, 401)
	out := node.Output()
	if !strings.Contains(out, `"token_label":"acme-test"`) || !strings.Contains(out, `which the store's digest index names`) {
		t.Errorf("the conflicting entry is not logged as such:\n%s", out)
	}

	// The conflicting entry cannot be revoked (that would revoke
	// partner-a's token): it is removed.
	if _, errOut, err := tokensCLIResult(t, srv.Addr, "", "delete", "acme-test"); err == nil || !strings.Contains(errOut, "--unrestrict") {
		t.Errorf("delete of an entry holding partner-a's token: %v %q", err, errOut)
	}
	tokensCLI(t, srv.Addr, "", "delete", "--unrestrict", "acme-test")
	waitStatus(t, node, "127.0.0.2", tokStoreA, 200)
	waitStatus(t, node, "127.0.0.3", tokStoreA, 401)

	// delete revokes; delete --unrestrict unlists.
	if out := tokensCLI(t, srv.Addr, "", "delete", "partner-a"); !strings.Contains(out, "partner-a: revoked") {
		t.Errorf("delete printed %q", out)
	}
	waitStatus(t, node, "127.0.0.2", tokStoreA, 401)
	waitStatus(t, node, "127.0.0.3", tokStoreA, 401)
	if !strings.Contains(node.WaitOutput(func(out string) bool { return strings.Contains(out, `"reason":"token_revoked"`) }), `"reason":"token_revoked"`) {
		t.Errorf("a deleted token is not refused as token_revoked")
	}
	if out := tokensCLI(t, srv.Addr, "", "delete", "--unrestrict", "partner-a"); !strings.Contains(out, "now unlisted") {
		t.Errorf("delete --unrestrict printed %q", out)
	}
	waitStatus(t, node, "127.0.0.3", tokStoreA, 200)

	// A set name the nodes do not define: the CLI says it cannot check
	// it, and the node allows only the address.
	out, errOut, err := tokensCLIResult(t, srv.Addr, tokStoreC, "put", "partner-c", "--allow", "127.0.0.1,ofice")
	if err != nil || !strings.Contains(errOut, `"ofice"`) || !strings.Contains(out, "partner-c: added") {
		t.Fatalf("put with a set name: %v %q %q", err, out, errOut)
	}
	waitStatus(t, node, "127.0.0.1", tokStoreC, 200)
	waitStatus(t, node, "127.0.0.3", tokStoreC, 401)
	tokensCLI(t, srv.Addr, "", "allow", "partner-c", "127.0.0.6") // another rebuild
	waitStatus(t, node, "127.0.0.6", tokStoreC, 200)
	if n := strings.Count(node.Output(), "names an ip_set this node does not define"); n != 1 {
		t.Errorf("the unknown set was logged %d times, want once", n)
	}

	// put's argument form.
	if _, errOut, err := tokensCLIResult(t, srv.Addr, tokStoreC, "put", "partner-d", "--allow", "127.0.0.7", "127.0.0.8"); err == nil || !strings.Contains(errOut, "--allow a,b") {
		t.Errorf("put --allow a b: %v %q", err, errOut)
	}
	for _, tok := range []string{tokStoreA, tokStoreB, tokStoreC} {
		if strings.Contains(node.Output(), tok) {
			t.Errorf("the node's output holds a token")
		}
	}
}

// TestFleetValidateNeedsNoRedis: caddy validate provisions the config but
// never starts it, so it needs no Redis and writes no snapshot.
func TestFleetValidateNeedsNoRedis(t *testing.T) {
	bin := testkit.CaddyBin(t)
	raw, err := os.ReadFile("fleet.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	snapshot := dir + "/snapshot.json"
	cfg := strings.NewReplacer(
		"127.0.0.1:6379", testkit.FreePort(t), // nothing listens there
		"ip-allowlist-snapshot.json", snapshot,
	).Replace(string(raw))
	path := testkit.WriteFile(t, dir+"/Caddyfile", cfg)
	cmd := exec.Command(bin, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = testkit.CaddyEnv(dir)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "Valid configuration") {
		t.Errorf("validate with Redis down: %v\n%s", err, out)
	}
	if _, err := os.Stat(snapshot); !os.IsNotExist(err) {
		t.Errorf("validate wrote the snapshot: %v", err)
	}
}
