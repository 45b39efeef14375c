package ipallowlist

import (
	"fmt"
	"maps"

	"github.com/caddyserver/caddy/v2"
)

// Changes to one token, applied in place. A change compiles the tokens
// changed since the base table was built, and only those, into the
// view's overlay, checks them against the base, and publishes a new view:
// the next request sees it, and a change costs the same whether the base
// holds ten tokens or a million. When the overlay grows past overlayMerge
// changes, merge folds it into a new base, compiled off the request path.

// overlayMerge is the number of changed tokens at which the owner of the
// store should merge (see overlayFull).
const overlayMerge = 1024

// whereStore is where a changed token is said to be defined, in errors and
// in the table's origins.
const whereStore = "the token store"

// change is one token's entry in the overlay; tp nil: no longer listed.
type change struct {
	tp  *TokenPolicy
	seq uint64 // when it was applied: merge keeps what came after its read
}

// overlayState is what a handler keeps of its overlay, under h.rebuild.
type overlayState struct {
	changes map[string]change
	seq     uint64
}

// ConflictError refuses a change whose label or token is listed elsewhere:
// the config's tokens win over a store's, and a token has one label.
type ConflictError struct {
	Label string
	Other string // the other label holding the token; "" for a label conflict
	Where string // where the label or token is listed
}

func (e *ConflictError) Error() string {
	if e.Other == "" {
		return fmt.Sprintf("token %q: the label is listed in %s, which a change cannot alter", e.Label, e.Where)
	}
	return fmt.Sprintf("token %q: same token as %q, listed in %s; a token can have one label only", e.Label, e.Other, e.Where)
}

// applyToken makes tp label's entry, or, with tp nil, unlists label, and
// publishes the result in place. A change the rules refuse, or that
// conflicts with a listed label or token, returns an error and changes
// nothing. The caller keeps the store: merge reads every entry back from
// it.
func (h *Handler) applyToken(label string, tp *TokenPolicy) error {
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	v := h.current.Load()
	if err := h.checkChange(v, label, tp); err != nil {
		return err
	}
	changes := maps.Clone(h.overlay.changes)
	if changes == nil {
		changes = map[string]change{}
	}
	seq := h.overlay.seq + 1
	changes[label] = change{tp, seq}
	next, err := h.overlayView(v.base, changes, label)
	if err != nil {
		return err
	}
	h.overlay = overlayState{changes, seq}
	h.current.Store(next)
	return nil
}

// overlayFull reports whether the overlay has grown enough to merge.
func (h *Handler) overlayFull() bool {
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	return len(h.overlay.changes) >= overlayMerge
}

// checkChange refuses a change to a label the config lists, and a token
// another label holds.
func (h *Handler) checkChange(v *view, label string, tp *TokenPolicy) error {
	if i, ok := v.base.labelled(label); ok {
		if where := v.base.originOf(i); where != whereStore {
			return &ConflictError{Label: label, Where: where}
		}
	}
	if tp == nil {
		return nil
	}
	c := &compiler{origin: originChange}
	digest, known, err := c.tokenDigest(tp)
	if err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	if !known {
		return nil
	}
	id, ok := v.find(digest)
	if !ok {
		return nil
	}
	t, p := v.policy(id)
	if other := t.label(p).String(); other != label {
		where := whereStore
		if t == v.base {
			where = v.base.originOf(id)
		}
		return &ConflictError{Label: label, Other: other, Where: where}
	}
	return nil
}

// overlayView compiles changes into an overlay over base. The entry of
// strict (the change being applied, already checked against the view in
// force) must compile, or the change is refused. Any other is checked
// against base again, since base may be new (a reload, a merge): the
// config's labels and tokens win, and an entry that no longer compiles (a
// set a reload removed) is refused on every request, as a bad store entry
// is.
func (h *Handler) overlayView(base *table, changes map[string]change, strict string) (*view, error) {
	next := newView(base)
	if len(changes) == 0 {
		return next, nil
	}
	c, err := newCompiler(h, caddy.NewReplacer(), len(changes))
	if err != nil {
		return nil, err
	}
	c.from(whereStore)
	// First every base policy a change replaces, so that a token moving
	// between two changed labels is not taken for the base's.
	next.masked = make(map[uint32]struct{}, len(changes))
	configLabel := map[string]bool{}
	for label := range changes {
		if i, ok := base.labelled(label); ok {
			if base.originOf(i) != whereStore {
				configLabel[label] = true // the config's token keeps it
				continue
			}
			next.masked[i] = struct{}{}
		}
	}
	for _, label := range sortedKeys(changes) {
		tp := changes[label].tp
		if tp == nil || configLabel[label] {
			continue
		}
		c.origin = originStore
		if label == strict {
			c.origin = originChange
		}
		d, known, _ := c.tokenDigest(tp)
		if i, held := base.index[d]; known && held && label != strict {
			if _, gone := next.masked[i]; !gone {
				continue // the base's label keeps its token
			}
		}
		if err := c.addToken(label, tp, whereStore); err != nil {
			if label == strict {
				return nil, err
			}
			c.refuse(labeledEntry{label: label, redisEntry: &redisEntry{tp: *tp}, d: d, dOK: known})
		}
	}
	next.over = c.b.finish()
	return next, nil
}

// rebase publishes base, a table compiled anew, with the changes applied
// after seq kept in its overlay: those that base already holds are
// dropped.
func (h *Handler) rebase(base *table, after uint64) error {
	keep := map[string]change{}
	for label, ch := range h.overlay.changes {
		if ch.seq > after {
			keep[label] = ch
		}
	}
	next, err := h.overlayView(base, keep, "")
	if err != nil {
		return err
	}
	h.overlay.changes = keep
	h.current.Store(next)
	return nil
}

// merge folds the overlay into a new base, compiled from the config and
// entries, which returns every entry of the store as it is now, the
// applied changes included. Compiling takes the time the whole table
// takes, but only this goroutine's: requests and changes go on meanwhile,
// and changes applied during it stay in the new view's overlay.
func (h *Handler) merge(entries func() ([]labeledEntry, error)) error {
	h.rebuild.Lock()
	seq := h.overlay.seq
	h.rebuild.Unlock()
	shared, err := entries()
	if err != nil {
		return err
	}
	base, err := compileShared(h, caddy.NewReplacer(), whereStore, shared, nil, nil)
	if err != nil {
		return err
	}
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	return h.rebase(base, seq)
}
