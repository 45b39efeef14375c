package ipallowlist

import (
	"maps"
	"slices"

	"github.com/caddyserver/caddy/v2"
)

// A change to one token compiles that token alone into a copy of the
// overlay in force (overlayWith), instead of compiling every change since
// the base was built again: its cost grows with the overlay's size only by
// the copy, a few microseconds for a thousand changed tokens.

// cloneForChange is a builder holding a copy of t, which is never changed:
// new policies, sets and labels are appended to copies of t's arrays. Sets
// are not deduplicated against t's; a merge does that.
func cloneForChange(t *table) *tableBuilder {
	c := *t
	c.index = maps.Clone(t.index)
	c.policies = slices.Clone(t.policies)
	c.labels = slices.Clone(t.labels)
	c.v4 = slices.Clone(t.v4)
	c.v6 = slices.Clone(t.v6)
	c.byLabel = labelIndex{byHash: maps.Clone(t.byLabel.byHash), collide: slices.Clone(t.byLabel.collide), seed: t.byLabel.seed}
	c.origins = slices.Clone(t.origins)
	c.expiring = slices.Clone(t.expiring)
	c.dns = maps.Clone(t.dns) // the rules' slices are never changed
	return &tableBuilder{t: c, sets: map[uint64]setRef{}, seed: t.byLabel.seed}
}

// drop takes the policy labelled label out of the builder's index, label
// index, expiry list and names; its arrays stay, unreferenced, until a merge.
func (b *tableBuilder) drop(label string) {
	i, ok := b.t.labelled(label)
	if !ok {
		return
	}
	for d, j := range b.t.index {
		if j == i {
			delete(b.t.index, d)
			break
		}
	}
	x := &b.t.byLabel
	if k := slices.Index(x.collide, i); k >= 0 {
		x.collide = slices.Delete(x.collide, k, k+1)
	} else {
		for h, j := range x.byHash {
			if j == i {
				delete(x.byHash, h)
				break
			}
		}
	}
	b.t.expiring = slices.DeleteFunc(b.t.expiring, func(e expiry) bool { return e.policy == i })
	delete(b.t.dns, b.t.policies[i].label) // apply lets go of the names no other token lists
}

// overlayWith is v with label's change (tp; nil: unlisted) applied: the
// base policy of label masked, and the change compiled alone, under the
// rules of origin, into a copy of v's overlay. An error refuses the change.
func (h *Handler) overlayWith(v *view, label string, tp *TokenPolicy, origin entryOrigin) (*view, error) {
	c, err := newCompiler(h, caddy.NewReplacer(), 0)
	if err != nil {
		return nil, err
	}
	where := h.storeWhere()
	if v.over == nil {
		c.from(where)
	} else {
		// The copy keeps the overlay's own unlisted policy, whose sets
		// are in its arrays.
		c.b = cloneForChange(v.over)
		c.b.drop(label)
	}
	next := &view{base: v.base, masked: v.masked}
	if i, ok := v.base.labelled(label); ok {
		if _, done := v.masked[i]; !done {
			next.masked = maps.Clone(v.masked)
			if next.masked == nil {
				next.masked = map[uint32]struct{}{}
			}
			next.masked[i] = struct{}{}
		}
	}
	if tp != nil {
		c.origin = origin
		if tp.Owner != "" {
			c.ownerNames = map[string]int{tp.Owner: v.ownerNames(tp.Owner, label)}
		}
		if err := c.addToken(label, tp, where); err != nil {
			return nil, err
		}
	}
	next.over = c.b.finish()
	return next, nil
}
