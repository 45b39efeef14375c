package ipallowlist

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
)

func labelOf(t *testing.T, s string) *labelRef {
	t.Helper()
	blob := append([]byte{byte(len(s))}, s...)
	return (*labelRef)(&blob[0])
}

// TestObservedBoundedUnderChurn: a million distinct addresses for one token
// keep at most observedPerLabel entries, an address making one in eight of
// the token's requests survives the churn with its exact count, and memory
// does not grow with the addresses.
func TestObservedBoundedUnderChurn(t *testing.T) {
	o := &observedStore{labels: map[string]*labelSummary{}}
	label := labelOf(t, "partner-a")
	heavy := netip.MustParseAddr("203.0.113.7")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i))
		o.record(label, netip.AddrFrom4(b), false, int64(i))
		if i%7 == 0 {
			o.record(label, heavy, true, int64(i))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	got := o.snapshot("partner-a")["partner-a"]
	if len(got) > observedPerLabel {
		t.Fatalf("%d addresses kept, want at most %d", len(got), observedPerLabel)
	}
	if got[0].IP != heavy.String() || got[0].Allowed != 142858 {
		t.Errorf("most used: %+v, want %s with 142858 allowed", got[0], heavy)
	}
	for _, a := range got[1:] {
		if a.Allowed+a.Denied != 1 {
			t.Errorf("%+v: an address seen once reports %d uses", a, a.Allowed+a.Denied)
		}
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
		t.Errorf("heap grew by %d bytes over a million addresses", grew)
	}

	for i := range 2 * observedLabels {
		o.record(labelOf(t, fmt.Sprint("label-", i)), heavy, true, int64(2_000_000+i))
	}
	if n := len(o.labels); n > observedLabels {
		t.Errorf("%d labels kept, want at most %d", n, observedLabels)
	}
	if _, kept := o.labels["label-0"]; kept {
		t.Error("the label seen longest ago was kept over newer ones")
	}
}

// TestObservedSurvivesReload: the summary is shared through a UsagePool,
// so the new config's handler keeps what the old one recorded.
func TestObservedSurvivesReload(t *testing.T) {
	provisionIn := func() *Handler {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		h := decisionConfig()
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h
	}
	old := provisionIn()
	serve(old, newRequest("203.0.113.9:1", "/", bearer(tokA)...))
	serve(old, newRequest("198.51.100.1:1", "/", bearer(tokA)...))

	next := provisionIn() // the new config is provisioned before the old one stops
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	serve(next, newRequest("203.0.113.9:1", "/", bearer(tokA)...))
	got := next.observer.snapshot("a")["a"]
	if len(got) != 2 || got[0].IP != "203.0.113.9" || got[0].Allowed != 2 || got[1].IP != "198.51.100.1" || got[1].Denied != 1 {
		t.Errorf("after the reload: %+v, want 203.0.113.9 allowed twice and 198.51.100.1 denied once", got)
	}
	if err := next.Cleanup(); err != nil {
		t.Fatal(err)
	}
	// With no config left, the pool lets go of the summary.
	fresh := provisionIn()
	defer fresh.Cleanup()
	if n := len(fresh.observer.snapshot("")); n != 0 {
		t.Errorf("a new store after every config is gone holds %d labels", n)
	}
}

// TestObservedUnlisted: unlisted tokens are observed too, under a name no
// token can have, so a listed and an unknown token take the same path.
func TestObservedUnlisted(t *testing.T) {
	h, _ := provisioned(t, decisionConfig())
	serve(h, newRequest("10.9.9.9:1", "/", bearer("not-listed-1")...))
	serve(h, newRequest("10.9.9.9:1", "/", bearer("not-listed-2")...))
	serve(h, newRequest("10.9.9.9:1", "/")) // no token: nothing to observe
	got := h.observer.snapshot(unlistedObservedLabel)[unlistedObservedLabel]
	if len(got) != 1 || got[0].IP != "10.9.9.9" || got[0].Allowed != 2 || got[0].Denied != 0 {
		t.Errorf("unlisted observed: %+v, want 10.9.9.9 allowed twice (the unlisted policy allows 10.0.0.0/8)", got)
	}
	if CheckLabel(unlistedObservedLabel) == nil {
		t.Error("a token could be labelled like the unlisted entry")
	}
	res := serve(h, newRequest("10.9.9.9:1", "/", bearer("not-listed-1")...))
	if res.placeholder(placeholderLabel) != "" {
		t.Error("the unlisted entry's name leaked into the token_label placeholder")
	}
}

// TestObservedKeysDoNotPinTables: the store outlives the tables whose labels
// it is given, so its keys must be copies, not views into a table's blob.
func TestObservedKeysDoNotPinTables(t *testing.T) {
	o := &observedStore{labels: map[string]*labelSummary{}}
	blob := append([]byte{9}, "partner-a"...)
	o.record((*labelRef)(&blob[0]), netip.MustParseAddr("203.0.113.7"), true, 1)
	for key := range o.labels {
		start := uintptr(unsafe.Pointer(unsafe.StringData(key)))
		lo := uintptr(unsafe.Pointer(&blob[0]))
		if start >= lo && start < lo+uintptr(len(blob)) {
			t.Error("the observed key points into the table's label blob")
		}
	}
}
