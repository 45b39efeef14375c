package ipallowlist

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
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
	unlisted := newTableBuilder(0).finish()
	f.Fuzz(func(t *testing.T, a, b string) {
		if manyWords(a) {
			t.Skip() // more words than maxLookups: refused, as FuzzLenientParserAgrees checks
		}
		req, err := http.NewRequest(http.MethodGet, "http://x/?api_key="+url.QueryEscape(b), nil)
		if err != nil {
			t.Skip()
		}
		req.Header["Authorization"] = []string{"Bearer " + a}
		tok, res := extractToken(req, sources, unlisted)

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
			t.Fatalf("a=%q b=%q: got %v %q, want %v %q", a, b, res, tok.value, want, wantTok)
		}
	})
}

// manyWords reports whether s may have more than maxLookups/2 words: every
// white space is a byte below '!' or above '~'.
func manyWords(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			n++
		}
	}
	return n > maxLookups/2
}
