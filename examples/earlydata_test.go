// quic-go's client has a known data race when it sends 0-RTT
// (quic-go/quic-go#4303, open): the race detector would report it in this
// test's own process. So this file is built without -race only, and make
// test runs it in a step of its own. The Caddy under test is never built
// with -race either way.

//go:build !race

package examples

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestEarlyDataGets425 sends a request as TLS early data (HTTP/3 0-RTT,
// which Caddy accepts by default) to the real binary. Before the handshake
// completes the client address is unverified, so the allowlist answers 425
// Too Early, as Caddy's client_ip matcher does; the same request after the
// handshake is decided normally.
func TestEarlyDataGets425(t *testing.T) {
	const tok = "early-data-token-7a2"
	var site string
	testkit.StartCaddy(t, "earlydata.Caddyfile", func(admin, s string) string {
		site = s
		return fmt.Sprintf(`{
	admin %s
	default_bind 127.0.0.1
	skip_install_trust
	local_certs
}
https://%s {
	tls internal
	ip_allowlist {
		token %s 127.0.0.1
	}
	respond "ok {http.request.proto}"
}
`, admin, s, tok)
	}, inRepo())
	url := "https://" + site + "/"
	sessions := tls.NewLRUClientSessionCache(8)
	tlsConf := &tls.Config{InsecureSkipVerify: true, ClientSessionCache: sessions} //nolint:gosec // Caddy's internal CA, loopback only

	try := func(method string) (int, string, error) {
		tr := &http3.Transport{TLSClientConfig: tlsConf}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	get := func(method string) (int, string) {
		t.Helper()
		status, body, err := try(method)
		if err != nil {
			t.Fatalf("%s over HTTP/3: %v", method, err)
		}
		return status, body
	}

	// A full handshake: decided normally, and leaves a session ticket.
	// Caddy issues its internal certificate after it starts listening, so
	// the first handshakes may fail until it has one.
	var status int
	var body string
	var err error
	testkit.Wait(15*time.Second, func() bool {
		status, body, err = try(http.MethodGet)
		return err == nil
	})
	if err != nil || status != http.StatusOK || !strings.HasPrefix(body, "ok HTTP/3") {
		t.Fatalf("after the handshake: %d %q %v, want 200 over HTTP/3", status, body, err)
	}
	// Resumed with the request in 0-RTT. On loopback the handshake may
	// finish before Caddy reads the request, and then 200 is right; so
	// several tries, at least one of which must arrive early. Without the
	// handler's check none would get 425.
	const tries = 20
	early := 0
	for range tries {
		switch status, body := get(http3.MethodGet0RTT); status {
		case http.StatusTooEarly:
			early++
		case http.StatusOK:
		default:
			t.Fatalf("in early data: %d %q, want 425 (or 200 once the handshake is done)", status, body)
		}
	}
	t.Logf("early data: %d of %d requests arrived before the handshake completed and got 425", early, tries)
	if early == 0 {
		t.Errorf("no request in early data got 425")
	}
}
