package ipallowlist

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// LeakAlert is the leak signal: a listed token refused from many distinct
// addresses outside its list within a short time is most likely used by
// someone it was not given to.
type LeakAlert struct {
	// How many distinct addresses outside the token's list, refused (or,
	// in report mode, that would be) within window, raise the alert: 2 to
	// 1000.
	Addresses int `json:"addresses"`
	// The window the addresses are counted in, from the first refusal:
	// 1s to 24h.
	Window caddy.Duration `json:"window"`
	// Also suspend the token through the token store, when it is a store
	// entry; resume undoes it. A config token is alerted, not suspended.
	Suspend bool `json:"suspend,omitempty"`
}

// Bounds on leak_alert, and on what its tracker keeps.
const (
	leakMaxAddresses = 1000
	leakMinWindow    = time.Second
	leakMaxWindow    = 24 * time.Hour
	// leakShards tokens' states are kept in this many shards, each with a
	// lock of its own: no lock is shared by every request.
	leakShards = 64
	// leakMaxTokens bounds the tokens tracked at once; past it, a shard
	// drops its state with the oldest window for a new token's.
	leakMaxTokens = 100_000
	// leakSample is how many of the addresses an alert names.
	leakSample = 5
)

// CheckLeakAlert refuses a leak_alert out of bounds.
func CheckLeakAlert(a *LeakAlert) error {
	if a == nil {
		return nil
	}
	switch w := time.Duration(a.Window); {
	case a.Addresses < 2 || a.Addresses > leakMaxAddresses:
		return fmt.Errorf("leak_alert: addresses %d: want 2 to %d distinct addresses", a.Addresses, leakMaxAddresses)
	case w < leakMinWindow || w > leakMaxWindow:
		return fmt.Errorf("leak_alert: window %s: want 1s to 24h", w)
	}
	return nil
}

// leakTracker counts, per listed token, the distinct addresses outside
// its list it was refused from in the current window. Its memory is
// bounded whatever is sent: at most leakMaxTokens states, each holding at
// most Addresses addresses (16 bytes each) and a handful of counters.
type leakTracker struct {
	addresses int
	window    int64 // nanoseconds
	seed      maphash.Seed
	shards    [leakShards]leakShard
	// alert is called, outside every lock, once per token and window.
	alert func(leakEvent)
}

type leakShard struct {
	mu     sync.Mutex
	tokens map[string]*leakState
}

// leakState is one token's window.
type leakState struct {
	start    int64 // the window's first refusal, Unix nanoseconds
	refusals uint64
	addrs    [][16]byte // distinct, at most addresses of them
	alerted  bool       // in this window
}

// leakEvent is one alert.
type leakEvent struct {
	Label     string    `json:"label"`
	Time      time.Time `json:"time"`
	Distinct  int       `json:"distinct_addresses"`
	Refusals  uint64    `json:"refusals"`
	Addresses []string  `json:"addresses"` // a few of them
	Window    string    `json:"window"`
	Suspended bool      `json:"suspended,omitempty"`
	// report: the refusal that raised it was let through, in report
	// mode (the request's decision.report).
	report bool
}

func newLeakTracker(a *LeakAlert, alert func(leakEvent)) *leakTracker {
	t := &leakTracker{addresses: a.Addresses, window: int64(a.Window), seed: maphash.MakeSeed(), alert: alert}
	for i := range t.shards {
		t.shards[i].tokens = map[string]*leakState{}
	}
	return t
}

// refused records one refusal of label's token from addr, outside its
// list, at now; report says it was let through, in report mode.
func (t *leakTracker) refused(label *labelRef, addr netip.Addr, report bool, now int64) {
	name := label.String()
	sh := &t.shards[maphash.String(t.seed, name)%leakShards]
	key := addr.As16()
	var ev *leakEvent
	sh.mu.Lock()
	s := sh.tokens[name]
	if s == nil {
		if len(sh.tokens) >= leakMaxTokens/leakShards {
			sh.evictOldest()
		}
		s = &leakState{start: now}
		sh.tokens[strings.Clone(name)] = s
	}
	if now-s.start >= t.window {
		*s = leakState{start: now, addrs: s.addrs[:0]}
	}
	s.refusals++
	if !s.alerted {
		seen := false
		for i := range s.addrs {
			if s.addrs[i] == key {
				seen = true
				break
			}
		}
		if !seen {
			s.addrs = append(s.addrs, key)
		}
		if len(s.addrs) >= t.addresses {
			s.alerted = true
			ev = &leakEvent{Label: strings.Clone(name), Time: time.Unix(0, now).UTC(), Distinct: len(s.addrs),
				Refusals: s.refusals, Window: time.Duration(t.window).String(), report: report}
			for _, a := range s.addrs[:min(leakSample, len(s.addrs))] {
				ev.Addresses = append(ev.Addresses, netip.AddrFrom16(a).Unmap().String())
			}
			s.addrs = nil // alerted: the window needs them no more
		}
	}
	sh.mu.Unlock()
	if ev != nil {
		t.alert(*ev)
	}
}

// leakEvictSample is how many states a full shard looks at to choose
// the one to drop: a bounded cost, not a scan of the shard.
const leakEvictSample = 8

// evictOldest drops, of a few states (map order is random), the one
// whose window began first; sh.mu is held.
func (sh *leakShard) evictOldest() {
	var oldest string
	n := 0
	var at int64
	for name, s := range sh.tokens {
		if n == 0 || s.start < at {
			oldest, at = name, s.start
		}
		if n++; n == leakEvictSample {
			break
		}
	}
	delete(sh.tokens, oldest)
}

// forget drops label's state: a new token under the label, or one
// resumed, is counted afresh. A nil tracker forgets nothing.
func (t *leakTracker) forget(label string) {
	if t == nil {
		return
	}
	sh := &t.shards[maphash.String(t.seed, label)%leakShards]
	sh.mu.Lock()
	delete(sh.tokens, label)
	sh.mu.Unlock()
}

// leakAlerts holds the latest alert per store and label, for the
// console's token page. Bounded as the tokens are: one per label alerted.
var leakAlerts sync.Map // leakKey -> leakEvent

type leakKey struct {
	store *fileStore
	label string
}

// latestLeak is label's latest alert in store, if any.
func latestLeak(store *fileStore, label string) (leakEvent, bool) {
	v, ok := leakAlerts.Load(leakKey{store, label})
	if !ok {
		return leakEvent{}, false
	}
	return v.(leakEvent), true
}

// onLeak is h's alert: a WARN line, the metric, the console's record, and
// with suspend a store token suspended through the store.
func (h *Handler) onLeak(ev leakEvent) {
	h.metrics.leak()
	store := h.fileStore // read once: the goroutine below outlives the request
	suspend := h.LeakAlert.Suspend && store != nil && !ev.report && h.isStoreToken(ev.Label)
	fields := []zap.Field{
		zap.String("token_label", ev.Label),
		zap.Int("distinct_addresses", ev.Distinct),
		zap.Uint64("refusals", ev.Refusals),
		zap.Strings("addresses", ev.Addresses),
		zap.String("window", ev.Window),
	}
	switch {
	case suspend:
		fields = append(fields, zap.String("action", "suspending the token through the token store; resume undoes it"))
	case h.LeakAlert.Suspend && ev.report:
		fields = append(fields, zap.String("action", "alerted only: the token is in report mode, where a suspension would refuse nothing, or end the learning of its addresses"))
	case h.LeakAlert.Suspend:
		fields = append(fields, zap.String("action", "alerted only: the token is not a token store entry, which suspend can change"))
	}
	h.logger.Warn("token may be leaked", fields...)
	if store == nil {
		return // no console serves a handler without a store
	}
	if !suspend {
		leakAlerts.Store(leakKey{store, ev.Label}, ev)
		return
	}
	// The entry as it is now: the suspension is written only if it is
	// still this one, so a token re-created under the label in between
	// is not suspended for the old one's refusals.
	cur, err := store.get(ev.Label)
	if err != nil {
		leakAlerts.Store(leakKey{store, ev.Label}, ev)
		return
	}
	// Off the request path: the store's write waits for its lock. The
	// console's record says what came of it.
	go func() {
		ev.Suspended = h.suspendLeaked(store, ev.Label, cur.rev)
		leakAlerts.Store(leakKey{store, ev.Label}, ev)
	}()
}

// isStoreToken says whether label's token in force is a store entry
// rather than one the config lists.
func (h *Handler) isStoreToken(label string) bool {
	v := h.current.Load()
	if i, ok := v.base.labelled(label); ok && v.base.originOf(i) != h.storeWhere() {
		return false
	}
	_, p := v.byLabel(label)
	return p != nil
}

// suspendLeaked suspends label's entry in store if it is still at
// revision rev, and says whether it did.
func (h *Handler) suspendLeaked(store *fileStore, label string, rev uint64) bool {
	_, err := store.setSuspended(label, true, tokenstore.Cond{IfRev: rev}, audit{source: "leak_alert"})
	var gone caddy.APIError
	if errors.As(err, &gone) && (gone.HTTPStatus == http.StatusNotFound || gone.HTTPStatus == http.StatusPreconditionFailed) {
		h.logger.Warn("a token that may be leaked was not suspended: its entry was changed or removed since the alert; look at it", zap.String("token_label", label))
		return false
	}
	if err != nil {
		h.logger.Error("suspending a token that may be leaked failed", zap.String("token_label", label), zap.Error(err))
		return false
	}
	return true
}
