package ipallowlist

import (
	"bufio"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzExtractToken sends a in the Authorization header and b in the api_key
// query parameter, with no token listed, and checks the outcome against the
// rule: one distinct non-empty value is the token, none is missing, two are
// ambiguous. (FuzzLenientParserAgrees covers listed tokens.)
// Seeds: testdata/fuzz/tokens.txt, a pair of quoted strings per line.
func FuzzExtractToken(f *testing.F) {
	for _, seed := range seedLines(f, "tokens.txt") {
		f.Add(seed[0], seed[1])
	}
	f.Add("tok\x00en", "tok\x00en")
	f.Add("tok\r\nX-Injected: 1", "")
	f.Add(strings.Repeat("t", 64<<10), strings.Repeat("t", 64<<10))
	sources, err := compileSources([]TokenSource{{Header: "Authorization", Scheme: "Bearer"}, {Query: "api_key"}})
	if err != nil {
		f.Fatal(err)
	}
	unlisted := newView(newTableBuilder(0).finish())
	f.Fuzz(func(t *testing.T, a, b string) {
		req, err := http.NewRequest(http.MethodGet, "http://x/?api_key="+url.QueryEscape(b), nil)
		if err != nil {
			t.Skip()
		}
		req.Header["Authorization"] = []string{"Bearer " + a}
		tok, res := extractToken(req, sources, unlisted)
		if res == tokenMalformed {
			// Over the bounds: refused, as FuzzLenientParserAgrees
			// accepts; a value within them must be read.
			if len("Bearer "+a) <= DefaultMaxCredentialBytes && len(url.QueryEscape(b)) <= DefaultMaxCredentialBytes && !manySeparators(a+b) {
				t.Fatalf("a=%.80q b=%.80q: malformed", a, b)
			}
			return
		}

		ta := strings.TrimLeft(a, " ")
		var want tokenResult
		var wantTok string
		switch {
		case ta == "" && b == "":
			want = tokenMissing
		case ta == "" || b == "" || ta == b:
			want, wantTok = tokenFound, ta+b
			if ta == b {
				wantTok = ta
			}
		default:
			want = tokenAmbiguous
		}
		if res != want || tok.value != wantTok {
			t.Fatalf("a=%.80q b=%.80q: got %v %.80q, want %v %.80q", a, b, res, tok.value, want, wantTok)
		}
	})
}

// manySeparators reports whether s may yield more candidates than the
// default bound: each byte that is not a token68 character may end a run
// and start a quoted string, and a value of a few runs yields no more
// than about ten candidates per run.
func manySeparators(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		if !token68[s[i]] {
			n++
		}
	}
	return n > 4
}

// FuzzLenientParserAgrees builds a request from fuzzed header lines
// ("Name: value", one per line) and a fuzzed query, parsed by Go's HTTP/1
// parser and checked as Go's server checks it, and reads it with a
// deliberately lenient parser (lenientTokens). Whenever that parser finds a
// listed token, extractToken must find the same token or refuse the
// request as ambiguous: a backend must never find a listed token the
// plugin did not apply the policy of.
// Seeds: testdata/fuzz/lenient.txt, headers and query per line.
func FuzzLenientParserAgrees(f *testing.F) {
	for _, seed := range seedLines(f, "lenient.txt") {
		f.Add(seed[0], seed[1])
	}
	h, _ := provisioned(f, extractConfig())
	tab := h.current.Load()
	listed := map[string]bool{tokA: true, tokB: true, tokSpace: true, tokPlus: true}
	f.Fuzz(func(t *testing.T, headers, query string) {
		raw := "GET /?" + query + " HTTP/1.1\r\nHost: x\r\n" + strings.ReplaceAll(headers, "\n", "\r\n") + "\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil || !serverAccepts(req) {
			t.Skip()
		}
		tok, res := extractToken(req, h.sources, tab)
		for _, want := range lenientTokens(req, listed) {
			if res != tokenAmbiguous && res != tokenMalformed && (res != tokenFound || tok.value != want) {
				t.Fatalf("the lenient parser finds listed token %q; extractToken: %v %q", want, res, tok.value)
			}
		}
	})
}

// serverAccepts reports whether Go's server would serve req: it refuses
// header names that are not tokens and values with control characters
// other than tab.
func serverAccepts(req *http.Request) bool {
	for name, lines := range req.Header {
		if !validHeaderName(name) {
			return false
		}
		for _, v := range lines {
			for i := 0; i < len(v); i++ {
				if v[i] < ' ' && v[i] != '\t' || v[i] == 0x7f {
					return false
				}
			}
		}
	}
	return true
}

// lenientTokens returns the listed tokens a lenient backend could read from
// req, for extractConfig's sources: in any header named Authorization or
// X-Api-Key without regard to case or to '_' for '-', the whole value,
// every word and what follows the first word, split at white space as Go
// (UTF-8), Python (Latin-1) and a plain split on spaces and tabs see it;
// in the query, split at '&' and ';', the value of every key that is
// api_key without regard to case once percent-decoded and stripped of
// "[...]", decoded with '+' as a space and as itself.
func lenientTokens(req *http.Request, listed map[string]bool) []string {
	var cands []string
	for name, lines := range req.Header {
		n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		if n != "authorization" && n != "x-api-key" {
			continue
		}
		for _, line := range lines {
			cands = append(cands, line)
			for _, isSpace := range []func(string) int{utf8Space, latin1Space, plainSpace} {
				words := splitWords(line, isSpace)
				cands = append(cands, words...)
				if len(words) > 1 {
					// What follows the first word, trimmed as the
					// words are.
					rest := line[strings.Index(line, words[0])+len(words[0]):]
					for rest != "" && isSpace(rest) > 0 {
						rest = rest[isSpace(rest):]
					}
					cands = append(cands, rest)
				}
			}
		}
	}
	for _, pair := range strings.FieldsFunc(req.URL.RawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		k, v, _ := strings.Cut(pair, "=")
		k = lenientUnescape(k, true)
		if i := strings.IndexByte(k, '['); i >= 0 && strings.Contains(k[i:], "]") {
			k = k[:i]
		}
		if strings.EqualFold(k, "api_key") {
			cands = append(cands, lenientUnescape(v, true), lenientUnescape(v, false))
		}
	}
	var found []string
	for _, c := range cands {
		if listed[c] {
			found = append(found, c)
		}
	}
	return found
}

func splitWords(s string, isSpace func(string) int) []string {
	var words []string
	for i := 0; i < len(s); {
		if n := isSpace(s[i:]); n > 0 {
			i += n
			continue
		}
		j := i
		for j < len(s) && isSpace(s[j:]) == 0 {
			j++
		}
		words = append(words, s[i:j])
		i = j
	}
	return words
}

func utf8Space(s string) int {
	r, n := utf8.DecodeRuneInString(s)
	if unicode.IsSpace(r) {
		return n
	}
	return 0
}

func latin1Space(s string) int {
	if unicode.IsSpace(rune(s[0])) || 0x1c <= s[0] && s[0] <= 0x1f {
		return 1
	}
	return 0
}

func plainSpace(s string) int {
	if s[0] == ' ' || s[0] == '\t' {
		return 1
	}
	return 0
}

// lenientUnescape decodes what escapes it can and keeps the rest, as
// Python's unquote and PHP's urldecode do.
func lenientUnescape(s string, plusIsSpace bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '+' && plusIsSpace:
			b.WriteByte(' ')
		case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
