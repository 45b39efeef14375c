package ipallowlist

// view is what a request reads: the table compiled from everything when
// the config was provisioned or last rebuilt (base), and an overlay of the
// tokens changed one at a time since (applyToken), compiled alone. A view
// is never modified, only replaced, so a request sees one view whole.
// Every full build (a watched file, Redis, a merge) starts a new base with
// no overlay; only the tests call applyToken so far.
type view struct {
	base *table
	// over holds the changed tokens' policies; nil when nothing has
	// changed since base was built.
	over *table
	// masked are the base policies that no longer stand: their token
	// changed (its new policy is in over) or is no longer listed.
	masked map[uint32]struct{}
}

// overlayBit marks a policy id as an index into over.policies rather than
// base.policies.
const overlayBit = 1 << 31

func newView(base *table) *view { return &view{base: base} }

// find looks a token's digest up: the overlay first, then base unless the
// change masked it. Reading a nil map costs no hashing, so a view without
// changes costs one lookup, as a bare table does.
func (v *view) find(digest [32]byte) (uint32, bool) {
	if v.over != nil {
		if i, ok := v.over.index[digest]; ok {
			return i | overlayBit, true
		}
	}
	i, ok := v.base.index[digest]
	if ok && v.masked != nil {
		if _, gone := v.masked[i]; gone {
			return 0, false
		}
	}
	return i, ok
}

// policy returns the policy id names and the table whose arrays it refers
// to.
func (v *view) policy(id uint32) (*table, *policy) {
	if id&overlayBit != 0 {
		return v.over, &v.over.policies[id&^overlayBit]
	}
	return v.base, &v.base.policies[id]
}

// tokens yields every listed token's digest and label.
func (v *view) tokens(yield func(digest [32]byte, label *labelRef) bool) {
	if v.over != nil {
		for d, i := range v.over.index {
			if !yield(d, v.over.label(&v.over.policies[i])) {
				return
			}
		}
	}
	for d, i := range v.base.index {
		if _, gone := v.masked[i]; gone {
			continue
		}
		if v.over != nil {
			if _, changed := v.over.index[d]; changed {
				continue
			}
		}
		if !yield(d, v.base.label(&v.base.policies[i])) {
			return
		}
	}
}

// byLabel finds the policy labelled label, and its table.
func (v *view) byLabel(label string) (*table, *policy) {
	if v.over != nil {
		if i, ok := v.over.labelled(label); ok {
			return v.over, &v.over.policies[i]
		}
	}
	if i, ok := v.base.labelled(label); ok {
		if _, gone := v.masked[i]; !gone {
			return v.base, &v.base.policies[i]
		}
	}
	return nil, nil
}
