package examples

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestExampleLogFlood runs examples/log-flood.Caddyfile: a flood of denied
// requests writes only the sampled entries, to the allowlist's own file.
func TestExampleLogFlood(t *testing.T) {
	raw, err := os.ReadFile("log-flood.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	c := testkit.StartCaddy(t, "log-flood.Caddyfile", func(admin, site string) string {
		cfg := strings.ReplaceAll(string(raw), "127.0.0.1:2019", admin)
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:8083", site)
		return strings.ReplaceAll(cfg, "/var/log/caddy/", logDir+"/")
	}, inRepo("PARTNER_A_TOKEN=flood-token-6d1-abcdef"))

	const requests, workers = 1000, 8
	began := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < requests; i += workers {
				if got := c.Do(testkit.Request{}); got.Status != http.StatusUnauthorized {
					t.Errorf("request %d: %v", i, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	seconds := time.Since(began).Seconds()

	data, err := os.ReadFile(filepath.Join(logDir, "ip_allowlist.log"))
	if err != nil {
		t.Fatal(err)
	}
	entries := strings.Count(string(data), `"msg":"request denied"`)
	// Per sampling window: the first 10, then 1 in 100 of the rest. The
	// windows are wall-clock ticks, so the run may touch one more than its
	// length says. Unsampled, it would be 1,000.
	most := (int(seconds)+2)*10 + requests/100 + 1
	t.Logf("log flood: %d denied requests in %.2fs wrote %d entries (bound %d)", requests, seconds, entries, most)
	if entries < 10 || entries > most {
		t.Errorf("%d entries, want 10 to %d", entries, most)
	}
	if strings.Contains(c.Output(), `"msg":"request denied"`) {
		t.Error("the default log got request denied entries; the example excludes them")
	}
}

// TestLimits: a 1 MiB header, a 64 KiB token and 10,000 query parameters
// each get a clear answer, and memory stays bounded. Under Caddy's default
// header limit (16 KiB) Caddy refuses them with 431 before the handler
// runs; with max_header_size (and max_credential_bytes, default 16 KiB)
// raised they reach the handler, which decides them like any other request.
func TestLimits(t *testing.T) {
	bigToken := strings.Repeat("k", 64<<10)
	var query strings.Builder
	for i := range 10_000 {
		fmt.Fprintf(&query, "p%d=%d&", i, i)
	}
	params := query.String()
	pad := func(n int) []string { return append(testkit.Bearer(bigToken), "X-Pad", strings.Repeat("a", n)) }

	type tc struct {
		name   string
		req    testkit.Request
		status int
	}
	for _, server := range []struct {
		name, options string
		cases         []tc
	}{
		{"default header limit", "", []tc{
			{"64 KiB token", testkit.Request{Header: testkit.Bearer(bigToken)}, 431},
			{"1 MiB header", testkit.Request{Header: pad(1 << 20)}, 431},
			{"10,000 query parameters", testkit.Request{Path: "/?" + params + "api_key=" + bigToken}, 431},
			{"small token still decided", testkit.Request{Header: testkit.Bearer("small-token")}, 401},
		}},
		{"max_header_size 2MiB", "servers {\n\t\tmax_header_size 2MiB\n\t}", []tc{
			{"64 KiB token, listed, from its address", testkit.Request{Header: testkit.Bearer(bigToken)}, 200},
			{"64 KiB token from elsewhere", testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(bigToken)}, 401},
			{"64 KiB token plus one byte", testkit.Request{Header: testkit.Bearer(bigToken + "k")}, 401},
			{"64 KiB token in the query", testkit.Request{Path: "/?api_key=" + bigToken}, 200},
			{"1 MiB header", testkit.Request{Header: pad(1 << 20)}, 200},
			{"3 MiB header", testkit.Request{Header: pad(3 << 20)}, 431},
			{"10,000 query parameters, token last", testkit.Request{Path: "/?" + params + "api_key=" + bigToken}, 200},
			{"10,000 query parameters, two tokens", testkit.Request{Path: "/?api_key=x&" + params + "api_key=" + bigToken}, 401},
			{"10,000 query parameters, no token", testkit.Request{Path: "/?" + params}, 401},
		}},
	} {
		t.Run(server.name, func(t *testing.T) {
			c := testkit.StartCaddy(t, "limits.Caddyfile", func(admin, site string) string {
				return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	%s
}
http://%s {
	ip_allowlist {
		token_from header Authorization Bearer
		token_from query api_key
		token sha256:%s 127.0.0.1
		unlisted_tokens none
		missing_token deny
		max_credential_bytes 128KiB
	}
	respond "ok"
}
`, admin, server.options, site, testkit.Digest(bigToken))
			}, inRepo())
			baseHeap := c.HeapAfterGC()
			for _, tc := range server.cases {
				t.Run(tc.name, func(t *testing.T) {
					for range 20 { // repeated, so a leak would show in the heap
						if got := c.Do(tc.req); got.Status != tc.status {
							t.Fatalf("got %d, want %d", got.Status, tc.status)
						}
					}
				})
			}
			heap := c.HeapAfterGC()
			t.Logf("limits (%s): heap %.1f MiB after, %.1f MiB before", server.name, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
			if heap > baseHeap+8<<20 {
				t.Errorf("heap grew from %d to %d bytes", baseHeap, heap)
			}
			if strings.Contains(c.Output(), bigToken[:1024]) {
				t.Error("the token is in Caddy's output")
			}
		})
	}
}
