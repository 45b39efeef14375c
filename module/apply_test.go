package ipallowlist

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// applyConfig is a config for the apply tests: three inline tokens (one
// from an ip_set) and a tokens file, unlisted tokens refused everywhere.
func applyConfig(t *testing.T) *Handler {
	file := testkit.WriteFile(t, t.TempDir()+"/tokens.json", `{}`)
	return &Handler{
		IPSets: map[string][]string{"office": {"203.0.113.0/24"}},
		Tokens: map[string]*TokenPolicy{
			"c0": {Token: applyTok(0), Allow: []string{"office"}},
			"c1": {Token: applyTok(1), Allow: []string{"192.0.2.1"}},
			"c2": {TokenSHA256: testkit.Digest(applyTok(2)), Allow: []string{"any"}, Deny: []string{"192.0.2.9"}},
		},
		TokensFiles: []string{file},
		Unlisted:    &Policy{Allow: []string{}},
	}
}

// applyTok is the i-th test token; 0 to 2 are the inline config's.
func applyTok(i int) string { return fmt.Sprintf("apply-test-token-%02d-0123456789", i) }

var applyAddrs = []netip.Addr{
	netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.9"),
	netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("198.51.100.7"),
	netip.MustParseAddr("2001:db8::1"),
}

// fakeStore is a token store in memory: what the handler's storeEntries
// reads, and what a change's write keeps.
type fakeStore struct {
	mu      sync.Mutex
	entries map[string]*TokenPolicy
	fail    bool // writes fail
}

func (s *fakeStore) list() ([]labeledEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []labeledEntry
	for _, label := range sortedKeys(s.entries) {
		raw, err := json.Marshal(s.entries[label])
		if err != nil {
			return nil, err
		}
		out = append(out, storeEntry(label, string(raw)))
	}
	return out, nil
}

// apply changes label through h, writing it to s as a store would.
func (s *fakeStore) apply(h *Handler, label string, tp *TokenPolicy) error {
	return h.applyToken(label, tp, func(kept *TokenPolicy) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail {
			return errors.New("the store is down")
		}
		if kept == nil {
			delete(s.entries, label)
		} else {
			s.entries[label] = kept
		}
		return nil
	})
}

// applyHandler provisions cfg with a fake store behind it.
func applyHandler(t *testing.T, cfg *Handler) (*Handler, *fakeStore) {
	h := cfg
	provisionLogging(t, h, zapcore.WarnLevel)
	s := &fakeStore{entries: map[string]*TokenPolicy{}}
	h.storeEntries = s.list
	return h, s
}

// viewOutcome is what v decides for tok from addr: the reason and label.
func viewOutcome(h *Handler, v *view, tok string, addr netip.Addr) string {
	d := h.decide(newRequest(netip.AddrPortFrom(addr, 1).String(), "/", testkit.Bearer(tok)...), v)
	return d.reason.String() + " " + d.table.label(d.policy).String()
}

// rebuilt is a full build of h's config and store now: what the view in
// force must decide after any run of changes.
func rebuilt(t *testing.T, h *Handler) *view {
	t.Helper()
	tb, err := h.build()
	if err != nil {
		t.Fatal(err)
	}
	return newView(tb)
}

// randomEntry is a store entry, valid or not, from small pools, so that
// labels and tokens often meet those of the config and of each other.
func randomEntry(rng *rand.Rand) *TokenPolicy {
	allows := [][]string{{"192.0.2.1"}, {"office"}, {"198.51.100.0/24", "2001:db8::/64"}, {"any"}, {"nosuchset"}, {"10.0.0.1/8"}, {}}
	tp := &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(rng.IntN(12))), Allow: allows[rng.IntN(len(allows))]}
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

// TestApplyAgreesWithRebuild: after every step of a long random run of
// changes (puts, removals, refusals), tokens-file reloads that take labels
// and tokens from the store, and merges, the view in force decides every
// token from every address as a full build of the config and store does,
// and a refused change changes nothing, in the view or the store.
func TestApplyAgreesWithRebuild(t *testing.T) {
	h, s := applyHandler(t, applyConfig(t))
	rng := rand.New(rand.NewPCG(1, 2))
	labels := []string{"c0", "c1", "f0", "s0", "s1", "s2", "s3", "s4", "s5", "s6"}
	var refused, applied, reloads, merges int
	for step := range 2000 {
		switch r := rng.IntN(40); {
		case r == 0:
			// The tokens file lists f0, and sometimes takes s1 or a
			// token the store may hold.
			file := map[string]*TokenPolicy{"f0": {TokenSHA256: testkit.Digest(applyTok(3 + rng.IntN(3))), Allow: []string{"198.51.100.7"}}}
			if rng.IntN(2) == 0 {
				file["s1"] = &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"any"}}
			}
			raw, _ := json.Marshal(file)
			testkit.WriteFile(t, h.TokensFiles[0], string(raw))
			h.reloadTokens(t.Context())
			reloads++
		case r == 1:
			h.merge()
			if len(h.overlay) != 0 {
				t.Fatalf("step %d: %d changes left in the overlay after a merge", step, len(h.overlay))
			}
			merges++
		default:
			label := labels[rng.IntN(len(labels))]
			var tp *TokenPolicy
			if rng.IntN(4) != 0 {
				tp = randomEntry(rng)
			}
			before, stored := h.current.Load(), len(s.entries)
			if err := s.apply(h, label, tp); err != nil {
				refused++
				if h.current.Load() != before || len(s.entries) != stored {
					t.Fatalf("step %d: a refused change (%v) changed the view or the store", step, err)
				}
				continue
			}
			applied++
		}
		got, want := h.current.Load(), rebuilt(t, h)
		for i := range 12 {
			for _, a := range applyAddrs {
				if g, w := viewOutcome(h, got, applyTok(i), a), viewOutcome(h, want, applyTok(i), a); g != w {
					t.Fatalf("step %d: token %d from %s: %s, a full build decides %s", step, i, a, g, w)
				}
			}
		}
		for _, label := range labels {
			gt, gp := got.byLabel(label)
			wt, wp := want.byLabel(label)
			if (gp == nil) != (wp == nil) || gp != nil && (gt.check(gp, applyAddrs[0]) != wt.check(wp, applyAddrs[0])) {
				t.Fatalf("step %d: the check route's %s differs from a full build's", step, label)
			}
		}
	}
	if refused < 200 || applied < 500 || reloads < 20 || merges < 20 {
		t.Fatalf("%d refused, %d applied, %d reloads, %d merges: the run does not exercise them all", refused, applied, reloads, merges)
	}
}

// TestApplyRefusals: a change to a config label, or with a token another
// label holds, is a ConflictError naming the other label and where it is
// listed, never the token; a bad entry is a ConfigError naming the entry;
// a store that cannot keep the change refuses it; without a store nothing
// is applied.
func TestApplyRefusals(t *testing.T) {
	h, s := applyHandler(t, applyConfig(t))
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, label string
		tp          *TokenPolicy
		down        bool
		want        string
	}{
		{"a config label", "c1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(7)), Allow: []string{"any"}}, false, `token "c1": the label is listed in tokens`},
		{"removing a config label", "c1", nil, false, `token "c1": the label is listed in tokens`},
		{"a config token", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(1)), Allow: []string{"any"}}, false, `token "s1": same token as "c1", listed in tokens`},
		{"a changed token", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"any"}}, false, `token "s1": same token as "s0", listed in the token store`},
		{"an unknown set", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"ofice"}}, false, `allow[0] "ofice": unknown ip_set`},
		{"an unknown set in deny", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"any"}, Deny: []string{"ofice"}}, false, `deny[0] "ofice": unknown ip_set`},
		{"host bits", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"10.0.0.1/8"}}, false, `did you mean 10.0.0.0/8`},
		{"a placeholder", "s1", &TokenPolicy{Token: "{env.X}", Allow: []string{"any"}}, false, "placeholder"},
		{"the store down", "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"any"}}, true, "the store is down"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, stored := h.current.Load(), len(s.entries)
			s.fail = tt.down
			defer func() { s.fail = false }()
			err := s.apply(h, tt.label, tt.tp)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
			for i := range 12 {
				if strings.Contains(err.Error(), applyTok(i)) || strings.Contains(err.Error(), testkit.Digest(applyTok(i))) {
					t.Errorf("the error holds a token or its digest: %v", err)
				}
			}
			if h.current.Load() != before || len(s.entries) != stored {
				t.Error("a refused change changed the view or the store")
			}
		})
	}
	// A change refused by the store never comes in with a later one.
	if err := s.apply(h, "s3", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(7)), Allow: []string{"any"}}); err != nil {
		t.Fatal(err)
	}
	if got := viewOutcome(h, h.current.Load(), applyTok(6), applyAddrs[0]); got != "unlisted_token " {
		t.Errorf("the change the store refused, after another was applied: %s, want unlisted_token", got)
	}
	bare, _ := provisioned(t, applyConfig(t))
	if err := bare.applyToken("s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"any"}}, func(*TokenPolicy) error { return nil }); !errors.Is(err, errNoStore) {
		t.Errorf("a change without a store: %v, want errNoStore", err)
	}
}

// TestApplyThroughReloads: a tokens-file reload builds the base anew from
// the config and the store, so changes stay in force; a label the file
// gives the config refuses the store's token of that label (invalid_entry,
// never unlisted) and leaves the config's its own.
func TestApplyThroughReloads(t *testing.T) {
	cfg := applyConfig(t)
	cfg.Unlisted = nil // unlisted tokens allowed anywhere: a token that falls out of the list would pass
	h, s := applyHandler(t, cfg)
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	outcome := func(tok int, addr netip.Addr) string { return viewOutcome(h, h.current.Load(), applyTok(tok), addr) }
	if got := outcome(5, applyAddrs[3]); got != "ip_not_allowed s0" {
		t.Fatalf("after the change, from elsewhere: %s", got)
	}
	testkit.WriteFile(t, h.TokensFiles[0], `{"f0": {"token_sha256": "`+testkit.Digest(applyTok(8))+`", "allow": ["any"]}}`)
	h.reloadTokens(t.Context())
	if got := outcome(5, applyAddrs[3]); got != "ip_not_allowed s0" {
		t.Errorf("the store's s0 after a reload: %s, want still restricted", got)
	}
	testkit.WriteFile(t, h.TokensFiles[0], `{"s0": {"token_sha256": "`+testkit.Digest(applyTok(8))+`", "allow": ["198.51.100.7"]}}`)
	h.reloadTokens(t.Context())
	if got := outcome(8, applyAddrs[3]); got != "allowed s0" {
		t.Errorf("the config's s0 after the reload: %s, want allowed", got)
	}
	if got := outcome(5, applyAddrs[3]); got != "invalid_entry s0" {
		t.Errorf("the store's token for the label the config took: %s, want invalid_entry (never unlisted)", got)
	}
	if err := s.apply(h, "s0", nil); err == nil {
		t.Error("the store's s0 could be removed while the config lists s0")
	}
}

// TestApplyMasksTheBase: a change to, or removal of, a token the base
// holds (after a merge) hides its base policy from every reader: requests,
// the check route (byLabel) and the list of listed tokens (tokens); a
// removal while unlisted tokens are admitted is warned about at the next
// full build, as a reload's is.
func TestApplyMasksTheBase(t *testing.T) {
	cfg := applyConfig(t)
	cfg.Unlisted = nil
	h, s := applyHandler(t, cfg)
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	h.merge()
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"198.51.100.7"}}); err != nil {
		t.Fatal(err)
	}
	v := h.current.Load()
	if tb, p := v.byLabel("s0"); p == nil || tb != v.over || tb.check(p, applyAddrs[3]) != reasonAllowed {
		t.Errorf("byLabel(s0) after the change: not the overlay's policy")
	}
	if err := s.apply(h, "s0", nil); err != nil {
		t.Fatal(err)
	}
	v = h.current.Load()
	if _, p := v.byLabel("s0"); p != nil {
		t.Error("byLabel finds a removed token")
	}
	digest := sha256.Sum256([]byte(applyTok(5)))
	for d, label := range v.tokens {
		if d == digest {
			t.Errorf("tokens yields the removed token, as %s", label)
		}
	}
	if got := viewOutcome(h, v, applyTok(5), applyAddrs[0]); got != "allowed " {
		t.Errorf("the removed token: %s, want allowed as unlisted (unlisted any)", got)
	}
}

// TestApplyWhileServing: requests read views while changes and merges
// publish new ones; run under -race. A token never changed is decided the
// same throughout.
func TestApplyWhileServing(t *testing.T) {
	h, s := applyHandler(t, applyConfig(t))
	var stop atomic.Bool
	var wrong, served atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if serve(h, newRequest("192.0.2.1:1", "/", testkit.Bearer(applyTok(1))...)).status != 200 {
					wrong.Add(1)
				}
				serve(h, newRequest("192.0.2.1:1", "/", testkit.Bearer(applyTok(5))...))
				served.Add(2)
			}
		}()
	}
	for i := range 300 {
		tp := &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5 + i%3)), Allow: []string{fmt.Sprintf("192.0.2.%d", 1+i%2)}}
		if err := s.apply(h, fmt.Sprint("s", i%3), tp); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			h.merge()
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Errorf("the config's token was refused %d times of %d while others changed", n, served.Load())
	}
}

// TestApplyMergesAtTheBound: reaching overlayMerge changes starts a merge
// in the background, which folds them into the base while changes go on;
// the overlay never reaches overlayMergeNow.
func TestApplyMergesAtTheBound(t *testing.T) {
	h, s := applyHandler(t, applyConfig(t))
	base := h.current.Load().base
	for i := range overlayMerge + 10 {
		if err := s.apply(h, fmt.Sprint("m", i), &TokenPolicy{TokenSHA256: testkit.Digest(fmt.Sprint("merge-token-", i, "-0123456789")), Allow: []string{"192.0.2.1"}}); err != nil {
			t.Fatal(err)
		}
		h.rebuild.Lock()
		n := len(h.overlay)
		h.rebuild.Unlock()
		if n >= overlayMergeNow {
			t.Fatalf("after %d changes the overlay holds %d", i+1, n)
		}
	}
	testkit.Eventually(t, "the merge", 10*time.Second, func() bool {
		h.rebuild.Lock()
		defer h.rebuild.Unlock()
		return !h.merging && h.current.Load().base != base
	})
	h.rebuild.Lock()
	n := len(h.overlay)
	h.rebuild.Unlock()
	if n >= overlayMerge {
		t.Errorf("the overlay holds %d changes after the merge", n)
	}
	v := h.current.Load()
	if _, ok := v.base.labelled("m0"); !ok {
		t.Error("the merge did not fold m0 into the base")
	}
	// Every change is in force, whether merged or in the overlay.
	for i := range overlayMerge + 10 {
		if got := viewOutcome(h, v, fmt.Sprint("merge-token-", i, "-0123456789"), applyAddrs[0]); got != fmt.Sprintf("allowed m%d", i) {
			t.Fatalf("m%d after the merge: %s", i, got)
		}
	}
}

// TestApplyMergeKeepsLaterChanges: changes applied while a merge compiles
// stay in force over its new base, and a merge made stale by a full build
// is dropped.
func TestApplyMergeKeepsLaterChanges(t *testing.T) {
	h, s := applyHandler(t, applyConfig(t))
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	// The merge reads the store, then s0 changes and s1 arrives before it
	// publishes.
	read := make(chan struct{})
	resume := make(chan struct{})
	entries := h.storeEntries
	h.storeEntries = func() ([]labeledEntry, error) {
		es, err := entries()
		close(read)
		<-resume
		return es, err
	}
	h.rebuild.Lock()
	h.merging = true
	h.rebuild.Unlock()
	done := make(chan struct{})
	go func() { h.mergeInBackground(); close(done) }()
	<-read
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.9"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.apply(h, "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"192.0.2.9"}}); err != nil {
		t.Fatal(err)
	}
	close(resume)
	<-done
	h.storeEntries = entries
	v := h.current.Load()
	for tok, want := range map[int]string{5: "allowed s0", 6: "allowed s1"} {
		if got := viewOutcome(h, v, applyTok(tok), applyAddrs[1]); got != want {
			t.Errorf("token %d after the merge: %s, want %s", tok, got, want)
		}
	}
	if got := viewOutcome(h, v, applyTok(5), applyAddrs[0]); got != "ip_not_allowed s0" {
		t.Errorf("s0's old address after the merge: %s", got)
	}
	if _, ok := v.base.labelled("s0"); !ok {
		t.Error("the merge did not publish its base")
	}
}

// TestApplyKeepsNoSecretAndNoAlias: a literal token reaches the store as
// its digest only, and a caller's later edit of the entry it passed never
// reaches the view.
func TestApplyKeepsNoSecretAndNoAlias(t *testing.T) {
	h, s := applyHandler(t, applyConfig(t))
	tp := &TokenPolicy{Token: applyTok(5), Allow: []string{"192.0.2.1"}}
	if err := s.apply(h, "s0", tp); err != nil {
		t.Fatal(err)
	}
	if kept := s.entries["s0"]; kept.Token != "" || kept.TokenSHA256 != testkit.Digest(applyTok(5)) {
		t.Errorf("the store kept %+v, want the digest only", kept)
	}
	tp.Allow[0], tp.Revoked = "nosuchset", true
	if err := s.apply(h, "s1", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(6)), Allow: []string{"any"}}); err != nil {
		t.Fatal(err)
	}
	if got := viewOutcome(h, h.current.Load(), applyTok(5), applyAddrs[0]); got != "allowed s0" {
		t.Errorf("s0 after its caller edited the entry it passed: %s, want allowed s0", got)
	}
}

// TestApplyFailedMergeKeepsChanges: a merge whose build fails (the store
// unreadable) leaves the view and its overlay in force, and logs it.
func TestApplyFailedMergeKeepsChanges(t *testing.T) {
	cfg := applyConfig(t)
	h, s := applyHandler(t, cfg)
	logger, logs := testkit.Logs(zapcore.InfoLevel)
	h.logger = logger
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	before := h.current.Load()
	h.storeEntries = func() ([]labeledEntry, error) { return nil, errors.New("disk unreadable") }
	h.merge()
	if h.current.Load() != before || len(h.overlay) != 1 {
		t.Fatal("a failed merge replaced the view or dropped the overlay")
	}
	if got := viewOutcome(h, h.current.Load(), applyTok(5), applyAddrs[0]); got != "allowed s0" {
		t.Errorf("s0 after a failed merge: %s", got)
	}
	if logs.FilterMessageSnippet("merging the changed tokens failed").Len() != 1 {
		t.Errorf("the failed merge is not logged: %v", logs.All())
	}
}

// TestApplyRemovalWarns: removing a store token while unlisted tokens are
// admitted logs the same WARN a reload that drops a token does.
func TestApplyRemovalWarns(t *testing.T) {
	cfg := applyConfig(t)
	cfg.Unlisted = nil
	h, s := applyHandler(t, cfg)
	logger, logs := testkit.Logs(zapcore.WarnLevel)
	h.logger = logger
	if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(5)), Allow: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	h.merge()
	if err := s.apply(h, "s0", nil); err != nil {
		t.Fatal(err)
	}
	warned := logs.FilterMessageSnippet("token no longer listed")
	if warned.Len() != 1 || warned.All()[0].ContextMap()["token_label"] != "s0" {
		t.Errorf("removal warnings: %v, want one naming s0", logs.All())
	}
	// A label given another token (Redis allows it) unlists the old one;
	// a change of the same token's list does not.
	for i, tok := range []int{5, 5, 6, 6} {
		if err := s.apply(h, "s0", &TokenPolicy{TokenSHA256: testkit.Digest(applyTok(tok)), Allow: []string{fmt.Sprintf("192.0.2.%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.FilterMessageSnippet("token no longer listed").Len(); n != 2 {
		t.Errorf("%d warnings after re-adding s0 and changing its token once, want 2: %v", n, logs.All())
	}
}
