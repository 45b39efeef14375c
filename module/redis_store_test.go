package ipallowlist

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
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
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	h := &Handler{Redis: src, IPSets: sets}
	if err := h.provisionWithLogger(ctx, zap.New(core)); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return h, logs
}

// reasonOf is the decision's reason for tok from remote.
func reasonOf(h *Handler, remote, tok string) string {
	return serve(h, newRequest(remote+":1234", "/", "Authorization", "Bearer "+tok)).placeholder(placeholderReason)
}

// handWrite writes raw entries (label, JSON pairs) as redis-cli would, with
// the version and a message per label.
func handWrite(t *testing.T, srv *redistest.Server, pairs ...string) {
	t.Helper()
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	keys := Keys("")
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

func entryJSON(tok string, allow string) string {
	return `{"token_sha256":"` + digestHex(tok) + `","allow":["` + allow + `"]}`
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
	if got, _ := s.c.HGet(ctx, s.keys.Digests, digestHex(tokPartnerA)).Result(); got != "partner-a" {
		t.Fatalf("index of partner-a's token: %q", got)
	}

	before, _ := s.c.HGetAll(ctx, s.keys.Tokens).Result()
	beforeIndex, _ := s.c.HGetAll(ctx, s.keys.Digests).Result()
	for _, label := range []string{"acme-test", "partner-b"} {
		err := s.update(ctx, label, func(*TokenPolicy) (*TokenPolicy, error) {
			return &TokenPolicy{TokenSHA256: digestHex(tokPartnerA), Allow: []string{"any"}}, nil
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
	eventually(t, "conflict logged", func() bool {
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
		`{"token_sha256":"` + digestHex(tokPartnerB) + `","allow":["192.0.2.2"],"valid_until":"2030-01-01"}`, // a field this node does not know
		`{"allow": ["192.0.2.2"], "tokn_sha256": "oops"}`,                                                    // no token it can read: the index gives it
		`{"token_sha256":"` + digestHex(tokPartnerB) + `","allow":["192.0.2.2"]}}`,                           // trailing garbage
		`not json`,
	} {
		handWrite(t, srv, "partner-b", bad)
		eventually(t, "bad entry "+bad, func() bool { return reasonOf(h, "192.0.2.2", tokPartnerB) == ReasonInvalidEntry })
		if r := reasonOf(h, "203.0.113.9", tokPartnerB); r != ReasonInvalidEntry {
			t.Errorf("partner-b with entry %s, from elsewhere: %s, want invalid_entry (never unlisted)", bad, r)
		}
		// A full load gives the same answer.
		if err := h.store.loadAll(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Two entries claim one token and the index names neither: refused.
	c := srv.Client()
	defer c.Close()
	c.HDel(ctx, s.keys.Digests, digestHex(tokPartnerA))
	c.Publish(ctx, s.keys.Changes, "partner-a")
	eventually(t, "unindexed conflict", func() bool { return reasonOf(h, "192.0.2.1", tokPartnerA) == ReasonInvalidEntry })
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
	if raw != `{"token_sha256":"`+digestHex(tokPartnerA)+`","revoked":true}` {
		t.Errorf("tombstone: %s", raw)
	}
	eventually(t, "revoked", func() bool { return reasonOf(h, "192.0.2.1", tokPartnerA) == ReasonTokenRevoked })
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
	eventually(t, "unrestricted", func() bool { return reasonOf(h, "203.0.113.9", tokPartnerA) == ReasonAllowed })
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
