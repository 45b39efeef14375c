package testkit

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is an authoritative DNS server on a free loopback port, over
// UDP and TCP, for the names set on it: the resolver that the tests of
// dns: entries give Caddy. A name not set is answered NXDOMAIN.
type DNSServer struct {
	Addr string // 127.0.0.1:port

	mu      sync.Mutex
	names   map[string]*dnsRecord
	silent  bool
	delay   time.Duration
	queries map[string][]time.Time
	servers []*dns.Server
}

type dnsRecord struct {
	addrs []netip.Addr
	cname string
	ttl   uint32
	rcode int
	// failing: question types answered with an rcode instead
	failing map[uint16]int
	// delay: a query about the name is answered this late, with its
	// CNAME alone, as by a slow zone of its own (SetSlowChain)
	delay time.Duration
}

// DNS starts a DNSServer that stops when the test ends.
func DNS(t testing.TB) *DNSServer {
	t.Helper()
	s, err := StartDNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// StartDNS starts a DNSServer; Close stops it.
func StartDNS() (*DNSServer, error) {
	s := &DNSServer{names: map[string]*dnsRecord{}, queries: map[string][]time.Time{}}
	var err error
	for range 20 { // the TCP port may be taken: try another
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		var l net.Listener
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			continue
		}
		s.Addr = pc.LocalAddr().String()
		s.servers = []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: l, Handler: s}}
		for _, srv := range s.servers {
			go srv.ActivateAndServe()
		}
		return s, nil
	}
	return nil, fmt.Errorf("no free port for UDP and TCP: %w", err)
}

// Close stops the server.
func (s *DNSServer) Close() {
	for _, srv := range s.servers {
		srv.Shutdown()
	}
}

// Set makes name resolve to addrs (IPv4 and IPv6 addresses), with ttl
// seconds; no addrs: the name exists, with no address.
func (s *DNSServer) Set(name string, ttl uint32, addrs ...string) {
	r := &dnsRecord{ttl: ttl}
	for _, a := range addrs {
		r.addrs = append(r.addrs, netip.MustParseAddr(a))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[key(name)] = r
}

// SetCNAME makes name an alias of target.
func (s *DNSServer) SetCNAME(name, target string, ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[key(name)] = &dnsRecord{cname: dns.Fqdn(target), ttl: ttl}
}

// SetSlowChain makes name the start of a chain of hops CNAMEs, to
// name-c1 … name-c<hops>, the last resolving to addrs: every query about
// a name of the chain is answered perQuery late, with that hop alone, so
// that the resolver asks hops+1 queries in a row, as of a chain of slow
// zones.
func (s *DNSServer) SetSlowChain(name string, hops int, perQuery time.Duration, ttl uint32, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := name
	for i := 1; i <= hops; i++ {
		to := fmt.Sprintf("%s-c%d", name, i)
		s.names[key(from)] = &dnsRecord{cname: key(to), ttl: ttl, delay: perQuery}
		from = to
	}
	r := &dnsRecord{ttl: ttl, delay: perQuery}
	for _, a := range addrs {
		r.addrs = append(r.addrs, netip.MustParseAddr(a))
	}
	s.names[key(from)] = r
}

// SetRcode makes every question about name answered with rcode, such as
// dns.RcodeServerFailure.
func (s *DNSServer) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.names[key(name)] = &dnsRecord{rcode: rcode}
}

// FailType makes questions of qtype (dns.TypeAAAA, say) about name, set
// before, answered with rcode; the other types are answered as before.
func (s *DNSServer) FailType(name string, qtype uint16, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.names[key(name)]
	if r.failing == nil {
		r.failing = map[uint16]int{}
	}
	r.failing[qtype] = rcode
}

// Silent makes the server stop answering (true): queries are read and
// dropped, as by a server that is down behind a firewall; false answers
// again.
func (s *DNSServer) Silent(silent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.silent = silent
}

// Delay makes the server answer each query d after it came.
func (s *DNSServer) Delay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Queries returns when name was asked about (A or AAAA), answered or not.
func (s *DNSServer) Queries(name string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.queries[key(name)]...)
}

// key is name as the server keeps it: lower case, fully qualified.
func key(name string) string { return dns.Fqdn(strings.ToLower(name)) }

func soa(ttl uint32) *dns.SOA {
	return &dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns: "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 600, Minttl: ttl}
}

// ServeDNS answers one query.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	if len(q.Question) != 1 {
		return
	}
	question := q.Question[0]
	name := strings.ToLower(question.Name)
	s.mu.Lock()
	s.queries[name] = append(s.queries[name], time.Now())
	silent, delay := s.silent, s.delay
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	for hop := 0; hop < 10; hop++ {
		r := s.names[name]
		if r == nil {
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, soa(30))
			break
		}
		if r.rcode != 0 {
			m.Rcode = r.rcode
			break
		}
		if rcode, ok := r.failing[question.Qtype]; ok {
			m.Rcode = rcode
			break
		}
		hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: r.ttl}
		if hop == 0 {
			delay = max(delay, r.delay)
		}
		if r.cname != "" {
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr, Target: r.cname})
			name = r.cname
			if r.delay > 0 {
				break // a slow zone's: the target is asked on its own
			}
			continue
		}
		answered := len(m.Answer)
		for _, a := range r.addrs {
			switch {
			case a.Is4() && question.Qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case a.Is6() && question.Qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
		if len(m.Answer) == answered { // no data: the negative TTL is the name's
			m.Ns = append(m.Ns, soa(r.ttl))
		}
		break
	}
	s.mu.Unlock()
	if silent {
		return
	}
	time.Sleep(delay)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := 512
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}
