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

// TestMistypedEntryErrors pins the whole text of the errors for entries
// written the way people mistype lists and ranges: the error says what to
// write, and an entry hidden in case it is a token shows in no part.
func TestMistypedEntryErrors(t *testing.T) {
	const hiddenComma = "k7Qz9.Xw2,Lp4Rt8.Vn6Bm"
	tests := []struct {
		name  string
		allow []string
		want  string
	}{
		{"range with spaces, split into three entries",
			[]string{"203.0.113.0", "-", "203.0.113.50"},
			`token "partner-a": allow[1] "-": a range is written without spaces: 203.0.113.0-203.0.113.50`},
		{"range with a space after the dash",
			[]string{"203.0.113.0-", "203.0.113.50"},
			`token "partner-a": allow[0] "203.0.113.0-": a range is written without spaces: 203.0.113.0-203.0.113.50`},
		{"range with spaces in one entry",
			[]string{"203.0.113.0 - 203.0.113.50"},
			`token "partner-a": allow[0] "203.0.113.0 - 203.0.113.50": a range is written without spaces: 203.0.113.0-203.0.113.50`},
		{"a lone dash",
			[]string{"-"},
			`token "partner-a": allow[0] "-": a range needs both ends, written without spaces, such as 192.0.2.10-192.0.2.20`},
		{"two addresses with a comma",
			[]string{"203.0.113.7,198.51.100.9"},
			`token "partner-a": allow[0] "203.0.113.7,198.51.100.9": an entry holds one address, prefix or range: write each as an entry of its own, separated by spaces in the Caddyfile and as separate strings in JSON, not by commas`},
		{"a token-like entry with a comma is not shown, not even in part",
			[]string{hiddenComma},
			`token "partner-a": allow[0] (an entry of 22 characters that is no address, not shown in case it is a token): an entry holds one address, prefix or range: write each as an entry of its own, separated by spaces in the Caddyfile and as separate strings in JSON, not by commas`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := provisionErr(&Handler{Tokens: tok(tc.allow...)})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n  %v\nwant:\n  %s", err, tc.want)
			}
		})
	}
}

// TestHiddenEntryShowsNoPart: whatever the parser's words, an entry that
// is not shown appears in the error in no part of four bytes or more.
func TestHiddenEntryShowsNoPart(t *testing.T) {
	for _, entry := range []string{
		"k7Qz9.Xw2,Lp4Rt8.Vn6Bm",
		"1.2.3.4xsk_live_abc123XYZ",
		"203.0.113.5,9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"203.0.113.5 9f86d081884c7d659a2feaa0c55ad015",
		"fe80::1%9f86d081884c7d659a2feaa0c55ad015",
		"a:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
		"203.0.113.7,sk_live_abc123XYZ",
		"2001:db8::1g_s3cr3tQ_ABCDEFGH",
		"sk_live.51HqLq2e:Zx9",
		"abcd.ef01.2345.6789x",
		"ghp_AbCdEfGhIjKl-MnOpQrStUv",
		"1.2.3.4.5.6.7.8.9.10.11.12/xyz",
		"a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8/24",
	} {
		err := provisionErr(&Handler{Tokens: tok(entry)})
		if err == nil {
			t.Fatalf("%q accepted", entry)
		}
		msg := strings.TrimPrefix(err.Error(), `token "partner-a": `)
		if !strings.Contains(msg, "not shown in case it is a token") {
			t.Fatalf("%q is shown: %s", entry, msg)
		}
		for n := 0; n+4 <= len(entry); n++ {
			if part := entry[n : n+4]; strings.Contains(msg, part) {
				t.Errorf("%q: the error shows %q of it: %s", entry, part, msg)
				break
			}
		}
	}
}
