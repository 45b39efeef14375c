package ipallowlist

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fullBuilds counts the handler's full builds from the store: each logs
// "tokens from redis applied" once.
func fullBuilds(logs *observer.ObservedLogs) int {
	return logs.FilterMessage("tokens from redis applied").Len()
}

// settled waits until h has taken every change the store made, and
// applied it, one token at a time or by a full build.
func settled(t *testing.T, h *Handler) { t.Helper(); changesFrom(h)(t, 0) }

// changesFrom returns a wait until the store has made n more changes than
// it had made when changesFrom was called, and h has applied them all.
func changesFrom(h *Handler) func(t *testing.T, n int) {
	storeGen := func() uint64 {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		return h.store.gen
	}
	from := storeGen()
	return func(t *testing.T, n int) {
		t.Helper()
		testkit.Eventually(t, fmt.Sprintf("%d changes applied", n), 5*time.Second, func() bool {
			gen := storeGen()
			h.rebuild.Lock()
			defer h.rebuild.Unlock()
			return gen >= from+uint64(n) && h.builtGen == gen
		})
	}
}

// applyStore starts a store of three tokens and a handler with the
// default unlisted policy (any), so that a token a change drops by
// mistake shows as allowed from anywhere; and waits for its first build.
func applyStore(t *testing.T, cfg *Handler) (*redistest.Server, *Handler, *observer.ObservedLogs) {
	t.Helper()
	srv := redistest.New(t)
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	putToken(t, srv, "partner-b", tokPartnerB, "192.0.2.2")
	putToken(t, srv, "partner-c", tokPartnerC, "192.0.2.3")
	cfg.Redis = &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}
	h, logs := cfg, provisionLogging(t, cfg, zapcore.InfoLevel)
	testkit.Eventually(t, "first build", 5*time.Second, func() bool { return fullBuilds(logs) == 1 })
	settled(t, h)
	return srv, h, logs
}

// A change to one token reaches the node as that token alone: the base
// table stays the one the full build made, the overlay holds the token,
// no full build runs, and each change is one audit line.
func TestRedisChangeAppliesOneToken(t *testing.T) {
	srv, h, logs := applyStore(t, &Handler{})
	base := h.current.Load().base
	s := cliStore(t, srv)
	ctx := context.Background()
	const tokD = "store-partner-d-0123456789"

	steps := []struct {
		name   string
		change func() error
		label  string
		check  func() error
	}{
		{"a new token", func() error {
			return s.update(ctx, "partner-d", func(*TokenPolicy) (*TokenPolicy, error) {
				return &TokenPolicy{TokenSHA256: testkit.Digest(tokD), Allow: []string{"198.51.100.0/24"}}, nil
			})
		}, "partner-d", func() error { return want(h, tokD, "198.51.100.7", ReasonAllowed, "203.0.113.1", ReasonIPNotAllowed) }},
		{"an address added to a token of the base", func() error {
			return s.update(ctx, "partner-a", func(cur *TokenPolicy) (*TokenPolicy, error) {
				cur.Allow = append(cur.Allow, "192.0.2.11")
				return cur, nil
			})
		}, "partner-a", func() error {
			return want(h, tokPartnerA, "192.0.2.11", ReasonAllowed, "192.0.2.12", ReasonIPNotAllowed)
		}},
		{"a token revoked (delete)", func() error {
			_, _, err := runCLI(srv, "", "delete", "partner-b")
			return err
		}, "partner-b", func() error {
			return want(h, tokPartnerB, "192.0.2.2", ReasonTokenRevoked, "203.0.113.1", ReasonTokenRevoked)
		}},
		{"a token removed (delete --unrestrict)", func() error { return s.unrestrict(ctx, "partner-c") },
			"partner-c", func() error { return want(h, tokPartnerC, "203.0.113.1", ReasonAllowed) }},
	}
	for _, st := range steps {
		builds, wait := fullBuilds(logs), changesFrom(h)
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		wait(t, 1)
		if err := st.check(); err != nil {
			t.Errorf("%s: %v", st.name, err)
		}
		v := h.current.Load()
		if v.base != base {
			t.Errorf("%s: the base table was rebuilt", st.name)
		}
		if got := fullBuilds(logs) - builds; got != 0 {
			t.Errorf("%s: %d full builds, want 0", st.name, got)
		}
		if _, ok := h.overlay[st.label]; !ok {
			t.Errorf("%s: %s is not in the overlay", st.name, st.label)
		}
		if audit := logs.FilterMessage("token changed").FilterField(zap.String("token_label", st.label)); audit.Len() == 0 {
			t.Errorf("%s: no 'token changed' line for %s", st.name, st.label)
		}
	}
	// The tokens no change touched still serve as the base has them.
	if err := want(h, tokPartnerA, "192.0.2.1", ReasonAllowed); err != nil {
		t.Error(err)
	}
	// A full build agrees with the view the changes made.
	h.merge()
	for _, c := range []struct{ tok, remote, reason string }{
		{tokD, "198.51.100.7", ReasonAllowed}, {tokPartnerA, "192.0.2.11", ReasonAllowed},
		{tokPartnerB, "192.0.2.2", ReasonTokenRevoked}, {tokPartnerC, "203.0.113.1", ReasonAllowed},
	} {
		if err := want(h, c.tok, c.remote, c.reason); err != nil {
			t.Errorf("after a full build: %v", err)
		}
	}
}

// want checks the reason of tok from each remote in pairs of remote and
// reason.
func want(h *Handler, tok string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if r := reasonOf(h, pairs[i], tok); r != pairs[i+1] {
			return fmt.Errorf("token from %s: %s, want %s", pairs[i], r, pairs[i+1])
		}
	}
	return nil
}

// The rules that fail closed hold through the one-token path: whatever a
// change is, the token it concerns is refused or keeps its rightful
// label's policy, never unlisted; the node then builds all, which refuses
// and logs it once.
func TestRedisChangeFailsClosed(t *testing.T) {
	const tokCfg = "config-token-0123456789abcdef"
	cfg := func() *Handler {
		return &Handler{Tokens: map[string]*TokenPolicy{"configured": {Token: tokCfg, Allow: []string{"192.0.2.50"}}}}
	}
	noIndex := func(srv *redistest.Server, tok string) {
		c := srv.Client()
		defer c.Close()
		c.HDel(context.Background(), keysFor("").Digests, testkit.Digest(tok))
	}
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, srv *redistest.Server, h *Handler)
		n      int        // the changes change makes
		checks [][]string // token, then remote and reason pairs
		// fullBuild: the change must reach the node as a full build.
		fullBuild bool
	}{{
		name: "an entry claiming another label's token, which the index names",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			handWrite(t, srv, "acme-test", entryJSON(tokPartnerA, "any"))
		},
		checks:    [][]string{{tokPartnerA, "192.0.2.1", ReasonAllowed, "203.0.113.1", ReasonIPNotAllowed}},
		fullBuild: true,
	}, {
		name: "an entry claiming a token another label holds, which the index names for neither",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			noIndex(srv, tokPartnerA)
			handWrite(t, srv, "acme-test", entryJSON(tokPartnerA, "any"))
		},
		checks:    [][]string{{tokPartnerA, "192.0.2.1", ReasonInvalidEntry, "203.0.113.1", ReasonInvalidEntry}},
		fullBuild: true,
	}, {
		name: "the rightful label removed while another entry claims its token",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			wait := changesFrom(h)
			handWrite(t, srv, "acme-test", entryJSON(tokPartnerA, "198.51.100.1"))
			wait(t, 1) // a turn of its own
			if err := cliStore(t, srv).unrestrict(context.Background(), "partner-a"); err != nil {
				t.Fatal(err)
			}
		},
		// The other entry alone claims it now, and a full build gives
		// it the token: never unlisted on the way.
		n:         2,
		checks:    [][]string{{tokPartnerA, "198.51.100.1", ReasonAllowed, "192.0.2.1", ReasonIPNotAllowed}},
		fullBuild: true,
	}, {
		name: "the entry that lost a token rewritten",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			wait := changesFrom(h)
			handWrite(t, srv, "acme-test", entryJSON(tokPartnerA, "198.51.100.1"))
			wait(t, 1) // a turn of its own
			handWrite(t, srv, "acme-test", entryJSON(tokPartnerA, "any"))
		},
		n:         2,
		checks:    [][]string{{tokPartnerA, "192.0.2.1", ReasonAllowed, "198.51.100.1", ReasonIPNotAllowed}},
		fullBuild: true,
	}, {
		name: "an entry under a label the config lists",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			handWrite(t, srv, "configured", entryJSON(tokPartnerC+"-x", "any"))
		},
		checks: [][]string{
			{tokCfg, "192.0.2.50", ReasonAllowed, "203.0.113.1", ReasonIPNotAllowed},
			{tokPartnerC + "-x", "203.0.113.1", ReasonInvalidEntry},
		},
		fullBuild: true,
	}, {
		name: "an entry with the config's token",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			handWrite(t, srv, "partner-e", entryJSON(tokCfg, "any"))
		},
		checks:    [][]string{{tokCfg, "192.0.2.50", ReasonAllowed, "203.0.113.1", ReasonIPNotAllowed}},
		fullBuild: true,
	}, {
		name: "an entry that decodes but does not compile",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			handWrite(t, srv, "partner-b", entryJSON(tokPartnerB, "10.0.0.1/8"))
		},
		checks:    [][]string{{tokPartnerB, "192.0.2.2", ReasonInvalidEntry, "10.0.0.1", ReasonInvalidEntry}},
		fullBuild: true,
	}, {
		name: "an entry this node cannot read",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			handWrite(t, srv, "partner-b", `{"token_sha256":"`+testkit.Digest(tokPartnerB)+`","allow":["192.0.2.2"],"valid_until":"2030"}`)
		},
		checks:    [][]string{{tokPartnerB, "192.0.2.2", ReasonInvalidEntry}},
		fullBuild: true,
	}, {
		name: "an entry that claims no token, whose token the index gives",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			handWrite(t, srv, "partner-b", `{"allow":["192.0.2.2"]}`)
		},
		checks:    [][]string{{tokPartnerB, "192.0.2.2", ReasonInvalidEntry, "203.0.113.1", ReasonInvalidEntry}},
		fullBuild: true,
	}, {
		name: "a bad entry made good again",
		change: func(t *testing.T, srv *redistest.Server, h *Handler) {
			wait := changesFrom(h)
			handWrite(t, srv, "partner-b", entryJSON(tokPartnerB, "10.0.0.1/8"))
			wait(t, 1) // a turn of its own
			handWrite(t, srv, "partner-b", entryJSON(tokPartnerB, "192.0.2.22"))
		},
		n:      2,
		checks: [][]string{{tokPartnerB, "192.0.2.22", ReasonAllowed, "192.0.2.2", ReasonIPNotAllowed}},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			srv, h, logs := applyStore(t, cfg())
			builds, wait := fullBuilds(logs), changesFrom(h)
			tt.change(t, srv, h)
			wait(t, max(tt.n, 1))
			for _, c := range tt.checks {
				if err := want(h, c[0], c[1:]...); err != nil {
					t.Errorf("after the change: %v", err)
				}
			}
			if got := fullBuilds(logs) - builds; tt.fullBuild && got == 0 {
				t.Errorf("no full build, want one")
			}
			// What the node holds is what a full build makes of the store.
			h.merge()
			for _, c := range tt.checks {
				if err := want(h, c[0], c[1:]...); err != nil {
					t.Errorf("after a full build: %v", err)
				}
			}
			// The others serve on.
			if err := want(h, tokPartnerC, "192.0.2.3", ReasonAllowed); err != nil {
				t.Error(err)
			}
		})
	}
}

// More labels at once than a turn applies one by one are taken as a full
// build; and a batch of them arrives whole, however the node takes it.
func TestRedisManyChangesBuildAll(t *testing.T) {
	s := newRedisStore(&redis.Options{Addr: "127.0.0.1:1"}, &RedisSource{Address: "127.0.0.1:1"}, zap.NewNop())
	defer s.Destruct()
	c := s.subscribe()
	for i := range maxLabelsApplied {
		s.changed(fmt.Sprintf("many-%03d", i))
	}
	if labels, all, _ := s.take(c); all || len(labels) != maxLabelsApplied {
		t.Errorf("%d labels: taken as %d labels, all %t; want them one by one", maxLabelsApplied, len(labels), all)
	}
	for i := range maxLabelsApplied + 1 {
		s.changed(fmt.Sprintf("many-%03d", i))
	}
	if labels, all, _ := s.take(c); !all || len(labels) != 0 {
		t.Errorf("%d labels: taken as %d labels, all %t; want a full build", maxLabelsApplied+1, len(labels), all)
	}
	s.changed("one")
	s.changed(allLabels)
	if _, all, _ := s.take(c); !all {
		t.Errorf("a label, then the whole store: not a full build")
	}

	srv, h, _ := applyStore(t, &Handler{})
	rc := srv.Client()
	defer rc.Close()
	ctx := context.Background()
	keys := keysFor("")
	n := maxLabelsApplied + 44
	wait := changesFrom(h)
	if _, err := rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			label := fmt.Sprintf("many-%03d", i)
			p.HSet(ctx, keys.Tokens, label, entryJSON(benchTokenN(i), nthAddr(i).String()))
			p.HSet(ctx, keys.Digests, testkit.Digest(benchTokenN(i)), label)
		}
		p.Incr(ctx, keys.Version)
		for i := range n {
			p.Publish(ctx, keys.Changes, fmt.Sprintf("many-%03d", i))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wait(t, n)
	for i := range n {
		if err := want(h, benchTokenN(i), nthAddr(i).String(), ReasonAllowed); err != nil {
			t.Fatalf("many-%03d: %v", i, err)
		}
	}
}

// A change naming an ip_set this node does not define is applied alone,
// the set matching nothing, and logged once as a full build logs it.
func TestRedisChangeUnknownSet(t *testing.T) {
	srv, h, logs := applyStore(t, &Handler{IPSets: map[string][]string{"office": {"198.51.100.0/24"}}})
	builds := fullBuilds(logs)
	for _, allow := range [][]string{{"192.0.2.1", "ofice"}, {"192.0.2.1", "ofice", "office"}} {
		wait := changesFrom(h)
		putToken(t, srv, "partner-a", tokPartnerA, allow...)
		wait(t, 1)
	}
	if err := want(h, tokPartnerA, "192.0.2.1", ReasonAllowed, "198.51.100.9", ReasonAllowed, "203.0.113.9", ReasonIPNotAllowed); err != nil {
		t.Error(err)
	}
	if got := fullBuilds(logs) - builds; got != 0 {
		t.Errorf("%d full builds, want 0", got)
	}
	warned := logs.FilterMessage("redis token entry names an ip_set this node does not define; it matches nothing here").
		FilterField(zap.String("token_label", "partner-a")).FilterField(zap.String("ip_set", "ofice"))
	if warned.Len() != 1 {
		t.Errorf("%d warnings of the unknown set over two changes using it, want 1", warned.Len())
	}
}

// The one-token path never applies an entry the node cannot read, even
// one the store did not say needs a full build (it changed again since):
// it leaves the view as it is, for the full build to refuse the token.
func TestRedisApplyRefusesBadEntries(t *testing.T) {
	_, h, _ := applyStore(t, &Handler{})
	for _, raw := range []string{
		`{"token_sha256":"` + testkit.Digest(tokPartnerB) + `","allow":["192.0.2.2"],"valid_until":"2030"}`,
		`{"allow":["192.0.2.2"]}`,
	} {
		before := h.current.Load()
		h.store.mu.Lock()
		h.store.entries["partner-b"] = decodeEntry(raw)
		h.store.mu.Unlock()
		if h.applyStoreChanges(context.Background(), []string{"partner-b"}, 0) {
			t.Errorf("entry %s: applied alone, want a full build", raw)
		}
		if h.current.Load() != before {
			t.Errorf("entry %s: the view changed", raw)
		}
		if err := want(h, tokPartnerB, "192.0.2.2", ReasonAllowed, "203.0.113.1", ReasonIPNotAllowed); err != nil {
			t.Errorf("entry %s: %v", raw, err)
		}
	}
}

// A node whose ACL was written for the previous release (no HSCAN, no
// HLEN) still loads the store, whole, and says once what to add.
func TestRedisLoadWithoutScan(t *testing.T) {
	srv := redistest.New(t)
	c := srv.Client()
	defer c.Close()
	acl := []any{"ACL", "SETUSER", "old-node", "on", ">node-password", "~ip_allowlist:*", "&ip_allowlist:changes", "-@all",
		"+get", "+exists", "+hget", "+hgetall", "+hmget", "+multi", "+exec", "+subscribe", "+ping"}
	if err := c.Do(context.Background(), acl...).Err(); err != nil {
		t.Fatal(err)
	}
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	h, logs := openHandler(t, &RedisSource{Address: srv.Addr, Username: "old-node", Password: "node-password", Resync: caddy.Duration(time.Hour)}, nil)
	testkit.Eventually(t, "first build", 5*time.Second, func() bool { return fullBuilds(logs) == 1 })
	if err := want(h, tokPartnerA, "192.0.2.1", ReasonAllowed, "203.0.113.1", ReasonIPNotAllowed); err != nil {
		t.Error(err)
	}
	if n := logs.FilterMessageSnippet("may not run HSCAN").Len(); n != 1 {
		t.Errorf("%d warnings of the missing HSCAN, want 1", n)
	}
}
