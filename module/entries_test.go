package ipallowlist

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The entry rules of issue 21: a range listed twice (duplicates), and the
// window an expiry time may take.

// getEntry reads label's entry through the routes.
func getEntry(t *testing.T, label string) entryOut {
	t.Helper()
	r := routeCall(t, "GET", "/ip-allowlist/tokens/"+label, "")
	var e entryOut
	r.json(t, &e)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", label, r.status, r.body)
	}
	return e
}

// A write that would hold a range twice, however written, is refused with
// 400 naming both entries, and changes nothing.
func TestDuplicateEntriesRefusedOnWrite(t *testing.T) {
	h, _ := storeHandler(t, "")
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token_sha256": "`+testkit.Digest(applyTok(1))+`", "allow": ["198.51.100.7"]}`); r.status != http.StatusCreated {
		t.Fatalf("setup: %d %s", r.status, r.body)
	}
	sha2 := testkit.Digest(applyTok(2))
	for _, tt := range []struct {
		name, method, target, body, want string
	}{
		{"PUT the same address twice", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token_sha256": "` + sha2 + `", "allow": ["127.0.0.9", "127.0.0.9"], "expires": {"127.0.0.9": "2099-01-01T00:00:00Z"}}`,
			`token "cust-2": allow[1] "127.0.0.9": the same range as allow[0] "127.0.0.9"`},
		{"PUT an address and its /32", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token_sha256": "` + sha2 + `", "allow": ["127.0.0.9", "192.0.2.1", "127.0.0.9/32"]}`,
			`allow[2] "127.0.0.9/32": the same range as allow[0] "127.0.0.9"`},
		{"PUT a prefix and its start-end range", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token_sha256": "` + sha2 + `", "allow": ["192.0.2.0/30", "192.0.2.0-192.0.2.3"]}`,
			`allow[1] "192.0.2.0-192.0.2.3": the same range as allow[0] "192.0.2.0/30"`},
		{"PUT an IPv6 address in two spellings", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token_sha256": "` + sha2 + `", "allow": ["2001:db8::1", "2001:0db8:0:0::1/128"]}`,
			`the same range as allow[0] "2001:db8::1"`},
		{"PUT a dns: name twice", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token_sha256": "` + sha2 + `", "allow": ["dns:office.example.com", "dns:office.example.com"]}`,
			`allow[1] "dns:office.example.com": the same range as allow[0]`},
		{"PUT a deny entry twice", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token_sha256": "` + sha2 + `", "allow": ["192.0.2.0/24"], "deny": ["192.0.2.7", "192.0.2.7/32"]}`,
			`deny[1] "192.0.2.7/32": the same range as deny[0] "192.0.2.7"`},
		{"PUT replacing an entry", "PUT", "/ip-allowlist/tokens/cust-1",
			`{"token_sha256": "` + testkit.Digest(applyTok(1)) + `", "allow": ["198.51.100.7", "198.51.100.7/32"]}`,
			`token "cust-1": allow[1] "198.51.100.7/32": the same range as allow[0] "198.51.100.7"`},
		{"Add More given an entry twice", "POST", "/ip-allowlist/tokens/cust-1/allow",
			`{"entries": ["127.0.0.9", "127.0.0.9/32"]}`,
			`token "cust-1": entries[1] "127.0.0.9/32": the same range as entries[0] "127.0.0.9"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.current.Load()
			etag := routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", "").header.Get("ETag")
			r := routeCall(t, tt.method, tt.target, tt.body)
			var e struct{ Error string }
			r.json(t, &e)
			if r.status != http.StatusBadRequest || !strings.Contains(e.Error, tt.want) {
				t.Errorf("%d %q, want 400 with %q", r.status, e.Error, tt.want)
			}
			if h.current.Load() != before {
				t.Error("a refused change published a view")
			}
			if got := routeCall(t, "GET", "/ip-allowlist/tokens/cust-1", "").header.Get("ETag"); got != etag {
				t.Errorf("a refused change changed cust-1: ETag %s, was %s", got, etag)
			}
			if r := routeCall(t, "GET", "/ip-allowlist/tokens/cust-2", ""); r.status != http.StatusNotFound {
				t.Errorf("a refused PUT created cust-2: %d %s", r.status, r.body)
			}
		})
	}
}

// An entry stored with a range twice (imported, or written before the
// rule) is removed whole: a removal removes every copy, so the address is
// no longer allowed, rather than allowed for ever by the copy left behind
// without its expiry.
func TestRemovalRemovesEveryCopy(t *testing.T) {
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tt := range []struct {
		name    string
		allow   []string
		expires map[string]string
		remove  string
	}{
		{"the same text twice, with an expiry", []string{"127.0.0.9", "127.0.0.9"}, map[string]string{"127.0.0.9": soon}, "127.0.0.9"},
		{"an address and its /32", []string{"127.0.0.9", "192.0.2.1", "127.0.0.9/32"}, map[string]string{"127.0.0.9": soon}, "127.0.0.9"},
		{"removed by another spelling", []string{"127.0.0.9/32", "127.0.0.9"}, nil, "127.0.0.9-127.0.0.9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, _ := storeHandler(t, "")
			tok := applyTok(1)
			entry, _ := json.Marshal(TokenPolicy{Token: tok, Allow: tt.allow, Expires: tt.expires})
			if r := routeCall(t, "POST", "/ip-allowlist/import", `{"cust-1": `+string(entry)+`}`); r.status != http.StatusOK {
				t.Fatalf("import: %d %s", r.status, r.body)
			}
			if got := decided(h, tok, "127.0.0.9"); got != "allowed cust-1" {
				t.Fatalf("before the removal: %s", got)
			}
			r := routeCall(t, "DELETE", "/ip-allowlist/tokens/cust-1/allow/"+tt.remove, "")
			if r.status != http.StatusOK {
				t.Fatalf("remove: %d %s", r.status, r.body)
			}
			if got := decided(h, tok, "127.0.0.9"); got != "ip_not_allowed cust-1" {
				t.Errorf("after the removal: %s, want the address refused", got)
			}
			e := getEntry(t, "cust-1")
			for _, a := range e.Allow {
				if keyOf(a) == keyOf("127.0.0.9") {
					t.Errorf("allow still holds %q: %v", a, e.Allow)
				}
			}
			if _, ok := e.Expires["127.0.0.9"]; ok {
				t.Errorf("expires still names the entry removed: %v", e.Expires)
			}
		})
	}
}

// Adding an entry a token has already, however written, updates it (its
// note; its expiry, as Add More does) rather than list the range twice;
// an edit of an entry stored with duplicates merges them, keeping the
// longest life.
func TestAddMoreUpdatesAnEntryPresent(t *testing.T) {
	soon := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	later := soon.Add(time.Hour)
	for _, tt := range []struct {
		name        string
		allow       []string
		expires     map[string]string
		body        string
		wantAllow   []string
		wantExpires map[string]string
		wantNotes   map[string]string
	}{
		{"a note on the entry, given as its /32", []string{"127.0.0.9"}, nil,
			`{"entries": ["127.0.0.9/32"], "note": "office"}`,
			[]string{"127.0.0.9"}, nil, map[string]string{"127.0.0.9": "office"}},
		{"a temporary entry's time moved, given as a range", []string{"192.0.2.0/30"}, map[string]string{"192.0.2.0/30": soon.Format(time.RFC3339)},
			`{"entries": ["192.0.2.0-192.0.2.3"], "expires": "` + later.Format(time.RFC3339) + `"}`,
			[]string{"192.0.2.0/30"}, map[string]string{"192.0.2.0/30": later.Format(time.RFC3339)}, nil},
		{"copies merged: a permanent copy wins", []string{"127.0.0.9", "127.0.0.9/32"}, map[string]string{"127.0.0.9": soon.Format(time.RFC3339)},
			`{"entries": ["192.0.2.1"]}`,
			[]string{"127.0.0.9", "192.0.2.1"}, nil, nil},
		{"copies merged: the later time wins", []string{"127.0.0.9", "127.0.0.9/32"}, map[string]string{"127.0.0.9": soon.Format(time.RFC3339), "127.0.0.9/32": later.Format(time.RFC3339)},
			`{"entries": ["192.0.2.1"]}`,
			[]string{"127.0.0.9", "192.0.2.1"}, map[string]string{"127.0.0.9": later.Format(time.RFC3339)}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			storeHandler(t, "")
			entry, _ := json.Marshal(TokenPolicy{Token: applyTok(1), Allow: tt.allow, Expires: tt.expires})
			if r := routeCall(t, "POST", "/ip-allowlist/import", `{"cust-1": `+string(entry)+`}`); r.status != http.StatusOK {
				t.Fatalf("import: %d %s", r.status, r.body)
			}
			if r := routeCall(t, "POST", "/ip-allowlist/tokens/cust-1/allow", tt.body); r.status != http.StatusOK {
				t.Fatalf("Add More: %d %s", r.status, r.body)
			}
			e := getEntry(t, "cust-1")
			if !slices.Equal(e.Allow, tt.wantAllow) || !equalMaps(e.Expires, tt.wantExpires) || !equalMaps(e.Notes, tt.wantNotes) {
				t.Errorf("allow %v expires %v notes %v,\nwant allow %v expires %v notes %v", e.Allow, e.Expires, e.Notes, tt.wantAllow, tt.wantExpires, tt.wantNotes)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Config sources and stored entries that list a range twice still load:
// the copies count as one entry, for the longest life of them, and one
// WARN names the token and the copies.
func TestDuplicateEntriesMergedWithOneWarn(t *testing.T) {
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	entry := func(tok string) *TokenPolicy {
		return &TokenPolicy{Token: tok, Allow: []string{"127.0.0.9", "192.0.2.1", "127.0.0.9/32"},
			Expires: map[string]string{"127.0.0.9": past, "127.0.0.9/32": soon}}
	}
	raw, _ := json.Marshal(map[string]*TokenPolicy{"dup": entry(applyTok(1))})
	for _, tt := range []struct {
		name string
		h    func(t *testing.T) *Handler
	}{
		{"json", func(t *testing.T) *Handler {
			return &Handler{Tokens: map[string]*TokenPolicy{"dup": entry(applyTok(1))}}
		}},
		{"tokens_file", func(t *testing.T) *Handler {
			return &Handler{TokensFiles: []string{testkit.WriteFile(t, filepath.Join(t.TempDir(), "tokens.json"), string(raw))}}
		}},
		{"store", func(t *testing.T) *Handler {
			path := filepath.Join(t.TempDir(), "tokens.db")
			s, _ := storeHandler(t, path)
			if r := routeCall(t, "POST", "/ip-allowlist/import", string(raw)); r.status != http.StatusOK {
				t.Fatalf("import: %d %s", r.status, r.body)
			}
			if err := s.Cleanup(); err != nil {
				t.Fatal(err)
			}
			return &Handler{Store: &TokenStore{File: path}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.h(t)
			logs := provisionLogging(t, h, zapcore.WarnLevel)
			if got := decided(h, applyTok(1), "127.0.0.9"); got != "allowed dup" {
				t.Errorf("127.0.0.9, one copy expired and one not: %s", got)
			}
			warns := logs.FilterMessageSnippet("duplicate entries merged").All()
			if len(warns) != 1 {
				t.Fatalf("%d WARNs of duplicates, want 1: %v", len(warns), logs.All())
			}
			f := warns[0].ContextMap()
			if f["token_label"] != "dup" || !strings.Contains(strings.Join(anyStrings(f["merged"]), " "), `allow[2] "127.0.0.9/32"`) {
				t.Errorf("the WARN's fields: %v", f)
			}
		})
	}
}

func anyStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	if l, ok := v.([]string); ok {
		out = l
	}
	return out
}

// An expiry takes one window, from 1970 to 100 years from now, whatever
// the write: outside it, 400 naming the entry. A new expiry a write asks
// for must be in the future; a PUT that keeps the time an entry has
// already (as read back) keeps it, past or not.
func TestExpiryWindow(t *testing.T) {
	h, _ := storeHandler(t, "")
	tok := applyTok(1)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	entry := func(expires string) string {
		return `{"token": "` + tok + `", "allow": ["127.0.0.9", "198.51.100.7"], "expires": {"127.0.0.9": "` + expires + `"}}`
	}
	// An entry with a past time, as an export holds it, imports.
	if r := routeCall(t, "POST", "/ip-allowlist/import", `{"cust-1": `+entry(past)+`}`); r.status != http.StatusOK {
		t.Fatalf("import of a past time: %d %s", r.status, r.body)
	}
	if got := decided(h, tok, "127.0.0.9"); got != "ip_not_allowed cust-1" {
		t.Errorf("an entry imported with a past time: %s, want it expired", got)
	}
	for _, tt := range []struct {
		name, method, target, body string
		status                     int
		want                       string
	}{
		{"PUT expires in 1500", "PUT", "/ip-allowlist/tokens/cust-1", entry("1500-01-01T00:00:00Z"), 400,
			`token "cust-1": expires of "127.0.0.9": "1500-01-01T00:00:00Z" is outside the times an expiry may take`},
		{"PUT expires in 9999", "PUT", "/ip-allowlist/tokens/cust-1", entry("9999-12-31T23:59:59+14:00"), 400,
			`expires of "127.0.0.9": "9999-12-31T23:59:59+14:00" is outside the times an expiry may take`},
		{"PUT a new past expiry", "PUT", "/ip-allowlist/tokens/cust-1", entry("2020-01-01T00:00:00Z"), 400,
			`expires of "127.0.0.9": "2020-01-01T00:00:00Z" is in the past; a new expiry must be in the future`},
		{"PUT a new label with a past expiry", "PUT", "/ip-allowlist/tokens/cust-2",
			`{"token": "` + applyTok(2) + `", "allow": ["127.0.0.9"], "expires": {"127.0.0.9": "` + past + `"}}`, 400, "is in the past"},
		{"Add More expires in 9999", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "expires": "9999-12-31T23:59:59+14:00"}`, 400,
			`token "cust-1": expires: "9999-12-31T23:59:59+14:00" is outside the times an expiry may take`},
		{"Add More expires in 1500", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "expires": "1500-01-01T00:00:00Z"}`, 400,
			"is outside the times an expiry may take"},
		{"Add More ttl 106751d", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "ttl": "106751d"}`, 400,
			`token "cust-1": ttl "106751d": `},
		{"Add More ttl 101 years", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "ttl": "36900d"}`, 400,
			"is outside the times an expiry may take"},
		{"Add More expires an hour past 100 years", "POST", "/ip-allowlist/tokens/cust-1/allow",
			`{"entries": ["192.0.2.1"], "expires": "` + time.Now().AddDate(expiryYears, 0, 0).Add(time.Hour).UTC().Format(time.RFC3339) + `"}`, 400,
			"is outside the times an expiry may take"},
		{"PUT keeping the past time read back", "PUT", "/ip-allowlist/tokens/cust-1", entry(past), 200, ""},
		{"Add More ttl 99 years", "POST", "/ip-allowlist/tokens/cust-1/allow", `{"entries": ["192.0.2.1"], "ttl": "36159d"}`, 200, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := routeCall(t, tt.method, tt.target, tt.body)
			var e struct{ Error string }
			_ = json.Unmarshal(r.body, &e)
			if r.status != tt.status || !strings.Contains(e.Error, tt.want) {
				t.Errorf("%d %s, want %d with %q", r.status, r.body, tt.status, tt.want)
			}
		})
	}
	// The entries accepted are in force as asked: the past one expired,
	// the one 99 years ahead allowed.
	if got := decided(h, tok, "127.0.0.9"); got != "ip_not_allowed cust-1" {
		t.Errorf("the entry PUT with its past time: %s, want it expired", got)
	}
	if got := decided(h, tok, "192.0.2.1"); got != "allowed cust-1" {
		t.Errorf("the entry added for 99 years: %s", got)
	}
}

// Times at the window's ends are compared as they are: the table's form
// (Unix seconds) holds every time the window takes.
func TestExpiryComparedOverTheWholeWindow(t *testing.T) {
	now := time.Now()
	c := &compiler{now: now}
	for _, tt := range []struct {
		at   string
		live bool
	}{
		{"1970-01-01T00:00:00Z", false},
		{"1970-01-01T00:00:01+00:00", false},
		{now.AddDate(expiryYears, 0, -1).UTC().Format(time.RFC3339), true},
		// Written by a node whose clock is ahead of this one's.
		{now.AddDate(expiryYears, 0, 0).Add(time.Hour).UTC().Format(time.RFC3339), true},
		{now.Add(-time.Second).UTC().Format(time.RFC3339), false},
		{now.Add(2 * time.Second).UTC().Format(time.RFC3339), true},
	} {
		allow, next, err := c.unexpired(&TokenPolicy{Allow: []string{"192.0.2.1"}, Expires: map[string]string{"192.0.2.1": tt.at}})
		if err != nil {
			t.Errorf("%s: %v", tt.at, err)
			continue
		}
		at, _ := time.Parse(time.RFC3339, tt.at)
		if live := len(allow) == 1; live != tt.live || live && next < at.Unix() {
			t.Errorf("%s: live %v next %d, want live %v, next at or after %d", tt.at, live, next, tt.live, at.Unix())
		}
	}
}

// The CLI applies the same rules, on the file store and on Redis: a put or
// an allow that would list a range twice is an error naming both, an
// allow given a range the entry has already leaves it listed once, and a
// --ttl or --expires outside the window is an error before anything is
// written.
func TestTokensCLIEntryRules(t *testing.T) {
	// Each target: its flags, and how to read cust-1's entry back.
	targets := map[string]func(t *testing.T) ([]string, func() TokenPolicy){
		"store": func(t *testing.T) ([]string, func() TokenPolicy) {
			flags := []string{"--store", filepath.Join(t.TempDir(), "tokens.db")}
			return flags, func() TokenPolicy {
				r := runTokens(t, nil, "", append([]string{"get", "cust-1"}, flags...)...)
				var e TokenPolicy
				if err := json.Unmarshal([]byte(r.out), &e); err != nil {
					t.Fatalf("get: %v %q", r.err, r.out)
				}
				return e
			}
		},
		"redis": func(t *testing.T) ([]string, func() TokenPolicy) {
			srv := redistest.New(t)
			return []string{"--redis", srv.Addr}, func() TokenPolicy {
				raw, err := srv.Client().HGet(context.Background(), keysFor("").Tokens, "cust-1").Result()
				if err != nil {
					t.Fatal(err)
				}
				e := decodeEntry(raw)
				if e.err != nil {
					t.Fatal(e.err)
				}
				return e.tp
			}
		},
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			flags, read := target(t)
			run := func(stdin string, args ...string) cliRun {
				return runTokens(t, nil, stdin, append(args, flags...)...)
			}
			r := run(applyTok(1), "put", "cust-1", "--allow", "127.0.0.9", "--allow", "127.0.0.9/32")
			if r.err == nil || !strings.Contains(r.err.Error(), `token "cust-1": allow[1] "127.0.0.9/32": the same range as allow[0] "127.0.0.9"`) {
				t.Errorf("put of a range twice: %v", r.err)
			}
			if r := run(applyTok(1), "put", "cust-1", "--allow", "127.0.0.9"); r.err != nil {
				t.Fatalf("put: %v", r.err)
			}
			r = run("", "allow", "cust-1", "192.0.2.1", "192.0.2.1/32")
			if r.err == nil || !strings.Contains(r.err.Error(), `entries[1] "192.0.2.1/32": the same range as entries[0] "192.0.2.1"`) {
				t.Errorf("allow of a range twice: %v", r.err)
			}
			if r := run("", "allow", "cust-1", "127.0.0.9/32"); r.err != nil {
				t.Fatalf("allow of a range present: %v", r.err)
			}
			if name == "store" {
				for _, flag := range [][]string{{"--ttl", "106751d"}, {"--expires", "9999-12-31T23:59:59+14:00"}, {"--expires", "1500-01-01T00:00:00Z"}} {
					r := run("", append([]string{"allow", "cust-1", "192.0.2.9"}, flag...)...)
					if r.err == nil || !strings.Contains(r.err.Error(), "outside the times an expiry may take") {
						t.Errorf("allow %v: %v", flag, r.err)
					}
				}
			}
			if e := read(); !slices.Equal(e.Allow, []string{"127.0.0.9"}) || len(e.Expires) != 0 {
				t.Errorf("the entry kept: allow %v expires %v, want allow [127.0.0.9]", e.Allow, e.Expires)
			}
		})
	}
}

// The console's writes take the same rules: a new token or an Add More
// with a range twice, or an expiry outside the window, is refused with
// 400 naming the entry, and nothing is kept.
func TestConsoleEntryRules(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{})
	if r := consoleCall(t, c, "alice", "POST", "/-/api/tokens", `{"label": "new-1", "allow": ["192.0.2.60"]}`); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	for _, tt := range []struct{ name, target, body, want string }{
		{"a new token with a range twice", "/-/api/tokens", `{"label": "new-2", "allow": ["192.0.2.61", "192.0.2.61/32"]}`,
			`token "new-2": allow[1] "192.0.2.61/32": the same range as allow[0] "192.0.2.61"`},
		{"Add More with a range twice", "/-/api/tokens/new-1/allow", `{"entries": ["192.0.2.62", "192.0.2.62"]}`,
			`token "new-1": entries[1] "192.0.2.62": the same range as entries[0] "192.0.2.62"`},
		{"Add More ttl 106751d", "/-/api/tokens/new-1/allow", `{"entries": ["192.0.2.62"], "ttl": "106751d"}`,
			"is outside the times an expiry may take"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := consoleCall(t, c, "alice", "POST", tt.target, tt.body)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), strings.ReplaceAll(tt.want, `"`, `\"`)) {
				t.Errorf("%d %s, want 400 with %s", r.status, r.body, tt.want)
			}
		})
	}
	if r := consoleCall(t, c, "alice", "GET", "/-/api/tokens/new-2", ""); r.status != http.StatusNotFound {
		t.Errorf("the refused token was kept: %d %s", r.status, r.body)
	}
	var e consoleToken
	consoleCall(t, c, "alice", "GET", "/-/api/tokens/new-1", "").json(t, &e)
	if !slices.Equal(e.Allow, []string{"192.0.2.60"}) {
		t.Errorf("new-1 after the refusals: %v", e.Allow)
	}
}
