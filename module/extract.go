package ipallowlist

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
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
	cookie string
	// respelled: the header name has '-', '_' or '.', so a request may
	// carry it under another name that backends read as the same header
	// (X_Api_Key for X-Api-Key). plain: the name has no '_' or '.', so
	// only a name with one can be such a respelling.
	respelled, plain bool
}

// sourceSet is how a handler reads credentials: its sources, and the
// bounds on what one request's credentials may cost.
type sourceSet struct {
	list []source
	// maxCandidates bounds the distinct candidates one request's values
	// are looked up as (each a SHA-256 hash); maxBytes bounds each value.
	// A request over either is refused as credential_malformed.
	maxCandidates, maxBytes int
}

// The defaults of max_credential_candidates and max_credential_bytes, and
// the ranges they may be set in.
const (
	DefaultMaxCredentialCandidates = 64
	DefaultMaxCredentialBytes      = 16 << 10
	minCredentialCandidates        = 8
	maxCredentialCandidates        = 1024
	minCredentialBytes             = 64
	maxCredentialBytes             = 1 << 20
)

var defaultSources = []TokenSource{{Header: "Authorization", Scheme: "Bearer"}}

// compileSources compiles cfg with the default bounds.
func compileSources(cfg []TokenSource) (sourceSet, error) {
	if len(cfg) == 0 {
		cfg = defaultSources
	}
	out := sourceSet{
		list:          make([]source, 0, len(cfg)),
		maxCandidates: DefaultMaxCredentialCandidates,
		maxBytes:      DefaultMaxCredentialBytes,
	}
	for i, s := range cfg {
		if err := CheckTokenSource(s); err != nil {
			return sourceSet{}, fmt.Errorf("token_sources[%d]: %w", i, err)
		}
		src := source{scheme: s.Scheme, query: s.Query, cookie: s.Cookie}
		if s.Header != "" {
			src.header = http.CanonicalHeaderKey(s.Header)
			src.respelled = strings.ContainsAny(s.Header, "-_.")
			src.plain = !strings.ContainsAny(s.Header, "_.")
		}
		out.list = append(out.list, src)
	}
	return out, nil
}

// compileCredentials compiles h's sources and bounds.
func compileCredentials(h *Handler) (sourceSet, error) {
	set, err := compileSources(h.TokenSources)
	if err != nil {
		return sourceSet{}, err
	}
	if err := CheckCredentialBounds(h.MaxCredentialCandidates, h.MaxCredentialBytes); err != nil {
		return sourceSet{}, err
	}
	if h.MaxCredentialCandidates != 0 {
		set.maxCandidates = h.MaxCredentialCandidates
	}
	if h.MaxCredentialBytes != 0 {
		set.maxBytes = h.MaxCredentialBytes
	}
	return set, nil
}

// CheckCredentialBounds refuses bounds out of their ranges; 0 is the
// default.
func CheckCredentialBounds(candidates, bytes int) error {
	if candidates != 0 && (candidates < minCredentialCandidates || candidates > maxCredentialCandidates) {
		return fmt.Errorf("max_credential_candidates %d: want %d to %d", candidates, minCredentialCandidates, maxCredentialCandidates)
	}
	if bytes != 0 && (bytes < minCredentialBytes || bytes > maxCredentialBytes) {
		return fmt.Errorf("max_credential_bytes %d: want %d to %d", bytes, minCredentialBytes, maxCredentialBytes)
	}
	return nil
}

// CheckTokenSource refuses a source that could never carry a token.
func CheckTokenSource(s TokenSource) error {
	n := 0
	for _, f := range []string{s.Header, s.Query, s.Cookie} {
		if f != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return errors.New("set one of header, query and cookie")
	case s.Header != "":
		if !validHeaderName(s.Header) {
			return fmt.Errorf("header %q is not a valid header name", s.Header)
		}
		if strings.ContainsAny(s.Scheme, " \t") {
			return fmt.Errorf("scheme %q must be one word", s.Scheme)
		}
	case s.Scheme != "":
		return errors.New("scheme applies to headers only")
	case s.Cookie != "":
		if !validHeaderName(s.Cookie) {
			return fmt.Errorf("cookie %q is not a valid cookie name", s.Cookie)
		}
	case s.Query == "":
		return errors.New("set header, query or cookie")
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
	// tokenMalformed: a value over maxBytes, or more than maxCandidates
	// candidates; never read in part, never missing.
	tokenMalformed
)

// token is a value the sources yielded, looked up in the view.
type token struct {
	value  string
	policy uint32 // the view's policy id (view.policy), when listed
	listed bool
}

// extractToken reads every source and looks the candidates up in v, so
// that the plugin reads a credential wherever some backend would find one.
// Each value of a source (a header line, a query or cookie value) has a
// primary reading, what the source itself reads as the token: what
// follows "<scheme> ", or the whole value without a scheme (none for a
// line of another scheme); a query or cookie value percent-decoded with
// '+' a space. Its candidates are (candidates):
//
//   - the whole value, the primary, and what follows the first word;
//   - every run between white space, ',', ';', '=' and '"';
//   - every maximal run of token68 characters (letters, digits, "-._~+/"
//     and the '=' after them);
//   - the content of every quoted string, as sent and unescaped;
//   - for a "Basic" value, the base64-decoded user, password and
//     user:password.
//
// If any candidate is a listed token, the listed ones are the value's
// reading, and an unlisted primary does not count; otherwise the primary
// is, listed or not. Query values are read with '+' as itself and as sent
// too. Headers whose names equal a header source's when '-', '_' and '.'
// are the same and case is ignored are read as that source; query keys and
// cookie names are matched as queryKeyIs says.
//
// One distinct reading is the token; none is missing; more than one is
// ambiguous. Every distinct candidate of the request is hashed and looked
// up once, listed or not, so the work a request costs does not depend on
// what is listed. Values are compared byte for byte.
func extractToken(r *http.Request, set sourceSet, v *view) (token, tokenResult) {
	x := reader{v: v, maxCandidates: set.maxCandidates, maxBytes: set.maxBytes}
	if !x.read(r, set.list) {
		return token{}, x.res
	}
	return x.tok, x.res
}

// read reads every source of r; false: the request is refused (x.res).
func (x *reader) read(r *http.Request, sources []source) bool {
	respelled := false
	for i := range sources {
		s := &sources[i]
		var ok bool
		switch {
		case s.header != "":
			respelled = respelled || s.respelled
			ok = x.headerLines(r.Header[s.header], s.scheme)
		case s.cookie != "":
			ok = x.cookies(r.Header["Cookie"], s.cookie)
		default:
			ok = x.query(r.URL.RawQuery, s.query)
		}
		if !ok {
			return false
		}
	}
	if !respelled {
		return true
	}
	// Caddy drops header names with '_' or '.' unless the server's
	// expected_underscore_headers or expected_dot_headers keeps them, and
	// then drops the spelling with '-' instead.
	for name, lines := range r.Header {
		for i := range sources {
			s := &sources[i]
			if s.respelled && name != s.header && sameHeaderName(name, s) && !x.headerLines(lines, s.scheme) {
				return false
			}
		}
	}
	return true
}

// reader collects the values of one request's sources.
type reader struct {
	v                       *view
	maxCandidates, maxBytes int
	tok                     token
	res                     tokenResult
	// The n distinct candidates looked up so far: in buf, then in more
	// (with max_credential_candidates above buf's size), so that the
	// common request allocates nothing.
	n     int
	looks int // every look, repeats included
	buf   [DefaultMaxCredentialCandidates]token
	more  []token
}

// lookupsPerCandidate bounds the looks of one request, repeats included, at
// this many per distinct candidate allowed: a value of n words yields a
// few looks a word.
const lookupsPerCandidate = 16

// look returns s looked up, hashing it the first time the request yields
// it. It returns false, with the result malformed, once the request has
// more than maxCandidates distinct candidates.
func (x *reader) look(s string) (token, bool) {
	// Repeats cost a scan of the candidates each and never reach the
	// bound on distinct ones: bound the lookups too, so that one request
	// of many repeated lines costs no more than a few of its own.
	if x.looks++; x.looks > x.maxCandidates*lookupsPerCandidate {
		x.res = tokenMalformed
		return token{}, false
	}
	for i := range min(x.n, len(x.buf)) {
		if x.buf[i].value == s {
			return x.buf[i], true
		}
	}
	for i := range x.more {
		if x.more[i].value == s {
			return x.more[i], true
		}
	}
	if x.n == x.maxCandidates {
		x.res = tokenMalformed
		return token{}, false
	}
	i, listed := x.v.find(sha256.Sum256(unsafe.Slice(unsafe.StringData(s), len(s))))
	t := token{value: s, policy: i, listed: listed}
	if x.n < len(x.buf) {
		x.buf[x.n] = t
	} else {
		x.more = append(x.more, t)
	}
	x.n++
	return t, true
}

// add records one reading of the request; false: it differs from one
// recorded before, and the result is ambiguous.
func (x *reader) add(t token) bool {
	if x.res == tokenFound && t.value != x.tok.value {
		x.res = tokenAmbiguous
		return false
	}
	x.tok, x.res = t, tokenFound
	return true
}

// candidate looks s up as a candidate of a value; found is the listed
// token the value has yielded so far. A second, different listed token
// makes the request ambiguous (false).
func (x *reader) candidate(s string, found *token) bool {
	if s == "" {
		return true
	}
	c, ok := x.look(s)
	switch {
	case !ok:
		return false
	case !c.listed:
		return true
	case found.listed && c.value != found.value:
		x.res = tokenAmbiguous
		return false
	}
	*found = c
	return true
}

// reading records a value's reading: its listed token if it has one,
// else its primary p (none if p is empty).
func (x *reader) reading(p, found token) bool {
	switch {
	case found.listed:
		return x.add(found)
	case p.value != "":
		return x.add(p)
	}
	return true
}

// fits refuses (false, malformed) a value over maxBytes.
func (x *reader) fits(value string) bool {
	if len(value) > x.maxBytes {
		x.res = tokenMalformed
		return false
	}
	return true
}

// headerLines reads the lines of one header source. A line the same as the
// one before it yields nothing new.
func (x *reader) headerLines(lines []string, scheme string) bool {
	for i, line := range lines {
		if i > 0 && line == lines[i-1] {
			continue
		}
		if !x.headerLine(line, scheme) {
			return false
		}
	}
	return true
}

// headerLine reads one line of a header source. "Bearer <tok>", with tok
// of token68 characters, costs two hashes: the token and the line.
func (x *reader) headerLine(line, scheme string) bool {
	if !x.fits(line) {
		return false
	}
	var p, found token
	if primary := afterScheme(line, scheme); primary != "" {
		var ok bool
		if p, ok = x.look(primary); !ok {
			return false
		}
		if p.listed {
			found = p
		}
	}
	return x.candidates(line, scheme, &found) && x.reading(p, found)
}

// candidates looks up the candidates of value (but its primary, which its
// caller has looked up): every one, whatever the others are, so that a
// listed token and an unlisted one of the same form cost the same. The
// source's scheme word is no candidate.
func (x *reader) candidates(value, scheme string, found *token) bool {
	first, tail := nextWord(value)
	if !x.candidate(value, found) {
		return false
	}
	// What follows each word: whole; up to a ',' (Laravel reads from the
	// last "Bearer ", wherever it is, to the next ','); and up to a ',',
	// ';' or tab, trimmed, also without a '"' at either end (Rails'
	// first parameter).
	for rest := tail; rest != ""; _, rest = nextWord(rest) {
		if !x.candidate(rest, found) {
			return false
		}
		if i := strings.IndexByte(rest, ','); i >= 0 && !x.candidate(rest[:i], found) {
			return false
		}
		if i := strings.IndexAny(rest, ",;\t"); i >= 0 {
			param := trimSpaceRight(rest[:i])
			if !x.candidate(param, found) || !x.candidate(trimQuotes(param), found) {
				return false
			}
		}
	}
	// Parameters, split at ',', ';' and tab as Rails splits them, and
	// trimmed: each, and the value after its first '=', each also without
	// a '"' at either end.
	for rest := value; rest != ""; {
		var param string
		param, rest = cutAny(rest, ",;\t")
		param = trimSpaceRight(trimSpace(param))
		_, v, hasValue := strings.Cut(param, "=")
		if !x.candidate(param, found) || !x.candidate(trimQuotes(param), found) ||
			hasValue && (!x.candidate(v, found) || !x.candidate(trimQuotes(v), found)) {
			return false
		}
	}
	// Runs between separators.
	for i := 0; i < len(value); {
		if n := sepLen(value[i:]); n > 0 {
			i += n
			continue
		}
		j := i + 1
		for j < len(value) && sepLen(value[j:]) == 0 {
			j++
		}
		if run := value[i:j]; !isScheme(run, scheme) && !x.candidate(run, found) {
			return false
		}
		i = j
	}
	// Maximal runs of token68 characters.
	for i := 0; i < len(value); {
		if !token68[value[i]] {
			i++
			continue
		}
		j := i + 1
		for j < len(value) && token68[value[j]] {
			j++
		}
		for j < len(value) && value[j] == '=' {
			j++
		}
		if run := value[i:j]; !isScheme(run, scheme) && !x.candidate(run, found) {
			return false
		}
		i = j
	}
	// Quoted strings: from a '"' to the next one not after a '\', or to
	// the end of the value.
	for i := strings.IndexByte(value, '"'); i >= 0; {
		j, escaped := i+1, false
		for j < len(value) && value[j] != '"' {
			if value[j] == '\\' {
				escaped = true
				j++
			}
			j++
		}
		content := value[i+1 : min(j, len(value))]
		if !x.candidate(content, found) || escaped && !x.candidate(unquote(content), found) {
			return false
		}
		if j+1 >= len(value) {
			break
		}
		next := strings.IndexByte(value[j+1:], '"')
		if next < 0 {
			break
		}
		i = j + 1 + next
	}
	if equalFoldASCII(first, "Basic") && tail != "" {
		return x.basic(tail, found)
	}
	return true
}

// basic looks up the user, password and user:password that the base64
// credentials b decode to, as lenient decoders read them: both alphabets,
// other characters skipped (Node.js), and the standard alphabet only,
// others skipped (Python); the whole of b, b up to its first '=' (decoders
// that stop at the padding: Node.js, Python, Ruby), and each run of b
// between '=' and white space alone (a backend that splits the line at a
// space first). Runs the same as b cost nothing more: look hashes a
// candidate once.
func (x *reader) basic(b string, found *token) bool {
	for _, urlSafe := range []bool{true, false} {
		if !urlSafe && !strings.ContainsAny(b, "-_") {
			break // both read b alike
		}
		if !x.basicUser(b, urlSafe, found) {
			return false
		}
		if i := strings.IndexByte(b, '='); i > 0 && !x.basicUser(b[:i], urlSafe, found) {
			return false
		}
		for rest := b; rest != ""; {
			var run string
			run, rest = cutAny(rest, "= \t")
			if run != "" && run != b && !x.basicUser(run, urlSafe, found) {
				return false
			}
		}
	}
	return true
}

// basicUser looks up what the base64 b decodes to: the whole, and the user
// and password either side of its first ':'.
func (x *reader) basicUser(b string, urlSafe bool, found *token) bool {
	userPass := decodeBase64Lenient(b, urlSafe)
	user, pass, _ := strings.Cut(userPass, ":")
	return x.candidate(userPass, found) && x.candidate(user, found) && x.candidate(pass, found)
}

// query reads the pairs of the raw query q whose key is want.
func (x *reader) query(q, want string) bool {
	for q != "" {
		var pair string
		pair, q = cutAny(q, "&;")
		k, value, _ := strings.Cut(pair, "=")
		if queryKeyIs(k, want) && !x.encodedValue(value) {
			return false
		}
	}
	return true
}

// cookies reads the cookies named want from the Cookie header lines.
// Pairs are split at ';'; as older Rack also splits them at ',', what
// follows a ',' is read as a pair too. Names are matched as query keys are
// (ASP.NET ignores case, PHP reads '.' as '_'), and every pair of the name
// is read, wherever it stands.
func (x *reader) cookies(lines []string, want string) bool {
	for _, line := range lines {
		for line != "" {
			var pair string
			pair, line = cutAny(line, ";")
			if !x.cookie(pair, want) {
				return false
			}
			// The part before the first ',' is this pair's name and
			// a run of its value.
			for i := strings.IndexByte(pair, ','); i >= 0; {
				pair = pair[i+1:]
				part := pair
				if i = strings.IndexByte(pair, ','); i >= 0 {
					part = pair[:i]
				}
				if !x.cookie(part, want) {
					return false
				}
			}
		}
	}
	return true
}

// cookie reads one name=value pair of a Cookie line if its name is want.
func (x *reader) cookie(pair, want string) bool {
	k, value, ok := strings.Cut(pair, "=")
	if !ok || !queryKeyIs(trimSpaceRight(trimSpace(k)), want) {
		return true
	}
	return x.encodedValue(trimSpaceRight(trimSpace(value)))
}

// cutAny returns s up to its first byte in seps and what follows that
// byte; s whole and "" when it has none.
func cutAny(s, seps string) (before, after string) {
	if i := strings.IndexAny(s, seps); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// trimSpaceRight returns s without the ASCII white space it ends with.
func trimSpaceRight(s string) string {
	return strings.TrimRight(s, " \t\n\v\f\r")
}

// trimQuotes returns s without one '"' at its start and one at its end.
func trimQuotes(s string) string {
	s, _ = strings.CutPrefix(s, `"`)
	s, _ = strings.CutSuffix(s, `"`)
	return s
}

// encodedValue reads a query or cookie value: percent-decoded with '+' a
// space (an escape that is not one kept as it is) is its primary; decoded
// with '+' kept and as sent are read too.
func (x *reader) encodedValue(raw string) bool {
	if raw == "" {
		return true
	}
	if !x.fits(raw) {
		return false
	}
	primary := raw
	if strings.ContainsAny(raw, "%+") {
		primary = unescapeLenient(raw, true)
	}
	p, ok := x.look(primary)
	if !ok {
		return false
	}
	var found token
	if p.listed {
		found = p
	}
	if !x.candidates(primary, "", &found) {
		return false
	}
	if primary != raw {
		if !x.candidate(raw, &found) {
			return false
		}
		// Backends that decode queries as paths read '+' as itself.
		if u := unescapeLenient(raw, false); strings.IndexByte(raw, '+') >= 0 && u != raw && !x.candidates(u, "", &found) {
			return false
		}
	}
	return x.reading(p, found)
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

// isScheme reports whether the run is the source's scheme word, which is
// no candidate.
func isScheme(run, scheme string) bool {
	return scheme != "" && equalFoldASCII(run, scheme)
}

// sepLen returns the length of the separator s starts with: white space
// (spaceLen), ',', ';', '=' or '"'; 0 if none.
func sepLen(s string) int {
	switch s[0] {
	case ',', ';', '=', '"':
		return 1
	}
	return spaceLen(s)
}

// token68 marks the characters of RFC 7235's token68 but its trailing '='.
var token68 = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", byte(c)) >= 0
	}
	return t
}()

// unquote returns the content of a quoted string with each "\x" read as x.
func unquote(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b = append(b, s[i])
	}
	return string(b)
}

// unescapeLenient percent-decodes s as Python's unquote and PHP's
// urldecode do: an escape that is not one is kept as it is; '+' is a space
// if plusSpace.
func unescapeLenient(s string, plusSpace bool) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '+' && plusSpace:
			b = append(b, ' ')
		case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, s[i])
		}
	}
	return string(b)
}

// decodeBase64Lenient decodes the base64 characters of s, skipping any
// other character and padding; with urlSafe, '-' and '_' are read as '+'
// and '/', else skipped. A final lone character is dropped.
func decodeBase64Lenient(s string, urlSafe bool) string {
	out := make([]byte, 0, len(s)*3/4+2)
	var acc uint32
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var v byte
		switch {
		case 'A' <= c && c <= 'Z':
			v = c - 'A'
		case 'a' <= c && c <= 'z':
			v = c - 'a' + 26
		case '0' <= c && c <= '9':
			v = c - '0' + 52
		case c == '+' || urlSafe && c == '-':
			v = 62
		case c == '/' || urlSafe && c == '_':
			v = 63
		default:
			continue
		}
		acc = acc<<6 | uint32(v)
		if n++; n == 4 {
			out = append(out, byte(acc>>16), byte(acc>>8), byte(acc))
			acc, n = 0, 0
		}
	}
	switch n {
	case 2:
		out = append(out, byte(acc>>4))
	case 3:
		out = append(out, byte(acc>>10), byte(acc>>2))
	}
	return string(out)
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
