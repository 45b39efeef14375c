package ipallowlist

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// DNS-name allow entries. dns:<name> admits the addresses name resolves to
// (A and AAAA). Names are resolved off the request path, by a pool shared
// by every handler that has the same resolvers, so that a reload keeps
// each name's last good addresses. The pool starts with the config, never
// under caddy validate, and resolves each name again when its answer's TTL
// runs out, clamped to dnsMinTTL to dnsMaxTTL.
//
// A compiled token holds the names it lists (table.dns), and a request
// reads a name's addresses with one atomic load. A new answer is so in
// force for config and store tokens alike the moment it is taken, with no
// token compiled again: one record that a million tokens list costs one
// swap.

// DNSPrefix marks an allow entry that is a DNS name.
const DNSPrefix = "dns:"

const (
	// dnsMinTTL and dnsMaxTTL clamp how long an answer is kept before the
	// name is resolved again.
	dnsMinTTL = 30 * time.Second
	dnsMaxTTL = time.Hour
	// dnsRetry is when a name whose lookup failed is tried again; each
	// failure in a row doubles it, up to dnsMaxRetry, so that names whose
	// zones never answer do not keep the lookups busy.
	dnsRetry    = dnsMinTTL
	dnsMaxRetry = 5 * time.Minute
	// dnsTimeout bounds one query to one server, and dnsDeadline one
	// family's lookup, every server and CNAME asked included.
	dnsTimeout  = 2 * time.Second
	dnsDeadline = 3 * dnsTimeout
	// dnsLookups is how many lookups a pool runs at once. They are
	// shared out in turn: each owner with names waiting gets the next
	// free lookup in turn, and within an owner each of its tokens, so
	// that no tenant's names, however many or slow, hold back another's
	// (dnsPool.take).
	dnsLookups = 64
	// dnsNamesPerToken and dnsNamesPerOwner are how many dns: entries a
	// token may list, and all the tokens of one owner together
	// (checkNameQuota): they bound how long a name waits behind its own
	// token's in the turns, and what one tenant makes the pool hold.
	dnsNamesPerToken = 64
	dnsNamesPerOwner = 256
	// dnsMaxTenants is how many tokens' queues a name is in: the first
	// that list it. One name that a million tokens list costs no more
	// than one that eight do; a token past the eighth has the name
	// looked up in the others' turns, each behind at most
	// dnsNamesPerToken names of its own.
	dnsMaxTenants = 8
	// dnsMaxStale is how long a name's last good addresses are kept while
	// its lookups fail, or its answers are refused: past that, it matches
	// nothing until it resolves, so that an address its owner has let go
	// of does not stay admitted for ever.
	dnsMaxStale = 24 * time.Hour
	// dnsMaxCNAMEs bounds the CNAME chain followed from a name.
	dnsMaxCNAMEs = 8
	// maxNameAddrs is the over-broad rule for a name: an answer of more
	// addresses than this (A and AAAA together) is refused, and the name
	// keeps its last good addresses. An IPv4 /8, the rule's bound for a
	// range, cannot be reached by any DNS answer (64 KiB holds about 4,000
	// records), so a name is bounded by count instead.
	maxNameAddrs = 256
)

// parseDNSEntry returns the name of a dns: allow entry. Names are written
// in one canonical form, so that removing an entry finds it: lower case,
// without the trailing dot (every name is absolute: no search domain is
// appended), at least two labels.
func parseDNSEntry(entry string) (string, error) {
	name, ok := strings.CutPrefix(entry, DNSPrefix)
	switch {
	case !ok:
		return "", errors.New("not a dns: entry")
	case name == "":
		return "", errors.New("no name after dns:, as in dns:office.example.com")
	case len(name) > 253:
		return "", errors.New("a DNS name has at most 253 characters")
	}
	if a, err := netip.ParseAddr(name); err == nil && a.Zone() == "" {
		return "", fmt.Errorf("%s is an address, not a name: write it without dns:", name)
	}
	if _, err := netip.ParsePrefix(name); err == nil {
		return "", fmt.Errorf("%s is a prefix, not a name: write it without dns:", name)
	}
	// The characters first: the messages below may then show the name.
	ok, upper, wildcard := nameChars(name)
	switch {
	case !ok:
		return "", errors.New("a DNS name has letters, digits, - and _ only, in labels separated by dots")
	case wildcard:
		return "", errors.New("a wildcard names no address: write the name itself")
	case strings.HasSuffix(name, "."):
		return "", fmt.Errorf("drop the trailing dot: names are always absolute (dns:%s)", strings.TrimRight(name, "."))
	case upper:
		return "", fmt.Errorf("write the name in lower case: dns:%s", strings.ToLower(name))
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("write the name in full, as in dns:%s.example.com: no search domain is appended", name)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", errors.New("each label of a DNS name has 1 to 63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("label %q: a label neither starts nor ends with -", l)
		}
	}
	return name, nil
}

// nameChars reports whether s is made of what DNS names are made of
// (letters, digits, - _ . and the wildcard *), and whether it has upper
// case letters or a wildcard.
func nameChars(s string) (ok, upper, wildcard bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '*':
			wildcard = true
		default:
			return false, false, false
		}
	}
	return true, upper, wildcard
}

// isDNSEntry reports whether an entry is meant as a DNS name.
func isDNSEntry(entry string) bool { return strings.HasPrefix(entry, DNSPrefix) }

// CheckResolvers applies the rule for resolvers: each an IP address, with
// a port or without (53). It returns them as host:port.
func CheckResolvers(resolvers []string) ([]string, error) {
	out := make([]string, 0, len(resolvers))
	for i, r := range resolvers {
		ap, err := netip.ParseAddrPort(r)
		if err != nil {
			a, aerr := netip.ParseAddr(r)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("resolvers[%d] %q: want an IP address, with or without a port, such as 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53", i, r)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("resolvers[%d] %q: port 0", i, r)
		}
		out = append(out, ap.String())
	}
	return out, nil
}

// resolvConf is where the system's resolvers are read when none are given.
var resolvConf = "/etc/resolv.conf"

// systemResolvers reads the name servers of resolvConf as host:port.
func systemResolvers() ([]string, error) {
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("reading the system's resolvers: %w; give resolvers", err)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver; give resolvers", resolvConf)
	}
	return out, nil
}

// dnsName is one name of a pool: its answer in force, and when it is
// resolved next.
type dnsName struct {
	name  string // as in the entry, without dns:
	boxed any    // name, as a placeholder value that costs no allocation
	fqdn  string
	state atomic.Pointer[nameState] // nil until the first lookup ends
	// looked is closed when the first lookup ends.
	looked chan struct{}

	// firstWait bounds how long a request waits for the first lookup
	// (awaitNames): a lookup's time on the pool's servers, plus a second.
	firstWait time.Duration

	// clock is the pool's coarse clock (dnsPool.clock), which contains
	// reads to let go of addresses past dnsMaxStale; nil for a name of
	// no pool, which never resolves.
	clock *atomic.Int64

	// under the pool's mu
	refs   int
	due    time.Time
	queued bool // in the pool's due heap, or ready
	// ready: due, in the queues of its tenants until one of them is
	// granted a lookup of it; epoch tells the queues' entries of this
	// turn from those of earlier ones.
	ready   bool
	epoch   uint32
	tenants []*dnsQueue // the tokens that listed it since it was acquired
	gone    bool        // released by every handler
	failed  time.Time
	fails   int // failed lookups in a row
	refused bool
	empty   bool
	stale   bool
}

// nameState is a name's answer as requests read it, and what became of the
// last lookup.
type nameState struct {
	v4, v6 []netip.Addr // sorted; the last good answer of each family
	// resolved is when the addresses were last taken from an answer;
	// zero: never.
	resolved time.Time
	ttl      time.Duration // until the next lookup, as clamped
	tried    time.Time     // when the last lookup ended
	failing  string        // why the last lookup failed, if it did
	failedAt time.Time     // when the lookups began to fail, if they do
	// good4 and good6: when each family's addresses were last taken from
	// an answer (dnsMaxStale).
	good4, good6 time.Time
	// keep4 and keep6: the Unix second past which each family's
	// addresses match no more (good + dnsMaxStale), checked as requests
	// read them, so that a name whose lookups wait does not outlive it.
	keep4, keep6 int64
	refusal      string // why its answer was refused, if it was
}

// contains reports whether a is among the addresses name admits: those
// of its last good answer of a's family, until dnsMaxStale after it.
func (n *dnsName) contains(a netip.Addr) bool {
	s := n.state.Load()
	if s == nil {
		return false
	}
	l, keep := s.v6, s.keep6
	if a.Is4() {
		l, keep = s.v4, s.keep4
	}
	if len(l) == 0 || n.clock == nil || n.clock.Load() > keep {
		return false
	}
	_, ok := slices.BinarySearchFunc(l, a, netip.Addr.Compare)
	return ok
}

type resolverList struct {
	servers []string
	err     error
}

// dnsPool resolves the names of the handlers that share its resolvers.
type dnsPool struct {
	key string // the resolvers, as given; "" for the system's
	// servers are the resolvers as host:port, in order of preference, or
	// why the system's could not be read; read again at each reload for
	// the system's.
	servers atomic.Pointer[resolverList]

	// clock is the Unix second, set by the pool every second: what
	// dnsName.contains compares a family's keep with, at the cost of
	// one atomic load.
	clock atomic.Int64

	mu    sync.Mutex
	names map[string]*dnsName
	due   dueHeap // names not ready, by when they fall due
	// owners: the tenants' queues, by owner; turns: the owners with
	// names ready, each granted the next lookup in turn.
	owners  map[string]*dnsOwner
	turns   []*dnsOwner
	started bool
	// users: the handlers' holds on the pool. The newest logs the pool's
	// lines and counts its lookups; one that leaves (a refused load)
	// takes its logger and metrics with it.
	users []*dnsHold

	wake chan struct{}
	// free holds a slot for each lookup running: a name is taken only
	// once a lookup can start, so the turn it was given is the one it
	// runs in.
	free   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
}

var dnsPools = struct {
	sync.Mutex
	m map[string]*dnsPool
}{m: map[string]*dnsPool{}}

// openDNSPool returns the pool of resolvers (host:port; nil for the
// system's), making it if no handler uses it yet.
func openDNSPool(resolvers []string, d *dnsHold) *dnsPool {
	logger := d.logger
	key := strings.Join(resolvers, " ")
	dnsPools.Lock()
	defer dnsPools.Unlock()
	p := dnsPools.m[key]
	if p == nil {
		p = newDNSPool(key)
		p.servers.Store(&resolverList{servers: resolvers})
		p.ctx, p.cancel = context.WithCancel(context.Background())
		dnsPools.m[key] = p
	}
	if len(resolvers) == 0 {
		// The system's, as they are now: a reload picks up a changed
		// resolv.conf. One that cannot be read (being rewritten, say)
		// leaves a pool that has servers with them.
		servers, err := systemResolvers()
		if old := p.servers.Load(); err == nil || old.err != nil || len(old.servers) == 0 {
			p.servers.Store(&resolverList{servers, err})
		} else {
			logger.Warn("the system's resolvers could not be read; dns: names keep the ones read before",
				zap.Strings("resolvers", old.servers), zap.Error(err))
		}
	}
	p.mu.Lock()
	p.users = append(p.users, d)
	p.mu.Unlock()
	d.pool = p
	return p
}

func newDNSPool(key string) *dnsPool {
	p := &dnsPool{key: key, names: map[string]*dnsName{}, owners: map[string]*dnsOwner{},
		wake: make(chan struct{}, 1), free: make(chan struct{}, dnsLookups)}
	p.clock.Store(time.Now().Unix())
	return p
}

// logger is the newest user's logger. Callers hold p.mu.
func (p *dnsPool) logger() *zap.Logger {
	if len(p.users) == 0 || p.users[len(p.users)-1].logger == nil {
		return zap.NewNop()
	}
	return p.users[len(p.users)-1].logger
}

// counted counts a lookup's result in the newest user's metrics. Callers
// hold p.mu.
func (p *dnsPool) counted(result dnsResult) {
	if len(p.users) == 0 {
		return
	}
	if m := p.users[len(p.users)-1].metrics.Load(); m != nil {
		m.dnsLookups[result].Inc()
	}
}

// close ends d's use of p; the last user stops it.
func (p *dnsPool) close(d *dnsHold) {
	dnsPools.Lock()
	defer dnsPools.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := slices.Index(p.users, d); i >= 0 {
		p.users = slices.Delete(p.users, i, i+1)
	}
	if len(p.users) > 0 {
		return
	}
	p.cancel()
	if dnsPools.m[p.key] == p {
		delete(dnsPools.m, p.key)
	}
}

// start resolves p's names from now on: when the config starts.
func (p *dnsPool) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		p.started = true
		go p.run()
	}
	return nil
}

// dnsTenant says whose a name is: the token that lists it, by label, and
// the token's owner ("" for none: the token is an owner of its own).
type dnsTenant struct{ owner, label string }

// dnsOwner is one owner's tokens in the turns, or a token with no owner.
type dnsOwner struct {
	key    string
	tokens map[string]*dnsQueue
	// turns: its tokens with names ready, each granted its owner's next
	// lookup in turn.
	turns  []*dnsQueue
	inTurn bool // in the pool's turns
}

// dnsQueue is one token's names ready to be looked up, in the order they
// fell due (a new name falls due when it is acquired).
type dnsQueue struct {
	owner  *dnsOwner
	label  string
	names  int // names that count it among their tenants
	ready  []readyName
	inTurn bool // in its owner's turns
}

// readyName is a name in a queue, for the turn epoch says: a name is in
// the queue of each of its tenants, and the first granted a lookup of it
// ends that turn for all.
type readyName struct {
	n     *dnsName
	epoch uint32
}

// queueOf returns the queue of tenant, made if it has none. Callers hold
// p.mu.
func (p *dnsPool) queueOf(tenant dnsTenant) *dnsQueue {
	key := tenant.owner
	if key == "" {
		key = "\x00" + tenant.label // an owner of its own, apart from every owner's
	}
	o := p.owners[key]
	if o == nil {
		o = &dnsOwner{key: key, tokens: map[string]*dnsQueue{}}
		p.owners[key] = o
	}
	q := o.tokens[tenant.label]
	if q == nil {
		q = &dnsQueue{owner: o, label: tenant.label}
		o.tokens[tenant.label] = q
	}
	return q
}

// attach counts tenant among n's tenants, up to dnsMaxTenants. Callers
// hold p.mu.
func (p *dnsPool) attach(n *dnsName, tenant dnsTenant) {
	if len(n.tenants) >= dnsMaxTenants {
		return
	}
	q := p.queueOf(tenant)
	if slices.Contains(n.tenants, q) {
		return
	}
	n.tenants = append(n.tenants, q)
	q.names++
	if n.ready {
		p.push(q, n)
	}
}

// detach takes n, let go of, out of its tenants' counts, and a tenant
// that has no name left out of the pool. Callers hold p.mu.
func (p *dnsPool) detach(n *dnsName) {
	for _, q := range n.tenants {
		if q.names--; q.names > 0 {
			continue
		}
		o := q.owner
		if o.tokens[q.label] == q {
			delete(o.tokens, q.label)
		}
		if len(o.tokens) == 0 && p.owners[o.key] == o {
			delete(p.owners, o.key)
		}
	}
	n.tenants = nil
}

// makeReady puts n, due, in the queue of each of its tenants. Callers
// hold p.mu.
func (p *dnsPool) makeReady(n *dnsName) {
	n.ready, n.queued = true, true
	n.epoch++
	for _, q := range n.tenants {
		p.push(q, n)
	}
}

// push adds n to q, and q to the turns. Callers hold p.mu.
func (p *dnsPool) push(q *dnsQueue, n *dnsName) {
	q.ready = append(q.ready, readyName{n, n.epoch})
	if !q.inTurn {
		q.inTurn = true
		q.owner.turns = append(q.owner.turns, q)
	}
	if o := q.owner; !o.inTurn {
		o.inTurn = true
		p.turns = append(p.turns, o)
	}
}

// pop takes q's first name still ready in the turn it was queued for.
func (q *dnsQueue) pop() *dnsName {
	for len(q.ready) > 0 {
		r := q.ready[0]
		q.ready[0] = readyName{}
		q.ready = q.ready[1:]
		if r.n.ready && !r.n.gone && r.n.epoch == r.epoch {
			return r.n
		}
	}
	q.ready = nil
	return nil
}

// take grants the next lookup: to the first owner in turn, to the first of
// its tokens in turn, its first ready name. The owner and the token go to
// the back of the turns if they have more. However many names, and however
// slow, one tenant has ready, every other owner with a name ready is
// granted a lookup before it gets a second. Callers hold p.mu.
func (p *dnsPool) take() *dnsName {
	for len(p.turns) > 0 {
		o := p.turns[0]
		p.turns[0] = nil
		p.turns = p.turns[1:]
		o.inTurn = false
		var n *dnsName
		for n == nil && len(o.turns) > 0 {
			q := o.turns[0]
			o.turns[0] = nil
			o.turns = o.turns[1:]
			q.inTurn = false
			n = q.pop()
			if len(q.ready) > 0 {
				q.inTurn = true
				o.turns = append(o.turns, q)
			}
		}
		if len(o.turns) > 0 {
			o.inTurn = true
			p.turns = append(p.turns, o)
		}
		if n != nil {
			n.ready, n.queued = false, false
			return n
		}
	}
	p.turns = nil
	return nil
}

// acquire returns the pool's name, counting one more holder and tenant
// among its tenants; a new name is ready at once, looked up in its
// tenant's turn once the pool has started.
func (p *dnsPool) acquire(name string, tenant dnsTenant) *dnsName {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.names[name]
	if n == nil {
		n = &dnsName{name: name, boxed: name, fqdn: dns.Fqdn(name), due: time.Now(), looked: make(chan struct{}),
			clock:     &p.clock,
			firstWait: min(dnsTimeout*time.Duration(max(len(p.servers.Load().servers), 1)), dnsDeadline) + time.Second}
		p.names[name] = n
		p.attach(n, tenant)
		p.makeReady(n)
		p.poke()
	} else {
		p.attach(n, tenant)
	}
	n.refs++
	return n
}

// also counts tenant among the tenants of n, which the caller holds
// already.
func (p *dnsPool) also(n *dnsName, tenant dnsTenant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !n.gone {
		p.attach(n, tenant)
	}
}

// release drops one holder of n; with none left, n is resolved no more.
func (p *dnsPool) release(n *dnsName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n.refs--; n.refs == 0 {
		n.gone = true
		delete(p.names, n.name)
		p.detach(n)
	}
}

// queue puts n in the due heap and wakes the loop. Callers hold p.mu.
func (p *dnsPool) queue(n *dnsName) {
	heap.Push(&p.due, n)
	n.queued = true
	p.poke()
}

func (p *dnsPool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run starts a lookup of the name granted next (take) whenever fewer than
// dnsLookups run, until p stops. However many names there are, and
// however many never answer, the pool runs at most dnsLookups lookups
// (three goroutines each) and two goroutines of its own.
func (p *dnsPool) run() {
	go p.tick()
	t := time.NewTimer(dnsMaxTTL)
	defer t.Stop()
	for {
		select {
		case p.free <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		n, wait := p.next(time.Now())
		if n != nil {
			go func() {
				defer func() { <-p.free }()
				p.refresh(n)
			}()
			continue
		}
		<-p.free
		t.Reset(wait)
		select {
		case <-t.C:
		case <-p.wake:
		case <-p.ctx.Done():
			return
		}
	}
}

// tick sets p's clock every second until p stops.
func (p *dnsPool) tick() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.clock.Store(now.Unix())
		case <-p.ctx.Done():
			return
		}
	}
}

// next makes the names due by now ready, and grants the next lookup (take),
// else says how long until a name falls due.
func (p *dnsPool) next(now time.Time) (*dnsName, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.due) > 0 && !p.due[0].due.After(now) {
		n := heap.Pop(&p.due).(*dnsName)
		n.queued = false
		if !n.gone {
			p.makeReady(n)
		}
	}
	if n := p.take(); n != nil {
		return n, 0
	}
	if len(p.due) > 0 {
		return nil, p.due[0].due.Sub(now)
	}
	return nil, dnsMaxTTL
}

// refresh looks n up and takes its answer.
func (p *dnsPool) refresh(n *dnsName) {
	var a4, a6 answer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a4 = p.lookup(n.fqdn, dns.TypeA) }()
	go func() { defer wg.Done(); a6 = p.lookup(n.fqdn, dns.TypeAAAA) }()
	wg.Wait()
	if p.ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	next := p.settle(n, a4, a6, time.Now())
	if !n.gone {
		n.due = time.Now().Add(next)
		p.queue(n)
	}
}

// dnsResult is what became of a lookup, as counted in
// caddy_http_ip_allowlist_dns_lookups_total.
type dnsResult uint8

const (
	dnsAnswered dnsResult = iota // an answer taken (no address included)
	dnsFailed                    // a family's lookup failed
	dnsRefused                   // the answer was refused (too many addresses)
)

var dnsResultNames = [...]string{dnsAnswered: "answered", dnsFailed: "failed", dnsRefused: "refused"}

// answer is one family's lookup: addresses and how long they may be kept,
// or err when there was no answer to take.
type answer struct {
	addrs []netip.Addr
	ttl   time.Duration
	err   error
}

// settle takes n's answers and says when to resolve it again: a family
// whose lookup failed keeps its last good addresses, an answer of more than
// maxNameAddrs is refused whole, and each change of state is logged once.
// Callers hold p.mu.
func (p *dnsPool) settle(n *dnsName, a4, a6 answer, now time.Time) time.Duration {
	old := n.state.Load()
	if old == nil {
		old = &nameState{}
	}
	next := &nameState{v4: old.v4, v6: old.v6, resolved: old.resolved, tried: now}
	var failures []string
	if a4.err != nil {
		failures = append(failures, "A: "+a4.err.Error())
	}
	if a6.err != nil {
		failures = append(failures, "AAAA: "+a6.err.Error())
	}
	took := len(failures) < 2
	v4, v6 := old.v4, old.v6
	if a4.err == nil {
		v4 = a4.addrs
	}
	if a6.err == nil {
		v6 = a6.addrs
	}
	var ttl time.Duration
	if len(failures) == 0 {
		n.fails = 0
		ttl = min(max(min(a4.ttl, a6.ttl), dnsMinTTL), dnsMaxTTL)
	} else {
		n.fails++
		ttl = min(dnsRetry<<min(n.fails-1, 8), dnsMaxRetry)
		// A family that answered is asked again at its own TTL: a server
		// that fails AAAA questions does not slow the A records' changes.
		for _, a := range []answer{a4, a6} {
			if a.err == nil {
				ttl = min(ttl, max(a.ttl, dnsMinTTL))
			}
		}
	}
	next.ttl = ttl
	log := p.logger()
	if took && len(v4)+len(v6) > maxNameAddrs {
		next.refusal = fmt.Sprintf("resolves to %d addresses, more than %d", len(v4)+len(v6), maxNameAddrs)
		if !n.refused {
			n.refused = true
			log.Warn("dns name refused: it resolves to more addresses than a name may admit; its last good addresses keep serving",
				zap.String("dns_name", n.name), zap.Int("addresses", len(v4)+len(v6)), zap.Int("max", maxNameAddrs),
				zap.Int("kept", len(old.v4)+len(old.v6)))
		}
		took = false
	} else if took {
		if n.refused {
			n.refused = false
			log.Info("dns name no longer refused", zap.String("dns_name", n.name), zap.Int("addresses", len(v4)+len(v6)))
		}
		changed := old.tried.IsZero() || !slices.Equal(v4, old.v4) || !slices.Equal(v6, old.v6)
		next.v4, next.v6 = v4, v6
		if len(failures) == 0 {
			next.resolved = now
		}
		switch {
		case len(v4)+len(v6) == 0 && len(failures) == 0 && !n.empty:
			n.empty = true
			log.Warn("dns name resolves to no address: it matches nothing", zap.String("dns_name", n.name))
		case len(v4)+len(v6) > 0 && changed:
			n.empty = false
			log.Info("dns name resolved", zap.String("dns_name", n.name),
				zap.Strings("addresses", addrStrings(v4, v6, 16)), zap.Int("count", len(v4)+len(v6)),
				zap.Duration("ttl", ttl))
		}
	}
	if len(failures) > 0 {
		next.failing = strings.Join(failures, "; ")
		next.failedAt = n.failed
		if n.failed.IsZero() {
			next.failedAt = now
			n.failed = now
			msg := "dns name lookup failed; its last good addresses keep serving"
			if len(old.v4)+len(old.v6) == 0 && old.resolved.IsZero() {
				msg = "dns name lookup failed; it matches nothing until it resolves"
			}
			log.Warn(msg, zap.String("dns_name", n.name), zap.String("error", next.failing),
				zap.Int("kept", len(next.v4)+len(next.v6)), zap.Duration("retry_in", ttl))
		}
	} else if !n.failed.IsZero() {
		log.Info("dns name lookup recovered", zap.String("dns_name", n.name),
			zap.Duration("failed_for", now.Sub(n.failed).Round(time.Second)))
		n.failed = time.Time{}
	}
	switch {
	case next.refusal != "":
		p.counted(dnsRefused)
	case len(failures) > 0:
		p.counted(dnsFailed)
	default:
		p.counted(dnsAnswered)
	}
	// Past dnsMaxStale without a good answer, a family's last good
	// addresses are let go of; one that answers keeps its own.
	next.good4, next.good6 = old.good4, old.good6
	if took {
		if a4.err == nil {
			next.good4 = now
		}
		if a6.err == nil {
			next.good6 = now
		}
	}
	next.keep4 = next.good4.Add(dnsMaxStale).Unix()
	next.keep6 = next.good6.Add(dnsMaxStale).Unix()
	var stale []string
	if len(next.v4) > 0 && now.Sub(next.good4) > dnsMaxStale {
		next.v4, stale = nil, append(stale, "A")
	}
	if len(next.v6) > 0 && now.Sub(next.good6) > dnsMaxStale {
		next.v6, stale = nil, append(stale, "AAAA")
	}
	switch {
	case len(stale) > 0 && !n.stale:
		n.stale = true
		log.Warn("dns name has had no good answer for too long: its last good addresses no longer admit; it matches nothing until it resolves",
			zap.String("dns_name", n.name), zap.Strings("families", stale), zap.Duration("max_stale", dnsMaxStale))
	case len(failures) == 0 && next.refusal == "":
		n.stale = false
	}
	if n.state.Swap(next) == nil {
		close(n.looked)
	}
	return ttl
}

// addrStrings is up to n of the addresses, as text.
func addrStrings(v4, v6 []netip.Addr, n int) []string {
	out := make([]string, 0, min(n, len(v4)+len(v6)))
	for _, a := range slices.Concat(v4, v6) {
		if len(out) == n {
			break
		}
		out = append(out, a.String())
	}
	return out
}

// lookup resolves one family of fqdn, following CNAMEs.
func (p *dnsPool) lookup(fqdn string, qtype uint16) answer {
	if err := p.servers.Load().err; err != nil {
		return answer{err: err}
	}
	ctx, cancel := context.WithTimeout(p.ctx, dnsDeadline)
	defer cancel()
	target := fqdn
	ttl := dnsMaxTTL
	for hop := 0; hop <= dnsMaxCNAMEs; hop++ {
		r, err := p.exchange(ctx, target, qtype)
		if err != nil {
			return answer{err: err}
		}
		if r.Rcode == dns.RcodeNameError {
			return answer{ttl: min(ttl, negativeTTL(r))}
		}
		addrs, next, t := chase(r, target, qtype)
		ttl = min(ttl, t)
		if len(addrs) > 0 {
			return answer{addrs: addrs, ttl: ttl}
		}
		if next == "" {
			return answer{ttl: min(ttl, negativeTTL(r))} // no data
		}
		target = next
	}
	return answer{err: fmt.Errorf("more than %d CNAMEs", dnsMaxCNAMEs)}
}

// exchange asks each server in turn until one answers NOERROR or NXDOMAIN.
func (p *dnsPool) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	var last error
	for _, server := range p.servers.Load().servers {
		if ctx.Err() != nil {
			last = fmt.Errorf("no answer within %v", dnsDeadline)
			break
		}
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.SetEdns0(1232, false)
		r, err := exchangeWith(ctx, "udp", m, server)
		if err == nil && r.Truncated {
			r, err = exchangeWith(ctx, "tcp", m, server)
		}
		switch {
		case err != nil:
			last = fmt.Errorf("%s: %w", server, err)
		case len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, name) || r.Question[0].Qtype != qtype:
			last = fmt.Errorf("%s: the answer is to another question", server)
		case r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError:
			last = fmt.Errorf("%s: %s", server, dns.RcodeToString[r.Rcode])
		default:
			return r, nil
		}
	}
	if last == nil {
		last = errors.New("no resolver")
	}
	return nil, last
}

func exchangeWith(ctx context.Context, network string, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: dnsTimeout}
	r, _, err := c.ExchangeContext(ctx, m, server)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, errors.New("no answer (timeout)")
		}
	}
	return r, err
}

// chase follows the CNAMEs from target in r's answer and returns the
// addresses of qtype at the end of the chain, sorted, and the least TTL on
// the way. With no address there, next is where the chain ends, to be asked
// in turn; "" when no CNAME was followed (the name has no such record).
func chase(r *dns.Msg, target string, qtype uint16) (addrs []netip.Addr, next string, ttl time.Duration) {
	ttl = dnsMaxTTL
	followed := false
	for hop := 0; hop < dnsMaxCNAMEs; hop++ {
		found := false
		for _, rr := range r.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, target) {
				target, found, followed = c.Target, true, true
				ttl = min(ttl, time.Duration(c.Hdr.Ttl)*time.Second)
				break
			}
		}
		if !found {
			break
		}
	}
	for _, rr := range r.Answer {
		if !strings.EqualFold(rr.Header().Name, target) || rr.Header().Rrtype != qtype {
			continue
		}
		var ip net.IP
		switch rec := rr.(type) {
		case *dns.A:
			ip = rec.A
		case *dns.AAAA:
			ip = rec.AAAA
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		if qtype == dns.TypeAAAA && a.Is4In6() {
			continue // client_ip unmaps such an address: it is no IPv6 client's
		}
		a = a.Unmap()
		if !clientAddress(a) || a.Is4() != (qtype == dns.TypeA) {
			continue
		}
		addrs = append(addrs, a)
		ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 && followed {
		return nil, target, ttl
	}
	return addrs, "", ttl
}

// clientAddress reports whether a can be a client's address: the
// unspecified, multicast and broadcast addresses a name may resolve to (a
// sinkhole's 0.0.0.0) are no one's, and are left out.
func clientAddress(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// negativeTTL is how long an answer without addresses is kept: the SOA's
// negative TTL when the answer has one.
func negativeTTL(r *dns.Msg) time.Duration {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return dnsMinTTL
}

// dueHeap orders names by when they fall due.
type dueHeap []*dnsName

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(*dnsName)) }
func (h *dueHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return n
}

// dnsHold is the names one handler holds in its pool: every name its
// tables have listed, until they list it no more (keep) or the handler is
// cleaned up (close).
type dnsHold struct {
	pool    *dnsPool // nil once closed
	logger  *zap.Logger
	metrics atomic.Pointer[metrics] // set once the handler has them
	mu      sync.Mutex
	names   map[string]*dnsName
}

// dnsAppID is the app that starts the pools when the config starts.
const dnsAppID = "ip_allowlist_dns"

func init() {
	caddy.RegisterModule(&storeApp{id: dnsAppID})
}

// openDNS gives h its hold on the pool of its resolvers, started with the
// config.
func (h *Handler) openDNS(ctx caddy.Context) error {
	servers, err := CheckResolvers(h.Resolvers)
	if err != nil {
		return err
	}
	if len(servers) == 0 {
		servers = nil
	}
	h.dns = &dnsHold{logger: h.logger, names: map[string]*dnsName{}}
	p := openDNSPool(servers, h.dns)
	if err := startWithConfig(ctx, dnsAppID, p); err != nil {
		h.dns.close()
		h.dns = nil
		return err
	}
	return nil
}

// name returns the pool's name, held by d from now on, and counts tenant
// among its tenants.
func (d *dnsHold) name(name string, tenant dnsTenant) *dnsName {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.names[name]; ok {
		if d.pool != nil {
			d.pool.also(n, tenant)
		}
		return n
	}
	if d.pool == nil {
		// The handler is cleaned up, and a build that began before
		// compiles still (a watched file, a merge): its table is never
		// published, and its names never resolve.
		n := &dnsName{name: name, boxed: name, looked: make(chan struct{})}
		close(n.looked)
		return n
	}
	n := d.pool.acquire(name, tenant)
	d.names[name] = n
	return n
}

// maxReleaseScan bounds the named tokens a change looks through to let
// go of the names it removed; past it, the next full build does.
const maxReleaseScan = 100_000

// released lets go of the names label's policy in old listed that no table
// of v lists: a change removed them. Callers hold h.rebuild, and no merge
// compiles meanwhile (its table would list names let go of).
func (d *dnsHold) released(old, v *view, label string) {
	if t, p := old.byLabel(label); p != nil && p.named {
		d.letGo(v, t.dns[p.label].names)
	}
}

// letGo lets go of those of names that no table of v lists (a masked base
// policy, which no request reaches, does not count), unless v's base has
// more than maxReleaseScan named tokens to look through: the next full
// build lets go of them then. Callers hold h.rebuild, and no merge
// compiles meanwhile.
func (d *dnsHold) letGo(v *view, names []*dnsName) {
	if len(names) == 0 || len(v.base.dns) > maxReleaseScan {
		return
	}
	live := v.liveNames()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pool == nil {
		return
	}
	for _, n := range names {
		if !live[n] && d.names[n.name] == n {
			d.pool.release(n)
			delete(d.names, n.name)
		}
	}
}

// entryNames are those of tp's dns: entries that d holds: the names a
// change to tp acquired, for letGo when the change is refused.
func (d *dnsHold) entryNames(tp *TokenPolicy) []*dnsName {
	if tp == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*dnsName
	for _, e := range tp.Allow {
		if name, ok := strings.CutPrefix(e, DNSPrefix); ok {
			if n := d.names[name]; n != nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// liveNames are the names a request may read in v: those of its tables'
// policies, less a masked base policy's, which no request reaches.
func (v *view) liveNames() map[*dnsName]bool {
	masked := make(map[uint32]bool, len(v.masked))
	for i := range v.masked {
		masked[v.base.policies[i].label] = true
	}
	live := map[*dnsName]bool{}
	v.base.addNamesTo(live, masked)
	if v.over != nil {
		v.over.addNamesTo(live, nil)
	}
	return live
}

// keep releases the names that no table of v lists.
func (d *dnsHold) keep(v *view) {
	live := v.liveNames()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pool == nil {
		return
	}
	for name, n := range d.names {
		if !live[n] {
			d.pool.release(n)
			delete(d.names, name)
		}
	}
}

// close releases every name and the pool.
func (d *dnsHold) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, n := range d.names {
		d.pool.release(n)
		delete(d.names, name)
	}
	if d.pool != nil {
		d.pool.close(d)
		d.pool = nil
	}
}

// dnsRule is a token's names, whose they are, and its whole deny list,
// which applies to the names' addresses as to its ranges.
type dnsRule struct {
	names  []*dnsName
	deny   setRef
	tenant dnsTenant
}

// checkNameQuota counts one more dns: entry of the token being compiled,
// and applies the quotas: dnsNamesPerToken for the token,
// dnsNamesPerOwner for all its owner's tokens together, counted where
// names are resolved (a handler's tables, not a writer's check).
func (c *compiler) checkNameQuota() error {
	c.nameCount++
	if c.nameCount > dnsNamesPerToken {
		return fmt.Errorf("more than %d dns: entries in one token; list the addresses as ranges, or split the names among tokens", dnsNamesPerToken)
	}
	if owner := c.tenant.owner; owner != "" && c.dns != nil && c.ownerNames[owner]+c.nameCount > dnsNamesPerOwner {
		return fmt.Errorf("owner %q: more than %d dns: entries in its tokens together", owner, dnsNamesPerOwner)
	}
	return nil
}

// countNames adds the dns: entries of the token just compiled to its
// owner's.
func (c *compiler) countNames(owner string) {
	if owner == "" || c.nameCount == 0 || c.dns == nil {
		return
	}
	if c.ownerNames == nil {
		c.ownerNames = map[string]int{}
	}
	c.ownerNames[owner] += c.nameCount
}

// ownerNames counts the names that owner's tokens list in v, but for
// label's: what a change to label adds to (checkNameQuota).
func (v *view) ownerNames(owner, label string) int {
	count := 0
	add := func(t *table, skip map[uint32]bool) {
		for l, rule := range t.dns {
			if rule.tenant.owner == owner && rule.tenant.label != label && !skip[l] {
				count += len(rule.names)
			}
		}
	}
	masked := make(map[uint32]bool, len(v.masked))
	for i := range v.masked {
		masked[v.base.policies[i].label] = true
	}
	add(v.base, masked)
	if v.over != nil {
		add(v.over, nil)
	}
	return count
}

// checkNames applies a named policy's names to addr, once its ranges have
// not admitted it: the name that admits it, unless deny holds it.
func (t *table) checkNames(p *policy, addr netip.Addr) (reason, *dnsName) {
	if t.contains(p.denied, addr) {
		return reasonIPDenied, nil
	}
	rule := t.dns[p.label]
	for _, n := range rule.names {
		if n.contains(addr) {
			if t.contains(rule.deny, addr) {
				return reasonIPDenied, nil
			}
			return reasonAllowed, n
		}
	}
	return reasonIPNotAllowed, nil
}

// awaitNames waits for the first lookup of each of p's names that has had
// none, and reports whether there was one: a request refused by a token's
// ranges when Caddy starts, or a name was just added, so that the token is
// not refused in the moment before its names resolve. The wait is bounded
// by the first such name's firstWait: a lookup's time on the pool's
// servers (both families ask at once), and a second.
func (t *table) awaitNames(ctx context.Context, p *policy) bool {
	var timer *time.Timer
	waited := false
	for _, n := range t.dns[p.label].names {
		if n.state.Load() != nil {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(n.firstWait)
			defer timer.Stop()
		}
		waited = true
		select {
		case <-n.looked:
		case <-timer.C:
			return true
		case <-ctx.Done():
			return true
		}
	}
	return waited
}

// nameStatus is a name's state as the console and the check route show
// it.
type nameStatus struct {
	Name      string    `json:"name"`
	Addresses []string  `json:"addresses"`
	Resolved  time.Time `json:"resolved,omitzero"`
	TTL       string    `json:"ttl,omitempty"`
	Failing   string    `json:"failing,omitempty"`
	// When the lookups began to fail, while they do.
	FailingSince time.Time `json:"failing_since,omitzero"`
	Refused      string    `json:"refused,omitempty"`
	// pending: not looked up yet; resolved; failing; refused; empty.
	State string `json:"state"`
}

func (n *dnsName) status() nameStatus {
	st := nameStatus{Name: n.name, Addresses: []string{}, State: "pending"}
	s := n.state.Load()
	if s == nil {
		return st
	}
	st.Addresses = addrStrings(s.v4, s.v6, maxNameAddrs)
	st.Resolved, st.Failing, st.Refused, st.FailingSince = s.resolved, s.failing, s.refusal, s.failedAt
	st.TTL = s.ttl.String()
	switch {
	case s.refusal != "":
		st.State = "refused"
	case s.failing != "":
		st.State = "failing"
	case len(st.Addresses) == 0:
		st.State = "empty"
	default:
		st.State = "resolved"
	}
	return st
}

// names lists the status of p's names, for the console and check.
func (t *table) names(p *policy) []nameStatus {
	if !p.named {
		return nil
	}
	rule := t.dns[p.label]
	out := make([]nameStatus, 0, len(rule.names))
	for _, n := range rule.names {
		out = append(out, n.status())
	}
	return out
}
