package examples

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestStoreReadmeSequence runs the README's token store block ("## Add
// More") as written, against examples/Caddyfile: each curl line, admin
// call or request to the site, must answer what the README says, and
// have its effect on the next request. A README that changes the block
// without this test fails it.
func TestStoreReadmeSequence(t *testing.T) {
	const (
		heading = "## Add More"
		apiVar  = "API=http://127.0.0.1:2019/ip-allowlist\n"
		tok     = "demo-partner-c-token"
	)
	if section := readmeSection(t, heading); !strings.Contains(section, apiVar) {
		t.Fatalf("the README's %q block no longer sets %q", heading, apiVar)
	}
	cmds := readmeCurls(t, heading, nil)
	c := startExample(t)
	// The site listens before the store's file is open; until then the
	// routes refuse (token store "default" is not open yet).
	testkit.Eventually(t, "the token store open", 10*time.Second, func() bool {
		status, _, _ := storeCall(t, c, http.MethodGet, "/ip-allowlist/tokens", nil, "")
		return status == http.StatusOK
	})

	from := func(addr string) testkit.Request {
		return testkit.Request{Local: addr, Path: "/", Header: testkit.Bearer(tok)}
	}
	expect := func(step, addr string, status int) {
		t.Helper()
		if got := c.Do(from(addr)); got.Status != status {
			t.Errorf("after %s: partner-c from %s: %v, want %d", step, addr, got, status)
		}
	}
	entry := func(step string) (int, map[string]any) {
		t.Helper()
		status, _, body := storeCall(t, c, http.MethodGet, "/ip-allowlist/tokens/partner-c", nil, "")
		var e map[string]any
		if status == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("after %s: GET the entry: %s", step, body)
			}
		}
		return status, e
	}
	logged := func(step, what string) {
		t.Helper()
		if out := c.WaitOutput(func(out string) bool { return strings.Contains(out, what) }); !strings.Contains(out, what) {
			t.Errorf("after %s: no %s in Caddy's output", step, what)
		}
	}

	// One step per curl line, in the README's order: the status it must
	// answer, and what must hold after it.
	steps := []struct {
		status int
		check  func(step string, header http.Header, body string)
	}{
		{http.StatusCreated, func(step string, header http.Header, _ string) { // PUT by digest
			if header.Get("ETag") == "" {
				t.Errorf("%s: no ETag", step)
			}
			expect(step, "127.0.0.7", 200)
			expect(step, "127.0.0.8", 401)
		}},
		{http.StatusOK, func(step string, _ http.Header, body string) { // Add More, with a ttl
			var e struct {
				Allow   []string          `json:"allow"`
				Expires map[string]string `json:"expires"`
				Notes   map[string]string `json:"notes"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("%s: %s", step, body)
			}
			at, err := time.Parse(time.RFC3339, e.Expires["127.0.0.8"])
			if err != nil || time.Until(at) < 167*time.Hour || time.Until(at) > 169*time.Hour {
				t.Errorf("%s: expires %v, want a week from now", step, e.Expires)
			}
			if !slices.Equal(e.Allow, []string{"127.0.0.7", "127.0.0.8"}) || e.Notes["127.0.0.8"] != "new office" {
				t.Errorf("%s: %s", step, body)
			}
			expect(step, "127.0.0.8", 200)
		}},
		{http.StatusOK, func(step string, _ http.Header, body string) { // the request from the added address
			if body != "hello, partner-c" {
				t.Errorf("%s: %q", step, body)
			}
		}},
		{http.StatusOK, func(step string, header http.Header, body string) { // GET -i, with its ETag
			var e map[string]any
			if err := json.Unmarshal([]byte(body), &e); err != nil || e["label"] != "partner-c" || e["owner"] != "acct-1042" || e["token_sha256"] != testkit.Digest(tok) {
				t.Errorf("%s: %s", step, body)
			}
			if header.Get("ETag") == "" {
				t.Errorf("%s: no ETag", step)
			}
			if strings.Contains(body, tok) {
				t.Errorf("%s: the entry holds the token: %s", step, body)
			}
		}},
		{http.StatusOK, func(step string, _ http.Header, _ string) { // remove one entry, by its value
			expect(step, "127.0.0.7", 401)
			expect(step, "127.0.0.8", 200)
		}},
		{http.StatusOK, func(step string, _ http.Header, _ string) { // suspend
			expect(step, "127.0.0.8", 401)
			logged(step, `"reason":"token_suspended"`)
		}},
		{http.StatusOK, func(step string, _ http.Header, _ string) { // resume
			expect(step, "127.0.0.8", 200)
		}},
		{http.StatusNoContent, func(step string, _ http.Header, _ string) { // revoke
			expect(step, "127.0.0.8", 401)
			logged(step, `"reason":"token_revoked"`)
			if status, e := entry(step); status != 200 || e["revoked"] != true {
				t.Errorf("%s: the tombstone: %d %v", step, status, e)
			}
		}},
		{http.StatusNoContent, func(step string, _ http.Header, _ string) { // unrestrict
			if status, e := entry(step); status != http.StatusNotFound {
				t.Errorf("%s: the entry: %d %v, want 404", step, status, e)
			}
			// Unlisted now, and examples/Caddyfile admits no unlisted token.
			expect(step, "127.0.0.8", 401)
			logged(step, `"reason":"unlisted_token"`)
			logged(step, "token unrestricted")
		}},
	}
	if len(cmds) != len(steps) {
		t.Fatalf("the README's %q block has %d curl lines, the test checks %d: update them together\n%q", heading, len(cmds), len(steps), cmds)
	}
	for i, cmd := range cmds {
		req := parseCurl(t, cmd)
		var status int
		var header http.Header
		var body string
		switch {
		case strings.HasPrefix(req.url, "$API"):
			status, header, body = storeCall(t, c, req.method, "/ip-allowlist"+strings.TrimPrefix(req.url, "$API"), req.header, req.body)
		case strings.HasPrefix(req.url, "http://127.0.0.1:8080/"):
			if req.method != http.MethodGet || req.body != "" {
				t.Fatalf("README line %q: only GET requests to the site are understood", cmd)
			}
			r := testkit.Request{Local: req.local, Path: strings.TrimPrefix(req.url, "http://127.0.0.1:8080"), Header: req.header}
			got := c.Do(r)
			status, header, body = got.Status, got.Header, got.Body
		default:
			t.Fatalf("README line %q: URL %q is neither $API nor the site", cmd, req.url)
		}
		if status != steps[i].status {
			t.Fatalf("README line %q: %d %s, want %d", cmd, status, body, steps[i].status)
		}
		steps[i].check(cmd, header, body)
	}

	// Every change was one audit line, none holding the token or its digest.
	out := c.WaitOutput(func(out string) bool { return strings.Count(out, `"msg":"token changed"`) >= 7 })
	var actions []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `"msg":"token changed"`) {
			continue
		}
		var e struct {
			Action string `json:"action"`
			Source string `json:"source"`
			Label  string `json:"token_label"`
			Remote string `json:"remote_ip"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Source != "admin" || e.Label != "partner-c" || e.Remote != "127.0.0.1" {
			t.Errorf("audit line %s", line)
		}
		if strings.Contains(line, tok) || strings.Contains(line, testkit.Digest(tok)) {
			t.Errorf("the audit line holds the token: %s", line)
		}
		actions = append(actions, e.Action)
	}
	if want := []string{"put", "allow", "remove", "suspend", "resume", "revoke", "unrestrict"}; !slices.Equal(actions, want) {
		t.Errorf("audit actions %v, want %v", actions, want)
	}
}

// shellWords splits a README command line into words as sh does with '
// and " quotes (no escapes, no expansion). An unclosed quote fails the
// test.
func shellWords(t *testing.T, cmd string) []string {
	t.Helper()
	var words []string
	var word strings.Builder
	inWord, quote := false, rune(0)
	for _, r := range cmd {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '\'' || r == '"'):
			quote, inWord = r, true
		case quote == 0 && r == ' ':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("command line %q: unclosed quote", cmd)
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}

// curlLine is one curl command of the README, as read by parseCurl.
type curlLine struct {
	method, url, body, local string
	header                   []string // name, value pairs
}

// parseCurl reads a curl command line written like the README's: -X, -H,
// -d, -i, --interface and one URL, words quoted as sh quotes them with '
// and ". Anything else fails the test, so the README cannot hold a
// command the test does not run as written.
func parseCurl(t *testing.T, cmd string) curlLine {
	t.Helper()
	words := shellWords(t, cmd)
	l := curlLine{method: http.MethodGet}
	for i := 1; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "-i":
		case w == "-X" && i+1 < len(words):
			i++
			l.method = words[i]
		case w == "-H" && i+1 < len(words):
			i++
			name, value, ok := strings.Cut(words[i], ": ")
			if !ok {
				t.Fatalf("curl line %q: header %q", cmd, words[i])
			}
			l.header = append(l.header, name, value)
		case w == "-d" && i+1 < len(words):
			i++
			l.body = words[i]
			if l.method == http.MethodGet {
				l.method = http.MethodPost // as curl does
			}
		case w == "--interface" && i+1 < len(words):
			i++
			l.local = words[i]
		case l.url == "" && (strings.HasPrefix(w, "$") || strings.HasPrefix(w, "http://")):
			l.url = w
		default:
			t.Fatalf("curl line %q: word %q is not understood by this test", cmd, w)
		}
	}
	if l.url == "" {
		t.Fatalf("curl line %q: no URL", cmd)
	}
	return l
}

// storeCall sends one request to the admin endpoint, with the headers
// given (name, value pairs), and returns what it answered.
func storeCall(t *testing.T, c *testkit.Caddy, method, path string, header []string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.Admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}
