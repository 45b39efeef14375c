package ipallowlist

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"
)

// source is a compiled TokenSource: the header name canonicalised once, so
// the request path indexes r.Header directly.
type source struct {
	header string
	scheme string
	query  string
	// respelled: the header name has '-', '_' or '.', so a request may
	// carry it under another name that backends read as the same header
	// (X_Api_Key for X-Api-Key). plain: the name has no '_' or '.', so
	// only a name with one can be such a respelling.
	respelled, plain bool
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
		out = append(out, source{
			header:    http.CanonicalHeaderKey(s.Header),
			scheme:    s.Scheme,
			query:     s.Query,
			respelled: strings.ContainsAny(s.Header, "-_."),
			plain:     !strings.ContainsAny(s.Header, "_."),
		})
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

// token is a value the sources yielded, looked up in the view.
type token struct {
	value  string
	policy uint32 // the view's policy id (view.policy), when listed
	listed bool
}

// maxLookups bounds the candidates one request's credentials are looked
// up as. Every word of a credential header is a candidate, so without a
// bound a client could make one request cost thousands of hashes; a
// request that needs more lookups is refused as ambiguous rather than
// read in part.
const maxLookups = 64

// extractToken reads every source and looks the candidates up in v, so
// that the plugin reads a credential wherever a lenient backend would find
// one:
//
//   - A header line yields what is read after "<scheme> " (the whole line
//     with no scheme configured), its primary value; the line itself, what
//     follows its first word (any scheme word) and each of its words are
//     candidates too. If any of these is a listed token, the listed ones
//     are the line's values and an unlisted primary does not count;
//     otherwise the primary is, listed or not.
//   - Headers whose names equal a header source's when '-', '_' and '.'
//     are the same and case is ignored are read as that source.
//   - Query pairs are separated by '&' or ';'; keys are matched as
//     queryKeyIs says; a value is percent-decoded ('+' a space), and read
//     with '+' kept as a candidate too.
//
// One distinct value is the token; none is missing; more than one, or
// more than maxLookups lookups, is ambiguous. Values are compared byte for
// byte.
func extractToken(r *http.Request, sources []source, v *view) (token, tokenResult) {
	x := reader{v: v}
	respelled := false
	for i := range sources {
		s := &sources[i]
		if s.header != "" {
			respelled = respelled || s.respelled
			for _, line := range r.Header[s.header] {
				if !x.headerLine(line, s.scheme) {
					return token{}, tokenAmbiguous
				}
			}
			continue
		}
		q := r.URL.RawQuery
		for q != "" {
			pair := q
			if end := strings.IndexAny(q, "&;"); end >= 0 {
				pair, q = q[:end], q[end+1:]
			} else {
				q = ""
			}
			k, value, _ := strings.Cut(pair, "=")
			if queryKeyIs(k, s.query) && !x.queryValue(value) {
				return token{}, tokenAmbiguous
			}
		}
	}
	if respelled {
		// Caddy drops header names with '_' or '.' unless the server's
		// expected_underscore_headers or expected_dot_headers keeps them,
		// and then drops the spelling with '-' instead.
		for name, lines := range r.Header {
			for i := range sources {
				s := &sources[i]
				if !s.respelled || name == s.header || !sameHeaderName(name, s) {
					continue
				}
				for _, line := range lines {
					if !x.headerLine(line, s.scheme) {
						return token{}, tokenAmbiguous
					}
				}
			}
		}
	}
	return x.tok, x.res
}

// reader collects the values of one request's sources.
type reader struct {
	v       *view
	tok     token
	res     tokenResult
	lookups int
}

// lookup hashes s and looks it up. It returns false, with the result
// ambiguous, once the request has used up its lookups.
func (x *reader) lookup(s string) (token, bool) {
	if x.res == tokenFound && s == x.tok.value {
		return x.tok, true
	}
	if x.lookups == maxLookups {
		x.res = tokenAmbiguous
		return token{}, false
	}
	x.lookups++
	i, listed := x.v.find(sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s))))
	return token{value: s, policy: i, listed: listed}, true
}

// add records one value of the request; false: it differs from one
// recorded before, and the result is ambiguous.
func (x *reader) add(t token) bool {
	if x.res == tokenFound && t.value != x.tok.value {
		x.res = tokenAmbiguous
		return false
	}
	x.tok, x.res = t, tokenFound
	return true
}

// candidate looks s up as a further reading of a header line or query
// value; found is the listed token that reading has yielded so far. A
// second, different listed token makes the request ambiguous (false).
func (x *reader) candidate(s string, found *token) bool {
	if found.listed && s == found.value {
		return true
	}
	c, ok := x.lookup(s)
	switch {
	case !ok:
		return false
	case !c.listed:
		return true
	case found.listed:
		x.res = tokenAmbiguous
		return false
	}
	*found = c
	return true
}

// headerLine reads one line of a header source. It hashes the primary; the
// whole line and what follows the first word, each when it is more than one
// word and not the primary; and each word but the scheme word and the
// primary. "Bearer <tok>" costs two hashes: the token and the line.
func (x *reader) headerLine(line, scheme string) bool {
	primary := afterScheme(line, scheme)
	var p, found token
	if primary != "" {
		var ok bool
		if p, ok = x.lookup(primary); !ok {
			return false
		}
		if p.listed {
			found = p
		}
	}
	// One pass over the words. The whole line and what follows the first
	// word are looked up only when they are more than one word (a word is
	// looked up as such) and not the primary.
	word, next := nextWord(line)
	if word != line && line != primary && !x.candidate(line, &found) {
		return false
	}
	tail := next
	for n := 0; word != ""; n++ {
		if n == 1 && word != tail && tail != primary && !x.candidate(tail, &found) {
			return false
		}
		if word != primary && (scheme == "" || !equalFoldASCII(word, scheme)) && !x.candidate(word, &found) {
			return false
		}
		word, next = nextWord(next)
	}
	switch {
	case found.listed:
		return x.add(found)
	case primary != "":
		return x.add(p)
	}
	return true
}

// queryValue reads the raw value of one query pair of a query source.
func (x *reader) queryValue(raw string) bool {
	if raw == "" {
		return true
	}
	primary := raw
	if strings.ContainsAny(raw, "%+") {
		// A value we cannot decode is still a value: it can match no
		// token, so it must not read as missing.
		if u, err := url.QueryUnescape(raw); err == nil {
			primary = u
		}
	}
	p, ok := x.lookup(primary)
	if !ok {
		return false
	}
	var found token
	if p.listed {
		found = p
	}
	// Backends that decode queries as paths read '+' as itself.
	if strings.IndexByte(raw, '+') >= 0 {
		if u, err := url.PathUnescape(raw); err == nil && u != primary && !x.candidate(u, &found) {
			return false
		}
	}
	if found.listed {
		return x.add(found)
	}
	return x.add(p)
}

// afterScheme returns the credentials after "<scheme> " in a header line, or
// the whole line when no scheme is configured: the line's primary value. A
// line with another scheme has none (headerLine still reads its words).
func afterScheme(line, scheme string) string {
	if scheme == "" {
		return line
	}
	if len(line) <= len(scheme) || line[len(scheme)] != ' ' || !equalFoldASCII(line[:len(scheme)], scheme) {
		return ""
	}
	return strings.TrimLeft(line[len(scheme):], " ")
}

// spaceLen returns the length of the white space s starts with, 0 if
// none. White space is what backends split credentials on: what
// unicode.IsSpace says, of the bytes read as Latin-1 (Python's str.split
// and Node.js's \s on headers decoded as Latin-1) and read as UTF-8 (Go's
// strings.Fields), and the separators 0x1c-0x1f (Python's str.split).
func spaceLen(s string) int {
	switch spaceBytes[s[0]] {
	case notSpace:
		return 0
	case space:
		return 1
	}
	if r, n := utf8.DecodeRuneInString(s); unicode.IsSpace(r) {
		return n
	}
	return 0
}

// spaceBytes classifies each byte for spaceLen, so that the bytes of a
// token cost one load each.
var spaceBytes = func() (t [256]uint8) {
	for c := range 256 {
		if unicode.IsSpace(rune(c)) || 0x1c <= c && c <= 0x1f {
			t[c] = space
		}
	}
	for _, rg := range unicode.White_Space.R16 {
		for r := rune(rg.Lo); r <= rune(rg.Hi); r += rune(rg.Stride) {
			if r >= utf8.RuneSelf {
				t[utf8.AppendRune(nil, r)[0]] = maybeSpace
			}
		}
	}
	return t
}()

const (
	notSpace   = iota
	space      // one byte of white space
	maybeSpace // the first byte of some UTF-8 white space
)

// nextWord returns the first word of s and what follows it, from the
// next word on.
func nextWord(s string) (word, rest string) {
	s = trimSpace(s)
	// Byte by byte after the plain prefix, so a Latin-1 space inside a
	// UTF-8 character ends the word too.
	i := plainPrefix(s)
	for i < len(s) && (spaceBytes[s[i]] == notSpace || spaceLen(s[i:]) == 0) {
		i++
	}
	return s[:i], trimSpace(s[i:])
}

// plainPrefix returns the length of the longest prefix of s, in groups of
// eight bytes, that holds only bytes from '!' to 0x7f, none of which is or
// starts white space. Eight at a time, as a token's bytes mostly are.
func plainPrefix(s string) int {
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	i := 0
	for ; i+8 <= len(b); i += 8 {
		// A byte below '!' borrows into its top bit; a byte from 0x80
		// has it set already.
		if x := binary.LittleEndian.Uint64(b[i:]); (x-0x2121212121212121|x)&0x8080808080808080 != 0 {
			break
		}
	}
	return i
}

// trimSpace returns s without the white space it starts with.
func trimSpace(s string) string {
	for s != "" {
		n := spaceLen(s)
		if n == 0 {
			break
		}
		s = s[n:]
	}
	return s
}

// sameHeaderName reports whether the request header name is s's header
// when '-', '_' and '.' are the same and case is ignored, as CGI, WSGI,
// PHP and some frameworks read header names. Go canonicalises the case of
// the names it reads, so a name without '_' or '.' is s's only if it is
// spelled exactly as s's.
func sameHeaderName(name string, s *source) bool {
	if len(name) != len(s.header) || s.plain && strings.IndexAny(name, "_.") < 0 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if foldHeaderByte(name[i]) != foldHeaderByte(s.header[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	switch {
	case c == '_' || c == '.':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// queryKeyIs reports whether the raw query key k names the parameter want
// as some backend reads it: percent-decoded ('+' a space; an invalid
// escape kept as it is), case ignored (ASP.NET), "[...]" at the end dropped
// (PHP, Rails and Node's qs read key[] and key[x] as key), leading spaces
// dropped and '.', ' ' and an unclosed '[' read as '_' (PHP).
func queryKeyIs(k, want string) bool {
	i := 0
	for i < len(k) {
		c, n := queryKeyByte(k[i:])
		if c != ' ' {
			break
		}
		i += n
	}
	j := 0
	for i < len(k) {
		c, n := queryKeyByte(k[i:])
		if c == '[' && closes(k[i+n:]) {
			break
		}
		if j == len(want) || foldQueryKeyByte(c) != foldQueryKeyByte(want[j]) {
			return false
		}
		i += n
		j++
	}
	return j == len(want)
}

// queryKeyByte decodes the first byte of the raw query key s and says how
// many bytes of s it took.
func queryKeyByte(s string) (byte, int) {
	switch {
	case s[0] == '+':
		return ' ', 1
	case s[0] == '%' && len(s) > 2 && isHex(s[1]) && isHex(s[2]):
		return unhex(s[1])<<4 | unhex(s[2]), 3
	}
	return s[0], 1
}

// closes reports whether the raw query key rest holds a ']'.
func closes(rest string) bool {
	for i := 0; i < len(rest); {
		c, n := queryKeyByte(rest[i:])
		if c == ']' {
			return true
		}
		i += n
	}
	return false
}

func foldQueryKeyByte(c byte) byte {
	switch {
	case c == '.' || c == ' ' || c == '[':
		return '_'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
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
