package ipallowlist

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Temporary until the OpenAPI validator lands.
func serveAdmin(t testing.TB, h caddy.AdminHandler, method, target string, body []byte, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req); err != nil {
		var ae caddy.APIError
		if !errors.As(err, &ae) {
			ae = caddy.APIError{HTTPStatus: 500, Err: err}
		}
		rec.Header().Set("Content-Type", "application/json")
		rec.WriteHeader(ae.HTTPStatus)
		_ = json.NewEncoder(rec).Encode(map[string]string{"error": ae.Err.Error()})
	}
	return rec
}
