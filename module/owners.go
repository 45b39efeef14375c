package ipallowlist

import (
	"bytes"
	"slices"
	"strings"
	"sync"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// ownerIndex lists, for each owner, the labels of its store entries in
// label order, so that the console shows an owner its own tokens without
// reading every entry of a store that holds a million. It is built by one
// scan when first asked, then kept by every change (fileStore.update);
// an import, which writes in batches, drops it, and the next ask scans
// again.
type ownerIndex struct {
	mu    sync.Mutex
	built bool
	by    map[string][]string
}

// labels returns owner's labels that begin with prefix and sort after
// after, at most limit of them, and whether more follow.
func (x *ownerIndex) labels(s *fileStore, owner, prefix, after string, limit int) ([]string, bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built {
		if err := x.build(s); err != nil {
			return nil, false, err
		}
	}
	all := x.by[owner]
	i, _ := slices.BinarySearch(all, max(prefix, after))
	var out []string
	for ; i < len(all) && strings.HasPrefix(all[i], prefix); i++ {
		if all[i] == after {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, all[i])
	}
	return out, false, nil
}

// build scans the store; x.mu is held.
func (x *ownerIndex) build(s *fileStore) error {
	eng, err := s.engine()
	if err != nil {
		return err
	}
	by := map[string][]string{}
	err = eng.Scan(func(r tokenstore.Record) error {
		// Most entries have no owner, and owner is left out when
		// empty: decode only those that name one.
		if !bytes.Contains(r.Data, []byte(`"owner"`)) {
			return nil
		}
		e := decodeEntry(string(r.Data))
		if e.err == nil && e.tp.Owner != "" {
			by[e.tp.Owner] = append(by[e.tp.Owner], r.Label) // Scan is in label order
		}
		return nil
	})
	if err != nil {
		return err
	}
	x.by, x.built = by, true
	return nil
}

// changed keeps the index up to date with one change from prev to next
// (either nil: an entry created or removed).
func (x *ownerIndex) changed(label string, prev, next *TokenPolicy) {
	var was, is string
	if prev != nil {
		was = prev.Owner
	}
	if next != nil {
		is = next.Owner
	}
	if was == is {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.built {
		return
	}
	if was != "" {
		l := x.by[was]
		if i, ok := slices.BinarySearch(l, label); ok {
			l = slices.Delete(l, i, i+1)
		}
		if len(l) == 0 {
			delete(x.by, was)
		} else {
			x.by[was] = l
		}
	}
	if is != "" {
		l := x.by[is]
		if i, ok := slices.BinarySearch(l, label); !ok {
			x.by[is] = slices.Insert(l, i, label)
		}
	}
}

// reset drops the index: the next ask builds it again.
func (x *ownerIndex) reset() {
	x.mu.Lock()
	x.built, x.by = false, nil
	x.mu.Unlock()
}
