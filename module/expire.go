package ipallowlist

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Expiry of allow entries. A token's entries are compiled without those
// already expired (compiler.unexpired), and the table notes when the next
// of each token's entries expires. expireEntries sleeps until the earliest
// of them, then compiles those tokens again, in place: the request path
// reads no clock for it.

// wakeExpiry tells expireEntries that a new view was published.
func (h *Handler) wakeExpiry() {
	select {
	case h.expiryWake <- struct{}{}:
	default:
	}
}

// nextExpiry is when the first allow entry of a token in v expires (Unix
// seconds, as now; math.MaxInt64: never), and the labels of the tokens whose
// entries expire by now.
func (v *view) nextExpiry(now int64) (next int64, due []string) {
	next = math.MaxInt64
	scan := func(t *table, masked map[uint32]struct{}) {
		for _, e := range t.expiring {
			if _, gone := masked[e.policy]; gone {
				continue
			}
			if e.at <= now {
				due = append(due, t.label(&t.policies[e.policy]).String())
			} else if e.at < next {
				next = e.at
			}
		}
	}
	scan(v.base, v.masked)
	if v.over != nil {
		scan(v.over, nil)
	}
	slices.Sort(due)
	return next, slices.Compact(due)
}

// expireEntries recompiles each token whose allow entries expire, when they
// do, until the config is unloaded.
func (h *Handler) expireEntries(ctx interface{ Done() <-chan struct{} }) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next, due := h.current.Load().nextExpiry(time.Now().Unix())
		if len(due) > 0 {
			h.expire(due)
			continue
		}
		wait := time.Hour
		if next != math.MaxInt64 {
			wait = min(time.Until(time.Unix(next, 0)), time.Hour)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-h.expiryWake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// expire recompiles the tokens labelled due, whose entries have expired:
// a store's token in place, from its entry in the store; a config's
// tokens by a full build.
func (h *Handler) expire(due []string) {
	now := time.Now()
	full := false
	for _, label := range due {
		if err := h.expireOne(label, now); errors.Is(err, errNotStored) {
			full = true
		} else if err != nil {
			h.logger.Error("expiring an allow entry failed; rebuilding", zap.String("token_label", label), zap.Error(err))
			full = true
		}
	}
	if full {
		_ = h.reloadStore("allow entries expired") // logged
		// A config token that expires is compiled without it now; were
		// the build refused, wait a second rather than spin.
		if _, again := h.current.Load().nextExpiry(time.Now().Unix()); len(again) > 0 {
			time.Sleep(time.Second)
		}
	}
}

// errNotStored: the token is not the store's; a full build expires it.
var errNotStored = errors.New("not a token of the store")

// expireOne recompiles label from its entry in the store. The store's
// writes are held meanwhile, so a change to the same token cannot be
// overtaken by the entry as read before it.
func (h *Handler) expireOne(label string, now time.Time) error {
	if h.fileStore == nil {
		return errNotStored
	}
	h.fileStore.mu.Lock()
	defer h.fileStore.mu.Unlock()
	tp, ok := h.storedEntry(label)
	if !ok {
		return errNotStored
	}
	expired := expiredEntries(tp, now)
	if err := h.apply(label, tp, originStore, nil); err != nil {
		return err
	}
	for _, e := range expired {
		h.logger.Info("token entry expired", zap.String("token_label", label), zap.String("entry", e), zap.String("expires", tp.Expires[e]))
	}
	logChange(h.logger, h.storeName(), label, audit{action: "expire", entries: expired, source: "expiry"}, nil, nil)
	return nil
}

// expiredEntries are tp's allow entries expired at now.
func expiredEntries(tp *TokenPolicy, now time.Time) []string {
	var out []string
	for _, e := range tp.Allow {
		if at, ok := tp.Expires[e]; ok {
			if t, err := time.Parse(time.RFC3339, at); err == nil && !t.After(now) {
				out = append(out, e)
			}
		}
	}
	return out
}

// storedEntry is label's entry as the handler's file store keeps it; false
// for a token of the config, or where the store cannot say.
func (h *Handler) storedEntry(label string) (*TokenPolicy, bool) {
	if h.fileStore == nil {
		return nil, false
	}
	v := h.current.Load()
	if i, ok := v.base.labelled(label); ok && v.base.originOf(i) != whereStore {
		return nil, false
	}
	s, err := h.fileStore.get(label)
	if err != nil {
		return nil, false
	}
	return &s.tp, true
}

// storeName names the handler's store in logs.
func (h *Handler) storeName() string {
	if h.fileStore != nil {
		return h.fileStore.Name()
	}
	if h.store != nil {
		return whereRedis
	}
	return ""
}

// The expiry rules. An entry's expiry is an RFC 3339 time in one window,
// from 1970 to 100 years from now, whatever its source: outside it, a
// time is a mistake (or a typo), and the table's times (Unix seconds) hold
// every time inside it. A time past already, read from the config or a
// store, means the entry has expired: an exported store imports again. A
// new expiry a write asks for must also be in the future (newExpiry).

// expiryYears is how far ahead an expiry may be.
const expiryYears = 100

// expirySlack is how much further ahead than expiryYears a time read (from
// the config or a store) may be: a node whose clock is behind the writer's
// still takes an entry written for 100 years.
const expirySlack = 24 * time.Hour

// parseExpiry applies the window rule to an expiry time read.
func parseExpiry(at string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return t, fmt.Errorf("%q is not an RFC 3339 time, such as 2026-12-31T23:59:59Z", at)
	}
	if t.Before(time.Unix(0, 0)) || t.After(now.AddDate(expiryYears, 0, 0).Add(expirySlack)) {
		return t, outsideWindow(at)
	}
	return t, nil
}

func outsideWindow(at string) error {
	return fmt.Errorf("%q is outside the times an expiry may take: from 1970-01-01T00:00:00Z to %d years from now", at, expiryYears)
}

// newExpiry applies the rules to an expiry a write asks for: in the
// window, and in the future.
func newExpiry(at string, now time.Time) (time.Time, error) {
	t, err := parseExpiry(at, now)
	switch {
	case err != nil:
	case !t.After(now):
		err = fmt.Errorf("%q is in the past; a new expiry must be in the future", at)
	case t.After(now.AddDate(expiryYears, 0, 0)):
		err = outsideWindow(at)
	}
	return t, err
}

// expirySecond is t in the table's form: Unix seconds, rounded up, so that
// an entry is never taken for expired before its time.
func expirySecond(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// unexpired applies the expiry rules to tp: every key of expires is an
// entry of allow, and every time is in the window (parseExpiry). It
// returns the allow entries that have not expired at c.now, and when the
// next of them expires (expirySecond; 0: none will).
func (c *compiler) unexpired(tp *TokenPolicy) (allow []string, next int64, err error) {
	if len(tp.Expires) == 0 {
		return tp.Allow, 0, nil
	}
	for _, entry := range sortedKeys(tp.Expires) {
		if !slices.Contains(tp.Allow, entry) {
			return nil, 0, fmt.Errorf("expires names %s, which is not an entry of allow", quoteEntry(entry))
		}
	}
	c.live = c.live[:0]
	for _, entry := range tp.Allow {
		at, ok := tp.Expires[entry]
		if !ok {
			c.live = append(c.live, entry)
			continue
		}
		t, err := parseExpiry(at, c.now)
		if err != nil {
			return nil, 0, fmt.Errorf("expires of %s: %w", quoteEntry(entry), err)
		}
		if t.After(c.now) {
			c.live = append(c.live, entry)
			if s := expirySecond(t); next == 0 || s < next {
				next = s
			}
		}
	}
	return c.live, next, nil
}

// newExpiries applies newExpiry to the expiries next asks for: each one
// prev does not hold already for the same entry. A PUT of an entry as it
// was read keeps its times, past ones too; a time it changes or adds is a
// new one, and must be in the future.
func newExpiries(label string, prev, next *TokenPolicy, now time.Time) error {
	for _, e := range sortedKeys(next.Expires) {
		at := next.Expires[e]
		if prev != nil && prev.Expires[e] == at {
			continue
		}
		if _, err := newExpiry(at, now); err != nil {
			return &ConfigError{Token: label, Err: fmt.Errorf("expires of %s: %w", quoteEntry(e), err)}
		}
	}
	return nil
}
