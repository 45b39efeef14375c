package ipallowlist

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzExtractToken sends a in the Authorization header and b in the api_key
// query parameter, and checks the outcome against the rule: one distinct
// non-empty value is the token, none is missing, two are ambiguous.
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
	f.Fuzz(func(t *testing.T, a, b string) {
		req, err := http.NewRequest(http.MethodGet, "http://x/?api_key="+url.QueryEscape(b), nil)
		if err != nil {
			t.Skip()
		}
		req.Header["Authorization"] = []string{"Bearer " + a}
		tok, res := extractToken(req, sources)

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
		if res != want || tok != wantTok {
			t.Fatalf("a=%q b=%q: got %v %q, want %v %q", a, b, res, tok, want, wantTok)
		}
	})
}
