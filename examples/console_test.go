package examples

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/miekg/dns"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The console (ip_allowlist_console) in a real Chromium, driven through
// chromedp, against the real Caddy binary serving examples/Caddyfile: each
// check acts in the pages as a person would (clicks, typing, keyboard
// only where it says so), and checks the effect with real API requests to
// the same Caddy, from the addresses they are about.

// The console's logins in examples/Caddyfile.
const (
	consoleOperator   = "admin"
	consoleOperatorPW = "demo-console-password"
	consoleOwner      = "acme"
	consoleOwnerPW    = "demo-customer-password"
)

// browserAddr is where the browser's requests come from: Chromium cannot
// bind an address of its own, so it sends them through a proxy
// (testkit.SourceProxy) that connects to Caddy from this address. Caddy
// then sees the browser as this client, not as 127.0.0.1, which is the
// harness's default address and the example's trusted proxy.
const browserAddr = "127.0.0.77"

// consoleTok is a store token of these tests.
func consoleTok(label string) string { return "console-test-" + label + "-4f2a9c" }

// basicAuth is the Authorization header pair of a login.
func basicAuth(user, pass string) []string {
	return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

// exampleVariant is examples/Caddyfile with each edit's old text (which
// must be there, once) replaced by its new, its store file in dir, and
// free addresses, as a config for testkit.StartCaddy.
func exampleVariant(t *testing.T, dir string, edits ...string) func(admin, site string) string {
	t.Helper()
	raw, err := os.ReadFile("Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	edits = append(edits, "\t\tstore file\n", "\t\tstore file "+filepath.Join(dir, "tokens.db")+"\n")
	for i := 0; i+1 < len(edits); i += 2 {
		if n := strings.Count(cfg, edits[i]); n != 1 {
			t.Fatalf("examples/Caddyfile has %q %d times, want once", edits[i], n)
		}
		cfg = strings.Replace(cfg, edits[i], edits[i+1], 1)
	}
	return func(admin, site string) string {
		c := strings.ReplaceAll(cfg, "127.0.0.1:2019", admin)
		return strings.ReplaceAll(c, "127.0.0.1:8080", site)
	}
}

// startConsoleExample runs exampleVariant(edits) from the repository's
// root, with the example's environment.
func startConsoleExample(t *testing.T, edits ...string) *testkit.Caddy {
	t.Helper()
	return testkit.StartCaddy(t, "Caddyfile", exampleVariant(t, t.TempDir(), edits...),
		inRepo("PARTNER_A_TOKEN="+tokPartnerA, "PARTNER_B_TOKEN="+tokPartnerB))
}

// The example's basic_auth block, which the variants without a login
// remove.
const exampleBasicAuth = "\t\tbasic_auth {\n" +
	"\t\t\tadmin $2a$14$kOmQsAx90IP7lcTkulkilOXdXz.plWVa2Tnm/roaWeN70JdpD11pW\n" +
	"\t\t\tacme $2a$14$nfjWFlDJ2PCzNSIuOwb/l.DtWM8PGVx3diNL.UfCDFf6KsyisT8hy\n" +
	"\t\t}\n"

// startChromium starts one headless Chromium for a test, its requests
// relayed by proxy (testkit.SourceProxy; "" for none), and returns its
// allocator context. Without chromium installed the test fails.
func startChromium(t *testing.T, proxy string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(testkit.Chromium(t)),
		chromedp.WindowSize(1100, 900),
		// No update checks: they would go to the proxy, which cannot
		// reach them.
		chromedp.Flag("disable-component-update", true),
	)
	if proxy != "" {
		// <-loopback> takes back the rule that sends requests to loopback
		// addresses around the proxy.
		opts = append(opts, chromedp.ProxyServer("http://"+proxy), chromedp.Flag("proxy-bypass-list", "<-loopback>"))
	}
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium's sandbox does not run as root
	}
	ctx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	return ctx
}

// tab is one browser tab. Logged in as user, it answers the server's
// basic-auth challenges (the Fetch domain's authRequired: what a person
// typing into the browser's login dialog does) with user's password; the
// browser then keeps the login for the origin, as it would. It records
// every console error, uncaught exception and CSP violation of the pages
// it shows.
type tab struct {
	t          *testing.T
	ctx        context.Context
	user, pass string

	mu         sync.Mutex
	challenges []string // the URLs whose challenge the tab answered
	problems   []string
}

// newTab opens a tab in the browser of parent: an allocator context, or
// another tab's context for a tab in the same browser context (with the
// same logins kept) unless opts give it one of its own.
func newTab(t *testing.T, parent context.Context, user, pass string, opts ...chromedp.ContextOption) *tab {
	t.Helper()
	tb := &tab{t: t, user: user, pass: pass}
	ctx, cancel := chromedp.NewContext(parent, append(opts, chromedp.WithListener(tb.listen))...)
	t.Cleanup(cancel)
	tb.ctx = ctx
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	// The page's own event reports a CSP violation even where the
	// browser would log none.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `document.addEventListener('securitypolicyviolation', e => console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI + ' at ' + e.sourceFile + ':' + e.lineNumber));`,
	}); err != nil {
		t.Fatal(err)
	}
	if user != "" {
		tb.answerChallenges()
	}
	return tb
}

// answerChallenges pauses the tab's requests (the Fetch domain), lets each
// go on, and answers each basic-auth challenge of the server with the
// tab's login.
func (tb *tab) answerChallenges() {
	paused := chromedp.Events(tb.ctx, fetch.RequestPaused)
	auth := chromedp.Events(tb.ctx, fetch.AuthRequired)
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			chromedp.Call(tb.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	go func() {
		for ev, err := range auth {
			if err != nil {
				return
			}
			tb.mu.Lock()
			tb.challenges = append(tb.challenges, ev.Request.URL)
			n := len(tb.challenges)
			tb.mu.Unlock()
			answer := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
			// Not a proxy's, and not forever: a refused password would
			// be asked for again and again.
			if ev.AuthChallenge.Source != fetch.AuthChallengeSourceProxy && n <= 20 {
				answer = &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: tb.user, Password: tb.pass}
			}
			chromedp.Call(tb.ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: answer})
		}
	}()
	if _, err := chromedp.Call(tb.ctx, fetch.Enable, fetch.EnableParams{
		Patterns:           []*fetch.RequestPattern{{URLPattern: "*"}},
		HandleAuthRequests: new(true),
	}); err != nil {
		tb.t.Fatal(err)
	}
}

// listen runs in the tab's event loop, so it only records.
func (tb *tab) listen(ev any) {
	var problem string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		problem = fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, d.Text)
		if d.Exception != nil {
			problem += " " + d.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var args []string
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		problem = "console.error: " + strings.Join(args, " ")
	case *log.EventEntryAdded:
		// The network's entries are the deliberate 4xx answers' "Failed
		// to load resource"; any other error counts.
		if ev.Entry.Level != log.EntryLevelError || ev.Entry.Source == log.EntrySourceNetwork {
			return
		}
		problem = fmt.Sprintf("%s error at %s: %s", ev.Entry.Source, ev.Entry.URL, ev.Entry.Text)
	default:
		return
	}
	tb.mu.Lock()
	tb.problems = append(tb.problems, problem)
	tb.mu.Unlock()
}

// takeProblems returns the problems recorded since the last call.
func (tb *tab) takeProblems() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	p := tb.problems
	tb.problems = nil
	return p
}

// noProblems fails t for each problem recorded since the last call.
func (tb *tab) noProblems(t *testing.T) {
	t.Helper()
	for _, p := range tb.takeProblems() {
		t.Errorf("in the %s tab: %s", tb.user, p)
	}
}

// answered is the URLs whose challenge the tab answered so far.
func (tb *tab) answered() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.challenges)
}

// do runs steps, failing t (the test or a subtest) on an error.
func (tb *tab) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval is the value of a JavaScript expression in tb's page.
func eval[T any](t *testing.T, tb *tab, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// text is the text of the element that a CSS selector selects, "" if none.
func (tb *tab) text(t *testing.T, sel string) string {
	t.Helper()
	b, _ := json.Marshal(sel)
	return eval[string](t, tb, `(document.querySelector(`+string(b)+`) || {textContent: ''}).textContent`)
}

// waitFor waits until the page has rendered every answer (main#app
// [data-loaded="true"]) and cond, a JavaScript expression, is true; what
// names it for the failure, which shows the page's text.
func (tb *tab) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	js := `document.querySelector('main#app[data-loaded="true"]') !== null && !!(` + cond + `)`
	ctx, cancel := context.WithTimeout(tb.ctx, 15*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		body, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s: %v\nthe page:\n%s", what, err, body)
	}
}

// open loads ROOT plus hash in tb as a new page (a query of its own makes
// it one, not a move within the page) and waits for it to render.
func (tb *tab) open(t *testing.T, site, hash string) {
	t.Helper()
	tb.do(t, "opening "+hash, chromedp.Navigate(fmt.Sprintf("%s/console/?load=%d%s", site, time.Now().UnixNano(), hash)))
	if label, ok := strings.CutPrefix(hash, "#/token/"); ok {
		label, _ = url.PathUnescape(label)
		tb.waitFor(t, "the page of "+label, `document.querySelector('#token-label') && document.querySelector('#token-label').textContent === `+jsString(label))
		return
	}
	tb.waitFor(t, "the token list", `document.querySelector('#token-list')`)
}

// press types keys (text, or keys of package kb such as kb.Tab) into
// whatever has the focus, each key as a person's keyboard sends it: one
// keyDown that carries the key's text, so that a keydown handler's
// preventDefault cancels what the key does (chromedp.KeyEvent sends the
// text as a separate char event, which nothing can cancel), then keyUp.
// shift holds Shift down throughout.
func (tb *tab) press(t *testing.T, keys string, shift bool) {
	t.Helper()
	for _, r := range keys {
		k, ok := kb.Keys[r]
		if !ok {
			t.Fatalf("no key types %q", r)
		}
		down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeRawKeyDown, Key: k.Key, Code: k.Code,
			WindowsVirtualKeyCode: k.Windows, NativeVirtualKeyCode: k.Native}
		if shift || k.Shift {
			down.Modifiers = int64(chromedp.ModifierShift)
		}
		if k.Print {
			down.Type, down.Text, down.UnmodifiedText = input.DispatchKeyEventTypeKeyDown, k.Text, k.Unmodified
		}
		up := down
		up.Type, up.Text, up.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
		for _, ev := range []input.DispatchKeyEventParams{down, up} {
			if _, err := chromedp.Call(tb.ctx, input.DispatchKeyEvent, ev); err != nil {
				t.Fatalf("pressing %q: %v", r, err)
			}
		}
	}
}

// tabTo presses Tab (Shift+Tab if back) until the focused element
// satisfies cond, a JavaScript expression about document.activeElement (a),
// and fails after 40 presses.
func (tb *tab) tabTo(t *testing.T, what, cond string, back bool) {
	t.Helper()
	js := `(a => !!a && !!(` + cond + `))(document.activeElement)`
	for range 40 {
		tb.press(t, kb.Tab, back)
		if eval[bool](t, tb, js) {
			return
		}
	}
	t.Fatalf("40 Tab presses did not reach %s; the focus is on %s", what,
		eval[string](t, tb, `document.activeElement ? document.activeElement.outerHTML.slice(0, 200) : 'nothing'`))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// entryRow is the JavaScript expression of an entry's row on a token page.
func entryRow(entry string) string {
	return `document.querySelector('#entries tr[data-entry=' + CSS.escape(` + jsString(entry) + `) + ']')`
}

// entries is the entries table of the token page, in order.
func (tb *tab) entries(t *testing.T) []string {
	t.Helper()
	return eval[[]string](t, tb, `[...document.querySelectorAll('#entries tr[data-entry]')].map(r => r.dataset.entry)`)
}

// storeEntry is a store entry as the admin route answers it, with its ETag.
type storeEntry struct {
	Allow       []string          `json:"allow"`
	Notes       map[string]string `json:"notes"`
	Owner       string            `json:"owner"`
	Suspended   bool              `json:"suspended"`
	TokenSHA256 string            `json:"token_sha256"`
	etag, raw   string
}

func getEntry(t *testing.T, c *testkit.Caddy, label string) storeEntry {
	t.Helper()
	r := mustRoute(t, c, 200, "GET", "/ip-allowlist/tokens/"+url.PathEscape(label), "")
	var e storeEntry
	if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
		t.Fatalf("GET %s: %v: %s", label, err, r.Body)
	}
	e.etag, e.raw = r.Header.Get("ETag"), r.Body
	return e
}

// putEntry creates a store entry through the admin route.
func putEntry(t *testing.T, c *testkit.Caddy, label string, body map[string]any) {
	t.Helper()
	body["token"] = consoleTok(label)
	b, _ := json.Marshal(body)
	mustRoute(t, c, http.StatusCreated, "PUT", "/ip-allowlist/tokens/"+label, string(b))
}

// wantAnswer fails t unless the API answers tok from local with want
// ("200 <label>" or the status).
func wantAnswer(t *testing.T, c *testkit.Caddy, local, tok, want, when string) {
	t.Helper()
	if got := answer(c, local, tok); got != want {
		t.Fatalf("%s: the API request from %s got %s, want %s", when, local, got, want)
	}
}

// accessEntry is one line of Caddy's access log.
type accessEntry struct {
	Msg     string `json:"msg"`
	Status  int    `json:"status"`
	UserID  string `json:"user_id"`
	Request struct {
		Method  string              `json:"method"`
		URI     string              `json:"uri"`
		Headers map[string][]string `json:"headers"`
	} `json:"request"`
}

// accessLog is every request Caddy's access log holds whose URI
// contains part.
func accessLog(c *testkit.Caddy, part string) []accessEntry {
	var out []accessEntry
	for _, line := range strings.Split(c.Output(), "\n") {
		var e accessEntry
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "handled request" && strings.Contains(e.Request.URI, part) {
			out = append(out, e)
		}
	}
	return out
}

// TestConsole runs one Caddy (examples/Caddyfile, a store of its own) and
// one Chromium for the console's checks, in order; each check uses tokens
// and client addresses of its own.
func TestConsole(t *testing.T) {
	testkit.CaddyBin(t)
	testkit.Chromium(t)
	began := time.Now()
	c := startConsoleExample(t)
	alloc := startChromium(t, testkit.SourceProxy(t, browserAddr))
	op := newTab(t, alloc, consoleOperator, consoleOperatorPW)

	putEntry(t, c, "shop-add", map[string]any{"allow": []string{"203.0.113.10"}, "note": "storefront"})
	putEntry(t, c, "shop-keys", map[string]any{"allow": []string{"203.0.113.11"}})
	putEntry(t, c, "shop-myip", map[string]any{"allow": []string{"203.0.113.12"}})
	putEntry(t, c, "shop-seen", map[string]any{"allow": []string{"127.0.0.24/30", "127.0.0.23"}})
	putEntry(t, c, "shop-pause", map[string]any{"allow": []string{"127.0.0.26"}})
	putEntry(t, c, "shop-bad", map[string]any{"allow": []string{"203.0.113.13"}})
	putEntry(t, c, "shop-csrf", map[string]any{"allow": []string{"127.0.0.30"}})
	putEntry(t, c, "acme-api", map[string]any{"allow": []string{"198.51.100.7"}, "owner": consoleOwner, "note": "acme's API"})
	putEntry(t, c, "acme-batch", map[string]any{"allow": []string{"198.51.100.8"}, "owner": consoleOwner})
	putEntry(t, c, "globex-api", map[string]any{"allow": []string{"127.0.0.31"}, "owner": "globex"})

	if !t.Run("log in", func(t *testing.T) {
		// basic_auth answers the page 401 with a challenge; the tab gives
		// the login, as a person would in the browser's dialog, and the
		// browser sends it again with the page's own requests: one
		// challenge answered in all.
		op.open(t, c.Site, "")
		if got := op.answered(); len(got) != 1 || !strings.HasSuffix(strings.Split(got[0], "?")[0], "/console/") {
			t.Errorf("basic-auth challenges answered: %q; want one, the page's", got)
		}
		if got, want := op.text(t, "#whoami"), "admin · operator · store default"; got != want {
			t.Errorf("#whoami %q, want %q", got, want)
		}
		rows := eval[[]string](t, op, `[...document.querySelectorAll('#token-list tr[data-label]')].map(r => r.dataset.label + ' ' + r.dataset.source)`)
		for _, want := range []string{"acme-api store", "globex-api store", "partner-a config", "mobile-backend config"} {
			if !slices.Contains(rows, want) {
				t.Errorf("the token list %q lacks %q", rows, want)
			}
		}
		op.noProblems(t)
	}) {
		t.FailNow()
	}

	t.Run("add an entry, then remove it", func(t *testing.T) {
		tok := consoleTok("shop-add")
		wantAnswer(t, c, "127.0.0.21", tok, "401", "before")
		op.open(t, c.Site, "")
		op.do(t, "opening the token from the list", chromedp.Click(chromedp.CSS(`#token-list tr[data-label="shop-add"] a.token-link`)))
		op.waitFor(t, "the token page", `document.querySelector('#token-label') && document.querySelector('#token-label').textContent === 'shop-add'`)
		op.do(t, "filling the Add form",
			chromedp.SendKeys(chromedp.ID("add-entries"), "127.0.0.21"),
			chromedp.SendKeys(chromedp.ID("add-note"), "build server"),
			chromedp.Click(chromedp.ID("add-submit")))
		op.waitFor(t, "the new entry", entryRow("127.0.0.21"))
		if got := op.text(t, "#add-status"); got != "Added 127.0.0.21." {
			t.Errorf("#add-status %q", got)
		}
		if got := op.text(t, `#entries tr[data-entry="127.0.0.21"] td.note`); got != "build server" {
			t.Errorf("the entry's note %q", got)
		}
		wantAnswer(t, c, "127.0.0.21", tok, "200 shop-add", "after Add")
		op.do(t, "Remove", chromedp.Click(chromedp.CSS(`#entries tr[data-entry="127.0.0.21"] button.remove`)))
		op.waitFor(t, "the entry gone", `!`+entryRow("127.0.0.21"))
		if got := op.entries(t); !slices.Equal(got, []string{"203.0.113.10"}) {
			t.Errorf("entries after Remove: %q", got)
		}
		wantAnswer(t, c, "127.0.0.21", tok, "401", "after Remove")
		op.noProblems(t)
	})

	t.Run("keyboard only: search, open, add with Enter, remove", func(t *testing.T) {
		tok := consoleTok("shop-keys")
		op.open(t, c.Site, "")
		op.tabTo(t, "the search box", `a.id === 'search'`, false)
		op.press(t, "shop-k", false)
		op.waitFor(t, "the search's one row", `document.querySelectorAll('#token-list tr[data-label]').length === 1 && document.querySelector('#token-list tr[data-label="shop-keys"]')`)
		op.tabTo(t, "the token's link", `a.matches('a.token-link') && a.textContent === 'shop-keys'`, false)
		op.press(t, kb.Enter, false)
		op.waitFor(t, "the token page", `document.querySelector('#token-label') && document.querySelector('#token-label').textContent === 'shop-keys'`)
		if id := eval[string](t, op, `document.activeElement.id`); id != "token-label" {
			t.Errorf("after the move the focus is on #%s, want the h1", id)
		}
		op.tabTo(t, "the Add form's entries", `a.id === 'add-entries'`, false)
		op.press(t, "127.0.0.22", false)
		op.press(t, kb.Tab, false)
		if id := eval[string](t, op, `document.activeElement.id`); id != "add-note" {
			t.Fatalf("Tab from the entries went to #%s, want #add-note", id)
		}
		op.press(t, "desk", false)
		wantAnswer(t, c, "127.0.0.22", tok, "401", "before")
		op.press(t, kb.Enter, false) // submits the form
		op.waitFor(t, "the new entry", entryRow("127.0.0.22"))
		wantAnswer(t, c, "127.0.0.22", tok, "200 shop-keys", "after Enter")
		op.tabTo(t, "its Remove button", `a.matches('button.remove') && a.getAttribute('aria-label') === 'Remove 127.0.0.22'`, true)
		if style := eval[string](t, op, `getComputedStyle(document.activeElement).outlineStyle + ' ' + getComputedStyle(document.activeElement).outlineWidth`); strings.HasPrefix(style, "none") || strings.HasSuffix(style, " 0px") {
			t.Errorf("the focused Remove button shows no focus: outline %s", style)
		}
		op.press(t, kb.Enter, false)
		op.waitFor(t, "the entry gone", `!`+entryRow("127.0.0.22"))
		wantAnswer(t, c, "127.0.0.22", tok, "401", "after Remove")
		op.noProblems(t)
	})

	t.Run("Add my IP", func(t *testing.T) {
		tok := consoleTok("shop-myip")
		wantAnswer(t, c, browserAddr, tok, "401", "before")
		op.open(t, c.Site, "#/token/shop-myip")
		op.do(t, "Add my IP", chromedp.Click(chromedp.ID("add-my-ip")))
		op.waitFor(t, "the address shown", `!document.querySelector('#my-ip-box').hidden`)
		if got := op.text(t, "#my-ip"); got != browserAddr {
			t.Fatalf("Add my IP shows %q, want the browser's address %s", got, browserAddr)
		}
		if got := op.text(t, "#my-ip-box p"); !strings.Contains(got, "Your address is "+browserAddr) {
			t.Errorf("the question reads %q", got)
		}
		if e := getEntry(t, c, "shop-myip"); slices.Contains(e.Allow, browserAddr) {
			t.Fatalf("the address was added before it was confirmed: %s", e.raw)
		}
		op.do(t, "Add it", chromedp.Click(chromedp.ID("add-my-ip-confirm")))
		op.waitFor(t, "the new entry", entryRow(browserAddr))
		if got := op.text(t, "#add-my-ip-status"); got != "Added "+browserAddr+"." {
			t.Errorf("#add-my-ip-status %q", got)
		}
		wantAnswer(t, c, browserAddr, tok, "200 shop-myip", "after Add my IP")
		wantAnswer(t, c, "127.0.0.1", tok, "401", "from another address after Add my IP")
		op.noProblems(t)
	})

	t.Run("observed addresses: add all never adds a refused one, a refused one after confirming", func(t *testing.T) {
		tok := consoleTok("shop-seen")
		// 127.0.0.23 is used twice while allowed, then refused three times
		// once its entry is gone: refused, yet seen allowed twice. 127.0.0.25
		// is allowed by the /30 only: not listed as itself.
		for range 2 {
			wantAnswer(t, c, "127.0.0.23", tok, "200 shop-seen", "while listed")
			wantAnswer(t, c, "127.0.0.25", tok, "200 shop-seen", "inside the range")
		}
		mustRoute(t, c, 200, "DELETE", "/ip-allowlist/tokens/shop-seen/allow/127.0.0.23", "")
		for range 3 {
			wantAnswer(t, c, "127.0.0.23", tok, "401", "unlisted")
		}
		op.open(t, c.Site, "#/token/shop-seen")
		op.waitFor(t, "the observed rows", `document.querySelector('#observed tr[data-ip="127.0.0.23"][data-status="refused"]') && document.querySelector('#observed tr[data-ip="127.0.0.25"][data-status="allowed"]')`)
		cells := eval[[]string](t, op, `[...document.querySelectorAll('#observed tr[data-ip="127.0.0.23"] td')].map(td => td.textContent)`)
		if len(cells) < 5 || cells[2] != "2" || cells[3] != "3" {
			t.Errorf("the refused row's cells %q, want 2 allowed and 3 denied", cells)
		}
		before := getEntry(t, c, "shop-seen")

		op.do(t, "Add all seen at least once", chromedp.Click(chromedp.ID("add-all")))
		op.waitFor(t, "Add all's answer", `document.querySelector('#observed-status').textContent !== ''`)
		if got := op.text(t, "#observed-status"); got != "Added 127.0.0.25." {
			t.Errorf("#observed-status %q, want Added 127.0.0.25.", got)
		}
		if e := getEntry(t, c, "shop-seen"); !slices.Equal(e.Allow, []string{"127.0.0.24/30", "127.0.0.25"}) {
			t.Errorf("after Add all the entry allows %q, want the range and 127.0.0.25 (not the refused 127.0.0.23)", e.Allow)
		}
		wantAnswer(t, c, "127.0.0.23", tok, "401", "after Add all")
		op.do(t, "Add all again", chromedp.Click(chromedp.ID("add-all")))
		op.waitFor(t, "Add all's answer", `document.querySelector('#observed-status').textContent === 'Nothing to add.'`)

		op.do(t, "Add on the refused row", chromedp.Click(chromedp.CSS(`#observed tr[data-ip="127.0.0.23"] button.add`)))
		op.waitFor(t, "the page to settle", "true")
		if !eval[bool](t, op, `!!document.querySelector('#observed tr.confirm[data-confirm-ip="127.0.0.23"]')`) {
			t.Error("Add on a refused row shows no confirmation")
		}
		if got := op.text(t, `#observed tr.confirm[data-confirm-ip="127.0.0.23"]`); !strings.Contains(got, "was refused") {
			t.Errorf("the confirmation reads %q", got)
		}
		if e := getEntry(t, c, "shop-seen"); slices.Contains(e.Allow, "127.0.0.23") {
			t.Fatalf("the refused address was added before it was confirmed (ETag %s, was %s)", e.etag, before.etag)
		}
		wantAnswer(t, c, "127.0.0.23", tok, "401", "before confirming")
		op.do(t, "Add anyway", chromedp.Click(chromedp.CSS(`#observed tr.confirm[data-confirm-ip="127.0.0.23"] button.add-confirm`)))
		op.waitFor(t, "the new entry", entryRow("127.0.0.23"))
		wantAnswer(t, c, "127.0.0.23", tok, "200 shop-seen", "after Add anyway")
		// Listed now: its row offers no Add.
		op.waitFor(t, "the listed row without Add", `document.querySelector('#observed tr[data-ip="127.0.0.23"]') && !document.querySelector('#observed tr[data-ip="127.0.0.23"] button.add')`)
		op.noProblems(t)
	})

	t.Run("suspend and resume", func(t *testing.T) {
		tok := consoleTok("shop-pause")
		wantAnswer(t, c, "127.0.0.26", tok, "200 shop-pause", "before")
		op.open(t, c.Site, "#/token/shop-pause")
		if got := op.text(t, "#state"); got != "active" {
			t.Errorf("#state %q, want active", got)
		}
		op.do(t, "Suspend", chromedp.Click(chromedp.ID("suspend")))
		op.waitFor(t, "suspended", `document.querySelector('#state').textContent === 'suspended' && !document.querySelector('#resume').hidden && document.querySelector('#suspend').hidden`)
		wantAnswer(t, c, "127.0.0.26", tok, "401", "while suspended")
		if !getEntry(t, c, "shop-pause").Suspended {
			t.Error("the store entry is not suspended")
		}
		op.do(t, "Resume", chromedp.Click(chromedp.ID("resume")))
		op.waitFor(t, "active", `document.querySelector('#state').textContent === 'active' && !document.querySelector('#suspend').hidden`)
		wantAnswer(t, c, "127.0.0.26", tok, "200 shop-pause", "after Resume")
		op.noProblems(t)
	})

	t.Run("create a token, its secret shown once works", func(t *testing.T) {
		op.open(t, c.Site, "")
		op.do(t, "filling New token",
			chromedp.SendKeys(chromedp.ID("new-label"), "made-in-console"),
			chromedp.SendKeys(chromedp.ID("new-allow"), "127.0.0.27"),
			chromedp.SendKeys(chromedp.ID("new-note"), "made by the browser test"),
			chromedp.Click(chromedp.ID("new-create")))
		op.waitFor(t, "the secret", `!document.querySelector('#new-result').hidden && document.querySelector('#new-secret').value !== '' && document.querySelector('#token-list tr[data-label="made-in-console"]')`)
		secret := eval[string](t, op, `document.querySelector('#new-secret').value`)
		if !strings.HasPrefix(secret, "ipa_") || len(secret) < 40 {
			t.Fatalf("the secret shown is %q", secret)
		}
		if e := getEntry(t, c, "made-in-console"); e.TokenSHA256 != testkit.Digest(secret) || !slices.Equal(e.Allow, []string{"127.0.0.27"}) {
			t.Errorf("the store keeps %s for the secret shown", e.raw)
		}
		wantAnswer(t, c, "127.0.0.27", secret, "200 made-in-console", "the new token from its address")
		wantAnswer(t, c, "127.0.0.28", secret, "401", "the new token from elsewhere")
		// Shown once: a new page load does not show it again.
		op.open(t, c.Site, "")
		if eval[bool](t, op, `!!document.querySelector('#new-secret') || document.body.innerText.includes(`+jsString(secret)+`)`) {
			t.Error("the secret is shown again after a reload")
		}
		op.noProblems(t)
	})

	t.Run("a bad entry is refused inline and changes nothing", func(t *testing.T) {
		tok := consoleTok("shop-bad")
		before := getEntry(t, c, "shop-bad")
		op.open(t, c.Site, "#/token/shop-bad")
		op.do(t, "adding a good and a bad entry",
			chromedp.SendKeys(chromedp.ID("add-entries"), "127.0.0.29, 203.0.113.999"),
			chromedp.Click(chromedp.ID("add-submit")))
		op.waitFor(t, "the inline error", `!document.querySelector('#add-error').hidden`)
		msg := op.text(t, "#add-error")
		if !strings.Contains(msg, `"203.0.113.999"`) || !strings.Contains(msg, `token "shop-bad"`) {
			t.Errorf("#add-error %q does not name the entry and the token", msg)
		}
		if got := op.entries(t); !slices.Equal(got, []string{"203.0.113.13"}) {
			t.Errorf("entries shown after the refusal: %q", got)
		}
		if got := eval[string](t, op, `document.querySelector('#add-entries').value`); got != "127.0.0.29, 203.0.113.999" {
			t.Errorf("the form lost what was typed: %q", got)
		}
		if after := getEntry(t, c, "shop-bad"); after.etag != before.etag || after.raw != before.raw {
			t.Errorf("the refused change changed the entry: ETag %s, was %s\n%s\nwas %s", after.etag, before.etag, after.raw, before.raw)
		}
		wantAnswer(t, c, "127.0.0.29", tok, "401", "after the refused change")
		op.noProblems(t)
	})

	t.Run("a cross-origin POST is refused", func(t *testing.T) {
		tok := consoleTok("shop-csrf")
		target := c.Site + "/console/-/api/tokens/shop-csrf/suspend"
		// Another origin on the same host (another port): the browser
		// sends the console's basic-auth login along with its requests.
		// (From another site, 127.0.0.2, Chromium sends none, and
		// basic_auth refuses them before the console sees them.)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		other := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, crossOriginPage, jsString(target))
		})}
		go other.Serve(l)
		defer other.Close()

		before := getEntry(t, c, "shop-csrf")
		// A tab beside the console's, in the same browser context: it has
		// the operator's login; it answers no challenge itself.
		evil := newTab(t, op.ctx, "", "")
		evil.do(t, "opening the other origin's page", chromedp.Navigate("http://"+l.Addr().String()+"/"))
		ctx, cancel := context.WithTimeout(evil.ctx, 10*time.Second)
		res, err := chromedp.Run(ctx, chromedp.Poll[string](`document.body.dataset.result`, chromedp.WithPollingInterval(20*time.Millisecond)))
		cancel()
		if err != nil {
			t.Fatalf("the other origin's script did not finish: %v", err)
		}
		var out struct{ NoCORS, CORS string }
		json.Unmarshal([]byte(res), &out)
		if out.NoCORS != "opaque 0" {
			t.Errorf("the no-cors POST answered %q to its script, want an opaque answer", out.NoCORS)
		}
		// A JSON POST needs a preflight, which carries no login: refused
		// by basic_auth, so the browser sends no POST.
		if !strings.HasPrefix(out.CORS, "error") {
			t.Errorf("the JSON POST from another origin answered %q to its script", out.CORS)
		}
		var refused []string
		c.WaitOutput(func(string) bool {
			return len(accessLog(c, "via=nocors")) > 0 && len(accessLog(c, "via=form")) > 0
		})
		for _, e := range accessLog(c, "/console/-/api/tokens/shop-csrf/") {
			_, via, _ := strings.Cut(e.Request.URI, "via=")
			switch {
			case e.Request.Method == "OPTIONS":
				// The preflight.
			case e.Status == http.StatusForbidden && e.UserID == consoleOperator:
				refused = append(refused, via)
			default:
				t.Errorf("the other origin's %s %s was answered %d (user %q), want 403 for the logged-in operator", e.Request.Method, e.Request.URI, e.Status, e.UserID)
			}
		}
		slices.Sort(refused)
		refused = slices.Compact(refused)
		if !slices.Equal(refused, []string{"form", "nocors"}) {
			t.Errorf("refused with 403: %q, want the form's and the no-cors fetch's POST", refused)
		}
		if after := getEntry(t, c, "shop-csrf"); after.etag != before.etag || after.Suspended {
			t.Errorf("the cross-origin POST changed the entry: ETag %s, was %s: %s", after.etag, before.etag, after.raw)
		}
		wantAnswer(t, c, "127.0.0.30", tok, "200 shop-csrf", "after the cross-origin POSTs")
		op.noProblems(t)
	})

	t.Run("no authenticated user: 401", func(t *testing.T) {
		r := c.Do(testkit.Request{Path: "/console/-/api/me"})
		if r.Status != 401 || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("GET /console/-/api/me without a login: %v %v, want basic_auth's 401", r, r.Header)
		}
		// Without basic_auth in front, the console itself refuses, and
		// says what is missing, to a plain request and in the browser.
		bare := startConsoleExample(t, exampleBasicAuth, "")
		r = bare.Do(testkit.Request{Path: "/console/-/api/me"})
		if r.Status != 401 || !strings.Contains(r.Body, "put basic_auth, or another authentication handler, before ip_allowlist_console") {
			t.Errorf("the console without basic_auth: %v, want 401 saying to put basic_auth before it", r)
		}
		resp, err := chromedp.Run(op.ctx, chromedp.NavigateResponse(bare.Site+"/console/"))
		if err != nil {
			t.Fatal(err)
		}
		if shown := eval[string](t, op, `document.body.innerText`); resp.Status != 401 || !strings.Contains(shown, "put basic_auth") {
			t.Errorf("the browser got %d and shows %q", resp.Status, shown)
		}
		op.noProblems(t)
	})

	t.Run("an owner sees only their own tokens", func(t *testing.T) {
		// A browser context of its own: its own login.
		acme := newTab(t, op.ctx, consoleOwner, consoleOwnerPW, chromedp.WithNewBrowserContext())
		acme.open(t, c.Site, "")
		if got := acme.text(t, "#whoami"); got != "acme · store default" {
			t.Errorf("#whoami %q", got)
		}
		rows := eval[[]string](t, acme, `[...document.querySelectorAll('#token-list tr[data-label]')].map(r => r.dataset.label)`)
		if !slices.Equal(rows, []string{"acme-api", "acme-batch"}) {
			t.Errorf("acme's list %q, want only acme-api and acme-batch", rows)
		}
		if eval[bool](t, acme, `!!document.querySelector('#new-owner')`) {
			t.Error("an owner is offered the owner field")
		}
		acme.open(t, c.Site, "#/token/acme-api")
		if got := acme.entries(t); !slices.Equal(got, []string{"198.51.100.7"}) {
			t.Errorf("acme-api's entries %q", got)
		}
		acme.open(t, c.Site, "#/token/globex-api")
		if !eval[bool](t, acme, `!!document.querySelector('#not-found') && !document.querySelector('#error').hidden`) {
			t.Errorf("acme's page of globex-api is not the not-found view; it shows entries %q", acme.entries(t))
		}
		if got := acme.text(t, "#error"); got != `no token "globex-api"` {
			t.Errorf("#error %q", got)
		}
		if eval[bool](t, acme, `!!document.querySelector('#entries, #add-form, #suspend')`) {
			t.Error("the not-found view shows the token's controls")
		}
		// A change from acme's own page is refused the same way.
		if got := eval[int](t, acme, `fetch('-/api/tokens/globex-api/suspend', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)`); got != 404 {
			t.Errorf("acme's POST suspend of globex-api: %d, want 404", got)
		}
		if getEntry(t, c, "globex-api").Suspended {
			t.Error("acme suspended globex-api")
		}
		for _, tc := range []struct {
			user, pass, label string
			status            int
		}{
			{consoleOwner, consoleOwnerPW, "globex-api", 404},
			{consoleOwner, consoleOwnerPW, "acme-api", 200},
			{consoleOperator, consoleOperatorPW, "globex-api", 200},
		} {
			r := c.Do(testkit.Request{Path: "/console/-/api/tokens/" + tc.label, Header: basicAuth(tc.user, tc.pass)})
			if r.Status != tc.status || tc.status == 404 && !strings.Contains(r.Body, `no token \"globex-api\"`) {
				t.Errorf("GET -/api/tokens/%s as %s: %v, want %d", tc.label, tc.user, r, tc.status)
			}
		}
		acme.noProblems(t)
	})

	t.Run("a listed API token is no login", func(t *testing.T) {
		// ip_allowlist for every path, the console's too, and no
		// basic_auth: an allowed API token passes ip_allowlist, which
		// sets the user id to its label, and the console refuses it.
		open := startConsoleExample(t, exampleBasicAuth, "", "\t@api not path /console /console/*\n\tip_allowlist @api {\n", "\tip_allowlist {\n")
		bearer := testkit.Bearer(tokPartnerA)
		if r := open.Do(testkit.Request{Header: bearer}); r.Status != 200 || r.Body != "hello, partner-a" {
			t.Fatalf("the API with partner-a's token: %v, want 200", r)
		}
		for _, path := range []string{"/console/", "/console/-/api/me", "/console/-/api/tokens"} {
			r := open.Do(testkit.Request{Path: path, Header: bearer})
			if r.Status != 401 || !strings.Contains(r.Body, "an API token accepted by ip_allowlist is not a login") {
				t.Errorf("GET %s with partner-a's token: %v, want the console's 401", path, r)
			}
		}
	})

	t.Run("the security review's fixes hold in the binary", func(t *testing.T) {
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequest("GET", c.Site+"/console/https:evil.example", nil)
		req.SetBasicAuth(consoleOperator, consoleOperatorPW)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "./https:evil.example/" {
			t.Errorf("redirect to %q: a last segment that reads as a scheme must stay a path", loc)
		}
		// An owner is told a config label is taken, not where it is listed.
		if status, body := consolePost(t, c, consoleOwner, consoleOwnerPW, "tokens", `{"label": "partner-a", "allow": ["127.0.0.50"]}`); status != 409 || !strings.Contains(body, "label is taken") || strings.Contains(body, "listed in") {
			t.Errorf("acme creates partner-a: %d %s", status, body)
		}
		// A note larger than the console keeps is refused.
		if status, body := consolePost(t, c, consoleOwner, consoleOwnerPW, "tokens", `{"label": "acme-big", "allow": ["127.0.0.50"], "note": "`+strings.Repeat("n", 2000)+`"}`); status != 400 || !strings.Contains(body, "longer than 1024") {
			t.Errorf("acme's 2,000-byte note: %d %s", status, body)
		}
	})

	t.Run("a token's page shows its leak alert", func(t *testing.T) {
		lc := startConsoleExample(t, "\t\tunlisted_tokens none\n", "\t\tunlisted_tokens none\n\t\tleak_alert 3 1m suspend\n")
		putEntry(t, lc, "leaky", map[string]any{"allow": []string{"203.0.113.7"}})
		for i := range 3 {
			// 127.0.0.1 is the example's trusted proxy.
			r := lc.Do(testkit.Request{Header: append(testkit.Bearer(consoleTok("leaky")), "X-Forwarded-For", fmt.Sprintf("192.0.2.%d", 40+i))})
			if r.Status != 401 {
				t.Fatalf("from outside: %v", r)
			}
		}
		op.open(t, lc.Site, "#/token/leaky")
		op.waitFor(t, "the leak alert", `!document.querySelector('#leak-alert').hidden`)
		if got := op.text(t, "#leak-alert"); !strings.Contains(got, "May be leaked: refused from 3 distinct addresses") || !strings.Contains(got, "192.0.2.40") || !strings.Contains(got, "suspended it") {
			t.Errorf("#leak-alert reads %q", got)
		}
		op.noProblems(t)
	})

	t.Run("a dns: entry: what it resolves to, and the tester names it", func(t *testing.T) {
		// Each lookup asks a resolver that never answers first, then
		// srv: a name is pending for 2 s (the first one's timeout), long
		// enough for the page to show it so and read it again.
		down := testkit.DNS(t)
		down.Silent(true)
		srv := testkit.DNS(t)
		srv.Set("office.console.test", 300, "127.0.0.61")
		srv.SetRcode("broken.console.test", dns.RcodeServerFailure)
		srv.Set("file.console.test", 300, "127.0.0.62", "2001:db8::62")
		var many []string
		for i := range 257 {
			many = append(many, fmt.Sprintf("10.9.%d.%d", i/250, i%250+1))
		}
		srv.Set("many.console.test", 300, many...)
		file := testkit.WriteFile(t, filepath.Join(t.TempDir(), "dns-tokens.json"),
			`{"file-dns": {"token_sha256": "`+testkit.Digest(consoleTok("file-dns"))+`", "allow": ["dns:file.console.test"]}}`)
		dc := startConsoleExample(t,
			"\t\tmissing_token deny\n", "\t\tmissing_token deny\n\t\tresolvers "+down.Addr+" "+srv.Addr+"\n",
			"\t\ttokens_file examples/tokens.json\n", "\t\ttokens_file examples/tokens.json\n\t\ttokens_file "+file+"\n")
		putEntry(t, dc, "shop-dns", map[string]any{"allow": []string{"203.0.113.14"}})
		tok := consoleTok("shop-dns")
		wantAnswer(t, dc, "127.0.0.61", tok, "401", "before")
		state := func(entry string) string {
			return `document.querySelector('#entries tr[data-entry="` + entry + `"] .dns-state')`
		}

		op.open(t, dc.Site, "#/token/shop-dns")
		op.do(t, "adding four names in one Add",
			chromedp.SendKeys(chromedp.ID("add-entries"), "dns:office.console.test, dns:broken.console.test\ndns:none.console.test dns:many.console.test"),
			chromedp.Click(chromedp.ID("add-submit")))
		op.waitFor(t, "the names added", entryRow("dns:none.console.test"))
		if got := eval[string](t, op, state("dns:office.console.test")+`.textContent`); got != "not resolved yet" {
			t.Errorf("under a name just added the page reads %q, want not resolved yet", got)
		}
		op.waitFor(t, "each name looked up", state("dns:office.console.test")+`.dataset.state === 'resolved' && `+
			state("dns:broken.console.test")+`.dataset.state === 'failing' && `+state("dns:none.console.test")+`.dataset.state === 'empty' && `+
			state("dns:many.console.test")+`.dataset.state === 'refused'`)
		for entry, want := range map[string][]string{
			"dns:office.console.test": {"resolves to 127.0.0.61", "TTL 5m"},
			"dns:broken.console.test": {"lookup failing since ", ": A: " + srv.Addr + ": SERVFAIL", "it admits no address until it resolves", "tried again after 30s"},
			"dns:none.console.test":   {"resolves to no address"},
			"dns:many.console.test":   {"refused: resolves to 257 addresses, more than 256 — it admits no address until it resolves"},
		} {
			got := eval[string](t, op, state(entry)+`.textContent`)
			for _, w := range want {
				if !strings.Contains(got, w) {
					t.Errorf("under %s the page reads %q, want %q in it", entry, got, w)
				}
			}
		}
		wantAnswer(t, dc, "127.0.0.61", tok, "200 shop-dns", "after adding the name")

		test := func(ip string) string {
			t.Helper()
			op.do(t, "testing "+ip,
				chromedp.Evaluate[chromedp.Void](`document.getElementById('check-ip').value = ''`),
				chromedp.SendKeys(chromedp.ID("check-ip"), ip),
				chromedp.Click(chromedp.ID("check-submit")))
			op.waitFor(t, "the decision", `document.querySelector('#check-result').dataset.decision`)
			return op.text(t, "#check-result")
		}
		if got, want := test("127.0.0.61"), "allow — allowed by dns:office.console.test (mode enforce)"; got != want {
			t.Errorf("the tester says %q, want %q", got, want)
		}
		if got, want := test("203.0.113.14"), "allow — allowed (mode enforce)"; got != want {
			t.Errorf("for an address its range admits the tester says %q, want %q", got, want)
		}
		op.do(t, "a 320 px wide screen", chromedp.EmulateViewport(320, 700))
		op.open(t, dc.Site, "#/token/shop-dns")
		// The entries' table scrolls inside its wrapper when too wide: at
		// 320 px, laid out as cards, it must not need to.
		if w := eval[[]int](t, op, `(w => [document.documentElement.scrollWidth, w.scrollWidth, w.clientWidth])(document.querySelector('#entries').closest('.table-wrap'))`); w[0] > 320 || w[1] > w[2] {
			t.Errorf("the names' states at 320 px: the document is %d px wide, the entries %d px in %d", w[0], w[1], w[2])
		}
		op.do(t, "back to 1100 px", chromedp.EmulateViewport(1100, 900))

		// A tokens file's token: its entries are not shown, what its
		// names admit is.
		op.open(t, dc.Site, "#/token/file-dns")
		op.waitFor(t, "the tokens file's name", state("dns:file.console.test")+`.dataset.state === 'resolved'`)
		if got := eval[string](t, op, state("dns:file.console.test")+`.textContent`); !strings.Contains(got, "resolves to 127.0.0.62, 2001:db8::62") {
			t.Errorf("under the tokens file's name the page reads %q", got)
		}
		if eval[bool](t, op, `!!document.querySelector('#entries button.remove, #add-form')`) {
			t.Error("a config token's page offers to change it")
		}
		op.noProblems(t)
	})

	t.Run("readable at 320 px", func(t *testing.T) {
		op.do(t, "a 320 px wide screen", chromedp.EmulateViewport(320, 700))
		defer op.do(t, "back to 1100 px", chromedp.EmulateViewport(1100, 900))
		// A refused address not in the list (127.0.0.23 was added above,
		// and a listed address has no Add button; 127.0.0.30 is outside
		// the /30), for the confirmation.
		wantAnswer(t, c, "127.0.0.30", consoleTok("shop-seen"), "401", "not listed")
		for _, hash := range []string{"", "#/token/shop-seen"} {
			op.open(t, c.Site, hash)
			if w := eval[int](t, op, `window.innerWidth`); w != 320 {
				t.Fatalf("the window is %d px wide, want 320", w)
			}
			if w := eval[int](t, op, `document.documentElement.scrollWidth`); w > 320 {
				t.Errorf("page %q at 320 px: the document is %d px wide", hash, w)
			}
		}
		// With the widest things open: a refused row's confirmation.
		op.do(t, "Add on the refused row", chromedp.Click(chromedp.CSS(`#observed tr[data-ip="127.0.0.30"] button.add`)))
		if w := eval[int](t, op, `document.documentElement.scrollWidth`); w > 320 {
			t.Errorf("with the confirmation open at 320 px the document is %d px wide", w)
		}
		op.noProblems(t)
	})

	t.Run("the error listener sees a CSP violation", func(t *testing.T) {
		// The control for "no problems" above: an inline script, which
		// the console's CSP refuses, is caught.
		probe := newTab(t, op.ctx, "", "")
		probe.open(t, c.Site, "")
		probe.do(t, "an inline script", chromedp.Evaluate[chromedp.Void](`{const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.head.append(s);}`))
		var got []string
		testkit.Wait(5*time.Second, func() bool {
			got = append(got, probe.takeProblems()...)
			return len(got) > 0
		})
		if len(got) == 0 || !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "script-src") }) {
			t.Errorf("an inline script was not reported as a CSP violation: %q", got)
		}
		if eval[bool](t, probe, `window.ran === 1`) {
			t.Error("the inline script ran: no CSP")
		}
	})

	t.Logf("the console's browser test took %v", time.Since(began).Round(time.Millisecond))
}

// crossOriginPage is the other origin's page: its script POSTs to the
// console's API (%s, as a JS string) with the browser's credentials,
// three ways, and writes what its script could see into body[data-result].
const crossOriginPage = `<!doctype html><title>elsewhere</title><body>
<iframe name="sink"></iframe>
<form id="f" method="post" target="sink" enctype="text/plain"><input name='{"note":"' value='"}'></form>
<script>
(async () => {
  const target = %s;
  const out = {};
  // A "simple" request: no preflight; its answer is opaque to the script.
  try {
    const r = await fetch(target + '?via=nocors', {method: 'POST', credentials: 'include', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{}'});
    out.NoCORS = r.type + ' ' + r.status;
  } catch (e) { out.NoCORS = 'error ' + e.message; }
  // A JSON request, as the console's own page sends.
  try {
    const r = await fetch(target + '?via=cors', {method: 'POST', credentials: 'include', headers: {'Content-Type': 'application/json'}, body: '{}'});
    out.CORS = String(r.status);
  } catch (e) { out.CORS = 'error ' + e.message; }
  // A form, whose text/plain body is JSON the console takes:
  // {"note":"="}.
  const f = document.getElementById('f');
  f.action = target + '?via=form';
  f.submit();
  document.body.dataset.result = JSON.stringify(out);
})();
</script></body>`

// TestConsoleScreenshot writes a picture of a token's page, with a store
// filled as in use (owners, notes, an entry that expires, a dns: entry and
// what it resolves to, an observed address refused), to the PNG file
// CONSOLE_SCREENSHOT names: make
// screenshot writes docs/console.png. Skipped unless it is set, so that
// make test writes no file of the repository.
func TestConsoleScreenshot(t *testing.T) {
	path := os.Getenv("CONSOLE_SCREENSHOT")
	if path == "" {
		t.Skip("CONSOLE_SCREENSHOT is not set: make screenshot sets it to docs/console.png")
	}
	testkit.CaddyBin(t)
	srv := testkit.DNS(t)
	srv.Set("gw.berlin.example.net", 300, "203.0.113.8", "2001:db8:10::8")
	c := startConsoleExample(t, "\t\tmissing_token deny\n", "\t\tmissing_token deny\n\t\tresolvers "+srv.Addr+"\n")
	in := func(d time.Duration) string { return time.Now().Add(d).UTC().Truncate(time.Hour).Format(time.RFC3339) }
	putEntry(t, c, "partner-portal", map[string]any{
		"owner": consoleOwner,
		"note":  "Customer portal backend, EU region",
		"allow": []string{"203.0.113.7", "198.51.100.0/24", "dns:gw.berlin.example.net", "127.0.0.40", "192.0.2.44"},
		"notes": map[string]string{
			"203.0.113.7":               "Berlin office",
			"198.51.100.0/24":           "EU datacenter",
			"dns:gw.berlin.example.net": "Berlin gateway, dynamic IP",
			"127.0.0.40":                "staging runner",
			"192.0.2.44":                "contractor laptop, until the migration is done",
		},
		"expires": map[string]string{"192.0.2.44": in(72 * time.Hour)},
	})
	putEntry(t, c, "billing-export", map[string]any{"owner": "globex", "note": "Nightly billing export", "allow": []string{"192.0.2.128/26"}})
	putEntry(t, c, "mobile-gateway", map[string]any{"owner": consoleOwner, "allow": []string{"198.51.100.64/26", "2001:db8:20::/48"}})
	putEntry(t, c, "legacy-cron", map[string]any{"note": "Old reporting job; replaced", "allow": []string{"203.0.113.90"}, "suspended": true})
	tok := consoleTok("partner-portal")
	for range 6 {
		wantAnswer(t, c, "127.0.0.40", tok, "200 partner-portal", "the staging runner")
	}
	for range 3 {
		wantAnswer(t, c, "127.0.0.66", tok, "401", "an address not listed")
	}

	op := newTab(t, startChromium(t, ""), consoleOperator, consoleOperatorPW)
	op.do(t, "an 1100x900 window", chromedp.EmulateViewport(1100, 900))
	op.open(t, c.Site, "#/token/partner-portal")
	op.waitFor(t, "the observed rows and the name resolved", `document.querySelector('#observed tr[data-ip="127.0.0.66"][data-status="refused"]') && document.querySelector('#entries .dns-state[data-state="resolved"]')`)
	op.noProblems(t)
	ctx, cancel := context.WithTimeout(op.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(png))
}

// consolePost sends a change to the console as its own page does: the
// login, same origin, a JSON body. It returns the status, and the body,
// or the error's text when the body is an error.
func consolePost(t *testing.T, c *testkit.Caddy, user, pass, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.Site+"/console/-/api/"+path, strings.NewReader(body))
	req.SetBasicAuth(user, pass)
	req.Header.Set("Origin", c.Site)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(b)
}

// The owner bounds hold in the binary, with examples/Caddyfile's console
// (operators admin, the default bounds): the owner acme cannot lift its
// token's restriction, add a /23, a 51st entry or a dns: name, nor resume
// what the leak signal suspended; the operator can. No browser needed.
func TestConsoleOwnerBoundsInTheBinary(t *testing.T) {
	testkit.CaddyBin(t)
	c := startConsoleExample(t, "\t\tunlisted_tokens none\n", "\t\tunlisted_tokens none\n\t\tleak_alert 3 1m suspend\n")
	if !strings.Contains(c.Output(), "console: operators see and change every token") || !strings.Contains(c.Output(), "IPv4 ranges up to a /24, IPv6 ranges up to a /48; 50 entries a token; no dns: entries") {
		t.Errorf("the console's start-up line does not state the bounds:\n%s", c.Output())
	}
	var fortyNine []string
	for i := range 49 {
		fortyNine = append(fortyNine, fmt.Sprintf("198.51.100.%d", i+1))
	}
	putEntry(t, c, "acme-bounded", map[string]any{"allow": []string{"127.0.0.90"}, "owner": consoleOwner})
	putEntry(t, c, "acme-many", map[string]any{"allow": fortyNine, "owner": consoleOwner})
	for _, tc := range []struct {
		name, user, pass, label, entry string
		want                           int
		says                           string
	}{
		{"an owner adding any is refused", consoleOwner, consoleOwnerPW, "acme-bounded", "any", 403, `owners may add at most an IPv4 /24 ("any" is wider): an operator can add it, or widen owner_max_prefix in the console's config`},
		{"an owner adding a /23 is refused", consoleOwner, consoleOwnerPW, "acme-bounded", "203.0.112.0/23", 403, "owners may add at most an IPv4 /24"},
		{"an owner adding a /24 is accepted", consoleOwner, consoleOwnerPW, "acme-bounded", "203.0.113.0/24", 200, ""},
		{"an owner adding a dns: entry is refused", consoleOwner, consoleOwnerPW, "acme-bounded", "dns:office.example.com", 403, "owners may not add dns: entries"},
		{"an owner adding the 50th entry is accepted", consoleOwner, consoleOwnerPW, "acme-many", "203.0.113.50", 200, ""},
		{"an owner adding the 51st entry is refused", consoleOwner, consoleOwnerPW, "acme-many", "203.0.113.51", 403, "owners may keep at most 50 allow entries on a token (this change makes 51)"},
		{"an operator adds the 51st", consoleOperator, consoleOperatorPW, "acme-many", "203.0.113.51", 200, ""},
		{"an operator adds any", consoleOperator, consoleOperatorPW, "acme-bounded", "any", 200, ""},
	} {
		status, body := consolePost(t, c, tc.user, tc.pass, "tokens/"+tc.label+"/allow", `{"entries": ["`+tc.entry+`"]}`)
		if status != tc.want || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %s", tc.name, status, body)
		}
	}
	if status, body := consolePost(t, c, consoleOwner, consoleOwnerPW, "tokens", `{"label": "acme-new", "allow": ["any"]}`); status != 403 {
		t.Errorf("acme creates a token allowed from any: %d %s", status, body)
	}
	wantAnswer(t, c, "127.0.0.91", consoleTok("acme-bounded"), "200 acme-bounded", "after the operator's any")

	// The leak signal suspends a token; its owner cannot resume it.
	putEntry(t, c, "acme-leaky", map[string]any{"allow": []string{"127.0.0.92"}, "owner": consoleOwner})
	for i := range 3 {
		// 127.0.0.1 is the example's trusted proxy.
		if r := c.Do(testkit.Request{Header: append(testkit.Bearer(consoleTok("acme-leaky")), "X-Forwarded-For", fmt.Sprintf("192.0.2.%d", 60+i))}); r.Status != 401 {
			t.Fatalf("from outside: %v", r)
		}
	}
	// Suspended once refused from its own address: the store's entry is
	// kept a moment before the handler has it.
	if _, ok := testkit.Wait(10*time.Second, func() bool { return answer(c, "127.0.0.92", consoleTok("acme-leaky")) == "401" }); !ok || !getEntry(t, c, "acme-leaky").Suspended {
		t.Fatal("the leak signal did not suspend acme-leaky")
	}
	status, body := consolePost(t, c, consoleOwner, consoleOwnerPW, "tokens/acme-leaky/resume", `{}`)
	if status != 403 || !strings.Contains(body, "suspended by the leak signal (leak_alert): owners resume only their own suspensions; an operator can resume it") {
		t.Errorf("acme resumes the leak signal's suspension: %d %s", status, body)
	}
	wantAnswer(t, c, "127.0.0.92", consoleTok("acme-leaky"), "401", "after acme's resume")
	if status, body := consolePost(t, c, consoleOperator, consoleOperatorPW, "tokens/acme-leaky/resume", `{}`); status != 200 {
		t.Errorf("the operator resumes it: %d %s", status, body)
	}
	wantAnswer(t, c, "127.0.0.92", consoleTok("acme-leaky"), "200 acme-leaky", "after the operator's resume")
}
