package ipallowlist

import (
	"bufio"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// Models of the parsers backends read a token with, each written from the
// framework's source, for the header, query and cookie parts (request
// bodies are no token source). A model returns the values it would take
// as the token: none, one, or several where the backend passes several on
// (a query key given twice becomes an array in Express).
//
// Where the backend's server joins repeated header lines, the model joins
// them as that server does; where it keeps the first, the model does.

// backendModel is one parser and the token_from that matches it.
type backendModel struct {
	name    string
	sources []TokenSource
	read    func(r *http.Request) []string
}

var bearerAuthorization = TokenSource{Header: "Authorization", Scheme: "Bearer"}

var backendModels = []backendModel{
	{"rails token_and_options", []TokenSource{{Header: "Authorization", Scheme: "Token"}}, railsToken},
	{"django rest framework TokenAuthentication", []TokenSource{{Header: "Authorization", Scheme: "Token"}}, drfToken},
	{"laravel bearerToken", []TokenSource{bearerAuthorization}, laravelBearerToken},
	{"spring DefaultBearerTokenResolver", []TokenSource{bearerAuthorization}, springBearerToken(false)},
	{"spring DefaultBearerTokenResolver with query parameters", []TokenSource{bearerAuthorization, {Query: "access_token"}}, springBearerToken(true)},
	{"passport-http-bearer", []TokenSource{bearerAuthorization, {Query: "access_token"}}, passportBearer},
	{"fastapi HTTPBearer", []TokenSource{bearerAuthorization}, fastapiBearer},
	{"asp.net core JwtBearer", []TokenSource{bearerAuthorization}, aspnetJwtBearer},
	{"express-bearer-token", []TokenSource{bearerAuthorization, {Query: "access_token"}, {Cookie: "access_token"}}, expressBearerToken},
	{"key as the basic user", []TokenSource{{Header: "Authorization", Scheme: "Basic"}}, basicUserKey},
	{"key as the basic user, node", []TokenSource{{Header: "Authorization", Scheme: "Basic"}}, basicUserNode},
	{"key as the basic user, python", []TokenSource{{Header: "Authorization", Scheme: "Basic"}}, basicUserPython},
}

// Rails, actionpack http_authentication.rb, Token.token_and_options: the
// header must start with "Token" or "Bearer" and white space; what follows
// is split at ',', ';' and tab into stripped, non-empty parameters; the
// first gets "token=" put in front unless it has it; each is split at its
// first '=', and one '"' is removed from each end of its value. The token
// is the first parameter's value. Puma joins repeated lines with ", ".
var (
	railsTokenRegex = regexp.MustCompile(`^(Token|Bearer)[ \t\r\n\f\v]+`)
	railsPairDelims = regexp.MustCompile(`(?:,|;|\t)`)
	railsQuotes     = regexp.MustCompile(`^"|"$`)
)

func railsToken(r *http.Request) []string {
	auth := strings.Join(r.Header.Values("Authorization"), ", ")
	loc := railsTokenRegex.FindStringIndex(auth)
	if loc == nil {
		return nil
	}
	var params []string
	for _, p := range railsPairDelims.Split(auth[loc[1]:], -1) {
		if p = strings.Trim(p, " \t\n\v\f\r\x00"); p != "" {
			params = append(params, p)
		}
	}
	if len(params) == 0 {
		params = []string{"token="}
	} else if !strings.HasPrefix(params[0], "token=") {
		params[0] = "token=" + params[0]
	}
	// "a=b".split(/=(.+)?/) is ["a", "b"]: the value is all after the
	// first '=', nil when nothing follows it.
	_, value, _ := strings.Cut(params[0], "=")
	if value == "" {
		return nil
	}
	return []string{railsQuotes.ReplaceAllString(value, "")}
}

// Django REST framework, authentication.py, TokenAuthentication: the
// header, encoded as ISO-8859-1, split at ASCII white space (bytes.split);
// two parts, the first "token" in any case. Gunicorn joins repeated lines
// with ",".
func drfToken(r *http.Request) []string {
	auth := strings.FieldsFunc(strings.Join(r.Header.Values("Authorization"), ","), func(c rune) bool {
		return strings.ContainsRune(" \t\n\r\v\f", c)
	})
	if len(auth) != 2 || !equalFoldASCII(auth[0], "token") {
		return nil
	}
	return []string{auth[1]}
}

// Laravel, InteractsWithInput::bearerToken: from the last "Bearer ", in any
// case, to the next ','. PHP's server joins repeated lines with ", ".
func laravelBearerToken(r *http.Request) []string {
	header := strings.Join(r.Header.Values("Authorization"), ", ")
	pos := strings.LastIndex(lowerASCII(header), "bearer ")
	if pos < 0 {
		return nil
	}
	header = header[pos+len("bearer "):]
	if i := strings.IndexByte(header, ','); i >= 0 {
		header = header[:i]
	}
	if header == "" {
		return nil
	}
	return []string{header}
}

// lowerASCII lowers the ASCII letters of s, byte for byte, as PHP's
// strripos compares.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Spring Security, DefaultBearerTokenResolver: the first Authorization
// line, if it starts with "bearer" in any case, must match
// ^Bearer (token68)$ in any case, else the request fails. With
// allowUriQueryParameter, one access_token query value, and not beside a
// header token.
var springPattern = regexp.MustCompile(`(?i)^Bearer (?P<token>[a-zA-Z0-9-._~+/]+=*)$`)

func springBearerToken(query bool) func(r *http.Request) []string {
	return func(r *http.Request) []string {
		var header string
		if auth := r.Header.Get("Authorization"); len(auth) >= 6 && equalFoldASCII(auth[:6], "bearer") {
			m := springPattern.FindStringSubmatch(auth)
			if m == nil {
				return nil
			}
			header = m[1]
		}
		var param []string
		if query {
			param = servletParameter(r, "access_token")
		}
		switch {
		case header != "" && len(param) > 0, len(param) > 1:
			return nil // "Found multiple bearer tokens"
		case header != "":
			return []string{header}
		case len(param) == 1 && param[0] != "":
			return param
		}
		return nil
	}
}

// servletParameter returns the values of the query parameter name as a
// servlet container decodes them: pairs at '&', names and values
// percent-decoded with '+' a space.
func servletParameter(r *http.Request, name string) []string {
	var values []string
	for _, pair := range strings.Split(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 == nil && err2 == nil && k == name {
			values = append(values, v)
		}
	}
	return values
}

// passport-http-bearer, strategy.js: the Authorization header (Node keeps
// the first line) split at ' ' into two parts, the first /^Bearer$/i; then
// req.query.access_token, refused beside a header token. Express's query
// parser (qs) makes a repeated key an array, which the strategy passes on.
func passportBearer(r *http.Request) []string {
	var token []string
	if auth := r.Header.Get("Authorization"); auth != "" {
		parts := strings.Split(auth, " ")
		if len(parts) != 2 {
			return nil
		}
		if equalFoldASCII(parts[0], "Bearer") {
			token = []string{parts[1]}
		}
	}
	if q := qsValues(r.URL.RawQuery, "access_token"); len(q) > 0 && q[0] != "" {
		if token != nil {
			return nil
		}
		token = q
	}
	return token
}

// qsValues returns what qs, Express's query parser, gives for key: pairs at
// '&', names and values percent-decoded ('+' a space; a bad escape kept),
// key, key[] and key[<index>] all read as key.
func qsValues(raw, key string) []string {
	var values []string
	for _, pair := range strings.Split(raw, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		k = unescapeLenient(k, true)
		if i := strings.IndexByte(k, '['); i > 0 && strings.HasSuffix(k, "]") {
			k = k[:i]
		}
		if k == key {
			values = append(values, unescapeLenient(v, true))
		}
	}
	return values
}

// FastAPI, security/http.py, HTTPBearer with
// get_authorization_scheme_param: the first Authorization line,
// partitioned at the first ' '; the scheme "bearer" in any case; the
// credentials all after that space.
func fastapiBearer(r *http.Request) []string {
	scheme, credentials, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme == "" || credentials == "" || !equalFoldASCII(scheme, "bearer") {
		return nil
	}
	return []string{credentials}
}

// ASP.NET Core, JwtBearerHandler: the Authorization lines joined with ','
// (StringValues.ToString); if that starts with "Bearer " in any case, the
// rest, trimmed of white space (String.Trim).
func aspnetJwtBearer(r *http.Request) []string {
	auth := strings.Join(r.Header.Values("Authorization"), ",")
	if len(auth) < 7 || !equalFoldASCII(auth[:7], "Bearer ") {
		return nil
	}
	if token := strings.TrimFunc(latin1(auth[7:]), unicode.IsSpace); token != "" {
		return []string{token}
	}
	return nil
}

// latin1 returns s read as ISO-8859-1, in UTF-8, as Kestrel reads a header
// with Latin-1 allowed; ASCII is unchanged.
func latin1(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}

// express-bearer-token, index.js, with its cookie option ({key:
// "access_token"}): req.query.access_token, the Authorization header (the
// first line) split at ' ' into two parts, the first exactly "Bearer", and
// the access_token cookie; a token in more than one place is refused (400).
func expressBearerToken(r *http.Request) []string {
	var token []string
	places := 0
	if q := qsValues(r.URL.RawQuery, "access_token"); len(q) > 0 && q[0] != "" {
		token, places = q, places+1
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		if parts := strings.Split(auth, " "); len(parts) == 2 && parts[0] == "Bearer" {
			token, places = []string{parts[1]}, places+1
		}
	}
	if c := cookieValue(strings.Join(r.Header.Values("Cookie"), "; "), "access_token"); c != "" {
		token, places = []string{c}, places+1
	}
	if places > 1 {
		return nil
	}
	return token
}

// cookieValue is the cookie package's parse, as Express reads cookies:
// pairs at ';', name and value trimmed of spaces and tabs, the first pair
// of a name wins, a value in '"' unquoted, and decoded with
// decodeURIComponent if it has a '%' (kept as it is if that fails).
func cookieValue(header, name string) string {
	for _, pair := range strings.Split(header, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || strings.Trim(k, " \t") != name {
			continue
		}
		v = strings.Trim(v, " \t")
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if strings.IndexByte(v, '%') >= 0 {
			if d, err := url.PathUnescape(v); err == nil {
				v = d
			}
		}
		return v
	}
	return ""
}

// An API that takes the key as the Basic user, as Go's Request.BasicAuth
// reads it: "Basic " in any case, strict standard base64, a ':' required.
func basicUserKey(r *http.Request) []string {
	if user, _, ok := r.BasicAuth(); ok && user != "" {
		return []string{user}
	}
	return nil
}

// An API that takes the key as the Basic user, written by hand in Node.js:
// const [scheme, cred] = header.split(' '); Buffer.from(cred, 'base64')
// .toString().split(':')[0]. Node's decoder takes both alphabets, skips
// other characters and stops at the first '='; no ':' is needed.
func basicUserNode(r *http.Request) []string {
	return basicUserLenient(r, true)
}

// The same in Python (werkzeug's parse_authorization_header of old, Flask
// code by hand): scheme, _, cred = header.partition(' '); b64decode(cred)
// .partition(b':')[0]. Non-validating b64decode skips characters outside
// the standard alphabet and stops at the padding.
func basicUserPython(r *http.Request) []string {
	return basicUserLenient(r, false)
}

func basicUserLenient(r *http.Request, urlSafe bool) []string {
	var out []string
	for _, line := range r.Header.Values("Authorization") {
		scheme, cred, _ := strings.Cut(line, " ")
		if !strings.EqualFold(scheme, "basic") {
			continue
		}
		if i := strings.IndexByte(cred, ' '); i >= 0 {
			cred = cred[:i]
		}
		// Kept: the alphabet's characters up to the first '='.
		var kept []byte
		for i := 0; i < len(cred) && cred[i] != '='; i++ {
			switch c := cred[i]; {
			case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/':
				kept = append(kept, c)
			case urlSafe && c == '-':
				kept = append(kept, '+')
			case urlSafe && c == '_':
				kept = append(kept, '/')
			}
		}
		if len(kept)%4 == 1 {
			kept = kept[:len(kept)-1] // a lone last character: no byte
		}
		raw, err := base64.RawStdEncoding.DecodeString(string(kept))
		if err != nil {
			continue
		}
		user, _, _ := strings.Cut(string(raw), ":")
		if user != "" {
			out = append(out, user)
		}
	}
	return out
}

// Tokens listed for the model tests: plain, base64 with padding, with
// '+' and '/', and with a space.
var modelTokens = []string{tokA, tokB, "dG9rLWMtYmFzZTY0LXBhZA==", "tok+e/2c81f0-9d4e7a", tokSpace}

// modelHandlers provisions one handler per model, with the model's sources
// and every model token listed for 203.0.113.0/24 only.
func modelHandlers(t testing.TB) []*Handler {
	hs := make([]*Handler, len(backendModels))
	for i, m := range backendModels {
		tokens := map[string]*TokenPolicy{}
		for j, tok := range modelTokens {
			tokens[string(rune('a'+j))] = &TokenPolicy{Token: tok, Allow: []string{"203.0.113.0/24"}}
		}
		hs[i], _ = provisioned(t, &Handler{TokenSources: m.sources, Tokens: tokens})
	}
	return hs
}

// checkModels applies the rule to req: whenever a model reads a listed
// token, the plugin, with the model's sources, finds that token or refuses
// the request (ambiguous_token, credential_malformed).
func checkModels(t testing.TB, hs []*Handler, req *http.Request) {
	t.Helper()
	listed := map[string]bool{}
	for _, tok := range modelTokens {
		listed[tok] = true
	}
	for i, m := range backendModels {
		tok, res := extractToken(req, hs[i].sources, hs[i].current.Load())
		for _, got := range m.read(req) {
			if !listed[got] {
				continue
			}
			if res != tokenAmbiguous && res != tokenMalformed && (res != tokenFound || tok.value != got) {
				t.Errorf("%s reads listed token %q; the plugin: %v %q", m.name, got, res, tok.value)
			}
		}
	}
}

// rawRequest parses headers ("Name: value" lines) and a query as Go's
// server would, or returns nil for a request it would refuse.
func rawRequest(headers, query string) *http.Request {
	raw := "GET /?" + query + " HTTP/1.1\r\nHost: x\r\n" + strings.ReplaceAll(headers, "\n", "\r\n") + "\r\n\r\n"
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil || !serverAccepts(req) {
		return nil
	}
	return req
}

// backendCases are credential forms of issue 21 and their neighbours, as
// headers and query, each read by at least one model; each is run against
// every model. (Forms no model reads, such as "Bearer access_token=<tok>",
// are in TestCredentialFormsFindTheListedToken.)
var backendCases = []struct{ name, headers, query string }{
	{"bearer", "Authorization: Bearer " + tokA, ""},
	{"rails token, quoted", `Authorization: Token token="` + tokA + `"`, ""},
	{"rails token, bare", "Authorization: Token token=" + tokA, ""},
	{"rails token with options", `Authorization: Token token="` + tokA + `", nonce="abc"`, ""},
	{"rails token with a space", `Authorization: Token token="` + tokSpace + `"`, ""},
	{"rails bearer without token=", `Authorization: Bearer "` + tokA + `"`, ""},
	{"bearer token=", "Authorization: Bearer token=" + tokA, ""},
	{"bearer, comma", "Authorization: Bearer " + tokA + ",nonce=x", ""},
	{"bearer, semicolon", "Authorization: Bearer " + tokA + ";x", ""},
	{"bearer after other words", "Authorization: Basic x, Bearer " + tokA, ""},
	{"bearer glued to a word", "Authorization: xBearer " + tokA, ""},
	{"bearer with a space in the token, glued", "Authorization: a xbearer " + tokSpace + ",x", ""},
	{"rails token with a space, then a semicolon", "Authorization: Token " + tokSpace + ";x", ""},
	{"rails token with a space, opening quote", `Authorization: Token "` + tokSpace + ";x", ""},
	{"two bearer lines", "Authorization: Bearer x\nAuthorization: Bearer " + tokA, ""},
	{"bearer and a no-break space", "Authorization: Bearer " + tokA + "\xa0", ""},
	{"token scheme", "Authorization: Token " + tokA, ""},
	{"lower-case scheme", "Authorization: bearer " + tokA, ""},
	{"padded base64 token", "Authorization: Bearer dG9rLWMtYmFzZTY0LXBhZA==", ""},
	{"rails padded token, bare", "Authorization: Token token=dG9rLWMtYmFzZTY0LXBhZA==", ""},
	{"basic user", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tokA+":")), ""},
	{"basic user with a password", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tokA+":x")), ""},
	{"basic user, no colon", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tokA)), ""},
	{"basic user, more after the padding", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tokA)) + "AAAA", ""},
	{"basic user, more after one '='", "Authorization: Basic " + strings.TrimSuffix(base64.StdEncoding.EncodeToString([]byte(tokA)), "=") + "AAAA", ""},
	{"basic user, a word after the padding", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(tokA)) + " AAAA", ""},
	{"query", "", "access_token=" + tokA},
	{"query, plus and slash", "", "access_token=tok%2Be%2F2c81f0-9d4e7a"},
	{"query array", "", "access_token[]=" + tokA},
	{"query twice", "", "access_token=x&access_token=" + tokA},
	{"cookie", "Cookie: access_token=" + tokA, ""},
	{"cookie, quoted", `Cookie: access_token="` + tokA + `"`, ""},
	{"cookie, encoded", "Cookie: access_token=tok%2Be%2F2c81f0-9d4e7a", ""},
	{"cookie among others", "Cookie: a=1; access_token=" + tokA + "; b=2", ""},
	{"cookie in a second line", "Cookie: a=1\nCookie: access_token=" + tokA, ""},
}

// TestBackendModelsTokensAreFound: for each credential form, whenever a
// backend's parser reads a listed token, the plugin, configured with the
// sources that match that backend, finds that token or refuses the
// request. Each case must be read by at least one model, so the table
// tests the rule.
func TestBackendModelsTokensAreFound(t *testing.T) {
	hs := modelHandlers(t)
	for _, c := range backendCases {
		t.Run(c.name, func(t *testing.T) {
			req := rawRequest(c.headers, c.query)
			if req == nil {
				t.Fatal("Go's server refuses the request")
			}
			read := false
			for _, m := range backendModels {
				for _, got := range m.read(req) {
					read = read || slicesContains(modelTokens, got)
				}
			}
			if !read {
				t.Fatal("no model reads a listed token")
			}
			checkModels(t, hs, req)
		})
	}
}

func slicesContains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// FuzzBackendModels checks the rule of TestBackendModelsTokensAreFound on
// fuzzed headers ("Name: value" lines) and query, parsed as Go's server
// parses them. Seeds: backendCases and testdata/fuzz/backends.txt.
func FuzzBackendModels(f *testing.F) {
	for _, c := range backendCases {
		f.Add(c.headers, c.query)
	}
	for _, seed := range seedLines(f, "backends.txt") {
		f.Add(seed[0], seed[1])
	}
	hs := modelHandlers(f)
	f.Fuzz(func(t *testing.T, headers, query string) {
		req := rawRequest(headers, query)
		if req == nil {
			t.Skip()
		}
		checkModels(t, hs, req)
	})
}
