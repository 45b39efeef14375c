package ipallowlist

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Observed addresses: per token label, a bounded summary of the client
// addresses the token was used from, with how each request went (allowed,
// refused in enforce mode, or would have been refused in report mode), for
// operators to learn a token's real sources before restricting it (GET
// /ip-allowlist/observed). It lives in a caddy.UsagePool, so it survives
// config reloads: the new config takes a reference before the old one lets
// go of its own.

const (
	// observedPerLabel is how many addresses are kept per label. When a new
	// address comes and all are taken, it replaces an address seen once, if
	// there is one, so that no flood of addresses used once pushes out one
	// used again, however rarely. Otherwise it replaces the least-ranked one
	// and inherits its rank (the Space-Saving algorithm): an address that
	// makes more than 1/observedPerLabel of a token's requests is never lost.
	// Reported counts are exact since the address entered the summary; the
	// inherited rank is not reported.
	observedPerLabel = 16
	// observedLabels bounds the labels kept, as observedShards shards of
	// labelsPerShard each: a new label in a full shard takes the place of
	// the one that shard saw least recently, so eviction can begin before
	// all 10,000 are in use when the shards fill unevenly.
	observedLabels = 10_000
)

// outcome is how one observed request went.
type outcome uint8

const (
	outcomeAllowed   outcome = iota
	outcomeDenied            // refused: enforce mode answered 401
	outcomeWouldDeny         // report mode let through what enforce mode would refuse
)

// observedOutcome is how d went under h's mode.
func (h *Handler) observedOutcome(d decision) outcome {
	switch {
	case d.allowed():
		return outcomeAllowed
	case d.report(h.report):
		return outcomeWouldDeny
	}
	return outcomeDenied
}

// observation is one address's counts. Pointer-free: the address is kept as
// 16 bytes, not a netip.Addr.
type observation struct {
	addr      [16]byte
	is4       bool
	allowed   uint64
	denied    uint64 // refused in enforce mode
	wouldDeny uint64 // let through in report mode, refused in enforce mode
	inherited uint64 // rank taken over from the entry it replaced
	lastSeen  int64  // unix nanoseconds
}

func (o *observation) address() netip.Addr {
	a := netip.AddrFrom16(o.addr)
	if o.is4 {
		return a.Unmap()
	}
	return a
}

// rank orders entries for eviction: an upper bound on the address's uses.
func (o *observation) rank() uint64 { return o.uses() + o.inherited }

// uses counts the requests seen since the address entered the summary.
func (o *observation) uses() uint64 { return o.allowed + o.denied + o.wouldDeny }

// labelSummary is one label's addresses, its record of the addresses
// refused in enforce mode, and its place in its shard's list of labels by
// when they were last seen.
type labelSummary struct {
	label   string
	newer   *labelSummary // toward the shard's most recently seen label
	older   *labelSummary
	n       int
	entries [observedPerLabel]observation
	// refused outlives the entries: an address pushed out of them, or
	// reset by DELETE, stays refused for promote and the allow line.
	refused refusedRecord
}

const (
	// refusedWords is the size of a label's record of refused addresses:
	// 32 words, 2,048 bits, 256 bytes per label.
	refusedWords = 32
	// refusedHashes is how many bits an address sets. With 2,048 bits, a
	// false "refused" has odds of about 1 in a million with 16 addresses in
	// the record, 1 in 1,000 with 100, 1 in 25 with 300.
	refusedHashes = 4
)

// refusedRecord is a Bloom filter of the addresses a label was refused
// from in enforce mode. It has no false "never refused": it errs only
// towards "refused", the safe side for promote, and more so the more
// addresses it holds. Its size is fixed, whatever the traffic.
type refusedRecord struct {
	bits [refusedWords]uint64
	// added counts the addresses that set a new bit: about how many
	// distinct addresses it holds.
	added uint32
}

// refusedBitsOf is the bits an address sets in a refusedRecord, by double
// hashing of one 64-bit hash.
func refusedBitsOf(h uint64) (pos [refusedHashes]uint32) {
	a, b := uint32(h), uint32(h>>32)|1
	for i := range pos {
		pos[i] = (a + uint32(i)*b) % (refusedWords * 64)
	}
	return pos
}

// add records an address of hash h, with the shard's lock held whole.
func (r *refusedRecord) add(h uint64) {
	fresh := false
	for _, p := range refusedBitsOf(h) {
		if r.bits[p/64]&(1<<(p%64)) == 0 {
			r.bits[p/64] |= 1 << (p % 64)
			fresh = true
		}
	}
	if fresh {
		r.added++
	}
}

// addShared is add with the shard's lock held to read: other requests
// may set bits at the same time.
func (r *refusedRecord) addShared(h uint64) {
	fresh := false
	for _, p := range refusedBitsOf(h) {
		bit := uint64(1) << (p % 64)
		if atomic.OrUint64(&r.bits[p/64], bit)&bit == 0 {
			fresh = true
		}
	}
	if fresh {
		atomic.AddUint32(&r.added, 1)
	}
}

// has says whether an address of hash h may have been added: false only
// if it never was.
func (r *refusedRecord) has(h uint64) bool {
	for _, p := range refusedBitsOf(h) {
		if r.bits[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

// lostWords sizes a shard's record of the labels whose record of refused
// addresses went with their summary, when a new label took its place: 128
// words, 8,192 bits, 1 KiB per shard.
const lostWords = 128

// lostRecord is a Bloom filter of labels, with three bits a label. It errs
// only towards "lost", so promote never trusts a record that may be gone.
type lostRecord [lostWords]uint64

func lostBitsOf(h uint64) [3]uint32 {
	a, b := uint32(h), uint32(h>>32)|1
	return [3]uint32{a % (lostWords * 64), (a + b) % (lostWords * 64), (a + 2*b) % (lostWords * 64)}
}

func (l *lostRecord) add(h uint64) {
	for _, p := range lostBitsOf(h) {
		l[p/64] |= 1 << (p % 64)
	}
}

func (l *lostRecord) has(h uint64) bool {
	for _, p := range lostBitsOf(h) {
		if l[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}

// observedShards splits the labels so that requests of different tokens
// rarely wait for one another: each shard has its own lock, and no lock is
// shared by the whole process.
const observedShards = 16

// labelsPerShard bounds each shard, so all of them hold at most
// observedLabels.
const labelsPerShard = observedLabels / observedShards

// observedAddrs holds the summaries of every label, in shards by label.
type observedAddrs struct {
	seed     maphash.Seed
	lostSeed maphash.Seed
	shards   [observedShards]observedShard
}

// observedShard is a part of the labels. Its labels are also kept in a
// doubly-linked list from most to least recently seen, so that the label
// to drop when the shard is full is found without a scan.
type observedShard struct {
	// mu is held to read for the common case (a label seen last in its
	// shard, from an address it has), whose counts are then added to
	// atomically, and held whole for anything else.
	mu     sync.RWMutex
	labels map[string]*labelSummary
	newest *labelSummary
	oldest *labelSummary
	// lost marks the labels that lost their record of refused addresses
	// to a new label taking their place.
	lost lostRecord
	// Keeps shards on separate cache lines, so one core's lock does not
	// slow another's.
	_ [64]byte
}

func newObservedAddrs() *observedAddrs {
	o := &observedAddrs{seed: maphash.MakeSeed(), lostSeed: maphash.MakeSeed()}
	for i := range o.shards {
		o.shards[i].labels = map[string]*labelSummary{}
	}
	return o
}

var observedPool = caddy.NewUsagePool()

const observedPoolKey = "ip_allowlist.observed"

func loadObservedAddrs() (*observedAddrs, error) {
	v, _, err := observedPool.LoadOrNew(observedPoolKey, func() (caddy.Destructor, error) {
		return newObservedAddrs(), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*observedAddrs), nil
}

// Destruct is called when no config uses the observed addresses any more.
func (*observedAddrs) Destruct() error { return nil }

func (o *observedAddrs) shard(label string) *observedShard {
	return &o.shards[maphash.String(o.seed, label)%observedShards]
}

// addrHash is the hash of an address in a refusedRecord.
func (o *observedAddrs) addrHash(key [16]byte) uint64 {
	return maphash.Comparable(o.seed, key)
}

// labelHash is the hash of a label in a lostRecord, by a seed of its own:
// under the shards' seed, every label of a shard has the same low bits.
func (o *observedAddrs) labelHash(label string) uint64 {
	return maphash.String(o.lostSeed, label)
}

// record counts one request of label from addr, which went as out. It
// takes the lock of the label's shard only, and allocates only when a label
// is seen for the first time: its summary while the shard has room, and the
// copy of its name.
func (o *observedAddrs) record(label *labelRef, addr netip.Addr, out outcome, now int64) {
	if o == nil {
		return
	}
	key := addr.As16()
	var refused uint64
	if out == outcomeDenied {
		refused = o.addrHash(key)
	}
	sh := o.shard(label.String())
	if sh.recordSeen(label.String(), key, out, refused, now) {
		return
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.labels[label.String()]
	if !ok {
		if len(sh.labels) >= labelsPerShard {
			// The new label takes the place, and the memory, of the
			// label seen least recently. Its record of refused
			// addresses goes too, so the shard marks it lost.
			s = sh.oldest
			sh.remove(s)
			if s.refused.added > 0 {
				sh.lost.add(o.labelHash(s.label))
			}
			*s = labelSummary{}
		} else {
			s = &labelSummary{}
		}
		// A copy: label.String() points into a compiled table, which the
		// summaries outlive; as a key it would keep that table's labels
		// alive after every reload.
		s.label = strings.Clone(label.String())
		sh.labels[s.label] = s
	} else {
		sh.unlink(s)
	}
	sh.pushNewest(s)
	e := s.find(key)
	if e == nil {
		e = s.take(key, addr.Is4())
	}
	switch out {
	case outcomeAllowed:
		e.allowed++
	case outcomeDenied:
		e.denied++
		s.refused.add(refused)
	case outcomeWouldDeny:
		e.wouldDeny++
	}
	e.lastSeen = now
}

// recordSeen counts a request of the label its shard saw last, from an
// address the label has, holding the shard's lock only to read: requests
// of one busy token do not queue for the lock. It reports false, and
// counts nothing, for anything else, which record counts holding it whole.
// The counts, and the bits of a refusal (refused: its address's hash), are
// added atomically, and read only with the lock held whole.
func (sh *observedShard) recordSeen(label string, key [16]byte, out outcome, refused uint64, now int64) bool {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	s := sh.newest
	if s == nil || s.label != label {
		return false
	}
	e := s.find(key)
	if e == nil {
		return false
	}
	switch out {
	case outcomeAllowed:
		atomic.AddUint64(&e.allowed, 1)
	case outcomeDenied:
		atomic.AddUint64(&e.denied, 1)
		s.refused.addShared(refused)
	case outcomeWouldDeny:
		atomic.AddUint64(&e.wouldDeny, 1)
	}
	// The latest of the times, as several readers may store one.
	for {
		seen := atomic.LoadInt64(&e.lastSeen)
		if seen >= now || atomic.CompareAndSwapInt64(&e.lastSeen, seen, now) {
			return true
		}
	}
}

func (sh *observedShard) pushNewest(s *labelSummary) {
	s.newer, s.older = nil, sh.newest
	if sh.newest != nil {
		sh.newest.newer = s
	}
	sh.newest = s
	if sh.oldest == nil {
		sh.oldest = s
	}
}

func (sh *observedShard) unlink(s *labelSummary) {
	if s.newer != nil {
		s.newer.older = s.older
	} else {
		sh.newest = s.older
	}
	if s.older != nil {
		s.older.newer = s.newer
	} else {
		sh.oldest = s.newer
	}
	s.newer, s.older = nil, nil
}

func (sh *observedShard) remove(s *labelSummary) {
	sh.unlink(s)
	delete(sh.labels, s.label)
}

func (s *labelSummary) find(key [16]byte) *observation {
	for i := range s.n {
		if s.entries[i].addr == key {
			return &s.entries[i]
		}
	}
	return nil
}

// take makes room for key: a free entry, else the one to give up. That is
// an address seen once, if there is one, the least-ranked first: a flood
// of addresses used once then takes turns in one entry, and its rank does
// not grow, so an address seen again keeps its place. Else it is the
// least-ranked address, whose whole rank the new one inherits
// (Space-Saving).
func (s *labelSummary) take(key [16]byte, is4 bool) *observation {
	if s.n < observedPerLabel {
		e := &s.entries[s.n]
		s.n++
		*e = observation{addr: key, is4: is4}
		return e
	}
	least := &s.entries[0]
	for i := 1; i < s.n; i++ {
		if e := &s.entries[i]; e.givenUpBefore(least) {
			least = e
		}
	}
	inherited := least.rank()
	if least.uses() <= 1 {
		inherited = least.inherited
	}
	*least = observation{addr: key, is4: is4, inherited: inherited}
	return least
}

// givenUpBefore says whether e makes room before other: seen once before
// seen again, then by rank, then seen longer ago.
func (e *observation) givenUpBefore(other *observation) bool {
	if once, otherOnce := e.uses() <= 1, other.uses() <= 1; once != otherOnce {
		return once
	}
	if e.rank() != other.rank() {
		return e.rank() < other.rank()
	}
	return e.lastSeen < other.lastSeen
}

// observedAddress is one address in the admin API's answer.
type observedAddress struct {
	IP string `json:"ip"`
	// Requests let through because the address is allowed.
	Allowed uint64 `json:"allowed"`
	// Requests refused (401) in enforce mode.
	Denied uint64 `json:"denied"`
	// Requests that report mode let through and enforce mode would refuse.
	WouldDeny uint64    `json:"would_deny"`
	LastSeen  time.Time `json:"last_seen"`
	// RefusedEarlier is set when denied is 0 yet the token's record of
	// refused addresses holds the address: it was refused in enforce mode
	// before these counts began (it was pushed out of the summary, or the
	// summary was reset), or the record, which errs only this way, cannot
	// tell. Promote and the allow line leave it out, as a denied one.
	RefusedEarlier bool `json:"refused_earlier,omitempty"`
}

func (a observedAddress) uses() uint64 { return a.Allowed + a.Denied + a.WouldDeny }

// refused says whether the address was, or may have been, refused in
// enforce mode.
func (a observedAddress) refused() bool { return a.Denied > 0 || a.RefusedEarlier }

// snapshot returns the summary of label, or of every label when label is
// empty, most used addresses first. A label with no address is left out.
func (o *observedAddrs) snapshot(label string) map[string][]observedAddress {
	return o.collect(label, keep)
}

// drop resets the counts of label, or of every label when label is empty,
// and returns what they were, as snapshot would have. The record of refused
// addresses is kept: a reset does not make a refused address promotable.
func (o *observedAddrs) drop(label string) map[string][]observedAddress {
	return o.collect(label, resetCounts)
}

// forget drops all that is kept of label: its counts and its record of
// refused addresses, for a new token that takes the label. A lost mark
// stays: a Bloom filter cannot take one label out.
func (o *observedAddrs) forget(label string) {
	o.collect(label, forgetAll)
}

// refusalsLost says whether label's record of refused addresses may have
// been dropped, with its summary, for a new label.
func (o *observedAddrs) refusalsLost(label string) bool {
	sh := o.shard(label)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.lost.has(o.labelHash(label))
}

// collectMode is what collect does to what it summarises.
type collectMode uint8

const (
	keep        collectMode = iota
	resetCounts             // the counts, not the record of refused addresses
	forgetAll
)

// collect summarises label, or every label when label is empty, one shard
// at a time, and resets or forgets what it summarised as mode says.
func (o *observedAddrs) collect(label string, mode collectMode) map[string][]observedAddress {
	out := map[string][]observedAddress{}
	if label != "" {
		o.shard(label).collect(o, out, label, mode)
		return out
	}
	for i := range o.shards {
		o.shards[i].collect(o, out, "", mode)
	}
	return out
}

func (sh *observedShard) collect(o *observedAddrs, out map[string][]observedAddress, label string, mode collectMode) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	one := func(s *labelSummary) {
		if s.n > 0 {
			out[s.label] = s.list(o, sh.lost.has(o.labelHash(s.label)))
		}
		switch {
		case mode == forgetAll, mode == resetCounts && s.refused.added == 0:
			sh.remove(s)
		case mode == resetCounts:
			s.n = 0
		}
	}
	if label != "" {
		if s := sh.labels[label]; s != nil {
			one(s)
		}
		return
	}
	for _, s := range sh.labels {
		one(s)
	}
}

// labelCount counts the labels kept.
func (o *observedAddrs) labelCount() int {
	n := 0
	for i := range o.shards {
		sh := &o.shards[i]
		sh.mu.Lock()
		n += len(sh.labels)
		sh.mu.Unlock()
	}
	return n
}

// list is the summary's addresses, most used first. lost says that the
// label's record of refused addresses may have been dropped: then every
// address may have been refused.
func (s *labelSummary) list(o *observedAddrs, lost bool) []observedAddress {
	list := make([]observedAddress, 0, s.n)
	for i := range s.n {
		e := &s.entries[i]
		earlier := e.denied == 0 && (lost || s.refused.has(o.addrHash(e.addr)))
		list = append(list, observedAddress{e.address().String(), e.allowed, e.denied, e.wouldDeny, time.Unix(0, e.lastSeen).UTC(), earlier})
	}
	slices.SortFunc(list, func(a, b observedAddress) int {
		if c := cmp.Compare(b.uses(), a.uses()); c != 0 {
			return c
		}
		return compareIP(a.IP, b.IP)
	})
	return list
}

func compareIP(a, b string) int {
	x, _ := netip.ParseAddr(a)
	y, _ := netip.ParseAddr(b)
	return x.Compare(y)
}

// observedCaddyfile renders a label's summary as an allow line to paste
// into its token block. The line never lists an address refused in
// enforce mode, even one also allowed: a token can be both allowed and
// refused from one address only across config changes, and the refusal
// may be an operator taking the address away, which a pasted line must not
// undo. Nor does it list an address refused before its counts began
// (RefusedEarlier). Those addresses follow as comments, with their counts,
// for the operator to judge. Addresses that report mode would have refused
// are listed: learning them is what report mode is for.
func observedCaddyfile(list []observedAddress) string {
	var allow, refused, notListed strings.Builder
	for _, a := range list {
		if a.Denied > 0 {
			fmt.Fprintf(&refused, "# refused in enforce mode, not listed above: %s (%s)\n", a.IP, countsText(a))
			continue
		}
		if a.RefusedEarlier {
			fmt.Fprintf(&refused, "# refused in enforce mode before these counts, not listed above: %s (%s)\n", a.IP, countsText(a))
			continue
		}
		allow.WriteString(" " + a.IP)
		if a.WouldDeny > 0 {
			fmt.Fprintf(&notListed, "# would have been refused in report mode, listed above: %s (%s)\n", a.IP, countsText(a))
		}
	}
	if allow.Len() == 0 {
		return "# no address to allow: every observed address was refused in enforce mode\n" + refused.String()
	}
	return "allow" + allow.String() + "\n" + refused.String() + notListed.String()
}

// countsText is "12 requests refused, 40 allowed": the counts a comment
// line shows, the one that put the address on that line first.
func countsText(a observedAddress) string {
	var parts []string
	for _, c := range []struct {
		n    uint64
		what string
	}{{a.Denied, "refused"}, {a.WouldDeny, "would have been refused"}, {a.Allowed, "allowed"}} {
		switch {
		case c.n == 0:
		case len(parts) > 0:
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		case c.n == 1:
			parts = append(parts, "1 request "+c.what)
		default:
			parts = append(parts, fmt.Sprintf("%d requests %s", c.n, c.what))
		}
	}
	return strings.Join(parts, ", ")
}
