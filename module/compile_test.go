package ipallowlist

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

const secret = "s3cr3t-do-not-log"

func provisionErr(h *Handler) error {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	return h.Provision(ctx)
}

func tok(allow ...string) map[string]*TokenPolicy {
	return map[string]*TokenPolicy{"partner-a": {Token: secret, Allow: allow}}
}

// Every configuration error in SPEC.md is refused at provision, and the
// message names the label and the entry but never the token.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		h    *Handler
		want string
	}{
		{"unparsable range", &Handler{Tokens: tok("203.0.113.0/24", "300.1.1.1")},
			`token "partner-a": allow[1] "300.1.1.1": not an IP address`},
		{"leading zeros", &Handler{Tokens: tok("010.0.0.1")},
			`token "partner-a": allow[0] "010.0.0.1": not an IP address, CIDR prefix or start-end range: IPv4 field has octet with leading zero`},
		{"host bits set", &Handler{Tokens: tok("10.0.0.1/8")},
			`token "partner-a": allow[0] "10.0.0.1/8": prefix "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8`},
		{"zone in address", &Handler{Tokens: tok("fe80::1%eth0")},
			`allow[0] "fe80::1%eth0": address "fe80::1%eth0" has a zone`},
		{"zone in prefix", &Handler{Tokens: tok("fe80::%eth0/64")},
			`has a zone`},
		{"mapped prefix", &Handler{Tokens: tok("::ffff:0:0/96")},
			`"::ffff:0:0/96" is an IPv4-mapped IPv6 prefix`},
		{"mapped address", &Handler{Tokens: tok("::ffff:1.2.3.4")},
			`is an IPv4-mapped IPv6 address; client addresses are unmapped before matching, write 1.2.3.4`},
		{"range of mixed families", &Handler{Tokens: tok("192.0.2.1-2001:db8::1")},
			`mixes IPv4 and IPv6`},
		{"reversed range", &Handler{Tokens: tok("192.0.2.20-192.0.2.10")},
			`range "192.0.2.20-192.0.2.10" is reversed`},
		{"unknown set", &Handler{Tokens: tok("offfice")},
			`token "partner-a": allow[0] "offfice": unknown ip_set`},
		{"unknown set in deny", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Token: secret, Allow: []string{"any"}, Deny: []string{"nope"}}}},
			`token "partner-a": deny[0] "nope": unknown ip_set`},
		{"empty token", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Allow: []string{"any"}}}},
			`token "partner-a": empty token`},
		{"token with surrounding white space", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Token: " " + secret, Allow: []string{"any"}}}},
			`token "partner-a": the token has leading or trailing white space`},
		{"two labels with one token", &Handler{Tokens: map[string]*TokenPolicy{
			"a": {Token: secret, Allow: []string{"any"}}, "b": {TokenSHA256: testkit.Digest(secret), Allow: []string{"any"}}}},
			`token "b": same token as "a"`},
		{"empty allow", &Handler{Tokens: tok()},
			`token "partner-a": allow is empty`},
		{"malformed digest length", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {TokenSHA256: "abc", Allow: []string{"any"}}}},
			`token "partner-a": malformed sha256 digest: want 64 hex digits, got 3 characters`},
		{"malformed digest hex", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {TokenSHA256: strings.Repeat("g", 64), Allow: []string{"any"}}}},
			`token "partner-a": malformed sha256 digest: not hex`},
		{"token and digest both", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Token: secret, TokenSHA256: testkit.Digest(secret), Allow: []string{"any"}}}},
			`set token or token_sha256, not both`},
		{"unknown mode", &Handler{Mode: "audit"}, `mode "audit": must be enforce or report`},
		{"unknown missing_token", &Handler{MissingToken: "maybe"}, `missing_token "maybe": must be allow or deny`},
		{"unset env placeholder", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Token: "{env.IPAL_SURELY_UNSET}", Allow: []string{"any"}}}},
			`token "partner-a": token {env.IPAL_SURELY_UNSET}:`},
		{"bad label", &Handler{Tokens: map[string]*TokenPolicy{"a/b": {Token: secret, Allow: []string{"any"}}}},
			`token "a/b": use letters, digits`},
		{"bad set entry", &Handler{IPSets: map[string][]string{"office": {"203.0.113.0/24", "1.2.3"}}},
			`ip_set "office": [1] "1.2.3":`},
		{"nested set", &Handler{IPSets: map[string][]string{"a": {"1.2.3.4"}, "b": {"a"}}},
			`ip_set "b": [0] "a": a set cannot contain another set`},
		{"bad set name", &Handler{IPSets: map[string][]string{"1office": {"1.2.3.4"}}},
			`ip_set "1office": a set name starts with a letter`},
		{"bad unlisted range", &Handler{Unlisted: &Policy{Allow: []string{"10.0.0.0/33"}}},
			`unlisted: allow[0] "10.0.0.0/33":`},
		{"token source with neither", &Handler{TokenSources: []TokenSource{{}}},
			`token_sources[0]: set header, query or cookie`},
		{"bad header name", &Handler{TokenSources: []TokenSource{{Header: "X Key"}}},
			`token_sources[0]: header "X Key" is not a valid header name`},
		{"literal token that looks like a digest", &Handler{Tokens: map[string]*TokenPolicy{"partner-a": {Token: "sha256:" + testkit.Digest(secret), Allow: []string{"any"}}}},
			`put a digest in token_sha256`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := provisionErr(tt.h)
			if err == nil {
				t.Fatalf("provisioned; want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error names the secret: %v", err)
			}
		})
	}
}

func TestTokensFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string { return testkit.WriteFile(t, filepath.Join(dir, name), body) }
	good := write("good.json", `{
		"ci-runner": {"token_sha256": "`+testkit.Digest(tokC)+`", "allow": ["192.0.2.10-192.0.2.20"], "deny": ["192.0.2.15"]},
		"mobile": {"token": "`+tokB+`", "allow": ["office"]}
	}`)
	h, _ := provisioned(t, &Handler{
		IPSets:      map[string][]string{"office": {"203.0.113.0/24"}},
		Tokens:      map[string]*TokenPolicy{"a": {Token: tokA, Allow: []string{"any"}}},
		TokensFiles: []string{good},
		Unlisted:    &Policy{Allow: []string{}},
	})
	for _, tt := range []struct{ tok, remote, reason, label string }{
		{tokC, "192.0.2.11:1", ReasonAllowed, "ci-runner"},
		{tokC, "192.0.2.15:1", ReasonIPDenied, "ci-runner"},
		{tokB, "203.0.113.80:1", ReasonAllowed, "mobile"},
		{tokB, "192.0.2.11:1", ReasonIPNotAllowed, "mobile"},
	} {
		res := serve(h, newRequest(tt.remote, "/", testkit.Bearer(tt.tok)...))
		if res.placeholder(placeholderReason) != tt.reason || res.placeholder(placeholderLabel) != tt.label {
			t.Errorf("%s from %s: reason %q label %q, want %q %q", tt.label, tt.remote,
				res.placeholder(placeholderReason), res.placeholder(placeholderLabel), tt.reason, tt.label)
		}
	}

	for _, tt := range []struct{ name, body, want string }{
		{"syntax error", `{"x": {"token": "` + secret + `", "allow": [}}`, `invalid JSON at byte`},
		{"unknown field", `{"x": {"token": "` + secret + `", "alow": ["any"]}}`, `token "x": json: unknown field "alow"`},
		{"not an object", `["` + secret + `"]`, `want a JSON object`},
		{"label also inline", `{"a": {"token": "` + secret + `", "allow": ["any"]}}`, `token "a": label defined twice, in tokens and in tokens_file`},
		{"duplicate token across sources", `{"x": {"token": "` + tokA + `", "allow": ["any"]}}`, `token "x": same token as "a"`},
		{"bad range", `{"x": {"token": "` + secret + `", "allow": ["10.0.0.1/8"]}}`, `token "x": allow[0] "10.0.0.1/8": prefix`},
		{"trailing data", `{} {}`, `data after the JSON object`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := write(tt.name+".json", tt.body)
			err := provisionErr(&Handler{
				Tokens:      map[string]*TokenPolicy{"a": {Token: tokA, Allow: []string{"any"}}},
				TokensFiles: []string{p},
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error = %v, want it to name the file and contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error names the secret: %v", err)
			}
		})
	}
	// Errors far into a file, past the first batches the decoder hands over.
	var many strings.Builder
	many.WriteString("{")
	for i := range 3000 {
		fmt.Fprintf(&many, `"t%d": {"token_sha256": %q, "allow": ["192.0.2.1"]},`, i, testkit.Digest(fmt.Sprint(i)))
	}
	for _, tt := range []struct{ name, tail, want string }{
		{"bad range at entry 3001", `"late": {"token": "x-late-0123456789ab", "allow": ["10.0.0.1/8"]}}`, `token "late": allow[0] "10.0.0.1/8"`},
		{"syntax error at entry 3001", `"late": {"token": "x-late-0123456789ab", "allow": [}}`, `invalid JSON at byte`},
		{"duplicate label at entry 3001", `"t7": {"token": "x-late-0123456789ab", "allow": ["any"]}}`, `token "t7": label defined twice in tokens_file`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tt.name, " ", "_")+".json", many.String()+tt.tail)
			err := provisionErr(&Handler{TokensFiles: []string{p}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
	if err := provisionErr(&Handler{TokensFiles: []string{filepath.Join(dir, "absent.json")}}); err == nil {
		t.Error("a missing tokens_file provisioned")
	}
}

func TestSharedSetsStoredOnce(t *testing.T) {
	tokens := map[string]*TokenPolicy{}
	for _, l := range []string{"a", "b", "c", "d"} {
		tokens[l] = &TokenPolicy{Token: "token-0123456789-" + l, Allow: []string{"office"}}
	}
	h, _ := provisioned(t, &Handler{IPSets: map[string][]string{"office": {"203.0.113.0/24", "2001:db8::/48"}}, Tokens: tokens})
	// one v4 and one v6 interval for office, one each for the default unlisted any
	if tb := h.current.Load().base; len(tb.v4)+len(tb.v6) != 4 {
		got := len(tb.v4) + len(tb.v6)
		t.Errorf("stored %d intervals, want 4: identical sets are stored once", got)
	}
}

// A huge sparse tokens file (finding 14) is refused without first making
// room for the tokens its size suggests: 2 GiB of zeros once took 2 GB.
func TestSparseTokensFileIsCheap(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse.json")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 << 30); err != nil {
		t.Skipf("cannot make a sparse file here: %v", err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err = provisionErr(&Handler{TokensFiles: []string{p}})
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "invalid JSON") {
		t.Errorf("error = %v, want invalid JSON", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("refusing the file allocated %d MiB", grew>>20)
	}
}

// hash-token prints sha256:<hex>; token_sha256 takes it as printed.
func TestDigestWithPrefixAccepted(t *testing.T) {
	h, _ := provisioned(t, &Handler{Tokens: map[string]*TokenPolicy{
		"a": {TokenSHA256: "sha256:" + strings.ToUpper(testkit.Digest(tokA)), Allow: []string{"192.0.2.1"}},
	}})
	if res := serve(h, newRequest("192.0.2.1:1", "/", testkit.Bearer(tokA)...)); res.status != 200 {
		t.Errorf("token given as sha256:<HEX>: %d, want 200", res.status)
	}
}
