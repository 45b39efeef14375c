package ipallowlist

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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

// putToken writes an entry the way the CLI does.
func putToken(t *testing.T, srv *redistest.Server, label, tok string, allow ...string) {
	t.Helper()
	s := cliStore(t, srv)
	err := s.update(context.Background(), label, func(*TokenPolicy) (*TokenPolicy, error) {
		return &TokenPolicy{TokenSHA256: testkit.Digest(tok), Allow: allow}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// cliStore is the CLI's view of srv, ready to write (as tokensFlags.run
// makes it).
func cliStore(t *testing.T, srv *redistest.Server) *tokenStore {
	t.Helper()
	c := srv.Client()
	t.Cleanup(func() { c.Close() })
	s := &tokenStore{c: c, keys: keysFor("")}
	if err := s.ready(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	return s
}

// redisHandler provisions a handler on srv whose log entries (the store's
// included) are observed.
func redisHandler(t *testing.T, src *RedisSource) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	h := &Handler{Redis: src, Unlisted: &Policy{Allow: []string{}}}
	return h, provisionLogging(t, h, zapcore.InfoLevel)
}

func status(h *Handler, remote, tok string) int {
	return serve(h, newRequest(remote+":1234", "/", testkit.Bearer(tok)...)).status
}

func TestRedisSourceFollowsChanges(t *testing.T) {
	srv := redistest.New(t)
	putToken(t, srv, "a", "token-a", "192.0.2.1")
	h, logs := redisHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(time.Hour)})

	if got := status(h, "192.0.2.1", "token-a"); got != 200 {
		t.Fatalf("token in redis at start: %d, want 200", got)
	}
	if got := status(h, "192.0.2.2", "token-a"); got != 401 {
		t.Fatalf("from elsewhere: %d, want 401", got)
	}
	// Published changes: no resync (an hour) is involved.
	putToken(t, srv, "b", "token-b", "198.51.100.0/24")
	took := testkit.Eventually(t, "added token", 5*time.Second, func() bool { return status(h, "198.51.100.9", "token-b") == 200 })
	t.Logf("an added token took effect after %v", took)

	s := cliStore(t, srv)
	ctx := context.Background()
	if err := s.update(ctx, "a", func(cur *TokenPolicy) (*TokenPolicy, error) {
		cur.Allow = append(cur.Allow, "192.0.2.2")
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "allowed address", 5*time.Second, func() bool { return status(h, "192.0.2.2", "token-a") == 200 })
	if err := s.unrestrict(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "removed token", 5*time.Second, func() bool { return status(h, "198.51.100.9", "token-b") == 401 })
	if got := status(h, "192.0.2.1", "token-a"); got != 200 {
		t.Fatalf("the other token after a delete: %d", got)
	}
	// One audit line a change, naming the label, never the token.
	audit := logs.FilterMessage("token changed")
	for _, want := range []struct{ label, action string }{{"b", "put"}, {"a", "put"}, {"b", "delete"}} {
		if audit.FilterField(zap.String("token_label", want.label)).FilterField(zap.String("action", want.action)).FilterField(zap.String("source", "redis")).Len() == 0 {
			t.Errorf("no 'token changed' line for %s %s: %v", want.action, want.label, audit.All())
		}
	}
}

// A change whose message was missed (written without PUBLISH) is picked up
// by the resync; a bad entry is skipped, logged once, and the rest serve.
func TestRedisResyncAndBadEntries(t *testing.T) {
	srv := redistest.New(t)
	putToken(t, srv, "a", "token-a", "192.0.2.1")
	h, logs := redisHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(100 * time.Millisecond)})

	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	keys := keysFor("")
	entry := `{"token_sha256":"` + testkit.Digest("token-c") + `","allow":["203.0.113.5"]}`
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keys.Tokens, "c", entry)
		p.HSet(ctx, keys.Tokens, "bad", `{"token_sha256":"`+testkit.Digest("token-bad")+`","allow":["10.0.0.1/8"]}`)
		p.HSet(ctx, keys.Tokens, "worse", `{"token":"secret-in-bad-json", "allow": [`)
		p.Incr(ctx, keys.Version)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "resync", 5*time.Second, func() bool { return status(h, "203.0.113.5", "token-c") == 200 })
	if got := status(h, "192.0.2.1", "token-a"); got != 200 {
		t.Fatalf("a good token beside bad entries: %d", got)
	}
	// Another change: the bad entries are not logged again.
	putToken(t, srv, "d", "token-d", "203.0.113.6")
	testkit.Eventually(t, "change after bad entries", 5*time.Second, func() bool { return status(h, "203.0.113.6", "token-d") == 200 })
	skipped := logs.FilterMessage("redis token entry skipped; fix or delete it")
	if skipped.Len() != 2 {
		t.Fatalf("%d skipped entries logged, want 2 (each bad entry once): %v", skipped.Len(), skipped.All())
	}
	for _, e := range skipped.All() {
		msg := e.ContextMap()["error"].(string)
		if strings.Contains(msg, "secret-in-bad-json") {
			t.Errorf("the log quotes a token: %s", msg)
		}
	}
	if !strings.Contains(skipped.All()[0].ContextMap()["error"].(string)+skipped.All()[1].ContextMap()["error"].(string), `host bits set`) {
		t.Errorf("the skipped entries do not say why: %v", skipped.All())
	}
}

// Redis goes away: the tokens in force keep serving, the outage is logged
// once, the recovery once, and a change made meanwhile is picked up.
func TestRedisOutage(t *testing.T) {
	srv := redistest.New(t)
	putToken(t, srv, "a", "token-a", "192.0.2.1")
	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	h, logs := redisHandler(t, &RedisSource{Address: srv.Addr, Snapshot: snapshot, Resync: caddy.Duration(50 * time.Millisecond)})

	srv.Stop()
	testkit.Eventually(t, "outage logged", 5*time.Second, func() bool {
		return logs.FilterMessage("redis unreachable; the tokens in force keep serving until it returns").Len() > 0
	})
	for range 20 {
		if got := status(h, "192.0.2.1", "token-a"); got != 200 {
			t.Fatalf("during the outage: %d, want 200", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := logs.FilterMessage("redis unreachable; the tokens in force keep serving until it returns").Len(); n != 1 {
		t.Errorf("outage logged %d times, want once", n)
	}
	// The snapshot holds the store: a node could start from it.
	entries, err := readSnapshot(snapshot)
	if err != nil || len(entries) != 1 || entries["a"] == nil || entries["a"].err != nil {
		t.Fatalf("snapshot: %v %v", entries, err)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	keys := keysFor("")
	// Written without a message, as if published while this node was
	// cut off.
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, keys.Tokens, "b", `{"token_sha256":"`+testkit.Digest("token-b")+`","allow":["192.0.2.9"]}`)
		p.Incr(ctx, keys.Version)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "change made during the outage", 5*time.Second, func() bool { return status(h, "192.0.2.9", "token-b") == 200 })
	testkit.Eventually(t, "recovery logged", 5*time.Second, func() bool {
		return logs.FilterMessage("redis reachable again; tokens resynced").Len() > 0
	})
	time.Sleep(200 * time.Millisecond)
	for _, msg := range []string{"redis unreachable; the tokens in force keep serving until it returns", "redis reachable again; tokens resynced"} {
		if n := logs.FilterMessage(msg).Len(); n != 1 {
			t.Errorf("%q logged %d times, want once", msg, n)
			for _, e := range logs.All() {
				t.Logf("%s %v", e.Message, e.ContextMap())
			}
		}
	}
}

// Redis reachable but empty, with no version key, where the node has
// tokens: its data was lost. The node keeps its tokens.
func TestRedisDataLossKeepsTokens(t *testing.T) {
	srv := redistest.New(t)
	putToken(t, srv, "a", "token-a", "192.0.2.1")
	h, logs := redisHandler(t, &RedisSource{Address: srv.Addr, Resync: caddy.Duration(50 * time.Millisecond)})
	c := srv.Client()
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "data loss logged", 5*time.Second, func() bool {
		return logs.FilterMessageSnippet("redis holds no tokens and no version key").Len() == 1
	})
	time.Sleep(200 * time.Millisecond)
	if got := status(h, "192.0.2.1", "token-a"); got != 200 {
		t.Fatalf("after the store was emptied: %d, want 200 (tokens kept)", got)
	}
	// The store is written again: it is followed again.
	putToken(t, srv, "b", "token-b", "192.0.2.2")
	testkit.Eventually(t, "after data loss", 5*time.Second, func() bool { return status(h, "192.0.2.2", "token-b") == 200 })
	testkit.Eventually(t, "a token no longer in the store", 5*time.Second, func() bool { return status(h, "192.0.2.1", "token-a") == 401 })
}

func TestRedisStart(t *testing.T) {
	dead := testkit.FreePort(t)
	h := &Handler{Redis: &RedisSource{Address: dead}}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	_ = h.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "redis "+dead+" unreachable at start") || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("no redis, no snapshot: %v", err)
	}

	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	h = &Handler{Redis: &RedisSource{Address: dead, Snapshot: snapshot}}
	err = h.Provision(ctx)
	_ = h.Cleanup()
	if err == nil || !strings.Contains(err.Error(), "the snapshot file") {
		t.Fatalf("no redis, missing snapshot file: %v", err)
	}

	entry := `{"a": {"token_sha256":"` + testkit.Digest("token-a") + `","allow":["192.0.2.1"]}}`
	testkit.WriteFile(t, snapshot, entry)
	h = &Handler{Redis: &RedisSource{Address: dead, Snapshot: snapshot}}
	logs := provisionLogging(t, h, zapcore.InfoLevel) // no redis, with a snapshot
	if got := status(h, "192.0.2.1", "token-a"); got != 200 {
		t.Fatalf("started from the snapshot: %d, want 200", got)
	}
	if logs.FilterMessage("redis unreachable at start; serving the snapshot file until it returns").Len() != 1 {
		t.Errorf("starting from the snapshot is not logged: %v", logs.All())
	}
}

// The CLI's writes: import stores digests, list never prints a token, and
// an entry no node would take is refused before it is written.
func TestTokensCommands(t *testing.T) {
	srv := redistest.New(t)
	s := cliStore(t, srv)
	c := s.c
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "tokens.json")
	testkit.WriteFile(t, file, `{"a": {"token": "literal-secret-a", "allow": ["192.0.2.1"]}, "b": {"token_sha256": "`+testkit.Digest("tok-b")+`", "allow": ["office"]}}`)
	if n, err := s.importFile(ctx, file); err != nil || n != 2 {
		t.Fatalf("import: %d %v", n, err)
	}
	raw, err := c.HGetAll(ctx, keysFor("").Tokens).Result()
	if err != nil {
		t.Fatal(err)
	}
	for label, v := range raw {
		if strings.Contains(v, "literal-secret-a") || !strings.Contains(v, "token_sha256") {
			t.Errorf("stored %s: %s, want a digest only", label, v)
		}
	}
	if v, _ := c.Get(ctx, keysFor("").Version).Result(); v != "3" {
		t.Errorf("version after import: %q, want 3 (the schema, a batch, the message)", v)
	}
	// A literal token written by hand is listed as its digest.
	c.HSet(ctx, keysFor("").Tokens, "c", `{"token": "literal-secret-c", "allow": ["any"]}`)
	var out strings.Builder
	if err := s.list(ctx, &out, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "literal-secret") || !strings.Contains(out.String(), testkit.Digest("literal-secret-c")) {
		t.Errorf("list:\n%s", out.String())
	}
	for _, bad := range []*TokenPolicy{
		{TokenSHA256: testkit.Digest("x"), Allow: []string{"10.0.0.1/8"}},
		{TokenSHA256: testkit.Digest("x")},
		{TokenSHA256: "abc", Allow: []string{"any"}},
		{Allow: []string{"any"}},
	} {
		err := s.update(ctx, "d", func(*TokenPolicy) (*TokenPolicy, error) { return bad, nil })
		if err == nil {
			t.Errorf("update with %+v was written", bad)
		}
	}
	if n, _ := c.HLen(ctx, keysFor("").Tokens).Result(); n != 3 {
		t.Errorf("%d entries after refused updates, want 3", n)
	}
}

// TestRedisReadOnlyNode: a node needs only the ACL the README's Security
// section gives it (read the prefix's keys, subscribe to its channel), and
// follows changes with it.
func TestRedisReadOnlyNode(t *testing.T) {
	srv := redistest.New(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var acl string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "user ip-allowlist-node ") {
			acl = strings.TrimPrefix(line, "user ")
		}
	}
	if acl == "" {
		t.Fatal("the README has no ACL line for nodes")
	}
	c := srv.Client()
	defer c.Close()
	args := []any{"ACL", "SETUSER"}
	for _, f := range strings.Fields(acl) {
		args = append(args, f)
	}
	if err := c.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER %s: %v", acl, err)
	}
	putToken(t, srv, "a", "token-a", "192.0.2.1")
	h, logs := redisHandler(t, &RedisSource{Address: srv.Addr, Username: "ip-allowlist-node", Password: "node-password", Resync: caddy.Duration(time.Hour)})
	if got := status(h, "192.0.2.1", "token-a"); got != 200 {
		t.Fatalf("as a read-only node: %d, want 200\n%v", got, logs.All())
	}
	putToken(t, srv, "b", "token-b", "192.0.2.2")
	testkit.Eventually(t, "a change, as a read-only node", 5*time.Second, func() bool { return status(h, "192.0.2.2", "token-b") == 200 })
	// The node cannot write.
	node := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "ip-allowlist-node", Password: "node-password", Protocol: 2, DisableIdentity: true})
	defer node.Close()
	if err := node.HSet(context.Background(), keysFor("").Tokens, "x", "{}").Err(); err == nil {
		t.Error("the node's ACL lets it write")
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d errors logged: %v", n, logs.FilterLevelExact(zapcore.ErrorLevel).All())
	}
}
