package ipallowlist_test

import (
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ipallowlist/caddy-ip-allowlist/caddyfile"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	ipallowlist "github.com/ipallowlist/caddy-ip-allowlist/module"
)

// These tests run Caddy in-process (caddytest: admin on 2999, site on
// 9080), so the package's tests must not run beside another caddytest
// package; make test runs go test with -p 1.

const (
	tokLoopback = "tok-loopback-1-aaaaaaa"
	tokRemote   = "tok-remote-2-bbbbbbbbb"
	tokSecond   = "tok-second-3-ccccccccc"
)

func siteConfig(serverOptions string) string {
	return `{
	skip_install_trust
	admin localhost:2999
	default_bind 127.0.0.1
	http_port 9080
	servers {
		` + serverOptions + `
	}
}
http://127.0.0.1:9080 {
	ip_allowlist {
		token ` + tokLoopback + ` 127.0.0.1
		token ` + tokRemote + ` {
			label remote
			allow 203.0.113.0/24
			deny 203.0.113.66
		}
		token ` + tokSecond + ` {
			label second
			allow 127.0.0.2
		}
		unlisted_tokens none
		missing_token deny
	}
	respond "ok {http.ip_allowlist.decision} {http.ip_allowlist.token_label}"
	handle_errors 401 {
		respond "{\"error\":\"unauthorized\"}"
	}
}
`
}

// get sends one request with token and optional X-Forwarded-For from the
// loopback address local (the client's source address).
func get(t *testing.T, local, token, xff string) (int, string, http.Header) {
	t.Helper()
	var header []string
	if token != "" {
		header = append(header, testkit.Bearer(token)...)
	}
	if xff != "" {
		header = append(header, "X-Forwarded-For", xff)
	}
	return send(t, local, header...)
}

// send sends one request with header (name, value pairs) from local.
func send(t *testing.T, local string, header ...string) (int, string, http.Header) {
	t.Helper()
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext,
		},
	}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:9080/v1/items", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

type exchange struct {
	name       string
	local      string
	token, xff string
	status     int
	body       string
}

func run(t *testing.T, cases []exchange) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body, header := get(t, c.local, c.token, c.xff)
			if status != c.status || body != c.body {
				t.Errorf("got %d %q, want %d %q", status, body, c.status, c.body)
			}
			if status == http.StatusUnauthorized && header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate = %q", header.Get("WWW-Authenticate"))
			}
		})
	}
}

const denied = `{"error":"unauthorized"}`

func TestInProcessWithoutTrustedProxies(t *testing.T) {
	tester := caddytest.NewTester(t)
	tester.InitServer(siteConfig(""), "caddyfile")
	run(t, []exchange{
		{"listed token from its address", "127.0.0.1", tokLoopback, "", 200, "ok allow " + fingerprint(tokLoopback)},
		{"token bound to 127.0.0.2 from there", "127.0.0.2", tokSecond, "", 200, "ok allow second"},
		{"token bound to 127.0.0.2 from 127.0.0.1", "127.0.0.1", tokSecond, "", 401, denied},
		{"listed token from elsewhere", "127.0.0.2", tokLoopback, "", 401, denied},
		{"forwarded header is ignored without trusted_proxies", "127.0.0.1", tokRemote, "203.0.113.7", 401, denied},
		{"forwarded header cannot widen a token", "127.0.0.2", tokLoopback, "127.0.0.1", 401, denied},
		{"unlisted token", "127.0.0.1", "not-a-listed-token", "", 401, denied},
		{"missing token", "127.0.0.1", "", "", 401, denied},
	})
}

func TestInProcessWithTrustedProxies(t *testing.T) {
	tester := caddytest.NewTester(t)
	tester.InitServer(siteConfig("trusted_proxies static 127.0.0.1/32"), "caddyfile")
	run(t, []exchange{
		{"forwarded address in range", "127.0.0.1", tokRemote, "203.0.113.7", 200, "ok allow remote"},
		{"forwarded address in deny", "127.0.0.1", tokRemote, "203.0.113.66", 401, denied},
		{"forwarded address outside range", "127.0.0.1", tokRemote, "198.51.100.1", 401, denied},
		{"the proxy itself is not the client", "127.0.0.1", tokLoopback, "198.51.100.1", 401, denied},
		{"untrusted peer's header is ignored", "127.0.0.2", tokRemote, "203.0.113.7", 401, denied},
		{"no header: the proxy address is the client", "127.0.0.1", tokLoopback, "", 200, "ok allow " + fingerprint(tokLoopback)},
	})
}

func fingerprint(tok string) string {
	return ipallowlist.Fingerprint(sha256.Sum256([]byte(tok)))
}

// Every header a client might use to claim an address, all claiming
// remote's range.
var spoofHeaders = []string{
	"X-Forwarded-For", "203.0.113.7",
	"X-Real-IP", "203.0.113.7",
	"Forwarded", "for=203.0.113.7",
	"True-Client-IP", "203.0.113.7",
	"CF-Connecting-IP", "203.0.113.7",
	"X-Client-IP", "203.0.113.7",
	"X-Originating-IP", "203.0.113.7",
}

// TestInProcessSpoofing: no header a client sends moves the decision,
// except the configured client_ip_headers from a trusted proxy, and with
// trusted_proxies_strict only the entries that proxy appended.
func TestInProcessSpoofing(t *testing.T) {
	type tc struct {
		name   string
		local  string
		header []string
		status int
	}
	with := func(tok string, header ...string) []string {
		return append(testkit.Bearer(tok), header...)
	}
	for _, server := range []struct {
		name, options string
		cases         []tc
	}{
		{"no trusted proxies", "", []tc{
			{"every spoofing header, remote token", "127.0.0.1", with(tokRemote, spoofHeaders...), 401},
			{"every spoofing header, loopback token still allowed", "127.0.0.1", with(tokLoopback, spoofHeaders...), 200},
			{"every spoofing header from an untrusted address", "127.0.0.2", with(tokLoopback, spoofHeaders...), 401},
		}},
		{"trusted proxy", "trusted_proxies static 127.0.0.1/32", []tc{
			{"X-Forwarded-For from the proxy moves it", "127.0.0.1", with(tokRemote, "X-Forwarded-For", "203.0.113.7"), 200},
			{"headers other than client_ip_headers do not", "127.0.0.1", with(tokRemote, spoofHeaders[2:]...), 401},
			{"X-Forwarded-For from a non-proxy does not", "127.0.0.2", with(tokRemote, "X-Forwarded-For", "203.0.113.7"), 401},
			{"non-strict takes the left-most entry", "127.0.0.1", with(tokRemote, "X-Forwarded-For", "203.0.113.7, 198.51.100.1"), 200},
		}},
		{"trusted proxy, strict", "trusted_proxies static 127.0.0.1/32\n\t\ttrusted_proxies_strict", []tc{
			{"a client-written left-most entry is ignored", "127.0.0.1", with(tokRemote, "X-Forwarded-For", "203.0.113.7, 198.51.100.1"), 401},
			{"the entry the proxy appended counts", "127.0.0.1", with(tokRemote, "X-Forwarded-For", "198.51.100.1, 203.0.113.7"), 200},
			{"a client-written header alone is the proxy's entry", "127.0.0.1", with(tokRemote, "X-Forwarded-For", "203.0.113.7"), 200},
			{"the deny exception still applies", "127.0.0.1", with(tokRemote, "X-Forwarded-For", "198.51.100.1, 203.0.113.66"), 401},
		}},
	} {
		t.Run(server.name, func(t *testing.T) {
			tester := caddytest.NewTester(t)
			tester.InitServer(siteConfig(server.options), "caddyfile")
			for _, c := range server.cases {
				t.Run(c.name, func(t *testing.T) {
					if status, body, _ := send(t, c.local, c.header...); status != c.status {
						t.Errorf("got %d %q, want %d", status, body, c.status)
					}
				})
			}
		})
	}
}

// TestInProcessCheckRoute asks the admin endpoint what the config in force
// decides, and checks it against the requests themselves.
func TestInProcessCheckRoute(t *testing.T) {
	tester := caddytest.NewTester(t)
	tester.InitServer(siteConfig(""), "caddyfile")
	for _, tc := range []struct {
		name, query string
		status      int
		body        string
	}{
		{"listed, allowed", "label=remote&ip=203.0.113.7", 200,
			`{"results":[{"label":"remote","ip":"203.0.113.7","decision":"allow","reason":"allowed","mode":"enforce"}]}`},
		{"listed, deny exception", "label=remote&ip=203.0.113.66", 200,
			`{"results":[{"label":"remote","ip":"203.0.113.66","decision":"deny","reason":"ip_denied","mode":"enforce"}]}`},
		{"listed, outside", "label=second&ip=127.0.0.1", 200,
			`{"results":[{"label":"second","ip":"127.0.0.1","decision":"deny","reason":"ip_not_allowed","mode":"enforce"}]}`},
		{"mapped address unmapped", "label=second&ip=::ffff:127.0.0.2", 200,
			`{"results":[{"label":"second","ip":"127.0.0.2","decision":"allow","reason":"allowed","mode":"enforce"}]}`},
		{"unlisted", "ip=127.0.0.1", 200,
			`{"results":[{"ip":"127.0.0.1","decision":"deny","reason":"unlisted_token","mode":"enforce"}]}`},
		{"unknown label", "label=nobody&ip=127.0.0.1", 404, `no token labelled \"nobody\"`},
		{"bad address", "label=remote&ip=010.0.0.1", 400, `ip \"010.0.0.1\": not an IP address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get("http://localhost:2999/ip-allowlist/check?" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
				t.Errorf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.body)
			}
		})
	}
	// The route agrees with the requests it describes.
	if status, _, _ := send(t, "127.0.0.2", testkit.Bearer(tokSecond)...); status != 200 {
		t.Errorf("second from 127.0.0.2: %d, want 200 as the route says", status)
	}
}
