package ipallowlist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// stressFor is how long the label lookup stress test runs its load; with
// its setup, well within the 30 s make test gives it.
const stressFor = 6 * time.Second

// committedLabels are the labels whose write has returned: from then on,
// the store has them, and every lookup must find them.
type committedLabels struct {
	mu     sync.Mutex
	labels []string
}

func (c *committedLabels) add(labels ...string) {
	c.mu.Lock()
	c.labels = append(c.labels, labels...)
	c.mu.Unlock()
}

func (c *committedLabels) pick(r *rand.Rand) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.labels[r.IntN(len(c.labels))]
}

// The label lookup (GET /ip-allowlist/check?label=, and view.byLabel, which
// the console, the leak signal and the change checks use) finds every
// label the store holds, while imports (some refused), background merges,
// expiry, config reloads and lookups run at once: finding 5, a lookup that
// answered 404 for labels in force, cannot come back unnoticed.
func TestLabelLookupUnderStress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	newHandler := func() *Handler {
		h := &Handler{
			IPSets: map[string][]string{"office": {"203.0.113.0/24"}},
			Tokens: map[string]*TokenPolicy{"config-a": {Token: applyTok(0), Allow: []string{"192.0.2.1"}}},
			Store:  &TokenStore{File: path},
		}
		provisionLogging(t, h, zapcore.ErrorLevel)
		return h
	}
	var handlers atomic.Pointer[Handler]
	handlers.Store(newHandler())
	var seq atomic.Int64
	entries := func(prefix string, n int) (string, []string) {
		var b strings.Builder
		labels := make([]string, n)
		b.WriteString("{")
		for i := range n {
			labels[i] = fmt.Sprintf("%s-%d", prefix, seq.Add(1))
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `%q: {"token_sha256": %q, "allow": ["198.51.100.7"]}`, labels[i], testkit.Digest("stress-"+labels[i]))
		}
		b.WriteString("}")
		return b.String(), labels
	}
	var committed committedLabels
	body, labels := entries("seed", 1500)
	if r := routeCall(t, "POST", "/ip-allowlist/import", body); r.status != http.StatusOK {
		t.Fatalf("seed import: %d %.300s", r.status, r.body)
	}
	committed.add(labels...)

	ctx, cancel := context.WithTimeout(context.Background(), stressFor)
	defer cancel()
	var wg sync.WaitGroup
	var misses, lookups, refusedKept atomic.Int64
	var firstMiss atomic.Pointer[string]
	var counts sync.Map // name → *atomic.Int64: how many times each ran
	loop := func(name string, pause time.Duration, fn func(r *rand.Rand)) {
		n, _ := counts.LoadOrStore(name, new(atomic.Int64))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(seq.Add(1)), 7))
			for ctx.Err() == nil {
				fn(r)
				n.(*atomic.Int64).Add(1)
				time.Sleep(pause)
			}
		}()
	}
	// Imports of new labels, and, every third, one refused at its end.
	var imports atomic.Int64
	loop("imports", 50*time.Millisecond, func(*rand.Rand) {
		body, labels := entries("imp", 400)
		if imports.Add(1)%3 == 0 {
			body = strings.TrimSuffix(body, "}") + `, "seed-1": {"token_sha256": "` + testkit.Digest("another token") + `", "allow": ["any"]}}`
			if r := routeCall(t, "POST", "/ip-allowlist/import", body); r.status != http.StatusConflict {
				t.Errorf("refused import: %d %.200s", r.status, r.body)
			}
			if r := routeCall(t, "GET", "/ip-allowlist/tokens/"+labels[0], ""); r.status != http.StatusNotFound {
				refusedKept.Add(1)
			}
			return
		}
		if r := routeCall(t, "POST", "/ip-allowlist/import", body); r.status != http.StatusOK {
			t.Errorf("import: %d %.200s", r.status, r.body)
			return
		}
		committed.add(labels...)
	})
	// Changes one at a time, into the overlay, and background merges of it.
	loop("puts", time.Millisecond, func(*rand.Rand) {
		_, labels := entries("put", 1)
		r := routeCall(t, "PUT", "/ip-allowlist/tokens/"+labels[0], `{"token_sha256": "`+testkit.Digest("stress-"+labels[0])+`", "allow": ["198.51.100.8"]}`)
		if r.status != http.StatusCreated {
			t.Errorf("put: %d %.200s", r.status, r.body)
			return
		}
		committed.add(labels[0])
	})
	loop("merges", 200*time.Millisecond, func(*rand.Rand) {
		h := handlers.Load()
		h.rebuild.Lock()
		if !h.merging {
			h.merging = true
			go h.mergeInBackground()
		}
		h.rebuild.Unlock()
	})
	// Entries that expire within the run, each recompiling its token.
	loop("expiring entries", 5*time.Millisecond, func(r *rand.Rand) {
		label := committed.pick(r)
		if res := routeCall(t, "POST", "/ip-allowlist/tokens/"+label+"/allow", `{"entries": ["192.0.2.`+fmt.Sprint(10+r.IntN(200))+`"], "ttl": "1s"}`); res.status != http.StatusOK {
			t.Errorf("allow with a ttl on %s: %d %.200s", label, res.status, res.body)
		}
	})
	// Config reloads: a new handler on the same store, then the old one
	// let go of, as Caddy does.
	loop("reloads", 300*time.Millisecond, func(*rand.Rand) {
		old := handlers.Swap(newHandler())
		_ = old.Cleanup()
	})
	// The lookups.
	for range 2 {
		loop("lookups", 200*time.Microsecond, func(r *rand.Rand) {
			label := committed.pick(r)
			lookups.Add(1)
			h := handlers.Load()
			status := checkStatus(label)
			_, p := h.current.Load().byLabel(label)
			if p == nil && handlers.Load() != h {
				// A handler let go of by a reload meanwhile no longer
				// follows the store.
				p = &policy{}
			}
			if status != http.StatusOK || p == nil {
				if misses.Add(1) == 1 {
					s := fmt.Sprintf("%s: check %d, byLabel found it: %v", label, status, p != nil)
					firstMiss.Store(&s)
				}
			}
		})
	}
	wg.Wait()
	if n := misses.Load(); n > 0 {
		t.Errorf("%d of %d lookups missed a label the store holds; the first: %s", n, lookups.Load(), *firstMiss.Load())
	}
	if n := refusedKept.Load(); n > 0 {
		t.Errorf("%d refused imports kept entries", n)
	}
	counts.Range(func(k, v any) bool {
		t.Logf("%s: %d", k, v.(*atomic.Int64).Load())
		return true
	})
}

// checkStatus is the status GET /ip-allowlist/check answers for label
// (a route the OpenAPI document, which routeCall checks, does not cover).
func checkStatus(label string) int {
	rec := httptest.NewRecorder()
	err := handleCheck(rec, httptest.NewRequest(http.MethodGet, "/ip-allowlist/check?label="+label+"&ip=198.51.100.7", nil))
	var apiErr caddy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.HTTPStatus
	}
	if err != nil {
		return http.StatusInternalServerError
	}
	return rec.Code
}
