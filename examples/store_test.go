package examples

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The file store's tests against the real binary: changes through the
// store's admin routes (/ip-allowlist/tokens/...) apply in place, are
// visible to the next request, survive kill -9, and refuse what the rules
// refuse without changing anything.

// storeTok is a literal token of these tests, long enough for the routes.
func storeTok(name string) string { return "file-store-token-" + name + "-7d41c9" }

// storeConfig is a Caddyfile whose handler keeps a file store (at path;
// "" for the default under Caddy's data directory). The config token
// config-a is allowed from 127.0.1.0/24, where the load clients send from;
// unlisted is the unlisted_tokens policy.
func storeConfig(path, unlisted string) func(admin, site string) string {
	return func(admin, site string) string {
		return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
}

http://%s {
	ip_allowlist {
		token_from header Authorization Bearer
		token sha256:%s {
			label config-a
			allow 127.0.1.0/24
		}
		store file %s
		unlisted_tokens %s
		missing_token deny
	}
	respond "hello, {http.ip_allowlist.token_label}" 200
}
`, admin, site, testkit.Digest(storeTok("config-a")), path, unlisted)
	}
}

// startStore runs storeConfig with a store file of its own in the test's
// temporary folder and unlisted tokens refused.
func startStore(t *testing.T) *testkit.Caddy {
	t.Helper()
	return testkit.StartCaddy(t, "Caddyfile", storeConfig(filepath.Join(t.TempDir(), "tokens.db"), "none"), testkit.Options{})
}

// routeError is the error a refused route call answers.
func routeError(t *testing.T, r testkit.Reply) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(r.Body), &e); err != nil || e.Error == "" {
		t.Fatalf("a refusal without {\"error\": ...}: %v", r)
	}
	return e.Error
}

// mustRoute makes a store route call that must answer want.
func mustRoute(t *testing.T, c *testkit.Caddy, want int, method, path, body string, header ...string) testkit.Reply {
	t.Helper()
	r := c.AdminCall(method, path, body, header...)
	if r.Status != want {
		t.Fatalf("%s %s: %v, want %d", method, path, r, want)
	}
	return r
}

// putToken creates label in the store for tok, allowed from allow.
func putToken(t *testing.T, c *testkit.Caddy, label, tok string, allow ...string) testkit.Reply {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"token": tok, "allow": allow})
	return mustRoute(t, c, http.StatusCreated, "PUT", "/ip-allowlist/tokens/"+label, string(body))
}

// answer is what the site answers tok from local: the status, and for a
// 200 the label the request was let through under.
func answer(c *testkit.Caddy, local, tok string) string {
	r := c.Do(testkit.Request{Local: local, Header: testkit.Bearer(tok)})
	if r.Status == http.StatusOK {
		return "200 " + strings.TrimPrefix(r.Body, "hello, ")
	}
	return fmt.Sprint(r.Status)
}

// TestStoreChangesUnderLoad makes 50 changes to one token through the
// store routes, a third of them bad, while 32 clients send requests on
// fresh connections: no client sees a transport error or a wrong answer,
// each good change decides the very next request, and each bad change is
// refused with a 4xx naming what is wrong and changes nothing.
func TestStoreChangesUnderLoad(t *testing.T) {
	const clients, changes = 32, 50
	c := startStore(t)
	putToken(t, c, "steady", storeTok("steady"), "127.0.1.0/24")
	tok := storeTok("cust")
	putToken(t, c, "cust", tok, "127.0.0.10")
	// The route's latency with no load, for comparison.
	putToken(t, c, "idle", storeTok("idle"), "127.0.0.9")
	var idle []time.Duration
	for n := range 20 {
		began := time.Now()
		mustRoute(t, c, 200, "POST", "/ip-allowlist/tokens/idle/allow", fmt.Sprintf(`{"entries": ["10.8.0.%d"]}`, n))
		idle = append(idle, time.Since(began))
	}

	// The load: each client sends from an address of its own, in turn the
	// config token, a store token no change touches (both allowed), an
	// unlisted token and none (both refused).
	type kind struct {
		tok  string
		want int
	}
	kinds := []kind{{storeTok("config-a"), 200}, {storeTok("steady"), 200}, {storeTok("unlisted"), 401}, {"", 401}}
	var (
		stop                             atomic.Bool
		sent, allowed, denied, transport atomic.Int64
		unexpected                       atomic.Int64
		firstProblem                     atomic.Value
		wg                               sync.WaitGroup
	)
	for i := range clients {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(i+1))}}).DialContext,
		}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; !stop.Load(); n++ {
				k := kinds[n%len(kinds)]
				req, _ := http.NewRequest(http.MethodGet, c.Site+"/", nil)
				if k.tok != "" {
					req.Header.Set("Authorization", "Bearer "+k.tok)
				}
				sent.Add(1)
				resp, err := client.Do(req)
				if err != nil {
					transport.Add(1)
					firstProblem.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode != k.want:
					unexpected.Add(1)
					firstProblem.CompareAndSwap(nil, fmt.Sprintf("token %q: %d, want %d", k.tok, resp.StatusCode, k.want))
				case k.want == 200:
					allowed.Add(1)
				default:
					denied.Add(1)
				}
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	// What cust's entry holds, as the test has changed it.
	allow := []string{"127.0.0.10"}
	suspended := false
	next := 11 // the next address to add: 127.0.0.<next>
	etag := func() string {
		t.Helper()
		return mustRoute(t, c, 200, "GET", "/ip-allowlist/tokens/cust", "").Header.Get("ETag")
	}
	want := func(addr string) string {
		if !suspended && slices.Contains(allow, addr) {
			return "200 cust"
		}
		return "401"
	}
	// probe makes the first request after a change, from addr, whose
	// answer shows the change took effect (or, after a bad one, did not).
	probe := func(step, addr string) {
		t.Helper()
		if got, w := answer(c, addr, tok), want(addr); got != w {
			t.Fatalf("%s: the next request, from %s, got %s, want %s", step, addr, got, w)
		}
	}
	// probeAll checks every address the token has been allowed from.
	probeAll := func(step string) {
		t.Helper()
		for i := 10; i < next; i++ {
			a := fmt.Sprintf("127.0.0.%d", i)
			if got, w := answer(c, a, tok), want(a); got != w {
				t.Errorf("%s: from %s got %s, want %s", step, a, got, w)
			}
		}
	}

	// A bad change: what it sends, and the status and the texts its error
	// must have: the entry the call is about, and what is wrong.
	type bad struct {
		name, method, path, body string
		header                   []string
		status                   int
		names                    []string
	}
	bads := func(n int) bad {
		cur := etag()
		addr := fmt.Sprintf("127.0.0.%d", next)
		switch n % 7 {
		case 0:
			return bad{"unknown field", "PUT", "/ip-allowlist/tokens/cust", `{"token_sha256": "` + testkit.Digest(tok) + `", "alow": ["` + addr + `"]}`, nil, 400, []string{`token "cust"`, `unknown field "alow"`}}
		case 1:
			return bad{"bad range", "POST", "/ip-allowlist/tokens/cust/allow", `{"entries": ["` + addr + `/8"]}`, nil, 400, []string{`token "cust"`, `"` + addr + `/8"`}}
		case 2:
			return bad{"config label", "PUT", "/ip-allowlist/tokens/config-a", `{"token": "` + storeTok("other") + `", "allow": ["` + addr + `"]}`, nil, 409, []string{`token "config-a"`, "listed in tokens"}}
		case 3:
			return bad{"digest under another label", "PUT", "/ip-allowlist/tokens/cust-copy", `{"token_sha256": "` + testkit.Digest(tok) + `", "allow": ["` + addr + `"]}`, nil, 409, []string{`token "cust-copy"`, `same token as "cust"`}}
		case 4:
			stale := fmt.Sprintf(`"%d"`, mustAtoi(t, strings.Trim(cur, `"`))-1)
			return bad{"stale If-Match", "PUT", "/ip-allowlist/tokens/cust", `{"token_sha256": "` + testkit.Digest(tok) + `", "allow": ["` + addr + `"]}`, []string{"If-Match", stale}, 412, []string{`"cust"`, "precondition failed"}}
		case 5:
			return bad{"unknown entry removed", "DELETE", "/ip-allowlist/tokens/cust/allow/" + url.PathEscape(addr), "", nil, 404, []string{`token "cust"`, `no allow entry "` + addr + `"`}}
		default:
			return bad{"bad ttl", "POST", "/ip-allowlist/tokens/cust/allow", `{"entries": ["` + addr + `"], "ttl": "-5s"}`, nil, 400, []string{`token "cust"`, `ttl "-5s"`}}
		}
	}

	counts := map[string]int{}
	var good, refused int
	var latencies []time.Duration
	call := func(method, path, body string, header ...string) testkit.Reply {
		t.Helper()
		began := time.Now()
		r := c.AdminCall(method, path, body, header...)
		latencies = append(latencies, time.Since(began))
		return r
	}
	for i := 1; i <= changes; i++ {
		if i%3 == 0 {
			b := bads(refused)
			before := etag()
			addr := fmt.Sprintf("127.0.0.%d", next)
			r := call(b.method, b.path, b.body, b.header...)
			if r.Status != b.status {
				t.Fatalf("change %d, bad (%s): %v, want %d", i, b.name, r, b.status)
			}
			for _, n := range b.names {
				if e := routeError(t, r); !strings.Contains(e, n) {
					t.Errorf("change %d, bad (%s): error %q does not say %s", i, b.name, e, n)
				}
			}
			probe(fmt.Sprintf("after bad change %d (%s)", i, b.name), addr)
			if after := etag(); after != before {
				t.Errorf("change %d, bad (%s): the entry's ETag went from %s to %s", i, b.name, before, after)
			}
			for _, other := range []string{"config-a", "cust-copy"} {
				if r := c.AdminCall("GET", "/ip-allowlist/tokens/"+other, ""); r.Status != 404 {
					t.Errorf("change %d, bad (%s): the store has %s: %v", i, b.name, other, r)
				}
			}
			if counts["bad: "+b.name] == 0 {
				t.Logf("bad change %d (%s): %d %s", i, b.name, r.Status, routeError(t, r))
			}
			refused++
			counts["bad: "+b.name]++
			continue
		}
		var step, addr string
		switch g := good % 5; {
		case suspended:
			call("POST", "/ip-allowlist/tokens/cust/resume", "")
			suspended, step, addr = false, "resume", allow[0]
		case g == 0 || g == 1 || len(allow) < 2:
			addr = fmt.Sprintf("127.0.0.%d", next)
			next++
			mustStatus(t, call("POST", "/ip-allowlist/tokens/cust/allow", `{"entries": ["`+addr+`"], "note": "change `+fmt.Sprint(i)+`"}`), 200)
			allow, step = append(allow, addr), "add"
		case g == 2:
			addr = allow[0]
			mustStatus(t, call("DELETE", "/ip-allowlist/tokens/cust/allow/"+url.PathEscape(addr), ""), 200)
			allow, step = allow[1:], "remove"
		case g == 3:
			// Replace the whole entry: the newest address only, and a new one.
			addr = fmt.Sprintf("127.0.0.%d", next)
			next++
			gone := allow[0]
			allow = []string{allow[len(allow)-1], addr}
			body, _ := json.Marshal(map[string]any{"token_sha256": testkit.Digest(tok), "allow": allow})
			mustStatus(t, call("PUT", "/ip-allowlist/tokens/cust", string(body), "If-Match", etag()), 200)
			step = "replace"
			if got := answer(c, addr, tok); got != "200 cust" {
				t.Fatalf("change %d (replace): the next request, from the new %s, got %s", i, addr, got)
			}
			addr = gone // and the address it dropped is refused
		default:
			mustStatus(t, call("POST", "/ip-allowlist/tokens/cust/suspend", ""), 200)
			suspended, step, addr = true, "suspend", allow[0]
		}
		probe(fmt.Sprintf("after good change %d (%s)", i, step), addr)
		if i%10 == 0 {
			probeAll(fmt.Sprintf("after change %d", i))
		}
		good++
		counts["good: "+step]++
	}
	probeAll("after the last change")
	stop.Store(true)
	wg.Wait()

	slices.Sort(latencies)
	slices.Sort(idle)
	summary := make([]string, 0, len(counts))
	for k, n := range counts {
		summary = append(summary, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(summary)
	t.Logf("store changes under load: %d clients on fresh connections, %d changes (%d good applied, %d bad refused: %s); route call latency median %v, max %v (with no load: %v, %v); %d requests: %d allowed, %d denied, %d transport errors, %d unexpected statuses",
		clients, changes, good, refused, strings.Join(summary, ", "), latencies[len(latencies)/2].Round(10*time.Microsecond), latencies[len(latencies)-1].Round(10*time.Microsecond),
		idle[len(idle)/2].Round(10*time.Microsecond), idle[len(idle)-1].Round(10*time.Microsecond),
		sent.Load(), allowed.Load(), denied.Load(), transport.Load(), unexpected.Load())
	if transport.Load() != 0 || unexpected.Load() != 0 {
		t.Errorf("first problem: %v", firstProblem.Load())
	}
	if allowed.Load() == 0 || denied.Load() == 0 {
		t.Error("the clients did not exercise both answers")
	}
	if good+refused != changes || refused < changes/3 {
		t.Errorf("%d good and %d bad changes", good, refused)
	}
}

func mustStatus(t *testing.T, r testkit.Reply, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%v, want %d", r, want)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// TestStoreSurvivesKill9 makes changes through the routes, some while
// Caddy is killed with SIGKILL, and restarts Caddy on the same store file
// (the default one, in the data directory of a shared HOME): every change
// acknowledged before the kill is kept, and decides requests.
func TestStoreSurvivesKill9(t *testing.T) {
	home := t.TempDir()
	opt := testkit.Options{Env: []string{"HOME=" + home, "XDG_DATA_HOME=" + home, "XDG_CONFIG_HOME=" + home}}
	c := testkit.StartCaddy(t, "Caddyfile", storeConfig("", "none"), opt)

	putToken(t, c, "kept", storeTok("kept"), "127.0.0.20")
	mustRoute(t, c, 200, "POST", "/ip-allowlist/tokens/kept/allow", `{"entries": ["127.0.0.21", "127.0.0.22"]}`)
	mustRoute(t, c, 200, "DELETE", "/ip-allowlist/tokens/kept/allow/127.0.0.20", "")
	putToken(t, c, "paused", storeTok("paused"), "127.0.0.23")
	mustRoute(t, c, 200, "POST", "/ip-allowlist/tokens/paused/suspend", "")
	putToken(t, c, "gone", storeTok("gone"), "127.0.0.24")
	mustRoute(t, c, 204, "DELETE", "/ip-allowlist/tokens/gone", "")
	putToken(t, c, "busy", storeTok("busy"), "127.0.0.25")

	// Add More to busy, one entry a call, until Caddy is killed mid-run.
	var acked atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		for n := 1; ; n++ {
			body := fmt.Sprintf(`{"entries": ["10.77.%d.%d"]}`, n>>8, n&0xff)
			resp, err := client.Post(c.Admin+"/ip-allowlist/tokens/busy/allow", "application/json", strings.NewReader(body))
			if err != nil {
				return // killed
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return
			}
			acked.Store(int64(n))
		}
	}()
	testkit.Eventually(t, "100 changes acknowledged", 30*time.Second, func() bool { return acked.Load() >= 100 })
	want := map[string]string{"127.0.0.20": "401", "127.0.0.21": "200 kept", "127.0.0.22": "200 kept", "127.0.0.23": "401", "127.0.0.24": "401", "127.0.0.25": "200 busy"}
	toks := map[string]string{"127.0.0.20": "kept", "127.0.0.21": "kept", "127.0.0.22": "kept", "127.0.0.23": "paused", "127.0.0.24": "gone", "127.0.0.25": "busy"}
	check := func(when string, c *testkit.Caddy) {
		t.Helper()
		for addr, w := range want {
			if got := answer(c, addr, storeTok(toks[addr])); got != w {
				t.Errorf("%s: %s from %s got %s, want %s", when, toks[addr], addr, got, w)
			}
		}
	}
	check("before the kill", c)
	etags := map[string]string{}
	for _, label := range []string{"kept", "paused", "gone"} {
		etags[label] = mustRoute(t, c, 200, "GET", "/ip-allowlist/tokens/"+label, "").Header.Get("ETag")
	}

	if err := syscall.Kill(c.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	testkit.Eventually(t, "Caddy to exit on SIGKILL", 5*time.Second, func() bool { return !c.Running() })
	ackedBeforeKill := int(acked.Load())

	c2 := testkit.StartCaddy(t, "Caddyfile", storeConfig("", "none"), opt)
	check("after kill -9 and a restart", c2)
	for label, e := range etags {
		if got := mustRoute(t, c2, 200, "GET", "/ip-allowlist/tokens/"+label, "").Header.Get("ETag"); got != e {
			t.Errorf("%s after the restart: ETag %s, was %s", label, got, e)
		}
	}
	var busy struct{ Allow []string }
	if err := json.Unmarshal([]byte(mustRoute(t, c2, 200, "GET", "/ip-allowlist/tokens/busy", "").Body), &busy); err != nil {
		t.Fatal(err)
	}
	kept := len(busy.Allow) - 1 // less 127.0.0.25
	for n := 1; n <= ackedBeforeKill; n++ {
		if e := fmt.Sprintf("10.77.%d.%d", n>>8, n&0xff); !slices.Contains(busy.Allow, e) {
			t.Errorf("the acknowledged change %d (add %s) was lost by kill -9", n, e)
		}
	}
	if kept > ackedBeforeKill+1 {
		t.Errorf("busy has %d added entries after the restart; %d were acknowledged and one more may have been in flight", kept, ackedBeforeKill)
	}
	file := filepath.Join(home, "caddy", "ip-allowlist", "tokens.db")
	if fi, err := os.Stat(file); err != nil {
		t.Errorf("the default store file: %v", err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("the default store file %s: mode %v, want 0600", file, fi.Mode().Perm())
	}
	t.Logf("kill -9 after %d acknowledged Add More calls; after the restart busy has %d added entries, kept, paused and gone as they were", ackedBeforeKill, kept)
}

// TestStoreEntryTTL adds an entry with ttl 2s: its address is allowed
// until the entry expires, and refused within 3 s after.
func TestStoreEntryTTL(t *testing.T) {
	c := startStore(t)
	tok := storeTok("ttl")
	putToken(t, c, "cust", tok, "127.0.0.30")
	added := time.Now()
	r := mustRoute(t, c, 200, "POST", "/ip-allowlist/tokens/cust/allow", `{"entries": ["127.0.0.31"], "ttl": "2s"}`)
	var e struct{ Expires map[string]time.Time }
	if err := json.Unmarshal([]byte(r.Body), &e); err != nil || e.Expires["127.0.0.31"].IsZero() {
		t.Fatalf("the entry's expiry: %v %v", err, r)
	}
	expires := e.Expires["127.0.0.31"]
	if d := expires.Sub(added); d < 2*time.Second || d > 3*time.Second+time.Second/2 {
		t.Errorf("ttl 2s expires %v after the call", d)
	}
	if got := answer(c, "127.0.0.31", tok); got != "200 cust" {
		t.Fatalf("right after the add: %s", got)
	}
	// Until the expiry the address is allowed; then refused, soon.
	var refusedAt time.Time
	allowedRequests := 0
	for deadline := expires.Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sentAt := time.Now()
		got := answer(c, "127.0.0.31", tok)
		if got == "401" {
			refusedAt = sentAt
			break
		}
		if got != "200 cust" {
			t.Fatalf("before the expiry: %s", got)
		}
		allowedRequests++
	}
	if refusedAt.IsZero() {
		t.Fatalf("still allowed 3 s after the entry expired at %v", expires.Format(time.RFC3339))
	}
	if refusedAt.Before(expires) {
		t.Errorf("refused %v before the entry's expiry", expires.Sub(refusedAt))
	}
	if got := answer(c, "127.0.0.30", tok); got != "200 cust" {
		t.Errorf("the permanent entry after the expiry: %s", got)
	}
	if out := c.WaitOutput(func(o string) bool { return strings.Contains(o, "token entry expired") }); !strings.Contains(out, "token entry expired") {
		t.Error("no token entry expired line")
	}
	r = mustRoute(t, c, 200, "GET", "/ip-allowlist/tokens/cust", "")
	t.Logf("ttl 2s: added at +0, expires at +%.2fs; %d requests allowed, first refused at +%.2fs, %.2fs after the expiry; entry now %s",
		expires.Sub(added).Seconds(), allowedRequests, refusedAt.Sub(added).Seconds(), refusedAt.Sub(expires).Seconds(), strings.TrimSpace(r.Body))
}

// TestStoreDeleteRevokesUnrestrictUnlists: with an unlisted policy that
// allows unlisted tokens from 127.0.0.40, DELETE revokes a store token (it
// is refused everywhere, there too, with reason token_revoked), and DELETE
// ?unrestrict=true removes it, so the unlisted policy decides.
func TestStoreDeleteRevokesUnrestrictUnlists(t *testing.T) {
	c := testkit.StartCaddy(t, "Caddyfile", storeConfig(filepath.Join(t.TempDir(), "tokens.db"), "127.0.0.40"), testkit.Options{})
	tok := storeTok("revoke")
	putToken(t, c, "cust", tok, "127.0.0.41")
	for addr, want := range map[string]string{"127.0.0.41": "200 cust", "127.0.0.40": "401", "127.0.0.42": "401"} {
		if got := answer(c, addr, tok); got != want {
			t.Errorf("listed, from %s: %s, want %s", addr, got, want)
		}
	}
	if got := answer(c, "127.0.0.40", storeTok("never-listed")); got != "200 " {
		t.Fatalf("an unlisted token from 127.0.0.40: %s; the unlisted policy should allow it", got)
	}

	mustRoute(t, c, 204, "DELETE", "/ip-allowlist/tokens/cust", "")
	for _, addr := range []string{"127.0.0.41", "127.0.0.40", "127.0.0.42"} {
		if got := answer(c, addr, tok); got != "401" {
			t.Errorf("revoked, from %s: %s, want 401", addr, got)
		}
	}
	out := c.WaitOutput(func(o string) bool { return strings.Count(o, `"reason":"token_revoked"`) >= 3 })
	if n := strings.Count(out, `"reason":"token_revoked"`); n < 3 {
		t.Errorf("%d denials logged with reason token_revoked, want 3", n)
	}
	var e struct{ Revoked bool }
	if err := json.Unmarshal([]byte(mustRoute(t, c, 200, "GET", "/ip-allowlist/tokens/cust", "").Body), &e); err != nil || !e.Revoked {
		t.Errorf("GET after DELETE: %v, revoked %v", err, e.Revoked)
	}

	mustRoute(t, c, 204, "DELETE", "/ip-allowlist/tokens/cust?unrestrict=true", "")
	for addr, want := range map[string]string{"127.0.0.40": "200 ", "127.0.0.41": "401", "127.0.0.42": "401"} {
		if got := answer(c, addr, tok); got != want {
			t.Errorf("unrestricted, from %s: %s, want %s (the unlisted policy's answer)", addr, got, want)
		}
	}
	mustRoute(t, c, 404, "GET", "/ip-allowlist/tokens/cust", "")
	out = c.WaitOutput(func(o string) bool { return strings.Contains(o, "token unrestricted") })
	if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		return strings.Contains(l, `"level":"warn"`) && strings.Contains(l, "token unrestricted") && strings.Contains(l, `"token_label":"cust"`)
	}) {
		t.Error("no WARN line for the unrestrict")
	}
}

// TestStoreRoutesAndCLIRefuseDigestUnderSecondLabel: the routes and the CLI refuse a token
// already stored under one label under a second, by literal token or by
// digest, also once the first is revoked (409, naming the first label),
// and the first label keeps working.
func TestStoreRoutesAndCLIRefuseDigestUnderSecondLabel(t *testing.T) {
	c := startStore(t)
	tok := storeTok("first")
	putToken(t, c, "first", tok, "127.0.0.50")
	for _, tt := range []struct{ name, body string }{
		{"literal token", `{"token": "` + tok + `", "allow": ["127.0.0.51"]}`},
		{"digest", `{"token_sha256": "` + testkit.Digest(tok) + `", "allow": ["127.0.0.51"]}`},
		{"digest, in upper case", `{"token_sha256": "` + strings.ToUpper(testkit.Digest(tok)) + `", "allow": ["127.0.0.51"]}`},
		{"config token", `{"token": "` + storeTok("config-a") + `", "allow": ["127.0.0.51"]}`},
	} {
		first := "first"
		if tt.name == "config token" {
			first = "config-a"
		}
		r := c.AdminCall("PUT", "/ip-allowlist/tokens/second", tt.body)
		if r.Status != http.StatusConflict || !strings.Contains(routeError(t, r), `"`+first+`"`) {
			t.Errorf("%s under a second label: %v, want 409 naming %q", tt.name, r, first)
		}
		mustRoute(t, c, 404, "GET", "/ip-allowlist/tokens/second", "")
		if got := answer(c, "127.0.0.50", tok); got != "200 first" {
			t.Errorf("after the refused %s, first from its address: %s", tt.name, got)
		}
		if got := answer(c, "127.0.0.51", tok); got != "401" {
			t.Errorf("after the refused %s, from the second label's address: %s", tt.name, got)
		}
	}
	// The CLI, against the same Caddy through its admin address, refuses
	// the same, and names the first label.
	admin := strings.TrimPrefix(c.Admin, "http://")
	for _, args := range [][]string{
		{"--token-sha256", testkit.Digest(tok)},
		{"--token-file", "-"},
	} {
		cmd := exec.Command(testkit.CaddyBin(t), append([]string{"ip-allowlist", "tokens", "put", "second", "--admin", admin, "--allow", "127.0.0.51"}, args...)...)
		cmd.Stdin = strings.NewReader(tok + "\n")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `"first"`) || strings.Contains(string(out), tok) {
			t.Errorf("tokens put %v under a second label: %v\n%s\nwant a failure naming \"first\", without the token", args[0], err, out)
		}
		mustRoute(t, c, 404, "GET", "/ip-allowlist/tokens/second", "")
		if got := answer(c, "127.0.0.50", tok); got != "200 first" {
			t.Errorf("after the CLI's refused put, first from its address: %s", got)
		}
	}
	// Revoked, the digest stays bound to its label.
	mustRoute(t, c, 204, "DELETE", "/ip-allowlist/tokens/first", "")
	r := c.AdminCall("PUT", "/ip-allowlist/tokens/second", `{"token": "`+tok+`", "allow": ["127.0.0.51"]}`)
	if r.Status != http.StatusConflict || !strings.Contains(routeError(t, r), `"first"`) {
		t.Errorf("a revoked label's token under a second label: %v, want 409 naming \"first\"", r)
	}
	if got := answer(c, "127.0.0.51", tok); got != "401" {
		t.Errorf("the revoked token from the second label's address: %s", got)
	}
}
