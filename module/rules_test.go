package ipallowlist

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// badEntry is one case of testdata/bad_entries.json: an entry every source
// must refuse with the same error, naming the token's label.
type badEntry struct {
	Name   string          `json:"name"`
	Label  string          `json:"label"`
	Entry  json.RawMessage `json:"entry"`
	Want   string          `json:"want"`
	Secret string          `json:"secret"` // must appear in no error
	Not    []string        `json:"not"`    // sources that cannot carry it
	Only   []string        `json:"only"`   // or the only ones that can
}

// BadEntries reads the shared table; the caddyfile and examples packages
// read the same file.
func readBadEntries(t *testing.T) []badEntry {
	t.Helper()
	b, err := os.ReadFile("../testdata/bad_entries.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []badEntry
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for i := range cases {
		if cases[i].Label == "" {
			cases[i].Label = "partner-a"
		}
	}
	return cases
}

func (c badEntry) carriedBy(source string) bool {
	if len(c.Only) > 0 {
		return slices.Contains(c.Only, source)
	}
	return !slices.Contains(c.Not, source)
}

func (c badEntry) policy(t *testing.T) *TokenPolicy {
	t.Helper()
	var tp TokenPolicy
	if err := json.Unmarshal(c.Entry, &tp); err != nil {
		t.Fatal(err)
	}
	return &tp
}

// Every bad entry is refused by every source that can carry it, with the
// same words, naming the label; nothing else in the config is affected.
func TestBadEntriesEverySource(t *testing.T) {
	good := &TokenPolicy{Token: "good-token-0123456789", Allow: []string{"192.0.2.1"}}
	sources := map[string]func(t *testing.T, c badEntry) error{
		"json": func(t *testing.T, c badEntry) error {
			return provisionErr(&Handler{Tokens: map[string]*TokenPolicy{c.Label: c.policy(t), "good": good}})
		},
		"tokens_file": func(t *testing.T, c badEntry) error {
			p := testkit.WriteFile(t, filepath.Join(t.TempDir(), "tokens.json"),
				`{"good": {"token": "good-token-0123456789", "allow": ["192.0.2.1"]}, `+jsonString(c.Label)+`: `+string(c.Entry)+`}`)
			return provisionErr(&Handler{TokensFiles: []string{p}})
		},
		"store": func(t *testing.T, c badEntry) error {
			// A store entry is refused alone: the rest of the store and the
			// config still compile, and its token, where its digest is
			// known, is refused rather than unlisted.
			var skipped error
			shared := []labeledEntry{storeEntry(c.Label, string(c.Entry)), storeEntry("good-store", `{"token_sha256":"`+testkit.Digest("good-store-token-01")+`","allow":["192.0.2.2"]}`)}
			tb, err := compileShared(&Handler{Tokens: map[string]*TokenPolicy{"good": good}}, caddy.NewReplacer(), "redis", shared,
				func(label string, err error) {
					if label != c.Label {
						t.Errorf("entry %q skipped too: %v", label, err)
					}
					skipped = err
				}, nil)
			if err != nil {
				t.Fatalf("the whole table was refused: %v", err)
			}
			if len(tb.policies) < 2 {
				t.Errorf("the good tokens were dropped with the bad entry")
			}
			if d, ok := shared[0].digest(); ok {
				i, listed := tb.index[d]
				if !listed || tb.check(&tb.policies[i], mustAddr("192.0.2.1")) == reasonAllowed {
					t.Errorf("the bad entry's token is not refused: listed %v", listed)
				}
			}
			return skipped
		},
		"cli": func(t *testing.T, c badEntry) error {
			return checkStoreEntry(c.Label, c.policy(t))
		},
	}
	for _, c := range readBadEntries(t) {
		for name, source := range sources {
			if !c.carriedBy(name) {
				continue
			}
			t.Run(c.Name+"/"+name, func(t *testing.T) {
				err := source(t, c)
				if err == nil {
					t.Fatalf("accepted; want an error containing %q", c.Want)
				}
				if !strings.Contains(err.Error(), `token "`+c.Label+`"`) || !strings.Contains(err.Error(), c.Want) {
					t.Errorf("error:\n  %v\nwant it to name token %q and contain:\n  %s", err, c.Label, c.Want)
				}
				if c.Secret != "" && strings.Contains(err.Error(), c.Secret) {
					t.Errorf("error shows what may be a token: %v", err)
				}
			})
		}
	}
}

// storeEntry is an entry as a node's store lists it, with the token it
// claims.
func storeEntry(label, raw string) labeledEntry {
	e := labeledEntry{label: label, redisEntry: decodeEntry(raw)}
	if e.claimed {
		e.d, e.dOK = e.claim, true
	}
	return e
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestAllowBroadAcceptsWideEntries(t *testing.T) {
	h, _ := provisioned(t, &Handler{Tokens: map[string]*TokenPolicy{
		"wide": {Token: "wide-token-0123456789", Allow: []string{"10.0.0.0/7", "2001::/16"}, AllowBroad: true},
		// a /8 and a /32 are the widest accepted without it; the
		// shorthands are always accepted
		"edge": {Token: "edge-token-0123456789", Allow: []string{"10.0.0.0/8", "2001:db8::/32", "any", "private_ranges"}},
	}})
	for _, tt := range []struct{ tok, remote, want string }{
		{"wide-token-0123456789", "11.1.2.3:1", ReasonAllowed},
		{"wide-token-0123456789", "12.1.2.3:1", ReasonIPNotAllowed},
		{"edge-token-0123456789", "203.0.113.9:1", ReasonAllowed},
	} {
		res := serve(h, newRequest(tt.remote, "/", testkit.Bearer(tt.tok)...))
		if got := res.placeholder(placeholderReason); got != tt.want {
			t.Errorf("%s from %s: %s, want %s", tt.tok, tt.remote, got, tt.want)
		}
	}
	// A set counts whole: two /9s in one set are a /8's worth (accepted),
	// three are more.
	if err := provisionErr(&Handler{
		IPSets: map[string][]string{"wide": {"10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/9"}},
		Tokens: map[string]*TokenPolicy{"t": {Token: "set-token-0123456789", Allow: []string{"wide"}}},
	}); err == nil || !strings.Contains(err.Error(), `token "t": allow[0] "wide": admits 25,165,824 IPv4 addresses`) {
		t.Errorf("a set wider than a /8: %v", err)
	}
}

func TestRevokedTokenIsRefusedEverywhere(t *testing.T) {
	h, _ := provisioned(t, &Handler{Tokens: map[string]*TokenPolicy{
		"gone":         {Token: "gone-token-0123456789", Revoked: true},
		"gone-but-had": {Token: "gone-token-with-allow", Allow: []string{"any"}, Revoked: true},
	}})
	for _, tok := range []string{"gone-token-0123456789", "gone-token-with-allow"} {
		res := serve(h, newRequest("192.0.2.1:1", "/", testkit.Bearer(tok)...))
		if res.status != 401 || res.placeholder(placeholderReason) != ReasonTokenRevoked {
			t.Errorf("revoked %s: %d %s, want 401 %s", tok, res.status, res.placeholder(placeholderReason), ReasonTokenRevoked)
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// Removing a token from a config source does not revoke it: when the
// unlisted policy admits addresses, the new config says so, once per token.
func TestRemovedTokenWarns(t *testing.T) {
	tokens := func(labels ...string) map[string]*TokenPolicy {
		m := map[string]*TokenPolicy{}
		for _, l := range labels {
			m[l] = &TokenPolicy{Token: "token-of-" + l + "-0123456789", Allow: []string{"192.0.2.1"}}
		}
		return m
	}
	load := func(h *Handler) (*Handler, *observer.ObservedLogs) {
		return h, provisionLogging(t, h, zapcore.WarnLevel)
	}
	for _, tt := range []struct {
		name     string
		unlisted *Policy
		want     []string
	}{
		{"under unlisted any", nil, []string{"partner-b"}},
		{"under unlisted ranges", &Policy{Allow: []string{"10.0.0.0/8"}}, []string{"partner-b"}},
		{"under unlisted none", &Policy{Allow: []string{}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old, _ := load(&Handler{Tokens: tokens("partner-a", "partner-b"), Unlisted: tt.unlisted})
			next, logs := load(&Handler{Tokens: tokens("partner-a"), Unlisted: tt.unlisted})
			_ = old.Cleanup()
			defer next.Cleanup()
			var got []string
			for _, e := range logs.FilterMessageSnippet("no longer listed").All() {
				got = append(got, e.ContextMap()["token_label"].(string))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("warned for %v, want %v", got, tt.want)
			}
		})
	}
	// A watched tokens file that loses a token says so too.
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.json")
	write := func(labels ...string) {
		b, _ := json.Marshal(tokens(labels...))
		testkit.WriteFile(t, file, string(b))
	}
	write("partner-a", "partner-b")
	h, logs := load(&Handler{TokensFiles: []string{file}})
	defer h.Cleanup()
	write("partner-a")
	h.reloadTokens(context.Background())
	n := 0
	for _, e := range logs.FilterMessageSnippet("no longer listed").All() {
		if e.ContextMap()["token_label"] == "partner-b" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d warnings for the token the file lost, want 1", n)
	}
}

// A restricted unlisted policy with missing_token allow is a half-closed
// door: say so at provision.
func TestRestrictedUnlistedWithMissingAllowWarns(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    *Handler
		warn bool
	}{
		{"unlisted none, missing allow", &Handler{Unlisted: &Policy{Allow: []string{}}}, true},
		{"unlisted ranges, missing allow", &Handler{Unlisted: &Policy{Allow: []string{"10.0.0.0/8"}}}, true},
		{"unlisted none, missing deny", &Handler{Unlisted: &Policy{Allow: []string{}}, MissingToken: MissingDeny}, false},
		{"defaults", &Handler{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := provisionLogging(t, tt.h, zapcore.WarnLevel)
			if got := logs.FilterMessageSnippet("set missing_token deny").Len() == 1; got != tt.warn {
				t.Errorf("warned %v, want %v", got, tt.warn)
			}
		})
	}
}
