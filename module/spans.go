package ipallowlist

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"go4.org/netipx"
)

// Set algebra on the ranges of one policy, used while compiling. netipx's
// IPSetBuilder does the same, but allocates a dozen objects per set; a
// million tokens of two ranges each are compiled several times faster over
// these flat spans and reused scratch slices (BenchmarkProvisionTokensFile).

// span is an inclusive interval of one family's addresses. IPv4 addresses
// are kept in the low 32 bits; the families are kept in separate lists.
type span struct{ lo, hi u128 }

// v4 is an IPv4 span as the table stores it.
func (s span) v4() v4Interval { return v4Interval{uint32(s.lo.lo), uint32(s.hi.lo)} }

func addrKey(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (a u128) compare(b u128) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

func (a u128) next() (u128, bool) {
	if a.lo == ^uint64(0) {
		return u128{a.hi + 1, 0}, a.hi == ^uint64(0)
	}
	return u128{a.hi, a.lo + 1}, false
}

func (a u128) prev() u128 {
	if a.lo == 0 {
		return u128{a.hi - 1, ^uint64(0)}
	}
	return u128{a.hi, a.lo - 1}
}

// minus is a-b, for b at most a.
func (a u128) minus(b u128) u128 {
	d := u128{a.hi - b.hi, a.lo - b.lo}
	if a.lo < b.lo {
		d.hi--
	}
	return d
}

// spanLists collects a policy's ranges by family.
type spanLists struct{ v4, v6 []span }

func (l *spanLists) reset() { l.v4, l.v6 = l.v4[:0], l.v6[:0] }

func (l *spanLists) add(r netipx.IPRange) {
	s := span{addrKey(r.From()), addrKey(r.To())}
	if r.From().Is4() {
		l.v4 = append(l.v4, s)
	} else {
		l.v6 = append(l.v6, s)
	}
}

func (l *spanLists) normalize() {
	l.v4 = normalizeSpans(l.v4)
	l.v6 = normalizeSpans(l.v6)
}

// normalizeSpans sorts s and merges overlapping and adjacent spans, in place.
func normalizeSpans(s []span) []span {
	if len(s) < 2 {
		return s
	}
	if !slices.IsSortedFunc(s, func(a, b span) int { return a.lo.compare(b.lo) }) {
		slices.SortFunc(s, func(a, b span) int { return a.lo.compare(b.lo) })
	}
	out := s[:1]
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		after, overflow := last.hi.next()
		if overflow || !after.less(x.lo) { // overlaps or touches
			if last.hi.less(x.hi) {
				last.hi = x.hi
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// subtractSpans appends a minus d to dst; a and d are normalized.
func subtractSpans(dst, a, d []span) []span {
	j := 0
outer:
	for _, x := range a {
		lo := x.lo
		for j < len(d) && d[j].hi.less(lo) {
			j++
		}
		for k := j; k < len(d) && !x.hi.less(d[k].lo); k++ {
			if lo.less(d[k].lo) {
				dst = append(dst, span{lo, d[k].lo.prev()})
			}
			n, overflow := d[k].hi.next()
			if overflow || x.hi.less(n) {
				continue outer // the rest of x is denied
			}
			if lo.less(n) {
				lo = n
			}
		}
		dst = append(dst, span{lo, x.hi})
	}
	return dst
}

// intersectSpans appends a ∩ d to dst; a and d are normalized.
func intersectSpans(dst, a, d []span) []span {
	i, j := 0, 0
	for i < len(a) && j < len(d) {
		lo, hi := a[i].lo, a[i].hi
		if lo.less(d[j].lo) {
			lo = d[j].lo
		}
		if d[j].hi.less(hi) {
			hi = d[j].hi
		}
		if !hi.less(lo) {
			dst = append(dst, span{lo, hi})
		}
		if a[i].hi.less(d[j].hi) {
			i++
		} else {
			j++
		}
	}
	return dst
}
