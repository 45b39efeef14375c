package ipallowlist

import (
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestUnixSocketWarnsOncePerHandler: a request with a token and no client
// address from a peer that is not host:port (a unix socket: Caddy gives
// "@", or nothing) is denied as no_client_ip, and the handler says why,
// once, pointing to trusted_proxies_unix. A TCP peer gets no such warning.
func TestUnixSocketWarnsOncePerHandler(t *testing.T) {
	tests := []struct {
		name   string
		remote string
		reason string
		warns  int
	}{
		{"unix socket, @", "@", ReasonNoClientIP, 1},
		{"unix socket, empty", "", ReasonNoClientIP, 1},
		{"unix socket, a path", "/run/caddy.sock", ReasonNoClientIP, 1},
		{"TCP peer with an unparsable host", "not-an-ip:80", ReasonNoClientIP, 0},
		{"TCP peer", "203.0.113.9:1", ReasonAllowed, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := provisioned(t, decisionConfig())
			for range 3 {
				if res := serve(h, newRequest(tc.remote, "/", testkit.Bearer(tokA)...)); res.placeholder(placeholderReason) != tc.reason {
					t.Fatalf("reason %q, want %q", res.placeholder(placeholderReason), tc.reason)
				}
			}
			warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
			if len(warns) != tc.warns {
				t.Fatalf("%d warnings over 3 requests, want %d: %+v", len(warns), tc.warns, warns)
			}
			for _, w := range warns {
				if !strings.Contains(w.Message, "unix socket") || !strings.Contains(w.Message, "trusted_proxies_unix") ||
					!strings.Contains(w.ContextMap()["caddyfile"].(string), "trusted_proxies_unix") {
					t.Errorf("the warning does not say why or what to do: %s %v", w.Message, w.ContextMap())
				}
				if strings.Contains(w.Message, tokA) || strings.Contains(w.ContextMap()["remote_addr"].(string), tokA) {
					t.Error("the warning holds the token")
				}
			}
		})
	}
	t.Run("each handler warns once", func(t *testing.T) {
		h1, logs1 := provisioned(t, decisionConfig())
		h2, logs2 := provisioned(t, decisionConfig())
		for range 2 {
			serve(h1, newRequest("@", "/", testkit.Bearer(tokA)...))
			serve(h2, newRequest("@", "/", testkit.Bearer(tokA)...))
		}
		if n1, n2 := logs1.FilterLevelExact(zapcore.WarnLevel).Len(), logs2.FilterLevelExact(zapcore.WarnLevel).Len(); n1 != 1 || n2 != 1 {
			t.Errorf("warnings: %d and %d, want one per handler", n1, n2)
		}
	})
}

// TestDebugLoggingWarnsAboutClearTokenSources: with debug logging on, Caddy's
// own debug entries record request headers (all but the credential ones)
// and the query string, so a token read from X-Api-Key or a query
// parameter lands in the log. Provision says so once, naming the sources.
func TestDebugLoggingWarnsAboutClearTokenSources(t *testing.T) {
	tests := []struct {
		name    string
		sources []TokenSource
		level   zapcore.Level
		want    []any // the token_sources field; nil: no warning
	}{
		{"default Authorization Bearer, debug", nil, zapcore.DebugLevel, nil},
		{"Authorization without scheme and Proxy-Authorization, debug",
			[]TokenSource{{Header: "Authorization"}, {Header: "Proxy-Authorization"}}, zapcore.DebugLevel, nil},
		{"custom header, debug", []TokenSource{{Header: "X-Api-Key"}}, zapcore.DebugLevel, []any{"header X-Api-Key"}},
		{"query parameter, debug", []TokenSource{{Query: "api_key"}}, zapcore.DebugLevel, []any{"query api_key"}},
		{"Authorization, custom header and query, debug",
			[]TokenSource{{Header: "Authorization", Scheme: "Bearer"}, {Header: "x-api-key"}, {Query: "api_key"}},
			zapcore.DebugLevel, []any{"header X-Api-Key", "query api_key"}},
		{"custom header and query, info", []TokenSource{{Header: "X-Api-Key"}, {Query: "api_key"}}, zapcore.InfoLevel, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := decisionConfig()
			h.TokenSources = tc.sources
			logs := provisionLogging(t, h, tc.level)
			warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
			if tc.want == nil {
				if len(warns) != 0 {
					t.Errorf("warned: %+v", warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Fatalf("%d warnings, want 1: %+v", len(warns), warns)
			}
			w := warns[0]
			got, _ := w.ContextMap()["token_sources"].([]any)
			if !strings.Contains(w.Message, "debug") || !strings.Contains(w.Message, "README") || len(got) != len(tc.want) {
				t.Fatalf("warning %q %v, want one naming %v and pointing to the README", w.Message, w.ContextMap(), tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("token_sources %v, want %v", got, tc.want)
				}
			}
			for _, tok := range []string{tokA, tokB} {
				if strings.Contains(w.Message, tok) {
					t.Error("the warning holds a token")
				}
			}
		})
	}
}

// TestUnlistedWarningOnlyWhenRestricted: the WARN that unlisted_tokens is
// restricted while missing_token is allow is given only when it is, with
// or without a token store (a store once made the default any read as
// restricted).
func TestUnlistedWarningOnlyWhenRestricted(t *testing.T) {
	tests := []struct {
		name     string
		store    bool
		unlisted *Policy
		missing  string
		warns    bool
	}{
		{"defaults", false, nil, "", false},
		{"defaults, store file", true, nil, "", false},
		{"unlisted any written out, store file", true, &Policy{Allow: []string{KeywordAny}}, "", false},
		{"unlisted restricted", false, &Policy{Allow: []string{"10.0.0.0/8"}}, "", true},
		{"unlisted restricted, store file", true, &Policy{Allow: []string{"10.0.0.0/8"}}, "", true},
		{"unlisted restricted, missing deny, store file", true, &Policy{Allow: []string{"10.0.0.0/8"}}, MissingDeny, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Unlisted: tc.unlisted, MissingToken: tc.missing,
				Tokens: map[string]*TokenPolicy{"config-a": {Token: applyTok(0), Allow: []string{"127.0.0.5"}}}}
			if tc.store {
				h.Store = &TokenStore{File: filepath.Join(t.TempDir(), "tokens.db")}
			}
			logs := provisionLogging(t, h, zapcore.WarnLevel)
			n := 0
			for _, w := range logs.All() {
				if strings.Contains(w.Message, "missing_token is allow") {
					n++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.warns]; n != want {
				t.Errorf("%d warnings that unlisted_tokens is restricted, want %d: %+v", n, want, logs.All())
			}
		})
	}
}

// TestUnlistedWarningNotGivenForAStoreWithEntries: a store that holds
// entries leaves the default unlisted_tokens any as it is, and no WARN says
// it is restricted.
func TestUnlistedWarningNotGivenForAStoreWithEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	h, _ := storeHandler(t, path)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-2", `{"token": "`+applyTok(2)+`", "allow": ["any"], "deny": ["198.51.100.0/24"]}`)
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	_, logs := storeHandler(t, path)
	for _, w := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if strings.Contains(w.Message, "missing_token is allow") {
			t.Errorf("warned with unlisted_tokens any: %s %v", w.Message, w.ContextMap())
		}
	}
}
