package ipallowlist

import (
	"reflect"
	"testing"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The fast path decodes an entry as the strict decoder does, or leaves it
// to it; it never accepts what the strict decoder refuses.
func FuzzDecodeCanonical(f *testing.F) {
	d := testkit.Digest(tokPartnerA)
	for _, seed := range []string{
		`{"token_sha256":"` + d + `","allow":["192.0.2.1","2001:db8::/64"]}`,
		`{"token_sha256":"` + d + `","revoked":true}`,
		`{"token_sha256":"` + d + `","allow":["any"],"deny":["192.0.2.9"],"allow_broad":true}`,
		` { "token" : "a-literal-token-0123456789" , "allow" : [ ] } `,
		`{"token_sha256":"` + d + `","allow":["192.0.2.1"],"valid_until":"2030"}`,
		`{"token_sha256":"` + d + `","allow":["192.0.2.1"]}}`,
		`{"allow":["a"],"allow":["b"]}`,
		`{"Allow":["192.0.2.1"]}`,
		`{"allow":["\u0031"]}`,
		`{"allow":null}`,
		`{"revoked":false,"allow":["x"]}`,
		`{}`, `{`, `[]`, `not json`, `{"allow":["é"]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var fast TokenPolicy
		if !decodeCanonical(raw, &fast) {
			return
		}
		strict := decodeStrict(raw)
		if strict.err != nil {
			t.Fatalf("%q: the fast path accepts what the strict decoder refuses (%v)", raw, strict.err)
		}
		if !reflect.DeepEqual(fast, strict.tp) {
			t.Fatalf("%q: fast %#v, strict %#v", raw, fast, strict.tp)
		}
		e := decodeEntry(raw)
		if e.claim != strict.claim || e.claimed != strict.claimed {
			t.Fatalf("%q: claims differ", raw)
		}
	})
}

// The entries the CLI writes take the fast path.
func TestDecodeCanonicalTakesCLIEntries(t *testing.T) {
	d := testkit.Digest(tokPartnerA)
	for _, raw := range []string{
		`{"token_sha256":"` + d + `","allow":["192.0.2.1","2001:db8::/64"]}`,
		`{"token_sha256":"` + d + `","revoked":true}`,
		`{"token_sha256":"` + d + `","allow":["office"],"deny":["192.0.2.9"],"allow_broad":true}`,
	} {
		var tp TokenPolicy
		if !decodeCanonical(raw, &tp) {
			t.Errorf("%s: not taken by the fast path", raw)
		}
	}
}
