package ipallowlist

import (
	"hash/maphash"
	"reflect"
	"testing"
)

// hasPointers reports whether values of t hold pointers the GC must scan.
func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Array:
		return hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	}
	return true
}

// TestTablePerTokenDataIsPointerFree pins the design that keeps a million
// tokens cheap for the garbage collector: everything stored per token or
// per range is a pointer-free element of a few large arrays, or a
// pointer-free map entry.
func TestTablePerTokenDataIsPointerFree(t *testing.T) {
	var tb table
	for name, typ := range map[string]reflect.Type{
		"policies element":  reflect.TypeOf(tb.policies).Elem(),
		"labels element":    reflect.TypeOf(tb.labels).Elem(),
		"v4 element":        reflect.TypeOf(tb.v4).Elem(),
		"v6 element":        reflect.TypeOf(tb.v6).Elem(),
		"index key":         reflect.TypeOf(tb.index).Key(),
		"index value":       reflect.TypeOf(tb.index).Elem(),
		"label index key":   reflect.TypeOf(tb.byLabel.byHash).Key(),
		"label index value": reflect.TypeOf(tb.byLabel.byHash).Elem(),
		"label collisions":  reflect.TypeOf(tb.byLabel.collide).Elem(),
	} {
		if hasPointers(typ) {
			t.Errorf("%s (%v) holds pointers", name, typ)
		}
	}
}

// TestLabelIndexFindsEveryLabel: a label is found by its hash, and one
// whose hash another label took is found among the collisions; a label
// that only shares a hash is not taken for the other.
func TestLabelIndexFindsEveryLabel(t *testing.T) {
	b := newTableBuilder(3)
	add := func(label string) uint32 {
		p, err := b.addPolicy(label, &spanLists{}, &spanLists{})
		if err != nil {
			t.Fatal(err)
		}
		i := b.addUnindexed(p)
		b.t.byLabel.add(label, i)
		return i
	}
	a := add("partner-a")
	// Make "partner-b" collide with "partner-a": its hash is taken.
	b.t.byLabel.byHash[maphash.String(b.t.byLabel.seed, "partner-b")] = a
	bIdx := add("partner-b")
	c := add("partner-c")
	tb := b.finish()
	for label, want := range map[string]uint32{"partner-a": a, "partner-b": bIdx, "partner-c": c} {
		if got, ok := tb.labelled(label); !ok || got != want {
			t.Errorf("labelled(%q) = %d, %v; want %d", label, got, ok, want)
		}
	}
	if len(tb.byLabel.collide) != 1 {
		t.Errorf("%d collisions recorded, want 1", len(tb.byLabel.collide))
	}
	if _, ok := tb.labelled("partner-d"); ok {
		t.Error("an unknown label was found")
	}
}
