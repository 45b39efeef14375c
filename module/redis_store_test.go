package ipallowlist

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Test tokens of the store tests: at least 16 bytes, as literal tokens
// must be.
const (
	tokPartnerA = "store-partner-a-0123456789"
	tokPartnerB = "store-partner-b-0123456789"
	tokPartnerC = "store-partner-c-0123456789"
)

// openHandler provisions a handler on srv with the default unlisted policy
// (any): a token that drops out of the table is usable from anywhere, so
// every test below shows whether a path fails closed.
func openHandler(t *testing.T, src *RedisSource, sets map[string][]string) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	h := &Handler{Redis: src, IPSets: sets}
	return h, provisionLogging(t, h, zapcore.InfoLevel)
}

// reasonOf is the decision's reason for tok from remote.
func reasonOf(h *Handler, remote, tok string) string {
	return serve(h, newRequest(remote+":1234", "/", testkit.Bearer(tok)...)).placeholder(placeholderReason)
}

// handWrite writes raw entries (label, JSON pairs) as redis-cli would, with
// the version and a message per label.
func handWrite(t *testing.T, srv *redistest.Server, pairs ...string) {
	t.Helper()
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	keys := keysFor("")
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i := 0; i+1 < len(pairs); i += 2 {
			p.HSet(ctx, keys.Tokens, pairs[i], pairs[i+1])
		}
		p.Incr(ctx, keys.Version)
		for i := 0; i+1 < len(pairs); i += 2 {
			p.Publish(ctx, keys.Changes, pairs[i])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until h's table is built from the store holding raw
// for label.
func waitApplied(t *testing.T, h *Handler, label, raw string) {
	t.Helper()
	testkit.Eventually(t, "entry "+label+" applied", 5*time.Second, func() bool {
		h.store.mu.Lock()
		e, gen := h.store.entries[label], h.store.gen
		h.store.mu.Unlock()
		if e == nil || e.raw != raw {
			return false
		}
		// The handler rebuilds after the store changes: wait until a
		// build has read the store as it is now, and so is published
		// (a build and its publishing hold h.rebuild together).
		h.rebuild.Lock()
		defer h.rebuild.Unlock()
		return h.builtGen == gen
	})
}

func entryJSON(tok string, allow string) string {
	return `{"token_sha256":"` + testkit.Digest(tok) + `","allow":["` + allow + `"]}`
}

// Finding 1: one token, one label. The CLI refuses a second label for a
// token; a node refuses (never unlists) the token of an entry it cannot
// read, using the digest index; of two entries claiming one token, the one
// the index names keeps it.
func TestRedisDigestIndex(t *testing.T) {
	srv := redistest.New(t)
	s := cliStore(t, srv)
	ctx := context.Background()
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	putToken(t, srv, "partner-b", tokPartnerB, "192.0.2.2")
	if got, _ := s.c.HGet(ctx, s.keys.Digests, testkit.Digest(tokPartnerA)).Result(); got != "partner-a" {
		t.Fatalf("index of partner-a's token: %q", got)
	}

	before, _ := s.c.HGetAll(ctx, s.keys.Tokens).Result()
	beforeIndex, _ := s.c.HGetAll(ctx, s.keys.Digests).Result()
	for _, label := range []string{"acme-test", "partner-b"} {
		err := s.update(ctx, label, func(*TokenPolicy) (*TokenPolicy, error) {
			return &TokenPolicy{TokenSHA256: testkit.Digest(tokPartnerA), Allow: []string{"any"}}, nil
		})
		if err == nil || !strings.Contains(err.Error(), `"partner-a"`) {
			t.Errorf("put %s with partner-a's token: %v, want refused naming partner-a", label, err)
		}
	}
	after, _ := s.c.HGetAll(ctx, s.keys.Tokens).Result()
	afterIndex, _ := s.c.HGetAll(ctx, s.keys.Digests).Result()
	if len(after) != len(before) || after["partner-b"] != before["partner-b"] || len(afterIndex) != len(beforeIndex) {
		t.Errorf("a refused put changed the store: %v %v", after, afterIndex)
	}

	h, logs := openHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}, nil)
	if r := reasonOf(h, "192.0.2.1", tokPartnerA); r != ReasonAllowed {
		t.Fatalf("partner-a at start: %s", r)
	}
	// A hand-written entry claiming partner-a's token: partner-a keeps it.
	handWrite(t, srv, "acme-test", entryJSON(tokPartnerA, "any"))
	testkit.Eventually(t, "conflict logged", 5*time.Second, func() bool {
		return logs.FilterMessage("redis token entry skipped; fix or delete it").FilterField(zap.String("token_label", "acme-test")).Len() == 1
	})
	for _, tt := range []struct{ remote, want string }{{"192.0.2.1", ReasonAllowed}, {"198.51.100.1", ReasonIPNotAllowed}} {
		if r := reasonOf(h, tt.remote, tokPartnerA); r != tt.want {
			t.Errorf("partner-a from %s beside a conflicting entry: %s, want %s", tt.remote, r, tt.want)
		}
	}

	// partner-b's entry replaced by one this node cannot read: its token
	// is refused, from the entry's own token_sha256 or from the index.
	for _, bad := range []string{
		`{"token_sha256":"` + testkit.Digest(tokPartnerB) + `","allow":["192.0.2.2"],"valid_until":"2030-01-01"}`, // a field this node does not know
		`{"allow": ["192.0.2.2"], "tokn_sha256": "oops"}`,                                                         // no token it can read: the index gives it
		`{"token_sha256":"` + testkit.Digest(tokPartnerB) + `","allow":["192.0.2.2"]}}`,                           // trailing garbage
		`not json`,
	} {
		handWrite(t, srv, "partner-b", bad)
		waitApplied(t, h, "partner-b", bad)
		for _, remote := range []string{"192.0.2.2", "203.0.113.9"} {
			if r := reasonOf(h, remote, tokPartnerB); r != ReasonInvalidEntry {
				t.Errorf("partner-b with entry %s, from %s: %s, want invalid_entry (never unlisted)", bad, remote, r)
			}
		}
		// What the check route answers for the label.
		if tb, p := h.current.Load().byLabel("partner-b"); p == nil || tb.check(p, mustAddr("192.0.2.2")) != reasonInvalidEntry {
			t.Errorf("partner-b with entry %s: the check route does not find it refused", bad)
		}
	}

	// Two entries claim one token and the index names neither: refused.
	c := srv.Client()
	defer c.Close()
	c.HDel(ctx, s.keys.Digests, testkit.Digest(tokPartnerA))
	c.Publish(ctx, s.keys.Changes, "partner-a")
	testkit.Eventually(t, "unindexed conflict", 5*time.Second, func() bool { return reasonOf(h, "192.0.2.1", tokPartnerA) == ReasonInvalidEntry })
}

// Finding 2: delete revokes; delete --unrestrict removes the entry and its
// index entry, and only then is the token unlisted.
func TestRedisDeleteRevokes(t *testing.T) {
	srv := redistest.New(t)
	s := cliStore(t, srv)
	ctx := context.Background()
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	h, _ := openHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}, nil)

	out, _, err := runCLI(srv, "", "delete", "partner-a")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "partner-a: revoked") {
		t.Errorf("delete printed %q", out)
	}
	raw, _ := s.c.HGet(ctx, s.keys.Tokens, "partner-a").Result()
	if raw != `{"token_sha256":"`+testkit.Digest(tokPartnerA)+`","revoked":true}` {
		t.Errorf("tombstone: %s", raw)
	}
	testkit.Eventually(t, "revoked", 5*time.Second, func() bool { return reasonOf(h, "192.0.2.1", tokPartnerA) == ReasonTokenRevoked })
	if r := reasonOf(h, "203.0.113.9", tokPartnerA); r != ReasonTokenRevoked {
		t.Errorf("a deleted token from elsewhere: %s, want token_revoked", r)
	}

	out, _, err = runCLI(srv, "", "delete", "--unrestrict", "partner-a")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "now unlisted") {
		t.Errorf("delete --unrestrict printed %q", out)
	}
	if n, _ := s.c.HLen(ctx, s.keys.Digests).Result(); n != 0 {
		t.Errorf("the index keeps %d entries after --unrestrict", n)
	}
	testkit.Eventually(t, "unrestricted", 5*time.Second, func() bool { return reasonOf(h, "203.0.113.9", tokPartnerA) == ReasonAllowed })
	if !strings.Contains(subcommand("delete").Long, "UNLISTED") {
		t.Errorf("delete's help does not say --unrestrict makes the token unlisted")
	}
}

// subcommand finds a command of the tokens command.
func subcommand(name string) *cobra.Command {
	for _, c := range tokensCommand().Commands() {
		if c.Name() == name {
			return c
		}
	}
	return nil
}

// runCLI runs the tokens command with args against srv, and returns its
// standard output, standard error and error.
func runCLI(srv *redistest.Server, stdin string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	cmd := tokensCommand()
	cmd.SetArgs(append([]string{"--redis", srv.Addr}, args...))
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage = true
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// Finding 3: one home per rule. import resolves placeholders where it
// runs and stores digests; a node never resolves one in a store entry (it
// is skipped and logged once); the CLI says it cannot check set names, and
// a node matches nothing for a set it does not define, logging it once.
func TestRedisStoreEntryRules(t *testing.T) {
	srv := redistest.New(t)
	s := cliStore(t, srv)
	ctx := context.Background()
	t.Setenv("STORE_PARTNER_A", tokPartnerA)
	dir := t.TempDir()
	secret := filepath.Join(dir, "partner-b")
	testkit.WriteFile(t, secret, tokPartnerB+"\n")
	file := filepath.Join(dir, "tokens.json")
	testkit.WriteFile(t, file, `{"partner-a": {"token": "{env.STORE_PARTNER_A}", "allow": ["192.0.2.1"]},
		"partner-b": {"token": "{file.`+secret+`}", "allow": ["192.0.2.2"]}}`)
	out, _, err := runCLI(srv, "", "import", file)
	if err != nil || out != "imported 2 tokens\n" {
		t.Fatalf("import: %q %v", out, err)
	}
	for label, tok := range map[string]string{"partner-a": tokPartnerA, "partner-b": tokPartnerB} {
		raw, _ := s.c.HGet(ctx, s.keys.Tokens, label).Result()
		if raw != entryJSON(tok, map[string]string{"partner-a": "192.0.2.1", "partner-b": "192.0.2.2"}[label]) {
			t.Errorf("%s stored as %s, want its digest", label, raw)
		}
	}
	// An unset variable is refused, and nothing written.
	bad := filepath.Join(dir, "bad.json")
	testkit.WriteFile(t, bad, `{"partner-c": {"token": "{env.STORE_UNSET_VARIABLE}", "allow": ["192.0.2.3"]}}`)
	if _, _, err := runCLI(srv, "", "import", bad); err == nil || !strings.Contains(err.Error(), "nothing written") {
		t.Errorf("import of an unset variable: %v", err)
	}
	if n, _ := s.c.HLen(ctx, s.keys.Tokens).Result(); n != 2 {
		t.Errorf("%d entries after a refused import, want 2", n)
	}
	one := filepath.Join(dir, "one.json")
	testkit.WriteFile(t, one, `{"partner-c": {"token_sha256": "`+testkit.Digest(tokPartnerC)+`", "allow": ["192.0.2.3"]}}`)
	if out, _, err := runCLI(srv, "", "import", one); err != nil || out != "imported 1 token\n" {
		t.Errorf("import of one token: %q %v", out, err)
	}

	// put with a set name the CLI cannot check: a note, and written.
	out, errOut, err := runCLI(srv, "", "put", "partner-a", "--keep-token", "--allow", "192.0.2.1,ofice")
	if err != nil || !strings.Contains(errOut, `"ofice"`) || !strings.Contains(errOut, "cannot be checked here") {
		t.Fatalf("put with a set name: %v, stderr %q", err, errOut)
	}
	if !strings.Contains(out, "partner-a: ranges replaced; allow 192.0.2.1,ofice") {
		t.Errorf("put printed %q", out)
	}

	h, logs := openHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}, map[string][]string{"office": {"198.51.100.0/24"}})
	for _, tt := range []struct{ remote, want string }{{"192.0.2.1", ReasonAllowed}, {"192.0.2.9", ReasonIPNotAllowed}, {"198.51.100.1", ReasonIPNotAllowed}} {
		if r := reasonOf(h, tt.remote, tokPartnerA); r != tt.want {
			t.Errorf("partner-a (allow 192.0.2.1,ofice) from %s: %s, want %s", tt.remote, r, tt.want)
		}
	}
	// A placeholder written by hand into the store: refused, logged once.
	handWrite(t, srv, "partner-d", `{"token":"{env.STORE_PARTNER_A}","allow":["any"]}`)
	handWrite(t, srv, "partner-e", entryJSON("store-partner-e-0123456789", "192.0.2.5"))
	testkit.Eventually(t, "a change after", 5*time.Second, func() bool { return reasonOf(h, "192.0.2.5", "store-partner-e-0123456789") == ReasonAllowed })
	handWrite(t, srv, "partner-f", entryJSON("store-partner-f-0123456789", "192.0.2.6"))
	testkit.Eventually(t, "another change", 5*time.Second, func() bool { return reasonOf(h, "192.0.2.6", "store-partner-f-0123456789") == ReasonAllowed })
	unknown := logs.FilterMessageSnippet("names an ip_set this node does not define")
	if unknown.Len() != 1 || unknown.All()[0].ContextMap()["ip_set"] != "ofice" || unknown.All()[0].ContextMap()["token_label"] != "partner-a" {
		t.Errorf("unknown set logged %d times, want once: %v", unknown.Len(), unknown.All())
	}
	placeholder := logs.FilterMessage("redis token entry skipped; fix or delete it").FilterField(zap.String("token_label", "partner-d"))
	if placeholder.Len() != 1 || !strings.Contains(placeholder.All()[0].ContextMap()["error"].(string), "placeholder") {
		t.Errorf("a placeholder in the store logged %d times, want once: %v", placeholder.Len(), placeholder.All())
	}
	if r := reasonOf(h, "192.0.2.1", tokPartnerA); r != ReasonAllowed {
		t.Errorf("the placeholder entry took partner-a's token: %s", r)
	}
}

// Finding 4: an entry with data after its object is refused, and the
// snapshot is written from decoded entries (digests only), so a node
// starts from it while Redis is down.
func TestRedisStrictSnapshot(t *testing.T) {
	srv := redistest.New(t)
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	putToken(t, srv, "partner-b", tokPartnerB, "192.0.2.2")
	handWrite(t, srv, "partner-b", `{"token_sha256":"`+testkit.Digest(tokPartnerB)+`","allow":["192.0.2.2"]}}`)
	handWrite(t, srv, "partner-c", `{"token": "`+tokPartnerC+`", "allow": ["192.0.2.3"]}`)
	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	src := &RedisSource{Address: srv.Addr, Snapshot: snapshot, Resync: caddy.Duration(time.Hour)}
	h, _ := openHandler(t, src, nil)
	if r := reasonOf(h, "192.0.2.2", tokPartnerB); r != ReasonInvalidEntry {
		t.Errorf("an entry with trailing data: %s, want invalid_entry", r)
	}
	b, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "}}") || strings.Contains(string(b), tokPartnerC) {
		t.Errorf("the snapshot holds raw text or a token:\n%s", b)
	}
	_ = h.Cleanup()
	srv.Stop()
	h, _ = openHandler(t, src, nil)
	for _, tt := range []struct{ tok, remote, want string }{
		{tokPartnerA, "192.0.2.1", ReasonAllowed},
		{tokPartnerB, "192.0.2.2", ReasonTokenRevoked}, // refused, as the store's node did
		{tokPartnerC, "192.0.2.3", ReasonAllowed},
	} {
		if r := reasonOf(h, tt.remote, tt.tok); r != tt.want {
			t.Errorf("started from the snapshot, %s: %s, want %s", tt.remote, r, tt.want)
		}
	}
}

// Finding 5: a version key that is no integer does not stop a node: it
// applies changes, logs once that the key is no integer, and never says
// Redis is unreachable. The CLI refuses to write.
func TestRedisVersionNotInteger(t *testing.T) {
	srv := redistest.New(t)
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	h, logs := openHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(50 * time.Millisecond)}, nil)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	keys := keysFor("")
	if err := c.Set(ctx, keys.Version, "frozen", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i, tok := range []string{tokPartnerB, tokPartnerC} {
		remote := []string{"192.0.2.2", "192.0.2.3"}[i]
		label := []string{"partner-b", "partner-c"}[i]
		c.HSet(ctx, keys.Tokens, label, entryJSON(tok, remote))
		c.Publish(ctx, keys.Changes, label)
		testkit.Eventually(t, "a change with version frozen", 5*time.Second, func() bool { return reasonOf(h, remote, tok) == ReasonAllowed })
	}
	time.Sleep(200 * time.Millisecond) // a few resyncs
	if n := logs.FilterMessageSnippet("unreachable").Len(); n != 0 {
		t.Errorf("a bad version key logged as unreachable: %v", logs.FilterMessageSnippet("unreachable").All())
	}
	bad := logs.FilterMessageSnippet("version key is not an integer")
	if bad.Len() != 1 || bad.All()[0].Level != zapcore.ErrorLevel || bad.All()[0].ContextMap()["key"] != keys.Version {
		t.Errorf("the bad version key logged %d times, want one ERROR naming the key: %v", bad.Len(), bad.All())
	}

	before, _ := c.HGetAll(ctx, keys.Tokens).Result()
	_, _, err := runCLI(srv, tokPartnerA+"x", "put", "partner-x", "--allow", "192.0.2.9")
	if err == nil || !strings.Contains(err.Error(), keys.Version) || !strings.Contains(err.Error(), "not an integer") {
		t.Errorf("put with version frozen: %v, want a clear refusal", err)
	}
	if after, _ := c.HGetAll(ctx, keys.Tokens).Result(); len(after) != len(before) {
		t.Errorf("the refused put wrote: %d entries, had %d", len(after), len(before))
	}
}

// Finding 6: messages that change nothing rebuild nothing, and a flood of
// * loads the whole store at most once a second, the last always.
func TestRedisPublishFlood(t *testing.T) {
	srv := redistest.New(t)
	s := cliStore(t, srv)
	ctx := context.Background()
	const n = 20_000
	args := make([]any, 0, 2*n)
	index := make([]any, 0, 2*n)
	for i := range n {
		tok := benchTokenN(i)
		label := "t" + strconv.Itoa(i)
		args = append(args, label, entryJSON(tok, nthAddr(i).String()))
		index = append(index, testkit.Digest(tok), label)
	}
	s.c.HSet(ctx, s.keys.Tokens, args...)
	s.c.HSet(ctx, s.keys.Digests, index...)
	s.c.Incr(ctx, s.keys.Version)
	h, logs := openHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}, nil)
	// The store's first load is applied once after provision; count from
	// there.
	testkit.Eventually(t, "first load applied", 5*time.Second, func() bool { return logs.FilterMessage("tokens from redis applied").Len() == 1 })
	applied := func() int { return logs.FilterMessage("tokens from redis applied").Len() - 1 }

	pub := srv.Client()
	defer pub.Close()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	flood := func(label string, d time.Duration) (time.Duration, time.Duration) {
		began, used := time.Now(), cpu()
		for time.Since(began) < d {
			pub.Publish(ctx, s.keys.Changes, label)
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(began), cpu() - used
	}
	wall, used := flood("no-such-label", 2*time.Second)
	time.Sleep(100 * time.Millisecond)
	if got := applied(); got != 0 {
		t.Errorf("%d rebuilds for messages about an absent label, want 0", got)
	}
	t.Logf("flood of a label with no entry, %d tokens, every 10 ms: %.1f%% of a core over %v (the test process, publisher included)",
		n, 100*used.Seconds()/wall.Seconds(), wall.Round(time.Millisecond))
	wall, used = flood("t7", time.Second)
	time.Sleep(100 * time.Millisecond)
	if got := applied(); got != 0 {
		t.Errorf("%d rebuilds for messages about an unchanged entry, want 0", got)
	}
	t.Logf("flood of an unchanged label: %.1f%% of a core over %v", 100*used.Seconds()/wall.Seconds(), wall.Round(time.Millisecond))

	// * every 10 ms for 2 s, with a change written meanwhile but not
	// published: it arrives by a debounced full load.
	fullBefore := h.store.fullLoads.Load()
	h.store.mu.Lock()
	gen := h.store.gen
	h.store.mu.Unlock()
	s.c.HSet(ctx, s.keys.Tokens, "t1", entryJSON(benchTokenN(1), "203.0.113.77"))
	s.c.Incr(ctx, s.keys.Version)
	began := time.Now()
	for time.Since(began) < 2*time.Second {
		pub.Publish(ctx, s.keys.Changes, reloadAll)
		time.Sleep(10 * time.Millisecond)
	}
	testkit.Eventually(t, "the change loaded by *", 5*time.Second, func() bool { return reasonOf(h, "203.0.113.77", benchTokenN(1)) == ReasonAllowed })
	h.store.mu.Lock()
	changes := int(h.store.gen - gen)
	h.store.mu.Unlock()
	if changes != 1 {
		t.Errorf("%d changes applied from a flood of * with one change, want 1", changes)
	}
	if loads := h.store.fullLoads.Load() - fullBefore; loads > 3 {
		t.Errorf("%d full loads from 2 s of * every 10 ms, want at most one a second", loads)
	} else {
		t.Logf("2 s of * every 10 ms: %d full loads", loads)
	}
	// The last * is applied even within a second of a load.
	s.c.HSet(ctx, s.keys.Tokens, "t2", entryJSON(benchTokenN(2), "203.0.113.78"))
	s.c.Incr(ctx, s.keys.Version)
	pub.Publish(ctx, s.keys.Changes, reloadAll)
	testkit.Eventually(t, "the last *", 5*time.Second, func() bool { return reasonOf(h, "203.0.113.78", benchTokenN(2)) == ReasonAllowed })
}

// Finding 7: a wrong password is an ERROR that says so, at start and
// while running; go-redis's own lines go through zap.
func TestRedisWrongPassword(t *testing.T) {
	srv := redistest.New(t, "--requirepass", "right-password-0123")
	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	testkit.WriteFile(t, snapshot, `{}`)

	h := &Handler{Redis: &RedisSource{Address: srv.Addr, Password: "wrong-password-0123"}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	_ = h.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "redis refused the password") || strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("start with a wrong password: %v", err)
	}

	_, logs := openHandler(t, &RedisSource{Address: srv.Addr, Password: "wrong-password-0123", Snapshot: snapshot}, nil)
	refused := logs.FilterMessageSnippet("redis refused the password")
	if refused.Len() != 1 || refused.All()[0].Level != zapcore.ErrorLevel {
		t.Errorf("a wrong password at start with a snapshot: %v", logs.All())
	}
	if _, _, err := runCLI(srv, tokPartnerA, "put", "partner-a", "--allow", "192.0.2.1"); err == nil || !strings.Contains(err.Error(), "redis refused the password") {
		t.Errorf("the CLI with no password: %v", err)
	}
}

// Finding 10: the redis source has no default address; {env.NAME} is
// resolved at provision and refused when unset.
func TestRedisAddressRequired(t *testing.T) {
	repl := caddy.NewReplacer()
	if _, err := redisOptions(&RedisSource{}, repl); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("no address: %v", err)
	}
	if _, err := redisOptions(&RedisSource{Address: "{env.STORE_TEST_UNSET_ADDR}"}, repl); err == nil {
		t.Errorf("an unset address variable was accepted")
	}
	t.Setenv("STORE_TEST_ADDR", "192.0.2.1:6380")
	opts, err := redisOptions(&RedisSource{Address: "{env.STORE_TEST_ADDR}"}, repl)
	if err != nil || opts.Addr != "192.0.2.1:6380" {
		t.Errorf("address from the environment: %v %v", opts, err)
	}
	t.Setenv("STORE_TEST_ADDR", "nonsense")
	if _, err := redisOptions(&RedisSource{Address: "{env.STORE_TEST_ADDR}"}, repl); err == nil {
		t.Errorf("a variable that is no host:port was accepted")
	}
}

// Finding 9: a store the previous release wrote (schema 1: the tokens
// hash, no schema key) is served as it is; the first write moves it to
// schema 2 and leaves the schema 1 hash as it was, for nodes not yet
// upgraded; a newer schema is not read.
func TestRedisSchemaUpgrade(t *testing.T) {
	srv := redistest.New(t)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	keys := keysFor("")
	old := entryJSON(tokPartnerA, "192.0.2.1")
	c.HSet(ctx, keys.Legacy, "partner-a", old)
	c.Incr(ctx, keys.Version)
	h, logs := openHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}, nil)
	if r := reasonOf(h, "192.0.2.1", tokPartnerA); r != ReasonAllowed {
		t.Fatalf("a schema 1 store: %s", r)
	}
	out, errOut, err := runCLI(srv, tokPartnerB, "put", "partner-b", "--allow", "192.0.2.2")
	if err != nil || !strings.Contains(errOut, "schema 2") {
		t.Fatalf("the first write: %q %q %v", out, errOut, err)
	}
	if v, _ := c.Get(ctx, keys.Schema).Result(); v != "2" {
		t.Errorf("schema after the first write: %q", v)
	}
	if m, _ := c.HGetAll(ctx, keys.Legacy).Result(); len(m) != 1 || m["partner-a"] != old {
		t.Errorf("the schema 1 hash changed: %v", m)
	}
	if d, _ := c.HGet(ctx, keys.Digests, testkit.Digest(tokPartnerA)).Result(); d != "partner-a" {
		t.Errorf("the moved entry is not indexed: %q", d)
	}
	testkit.Eventually(t, "schema 2", 5*time.Second, func() bool { return reasonOf(h, "192.0.2.2", tokPartnerB) == ReasonAllowed })
	if r := reasonOf(h, "192.0.2.1", tokPartnerA); r != ReasonAllowed {
		t.Errorf("the moved entry: %s", r)
	}
	// A revoked entry, which the previous release would skip, reaches
	// only the schema 2 hash.
	runCLI(srv, "", "delete", "partner-a")
	testkit.Eventually(t, "revoked", 5*time.Second, func() bool { return reasonOf(h, "192.0.2.1", tokPartnerA) == ReasonTokenRevoked })
	if m, _ := c.HGetAll(ctx, keys.Legacy).Result(); m["partner-a"] != old {
		t.Errorf("the schema 1 hash changed: %v", m)
	}

	c.Set(ctx, keys.Schema, "3", 0)
	c.HDel(ctx, keys.Tokens, "partner-b")
	c.Publish(ctx, keys.Changes, reloadAll)
	testkit.Eventually(t, "newer schema logged", 5*time.Second, func() bool { return logs.FilterMessageSnippet("schema this node does not know").Len() == 1 })
	if r := reasonOf(h, "192.0.2.2", tokPartnerB); r != ReasonAllowed {
		t.Errorf("with a newer schema the node keeps its tokens: %s", r)
	}
	if _, _, err := runCLI(srv, "", "allow", "partner-b", "192.0.2.3"); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("the CLI on a newer schema: %v", err)
	}
}

// Finding 8: caddy validate provisions but never starts: it needs no
// Redis and writes no snapshot. Until the store has loaded, a token the
// config does not list is refused, not unlisted.
func TestRedisValidateAndPending(t *testing.T) {
	dead := testkit.FreePort(t)
	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	cfg := `{"apps": {"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [
		{"handler": "ip_allowlist", "redis": {"address": "` + dead + `", "snapshot": "` + snapshot + `"}}]}]}}}}}`
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Errorf("validate with Redis down and no snapshot yet: %v", err)
	}
	if _, err := os.Stat(snapshot); !os.IsNotExist(err) {
		t.Errorf("validate wrote the snapshot: %v", err)
	}

	srv := redistest.New(t)
	putToken(t, srv, "partner-a", tokPartnerA, "192.0.2.1")
	src := &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)}
	opts, err := redisOptions(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Redis: src, logger: zap.NewNop(), rebuild: new(sync.Mutex)}
	if h.sources, err = compileSources(nil); err != nil {
		t.Fatal(err)
	}
	h.store = newRedisStore(opts, src, zap.NewNop())
	defer h.store.Destruct()
	h.current = new(atomic.Pointer[view])
	tb, err := h.build()
	if err != nil {
		t.Fatal(err)
	}
	h.current.Store(newView(tb))
	if r := reasonOf(h, "192.0.2.1", tokPartnerA); r != ReasonUnlistedToken {
		t.Errorf("a store's token before the store loaded: %s, want unlisted_token (refused)", r)
	}
	if r := reasonOf(h, "192.0.2.1", tokPartnerB); r != ReasonUnlistedToken {
		t.Errorf("an unknown token before the store loaded: %s, want refused", r)
	}
	if err := h.store.start(); err != nil {
		t.Fatal(err)
	}
	if tb, err = h.build(); err != nil {
		t.Fatal(err)
	}
	h.current.Store(newView(tb))
	if r := reasonOf(h, "192.0.2.1", tokPartnerA); r != ReasonAllowed {
		t.Errorf("after the store loaded: %s", r)
	}
	if r := reasonOf(h, "192.0.2.1", tokPartnerB); r != ReasonAllowed {
		t.Errorf("an unlisted token after the store loaded (unlisted any): %s", r)
	}
}

// TestRequestsWaitForTheStore: until the view in force was built from a
// loaded store (at Caddy's start the http app may serve first), a request
// waits instead of being refused, and goes on as soon as it is; a request
// whose client gives up stops waiting.
func TestRequestsWaitForTheStore(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	h.loaded = &storeLoad{done: make(chan struct{})}
	done := make(chan int, 1)
	go func() { done <- serve(h, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...)).status }()
	select {
	case status := <-done:
		t.Fatalf("answered %d before the store had loaded", status)
	case <-time.After(100 * time.Millisecond):
	}
	h.rebuild.Lock()
	h.builtLoaded = true
	h.markLoaded()
	h.rebuild.Unlock()
	select {
	case status := <-done:
		if status != 200 {
			t.Errorf("after the load: %d, want 200", status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the store had loaded")
	}

	h.loaded = &storeLoad{done: make(chan struct{})}
	req := newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...)
	ctx, cancel := context.WithCancel(req.Context())
	req = req.WithContext(ctx)
	go func() { done <- serve(h, req).status }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a request whose client went away kept waiting")
	}
}
