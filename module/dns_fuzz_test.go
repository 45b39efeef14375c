package ipallowlist

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzDNSEntry checks that a dns: entry parseDNSEntry accepts is one
// canonical, absolute DNS name that is no address: the entry is the name
// written back, which the DNS library takes as a name, in lower case, with
// no trailing dot. Seeds: testdata/fuzz/dns_names.txt.
func FuzzDNSEntry(f *testing.F) {
	for _, seed := range seedLines(f, "dns_names.txt") {
		f.Add(seed[0])
	}
	f.Add("dns:" + strings.Repeat("a.", 127) + "a")
	f.Fuzz(func(t *testing.T, entry string) {
		name, err := parseDNSEntry(entry)
		if err != nil {
			if strings.Contains(err.Error(), "\x00") {
				t.Fatalf("%q: the error holds a NUL: %v", entry, err)
			}
			return
		}
		switch {
		case DNSPrefix+name != entry:
			t.Fatalf("%q accepted as %q: not the entry written back", entry, name)
		case strings.ToLower(name) != name || strings.HasSuffix(name, ".") || len(name) > 253 || !strings.Contains(name, "."):
			t.Fatalf("%q accepted as %q: not canonical", entry, name)
		}
		if _, ok := dns.IsDomainName(name); !ok {
			t.Fatalf("%q accepted, but the DNS library takes %q for no name", entry, name)
		}
		if _, err := netip.ParseAddr(name); err == nil {
			t.Fatalf("%q accepted, but %q is an address", entry, name)
		}
		if looksLikeRange(name) {
			t.Fatalf("%q accepted, but %q is a range", entry, name)
		}
	})
}

// FuzzDNSAnswer feeds chase whatever a DNS server might send: it must not
// panic, and the addresses it takes are of the family asked, sorted,
// unique, unmapped, and client addresses.
func FuzzDNSAnswer(f *testing.F) {
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m := new(dns.Msg)
		m.SetQuestion("api.test.", qtype)
		m.Answer = []dns.RR{
			&dns.CNAME{Hdr: dns.RR_Header{Name: "api.test.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "t.test."},
			&dns.A{Hdr: dns.RR_Header{Name: "t.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: []byte{192, 0, 2, 1}},
			&dns.A{Hdr: dns.RR_Header{Name: "T.TEST.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: []byte{0, 0, 0, 0}},
			&dns.AAAA{Hdr: dns.RR_Header{Name: "t.test.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 30},
				AAAA: netip.MustParseAddr("::ffff:192.0.2.2").AsSlice()},
			&dns.AAAA{Hdr: dns.RR_Header{Name: "t.test.", Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 30},
				AAAA: netip.MustParseAddr("2001:db8::1").AsSlice()},
		}
		packed, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(packed, qtype == dns.TypeA)
	}
	f.Fuzz(func(t *testing.T, packed []byte, v4 bool) {
		r := new(dns.Msg)
		if r.Unpack(packed) != nil {
			return
		}
		qtype := dns.TypeAAAA
		if v4 {
			qtype = dns.TypeA
		}
		addrs, next, ttl := chase(r, "api.test.", qtype)
		if ttl < 0 || ttl > dnsMaxTTL {
			t.Fatalf("ttl %v", ttl)
		}
		if len(addrs) > 0 && next != "" {
			t.Fatalf("addresses %v and a chain to follow, %q", addrs, next)
		}
		if !slices.IsSortedFunc(addrs, netip.Addr.Compare) || len(slices.Compact(slices.Clone(addrs))) != len(addrs) {
			t.Fatalf("addresses not sorted and unique: %v", addrs)
		}
		for _, a := range addrs {
			if a.Is4() != v4 || a.Is4In6() || !clientAddress(a) || a.Zone() != "" {
				t.Fatalf("address %v taken for a question of type %d", a, qtype)
			}
		}
	})
}
