package ipallowlist

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// source is a compiled TokenSource: the header name canonicalised once, so
// the request path indexes r.Header directly.
type source struct {
	header string
	scheme string
	query  string
}

var defaultSources = []TokenSource{{Header: "Authorization", Scheme: "Bearer"}}

func compileSources(cfg []TokenSource) ([]source, error) {
	if len(cfg) == 0 {
		cfg = defaultSources
	}
	out := make([]source, 0, len(cfg))
	for i, s := range cfg {
		if err := CheckTokenSource(s); err != nil {
			return nil, fmt.Errorf("token_sources[%d]: %w", i, err)
		}
		out = append(out, source{header: http.CanonicalHeaderKey(s.Header), scheme: s.Scheme, query: s.Query})
	}
	return out, nil
}

// CheckTokenSource refuses a source that could never carry a token.
func CheckTokenSource(s TokenSource) error {
	switch {
	case s.Header != "" && s.Query != "":
		return errors.New("set header or query, not both")
	case s.Header != "":
		if !validHeaderName(s.Header) {
			return fmt.Errorf("header %q is not a valid header name", s.Header)
		}
		if strings.ContainsAny(s.Scheme, " \t") {
			return fmt.Errorf("scheme %q must be one word", s.Scheme)
		}
	case s.Query != "":
		if s.Scheme != "" {
			return errors.New("scheme applies to headers only")
		}
	default:
		return errors.New("set header or query")
	}
	return nil
}

func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != ""
}

// tokenResult is what the sources yielded.
type tokenResult int

const (
	tokenMissing tokenResult = iota
	tokenFound
	tokenAmbiguous
)

// extractToken reads every source. One distinct value is the token; none
// is missing; more than one distinct value is ambiguous. Values are taken
// byte for byte: only the scheme word and the spaces after it are removed.
func extractToken(r *http.Request, sources []source) (string, tokenResult) {
	var tok string
	res := tokenMissing
	add := func(v string) bool {
		if v == "" {
			return true
		}
		if res == tokenFound && v != tok {
			res = tokenAmbiguous
			return false
		}
		tok, res = v, tokenFound
		return true
	}
	for i := range sources {
		s := &sources[i]
		if s.header != "" {
			for _, line := range r.Header[s.header] {
				if !add(afterScheme(line, s.scheme)) {
					return "", tokenAmbiguous
				}
			}
			continue
		}
		q := r.URL.RawQuery
		for q != "" {
			var pair string
			pair, q, _ = strings.Cut(q, "&")
			k, v, _ := strings.Cut(pair, "=")
			if !queryKeyIs(k, s.query) {
				continue
			}
			if strings.ContainsAny(v, "%+") {
				u, err := url.QueryUnescape(v)
				if err != nil {
					// A value we cannot decode is still a value: it can
					// match no token, so it must not read as missing.
					u = v
				}
				v = u
			}
			if !add(v) {
				return "", tokenAmbiguous
			}
		}
	}
	return tok, res
}

// afterScheme returns the credentials after "<scheme> " in a header line, or
// the whole line when no scheme is configured. A line with another scheme
// yields nothing: it is not this source's token.
func afterScheme(line, scheme string) string {
	if scheme == "" {
		return line
	}
	if len(line) <= len(scheme) || line[len(scheme)] != ' ' || !equalFoldASCII(line[:len(scheme)], scheme) {
		return ""
	}
	return strings.TrimLeft(line[len(scheme):], " ")
}

func queryKeyIs(k, want string) bool {
	if !strings.ContainsAny(k, "%+") {
		return k == want
	}
	u, err := url.QueryUnescape(k)
	return err == nil && u == want
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
