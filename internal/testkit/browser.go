package testkit

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os/exec"
	"testing"
)

// Chromium is the path of Debian's chromium, which the browser tests
// drive. make tools-test installs it; without it the test fails (it is not
// skipped: a browser test that never runs proves nothing, and make test
// installs the browser before it runs the tests).
func Chromium(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): make tools-test installs it (apt-get install chromium)", err)
	}
	return path
}

// SourceProxy runs an HTTP forward proxy on a free loopback port, for a
// browser to use (--proxy-server): every request it relays is sent on a
// connection from the address local (127.0.0.x), so the server sees the
// browser's requests coming from local, as it sees a client's that Do
// sends with Request.Local. It adds no X-Forwarded-For, relays plain http
// only (no CONNECT), and only to loopback addresses: anything else (a
// browser's own update checks) gets a 502 without a DNS lookup. It
// returns the proxy's host:port; the proxy stops when the test ends.
func SourceProxy(t testing.TB, local string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext,
		MaxIdleConnsPerHost: 8,
	}
	relay := &httputil.ReverseProxy{
		// The request a browser sends a proxy names the whole URL, which
		// is where it goes; Rewrite starts from a copy of it without the
		// hop-by-hop and X-Forwarded-* headers, and adds none.
		Rewrite:   func(*httputil.ProxyRequest) {},
		Transport: transport,
		// The browser sees the failure; the test's output does not.
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect || r.URL.Scheme != "http" || r.URL.Host == "" {
			http.Error(w, "this proxy relays plain http requests in absolute form only", http.StatusBadRequest)
			return
		}
		if ip, err := netip.ParseAddr(r.URL.Hostname()); err != nil || !ip.IsLoopback() {
			http.Error(w, "this proxy relays to loopback addresses only", http.StatusBadGateway)
			return
		}
		relay.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	return l.Addr().String()
}
