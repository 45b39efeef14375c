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
)

// TestExampleLogFlood runs examples/log-flood.Caddyfile: a flood of denied
// requests writes only the sampled entries, to the allowlist's own file.
func TestExampleLogFlood(t *testing.T) {
	raw, err := os.ReadFile("log-flood.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	c := startConfig(t, "log-flood.Caddyfile", func(admin, site string) string {
		cfg := strings.ReplaceAll(string(raw), "127.0.0.1:2019", admin)
		cfg = strings.ReplaceAll(cfg, "127.0.0.1:8083", site)
		return strings.ReplaceAll(cfg, "/var/log/caddy/", logDir+"/")
	}, "PARTNER_A_TOKEN=flood-token-6d1-abcdef")

	const requests, workers = 1000, 8
	began := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < requests; i += workers {
				if got := c.do(request{}); got.status != http.StatusUnauthorized {
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
	if strings.Contains(c.out.String(), `"msg":"request denied"`) {
		t.Error("the default log got request denied entries; the example excludes them")
	}
}

// TestLimits: a 1 MiB header, a 64 KiB token and 10,000 query parameters
// each get a clear answer, and memory stays bounded. Under Caddy's default
// header limit (16 KiB) Caddy refuses them with 431 before the handler
// runs; with max_header_size raised they reach the handler, which decides
// them like any other request.
func TestLimits(t *testing.T) {
	bigToken := strings.Repeat("k", 64<<10)
	var query strings.Builder
	for i := range 10_000 {
		fmt.Fprintf(&query, "p%d=%d&", i, i)
	}
	params := query.String()
	pad := func(n int) []string { return append(bearer(bigToken), "X-Pad", strings.Repeat("a", n)) }

	type tc struct {
		name   string
		req    request
		status int
	}
	for _, server := range []struct {
		name, options string
		cases         []tc
	}{
		{"default header limit", "", []tc{
			{"64 KiB token", request{header: bearer(bigToken)}, 431},
			{"1 MiB header", request{header: pad(1 << 20)}, 431},
			{"10,000 query parameters", request{path: "/?" + params + "api_key=" + bigToken}, 431},
			{"small token still decided", request{header: bearer("small-token")}, 401},
		}},
		{"max_header_size 2MiB", "servers {\n\t\tmax_header_size 2MiB\n\t}", []tc{
			{"64 KiB token, listed, from its address", request{header: bearer(bigToken)}, 200},
			{"64 KiB token from elsewhere", request{local: "127.0.0.2", header: bearer(bigToken)}, 401},
			{"64 KiB token plus one byte", request{header: bearer(bigToken + "k")}, 401},
			{"64 KiB token in the query", request{path: "/?api_key=" + bigToken}, 200},
			{"1 MiB header", request{header: pad(1 << 20)}, 200},
			{"3 MiB header", request{header: pad(3 << 20)}, 431},
			{"10,000 query parameters, token last", request{path: "/?" + params + "api_key=" + bigToken}, 200},
			{"10,000 query parameters, two tokens", request{path: "/?api_key=x&" + params + "api_key=" + bigToken}, 401},
			{"10,000 query parameters, no token", request{path: "/?" + params}, 401},
		}},
	} {
		t.Run(server.name, func(t *testing.T) {
			c := startConfig(t, "limits.Caddyfile", func(admin, site string) string {
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
	}
	respond "ok"
}
`, admin, server.options, site, digest(bigToken))
			})
			baseHeap := c.heapAfterGC()
			for _, tc := range server.cases {
				t.Run(tc.name, func(t *testing.T) {
					for range 20 { // repeated, so a leak would show in the heap
						if got := c.do(tc.req); got.status != tc.status {
							t.Fatalf("got %d, want %d", got.status, tc.status)
						}
					}
				})
			}
			heap := c.heapAfterGC()
			t.Logf("limits (%s): heap %.1f MiB after, %.1f MiB before", server.name, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
			if heap > baseHeap+8<<20 {
				t.Errorf("heap grew from %d to %d bytes", baseHeap, heap)
			}
			if strings.Contains(c.out.String(), bigToken[:1024]) {
				t.Error("the token is in Caddy's output")
			}
		})
	}
}
