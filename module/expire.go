package ipallowlist

import (
	"errors"
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
// nanoseconds; math.MaxInt64: never), and the labels of the tokens whose
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
		next, due := h.current.Load().nextExpiry(time.Now().UnixNano())
		if len(due) > 0 {
			h.expire(due)
			continue
		}
		wait := time.Hour
		if next != math.MaxInt64 {
			wait = min(time.Until(time.Unix(0, next)), time.Hour)
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
		if _, again := h.current.Load().nextExpiry(time.Now().UnixNano()); len(again) > 0 {
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
