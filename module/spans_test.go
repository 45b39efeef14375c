package ipallowlist

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"go4.org/netipx"
)

// randomRanges draws ranges from a small universe at the bottom or the top
// of the family's space, so that overlaps, adjacency and the 0 and
// all-ones edges (where next and prev overflow) all occur often.
func randomRanges(rng *rand.Rand, v6 bool) []netipx.IPRange {
	addr := func(x uint8) netip.Addr {
		if v6 {
			var b [16]byte
			if rng.IntN(2) == 0 {
				for i := range b {
					b[i] = 0xff
				}
			}
			b[15] = x
			return netip.AddrFrom16(b)
		}
		var b [4]byte
		if rng.IntN(2) == 0 {
			b = [4]byte{255, 255, 255, 0}
		}
		b[3] = x
		return netip.AddrFrom4(b)
	}
	var out []netipx.IPRange
	for range rng.IntN(6) {
		a, b := addr(uint8(rng.IntN(256))), addr(uint8(rng.IntN(256)))
		if b.Less(a) {
			a, b = b, a
		}
		out = append(out, netipx.IPRangeFrom(a, b))
	}
	return out
}

func spansOf(ranges []netipx.IPRange) *spanLists {
	var l spanLists
	for _, r := range ranges {
		l.add(r)
	}
	l.normalize()
	return &l
}

func rangesOf(s *netipx.IPSet) *spanLists {
	var l spanLists
	for _, r := range s.Ranges() {
		l.add(r)
	}
	return &l
}

func equalSpans(a, b *spanLists) bool {
	eq := func(x, y []span) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return eq(a.v4, b.v4) && eq(a.v6, b.v6)
}

// TestSpanAlgebraAgreesWithNetipx checks normalize, subtract and intersect
// against netipx's IPSetBuilder, the reference they replace.
func TestSpanAlgebraAgreesWithNetipx(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20_000 {
		v6 := i%2 == 1
		allowR, denyR := randomRanges(rng, v6), randomRanges(rng, v6)
		var ab, db netipx.IPSetBuilder
		for _, r := range allowR {
			ab.AddRange(r)
		}
		for _, r := range denyR {
			db.AddRange(r)
		}
		aSet, _ := ab.IPSet()
		dSet, _ := db.IPSet()
		var effB, excB netipx.IPSetBuilder
		effB.AddSet(aSet)
		effB.RemoveSet(dSet)
		excB.AddSet(aSet)
		excB.Intersect(dSet)
		wantEff, _ := effB.IPSet()
		wantExc, _ := excB.IPSet()

		a, d := spansOf(allowR), spansOf(denyR)
		if !equalSpans(a, rangesOf(aSet)) {
			t.Fatalf("normalize(%v) = %v, want %v", allowR, a, aSet.Ranges())
		}
		var eff, exc spanLists
		eff.v4, eff.v6 = subtractSpans(nil, a.v4, d.v4), subtractSpans(nil, a.v6, d.v6)
		exc.v4, exc.v6 = intersectSpans(nil, a.v4, d.v4), intersectSpans(nil, a.v6, d.v6)
		if !equalSpans(&eff, rangesOf(wantEff)) {
			t.Fatalf("%v minus %v = %v, want %v", allowR, denyR, eff, wantEff.Ranges())
		}
		if !equalSpans(&exc, rangesOf(wantExc)) {
			t.Fatalf("%v and %v = %v, want %v", allowR, denyR, exc, wantExc.Ranges())
		}
	}
}
