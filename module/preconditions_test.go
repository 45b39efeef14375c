package ipallowlist

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// If-Match and If-None-Match as RFC 9110 §13.1.1 and §13.1.2 say: a tag
// that does not match is 412 whatever it looks like, If-Match compares
// strongly, lists and several field lines are one list, and only a field
// that is no list of entity-tags is 400. cur stands for the entry's ETag
// as read just before the call.
func TestStoreRoutesPreconditionsFollowRFC9110(t *testing.T) {
	storeHandler(t, "")
	body := func(ip string) string {
		return `{"token_sha256": "` + testkit.Digest(applyTok(1)) + `", "allow": ["` + ip + `"]}`
	}
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", body("198.51.100.1")); r.status != http.StatusCreated {
		t.Fatalf("setup: %d %s", r.status, r.body)
	}
	for i, tt := range []struct {
		name   string
		header []string // name, value pairs; "cur" in a value is the ETag's digits
		status int
	}{
		{"an If-Match tag this API never answers fails", []string{"If-Match", `"stale-etag"`}, 412},
		{"a weak If-Match tag never matches", []string{"If-Match", `W/"cur"`}, 412},
		{"a stale If-Match tag fails", []string{"If-Match", `"999"`}, 412},
		{"digits with a leading zero are another tag", []string{"If-Match", `"0cur"`}, 412},
		{"the current tag matches", []string{"If-Match", `"cur"`}, 200},
		{"a list holding the current tag matches", []string{"If-Match", `"999", "cur"`}, 200},
		{"a list without it fails", []string{"If-Match", `"998", W/"cur", "x"`}, 412},
		{"field lines are one list", []string{"If-Match", `"997"`, "If-Match", `"cur"`}, 200},
		{"empty list elements are allowed", []string{"If-Match", ` , "cur",,`}, 200},
		{"If-Match * matches an entry", []string{"If-Match", "*"}, 200},
		{"an If-None-Match tag that matches fails", []string{"If-None-Match", `"cur"`}, 412},
		{"If-None-Match compares weakly", []string{"If-None-Match", `W/"cur"`}, 412},
		{"an If-None-Match list holding it fails", []string{"If-None-Match", `"1", "cur"`}, 412},
		{"an If-None-Match tag that does not match passes", []string{"If-None-Match", `"999", "stale-etag"`}, 200},
		{"If-None-Match * fails on an entry", []string{"If-None-Match", "*"}, 412},
		{"an unquoted tag is malformed", []string{"If-Match", "cur"}, 400},
		{"an unclosed tag is malformed", []string{"If-Match", `"cur`}, 400},
		{"* in a list is malformed", []string{"If-Match", `*, "cur"`}, 400},
		{"tags without a comma are malformed", []string{"If-Match", `"cur" "1"`}, 400},
		{"white space inside a tag is malformed", []string{"If-None-Match", `"a b"`}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			get := routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", "")
			cur := strings.Trim(get.header.Get("ETag"), `"`)
			header := make([]string, len(tt.header))
			for j, v := range tt.header {
				header[j] = strings.ReplaceAll(v, "cur", cur)
			}
			// A new address each time, so that a success is a change.
			r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", body("198.51.100."+strconv.Itoa(10+i)), header...)
			if r.status != tt.status {
				t.Fatalf("%v: %d %s, want %d", header, r.status, r.body, tt.status)
			}
			after := routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", "").header.Get("ETag")
			if changed := after != get.header.Get("ETag"); changed != (tt.status == 200) {
				t.Errorf("entry changed: %v, want %v", changed, tt.status == 200)
			}
		})
	}
}
