package ipallowlist

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseRangeAccepts(t *testing.T) {
	tests := []struct {
		in       string
		from, to string
	}{
		{"203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"2001:db8::7", "2001:db8::7", "2001:db8::7"},
		{"203.0.113.0/24", "203.0.113.0", "203.0.113.255"},
		{"2001:db8::/48", "2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff"},
		{"192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20"},
		{"192.0.2.10-192.0.2.10", "192.0.2.10", "192.0.2.10"},
		{"2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff"},
		{"0.0.0.0-255.255.255.255", "0.0.0.0", "255.255.255.255"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			rs, err := parseRange(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 || rs[0].From().String() != tt.from || rs[0].To().String() != tt.to {
				t.Errorf("got %v, want %s-%s", rs, tt.from, tt.to)
			}
		})
	}
}

func TestParseRangeKeywords(t *testing.T) {
	any, err := parseRange(KeywordAny)
	if err != nil || len(any) != 2 || !any[0].From().Is4() || any[1].From().Is4() {
		t.Fatalf("any = %v, %v; want all of IPv4 and all of IPv6", any, err)
	}
	priv, err := parseRange(KeywordPrivateRanges)
	if err != nil {
		t.Fatal(err)
	}
	in := func(s string) bool {
		a := netip.MustParseAddr(s)
		for _, r := range priv {
			if r.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, a := range []string{"10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1", "127.255.255.255", "fd00::1", "::1"} {
		if !in(a) {
			t.Errorf("private_ranges lacks %s", a)
		}
	}
	for _, a := range []string{"172.32.0.1", "8.8.8.8", "fe80::1", "2001:db8::1"} {
		if in(a) {
			t.Errorf("private_ranges has %s", a)
		}
	}
}

func TestIsSetName(t *testing.T) {
	for s, want := range map[string]bool{
		"office": true, "eu-west_2": true, "_x": true, "fe80": true,
		"any": false, "none": false, "private_ranges": false, "1office": false,
		"fe80::1": false, "a.b": false, "": false, "a b": false,
	} {
		if isSetName(s) != want {
			t.Errorf("isSetName(%q) = %v, want %v", s, !want, want)
		}
	}
}

// FuzzParseRange checks that whatever parseRange accepts agrees with
// net/netip, is of one family, and is in order. Seeds: testdata/fuzz/ranges.txt.
func FuzzParseRange(f *testing.F) {
	for _, seed := range seedLines(f, "ranges.txt") {
		f.Add(seed[0])
	}
	f.Add(strings.Repeat("1", 1<<16))
	f.Add("1.2.3.4\x00")
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := parseRange(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if !r.IsValid() || r.From().Is4() != r.To().Is4() || r.To().Less(r.From()) {
				t.Fatalf("%q: invalid range %v", s, r)
			}
			if r.From().Is4In6() || r.From().Zone() != "" {
				t.Fatalf("%q: mapped or zoned %v", s, r)
			}
		}
		if s == KeywordAny || s == KeywordPrivateRanges {
			return
		}
		r := rs[0]
		switch {
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil || p.Masked() != p || p.Addr() != r.From() {
				t.Fatalf("%q accepted as prefix %v; netip says %v, %v", s, r, p, err)
			}
		case strings.Contains(s, "-"):
			a, b, _ := strings.Cut(s, "-")
			x, err1 := netip.ParseAddr(a)
			y, err2 := netip.ParseAddr(b)
			if err1 != nil || err2 != nil || x != r.From() || y != r.To() {
				t.Fatalf("%q accepted as %v; netip says %v %v", s, r, err1, err2)
			}
		default:
			a, err := netip.ParseAddr(s)
			if err != nil || a != r.From() || a != r.To() {
				t.Fatalf("%q accepted as %v; netip says %v, %v", s, r, a, err)
			}
		}
	})
}
