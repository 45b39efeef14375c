package ipallowlist

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// testMetrics returns metrics in a registry of their own.
func testMetrics(t *testing.T) *metrics {
	m, err := newMetrics(prometheus.NewRegistry(), false)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Tokens listed by extractConfig beside tokA and tokB: one with white space
// inside and one with a '+'.
const (
	tokSpace = "tok c-5e21-abcdef"
	tokPlus  = "tok+d-90b4-abcdef"
)

// extractConfig reads the sources of the bypass reports: a Bearer token, an
// X-Api-Key header, an api_key query parameter and an api_key cookie. The listed tokens may be
// used from 203.0.113.0/24 only; anything else passes, as a permissive
// gateway in front of a backend that checks tokens itself would be set up.
func extractConfig() *Handler {
	allow := []string{"203.0.113.0/24"}
	return &Handler{
		TokenSources: []TokenSource{{Header: "Authorization", Scheme: "Bearer"}, {Header: "X-Api-Key"}, {Query: "api_key"}, {Cookie: "api_key"}},
		Tokens: map[string]*TokenPolicy{
			"a":     {Token: tokA, Allow: allow},
			"b":     {Token: tokB, Allow: allow},
			"space": {Token: tokSpace, Allow: allow},
			"plus":  {Token: tokPlus, Allow: allow},
		},
		Unlisted:     &Policy{Allow: []string{"any"}},
		MissingToken: MissingAllow,
	}
}

// extractRequest builds a request for target with header lines as name,
// value pairs, set as given (not canonicalised), as Go's server would
// store them after canonicalising.
func extractRequest(target string, header ...string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header[header[i]] = append(req.Header[header[i]], header[i+1])
	}
	return req
}

// Each credential of the bypass report, and its neighbours, is found now,
// so the listed token's policy applies: 401 from an address it is not
// allowed from, 200 from one it is.
func TestBypassCredentialsFindTheListedToken(t *testing.T) {
	h, _ := provisioned(t, extractConfig())
	tests := []struct {
		name   string
		target string
		header []string
	}{
		{"tab between scheme and token", "/", []string{"Authorization", "Bearer\t" + tokA}},
		{"tab and space after the scheme", "/", []string{"Authorization", "Bearer \t" + tokA}},
		{"another scheme word", "/", []string{"Authorization", "Token " + tokA}},
		{"token without a scheme word", "/", []string{"Authorization", tokA}},
		{"token before other words", "/", []string{"Authorization", tokA + " extra"}},
		{"no-break space, UTF-8", "/", []string{"Authorization", "Bearer\u00a0" + tokA}},
		{"no-break space, Latin-1 byte", "/", []string{"Authorization", "Bearer\xa0" + tokA}},
		{"ideographic space", "/", []string{"Authorization", "Bearer\u3000" + tokA}},
		{"word of a custom header", "/", []string{"X-Api-Key", "key " + tokA}},
		{"underscore header name", "/", []string{"X_api_key", tokA}},
		{"underscore and hyphen header name", "/", []string{"X-Api_key", tokA}},
		{"upper-case query key", "/?API_KEY=" + tokA, nil},
		{"mixed-case query key", "/?Api_Key=" + tokA, nil},
		{"percent-encoded query key", "/?%41PI%5Fkey=" + tokA, nil},
		{"semicolon separator", "/?x=1;api_key=" + tokA, nil},
		{"array query key, encoded", "/?api_key%5B%5D=" + tokA, nil},
		{"array query key", "/?api_key[]=" + tokA, nil},
		{"indexed query key", "/?api_key[0]=" + tokA, nil},
		{"PHP reads a dot as underscore", "/?api.key=" + tokA, nil},
		{"PHP reads a space as underscore", "/?api+key=" + tokA, nil},
		{"PHP drops leading spaces", "/?+api_key=" + tokA, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkTokenAPolicy(t, h, tt.target, tt.header) })
	}
}

// checkTokenAPolicy sends target with header lines (not canonicalised)
// from outside and from inside tokA's list: the first must be refused as
// ip_not_allowed, the second allowed, both as tokA's (label a).
func checkTokenAPolicy(t *testing.T, h *Handler, target string, header []string) {
	t.Helper()
	for _, c := range []struct {
		remote string
		reason string
		status int
	}{
		{"198.51.100.1:1", ReasonIPNotAllowed, http.StatusUnauthorized},
		{"203.0.113.1:1", ReasonAllowed, http.StatusOK},
	} {
		req := newRequest(c.remote, target)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header[header[i]] = append(req.Header[header[i]], header[i+1])
		}
		res := serve(h, req)
		if got := res.placeholder(placeholderReason); got != c.reason || res.status != c.status {
			t.Errorf("from %s: reason %q status %d, want %q %d", c.remote, got, res.status, c.reason, c.status)
		}
		if got := res.placeholder(placeholderLabel); got != "a" {
			t.Errorf("from %s: token_label %q, want a", c.remote, got)
		}
	}
}

// basic is the value of an Authorization header with Basic credentials.
func basic(userPass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userPass))
}

// Each credential form of issue 21, and its neighbours: a backend reads the
// token from it, so the plugin must too, and apply its policy: 401 from an
// address the token is not allowed from, 200 from one it is.
func TestCredentialFormsFindTheListedToken(t *testing.T) {
	h, _ := provisioned(t, extractConfig())
	auth := func(v string) []string { return []string{"Authorization", v} }
	tests := []struct {
		name   string
		target string
		header []string
	}{
		{"rails token, quoted", "/", auth(`Token token="` + tokA + `"`)},
		{"rails token, bare", "/", auth(`Token token=` + tokA)},
		{"rails token with options", "/", auth(`Token token="` + tokA + `", nonce="abc"`)},
		{"rails token, options first", "/", auth(`Token nonce="abc", token="` + tokA + `"`)},
		{"bearer token=", "/", auth("Bearer token=" + tokA)},
		{"bearer access_token=", "/", auth("Bearer access_token=" + tokA)},
		{"bearer token, comma", "/", auth("Bearer " + tokA + ",nonce=x")},
		{"bearer token, semicolon", "/", auth("Bearer " + tokA + ";x")},
		{"bearer token, quoted", "/", auth(`Bearer "` + tokA + `"`)},
		{"quoted with an escape", "/", auth(`Token token="` + tokA[:3] + `\` + tokA[3:] + `"`)},
		{"unterminated quote", "/", auth(`Token token="` + tokA)},
		{"token among other characters", "/", auth("Bearer (" + tokA + ")")},
		{"basic user", "/", auth(basic(tokA + ":"))},
		{"basic password", "/", auth(basic("api:" + tokA))},
		{"basic user without a colon", "/", auth(basic(tokA))},
		{"basic without padding", "/", auth(strings.TrimRight(basic(tokA+":x"), "="))},
		{"basic, scheme in lower case", "/", auth("basic " + strings.TrimPrefix(basic(tokA+":"), "Basic "))},
		{"custom header, key=value", "/", []string{"X-Api-Key", "key=" + tokA}},
		{"query value with a scheme", "/?api_key=Bearer%20" + tokA, nil},
		{"query value, quoted", "/?api_key=%22" + tokA + "%22", nil},
		{"query value, comma", "/?api_key=" + tokA + ",x", nil},
		{"cookie", "/", []string{"Cookie", "api_key=" + tokA}},
		{"cookie among others", "/", []string{"Cookie", "a=1; api_key=" + tokA + "; b=2"}},
		{"cookie, quoted", "/", []string{"Cookie", `api_key="` + tokA + `"`}},
		{"cookie, percent-encoded", "/", []string{"Cookie", "api_key=" + strings.ReplaceAll(tokA, "-", "%2D")}},
		{"cookie name in another case", "/", []string{"Cookie", "API_KEY=" + tokA}},
		{"cookie after a comma", "/", []string{"Cookie", "a=1, api_key=" + tokA}},
		{"cookie in a second Cookie line", "/", []string{"Cookie", "a=1", "Cookie", "api_key=" + tokA}},
		{"cookie, spaces around", "/", []string{"Cookie", "a=1 ;  api_key = " + tokA + " "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkTokenAPolicy(t, h, tt.target, tt.header) })
	}
}

// Two different listed tokens anywhere in a request's credentials are
// refused as ambiguous_token, however they are sent; a value too large to
// read is refused as credential_malformed, never read as missing, even
// under missing_token allow and unlisted_tokens any, and counted.
func TestCredentialRefusals(t *testing.T) {
	h, _ := provisioned(t, extractConfig())
	h.metrics = testMetrics(t)
	auth := func(v string) []string { return []string{"Authorization", v} }
	tests := []struct {
		name   string
		target string
		header []string
		reason string
	}{
		{"two tokens in one rails value", "/", auth(`Token token="` + tokA + `", nonce="` + tokB + `"`), ReasonAmbiguousToken},
		{"basic user and password", "/", auth(basic(tokA + ":" + tokB)), ReasonAmbiguousToken},
		{"header and cookie", "/", []string{"Authorization", "Bearer " + tokA, "Cookie", "api_key=" + tokB}, ReasonAmbiguousToken},
		{"two cookies", "/", []string{"Cookie", "api_key=" + tokA + "; API_KEY=" + tokB}, ReasonAmbiguousToken},
		{"the same token twice is one", "/", auth(`Token token="` + tokA + `", x=` + tokA), ReasonIPNotAllowed},
		{"a 17 KiB header line", "/", auth("Bearer " + strings.Repeat("t", 17<<10)), ReasonCredentialMalformed},
		{"a 17 KiB cookie", "/", []string{"Cookie", "api_key=" + strings.Repeat("t", 17<<10)}, ReasonCredentialMalformed},
		{"a listed token after too many candidates", "/", []string{"X-Api-Key", words(70) + tokA}, ReasonCredentialMalformed},
		{"an unlisted value with too many candidates", "/", auth(strings.TrimSpace(words(70))), ReasonCredentialMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(h, newRequest("198.51.100.1:1", tt.target, tt.header...))
			if got := res.placeholder(placeholderReason); got != tt.reason || res.status != http.StatusUnauthorized {
				t.Errorf("reason %q status %d, want %q 401", got, res.status, tt.reason)
			}
		})
	}
	if got := testutil.ToFloat64(h.metrics.byReason[reasonCredentialMalformed]); got != 4 {
		t.Errorf("credential_malformed counted %v times, want 4", got)
	}
}

// The bounds are the handler's: a higher max_credential_candidates reads
// what the default refuses, a lower max_credential_bytes refuses what the
// default reads.
func TestCredentialBoundsAreConfigurable(t *testing.T) {
	for _, tt := range []struct {
		name              string
		candidates, bytes int
		value             string
		res               tokenResult
	}{
		{"seventy words under the default", 0, 0, words(70) + tokA, tokenMalformed},
		{"seventy words under 200 candidates", 200, 0, words(70) + tokA, tokenFound},
		{"four hundred words under 1024 candidates", 1024, 0, words(400) + tokA, tokenFound},
		{"128 bytes under 64", 0, 64, strings.Repeat("t", 128), tokenMalformed},
		{"64 bytes under 64", 0, 64, strings.Repeat("t", 64), tokenFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := extractConfig()
			cfg.MaxCredentialCandidates, cfg.MaxCredentialBytes = tt.candidates, tt.bytes
			h, _ := provisioned(t, cfg)
			_, res := extractToken(extractRequest("/", "X-Api-Key", tt.value), h.sources, h.current.Load())
			if res != tt.res {
				t.Errorf("got %v, want %v", res, tt.res)
			}
		})
	}
	for _, tt := range []struct {
		name              string
		candidates, bytes int
		err               string
	}{
		{"too few candidates", 7, 0, "max_credential_candidates 7: want 8 to 1024"},
		{"too many candidates", 1025, 0, "max_credential_candidates 1025: want 8 to 1024"},
		{"too few bytes", 0, 63, "max_credential_bytes 63: want 64 to 1048576"},
		{"too many bytes", 0, 1<<20 + 1, "max_credential_bytes 1048577: want 64 to 1048576"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := CheckCredentialBounds(tt.candidates, tt.bytes); err == nil || err.Error() != tt.err {
				t.Errorf("got %v, want %q", err, tt.err)
			}
		})
	}
}

// Whether a token is listed does not change the work its request costs:
// a listed token and an unlisted one of the same length, in the same form,
// are looked up as the same number of candidates.
func TestCandidateWorkDoesNotDependOnListing(t *testing.T) {
	h, _ := provisioned(t, extractConfig())
	tab := h.current.Load()
	unlisted := strings.Map(func(r rune) rune {
		if r == 'a' {
			return 'z'
		}
		return r
	}, tokA)
	forms := []struct {
		name   string
		target string
		header func(tok string) []string
	}{
		{"bearer", "/", func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }},
		{"twice in one line", "/", func(tok string) []string { return []string{"Authorization", "Token " + tok + " " + tok} }},
		{"rails with options", "/", func(tok string) []string {
			return []string{"Authorization", `Token token="` + tok + `", nonce="` + tok + `"`}
		}},
		{"basic user and password", "/", func(tok string) []string { return []string{"Authorization", basic(tok + ":" + tok)} }},
		{"header and cookie", "/", func(tok string) []string { return []string{"X-Api-Key", tok, "Cookie", "api_key=" + tok} }},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			var n [2]int
			for i, tok := range []string{tokA, unlisted} {
				x := reader{v: tab, maxCandidates: DefaultMaxCredentialCandidates, maxBytes: DefaultMaxCredentialBytes}
				if !x.read(extractRequest(f.target, f.header(tok)...), h.sources.list) {
					t.Fatalf("%q refused: %v", tok, x.res)
				}
				if x.tok.listed != (i == 0) || i == 0 && x.tok.value != tok {
					t.Fatalf("read %q listed=%v, want %q listed=%v", x.tok.value, x.tok.listed, tok, i == 0)
				}
				n[i] = x.n
			}
			if n[0] != n[1] {
				t.Errorf("listed: %d lookups, unlisted: %d", n[0], n[1])
			}
		})
	}
}

// The rules of extractToken, case by case: which value is the token, and
// when there is none or more than one.
func TestExtractTokenRules(t *testing.T) {
	h, _ := provisioned(t, extractConfig())
	tab := h.current.Load()
	tests := []struct {
		name   string
		target string
		header []string
		res    tokenResult
		value  string
		listed bool
	}{
		// a header line: its primary value, the line and its words
		{"bearer token", "/", testkit.Bearer(tokA), tokenFound, tokA, true},
		{"scheme word in any case", "/", []string{"Authorization", "bEaReR " + tokA}, tokenFound, tokA, true},
		{"unlisted bearer token", "/", testkit.Bearer("nope"), tokenFound, "nope", false},
		{"basic credentials are no token", "/", []string{"Authorization", "Basic dXNlcjpwYXNz"}, tokenMissing, "", false},
		{"basic credentials beside a bearer line", "/", []string{"Authorization", "Basic dXNlcjpwYXNz", "Authorization", "Bearer " + tokA}, tokenFound, tokA, true},
		{"listed word of another scheme", "/", []string{"Authorization", "Basic " + tokA}, tokenFound, tokA, true},
		{"unlisted word of another scheme is no token", "/", []string{"Authorization", "Token nope"}, tokenMissing, "", false},
		{"scheme glued to an unlisted token is no token", "/", []string{"Authorization", "Bearernope"}, tokenMissing, "", false},
		{"listed word beats the unlisted primary", "/", []string{"Authorization", "Bearer nope " + tokA}, tokenFound, tokA, true},
		{"two listed words are ambiguous", "/", []string{"Authorization", "Bearer " + tokA + " " + tokB}, tokenAmbiguous, "", false},
		{"a listed word twice is one token", "/", []string{"Authorization", "Bearer " + tokA + "\t" + tokA}, tokenFound, tokA, true},
		{"listed primary with white space", "/", testkit.Bearer(tokSpace), tokenFound, tokSpace, true},
		{"listed whole value with white space", "/", []string{"X-Api-Key", tokSpace}, tokenFound, tokSpace, true},
		{"listed whole line of another scheme", "/", []string{"Authorization", tokSpace}, tokenFound, tokSpace, true},
		{"listed token with white space after another scheme word", "/", []string{"Authorization", "Token\t" + tokSpace}, tokenFound, tokSpace, true},
		{"listed token with white space after a word, no scheme", "/", []string{"X-Api-Key", "Bearer " + tokSpace}, tokenFound, tokSpace, true},
		{"unlisted value with white space is literal", "/", []string{"X-Api-Key", "nope x"}, tokenFound, "nope x", false},
		{"a comma ends a run", "/", testkit.Bearer(tokA + ","), tokenFound, tokA, true},
		{"unlisted runs do not count", "/", testkit.Bearer("nope,x=1"), tokenFound, "nope,x=1", false},
		// a source without a scheme reads words too
		{"bearer scheme in a header without one", "/", []string{"X-Api-Key", "Bearer " + tokA}, tokenFound, tokA, true},
		// across lines and sources
		{"listed words of two sources differ", "/", []string{"Authorization", "Token " + tokA, "X-Api-Key", tokB}, tokenAmbiguous, "", false},
		{"listed word and query agree", "/?api_key=" + tokA, []string{"Authorization", "Token " + tokA}, tokenFound, tokA, true},
		{"unlisted primary beside a listed token elsewhere", "/?api_key=" + tokA, testkit.Bearer("nope"), tokenAmbiguous, "", false},
		// header names
		{"underscore header name, upper case", "/", []string{"X_API_KEY", tokA}, tokenFound, tokA, true},
		{"underscore header name, unlisted value", "/", []string{"X_api_key", "nope"}, tokenFound, "nope", false},
		{"underscore header name disagrees with the header", "/", []string{"X-Api-Key", tokA, "X_api_key", tokB}, tokenAmbiguous, "", false},
		{"underscore header name agrees with the header", "/", []string{"X-Api-Key", tokA, "X_api_key", tokA}, tokenFound, tokA, true},
		{"dotted header name", "/", []string{"X.api.key", tokA}, tokenFound, tokA, true},
		{"similar header name ignored", "/", []string{"X_api_keys", tokA}, tokenMissing, "", false},
		// query keys and values
		{"query key with brackets and text", "/?api_key[primary]=" + tokA, nil, tokenFound, tokA, true},
		{"query key with lower-case escapes", "/?api_key%5b%5d=" + tokA, nil, tokenFound, tokA, true},
		{"unclosed bracket is another key", "/?api_key[=" + tokA, nil, tokenMissing, "", false},
		{"bracket inside the name is another key", "/?api[x]_key=" + tokA, nil, tokenMissing, "", false},
		{"longer query key ignored", "/?api_key2=" + tokA, nil, tokenMissing, "", false},
		{"query keys differing in case disagree", "/?api_key=" + tokA + "&API_KEY=" + tokB, nil, tokenAmbiguous, "", false},
		{"semicolon pairs disagree", "/?api_key=" + tokA + ";api_key=" + tokB, nil, tokenAmbiguous, "", false},
		{"undecodable value is still a value", "/?api_key=%zz", nil, tokenFound, "%zz", false},
		{"plus is a space", "/?api_key=" + strings.ReplaceAll(tokSpace, " ", "+"), nil, tokenFound, tokSpace, true},
		{"plus read as itself finds a listed token", "/?api_key=" + tokPlus, nil, tokenFound, tokPlus, true},
		{"escaped plus", "/?api_key=" + strings.ReplaceAll(tokPlus, "+", "%2B"), nil, tokenFound, tokPlus, true},
		{"plus read both ways", "/?api_key=nope+x", nil, tokenFound, "nope x", false},
		// the bound on lookups
		{"thirty words are read", "/", []string{"X-Api-Key", strings.Repeat("w ", 30) + tokA}, tokenFound, tokA, true},
		{"the same word twenty times is one run", "/", []string{"X-Api-Key", strings.Repeat("w ", 20) + tokA}, tokenFound, tokA, true},
		{"seventy distinct words are malformed", "/", []string{"X-Api-Key", words(70) + tokA}, tokenMalformed, "", false},
		{"a value over 16 KiB is malformed", "/", testkit.Bearer(strings.Repeat("t", 16<<10)), tokenMalformed, "", false},
		{"a query value over 16 KiB is malformed", "/?api_key=" + strings.Repeat("t", 16<<10+1), nil, tokenMalformed, "", false},
		{"many lines of one value are read", "/", repeat(200, "X-Api-Key", tokA), tokenFound, tokA, true},
		{"many lines of one other scheme are read once", "/", repeat(100, "Authorization", "Basic dXNlcjpwYXNz"), tokenMissing, "", false},
		{"many distinct lines are malformed", "/", distinctLines(100, "Authorization", "Basic "), tokenMalformed, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, res := extractToken(extractRequest(tt.target, tt.header...), h.sources, tab)
			if res != tt.res || tok.value != tt.value || tok.listed != tt.listed {
				t.Errorf("got %v %q listed=%v, want %v %q listed=%v", res, tok.value, tok.listed, tt.res, tt.value, tt.listed)
			}
			if tb, p := tab.policy(tok.policy); tok.listed && tb.label(p).String() == "" {
				t.Error("listed token without a policy label")
			}
		})
	}
}

// words returns n distinct words, each followed by a space.
func words(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "w%d ", i)
	}
	return b.String()
}

// distinctLines returns n header lines of name, prefix and a number.
func distinctLines(n int, name, prefix string) []string {
	var h []string
	for i := range n {
		h = append(h, name, fmt.Sprintf("%s%d", prefix, i))
	}
	return h
}

func repeat(n int, name, value string) []string {
	var h []string
	for range n {
		h = append(h, name, value)
	}
	return h
}

// A source configured with a header name that has '_' reads the header
// spelled with '-' too (a server whose expected_underscore_headers keeps
// X_Api_Key drops X-Api-Key, but a proxy in front may not).
func TestUnderscoreSourceReadsHyphenHeader(t *testing.T) {
	h, _ := provisioned(t, &Handler{
		TokenSources: []TokenSource{{Header: "X_Api_Key"}},
		Tokens:       map[string]*TokenPolicy{"a": {Token: tokA, Allow: []string{"203.0.113.0/24"}}},
	})
	tab := h.current.Load()
	for _, tt := range []struct {
		name, header string
	}{
		{"as configured", "X_api_key"},
		{"with hyphens", "X-Api-Key"},
		{"mixed", "X-Api_key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, res := extractToken(extractRequest("/", tt.header, tokA), h.sources, tab)
			if res != tokenFound || tok.value != tokA {
				t.Errorf("got %v %q, want %q", res, tok.value, tokA)
			}
		})
	}
}

// What a line costs in hashes (about 80 ns each): the bound on lookups and
// the README's figure rest on it.
func TestHeaderLineLookups(t *testing.T) {
	tab := newView(newTableBuilder(0).finish())
	for _, tt := range []struct {
		name, line, scheme string
		lookups            int
	}{
		{"bearer token: the token and the line", "Bearer " + tokA, "Bearer", 2},
		{"header without a scheme: the value", tokA, "", 1},
		{"another scheme: the line and both words", "Token dXNlcjpwYXNz", "Bearer", 3},
		{"basic: the line, both words, user:password, user and password", "Basic dXNlcjpwYXNz", "Bearer", 6},
		{"bearer in a header without a scheme: the line and the words", "Bearer " + tokA, "", 3},
		{"glued scheme: the one word", "Bearer" + tokA, "Bearer", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			x := reader{v: tab, maxCandidates: DefaultMaxCredentialCandidates, maxBytes: DefaultMaxCredentialBytes}
			if !x.headerLine(tt.line, tt.scheme) {
				t.Fatal("refused")
			}
			if x.n != tt.lookups {
				t.Errorf("%d lookups, want %d", x.n, tt.lookups)
			}
		})
	}
}

// Reading the token allocates nothing on the way a Bearer token or an
// X-Api-Key header is read, respelled header names included.
func TestExtractTokenAllocs(t *testing.T) {
	h, _ := provisioned(t, extractConfig())
	tab := h.current.Load()
	for _, tt := range []struct {
		name   string
		target string
		header []string
	}{
		{"bearer", "/", testkit.Bearer(tokA)},
		{"other scheme", "/", []string{"Authorization", "Token " + tokA}},
		{"underscore header name", "/", []string{"X_api_key", tokA, "Accept", "*/*"}},
		{"query key folded", "/?x=1;API_KEY[]=" + tokA, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := extractRequest(tt.target, tt.header...)
			if n := testing.AllocsPerRun(100, func() { extractToken(req, h.sources, tab) }); n != 0 {
				t.Errorf("%v allocations", n)
			}
		})
	}
}

// Every rune unicode.IsSpace calls white space separates words in UTF-8,
// every byte it calls white space read as Latin-1 does too, and nothing
// else ASCII but 0x1c-0x1f.
func TestSpaceLenAgreesWithUnicode(t *testing.T) {
	for r := rune(0); r <= unicode.MaxRune; r++ {
		s := string(r) + "x"
		want := 0
		if unicode.IsSpace(r) || 0x1c <= r && r <= 0x1f {
			want = utf8.RuneLen(r)
		}
		if got := spaceLen(s); got != want {
			t.Errorf("spaceLen(%q) = %d, want %d", s, got, want)
		}
	}
	for c := 0x80; c < 0x100; c++ {
		s := string([]byte{byte(c), 'x'})
		if got, want := spaceLen(s) == 1, unicode.IsSpace(rune(c)); got != want {
			t.Errorf("spaceLen(%q) == 1 is %v, want %v (Latin-1)", s, got, want)
		}
	}
}

// nextWord ends a word at white space wherever it falls, inside the eight-
// byte groups plainPrefix skips and after them, and never inside plain
// bytes or a character with no Latin-1 space byte in it (é, not à).
func TestNextWordFindsSpaceAnywhere(t *testing.T) {
	const plain = "!0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz~\x7f"
	for _, sep := range []string{" ", "\t", "\x1c", "\xa0", "\x85", "\u00a0", "\u2003", "\u3000"} {
		for i := 1; i <= 20; i++ {
			s := plain[:i] + sep + "rest"
			word, rest := nextWord(s)
			if word != plain[:i] || rest != "rest" {
				t.Errorf("nextWord(%q) = %q, %q; want %q, %q", s, word, rest, plain[:i], "rest")
			}
		}
	}
	for _, s := range []string{plain, plain + "\u00e9", "\u00e9" + plain, plain[:13] + "\u00e9" + plain} {
		if word, rest := nextWord(s); word != s || rest != "" {
			t.Errorf("nextWord(%q) = %q, %q; want one word", s, word, rest)
		}
	}
}

// TestRepeatedLinesAreBounded: lines that repeat the same candidates
// (alternating, so that no line is the same as the one before it) reach no
// bound on distinct candidates, but their lookups are bounded: the request
// is refused as credential_malformed rather than read at any length.
func TestRepeatedLinesAreBounded(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	a := "Bearer " + tokA + strings.Repeat(",x", 2000)
	b := "Bearer " + tokA + strings.Repeat(";x", 2000)
	var header []string
	for i := range 60 {
		header = append(header, "Authorization", map[bool]string{true: a, false: b}[i%2 == 0])
	}
	if got := serve(h, newRequest("203.0.113.9:1", "/", header...)).placeholder(placeholderReason); got != ReasonCredentialMalformed {
		t.Errorf("reason %q, want %q", got, ReasonCredentialMalformed)
	}
	// A few repeated lines are read as ever.
	few := []string{"Authorization", "Bearer " + tokA, "Authorization", "Bearer " + tokA}
	if got := serve(h, newRequest("203.0.113.9:1", "/", few...)).placeholder(placeholderReason); got != ReasonAllowed {
		t.Errorf("two lines of one token: reason %q, want allowed", got)
	}
}
