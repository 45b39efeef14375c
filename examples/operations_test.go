package examples

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestExampleOperations runs examples/operations.Caddyfile: the addresses a
// token is used from are observed, survive a reload, and come back as a
// ready allow line; per-token metrics count them.
func TestExampleOperations(t *testing.T) {
	const tok = "partner-c-token-83e"
	c := testkit.StartCaddyFile(t, "operations.Caddyfile", "8084", inRepo("PARTNER_C_TOKEN="+tok))
	for range 3 {
		c.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tok)})
	}
	c.Do(testkit.Request{Local: "127.0.0.3", Header: testkit.Bearer(tok)})

	// A reload (of a changed config: Caddy skips an unchanged one); the
	// observations are kept.
	status, cfg := c.AdminDo(http.MethodGet, "/config/", "", "")
	changed := strings.Replace(cfg, "hello, ", "hello again, ", 1)
	if status != 200 || changed == cfg {
		t.Fatalf("GET /config/: %d %s", status, cfg)
	}
	if status, body := c.AdminDo(http.MethodPost, "/load", "application/json", changed); status != 200 {
		t.Fatalf("reload: %d %s", status, body)
	}
	if got := c.Do(testkit.Request{Local: "127.0.0.3", Header: testkit.Bearer(tok)}); got.Body != "hello again, partner-c" {
		t.Fatalf("after the reload: %v", got)
	}

	status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-c", "", "")
	var seen []struct {
		IP      string
		Allowed uint64
	}
	if status != 200 || json.Unmarshal([]byte(body), &seen) != nil {
		t.Fatalf("observed: %d %s", status, body)
	}
	if len(seen) != 2 || seen[0].IP != "127.0.0.2" || seen[0].Allowed != 3 || seen[1].IP != "127.0.0.3" || seen[1].Allowed != 2 {
		t.Errorf("observed %s, want 127.0.0.2 three times and 127.0.0.3 twice (once after the reload)", body)
	}
	if status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/partner-c?format=caddyfile", "", ""); status != 200 || body != "allow 127.0.0.2 127.0.0.3\n" {
		t.Errorf("caddyfile format: %d %q", status, body)
	}
	if status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/observed", "", ""); status != 200 || !strings.Contains(body, `"partner-c":[`) {
		t.Errorf("all labels: %d %s", status, body)
	}
	if status, _ := c.AdminDo(http.MethodGet, "/ip-allowlist/observed/nobody", "", ""); status != 404 {
		t.Errorf("unknown label: %d, want 404", status)
	}
	// Per-token metrics count since the reload.
	if n, found := c.Metric("caddy_http_ip_allowlist_token_requests_total", `token_label="partner-c"`, `decision="allow"`); !found || n != 1 {
		t.Errorf("per-token metric: %v (found %v), want 1 since the reload", n, found)
	}
	if strings.Contains(c.Output(), tok) {
		t.Error("the token is in Caddy's output")
	}
}
