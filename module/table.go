package ipallowlist

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"strings"

	"go4.org/netipx"
)

// The compiled table is what Provision builds and ServeHTTP reads. It holds
// no per-token pointers: policies, intervals and the digest index are flat
// arrays and a map of arrays, so the garbage collector has a handful of
// objects to scan however many tokens are configured.

type v4Interval struct{ lo, hi uint32 }

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

type v6Interval struct{ lo, hi u128 }

// setRef names a run of sorted, merged intervals in the table's shared arrays.
type setRef struct {
	v4Off, v4Len uint32
	v6Off, v6Len uint32
}

// policy is one token's (or the unlisted or missing-token) compiled rule.
// allowed holds allow minus deny; denied holds deny within allow, kept only to
// tell ip_denied from ip_not_allowed on the deny path.
type policy struct {
	labelOff, labelLen uint32
	allowed, denied    setRef
}

type table struct {
	index    map[[32]byte]uint32 // token digest -> index into policies
	policies []policy
	labels   string // every label, concatenated; policies slice into it
	v4       []v4Interval
	v6       []v6Interval

	unlisted     policy
	missingAllow bool

	ranges int // merged intervals, for the provision summary
}

func (t *table) label(p *policy) string {
	return t.labels[p.labelOff : p.labelOff+p.labelLen]
}

// contains reports whether a (unmapped, zone-free) is in the set.
func (t *table) contains(s setRef, a netip.Addr) bool {
	if a.Is4() {
		if s.v4Len == 0 {
			return false
		}
		b := a.As4()
		x := binary.BigEndian.Uint32(b[:])
		ivs := t.v4[s.v4Off : s.v4Off+s.v4Len]
		// first interval whose hi >= x
		i := sort.Search(len(ivs), func(i int) bool { return ivs[i].hi >= x })
		return i < len(ivs) && ivs[i].lo <= x
	}
	if s.v6Len == 0 {
		return false
	}
	b := a.As16()
	x := u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	ivs := t.v6[s.v6Off : s.v6Off+s.v6Len]
	i := sort.Search(len(ivs), func(i int) bool { return !ivs[i].hi.less(x) })
	return i < len(ivs) && !x.less(ivs[i].lo)
}

// tableBuilder accumulates policies into a table. Identical sets (the same
// ip_set used by many tokens, or "any") are stored once.
type tableBuilder struct {
	t      table
	labels strings.Builder
	sets   map[string]setRef
}

func newTableBuilder(tokens int) *tableBuilder {
	return &tableBuilder{
		t: table{
			index:    make(map[[32]byte]uint32, tokens),
			policies: make([]policy, 0, tokens),
		},
		sets: make(map[string]setRef),
	}
}

// addSet stores the merged ranges of s and returns where they are.
func (b *tableBuilder) addSet(s *netipx.IPSet) setRef {
	ranges := s.Ranges()
	var key strings.Builder
	for _, r := range ranges {
		key.WriteString(r.String())
		key.WriteByte(',')
	}
	if ref, ok := b.sets[key.String()]; ok {
		return ref
	}
	ref := setRef{v4Off: uint32(len(b.t.v4)), v6Off: uint32(len(b.t.v6))}
	for _, r := range ranges {
		from, to := r.From(), r.To()
		if from.Is4() {
			f, t := from.As4(), to.As4()
			b.t.v4 = append(b.t.v4, v4Interval{binary.BigEndian.Uint32(f[:]), binary.BigEndian.Uint32(t[:])})
			ref.v4Len++
		} else {
			f, t := from.As16(), to.As16()
			b.t.v6 = append(b.t.v6, v6Interval{
				u128{binary.BigEndian.Uint64(f[:8]), binary.BigEndian.Uint64(f[8:])},
				u128{binary.BigEndian.Uint64(t[:8]), binary.BigEndian.Uint64(t[8:])},
			})
			ref.v6Len++
		}
	}
	b.t.ranges += len(ranges)
	b.sets[key.String()] = ref
	return ref
}

// compilePolicy turns allow and deny sets into a policy labelled label.
func (b *tableBuilder) compilePolicy(label string, allow, deny *netipx.IPSet) (policy, error) {
	var eff, exc netipx.IPSetBuilder
	eff.AddSet(allow)
	eff.RemoveSet(deny)
	exc.AddSet(allow)
	exc.Intersect(deny)
	effSet, err := eff.IPSet()
	if err != nil {
		return policy{}, err
	}
	excSet, err := exc.IPSet()
	if err != nil {
		return policy{}, err
	}
	p := policy{
		labelOff: uint32(b.labels.Len()),
		labelLen: uint32(len(label)),
		allowed:  b.addSet(effSet),
		denied:   b.addSet(excSet),
	}
	b.labels.WriteString(label)
	return p, nil
}

// addToken appends a listed token's policy under its digest.
func (b *tableBuilder) addToken(digest [32]byte, p policy) {
	b.t.index[digest] = uint32(len(b.t.policies))
	b.t.policies = append(b.t.policies, p)
}

func (b *tableBuilder) finish() *table {
	b.t.labels = b.labels.String()
	b.sets = nil
	return &b.t
}
