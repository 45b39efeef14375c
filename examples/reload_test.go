package examples

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// Tokens of the reload test. stable-ok is allowed from loopback in every
// config and stable-deny in none, so their answers never change; rotating
// is allowed in even generations only, which shows each reload took effect.
const (
	tokStableOK   = "stable-ok-token-a81"
	tokStableDeny = "stable-deny-token-b92"
	tokRotating   = "rotating-token-c03"
)

// reloadConfig is generation gen of the reload test's config. Each one
// changes the allowlists and loads a tokens file of 10,000 tokens, so a
// table kept alive by mistake after a reload shows in the heap. bad adds an
// entry that must be refused.
func reloadConfig(admin, site, tokensFile string, gen int, bad bool) string {
	rotating := "192.0.2.1"
	if gen%2 == 0 {
		rotating = "127.0.0.1"
	}
	okAllow := fmt.Sprintf(`"127.0.0.1", "198.51.100.%d"`, gen%250)
	if bad {
		okAllow += `, "10.0.0.1/8"`
	}
	return fmt.Sprintf(`{
	"admin": {"listen": %q},
	"apps": {"http": {"servers": {"reload": {
		"listen": [%q],
		"routes": [{"handle": [
			{
				"handler": "ip_allowlist",
				"tokens": {
					"stable-ok":   {"token": %q, "allow": [%s]},
					"stable-deny": {"token": %q, "allow": ["192.0.2.%d"]},
					"rotating":    {"token": %q, "allow": [%q]}
				},
				"tokens_files": [%q],
				"unlisted": {"allow": []}
			},
			{"handler": "static_response", "body": "gen %d"}
		]}]
	}}}}
}`, admin, site, tokStableOK, okAllow, tokStableDeny, gen%250+1, tokRotating, rotating, tokensFile, gen)
}

// TestReloadUnderLoad pushes 50 configs through POST /load, good and bad,
// while 32 clients keep sending requests whose answers no config changes.
func TestReloadUnderLoad(t *testing.T) {
	const clients, reloads = 32, 50
	tokensFile := testkit.TokensFile(t, 10_000, func(i int) testkit.Entry {
		return testkit.Entry{Label: "bulk-" + strconv.Itoa(i), Token: fmt.Sprint("bulk", i), Allow: []string{fmt.Sprintf("10.%d.%d.0/24", i>>8, i&0xff)}}
	})
	var admin, site string
	c := testkit.StartCaddy(t, "reload.json", func(a, s string) string {
		admin, site = a, s
		return reloadConfig(a, s, tokensFile, 0, false)
	}, inRepo())

	baseGoroutines, baseHeap := c.Goroutines(), c.HeapAfterGC()

	var (
		stop                        atomic.Bool
		sent, ok, denied, transport atomic.Int64
		retried                     atomic.Int64
		unexpected                  atomic.Int64
		firstUnexpected             atomic.Value
		wg                          sync.WaitGroup
	)
	clientTransport := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: clientTransport, Timeout: 10 * time.Second}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				tok, want := tokStableOK, http.StatusOK
				if (n+i)%2 == 1 {
					tok, want = tokStableDeny, http.StatusUnauthorized
				}
				req, _ := http.NewRequest(http.MethodGet, c.Site+"/", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				sent.Add(1)
				resp, err := client.Do(req)
				if err != nil {
					// Caddy's graceful reload itself sometimes drops a
					// connection under load (a bare Caddy with the same
					// reloads drops more; see docs/reliability.md). A client retries
					// a GET once, as browsers and HTTP libraries do; the
					// retry must get the right answer.
					retried.Add(1)
					resp, err = client.Do(req)
				}
				if err != nil {
					transport.Add(1)
					firstUnexpected.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode != want:
					unexpected.Add(1)
					firstUnexpected.CompareAndSwap(nil, fmt.Sprintf("%s: got %d, want %d", tok, resp.StatusCode, want))
				case want == http.StatusOK:
					ok.Add(1)
				default:
					denied.Add(1)
				}
			}
		}()
	}

	// probe checks what the config in force says about the rotating token.
	probe := func(step string, gen int) {
		t.Helper()
		got := c.Do(testkit.Request{Header: testkit.Bearer(tokRotating)})
		wantStatus, wantBody := http.StatusUnauthorized, ""
		if gen%2 == 0 {
			wantStatus, wantBody = http.StatusOK, fmt.Sprintf("gen %d", gen)
		}
		if got.Status != wantStatus || got.Body != wantBody {
			t.Errorf("%s: rotating token got %v, want %d %q (generation %d in force)", step, got, wantStatus, wantBody, gen)
		}
	}

	gen, good, refused := 0, 0, 0
	for i := 1; i <= reloads; i++ {
		// Every fifth load is bad, the last one good: after a refused load
		// Caddy's admin endpoint serves the refused config's (empty) metrics
		// registry until the next good load, so /metrics is read after one.
		bad := i%5 == 4
		next := gen + 1
		status, body := c.AdminDo(http.MethodPost, "/load", "application/json", reloadConfig(admin, site, tokensFile, next, bad))
		switch {
		case bad && status == http.StatusBadRequest && strings.Contains(body, `token \"stable-ok\": allow[2] \"10.0.0.1/8\"`):
			refused++
		case !bad && status == http.StatusOK:
			gen = next
			good++
		default:
			t.Fatalf("reload %d (bad=%v): %d %s", i, bad, status, body)
		}
		probe(fmt.Sprintf("after reload %d", i), gen)
	}
	stop.Store(true)
	wg.Wait()

	// The metrics of the config in force are served, and count its traffic
	// (each config has its own registry, so counts start at its load).
	if n, found := c.Metric("caddy_http_ip_allowlist_requests_total", `reason="allowed"`); !found || n < 1 {
		t.Errorf("after the reloads: allowed requests counted %v (found %v), want some", n, found)
	}

	// Only the handler of the config in force answers the check route: the
	// 49 configs replaced or refused have left it.
	status, body := c.AdminDo(http.MethodGet, "/ip-allowlist/check?label=rotating&ip=127.0.0.1", "", "")
	if want := fmt.Sprintf(`"decision":"%s"`, map[bool]string{true: "allow", false: "deny"}[gen%2 == 0]); status != 200 ||
		strings.Count(body, `"label":"rotating"`) != 1 || !strings.Contains(body, want) {
		t.Errorf("check route after the reloads: %d %s, want one result with %s", status, body, want)
	}
	clientTransport.CloseIdleConnections()

	t.Logf("reload under load: %d clients, %d reloads (%d good applied, %d bad refused), %d requests: %d allowed, %d denied, %d transport errors after one retry (%d connections dropped by a reload and retried), %d unexpected statuses",
		clients, reloads, good, refused, sent.Load(), ok.Load(), denied.Load(), transport.Load(), retried.Load(), unexpected.Load())
	if transport.Load() != 0 || unexpected.Load() != 0 {
		t.Errorf("first problem: %v", firstUnexpected.Load())
	}
	if ok.Load() == 0 || denied.Load() == 0 {
		t.Errorf("the clients did not exercise both answers")
	}

	// Back to baseline: goroutines once the client connections are gone,
	// heap after a collection. Old configs (each with a 10,000-token table)
	// must not be kept alive.
	var goroutines int
	testkit.Wait(10*time.Second, func() bool {
		goroutines = c.Goroutines()
		return goroutines <= baseGoroutines+5
	})
	heap := c.HeapAfterGC()
	t.Logf("after %d reloads: goroutines %d (baseline %d), heap %.1f MiB (baseline %.1f MiB)",
		reloads, goroutines, baseGoroutines, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
	if goroutines > baseGoroutines+5 {
		t.Errorf("goroutines %d, baseline %d: something started per reload or connection is still running", goroutines, baseGoroutines)
	}
	if heap > baseHeap+16<<20 {
		t.Errorf("heap %d bytes, baseline %d: more than 16 MiB kept after reloads", heap, baseHeap)
	}
}
