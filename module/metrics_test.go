package ipallowlist

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// TestMetrics: decisions are counted by reason in the config's registry; a
// second handler of the same config shares the counters; per-token series
// exist only when asked for.
func TestMetrics(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	provision := func(cfg *Handler) *Handler {
		t.Helper()
		if err := cfg.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cfg.Cleanup() })
		cfg.logger = zap.NewNop()
		return cfg
	}
	plain := provision(decisionConfig())
	cfg := decisionConfig()
	cfg.MetricsPerToken = true
	perToken := provision(cfg) // same registry: must not fail as a duplicate

	serve(plain, newRequest("203.0.113.9:1", "/", testkit.Bearer(tokA)...))
	serve(plain, newRequest("198.51.100.1:1", "/", testkit.Bearer(tokA)...))
	serve(perToken, newRequest("198.51.100.1:1", "/", testkit.Bearer(tokA)...))
	serve(perToken, newRequest("198.51.100.1:1", "/", testkit.Bearer("unknown")...))

	for r, want := range map[reason]float64{reasonAllowed: 1, reasonIPNotAllowed: 2, reasonUnlistedToken: 1, reasonMissingToken: 0} {
		if got := testutil.ToFloat64(plain.metrics.byReason[r]); got != want {
			t.Errorf("%s: %v, want %v (shared by both handlers)", r, got, want)
		}
	}
	if plain.metrics.perToken != nil {
		t.Error("per-token series without metrics_per_token")
	}
	if got := testutil.ToFloat64(perToken.metrics.perToken.WithLabelValues("a", "deny")); got != 1 {
		t.Errorf("per-token a/deny = %v, want 1", got)
	}
	// Unlisted tokens have no label, so no series: cardinality stays bounded
	// by the listed tokens.
	if n := testutil.CollectAndCount(perToken.metrics.perToken); n != 1 {
		t.Errorf("%d per-token series, want 1 (a/deny; the unknown token makes none)", n)
	}
}
