package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// The dns part: a real Caddy whose token is allowed from dns:dnsBenchName,
// resolved through a testkit DNS server. -dns-samples times the record is
// changed to a new address, each at a random point of the answer's TTL,
// and the new address is polled every dnsPoll until it is admitted. Each
// sample's change→admitted is split in two by the first query the server
// saw after the change: the wait for the TTL to run out, and the plugin's
// own latency from that query to the first admitted request, of which the
// part until the answer is in force is told by Caddy's log. Clients are
// bound to 127.0.0.x (Linux routes all of 127.0.0.0/8 to loopback), so
// each request comes from the address chosen, with no proxy header.
var (
	dnsSamples = flag.Int("dns-samples", 3, "record changes timed in the dns part, each up to the TTL (30 s)")
	// The hostile tenant: -dns-hostile tokens of DNSNamesPerToken names
	// each, every name a chain of 8 slow CNAMEs (0.64 s a query), more
	// than the lookups can keep up with at a 30 s TTL.
	dnsHostile = flag.Int("dns-hostile", 16, "tokens of 64 slow names each beside the timed one in the dns part's second run (0: no second run)")
)

const (
	dnsBenchName  = "api.bench.test"
	dnsBenchToken = "dns-bench-token-0123456789"
	// dnsBenchTTL is the record's TTL, in seconds: the plugin's least
	// (dnsMinTTL), so it is the answer's lifetime as given.
	dnsBenchTTL = 30
	dnsPoll     = 10 * time.Millisecond
)

// dnsAddr is the address the record holds at sample i; 0 is the first.
func dnsAddr(i int) string { return fmt.Sprintf("127.0.0.%d", 10+i) }

// dnsSample is one record change's figures.
type dnsSample struct {
	addr     string
	into     time.Duration // from the lookup in force to the change
	admitted time.Duration // change → first admitted answer
	ttlWait  time.Duration // change → first query after it
	plugin   time.Duration // that query → first admitted answer
	// taken is from that query to when Caddy logged the new answer
	// ("dns name resolved", written as the answer is put in force): the
	// plugin's own, without the wait for the next poll.
	taken    time.Duration
	interval time.Duration // the lookup in force → the one after the change
	refused  int           // polls refused before the admission
}

func dnsPart(dir string) error {
	if *dnsSamples < 1 {
		return fmt.Errorf("-dns-samples %d: want at least 1", *dnsSamples)
	}
	if *dnsSamples > 240 {
		return fmt.Errorf("-dns-samples %d: want at most 240 (127.0.0.10 to 127.0.0.250)", *dnsSamples)
	}
	srv, err := testkit.StartDNS()
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.Set(dnsBenchName, dnsBenchTTL, dnsAddr(0))

	// Every answer says the reason and the name that admitted, if any.
	route := "\tip_allowlist {\n\t\tresolvers " + srv.Addr + "\n\t\tunlisted_tokens none\n" +
		"\t\ttoken " + dnsBenchToken + " {\n\t\t\tlabel dns-bench\n\t\t\tallow dns:" + dnsBenchName + "\n\t\t}\n\t}\n" + dnsRespond
	began := time.Now()
	s, err := start(dir, "dns", route)
	if err != nil {
		return err
	}
	defer s.stop()

	from := reasonFrom(s.url, dnsBenchToken)
	const admitted = "allowed " + dnsBenchName
	if _, ok := testkit.Wait(30*time.Second, func() bool { return from(dnsAddr(0)) == admitted }); !ok {
		return fmt.Errorf("%s not admitted by dns:%s within 30 s of the start (%q)", dnsAddr(0), dnsBenchName, from(dnsAddr(0)))
	}
	first := time.Since(began)
	fmt.Printf("dns: a real Caddy, token allowed from dns:%s, resolved through a test DNS server on %s; TTL %d s; %d record changes, each at a random point of the TTL, the new address polled every %s (clients bound to 127.0.0.x)\n",
		dnsBenchName, srv.Addr, dnsBenchTTL, *dnsSamples, dnsPoll)
	fmt.Printf("dns: load average at the start %s\n", loadAverage())
	fmt.Printf("dns:   %s admitted %.2fs after Caddy was started (%.2fs after it listened)\n", dnsAddr(0), first.Seconds(), (first - s.ready).Seconds())

	var samples []*dnsSample
	for i := 1; i <= *dnsSamples; i++ {
		old, addr := dnsAddr(i-1), dnsAddr(i)
		// The lookup in force: the last query, once the two of a lookup
		// (A and AAAA) are in.
		inForce, err := lastQuery(srv)
		if err != nil {
			return err
		}
		// A random point of the TTL, a second short of its end, so the
		// change is made before the next lookup.
		into := time.Duration(rand.Int64N(int64((dnsBenchTTL - 1) * time.Second)))
		time.Sleep(time.Until(inForce.Add(into)))
		if got := from(old); got != admitted {
			return fmt.Errorf("sample %d: before the change, %s got %q, want %q", i, old, got, admitted)
		}
		if got := from(addr); got != "ip_not_allowed" {
			return fmt.Errorf("sample %d: before the change, %s got %q, want ip_not_allowed", i, addr, got)
		}
		changed := time.Now()
		if q := queriesAfter(srv, inForce); len(q) > 0 && q[0].Before(changed) {
			return fmt.Errorf("sample %d: a lookup at %s, before the change: the TTL ran out sooner than %d s", i, q[0].Sub(inForce), dnsBenchTTL)
		}
		srv.Set(dnsBenchName, dnsBenchTTL, addr)

		sm := &dnsSample{addr: addr, into: changed.Sub(inForce)}
		deadline := changed.Add(2 * dnsBenchTTL * time.Second)
		tick := time.NewTicker(dnsPoll)
		for {
			got := from(addr)
			if got == admitted {
				sm.admitted = time.Since(changed)
				break
			}
			if got != "ip_not_allowed" {
				tick.Stop()
				return fmt.Errorf("sample %d: %s got %q while waiting, want ip_not_allowed", i, addr, got)
			}
			sm.refused++
			if time.Now().After(deadline) {
				tick.Stop()
				return fmt.Errorf("sample %d: %s not admitted within %s of the change", i, addr, 2*dnsBenchTTL*time.Second)
			}
			<-tick.C
		}
		tick.Stop()
		q := queriesAfter(srv, changed)
		if len(q) == 0 {
			return fmt.Errorf("sample %d: %s admitted with no query after the change", i, addr)
		}
		sm.ttlWait = q[0].Sub(changed)
		sm.plugin = sm.admitted - sm.ttlWait
		sm.interval = q[0].Sub(inForce)
		taken, err := resolvedAt(filepath.Join(dir, "dns.log"), addr)
		if err != nil {
			return fmt.Errorf("sample %d: %w", i, err)
		}
		sm.taken = taken.Sub(q[0])
		if got := from(old); got != "ip_not_allowed" {
			return fmt.Errorf("sample %d: after the change, the old address %s got %q, want ip_not_allowed", i, old, got)
		}
		fmt.Printf("dns:   change %d: to %s at %5.2fs into the TTL: admitted after %6.3fs = %6.3fs waiting for the TTL + %s ms in the plugin (%s ms to the answer taken, by Caddy's log; %d polls refused before; lookups %.3fs apart); %s refused after\n",
			i, addr, sm.into.Seconds(), sm.admitted.Seconds(), sm.ttlWait.Seconds(), ms(sm.plugin), ms(sm.taken), sm.refused, sm.interval.Seconds(), old)
		samples = append(samples, sm)
	}

	pick := func(f func(*dnsSample) time.Duration) []time.Duration {
		out := make([]time.Duration, len(samples))
		for i, sm := range samples {
			out[i] = f(sm)
		}
		return out
	}
	total := pick(func(sm *dnsSample) time.Duration { return sm.admitted })
	wait := pick(func(sm *dnsSample) time.Duration { return sm.ttlWait })
	own := pick(func(sm *dnsSample) time.Duration { return sm.plugin })
	taken := pick(func(sm *dnsSample) time.Duration { return sm.taken })
	fmt.Printf("dns: change → admitted over %d changes: median %.3fs, max %.3fs (bound: the TTL, %d s, + the plugin's own)\n",
		len(samples), quantile(total, 0.5).Seconds(), slices.Max(total).Seconds(), dnsBenchTTL)
	fmt.Printf("dns:   of it waiting for the TTL: median %.3fs, max %.3fs\n", quantile(wait, 0.5).Seconds(), slices.Max(wait).Seconds())
	fmt.Printf("dns:   the plugin's own, from the first query after the change to the first admitted answer (polled every %s): median %s ms, max %s ms; of it to the answer taken (Caddy's log line \"dns name resolved\"): median %s ms, max %s ms\n",
		dnsPoll, ms(quantile(own, 0.5)), ms(slices.Max(own)), ms(quantile(taken, 0.5)), ms(slices.Max(taken)))
	fmt.Printf("dns: load average at the end %s\n", loadAverage())
	if *dnsHostile > 0 {
		return dnsHostilePart(dir)
	}
	return nil
}

// dnsHostilePart times a record change of the victim token's name while
// -dns-hostile other tokens hold 64 names each whose lookups take 5.76 s
// (9 queries of 0.64 s), and times how often the victim's name is looked
// up: the TTL and at most one lookup's time (6 s), whatever the others
// hold.
func dnsHostilePart(dir string) error {
	const (
		victim   = "victim.bench.test"
		victimTk = "dns-victim-token-0123456789"
		perToken = 64
		perQuery = 640 * time.Millisecond
		hops     = 8
	)
	srv, err := testkit.StartDNS()
	if err != nil {
		return err
	}
	defer srv.Close()
	srv.Set(victim, dnsBenchTTL, dnsAddr(0))
	var b strings.Builder
	fmt.Fprintf(&b, "\tip_allowlist {\n\t\tresolvers %s\n\t\tunlisted_tokens none\n", srv.Addr)
	fmt.Fprintf(&b, "\t\ttoken %s {\n\t\t\tlabel victim\n\t\t\tallow dns:%s\n\t\t}\n", victimTk, victim)
	for i := range *dnsHostile {
		fmt.Fprintf(&b, "\t\ttoken dns-hostile-token-%04d-0123456789 {\n\t\t\tlabel hostile-%04d\n\t\t\tallow", i, i)
		for j := range perToken {
			name := fmt.Sprintf("h%04d-%02d.hostile.test", i, j)
			srv.SetSlowChain(name, hops, perQuery, dnsBenchTTL, "192.0.2.1")
			b.WriteString(" dns:" + name)
		}
		b.WriteString("\n\t\t}\n")
	}
	b.WriteString("\t}\n" + dnsRespond)
	began := time.Now()
	s, err := start(dir, "dns-hostile", b.String())
	if err != nil {
		return err
	}
	defer s.stop()
	from := reasonFrom(s.url, victimTk)
	admitted := "allowed " + victim
	if _, ok := testkit.Wait(60*time.Second, func() bool { return from(dnsAddr(0)) == admitted }); !ok {
		return fmt.Errorf("hostile: %s not admitted by dns:%s within 60 s of the start (%q)", dnsAddr(0), victim, from(dnsAddr(0)))
	}
	fmt.Printf("dns: hostile tenant: %d tokens of %d names each (%d), every lookup of theirs %d queries of %s in a row (%s), TTL %d s, beside one token of one name; same server, same resolvers\n",
		*dnsHostile, perToken, *dnsHostile*perToken, hops+1, perQuery, time.Duration(hops+1)*perQuery, dnsBenchTTL)
	fmt.Printf("dns:   the victim's name admitted %.2fs after Caddy was started; load average %s\n", time.Since(began).Seconds(), loadAverage())
	var admits []time.Duration
	for i := 1; i <= *dnsSamples; i++ {
		old, addr := dnsAddr(i-1), dnsAddr(i)
		time.Sleep(time.Duration(rand.Int64N(int64(dnsBenchTTL * time.Second))))
		changed := time.Now()
		srv.Set(victim, dnsBenchTTL, addr)
		if _, ok := testkit.Wait(3*dnsBenchTTL*time.Second, func() bool { return from(addr) == admitted }); !ok {
			return fmt.Errorf("hostile: change %d: %s not admitted within %d s", i, addr, 3*dnsBenchTTL)
		}
		admits = append(admits, time.Since(changed))
		fmt.Printf("dns:   change %d: to %s admitted after %6.3fs (bound: the TTL, %d s, + one lookup, 6 s, + one lookup's wait, 6 s); %s %s after\n",
			i, addr, admits[len(admits)-1].Seconds(), dnsBenchTTL, old, from(old))
	}
	q := srv.Queries(victim)
	var gaps []time.Duration
	for i := 2; i+1 < len(q); i += 2 { // A and AAAA: one lookup
		gaps = append(gaps, q[i].Sub(q[i-2]))
	}
	hostile := 0 // queries of the names themselves: two a lookup
	for i := range *dnsHostile {
		for j := range perToken {
			hostile += len(srv.Queries(fmt.Sprintf("h%04d-%02d.hostile.test", i, j)))
		}
	}
	elapsed := time.Since(began)
	fmt.Printf("dns:   change → admitted over %d changes: median %.3fs, max %.3fs\n", len(admits), quantile(admits, 0.5).Seconds(), slices.Max(admits).Seconds())
	if len(gaps) > 0 {
		fmt.Printf("dns:   the victim's name looked up every: median %.3fs, max %.3fs, over %d lookups (TTL %d s)\n", quantile(gaps, 0.5).Seconds(), slices.Max(gaps).Seconds(), len(gaps)+1, dnsBenchTTL)
	}
	fmt.Printf("dns:   the hostile names looked up %.1f times a second, of the %.1f needed to keep up; load average at the end %s\n",
		float64(hostile)/2/elapsed.Seconds(), float64(*dnsHostile*perToken)/dnsBenchTTL, loadAverage())
	return nil
}

// lastQuery is when the server was last asked about dnsBenchName, once
// both queries of the lookup (A and AAAA) have come in.
func lastQuery(srv *testkit.DNSServer) (time.Time, error) {
	var q []time.Time
	if _, ok := testkit.Wait(5*time.Second, func() bool {
		q = srv.Queries(dnsBenchName)
		return len(q) >= 2 && len(q)%2 == 0
	}); !ok {
		return time.Time{}, fmt.Errorf("the server saw %d queries about %s, want an even number (A and AAAA per lookup)", len(q), dnsBenchName)
	}
	return q[len(q)-1], nil
}

// queriesAfter is when the server was asked about dnsBenchName after t.
func queriesAfter(srv *testkit.DNSServer, t time.Time) []time.Time {
	q := srv.Queries(dnsBenchName)
	i := 0
	for i < len(q) && !q[i].After(t) {
		i++
	}
	return q[i:]
}

// resolvedAt is when Caddy's log (JSON lines at path) says the name was
// resolved to addr alone.
func resolvedAt(path, addr string) (time.Time, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		var e struct {
			TS        float64  `json:"ts"`
			Msg       string   `json:"msg"`
			Name      string   `json:"dns_name"`
			Addresses []string `json:"addresses"`
		}
		if !strings.Contains(line, `"dns name resolved"`) || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e.Msg == "dns name resolved" && e.Name == dnsBenchName && slices.Equal(e.Addresses, []string{addr}) {
			sec, frac := math.Modf(e.TS)
			return time.Unix(int64(sec), int64(frac*1e9)), nil
		}
	}
	return time.Time{}, fmt.Errorf("no \"dns name resolved\" line for %s in Caddy's log", addr)
}

// dnsRespond answers every request with its reason and the name that
// admitted it, if any.
const dnsRespond = "\trespond \"{http.ip_allowlist.reason} {http.ip_allowlist.dns_name}\"\n" +
	"\thandle_errors {\n\t\trespond \"{http.ip_allowlist.reason}\" {err.status_code}\n\t}\n"

// reasonFrom returns a function that sends a request with token to url
// from an address (one keep-alive client each) and returns the answer.
func reasonFrom(url, token string) func(addr string) string {
	clients := map[string]*http.Client{}
	return func(addr string) string {
		c := clients[addr]
		if c == nil {
			c = boundClient(addr)
			clients[addr] = c
		}
		return strings.TrimSpace(reasonVia(c, url, token))
	}
}

// boundClient sends its requests from addr (a loopback address), on one
// keep-alive connection.
func boundClient(addr string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 1}}
}
