package examples

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStoreEntryRulesBinary runs the entry rules of issue 21 against the
// real binary: a range listed twice in an entry is refused on a write,
// and removed whole from an entry that holds it twice already; an expiry
// outside 1970 to 100 years from now is refused.
func TestStoreEntryRulesBinary(t *testing.T) {
	c := startStore(t)
	tok := storeTok("dup")
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	entry := func(allow []string, expires map[string]string) string {
		b, _ := json.Marshal(map[string]any{"token": tok, "allow": allow, "expires": expires})
		return string(b)
	}

	// A write that would hold the range twice: 400, naming both.
	r := mustRoute(t, c, http.StatusBadRequest, "PUT", "/ip-allowlist/tokens/dup", entry([]string{"127.0.0.9", "127.0.0.9"}, map[string]string{"127.0.0.9": soon}))
	if e := routeError(t, r); !strings.Contains(e, `token "dup": allow[1] "127.0.0.9": the same range as allow[0] "127.0.0.9"`) {
		t.Errorf("PUT of a duplicate: %s", e)
	}
	// Expiries outside the window: 400, naming the entry.
	for _, bad := range []struct{ method, path, body string }{
		{"PUT", "/ip-allowlist/tokens/dup", entry([]string{"127.0.0.9"}, map[string]string{"127.0.0.9": "1500-01-01T00:00:00Z"})},
		{"PUT", "/ip-allowlist/tokens/dup", entry([]string{"127.0.0.9"}, map[string]string{"127.0.0.9": "9999-12-31T23:59:59+14:00"})},
	} {
		r := mustRoute(t, c, http.StatusBadRequest, bad.method, bad.path, bad.body)
		if e := routeError(t, r); !strings.Contains(e, `expires of "127.0.0.9"`) || !strings.Contains(e, "outside the times an expiry may take") {
			t.Errorf("%s %s: %s", bad.method, bad.body, e)
		}
	}

	// An entry that holds the range twice already (an import keeps it,
	// merged when compiled): a removal removes every copy.
	mustRoute(t, c, http.StatusOK, "POST", "/ip-allowlist/import", `{"dup": `+entry([]string{"127.0.0.9", "127.0.0.9/32"}, map[string]string{"127.0.0.9": soon})+`}`)
	if got := answer(c, "127.0.0.9", tok); got != "200 dup" {
		t.Fatalf("before the removal: %s", got)
	}
	mustRoute(t, c, http.StatusOK, "DELETE", "/ip-allowlist/tokens/dup/allow/127.0.0.9", "")
	if got := answer(c, "127.0.0.9", tok); got != "401" {
		t.Errorf("after the removal: %s, want 401", got)
	}
	merged := func(out string) bool { return strings.Contains(out, "duplicate entries merged") }
	if !merged(c.WaitOutput(merged)) {
		t.Errorf("no WARN of the duplicates the import kept")
	}

	// Add More: ttl 106751d, past year 2262, is refused at once.
	r = mustRoute(t, c, http.StatusBadRequest, "POST", "/ip-allowlist/tokens/dup/allow", `{"entries": ["127.0.0.9"], "ttl": "106751d"}`)
	if e := routeError(t, r); !strings.Contains(e, `ttl "106751d"`) {
		t.Errorf("ttl 106751d: %s", e)
	}
	if got := answer(c, "127.0.0.9", tok); got != "401" {
		t.Errorf("after the refused Add More: %s, want 401", got)
	}
}
