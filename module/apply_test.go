package ipallowlist

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// applyConfig is a config for the apply tests: three config tokens (one
// from an ip_set), unlisted tokens refused everywhere.
func applyConfig() *Handler {
	return &Handler{
		IPSets: map[string][]string{"office": {"203.0.113.0/24"}},
		Tokens: map[string]*TokenPolicy{
			"c0": {Token: applyToken(0), Allow: []string{"office"}},
			"c1": {Token: applyToken(1), Allow: []string{"192.0.2.1"}},
			"c2": {TokenSHA256: testkit.Digest(applyToken(2)), Allow: []string{"any"}, Deny: []string{"192.0.2.9"}},
		},
		Unlisted: &Policy{Allow: []string{}},
	}
}

// applyToken is the i-th test token; 0 to 2 are the config's.
func applyToken(i int) string { return fmt.Sprintf("apply-test-token-%02d-0123456789", i) }

var applyAddrs = []netip.Addr{
	netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.9"),
	netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("198.51.100.7"),
	netip.MustParseAddr("2001:db8::1"),
}

// outcome is what a view decides for tok from addr: the reason and label.
func viewOutcome(h *Handler, v *view, tok string, addr netip.Addr) string {
	d := h.decide(newRequest(netip.AddrPortFrom(addr, 1).String(), "/", testkit.Bearer(tok)...), v)
	return d.reason.String() + " " + d.table.label(d.policy).String()
}

// fullView compiles the config and store from scratch: what the view after
// any run of changes must decide.
func fullView(t *testing.T, h *Handler, store map[string]*TokenPolicy) *view {
	t.Helper()
	var shared []labeledEntry
	for _, label := range sortedKeys(store) {
		e := labeledEntry{label: label, redisEntry: &redisEntry{tp: *store[label]}}
		shared = append(shared, e)
	}
	base, err := compileShared(h, caddy.NewReplacer(), whereStore, shared, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return newView(base)
}

// randomEntry is a store entry, valid or not, from small pools, so that
// labels and tokens often meet those of the config and of each other.
func randomEntry(rng *rand.Rand) *TokenPolicy {
	allows := [][]string{{"192.0.2.1"}, {"office"}, {"198.51.100.0/24", "2001:db8::/64"}, {"any"}, {"nosuchset"}, {"10.0.0.1/8"}, {}}
	tp := &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(rng.IntN(12))), Allow: allows[rng.IntN(len(allows))]}
	if rng.IntN(4) == 0 {
		tp.Deny = []string{"198.51.100.7"}
	}
	if rng.IntN(8) == 0 {
		tp.Revoked = true
	}
	if rng.IntN(10) == 0 {
		tp.TokenSHA256, tp.Token = "", "{env.NOT_IN_A_STORE}"
	}
	return tp
}

// wantRefused says whether a change should be refused: by the model of the
// rules, not by the code under test's overlay.
func wantRefused(t *testing.T, h *Handler, store map[string]*TokenPolicy, label string, tp *TokenPolicy) bool {
	if _, config := h.Tokens[label]; config {
		return true
	}
	if tp == nil {
		return false
	}
	for other, otp := range h.Tokens {
		if other != label && otp.TokenSHA256 == tp.TokenSHA256 || tp.TokenSHA256 == testkit.Digest(otp.Token) {
			return true
		}
	}
	for other, otp := range store {
		if other != label && otp.TokenSHA256 == tp.TokenSHA256 {
			return true
		}
	}
	c, err := newCompiler(h, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	c.origin = originChange
	return c.addToken(label, tp, whereStore) != nil
}

// TestApplyAgreesWithRebuild: after every change of a long random run
// (puts, removals, refusals, merges), the view in force decides every
// token from every address as a table compiled from scratch would, and a
// refused change changes nothing.
func TestApplyAgreesWithRebuild(t *testing.T) {
	h, _ := provisioned(t, applyConfig())
	rng := rand.New(rand.NewPCG(1, 2))
	store := map[string]*TokenPolicy{}
	labels := []string{"c0", "c1", "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	refused, applied, merges := 0, 0, 0
	for op := range 1500 {
		label := labels[rng.IntN(len(labels))]
		var tp *TokenPolicy
		if rng.IntN(4) != 0 {
			tp = randomEntry(rng)
		}
		before := h.current.Load()
		want := wantRefused(t, h, store, label, tp)
		err := h.applyToken(label, tp)
		if (err != nil) != want {
			t.Fatalf("op %d: %s %+v: error %v, want refused %v", op, label, tp, err, want)
		}
		if err != nil {
			refused++
			if h.current.Load() != before {
				t.Fatalf("op %d: a refused change published a view", op)
			}
			continue
		}
		applied++
		if tp == nil {
			delete(store, label)
		} else {
			store[label] = tp
		}
		if applied%150 == 0 {
			if err := h.merge(func() ([]labeledEntry, error) { return fullEntries(store), nil }); err != nil {
				t.Fatal(err)
			}
			merges++
			if n := len(h.overlay.changes); n != 0 {
				t.Fatalf("op %d: %d changes left in the overlay after a merge with none since", op, n)
			}
		}
		full := fullView(t, h, store)
		got := h.current.Load()
		for i := range 12 {
			for _, a := range applyAddrs {
				if g, w := viewOutcome(h, got, applyToken(i), a), viewOutcome(h, full, applyToken(i), a); g != w {
					t.Fatalf("op %d (%s %+v): token %d from %s: %s, a rebuild decides %s", op, label, tp, i, a, g, w)
				}
			}
		}
	}
	if refused < 100 || applied < 300 || merges < 2 {
		t.Fatalf("%d changes refused, %d applied, %d merges: the run does not exercise them all", refused, applied, merges)
	}
}

func fullEntries(store map[string]*TokenPolicy) []labeledEntry {
	var out []labeledEntry
	for _, label := range sortedKeys(store) {
		out = append(out, labeledEntry{label: label, redisEntry: &redisEntry{tp: *store[label]}})
	}
	return out
}

// TestApplyRefusals: a change to a config label, or with a token another
// label holds, is a ConflictError naming the other label and where it is
// listed, never the token; a bad entry is a ConfigError naming the entry.
func TestApplyRefusals(t *testing.T) {
	h, _ := provisioned(t, applyConfig())
	if err := h.applyToken("s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, label string
		tp          *TokenPolicy
		want        string
	}{
		{"a config label", "c1", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(7)), Allow: []string{"any"}}, `token "c1": the label is listed in tokens`},
		{"removing a config label", "c1", nil, `token "c1": the label is listed in tokens`},
		{"a config token", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(1)), Allow: []string{"any"}}, `token "s1": same token as "c1", listed in tokens`},
		{"a changed token", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(5)), Allow: []string{"any"}}, `token "s1": same token as "s0", listed in the token store`},
		{"an unknown set", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(6)), Allow: []string{"ofice"}}, `allow[0] "ofice": unknown ip_set`},
		{"host bits", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(6)), Allow: []string{"10.0.0.1/8"}}, `did you mean 10.0.0.0/8`},
		{"a placeholder", "s1", &TokenPolicy{Token: "{env.X}", Allow: []string{"any"}}, "placeholder"},
		{"an empty allow", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(6))}, "allow is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.current.Load()
			err := h.applyToken(tt.label, tt.tp)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
			var conflict *ConflictError
			var cfg *ConfigError
			if !errors.As(err, &conflict) && !errors.As(err, &cfg) {
				t.Errorf("%T, want a ConflictError or a ConfigError", err)
			}
			for i := range 12 {
				if strings.Contains(err.Error(), applyToken(i)) {
					t.Errorf("the error holds a token: %v", err)
				}
			}
			if h.current.Load() != before {
				t.Error("a refused change published a view")
			}
		})
	}
}

// TestApplyKeepsChangesAcrossRebase: a tokens-file reload or a merge
// compiles a new base; changes applied since stay in force, and a label a
// reload gives the config takes precedence over the store's.
func TestApplyKeepsChangesAcrossRebase(t *testing.T) {
	dir := t.TempDir()
	file := testkit.WriteFile(t, dir+"/tokens.json", `{}`)
	cfg := applyConfig()
	cfg.TokensFiles = []string{file}
	logs := provisionLogging(t, cfg, zapcore.InfoLevel)
	h := cfg
	if err := h.applyToken("s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	if got := viewOutcome(h, h.current.Load(), applyToken(5), applyAddrs[0]); got != "allowed s0" {
		t.Fatalf("after the change: %s", got)
	}
	// The file now lists s0 itself, with another token.
	testkit.WriteFile(t, file, `{"s0": {"token": "`+applyToken(8)+`", "allow": ["198.51.100.7"]}}`)
	h.reloadTokens(t.Context())
	if logs.FilterMessage("tokens files reloaded").Len() != 1 {
		t.Fatalf("no reload: %v", logs.All())
	}
	v := h.current.Load()
	if got := viewOutcome(h, v, applyToken(8), applyAddrs[3]); got != "allowed s0" {
		t.Errorf("the config's s0 after the reload: %s, want allowed", got)
	}
	if got := viewOutcome(h, v, applyToken(5), applyAddrs[0]); got != "unlisted_token " {
		t.Errorf("the store's s0 after the config took the label: %s, want unlisted_token", got)
	}
}

// TestApplyWhileServing: requests read views while changes and merges
// publish new ones; run under -race. A token never changed is decided the
// same throughout.
func TestApplyWhileServing(t *testing.T) {
	h, _ := provisioned(t, applyConfig())
	var stop atomic.Bool
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if serve(h, newRequest("192.0.2.1:1", "/", testkit.Bearer(applyToken(1))...)).status != 200 {
					wrong.Add(1)
				}
				serve(h, newRequest("192.0.2.1:1", "/", testkit.Bearer(applyToken(5))...))
			}
		}()
	}
	store := map[string]*TokenPolicy{}
	for i := range 300 {
		tp := &TokenPolicy{TokenSHA256: testkit.Digest(applyToken(5 + i%3)), Allow: []string{fmt.Sprintf("192.0.2.%d", 1+i%2)}}
		label := fmt.Sprint("s", i%3)
		if err := h.applyToken(label, tp); err != nil {
			t.Fatal(err)
		}
		store[label] = tp
		if i%100 == 99 {
			if err := h.merge(func() ([]labeledEntry, error) { return fullEntries(store), nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Errorf("the config's token was refused %d times while others changed", n)
	}
}
