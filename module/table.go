package ipallowlist

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"unsafe"

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
	label           uint32 // offset of the label's entry in table.labels
	allowed, denied setRef
}

type table struct {
	index    map[[32]byte]uint32 // token digest -> index into policies
	policies []policy
	labels   []byte // every label as a length byte then its bytes; entry 0 is ""
	v4       []v4Interval
	v6       []v6Interval

	unlisted     policy
	missingAllow bool

	ranges int // merged intervals, for the provision summary
}

// label returns p's label; nil (no listed token) has the empty label.
func (t *table) label(p *policy) *labelRef {
	if p == nil {
		return (*labelRef)(&t.labels[0])
	}
	return (*labelRef)(&t.labels[p.label])
}

// labelRef is a label's entry in a table's labels: a length byte followed by
// that many bytes. A pointer to it is a fmt.Stringer that converts to an
// interface (a placeholder value, a log field) without allocating, and the
// labels stay one pointer-free array however many tokens there are.
type labelRef byte

func (l *labelRef) String() string {
	n := int(*l)
	if n == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(l), 1)), n)
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
	t    table
	sets map[string]setRef
}

func newTableBuilder(tokens int) *tableBuilder {
	return &tableBuilder{
		t: table{
			index:    make(map[[32]byte]uint32, tokens),
			policies: make([]policy, 0, tokens),
			labels:   []byte{0}, // the empty label
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
	p := policy{allowed: b.addSet(effSet), denied: b.addSet(excSet)}
	if label != "" {
		if len(label) > 255 {
			return policy{}, fmt.Errorf("label %q is longer than 255 bytes", label)
		}
		p.label = uint32(len(b.t.labels))
		b.t.labels = append(b.t.labels, byte(len(label)))
		b.t.labels = append(b.t.labels, label...)
	}
	return p, nil
}

// addToken appends a listed token's policy under its digest.
func (b *tableBuilder) addToken(digest [32]byte, p policy) {
	b.t.index[digest] = uint32(len(b.t.policies))
	b.t.policies = append(b.t.policies, p)
}

func (b *tableBuilder) finish() *table {
	b.sets = nil
	return &b.t
}
