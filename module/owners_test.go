package ipallowlist

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// newBoundedConsole provisions a console, its start-up line logged to
// the logs returned.
func newBoundedConsole(t *testing.T, c *Console) (*Console, string) {
	t.Helper()
	logger, logs := testkit.Logs(zapcore.InfoLevel)
	if err := c.provisionWithLogger(logger); err != nil {
		t.Fatalf("provision: %v", err)
	}
	var lines []string
	for _, l := range logs.All() {
		b, _ := json.Marshal(l.ContextMap())
		lines = append(lines, l.Message+" "+string(b))
	}
	return c, strings.Join(lines, "\n")
}

// ownedToken puts a store token of acme's with allow.
func ownedToken(t *testing.T, label string, i int, allow ...string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"token": applyTok(100 + i), "allow": allow, "owner": "acme"})
	if r := routeCall(t, "PUT", "/ip-allowlist/tokens/"+label, string(b)); r.status != http.StatusCreated {
		t.Fatalf("PUT %s: %d %s", label, r.status, r.body)
	}
}

// An owner adds, to a token of theirs or a new one, only what the
// operator's bounds let them: by default no any, private_ranges, ip_set
// name or dns: entry, nothing wider than an IPv4 /24 or an IPv6 /48. A
// start-end range counts by its size. A refusal names the bound and who
// lifts it, and changes nothing; an operator is not bounded.
func TestConsoleOwnersAddWithinTheBounds(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	lift := "an operator can add it, or "
	for i, tc := range []struct {
		name, entry string
		user        string
		want        int
		says        string // in the refusal
	}{
		{"an owner adding any is refused", "any", "acme", 403, `owners may add at most an IPv4 /24 ("any" is wider): ` + lift + "widen owner_max_prefix in the console's config"},
		{"an owner adding private_ranges is refused", "private_ranges", "acme", 403, "owners may add at most an IPv4 /24"},
		{"an owner naming an ip_set is refused", "office", "acme", 403, `owners may name only the ip_sets in owner_ip_sets ("office" is not one): ` + lift + "list it in owner_ip_sets"},
		{"an owner adding an IPv4 /23 is refused", "203.0.112.0/23", "acme", 403, `owners may add at most an IPv4 /24 ("203.0.112.0/23" is wider)`},
		{"an owner adding an IPv4 /24 is accepted", "203.0.113.0/24", "acme", 200, ""},
		{"an owner adding an address is accepted", "203.0.113.7", "acme", 200, ""},
		{"an owner adding a range of 257 addresses is refused", "203.0.113.0-203.0.114.0", "acme", 403, `("203.0.113.0-203.0.114.0" is wider)`},
		{"an owner adding a range of 256 addresses is accepted", "203.0.112.128-203.0.113.127", "acme", 200, ""},
		{"an owner adding an IPv6 /47 is refused", "2001:db8::/47", "acme", 403, `owners may add at most an IPv6 /48 ("2001:db8::/47" is wider)`},
		{"an owner adding an IPv6 /48 is accepted", "2001:db8::/48", "acme", 200, ""},
		{"an owner adding a dns: entry is refused by default", "dns:office.example.com", "acme", 403, `owners may not add dns: entries ("dns:office.example.com"): ` + lift + "allow them with owner_dns"},
		{"an owner's bad entry is the store's to explain", "203.0.113.999", "acme", 400, "203.0.113.999"},
		{"an operator adding any is not bounded", "any", "root", 200, ""},
		{"an operator adding an IPv4 /23 is not bounded", "203.0.112.0/23", "root", 200, ""},
		{"an operator adding a dns: entry is not bounded", "dns:office.example.com", "root", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			label := fmt.Sprintf("acme-add-%d", i)
			ownedToken(t, label, i, "198.51.100.1")
			before := routeCall(t, "GET", "/ip-allowlist/tokens/"+label, "")
			r := consoleCall(t, c, tc.user, "POST", "/-/api/tokens/"+label+"/allow", `{"entries": ["`+tc.entry+`"]}`)
			if r.status != tc.want || tc.says != "" && !strings.Contains(r.errorText(t), tc.says) {
				t.Fatalf("Add More %s: %d %s; want %d saying %q", tc.entry, r.status, r.body, tc.want, tc.says)
			}
			if tc.want != 200 {
				if after := routeCall(t, "GET", "/ip-allowlist/tokens/"+label, ""); string(after.body) != string(before.body) {
					t.Errorf("a refused change changed the entry:\n%s\n%s", before.body, after.body)
				}
			}
			// A new token is bounded the same.
			r = consoleCall(t, c, tc.user, "POST", "/-/api/tokens", fmt.Sprintf(`{"label": "new-%d", "allow": ["198.51.100.2", %q]}`, i, tc.entry))
			if want := map[int]int{200: 201}[tc.want]; want == 0 && r.status != tc.want || want != 0 && r.status != want {
				t.Errorf("create with %s: %d %s", tc.entry, r.status, r.body)
			}
		})
	}
	// An entry an operator gave, owners cannot add again: adding it
	// again would change its expiry, and can make it permanent.
	ownedToken(t, "acme-wide", 90, "198.51.100.1")
	if r := consoleCall(t, c, "root", "POST", "/-/api/tokens/acme-wide/allow", `{"entries": ["10.0.0.0/16"], "ttl": "1h"}`); r.status != 200 {
		t.Fatalf("the operator's temporary /16: %d %s", r.status, r.body)
	}
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens/acme-wide/allow", `{"entries": ["10.0.0.0/16"]}`); r.status != 403 {
		t.Errorf("acme makes the operator's temporary /16 permanent: %d %s", r.status, r.body)
	}
}

// The operator widens the bounds in the console's config.
func TestConsoleOwnerBoundsAreTheOperators(t *testing.T) {
	storeHandler(t, "")
	zero, v6 := 0, 32
	c := newConsole(t, &Console{Operators: []string{"root"}, OwnerMaxPrefixIPv4: &zero, OwnerMaxPrefixIPv6: &v6, OwnerDNS: true, OwnerIPSets: []string{"office"}})
	ownedToken(t, "acme-1", 0, "198.51.100.1")
	for _, entry := range []string{"203.0.112.0/23", "10.0.0.0/8", "dns:office.example.com", "office", "2001:db8::/32"} {
		if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens/acme-1/allow", `{"entries": ["`+entry+`"]}`); r.status != 200 {
			t.Errorf("%s within the widened bounds: %d %s", entry, r.status, r.body)
		}
	}
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens/acme-1/allow", `{"entries": ["2001:db8::/31"]}`); r.status != 403 || !strings.Contains(r.errorText(t), "IPv6 /32") {
		t.Errorf("an IPv6 /31 past owner_max_prefix_ipv6 32: %d %s", r.status, r.body)
	}
}

// An owner's change leaves at most owner_max_entries (50) allow entries
// on a token: the 51st is refused, on Add More and on a new token.
func TestConsoleOwnersKeepAtMostMaxEntries(t *testing.T) {
	storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	var fortyNine, fiftyOne []string
	for i := range 51 {
		e := fmt.Sprintf("198.51.100.%d", i+1)
		if i < 49 {
			fortyNine = append(fortyNine, e)
		}
		fiftyOne = append(fiftyOne, fmt.Sprintf("%q", e))
	}
	ownedToken(t, "acme-many", 0, fortyNine...)
	for _, tc := range []struct {
		name, user, body string
		want             int
	}{
		{"the 50th entry is accepted", "acme", `{"entries": ["203.0.113.50"]}`, 200},
		{"the 51st entry is refused", "acme", `{"entries": ["203.0.113.51"]}`, 403},
		{"an entry the token has is not counted again", "acme", `{"entries": ["203.0.113.50"], "ttl": "1h"}`, 200},
		{"an operator adds the 51st", "root", `{"entries": ["203.0.113.51"]}`, 200},
		{"an owner adds none past an operator's 51", "acme", `{"entries": ["203.0.113.52"]}`, 403},
	} {
		r := consoleCall(t, c, tc.user, "POST", "/-/api/tokens/acme-many/allow", tc.body)
		if r.status != tc.want {
			t.Errorf("%s: %d %s", tc.name, r.status, r.body)
		}
		if tc.want == 403 && !strings.Contains(r.errorText(t), "owners may keep at most 50 allow entries on a token (this change makes 5") {
			t.Errorf("%s: the refusal %q", tc.name, r.errorText(t))
		}
	}
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "acme-new", "allow": [`+strings.Join(fiftyOne, ",")+`]}`); r.status != 403 || !strings.Contains(r.errorText(t), "raise owner_max_entries") {
		t.Errorf("a new token of 51 entries: %d %s", r.status, r.body)
	}
	if r := consoleCall(t, c, "acme", "POST", "/-/api/tokens", `{"label": "acme-new", "allow": [`+strings.Join(fiftyOne[:50], ",")+`]}`); r.status != 201 {
		t.Errorf("a new token of 50 entries: %d %s", r.status, r.body)
	}
}

// An owner resumes only a suspension of their own: never one the leak
// signal, an operator, the admin routes or another user made, nor one
// made before suspensions were recorded. An operator resumes any.
func TestConsoleOwnersResumeOnlyTheirOwnSuspensions(t *testing.T) {
	h, _ := storeHandler(t, "")
	c := newConsole(t, &Console{Operators: []string{"root"}})
	leak := func(label string) {
		if _, err := h.fileStore.setSuspended(label, true, tokenstore.Cond{}, audit{source: "leak_alert"}); err != nil {
			t.Fatal(err)
		}
	}
	suspendBy := map[string]func(label string){
		"the leak signal": leak,
		"an operator":     func(label string) { consoleCall(t, c, "root", "POST", "/-/api/tokens/"+label+"/suspend", `{}`) },
		"the admin routes": func(label string) {
			routeCall(t, "POST", "/ip-allowlist/tokens/"+label+"/suspend", "")
		},
		"a PUT, as before suspensions were recorded": func(label string) {
			var e entryOut
			routeCall(t, "GET", "/ip-allowlist/tokens/"+label, "").json(t, &e)
			b, _ := json.Marshal(map[string]any{"token_sha256": e.TokenSHA256, "allow": e.Allow, "owner": "acme", "suspended": true})
			if r := routeCall(t, "PUT", "/ip-allowlist/tokens/"+label, string(b)); r.status != 200 {
				t.Fatalf("PUT: %d %s", r.status, r.body)
			}
		},
		"the owner, then the leak signal": func(label string) {
			consoleCall(t, c, "acme", "POST", "/-/api/tokens/"+label+"/suspend", `{}`)
			leak(label)
		},
		"the owner": func(label string) { consoleCall(t, c, "acme", "POST", "/-/api/tokens/"+label+"/suspend", `{}`) },
		"an operator, then the owner": func(label string) {
			consoleCall(t, c, "root", "POST", "/-/api/tokens/"+label+"/suspend", `{}`)
			consoleCall(t, c, "acme", "POST", "/-/api/tokens/"+label+"/suspend", `{}`)
		},
	}
	for i, tc := range []struct {
		by, resumer string
		want        int
		says        string
	}{
		{"the leak signal", "acme", 403, `token "sus-0" was suspended by the leak signal (leak_alert): owners resume only their own suspensions; an operator can resume it`},
		{"the leak signal", "root", 200, ""},
		{"an operator", "acme", 403, "was suspended by an operator"},
		{"the admin routes", "acme", 403, "was suspended by an operator (admin)"},
		{"a PUT, as before suspensions were recorded", "acme", 403, "before suspensions were recorded"},
		{"the owner, then the leak signal", "acme", 403, "the leak signal"},
		{"an operator, then the owner", "acme", 403, "an operator"},
		{"the owner", "acme", 200, ""},
		{"the owner", "root", 200, ""},
	} {
		label := fmt.Sprintf("sus-%d", i)
		ownedToken(t, label, 50+i, "198.51.100.1")
		suspendBy[tc.by](label)
		if got := decided(h, applyTok(50+i+100), "198.51.100.1"); got != "token_suspended "+label {
			t.Fatalf("suspended by %s: %s", tc.by, got)
		}
		r := consoleCall(t, c, tc.resumer, "POST", "/-/api/tokens/"+label+"/resume", `{}`)
		if r.status != tc.want || tc.says != "" && !strings.Contains(r.errorText(t), tc.says) {
			t.Errorf("%s resumes a suspension by %s: %d %s; want %d saying %q", tc.resumer, tc.by, r.status, r.body, tc.want, tc.says)
		}
		var e entryOut
		routeCall(t, "GET", "/ip-allowlist/tokens/"+label, "").json(t, &e)
		if resumed := !e.Suspended; resumed != (tc.want == 200) || resumed && e.SuspendedBy != "" {
			t.Errorf("%s resumes a suspension by %s: suspended %v by %q after", tc.resumer, tc.by, e.Suspended, e.SuspendedBy)
		}
	}
}

// Without operators, the bounds hold for every console user, and the
// start-up line and the refusals say that naming operators lifts them.
func TestConsoleWithoutOperatorsBoundsEveryone(t *testing.T) {
	h, _ := storeHandler(t, "")
	c, startup := newBoundedConsole(t, &Console{})
	for _, want := range []string{"every one is bounded as an owner is", "to lift the bounds", "IPv4 ranges up to a /24, IPv6 ranges up to a /48; 50 entries a token; no dns: entries; no ip_set names"} {
		if !strings.Contains(startup, want) {
			t.Errorf("the start-up line lacks %q:\n%s", want, startup)
		}
	}
	routeCall(t, "PUT", "/ip-allowlist/tokens/cust-1", `{"token": "`+applyTok(1)+`", "allow": ["198.51.100.7"]}`)
	r := consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/allow", `{"entries": ["any"]}`)
	if r.status != 403 || !strings.Contains(r.errorText(t), "the console names no operators, so no console user can add it: name operators (operators <user id>)") {
		t.Errorf("alice adds any: %d %s", r.status, r.body)
	}
	if _, err := h.fileStore.setSuspended("cust-1", true, tokenstore.Cond{}, audit{source: "leak_alert"}); err != nil {
		t.Fatal(err)
	}
	r = consoleCall(t, c, "alice", "POST", "/-/api/tokens/cust-1/resume", `{}`)
	if r.status != 403 || !strings.Contains(r.errorText(t), "resume it through the admin routes or the CLI") {
		t.Errorf("alice resumes the leak signal's suspension: %d %s", r.status, r.body)
	}
	_, startup = newBoundedConsole(t, &Console{Operators: []string{"root"}})
	if !strings.Contains(startup, `"operators":["root"]`) || !strings.Contains(startup, "within the owner bounds") {
		t.Errorf("the start-up line with operators:\n%s", startup)
	}
}

// The owner_* fields' rules, as Provision applies them.
func TestConsoleOwnerBoundsConfigRules(t *testing.T) {
	for _, tc := range []struct{ name, json, err string }{
		{"the defaults", `{}`, ""},
		{"any IPv4 range", `{"owner_max_prefix_ipv4": 0}`, ""},
		{"an IPv4 prefix length past 32", `{"owner_max_prefix_ipv4": 33}`, "owner_max_prefix_ipv4 33: want a prefix length from 0"},
		{"a negative IPv6 prefix length", `{"owner_max_prefix_ipv6": -1}`, "owner_max_prefix_ipv6 -1"},
		{"more entries than the console keeps", `{"owner_max_entries": 1001}`, "owner_max_entries 1001: want 1 to 1000"},
		{"a set name that is no name", `{"owner_ip_sets": ["10.0.0.0/8"]}`, `owner_ip_sets[0] "10.0.0.0/8": not an ip_set name`},
	} {
		var c Console
		if err := json.Unmarshal([]byte(tc.json), &c); err != nil {
			t.Fatal(err)
		}
		err := c.CheckOwnerBounds()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

// suspended_by is a field of the stored entry: an entry with it decodes,
// on the fast path's fallback, and one written before it decodes as no
// one's suspension, which no owner may resume.
func TestSuspendedByDecodes(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	for _, tc := range []struct{ raw, by string }{
		{`{"token_sha256": "` + digest + `", "allow": ["192.0.2.1"], "suspended": true, "suspended_by": "leak_alert"}`, "leak_alert"},
		{`{"token_sha256": "` + digest + `", "allow": ["192.0.2.1"], "suspended": true}`, ""},
	} {
		e := decodeEntry(tc.raw)
		if e.err != nil || !e.tp.Suspended || e.tp.SuspendedBy != tc.by {
			t.Errorf("%s: %v, suspended by %q", tc.raw, e.err, e.tp.SuspendedBy)
		}
	}
}
