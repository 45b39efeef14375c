package ipallowlist

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The OpenAPI document of the admin routes, loaded once for every test that
// checks an exchange against it.
var apiDoc struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

func loadAPIDoc() (*openapi3.T, routers.Router, error) {
	apiDoc.once.Do(func() {
		data, err := os.ReadFile("openapi.json")
		if err != nil {
			apiDoc.err = err
			return
		}
		doc, err := openapi3.NewLoader().LoadFromData(data)
		if err != nil {
			apiDoc.err = fmt.Errorf("openapi.json: %w", err)
			return
		}
		// legacy.NewRouter validates the document first. The legacy router,
		// unlike gorillamux, needs no module beyond kin-openapi's own.
		router, err := legacy.NewRouter(doc)
		if err != nil {
			apiDoc.err = fmt.Errorf("openapi.json: %w", err)
			return
		}
		apiDoc.doc, apiDoc.router = doc, router
	})
	return apiDoc.doc, apiDoc.router, apiDoc.err
}

// apiOptions are strict: a status the document lacks fails, and so does a
// body sent to an operation that takes none.
var apiOptions = func() *openapi3filter.Options {
	o := &openapi3filter.Options{
		IncludeResponseStatus:             true,
		RejectWhenRequestBodyNotSpecified: true,
		SkipSettingDefaults:               true, // validate what was sent, not what the document would add
		MultiError:                        true,
	}
	o.WithCustomSchemaErrorFunc(schemaErrorMessage)
	return o
}()

// schemaErrorMessage says where and why a value left its schema, without
// kin-openapi's dump of the schema and the value: the failure shows the body,
// and the schema is in openapi.json. (DisableSchemaErrorDetails would do
// this, but kin-openapi refuses it for a 3.1 document.)
func schemaErrorMessage(err *openapi3.SchemaError) string {
	if err.Origin != nil {
		return "" // kin-openapi's own message: its causes, each told this way
	}
	// The JSON Schema 2020-12 validator's reason names the path, as
	// `error at "/rev": at '/rev': got string, want integer` (or without
	// the first part at the top).
	if rest, ok := strings.CutPrefix(err.Reason, "error at "); ok {
		if _, reason, ok := strings.Cut(rest, `": `); ok {
			return reason
		}
	}
	if strings.HasPrefix(err.Reason, "at '") {
		return err.Reason
	}
	reason := err.Reason
	if reason == "" {
		reason = fmt.Sprintf("doesn't match %q", err.SchemaField)
	}
	return fmt.Sprintf("at /%s: %s", strings.Join(err.JSONPointer(), "/"), reason)
}

// checkAPI fails t when an exchange with the admin routes leaves
// openapi.json: req as sent (its body is reqBody), and the answer's status,
// header and body.
//
// A request the document refuses (a bad body, a limit out of range, an
// unknown query parameter) must be refused with a 4xx the document lists for
// the operation; a request to an operation the document lacks must get a 404
// or 405 with an Error body. Any other answer must match the document:
// status, headers, body, and no body where the document has none.
func checkAPI(t testing.TB, req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) {
	t.Helper()
	doc, router, err := loadAPIDoc()
	if err != nil {
		t.Fatalf("loading the OpenAPI document: %v", err)
		return
	}
	ctx := context.Background()
	exchange := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), status)

	// Route on the escaped path, so that an escaped slash stays inside its
	// path segment (DELETE …/allow/203.0.113.0%2F24), then unescape the
	// parameters as the route will.
	routed := req.Clone(ctx)
	routed.URL.Path, routed.URL.RawPath = req.URL.EscapedPath(), ""
	route, rawParams, err := router.FindRoute(routed)
	if err != nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			t.Errorf("%s: the OpenAPI document has no such operation (%v): document it, or answer 404 or 405", exchange, err)
			return
		}
		if err := checkSchema(doc, "Error", respBody); err != nil {
			t.Errorf("%s: the OpenAPI document has no such operation, and the body is not an Error: %v", exchange, err)
		}
		return
	}
	var reqErrs []error
	params := make(map[string]string, len(rawParams))
	for k, v := range rawParams {
		if params[k], err = url.PathUnescape(v); err != nil {
			reqErrs = append(reqErrs, fmt.Errorf("path parameter %s: %w", k, err))
		}
	}

	sent := req.Clone(ctx)
	sent.Body = io.NopCloser(bytes.NewReader(reqBody))
	sent.ContentLength = int64(len(reqBody))
	in := &openapi3filter.RequestValidationInput{
		Request:    sent,
		PathParams: params,
		Route:      route,
		Options:    apiOptions,
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
		reqErrs = append(reqErrs, err)
	}
	// kin-openapi lets through query parameters the document does not name.
	for name := range req.URL.Query() {
		if queryParam(route, name) == nil {
			reqErrs = append(reqErrs, fmt.Errorf("query parameter %q is not in the document", name))
		}
	}
	if len(reqErrs) > 0 && (status < 400 || status > 499) {
		t.Errorf("%s (%s): the request leaves the OpenAPI document, yet the route did not refuse it with a 4xx: %v%s",
			exchange, route.Operation.OperationID, errors.Join(reqErrs...), showBody("request body", reqBody))
	}

	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Options:                apiOptions,
	}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		t.Errorf("%s (%s): the response leaves the OpenAPI document: %v%s",
			exchange, route.Operation.OperationID, err, showBody("body", respBody))
		return
	}
	// ValidateResponse reads no body where the document has none.
	if resp := route.Operation.Responses.Status(status); resp != nil && len(resp.Value.Content) == 0 && len(respBody) > 0 {
		t.Errorf("%s (%s): the OpenAPI document gives this status no body, yet it has %d bytes: %s",
			exchange, route.Operation.OperationID, len(respBody), respBody)
	}
}

// showBody is body for a failure message, on a line of its own, or nothing.
func showBody(name string, body []byte) string {
	if len(body) == 0 {
		return ""
	}
	return fmt.Sprintf("\n%s: %s", name, body)
}

// queryParam is the query parameter name of route's operation or path, or nil.
func queryParam(route *routers.Route, name string) *openapi3.Parameter {
	for _, params := range []openapi3.Parameters{route.Operation.Parameters, route.PathItem.Parameters} {
		if p := params.GetByInAndName(openapi3.ParameterInQuery, name); p != nil {
			return p
		}
	}
	return nil
}

// checkSchema validates body, as JSON, against the named component schema.
func checkSchema(doc *openapi3.T, name string, body []byte) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	return doc.Components.Schemas[name].Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

// serveAPI sends a request to h, as the test client would, and checks the
// exchange against the OpenAPI document (checkAPI). A body (none when
// empty) goes as application/json unless header says otherwise.
func serveAPI(t testing.TB, h http.Handler, method, target string, body []byte, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if len(body) > 0 {
		r = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	for k, vs := range header {
		req.Header[k] = slices.Clone(vs)
	}
	if len(body) > 0 && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	sent := req.Clone(context.Background()) // as sent, whatever h does to req
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	checkAPI(t, sent, body, rec.Code, rec.Header(), rec.Body.Bytes())
	return rec
}

// serveAdmin is serveAPI for an admin route, answered as Caddy's admin
// endpoint answers it (see adminHTTP).
func serveAdmin(t testing.TB, h caddy.AdminHandler, method, target string, body []byte, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	return serveAPI(t, adminHTTP{h}, method, target, body, header)
}

// adminHTTP serves an admin route as Caddy's admin endpoint does
// (adminHandler.handleError in caddy v2.11.9's admin.go): an error the route
// returns is written as JSON {"error": …}, with the status of a caddy.APIError
// (not one wrapped inside another error), else 500.
type adminHTTP struct{ h caddy.AdminHandler }

func (a adminHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := a.h.ServeHTTP(w, r)
	if err == nil {
		return
	}
	apiErr, ok := err.(caddy.APIError)
	if !ok {
		apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	if apiErr.HTTPStatus == 0 {
		apiErr.HTTPStatus = http.StatusInternalServerError
	}
	if apiErr.Message == "" && apiErr.Err != nil {
		apiErr.Message = apiErr.Err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(apiErr.HTTPStatus)
	_ = json.NewEncoder(w).Encode(apiErr)
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, _, err := loadAPIDoc()
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi.json is OpenAPI %s, want 3.1", doc.OpenAPI)
	}
	for _, name := range []string{"Entry", "TokenBody", "AllowBody", "PromoteBody", "Error", "TokenList", "ImportResult", "PromoteResult"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("components.schemas.%s is missing", name)
		}
	}
	// The document describes its own route.
	data, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	checkAPI(t, httptest.NewRequest("GET", "/ip-allowlist/openapi.json", nil), nil, 200, http.Header{"Content-Type": {"application/json"}}, data)
	// Strict objects, so that a field the document lacks fails validation.
	for name, ref := range doc.Components.Schemas {
		s := ref.Value
		if len(s.Properties) > 0 && (s.AdditionalProperties.Has == nil || *s.AdditionalProperties.Has) {
			t.Errorf("components.schemas.%s has properties but not additionalProperties: false", name)
		}
	}
}

// fakeTB records the failures a check reports with Errorf and Fatalf (all
// checkAPI uses) without failing the test. Fatalf ends the goroutine as
// testing.T's does, so run the check in one (failures).
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = append(f.failed, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

// failures runs check with a fakeTB and returns what it reported.
func failures(t testing.TB, check func(testing.TB)) []string {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// A validator that passes everything would pass these tests of the routes
// too. Each case here is an exchange that leaves the document, and must fail
// with a message that says what left it; the exchanges that keep to it must
// pass.
func TestOpenAPIValidatorCatchesDrift(t *testing.T) {
	const digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	entry := `{"label":"partner-a","token_sha256":"` + digest + `","allow":["198.51.100.7"],"rev":3,"source":"store"}`
	etag := http.Header{"Etag": {`"3"`}, "Content-Type": {"application/json"}}
	jsonOnly := http.Header{"Content-Type": {"application/json"}}

	type exchange struct {
		method, target string
		reqHeader      http.Header
		reqBody        string
		status         int
		header         http.Header
		body           string
	}
	for _, tc := range []struct {
		name string
		exchange
		want string // in the failure; "" when the exchange keeps to the document
	}{
		{name: "an entry with its ETag passes",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200, header: etag, body: entry}},
		{name: "a page of entries passes",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens?after=a&limit=2&store=default", status: 200, header: jsonOnly,
				body: `{"tokens":[` + entry + `],"next":"partner-a"}`}},
		{name: "a revoke answered 204 with no body passes",
			exchange: exchange{method: "DELETE", target: "/ip-allowlist/tokens/partner-a?unrestrict=true", reqHeader: http.Header{"If-Match": {`"3"`}}, status: 204}},
		{name: "an escaped allow entry is one path segment",
			exchange: exchange{method: "DELETE", target: "/ip-allowlist/tokens/partner-a/allow/203.0.113.0%2F24", status: 200, header: etag, body: entry}},
		{name: "a bad body refused with 400 passes",
			exchange: exchange{method: "PUT", target: "/ip-allowlist/tokens/partner-a", reqHeader: jsonOnly, reqBody: `{"token_sha256":"` + digest + `","allow":["192.0.2.1"],"colour":"red"}`,
				status: 400, header: jsonOnly, body: `{"error":"token \"partner-a\": unknown field \"colour\""}` + "\n"}},
		{name: "an undocumented path refused with 404 passes",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a/nothing", status: 404, header: jsonOnly, body: `{"error":"not found"}`}},
		{name: "a promote passes",
			exchange: exchange{method: "POST", target: "/ip-allowlist/tokens/partner-a/promote", reqHeader: jsonOnly, reqBody: `{"min_requests":3}`,
				status: 200, header: jsonOnly, body: `{"entry":` + entry + `,"promoted":["198.51.100.9"],"left_out":[{"ip":"198.51.100.10","reason":"refused_earlier","detail":"refused in enforce mode before its counts began"}]}`}},
		{name: "a create with a literal token passes",
			exchange: exchange{method: "PUT", target: "/ip-allowlist/tokens/partner-a", reqHeader: http.Header{"Content-Type": {"application/json"}, "If-None-Match": {"*"}},
				reqBody: `{"token":"0123456789abcdef","allow":["192.0.2.1"],"expires":{"192.0.2.1":"2030-01-01T00:00:00Z"},"mode":"report","owner":"ops"}`,
				status:  201, header: etag, body: entry}},
		{name: "a stale If-Match refused with 412 passes",
			exchange: exchange{method: "POST", target: "/ip-allowlist/tokens/partner-a/allow", reqHeader: http.Header{"Content-Type": {"application/json"}, "If-Match": {`"2"`}},
				reqBody: `{"entries":["192.0.2.1"],"ttl":"1h30m","note":"ticket 7"}`, status: 412, header: jsonOnly, body: `{"error":"token \"partner-a\": stale"}`}},
		{name: "an import passes",
			exchange: exchange{method: "POST", target: "/ip-allowlist/import", reqHeader: jsonOnly,
				reqBody: `{"a":{"token_sha256":"sha256:` + strings.ToUpper(digest) + `","allow":["192.0.2.1"]},"b":{"token":"0123456789abcdef","revoked":true}}`,
				status:  200, header: jsonOnly, body: `{"imported":2,"replaced":0}`}},
		{name: "an export passes",
			exchange: exchange{method: "GET", target: "/ip-allowlist/export", status: 200, header: jsonOnly,
				body: `{"a":{"token_sha256":"` + digest + `","allow":["192.0.2.1"],"revoked":true}}`}},

		{name: "an extra response field fails", want: `additional properties 'colour' not allowed`,
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200, header: etag,
				body: strings.Replace(entry, `"rev":3`, `"rev":3,"colour":"red"`, 1)}},
		{name: "a field of the wrong type fails", want: "rev",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200, header: etag,
				body: strings.Replace(entry, `"rev":3`, `"rev":"3"`, 1)}},
		{name: "a literal token in an entry fails", want: `additional properties 'token' not allowed`,
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200, header: etag,
				body: strings.Replace(entry, `"rev":3`, `"rev":3,"token":"secret-secret-secret"`, 1)}},
		{name: "an undocumented status fails", want: "status is not supported",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 201, header: etag, body: entry}},
		{name: "a missing ETag fails", want: `response header "ETag" missing`,
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200, header: jsonOnly, body: entry}},
		{name: "an unquoted ETag fails", want: `"ETag" doesn't match`,
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200,
				header: http.Header{"Etag": {"3"}, "Content-Type": {"application/json"}}, body: entry}},
		{name: "a body under 204 fails", want: "gives this status no body",
			exchange: exchange{method: "DELETE", target: "/ip-allowlist/tokens/partner-a", status: 204, header: jsonOnly, body: `{}`}},
		{name: "an error body of another shape fails", want: `additional properties 'message' not allowed`,
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/nobody", status: 404, header: jsonOnly, body: `{"error":"x","message":"x"}`}},
		{name: "a response of another content type fails", want: "text/plain",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens/partner-a", status: 200,
				header: http.Header{"Etag": {`"3"`}, "Content-Type": {"text/plain"}}, body: entry}},
		{name: "a literal token in an export fails", want: "export",
			exchange: exchange{method: "GET", target: "/ip-allowlist/export", status: 200, header: jsonOnly,
				body: `{"a":{"token":"0123456789abcdef","allow":["192.0.2.1"]}}`}},
		{name: "a bad label in an export fails", want: "export",
			exchange: exchange{method: "GET", target: "/ip-allowlist/export", status: 200, header: jsonOnly,
				body: `{"a b":{"token_sha256":"` + digest + `"}}`}},
		{name: "a bad date-time accepted fails", want: "did not refuse it",
			exchange: exchange{method: "POST", target: "/ip-allowlist/tokens/partner-a/allow", reqHeader: jsonOnly, reqBody: `{"entries":["192.0.2.1"],"expires":"tomorrow"}`,
				status: 200, header: etag, body: entry}},
		{name: "a bad request accepted fails", want: "did not refuse it",
			exchange: exchange{method: "PUT", target: "/ip-allowlist/tokens/partner-a", reqHeader: jsonOnly, reqBody: `{"token_sha256":"` + digest + `","colour":"red"}`,
				status: 200, header: etag, body: entry}},
		{name: "both token and token_sha256 accepted fails", want: "did not refuse it",
			exchange: exchange{method: "PUT", target: "/ip-allowlist/tokens/partner-a", reqHeader: jsonOnly, reqBody: `{"token":"0123456789abcdef","token_sha256":"` + digest + `"}`,
				status: 201, header: etag, body: entry}},
		{name: "expires and ttl together accepted fails", want: "did not refuse it",
			exchange: exchange{method: "POST", target: "/ip-allowlist/tokens/partner-a/allow", reqHeader: jsonOnly, reqBody: `{"entries":["192.0.2.1"],"expires":"2030-01-01T00:00:00Z","ttl":"168h"}`,
				status: 200, header: etag, body: entry}},
		{name: "a limit out of range accepted fails", want: "did not refuse it",
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens?limit=0", status: 200, header: jsonOnly, body: `{"tokens":[]}`}},
		{name: "an undocumented query parameter accepted fails", want: `query parameter "format" is not in the document`,
			exchange: exchange{method: "GET", target: "/ip-allowlist/tokens?format=caddyfile", status: 200, header: jsonOnly, body: `{"tokens":[]}`}},
		{name: "a body where the operation takes none accepted fails", want: "request body not allowed",
			exchange: exchange{method: "POST", target: "/ip-allowlist/tokens/partner-a/suspend", reqHeader: jsonOnly, reqBody: `{"why":"x"}`,
				status: 200, header: jsonOnly, body: entry}},
		{name: "an undocumented operation answered 200 fails", want: "has no such operation",
			exchange: exchange{method: "PATCH", target: "/ip-allowlist/tokens/partner-a", status: 200, header: jsonOnly, body: entry}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.reqBody))
			for k, v := range tc.reqHeader {
				req.Header[k] = v
			}
			got := failures(t, func(tb testing.TB) {
				checkAPI(tb, req, []byte(tc.reqBody), tc.status, tc.header, []byte(tc.body))
			})
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("an exchange that keeps to the document failed: %s", strings.Join(got, "\n"))
			case tc.want != "" && len(got) == 0:
				t.Errorf("an exchange that leaves the document passed")
			case tc.want != "" && !strings.Contains(strings.Join(got, "\n"), tc.want):
				t.Errorf("failure does not say %q: %s", tc.want, strings.Join(got, "\n"))
			case tc.want != "":
				t.Logf("caught: %s", strings.Join(got, "\n"))
			}
		})
	}
}

// serveAdmin answers a route's error as Caddy's admin endpoint does, and that
// answer is then checked: an APIError keeps its status, any other error is a
// 500, which the document lists for no route.
func TestOpenAPIServeAdmin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		want   string // in the failure; "" for none
	}{
		{name: "an APIError is its status and an Error body",
			err: caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New(`no token "nobody"`)}, status: 404},
		{name: "an APIError without a status is a 500", want: "status is not supported",
			err: caddy.APIError{Err: errors.New("x")}, status: 500},
		{name: "a wrapped APIError is a 500", want: "status is not supported",
			err: fmt.Errorf("wrapped: %w", caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("x")}), status: 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			route := caddy.AdminHandlerFunc(func(http.ResponseWriter, *http.Request) error { return tc.err })
			var rec *httptest.ResponseRecorder
			got := failures(t, func(tb testing.TB) {
				rec = serveAdmin(tb, route, "GET", "/ip-allowlist/tokens/nobody", nil, nil)
			})
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d", rec.Code, tc.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var body map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] != tc.err.Error() {
				t.Errorf("body %q, want {\"error\": %q}", rec.Body.Bytes(), tc.err.Error())
			}
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("failed: %s", strings.Join(got, "\n"))
			case tc.want != "" && !strings.Contains(strings.Join(got, "\n"), tc.want):
				t.Errorf("failure does not say %q: %q", tc.want, got)
			}
		})
	}
}
