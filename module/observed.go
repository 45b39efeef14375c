package ipallowlist

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Observed addresses: per token label, a bounded summary of the client
// addresses the token was used from, allowed and denied, for operators to
// learn a token's real sources before restricting it (GET
// /ip-allowlist/observed). It lives in a caddy.UsagePool, so it survives
// config reloads: the new config takes a reference before the old one lets
// go of its own.

const (
	// observedPerLabel is how many addresses are kept per label. When a new
	// address comes and all are taken, it replaces the least-ranked one and
	// inherits its rank (the Space-Saving algorithm): an address that makes
	// more than 1/observedPerLabel of a token's requests is never lost to a
	// flood of addresses used once. Reported counts are exact since the
	// address entered the summary; the inherited rank is not reported.
	observedPerLabel = 16
	// observedLabels bounds the labels kept; past it, the label seen least
	// recently is dropped.
	observedLabels = 10_000
)

// observation is one address's counts. Pointer-free: the address is kept as
// 16 bytes, not a netip.Addr.
type observation struct {
	addr            [16]byte
	is4             bool
	allowed, denied uint64
	inherited       uint64 // rank taken over from the entry it replaced
	lastSeen        int64  // unix nanoseconds
}

func (o *observation) address() netip.Addr {
	a := netip.AddrFrom16(o.addr)
	if o.is4 {
		return a.Unmap()
	}
	return a
}

// rank orders entries for eviction: an upper bound on the address's uses.
func (o *observation) rank() uint64 { return o.allowed + o.denied + o.inherited }

type labelSummary struct {
	n        int
	entries  [observedPerLabel]observation
	lastSeen int64
}

// observer holds the summaries of every label.
type observedStore struct {
	mu     sync.Mutex
	labels map[string]*labelSummary
}

var observers = caddy.NewUsagePool()

const observerKey = "ip_allowlist.observed"

func loadObserver() (*observedStore, error) {
	v, _, err := observers.LoadOrNew(observerKey, func() (caddy.Destructor, error) {
		return &observedStore{labels: map[string]*labelSummary{}}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*observedStore), nil
}

// Destruct is called when no config uses the observer any more.
func (*observedStore) Destruct() error { return nil }

// record counts one request of label from addr. It allocates only when a
// label is seen for the first time.
func (o *observedStore) record(label *labelRef, addr netip.Addr, allowed bool, now int64) {
	if o == nil {
		return
	}
	key := addr.As16()
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.labels[label.String()]
	if !ok {
		if len(o.labels) >= observedLabels {
			o.evictOldestLabel()
		}
		s = &labelSummary{}
		// A copy: label.String() points into a compiled table, which the
		// store outlives; as a key it would keep that table's labels alive
		// after every reload.
		o.labels[strings.Clone(label.String())] = s
	}
	s.lastSeen = now
	e := s.find(key)
	if e == nil {
		e = s.take(key, addr.Is4())
	}
	if allowed {
		e.allowed++
	} else {
		e.denied++
	}
	e.lastSeen = now
}

func (s *labelSummary) find(key [16]byte) *observation {
	for i := range s.n {
		if s.entries[i].addr == key {
			return &s.entries[i]
		}
	}
	return nil
}

// take makes room for key: a free entry, or the least-ranked one, whose
// rank the new address inherits.
func (s *labelSummary) take(key [16]byte, is4 bool) *observation {
	if s.n < observedPerLabel {
		e := &s.entries[s.n]
		s.n++
		*e = observation{addr: key, is4: is4}
		return e
	}
	min := &s.entries[0]
	for i := 1; i < s.n; i++ {
		if s.entries[i].rank() < min.rank() {
			min = &s.entries[i]
		}
	}
	*min = observation{addr: key, is4: is4, inherited: min.rank()}
	return min
}

func (o *observedStore) evictOldestLabel() {
	var oldest string
	var at int64
	for l, s := range o.labels {
		if oldest == "" || s.lastSeen < at {
			oldest, at = l, s.lastSeen
		}
	}
	delete(o.labels, oldest)
}

// ObservedAddress is one address in the admin API's answer.
type ObservedAddress struct {
	IP       string    `json:"ip"`
	Allowed  uint64    `json:"allowed"`
	Denied   uint64    `json:"denied"`
	LastSeen time.Time `json:"last_seen"`
}

// snapshot returns the summary of label, or of every label when label is
// empty, most used addresses first.
func (o *observedStore) snapshot(label string) map[string][]ObservedAddress {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][]ObservedAddress{}
	for l, s := range o.labels {
		if label != "" && l != label {
			continue
		}
		list := make([]ObservedAddress, 0, s.n)
		for i := range s.n {
			e := &s.entries[i]
			list = append(list, ObservedAddress{e.address().String(), e.allowed, e.denied, time.Unix(0, e.lastSeen).UTC()})
		}
		slices.SortFunc(list, func(a, b ObservedAddress) int {
			if d := int64(b.Allowed+b.Denied) - int64(a.Allowed+a.Denied); d != 0 {
				return int(d)
			}
			return compareIP(a.IP, b.IP)
		})
		out[l] = list
	}
	return out
}

func compareIP(a, b string) int {
	x, _ := netip.ParseAddr(a)
	y, _ := netip.ParseAddr(b)
	return x.Compare(y)
}
