package ipallowlist

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Changes to one token, applied in place. A change compiles the tokens
// changed since the base table was built, and only those, into the view's
// overlay, checks them against the view in force, and publishes a new
// view: the next request sees it, and a change costs the same whether the
// base holds ten tokens or a million. At overlayMerge changes, merge
// compiles a new base from the config and the store's entries, as every
// full build does, and the overlay starts empty again.
//
// Changes and full builds take h.rebuild, so a build sees every change
// applied before it, and a change waits while a build compiles.

// overlayMerge is the number of changed tokens at which applyToken starts
// a merge.
const overlayMerge = 1024

// whereStore is where a token of the token store is said to be defined,
// in errors and in the table's origins.
const whereStore = "the token store"

// whereRedis is whereStore for the Redis store.
const whereRedis = "redis"

// change is one token's entry in the overlay; tp nil: no longer listed.
// seq orders the changes (Handler.changeSeq), so a merge knows which came
// after the store was read for it.
type change struct {
	tp  *TokenPolicy
	seq uint64
}

// errNoStore refuses a change where no token store keeps it: the next full
// build would lose it.
var errNoStore = errors.New("no token store is configured: a change needs one to keep it")

// ConflictError refuses a change whose label or token is listed elsewhere:
// the config's tokens win over the store's, and a token has one label.
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

// applyToken makes tp label's entry, or, with tp nil, unlists label. It
// checks and compiles the change, then calls write with the entry to keep
// in the store (a copy of tp with a literal token replaced by its digest;
// nil for a removal), then publishes it. A change the rules refuse, that
// conflicts with a listed label or token, or that write fails to keep,
// returns an error and changes nothing. write runs with h.rebuild held: it
// must not apply changes itself.
func (h *Handler) applyToken(label string, tp *TokenPolicy, write func(*TokenPolicy) error) error {
	return h.apply(label, tp, originChange, write)
}

// apply is applyToken with the rules of origin for the changed entry:
// originChange for a change made on this node, which knows its sets;
// originStore for one another node wrote to a shared store (Redis), in
// which a set this node does not define matches nothing. write nil keeps
// nothing: the entry is in the store already.
func (h *Handler) apply(label string, tp *TokenPolicy, origin entryOrigin, write func(*TokenPolicy) error) error {
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	if h.storeEntries == nil && h.store == nil {
		return errNoStore
	}
	where := h.storeWhere()
	v := h.current.Load()
	if err := checkChange(v, label, tp, where); err != nil {
		return err
	}
	tp = digestOnlyCopy(tp)
	changes := maps.Clone(h.overlay)
	if changes == nil {
		changes = map[string]change{}
	}
	h.changeSeq++
	changes[label] = change{tp, h.changeSeq}
	next, err := h.overlayWith(v, label, tp, origin)
	if err == nil && write != nil {
		err = write(tp)
	}
	if err != nil {
		// The names the refused change acquired, no table lists.
		if h.dns != nil && !h.merging {
			h.dns.letGo(v, h.dns.entryNames(tp))
		}
		return err
	}
	h.overlay = changes
	h.current.Store(next)
	if h.dns != nil && !h.merging {
		h.dns.released(v, next, label)
	}
	h.wakeExpiry()
	var digest [32]byte
	if tp != nil {
		digest, _ = ParseDigest(tp.TokenSHA256)
	}
	h.warnUnlistedLabel(v, next, label, tp, digest)
	switch {
	case len(changes) >= overlayMergeNow:
		// Merges cannot keep up, or keep failing: merge here, so the
		// overlay stays bounded.
		h.mergeLocked()
	case len(changes) >= overlayMerge && !h.merging:
		h.merging = true
		go h.mergeInBackground()
	}
	return nil
}

// overlayMergeNow is the number of changed tokens at which a change merges
// before it returns, rather than in the background.
const overlayMergeNow = 4 * overlayMerge

// mergeInBackground folds the overlay into a new base without holding
// h.rebuild while it compiles (seconds with a million tokens), so changes
// go on meanwhile. The changes applied after it began reading the store
// stay in the new view's overlay, over the new base. A full build
// published meanwhile makes this one stale: it is dropped.
func (h *Handler) mergeInBackground() {
	h.rebuild.Lock()
	seq, builds, logged := h.changeSeq, h.builds, maps.Clone(h.skipped)
	h.rebuild.Unlock()
	began := time.Now()
	b, err := h.compileAll(logged)
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	h.merging = false
	switch {
	case err != nil:
		h.logger.Error("merging the changed tokens failed; they stay in force in the overlay", zap.Error(err))
		return
	case h.builds != builds:
		return // a full build since holds every change this one read
	}
	rest := map[string]change{}
	for label, c := range h.overlay {
		if c.seq > seq {
			rest[label] = c
		}
	}
	next, err := h.overlayView(b.t, rest)
	if err != nil {
		// A change since conflicts with the new base: build it whole.
		h.mergeLocked()
		return
	}
	// Changes applied while the merge compiled (Redis's, one label at a
	// time) may have read a newer generation and logged entries this
	// build's snapshot has not seen: keep what is newer.
	h.builtLoaded = b.loaded
	h.builtGen = max(h.builtGen, b.gen)
	for k, v := range h.skipped {
		if _, ok := b.skipped[k]; !ok {
			b.skipped[k] = v
		}
	}
	h.skipped = b.skipped
	h.overlay = rest
	if len(rest) == 0 {
		h.overlay = nil
		next = newView(b.t)
	}
	h.builds++
	h.current.Store(next)
	h.keepNames(next)
	h.wakeExpiry()
	h.markLoaded()
	h.logger.Debug("changed tokens merged", zap.Int("tokens", len(b.t.policies)),
		zap.Int("changed_since", len(rest)), zap.Duration("took", time.Since(began)))
}

// warnUnlistedLabel is warnUnlisted for a change to one label, without
// looking at every token of the view: the label's token is no longer
// listed when the change removed the label, or gave it another token
// (digest: the new one; a store of other nodes may do that).
func (h *Handler) warnUnlistedLabel(old, v *view, label string, tp *TokenPolicy, digest [32]byte) {
	t := v.base
	if t.unlisted.allowed.v4Len == 0 && t.unlisted.allowed.v6Len == 0 {
		return
	}
	ot, p := old.byLabel(label)
	if p == nil || p.state == stateInvalid {
		return
	}
	if tp != nil {
		if id, ok := old.find(digest); ok {
			if it, ip := old.policy(id); it == ot && ip == p {
				return // the same token
			}
		}
	}
	h.logger.Warn("token no longer listed: it is now usable wherever unlisted_tokens allows; set revoked on it to refuse it",
		zap.String("token_label", label),
		zap.String("unlisted_tokens", t.unlistedSummary()))
}

// digestOnlyCopy is tp, copied so that a caller's later edits cannot reach
// the overlay, with a literal token replaced by its digest: the store keeps
// no secret. checkChange has refused any token that is no literal.
func digestOnlyCopy(tp *TokenPolicy) *TokenPolicy {
	if tp == nil {
		return nil
	}
	c := *tp
	c.Allow, c.Deny = slices.Clone(tp.Allow), slices.Clone(tp.Deny)
	if c.Token != "" {
		d := sha256.Sum256([]byte(c.Token))
		c.Token, c.TokenSHA256 = "", hex.EncodeToString(d[:])
	}
	return &c
}

// checkChange refuses a change to a label the config lists, and a token
// another label holds.
func checkChange(v *view, label string, tp *TokenPolicy, store string) error {
	if i, ok := v.base.labelled(label); ok {
		if where := v.base.originOf(i); where != store {
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
		where := store
		if t == v.base {
			where = v.base.originOf(id)
		}
		return &ConflictError{Label: label, Other: other, Where: where}
	}
	return nil
}

// overlayView compiles changes, each applied before (overlayWith), into
// one overlay over base, each masking the base policy of its label, under
// the rules of a store's entries. A merge keeps so the changes applied
// while it compiled.
func (h *Handler) overlayView(base *table, changes map[string]change) (*view, error) {
	c, err := newCompiler(h, caddy.NewReplacer(), len(changes))
	if err != nil {
		return nil, err
	}
	where := h.storeWhere()
	c.from(where)
	next := &view{base: base, masked: make(map[uint32]struct{}, len(changes))}
	for _, label := range sortedKeys(changes) {
		if i, ok := base.labelled(label); ok {
			next.masked[i] = struct{}{}
		}
		tp := changes[label].tp
		if tp == nil {
			continue
		}
		c.origin = originStore
		if err := c.addToken(label, tp, where); err != nil {
			return nil, err
		}
	}
	next.over = c.b.finish()
	return next, nil
}

// storeWhere is where the handler's store tokens are said to be defined.
func (h *Handler) storeWhere() string {
	if h.store != nil {
		return whereRedis
	}
	return whereStore
}

// publishBuild publishes t, a full build, with an empty overlay, and warns
// of the tokens it no longer lists. Callers hold h.rebuild, so t holds
// every change applied before it.
func (h *Handler) publishBuild(t *table) {
	h.overlay = nil
	h.builds++
	next := newView(t)
	old := h.current.Swap(next)
	h.keepNames(next)
	h.wakeExpiry()
	h.markLoaded()
	h.warnUnlisted(old, next)
}

// keepNames lets go of the names no table of v lists, unless a merge
// compiles meanwhile: the names it holds are not yet in a view. Callers
// hold h.rebuild.
func (h *Handler) keepNames(v *view) {
	if h.dns != nil && !h.merging {
		h.dns.keep(v)
	}
}

// mergeLocked folds the overlay into a new base: a full build, which reads
// the changes back from the store. Requests go on meanwhile; changes wait.
// A build that fails leaves the view as it was, overlay and all: the
// changes are in force either way.
func (h *Handler) mergeLocked() {
	t, err := h.build()
	if err != nil {
		h.logger.Error("merging the changed tokens failed; they stay in force in the overlay", zap.Error(err))
		return
	}
	h.publishBuild(t)
}

// merge is mergeLocked for a caller that does not hold h.rebuild.
func (h *Handler) merge() {
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	h.mergeLocked()
}
