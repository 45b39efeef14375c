package ipallowlist

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go4.org/netipx"
)

// Range keywords accepted wherever a range is.
const (
	KeywordAny           = "any"
	KeywordPrivateRanges = "private_ranges"
	// KeywordNone is accepted only by unlisted_tokens in the Caddyfile.
	KeywordNone = "none"
)

// maxRangeLen bounds the text of one range entry; the longest valid entry
// (two full IPv6 addresses with a dash) is well under it.
const maxRangeLen = 128

var (
	allIPv4 = netipx.IPRangeFrom(netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255}))
	allIPv6 = netipx.IPRangeFrom(netip.IPv6Unspecified(), netip.AddrFrom16([16]byte{
		255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255}))
)

// parseRange parses one range entry that is not a set name: an address, a
// CIDR prefix, an inclusive start-end range of one family, or one of the
// keywords any and private_ranges. It is stricter than net/netip where netip
// is lenient in ways that would surprise an allowlist: zones, IPv4-mapped
// IPv6 addresses and prefixes with host bits set are refused, each with an
// error that says what to write instead.
func parseRange(s string) ([]netipx.IPRange, error) {
	return appendRange(nil, s)
}

// appendRange is parseRange appending to dst, so compiling a million tokens
// does not allocate a slice per entry.
func appendRange(dst []netipx.IPRange, s string) ([]netipx.IPRange, error) {
	switch {
	case s == "":
		return nil, errors.New("empty range")
	case len(s) > maxRangeLen:
		return nil, fmt.Errorf("range is %d characters long; no address, prefix or range is longer than %d", len(s), maxRangeLen)
	case s == KeywordAny:
		return append(dst, allIPv4, allIPv6), nil
	case s == KeywordPrivateRanges:
		return append(dst, privateRanges...), nil
	case strings.ContainsAny(s, ", \t"):
		return nil, listedTogether(s)
	case strings.Contains(s, "/"):
		p, err := parsePrefix(s)
		if err != nil {
			return nil, err
		}
		return append(dst, netipx.RangeOfPrefix(p)), nil
	case strings.Contains(s, "-"):
		r, err := parseStartEnd(s)
		if err != nil {
			return nil, err
		}
		return append(dst, r), nil
	default:
		a, err := parseAddr(s)
		if err != nil {
			return nil, err
		}
		return append(dst, netipx.IPRangeFrom(a, a)), nil
	}
}

// parseAddr parses a single address, refusing zones and IPv4-mapped IPv6.
func parseAddr(s string) (netip.Addr, error) {
	if strings.Contains(s, "%") {
		return netip.Addr{}, fmt.Errorf("address %q has a zone; zones are not allowed, write the address without %%zone", s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an IP address, CIDR prefix or start-end range: %w", unquoteNetipErr(err))
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address; client addresses are unmapped before matching, write %s", s, a.Unmap())
	}
	return a, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("prefix %q has a zone; zones are not allowed", s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR prefix: %w", unquoteNetipErr(err))
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix; client addresses are unmapped before matching, write the IPv4 prefix instead", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("prefix %q has host bits set; did you mean %s (the whole network) or %s (the one address)?", s, m, p.Addr())
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("%s admits every %s address; write any (every IPv4 and IPv6 address) if that is meant", s, map[bool]string{true: "IPv4", false: "IPv6"}[p.Addr().Is4()])
	}
	return p, nil
}

func parseStartEnd(s string) (netipx.IPRange, error) {
	from, to, _ := strings.Cut(s, "-")
	if from == "" || to == "" {
		return netipx.IPRange{}, errors.New("a range needs both ends, written without spaces, such as 192.0.2.10-192.0.2.20")
	}
	a, err := parseAddr(from)
	if err != nil {
		return netipx.IPRange{}, fmt.Errorf("start of range %q: %w", s, err)
	}
	b, err := parseAddr(to)
	if err != nil {
		return netipx.IPRange{}, fmt.Errorf("end of range %q: %w", s, err)
	}
	if a.Is4() != b.Is4() {
		return netipx.IPRange{}, fmt.Errorf("range %q mixes IPv4 and IPv6; both ends must be of one family", s)
	}
	if b.Less(a) {
		return netipx.IPRange{}, fmt.Errorf("range %q is reversed: its start is after its end; did you mean %s-%s?", s, b, a)
	}
	return netipx.IPRangeFrom(a, b), nil
}

// privateRanges is Caddy's private_ranges shorthand, as remote_ip expands it.
// Caddy writes loopback as 127.0.0.1/8, which it tolerates; we mask it.
var privateRanges = func() []netipx.IPRange {
	cidrs := caddyhttp.PrivateRangesCIDR()
	out := make([]netipx.IPRange, 0, len(cidrs))
	for _, c := range cidrs {
		if !strings.Contains(c, "/") {
			a := netip.MustParseAddr(c)
			out = append(out, netipx.IPRangeFrom(a, a))
			continue
		}
		out = append(out, netipx.RangeOfPrefix(netip.MustParsePrefix(c).Masked()))
	}
	return out
}()

// isSetName reports whether s has the shape of an ip_set name: a letter or
// underscore, then letters, digits, underscores and dashes. No address,
// prefix or range has that shape, so a name never shadows an address.
func isSetName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	c := s[0]
	if !(c == '_' || (c|0x20) >= 'a' && (c|0x20) <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || c == '-':
		case c >= '0' && c <= '9':
		case (c|0x20) >= 'a' && (c|0x20) <= 'z':
		default:
			return false
		}
	}
	// Names like "fe80" or "abcd-ef01" look like names but could be meant as
	// IPv6 fragments; they are still names, since no full address lacks ':'
	// and '.'.
	return s != KeywordAny && s != KeywordPrivateRanges && s != KeywordNone
}

// unquoteNetipErr keeps netip's explanation but drops its repetition of the
// input, which our own message already names.
func unquoteNetipErr(err error) error {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return errors.New(msg[i+2:])
	}
	return err
}

// listedTogether explains an entry with commas or white space in it: two
// entries written as one, or a range written with spaces.
func listedTogether(s string) error {
	if !strings.Contains(s, ",") {
		joined := strings.Join(strings.Fields(s), "")
		if _, err := parseStartEnd(joined); err == nil && strings.Contains(joined, "-") {
			return fmt.Errorf("a range is written without spaces: %s", joined)
		}
		return errors.New("an entry holds no white space: write each address, prefix or range as an entry of its own")
	}
	return errors.New("an entry holds one address, prefix or range: write each as an entry of its own, separated by spaces in the Caddyfile and as separate strings in JSON, not by commas")
}
