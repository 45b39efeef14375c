package ipallowlist

import (
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
		"policies element": reflect.TypeOf(tb.policies).Elem(),
		"labels element":   reflect.TypeOf(tb.labels).Elem(),
		"v4 element":       reflect.TypeOf(tb.v4).Elem(),
		"v6 element":       reflect.TypeOf(tb.v6).Elem(),
		"index key":        reflect.TypeOf(tb.index).Key(),
		"index value":      reflect.TypeOf(tb.index).Elem(),
	} {
		if hasPointers(typ) {
			t.Errorf("%s (%v) holds pointers", name, typ)
		}
	}
}
