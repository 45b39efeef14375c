package ipallowlist

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

const (
	tokA = "tok-a-3f9c1e-5d2b8a"
	tokB = "tok-b-77d0aa-90c4e1"
	tokC = "tok-c-digest"
)

// decisionConfig exercises every kind of range at once.
func decisionConfig() *Handler {
	return &Handler{
		IPSets: map[string][]string{"office": {"203.0.113.0/24", "2001:db8::/48"}},
		Tokens: map[string]*TokenPolicy{
			"a": {Token: tokA, Allow: []string{"office"}},
			"b": {Token: tokB, Allow: []string{"192.0.2.10-192.0.2.20", "2001:db8:ff::1-2001:db8:ff::9"}, Deny: []string{"192.0.2.15", "2001:db8:ff::5"}},
			"c": {TokenSHA256: testkit.Digest(tokC), Allow: []string{"198.51.100.7"}},
		},
		Unlisted:     &Policy{Allow: []string{"10.0.0.0/8"}},
		MissingToken: MissingDeny,
	}
}

func TestDecisionTable(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	tests := []struct {
		name   string
		remote string
		header []string
		reason string
		label  string
	}{
		// CIDR edges, IPv4
		{"v4 prefix first address", "203.0.113.0:1", testkit.Bearer(tokA), ReasonAllowed, "a"},
		{"v4 prefix last address", "203.0.113.255:1", testkit.Bearer(tokA), ReasonAllowed, "a"},
		{"v4 just below prefix", "203.0.112.255:1", testkit.Bearer(tokA), ReasonIPNotAllowed, "a"},
		{"v4 just above prefix", "203.0.114.0:1", testkit.Bearer(tokA), ReasonIPNotAllowed, "a"},
		// CIDR edges, IPv6
		{"v6 prefix first address", "[2001:db8::]:1", testkit.Bearer(tokA), ReasonAllowed, "a"},
		{"v6 prefix last address", "[2001:db8:0:ffff:ffff:ffff:ffff:ffff]:1", testkit.Bearer(tokA), ReasonAllowed, "a"},
		{"v6 just above prefix", "[2001:db8:1::]:1", testkit.Bearer(tokA), ReasonIPNotAllowed, "a"},
		{"v6 just below prefix", "[2001:db7:ffff:ffff:ffff:ffff:ffff:ffff]:1", testkit.Bearer(tokA), ReasonIPNotAllowed, "a"},
		// start-end ranges and deny exceptions
		{"v4 range start", "192.0.2.10:1", testkit.Bearer(tokB), ReasonAllowed, "b"},
		{"v4 range end", "192.0.2.20:1", testkit.Bearer(tokB), ReasonAllowed, "b"},
		{"v4 before range", "192.0.2.9:1", testkit.Bearer(tokB), ReasonIPNotAllowed, "b"},
		{"v4 after range", "192.0.2.21:1", testkit.Bearer(tokB), ReasonIPNotAllowed, "b"},
		{"v4 deny exception", "192.0.2.15:1", testkit.Bearer(tokB), ReasonIPDenied, "b"},
		{"v4 beside deny exception", "192.0.2.16:1", testkit.Bearer(tokB), ReasonAllowed, "b"},
		{"v6 range start", "[2001:db8:ff::1]:1", testkit.Bearer(tokB), ReasonAllowed, "b"},
		{"v6 range end", "[2001:db8:ff::9]:1", testkit.Bearer(tokB), ReasonAllowed, "b"},
		{"v6 after range", "[2001:db8:ff::a]:1", testkit.Bearer(tokB), ReasonIPNotAllowed, "b"},
		{"v6 deny exception", "[2001:db8:ff::5]:1", testkit.Bearer(tokB), ReasonIPDenied, "b"},
		// families do not cross
		{"v4 client against v6-only range", "192.0.2.10:1", testkit.Bearer(tokA), ReasonIPNotAllowed, "a"},
		// IPv4-mapped clients are unmapped
		{"mapped v4 client in range", "[::ffff:203.0.113.9]:1", testkit.Bearer(tokA), ReasonAllowed, "a"},
		{"mapped v4 client outside", "[::ffff:203.0.114.9]:1", testkit.Bearer(tokA), ReasonIPNotAllowed, "a"},
		{"zone dropped", "[2001:db8::1%eth0]:1", testkit.Bearer(tokA), ReasonAllowed, "a"},
		// token by digest
		{"sha256 token allowed", "198.51.100.7:1", testkit.Bearer(tokC), ReasonAllowed, "c"},
		{"sha256 token elsewhere", "198.51.100.8:1", testkit.Bearer(tokC), ReasonIPNotAllowed, "c"},
		// unlisted and missing
		{"unlisted token in unlisted ranges", "10.1.2.3:1", testkit.Bearer("nope"), ReasonAllowed, ""},
		{"unlisted token elsewhere", "203.0.113.1:1", testkit.Bearer("nope"), ReasonUnlistedToken, ""},
		{"missing token denied", "203.0.113.1:1", nil, ReasonMissingToken, ""},
		{"other auth scheme is no token", "203.0.113.1:1", []string{"Authorization", "Basic dXNlcjpwYXNz"}, ReasonMissingToken, ""},
		// byte-for-byte comparison; scheme word case-insensitive
		{"scheme case-insensitive", "203.0.113.1:1", []string{"Authorization", "bEaReR " + tokA}, ReasonAllowed, "a"},
		{"several spaces after the scheme", "203.0.113.1:1", []string{"Authorization", "Bearer   " + tokA}, ReasonAllowed, "a"},
		{"tab after the scheme is part of an unlisted token", "203.0.113.1:1", []string{"Authorization", "Bearer \tnope"}, ReasonUnlistedToken, ""},
		{"scheme without a space is no token", "203.0.113.1:1", []string{"Authorization", "Bearer" + tokA}, ReasonMissingToken, ""},
		{"token case matters", "203.0.113.1:1", testkit.Bearer(strings.ToUpper(tokA)), ReasonUnlistedToken, ""},
		{"token prefix is another token", "203.0.113.1:1", testkit.Bearer(tokA[:len(tokA)-1]), ReasonUnlistedToken, ""},
		// ambiguity
		{"two different header lines", "203.0.113.1:1", append(testkit.Bearer(tokA), testkit.Bearer(tokB)...), ReasonAmbiguousToken, ""},
		{"same header line twice", "203.0.113.1:1", append(testkit.Bearer(tokA), testkit.Bearer(tokA)...), ReasonAllowed, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(h, newRequest(tt.remote, "/", tt.header...))
			if got := res.placeholder(placeholderReason); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
			if got := res.placeholder(placeholderLabel); got != tt.label {
				t.Errorf("token_label = %q, want %q", got, tt.label)
			}
			wantStatus, wantDecision := http.StatusUnauthorized, "deny"
			if tt.reason == ReasonAllowed {
				wantStatus, wantDecision = http.StatusOK, "allow"
			}
			if res.status != wantStatus || res.next != (wantStatus == http.StatusOK) {
				t.Errorf("status = %d (next ran: %v), want %d", res.status, res.next, wantStatus)
			}
			if got := res.placeholder(placeholderDecision); got != wantDecision {
				t.Errorf("decision = %q, want %q", got, wantDecision)
			}
		})
	}
}

func TestTokenSources(t *testing.T) {
	h, _ := provisioned(t, &Handler{
		TokenSources: []TokenSource{{Header: "x-api-key"}, {Query: "api_key"}, {Header: "Authorization", Scheme: "Token"}},
		Tokens:       map[string]*TokenPolicy{"a": {Token: tokA, Allow: []string{"203.0.113.0/24"}}},
		Unlisted:     &Policy{Allow: []string{}},
		MissingToken: MissingDeny,
	})
	in, out := "203.0.113.5:1", "198.51.100.1:1"
	tests := []struct {
		name   string
		remote string
		target string
		header []string
		reason string
	}{
		{"custom header", in, "/", []string{"X-Api-Key", tokA}, ReasonAllowed},
		{"custom header from elsewhere", out, "/", []string{"X-Api-Key", tokA}, ReasonIPNotAllowed},
		{"custom scheme", in, "/", []string{"Authorization", "token " + tokA}, ReasonAllowed},
		{"bearer not configured", in, "/", testkit.Bearer("nope"), ReasonMissingToken},
		{"query parameter", in, "/?api_key=" + tokA, nil, ReasonAllowed},
		{"query parameter escaped", in, "/?api_key=" + strings.ReplaceAll(tokA, "-", "%2D"), nil, ReasonAllowed},
		{"query parameter among others", in, "/?x=1&api_key=" + tokA + "&y=2", nil, ReasonAllowed},
		{"similar query name ignored", in, "/?api_key2=" + tokA, nil, ReasonMissingToken},
		{"empty query value is missing", in, "/?api_key=", nil, ReasonMissingToken},
		{"duplicate query values differ", in, "/?api_key=" + tokA + "&api_key=x", nil, ReasonAmbiguousToken},
		{"duplicate query values agree", in, "/?api_key=" + tokA + "&api_key=" + tokA, nil, ReasonAllowed},
		{"header and query differ", in, "/?api_key=x", []string{"X-Api-Key", tokA}, ReasonAmbiguousToken},
		{"header and query agree", in, "/?api_key=" + tokA, []string{"X-Api-Key", tokA}, ReasonAllowed},
		{"unlisted with unlisted none", in, "/?api_key=other", nil, ReasonUnlistedToken},
		{"unlisted token with inner space is literal", in, "/", []string{"X-Api-Key", "nope x"}, ReasonUnlistedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(h, newRequest(tt.remote, tt.target, tt.header...))
			if got := res.placeholder(placeholderReason); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
		})
	}
	// No Bearer source configured: no Bearer challenge.
	res := serve(h, newRequest(out, "/", "X-Api-Key", tokA))
	if got := res.header.Get("WWW-Authenticate"); got != "" {
		t.Errorf("WWW-Authenticate = %q without a Bearer source", got)
	}
}

func TestDefaults(t *testing.T) {
	// No unlisted, no missing_token: both default to allowing.
	h, _ := provisioned(t, &Handler{
		Tokens: map[string]*TokenPolicy{"a": {Token: tokA, Allow: []string{"203.0.113.7"}}},
	})
	for _, tt := range []struct {
		name   string
		header []string
		reason string
	}{
		{"missing token allowed by default", nil, ReasonAllowed},
		{"unlisted token allowed from any address by default", testkit.Bearer("someone-else"), ReasonAllowed},
		{"listed token still restricted", testkit.Bearer(tokA), ReasonIPNotAllowed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(h, newRequest("[2001:db8::1]:1", "/", tt.header...))
			if got := res.placeholder(placeholderReason); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
		})
	}
}

func TestDenyResponse(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	reqs := map[string]*http.Request{
		ReasonIPNotAllowed:   newRequest("198.51.100.1:1", "/", testkit.Bearer(tokA)...),
		ReasonIPDenied:       newRequest("192.0.2.15:1", "/", testkit.Bearer(tokB)...),
		ReasonUnlistedToken:  newRequest("198.51.100.1:1", "/", testkit.Bearer("unknown")...),
		ReasonMissingToken:   newRequest("198.51.100.1:1", "/"),
		ReasonAmbiguousToken: newRequest("198.51.100.1:1", "/", append(testkit.Bearer(tokA), testkit.Bearer(tokB)...)...),
	}
	for reason, req := range reqs {
		t.Run(reason, func(t *testing.T) {
			res := serve(h, req)
			if got := res.placeholder(placeholderReason); got != reason {
				t.Fatalf("reason = %q, want %q", got, reason)
			}
			if res.next {
				t.Error("next handler ran for a denied request")
			}
			var he caddyhttp.HandlerError
			if !asHandlerError(res.err, &he) || he.StatusCode != http.StatusUnauthorized {
				t.Fatalf("error = %v, want a caddyhttp.HandlerError with 401", res.err)
			}
			if he.Err != errDenied {
				t.Errorf("error = %v, want the one deny error for every reason", he.Err)
			}
			if got := res.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
		})
	}
}

func TestEarlyDataIs425(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	req := newRequest("203.0.113.1:1", "/", testkit.Bearer(tokA)...)
	req.TLS = &tls.ConnectionState{HandshakeComplete: false}
	res := serve(h, req)
	if res.status != http.StatusTooEarly || res.next {
		t.Errorf("status = %d (next ran: %v), want 425", res.status, res.next)
	}
	req = newRequest("203.0.113.1:1", "/", testkit.Bearer(tokA)...)
	req.TLS = &tls.ConnectionState{HandshakeComplete: true}
	if res := serve(h, req); res.status != http.StatusOK {
		t.Errorf("completed handshake: status = %d, want 200", res.status)
	}
}

func TestNoClientIP(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	req := newRequest("203.0.113.1:1", "/", testkit.Bearer(tokA)...)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, "")
	res := serve(h, req)
	if got := res.placeholder(placeholderReason); got != ReasonNoClientIP || res.status != http.StatusUnauthorized {
		t.Errorf("reason = %q status = %d, want no_client_ip 401", got, res.status)
	}
}

func TestReportMode(t *testing.T) {
	cfg := decisionConfig()
	cfg.Mode = ModeReport
	h, logs := provisioned(t, cfg)
	res := serve(h, newRequest("198.51.100.1:1", "/", testkit.Bearer(tokA)...))
	if !res.next || res.status != http.StatusOK || res.err != nil {
		t.Fatalf("report mode: status %d next %v err %v, want the request passed on", res.status, res.next, res.err)
	}
	if got := res.placeholder(placeholderDecision); got != "deny" {
		t.Errorf("decision = %q, want deny (what enforce mode would do)", got)
	}
	if res.header.Get("WWW-Authenticate") != "" {
		t.Error("report mode set WWW-Authenticate")
	}
	entries := logs.FilterMessage("request would be denied").All()
	if len(entries) != 1 || entries[0].ContextMap()["reason"] != ReasonIPNotAllowed {
		t.Errorf("want one 'request would be denied' entry with reason, got %v", logs.All())
	}
}

func TestDenyLogEntry(t *testing.T) {
	h, logs := provisioned(t, decisionConfig())
	serve(h, newRequest("203.0.113.9:1", "/ok", testkit.Bearer(tokA)...))
	if n := logs.Len(); n != 0 {
		t.Fatalf("allowed request logged %d entries", n)
	}
	req := newRequest("198.51.100.1:4242", "/v1/items?api_key=secret-in-query", testkit.Bearer(tokA)...)
	req.Host = "api.example.test"
	serve(h, req)
	entries := logs.FilterMessage("request denied").All()
	if len(entries) != 1 {
		t.Fatalf("want 1 request denied entry, got %d: %v", len(entries), logs.All())
	}
	want := map[string]any{
		"reason": ReasonIPNotAllowed, "token_label": "a", "client_ip": "198.51.100.1",
		"remote_ip": "198.51.100.1", "method": "GET", "host": "api.example.test", "path": "/v1/items",
	}
	got := entries[0].ContextMap()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("fields = %v, want exactly %v", got, want)
	}
	for _, e := range logs.All() {
		for _, v := range e.ContextMap() {
			if s, _ := v.(string); strings.Contains(s, tokA) || strings.Contains(s, "secret-in-query") {
				t.Errorf("log entry carries a secret: %v", e.ContextMap())
			}
		}
	}
}

func TestPlaceholderTokens(t *testing.T) {
	t.Setenv("IPAL_TEST_TOKEN", tokA)
	file := filepath.Join(t.TempDir(), "secret")
	testkit.WriteFile(t, file, tokB+"\n")
	h, _ := provisioned(t, &Handler{
		Tokens: map[string]*TokenPolicy{
			"env":  {Token: "{env.IPAL_TEST_TOKEN}", Allow: []string{"203.0.113.1"}},
			"file": {Token: "{file." + file + "}", Allow: []string{"203.0.113.2"}},
		},
	})
	for _, tt := range []struct{ tok, remote, label string }{
		{tokA, "203.0.113.1:1", "env"},
		{tokB, "203.0.113.2:1", "file"},
	} {
		res := serve(h, newRequest(tt.remote, "/", testkit.Bearer(tt.tok)...))
		if res.placeholder(placeholderReason) != ReasonAllowed || res.placeholder(placeholderLabel) != tt.label {
			t.Errorf("%s: reason %q label %q", tt.label, res.placeholder(placeholderReason), res.placeholder(placeholderLabel))
		}
	}
	// The placeholder text itself is not a token.
	res := serve(h, newRequest("203.0.113.1:1", "/", testkit.Bearer("{env.IPAL_TEST_TOKEN}")...))
	if res.placeholder(placeholderLabel) != "" {
		t.Error("the placeholder text matched as a token")
	}
}

func asHandlerError(err error, he *caddyhttp.HandlerError) bool {
	h, ok := err.(caddyhttp.HandlerError)
	if ok {
		*he = h
	}
	return ok
}

// A listed token that passes becomes the request's user id, as basic_auth's
// users do, with a variable saying ip_allowlist set it; an id set by an
// authentication handler before is kept, and nothing else sets one.
func TestUserID(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	for _, tt := range []struct {
		name, remote, tok, before, want, wantVar string
	}{
		{"listed and allowed", "203.0.113.1:1", tokA, "", "a", "a"},
		{"listed but refused", "198.51.100.1:1", tokA, "", "", ""},
		{"unlisted", "203.0.113.1:1", "unlisted-token-0123456789", "", "", ""},
		{"after basic_auth", "203.0.113.1:1", tokA, "alice", "alice", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(tt.remote, "/", testkit.Bearer(tt.tok)...)
			repl := req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			if tt.before != "" {
				repl.Set("http.auth.user.id", tt.before)
			}
			res := serve(h, req)
			if got := res.placeholder("http.auth.user.id"); got != tt.want {
				t.Errorf("user id %q, want %q", got, tt.want)
			}
			v, _ := caddyhttp.GetVar(req.Context(), userIDVar).(fmt.Stringer)
			got := ""
			if v != nil {
				got = v.String()
			}
			if got != tt.wantVar {
				t.Errorf("%s = %q, want %q", userIDVar, got, tt.wantVar)
			}
		})
	}
}
