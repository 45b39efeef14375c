package ipallowlist

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// meddler is a go-redis hook that, before some of the MULTI/EXEC blocks
// that set tokens, has another client change another label: a change
// made while the import runs.
type meddler struct {
	other  *redis.Client
	keys   redisKeys
	before func(n int) bool // meddle before the nth block that sets tokens (from 1)
	n      atomic.Int32
}

func (m *meddler) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (m *meddler) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (m *meddler) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		sets := false
		for _, c := range cmds {
			if args := c.Args(); strings.EqualFold(c.Name(), "hset") && len(args) > 1 && args[1] == m.keys.Tokens {
				sets = true
			}
		}
		if sets && m.before(int(m.n.Add(1))) {
			m.other.HSet(ctx, m.keys.Tokens, "meddled", `{"token_sha256":"`+testkit.Digest("meddled")+`","allow":["192.0.2.9"]}`)
		}
		return next(ctx, cmds)
	}
}

// An import into Redis is all or nothing: a change to the store while it
// runs never leaves part of it written.
func TestRedisImportAllOrNothing(t *testing.T) {
	srv := redistest.New(t)
	for _, tt := range []struct {
		name    string
		before  func(n int) bool
		wantAll bool
	}{
		{"a change after the first write", func(n int) bool { return n >= 2 }, true},
		{"a change before every write", func(int) bool { return true }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := cliStore(t, srv)
			if err := s.c.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := s.ready(ctx, true); err != nil {
				t.Fatal(err)
			}
			other := srv.Client()
			t.Cleanup(func() { other.Close() })
			s.c.AddHook(&meddler{other: other, keys: s.keys, before: tt.before})
			var b strings.Builder
			b.WriteString("{")
			const n = 3*importBatch + 7
			for i := range n {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `"imp-%04d": {"token_sha256": "%s", "allow": ["198.51.100.7"]}`, i, testkit.Digest(fmt.Sprint("redis-import-", i)))
			}
			b.WriteString("}")
			file := filepath.Join(t.TempDir(), "tokens.json")
			testkit.WriteFile(t, file, b.String())
			got, err := s.importFile(ctx, file)
			stored, _ := other.HKeys(ctx, s.keys.Tokens).Result()
			imported := 0
			for _, l := range stored {
				if strings.HasPrefix(l, "imp-") {
					imported++
				}
			}
			switch {
			case tt.wantAll && (err != nil || got != n || imported != n):
				t.Errorf("import: %d, %v; %d stored, want all %d", got, err, imported, n)
			case !tt.wantAll && (err == nil || !strings.Contains(err.Error(), "nothing written") || imported != 0):
				t.Errorf("import: %d, %v; %d stored, want none and an error saying so", got, err, imported)
			}
		})
	}
}
