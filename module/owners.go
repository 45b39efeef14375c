package ipallowlist

import (
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"go4.org/netipx"

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

// Defaults of what an owner may add through the console.
const (
	defaultOwnerMaxPrefixIPv4 = 24
	defaultOwnerMaxPrefixIPv6 = 48
	defaultOwnerMaxEntries    = 50
)

// ownerBounds is what a console user who is not a named operator may
// add to a token, compiled from the Console's config at Provision. The
// bounds keep a customer's self-service from undoing what the operator
// set: without them an owner could add any and lift their own token's
// restriction.
type ownerBounds struct {
	maxIPv4, maxIPv6 int // the widest prefix lengths
	maxEntries       int // allow entries a token may have after an owner's change
	dns              bool
	sets             map[string]bool
	operatorsNamed   bool // whether anyone in the console can lift a bound
}

// newOwnerBounds compiles c's owner_* fields.
func newOwnerBounds(c *Console) (*ownerBounds, error) {
	b := &ownerBounds{
		maxIPv4: defaultOwnerMaxPrefixIPv4, maxIPv6: defaultOwnerMaxPrefixIPv6,
		maxEntries: defaultOwnerMaxEntries, dns: c.OwnerDNS, sets: map[string]bool{},
		operatorsNamed: len(c.Operators) > 0,
	}
	if p := c.OwnerMaxPrefixIPv4; p != nil {
		if *p < 0 || *p > 32 {
			return nil, fmt.Errorf("owner_max_prefix_ipv4 %d: want a prefix length from 0 (any IPv4 range) to 32 (single addresses)", *p)
		}
		b.maxIPv4 = *p
	}
	if p := c.OwnerMaxPrefixIPv6; p != nil {
		if *p < 0 || *p > 128 {
			return nil, fmt.Errorf("owner_max_prefix_ipv6 %d: want a prefix length from 0 (any IPv6 range) to 128 (single addresses)", *p)
		}
		b.maxIPv6 = *p
	}
	switch n := c.OwnerMaxEntries; {
	case n < 0 || n > consoleMaxEntries:
		return nil, fmt.Errorf("owner_max_entries %d: want 1 to %d, the most the console keeps on a token", n, consoleMaxEntries)
	case n > 0:
		b.maxEntries = n
	}
	for i, name := range c.OwnerIPSets {
		if !isSetName(name) {
			return nil, fmt.Errorf("owner_ip_sets[%d] %s: not an ip_set name", i, quoteEntry(name))
		}
		b.sets[name] = true
	}
	return b, nil
}

// String describes the bounds, for the console's start-up line.
func (b *ownerBounds) String() string {
	upTo := func(family string, bits int) string {
		if bits == 0 {
			return "any " + family + " range"
		}
		return fmt.Sprintf("%s ranges up to a /%d", family, bits)
	}
	can := []string{upTo("IPv4", b.maxIPv4) + ", " + upTo("IPv6", b.maxIPv6)}
	can = append(can, fmt.Sprintf("%d entries a token", b.maxEntries))
	if b.dns {
		can = append(can, "dns: entries")
	} else {
		can = append(can, "no dns: entries")
	}
	if len(b.sets) == 0 {
		can = append(can, "no ip_set names")
	} else {
		can = append(can, "the ip_sets "+strings.Join(slices.Sorted(maps.Keys(b.sets)), ", "))
	}
	return strings.Join(can, "; ")
}

// lift says who can lift a bound: an operator, or the config's field.
func (b *ownerBounds) lift(what, field string) string {
	if b.operatorsNamed {
		return fmt.Sprintf("an operator can add %s, or %s in the console's config", what, field)
	}
	return fmt.Sprintf("the console names no operators, so no console user can add %s: name operators (operators <user id>), or %s in the console's config", what, field)
}

// checkAdd refuses (403) an owner's change that adds entries to label's
// token, which has the allow entries have: each entry must be within the
// bounds, and so must their number.
func (b *ownerBounds) checkAdd(label string, have, entries []string) error {
	if err := b.checkEntries(label, entries); err != nil {
		return err
	}
	return b.checkCount(label, have, entries)
}

// checkEntries refuses (403) the first of entries that an owner may not
// add to label's token, naming the bound and who can lift it. An entry
// that does not parse is left to the store's rules, which say why.
func (b *ownerBounds) checkEntries(label string, entries []string) error {
	var one [2]netipx.IPRange
	for _, e := range entries {
		var why string
		switch {
		case isDNSEntry(e):
			if !b.dns {
				why = fmt.Sprintf("owners may not add dns: entries (%s): %s", quoteEntry(e), b.lift("it", "allow them with owner_dns"))
			}
		case isSetName(e):
			if !b.sets[e] {
				why = fmt.Sprintf("owners may name only the ip_sets in owner_ip_sets (%s is not one): %s", quoteEntry(e), b.lift("it", "list it in owner_ip_sets"))
			}
		default:
			rs, err := appendRange(one[:0], e)
			if err != nil {
				continue
			}
			for _, r := range rs {
				bits, family := b.maxIPv4, "IPv4"
				if !r.From().Is4() {
					bits, family = b.maxIPv6, "IPv6"
				}
				if !rangeFits(r, bits) {
					shown := quoteEntry(e)
					if e == KeywordAny || e == KeywordPrivateRanges {
						shown = fmt.Sprintf("%q", e)
					}
					why = fmt.Sprintf("owners may add at most an %s /%d (%s is wider): %s", family, bits, shown, b.lift("it", "widen owner_max_prefix"))
					break
				}
			}
		}
		if why != "" {
			return apiErr(http.StatusForbidden, fmt.Errorf("token %q: %s", label, why))
		}
	}
	return nil
}

// checkCount refuses (403) a change that leaves label's token with more
// allow entries than an owner may keep: have now, adding the entries
// added (those it holds already are not counted again).
func (b *ownerBounds) checkCount(label string, have []string, adding []string) error {
	n := len(have)
	seen := map[string]bool{}
	for _, e := range adding {
		if !seen[e] && !slices.Contains(have, e) {
			n++
		}
		seen[e] = true
	}
	if n <= b.maxEntries || n <= len(have) {
		return nil
	}
	return apiErr(http.StatusForbidden, fmt.Errorf("token %q: owners may keep at most %d allow entries on a token (this change makes %d): %s",
		label, b.maxEntries, n, b.lift("them", "raise owner_max_entries")))
}

// rangeFits says whether r holds no more addresses than a prefix of bits.
func rangeFits(r netipx.IPRange, bits int) bool {
	d := addrKey(r.To()).minus(addrKey(r.From()))
	width := 128
	if r.From().Is4() {
		width = 32
	}
	// r fits while its last address is less than 2^(width-bits) after its first.
	switch k := width - bits; {
	case k >= 128:
		return true
	case k >= 64:
		return d.hi>>(k-64) == 0
	default:
		return d.hi == 0 && d.lo>>k == 0
	}
}

// Suspensions made through the console by an owner: owner:<user id>.
const ownerSuspensionPrefix = "owner:"

// isOwnerSuspension says whether by (suspended_by) names a suspension an
// owner made through the console.
func isOwnerSuspension(by string) bool { return strings.HasPrefix(by, ownerSuspensionPrefix) }

// checkResume refuses (403) an owner's resume of a suspension that is not
// their own: the leak signal's, an operator's, or one made before
// suspensions were recorded.
func (b *ownerBounds) checkResume(label, user string, t consoleToken) error {
	if !t.Suspended || t.suspendedBy == ownerSuspensionPrefix+user {
		return nil
	}
	var who string
	switch by := t.suspendedBy; {
	case by == "leak_alert":
		who = "the leak signal (leak_alert)"
	case by == "":
		who = "an operator, or before suspensions were recorded"
	case isOwnerSuspension(by):
		who = "another console user"
	case strings.HasPrefix(by, "operator:"):
		who = "an operator"
	default:
		who = "an operator (" + by + ")"
	}
	lift := "an operator can resume it"
	if !b.operatorsNamed {
		lift = "the console names no operators, so resume it through the admin routes or the CLI, or name operators (operators <user id>) in the console's config"
	}
	return apiErr(http.StatusForbidden, fmt.Errorf("token %q was suspended by %s: owners resume only their own suspensions; %s", label, who, lift))
}
