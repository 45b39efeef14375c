package ipallowlist

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// The recent refusals: the last refusalRing requests ip_allowlist answered
// 401, the same events as its "request denied" log lines, kept in memory
// for the console's "recent refusals". One ring per process, shared by
// every handler and every config, so it survives reloads. A refusal is
// put in a slot chosen by one atomic increment, so the deny path takes no
// lock, and an attacker's flood of refusals costs a bounded ring, never
// more memory.

// refusalRing is how many refusals are kept.
const refusalRing = 1024

// refusal is one refused request.
type refusal struct {
	Time   time.Time `json:"time"`
	Label  string    `json:"label"` // "" for an unlisted token or none
	IP     string    `json:"ip"`
	Reason string    `json:"reason"`
	// store is the token store of the handler that refused it (nil for
	// none): a console shows its own store's handlers' refusals only, not
	// those of another site's token that has the same label.
	store *fileStore
}

var refusals struct {
	next  atomic.Uint64
	slots [refusalRing]atomic.Pointer[refusal]
}

// recordRefusal keeps one refusal. label points into a table, which a
// later build replaces: it is copied.
func recordRefusal(store *fileStore, label *labelRef, addr netip.Addr, clientIP string, why reason) {
	ip := clientIP
	if addr.IsValid() {
		ip = addr.String()
	}
	r := &refusal{Time: time.Now().UTC(), Label: strings.Clone(label.String()), IP: ip, Reason: why.String(), store: store}
	i := refusals.next.Add(1) - 1
	refusals.slots[i%refusalRing].Store(r)
}

// forgetRefusals drops the refusals of label in store: a new entry under
// a label that was removed is a new token, which must not show the old
// one's refusals to its new owner.
func forgetRefusals(store *fileStore, label string) {
	for i := range refusals.slots {
		if r := refusals.slots[i].Load(); r != nil && r.store == store && r.Label == label {
			refusals.slots[i].CompareAndSwap(r, nil)
		}
	}
}

// recentRefusals returns up to limit refusals that keep says to, newest
// first.
func recentRefusals(limit int, keep func(*refusal) bool) []refusal {
	out := []refusal{}
	n := refusals.next.Load()
	for i := uint64(0); i < refusalRing && i < n && len(out) < limit; i++ {
		r := refusals.slots[(n-1-i)%refusalRing].Load()
		if r != nil && keep(r) {
			out = append(out, *r)
		}
	}
	return out
}
