// Command bench measures the plugin in a real Caddy (make bench):
//
//  1. Load: the same respond route served by two Caddy processes, one bare
//     and one behind ip_allowlist with -tokens tokens, driven in turn by wrk
//     on loopback, alternating; prints requests/s of each and the ratio.
//  2. Provisioning: Caddy started with a tokens_file of -provision tokens
//     (two ranges each); prints the seconds until it serves and its peak
//     resident memory, beside the same for a config with no tokens.
//  3. Fleet: -fleet tokens imported into a redis-server on loopback, two
//     Caddy nodes following it; prints each node's start-up time (until it
//     decides by its store) and peak memory, and how long each of -changes
//     puts and revocations made with the CLI takes to reach both; halfway,
//     redis-server is killed, and no decision of either node may change
//     while it is down or after it returns.
//  4. Store: a file store filled with the import route, then the latency of
//     route calls (Add More, remove, PUT, suspend, resume) at each size, a
//     run of new tokens through a merge, and a restart on the filled file
//     (bench/store.go).
//  5. Console: a file store of -console-tokens tokens, some with an
//     owner, and ip_allowlist_console behind basic_auth; the latency of
//     token list pages of each kind: first, deep, by prefix, an owner's
//     (bench/console.go).
//  6. DNS: a token allowed from a dns: name, resolved through a test DNS
//     server; the time from each of -dns-samples record changes until the
//     new address is admitted, split into the wait for the TTL and the
//     plugin's own latency (bench/dns.go).
//
// It only talks to 127.0.0.1 and stops every process it starts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/redis/go-redis/v9"
)

var (
	caddyBin    = flag.String("caddy", "./caddy", "the xcaddy-built Caddy")
	tokens      = flag.Int("tokens", 10_000, "tokens in the load test's config")
	rounds      = flag.Int("rounds", 5, "wrk runs per server, alternating")
	duration    = flag.Duration("duration", 5*time.Second, "length of one wrk run")
	connections = flag.Int("connections", 32, "wrk connections")
	provision   = flag.Int("provision", 1_000_000, "tokens in the provisioning test's tokens_file")
	fleetTokens = flag.Int("fleet", 1_000_000, "tokens in the fleet test's Redis store")
	changes     = flag.Int("changes", 100, "tokens put and revoked in the fleet test, each timed")
	parts       = flag.String("parts", "load,provisioning,fleet,store,console,dns", "which parts to run, comma-separated")
)

const loadToken = "bench-load-token-4f0c2a"

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, err := os.MkdirTemp("", "ipallowlist-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	for _, part := range []struct {
		name string
		run  func(string) error
	}{{"load", load}, {"provisioning", provisioning}, {"fleet", fleet}, {"store", store}, {"console", console}, {"dns", dnsPart}} {
		if !slices.Contains(strings.Split(*parts, ","), part.name) {
			continue
		}
		if err := part.run(dir); err != nil {
			log.Fatal(err)
		}
	}
}

func load(dir string) error {
	tokensFile := filepath.Join(dir, "load-tokens.json")
	// The load token is the last of the file, allowed from loopback.
	if err := writeTokensFile(tokensFile, *tokens, func(i int) []string {
		if i == *tokens-1 {
			return []string{"127.0.0.1", "2001:db8::1"}
		}
		return twoRanges(i)
	}); err != nil {
		return err
	}
	route := "\trespond \"ok\"\n"
	bare, err := start(dir, "bare", route)
	if err != nil {
		return err
	}
	defer bare.stop()
	allow, err := start(dir, "allowlist", "\tip_allowlist {\n\t\ttokens_file "+tokensFile+"\n\t\tunlisted_tokens none\n\t}\n"+route)
	if err != nil {
		return err
	}
	defer allow.stop()

	// The allowlist must be enforcing, or the comparison means nothing.
	if code := status(allow.url, loadToken); code != 200 {
		return fmt.Errorf("allowlist server: listed token got %d, want 200", code)
	}
	if code := status(allow.url, "not-a-listed-token"); code != 401 {
		return fmt.Errorf("allowlist server: unlisted token got %d, want 401", code)
	}

	fmt.Printf("load: wrk -t1 -c%d -d%s, %d rounds, Authorization: Bearer on every request; ip_allowlist with %d tokens\n",
		*connections, *duration, *rounds, *tokens)
	var bareRPS, allowRPS []float64
	for r := 0; r < *rounds; r++ {
		order := []*server{bare, allow}
		if r%2 == 1 {
			order = []*server{allow, bare}
		}
		for _, s := range order {
			rps, err := wrk(s.url)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if s == bare {
				bareRPS = append(bareRPS, rps)
			} else {
				allowRPS = append(allowRPS, rps)
			}
			fmt.Printf("  round %d %-9s %10.0f req/s\n", r+1, s.name, rps)
		}
	}
	mb, ma := median(bareRPS), median(allowRPS)
	fmt.Printf("load: median bare %.0f req/s, with ip_allowlist %.0f req/s, ratio %.3f (goal >= 0.97)\n", mb, ma, ma/mb)
	return nil
}

func provisioning(dir string) error {
	tokensFile := filepath.Join(dir, "provision-tokens.json")
	began := time.Now()
	if err := writeTokensFile(tokensFile, *provision, twoRanges); err != nil {
		return err
	}
	info, err := os.Stat(tokensFile)
	if err != nil {
		return err
	}
	fmt.Printf("provisioning: generated %d tokens (2 ranges each, %d MB) in %.1fs\n",
		*provision, info.Size()>>20, time.Since(began).Seconds())
	for _, c := range []struct{ name, route string }{
		{"no tokens", "\trespond \"ok\"\n"},
		{fmt.Sprintf("%d tokens", *provision), "\tip_allowlist {\n\t\ttokens_file " + tokensFile + "\n\t}\n\trespond \"ok\"\n"},
	} {
		s, err := start(dir, "provision", c.route)
		if err != nil {
			return err
		}
		hwm, err := peakRSS(s.proc.Cmd.Process.Pid)
		s.stop()
		if err != nil {
			return err
		}
		fmt.Printf("provisioning: %-16s serving after %5.2fs, peak RSS %4d MiB\n", c.name, s.ready.Seconds(), hwm>>20)
	}
	fmt.Println("provisioning: goal <= 5 s and <= 1 GiB for 1,000,000 tokens")
	return nil
}

// twoRanges gives token i an IPv4 /32 and an IPv6 /64 of its own.
func twoRanges(i int) []string {
	return []string{
		fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff),
		fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff),
	}
}

func benchToken(i int) string {
	if i == *tokens-1 {
		return loadToken
	}
	return fmt.Sprintf("bench-token-%d", i)
}

// writeTokensFile writes n tokens, by digest, with the given ranges.
func writeTokensFile(path string, n int, ranges func(int) []string) error {
	return testkit.WriteTokens(path, n, func(i int) testkit.Entry {
		return testkit.Entry{Label: "t" + strconv.Itoa(i), Token: benchToken(i), Allow: ranges(i)}
	})
}

type server struct {
	name   string
	url    string
	proc   *testkit.Process
	began  time.Time
	ready  time.Duration // from start until the site accepted a connection
	loaded time.Duration // fleet: from start until it decided by its store
}

// start runs Caddy with one site on a free loopback port, no admin
// endpoint and no access log, and waits until it accepts connections.
func start(dir, name, route string) (*server, error) {
	return startAdmin(dir, name, "off", route)
}

// startAdmin is start with Caddy's admin endpoint at admin ("off": none),
// which it also waits for.
func startAdmin(dir, name, admin, route string) (*server, error) {
	addr, err := testkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, name+".Caddyfile")
	body := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n}\nhttp://%s {\n%s}\n", admin, addr, route)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := testkit.CaddyCommand(*caddyBin, cfg, dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	began := time.Now()
	proc, err := testkit.StartProcess(cmd)
	logf.Close() // Caddy has its own copy
	if err != nil {
		return nil, err
	}
	s := &server{name: name, url: "http://" + addr + "/", proc: proc, began: began}
	listen := []string{addr}
	if admin != "off" {
		listen = append(listen, admin)
	}
	for _, a := range listen {
		if err := proc.WaitListening(a, 2*time.Minute); err != nil {
			proc.Stop()
			out, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("caddy (%s) %v:\n%s", name, err, out)
		}
	}
	s.ready = time.Since(began)
	return s, nil
}

func (s *server) stop() { s.proc.Stop() }

func status(url, token string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var rpsLine = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// wrk runs one load run and returns its requests/s. Any non-2xx response
// or socket error fails the run: the numbers would not be comparable.
func wrk(url string) (float64, error) {
	out, err := exec.Command("wrk", "-t1", fmt.Sprintf("-c%d", *connections), "-d"+duration.String(),
		"-H", "Authorization: Bearer "+loadToken, url).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		return 0, fmt.Errorf("wrk saw errors:\n%s", out)
	}
	m := rpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// peakRSS reads the process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// cpuTime reads the user and system CPU time the process has used.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (100 a second on Linux).
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, errors.New("unexpected /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc stat")
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// fleetProbes are the tokens of the fleet's store allowed from loopback
// as well as from their own ranges, so a node's answer shows it holds the
// store: the first, the middle and the last.
func fleetProbes(n int) []int { return slices.Compact([]int{0, n / 2, n - 1}) }

func fleetToken(i int) string { return fmt.Sprintf("fleet-token-%d-0123456789", i) }

// fleet: a Redis store of -fleet tokens, two nodes following it; -changes
// tokens put and revoked one at a time, with redis-server killed halfway.
func fleet(dir string) error {
	rdir := filepath.Join(dir, "redis")
	if err := os.Mkdir(rdir, 0o700); err != nil {
		return err
	}
	srv, err := redistest.Start(rdir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	n := *fleetTokens
	probes := fleetProbes(n)
	tokensFile := filepath.Join(dir, "fleet-tokens.json")
	if err := testkit.WriteTokens(tokensFile, n, func(i int) testkit.Entry {
		allow := twoRanges(i)
		if slices.Contains(probes, i) {
			allow = append(allow, "127.0.0.1")
		}
		return testkit.Entry{Label: "t" + strconv.Itoa(i), Token: fleetToken(i), Allow: allow}
	}); err != nil {
		return err
	}
	began := time.Now()
	if out, err := exec.Command(*caddyBin, "ip-allowlist", "tokens", "--redis", srv.Addr, "import", tokensFile).CombinedOutput(); err != nil {
		return fmt.Errorf("tokens import: %v\n%s", err, out)
	}
	fmt.Printf("fleet: imported %d tokens into Redis with the CLI in %.2fs\n", n, time.Since(began).Seconds())

	// Every answer says the decision's reason, allowed or not.
	route := "\tip_allowlist {\n\t\tunlisted_tokens none\n\t\tredis " + srv.Addr + "\n\t}\n" +
		"\trespond \"{http.ip_allowlist.reason}\"\n" +
		"\thandle_errors {\n\t\trespond \"{http.ip_allowlist.reason}\" {err.status_code}\n\t}\n"
	var nodes []*server
	for i := range 2 {
		s, err := start(dir, fmt.Sprintf("fleet-node-%d", i+1), route)
		if err != nil {
			return err
		}
		defer s.stop()
		// Requests wait for the store's first load (up to 10 s each):
		// the node has started when it answers for a token of the store.
		if _, ok := testkit.Wait(2*time.Minute, func() bool { return reason(s.url, fleetToken(probes[0])) == "allowed" }); !ok {
			return fmt.Errorf("%s does not allow a token of its store from 127.0.0.1 after 2 minutes", s.name)
		}
		s.loaded = time.Since(s.began)
		hwm, err := peakRSS(s.proc.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		cpu, err := cpuTime(s.proc.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		// The CPU time tells what the wall time means on a shared machine.
		fmt.Printf("fleet: node %d with %d tokens from Redis: listening after %.2fs, deciding by the store after %.2fs (%.2fs of CPU), peak RSS %d MiB\n",
			i+1, n, s.ready.Seconds(), s.loaded.Seconds(), cpu.Seconds(), hwm>>20)
		nodes = append(nodes, s)
	}

	// What each node decides for tokens of every kind; the outage must
	// change none of it.
	type probe struct{ name, token, want string }
	checks := []probe{{"never listed", "fleet-never-listed-0123456789", "unlisted_token"}}
	for _, i := range probes {
		checks = append(checks, probe{fmt.Sprintf("t%d from loopback", i), fleetToken(i), "allowed"})
	}
	for _, i := range []int{1, n / 3, n - 2} {
		if i > 0 && i < n && !slices.Contains(probes, i) {
			checks = append(checks, probe{fmt.Sprintf("t%d, not from loopback", i), fleetToken(i), "ip_not_allowed"})
		}
	}
	decisions := func(when string) error {
		for _, node := range nodes {
			for _, c := range checks {
				if got := reason(node.url, c.token); got != c.want {
					return fmt.Errorf("%s, %s: %s got %q, want %q", when, node.name, c.name, got, c.want)
				}
			}
		}
		return nil
	}

	cli := func(stdin string, args ...string) (time.Duration, error) {
		cmd := exec.Command(*caddyBin, append([]string{"ip-allowlist", "tokens", "--redis", srv.Addr}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		began := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("tokens %s: %v\n%s", args[0], err, out)
		}
		return time.Since(began), nil
	}
	// reach waits until every node answers want for tok, and returns how
	// long that took.
	reach := func(tok, want string) (float64, error) {
		written := time.Now()
		for _, node := range nodes {
			if _, ok := testkit.Wait(30*time.Second-time.Since(written), func() bool { return reason(node.url, tok) == want }); !ok {
				return 0, fmt.Errorf("a change did not reach %s within 30s (%s, want %s)", node.name, tok, want)
			}
		}
		return time.Since(written).Seconds() * 1000, nil
	}

	// Each change: a new token allowed from 127.0.0.1, then revoked.
	var put, revoked, all, cliTimes []float64
	killed := false
	for i := range *changes {
		if i == *changes/2 && !killed {
			if err := outage(srv, nodes, dir, decisions, cli, reach); err != nil {
				return err
			}
			killed = true
		}
		tok := fmt.Sprintf("fleet-bench-token-%d", i)
		label := fmt.Sprintf("fleet-bench-%d", i)
		for _, step := range []struct {
			args []string
			want string
			into *[]float64
		}{
			{[]string{"put", label, "--allow", "127.0.0.1"}, "allowed", &put},
			{[]string{"delete", label}, "token_revoked", &revoked},
		} {
			took, err := cli(tok, step.args...)
			if err != nil {
				return err
			}
			cliTimes = append(cliTimes, took.Seconds()*1000)
			ms, err := reach(tok, step.want)
			if err != nil {
				return err
			}
			*step.into = append(*step.into, ms)
			all = append(all, ms)
		}
	}
	if err := decisions("after the changes"); err != nil {
		return err
	}
	fmt.Printf("fleet: propagation to both nodes with %d tokens, %d changes of each kind (from the CLI's exit until both nodes answer accordingly):\n", n, *changes)
	fmt.Printf("fleet:   token put:     median %6.1f ms, max %6.1f ms\n", median(put), slices.Max(put))
	fmt.Printf("fleet:   token revoked: median %6.1f ms, max %6.1f ms\n", median(revoked), slices.Max(revoked))
	fmt.Printf("fleet:   every change:  median %6.1f ms, max %6.1f ms (goal: median <= 50 ms, max <= 250 ms)\n", median(all), slices.Max(all))
	fmt.Printf("fleet:   the CLI itself (process start to exit): median %.1f ms\n", median(cliTimes))
	for _, node := range nodes {
		hwm, err := peakRSS(node.proc.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		fmt.Printf("fleet: %s peak RSS over the whole run %d MiB\n", node.name, hwm>>20)
	}
	fmt.Println("fleet: goal: node start <= 5 s and <= 1 GiB with 1,000,000 tokens")
	return nil
}

// outage kills redis-server (SIGKILL, after a SAVE so it can come back
// with its data) while both nodes serve, checks that no decision changes
// while it is down and after it returns, and that a change made after it
// returned reaches both nodes.
func outage(srv *redistest.Server, nodes []*server, dir string, decisions func(string) error,
	cli func(string, ...string) (time.Duration, error), reach func(string, string) (float64, error)) error {
	// A token put before the outage, which must stay allowed.
	const kept = "fleet-kept-token-0123456789"
	if _, err := cli(kept, "put", "fleet-kept", "--allow", "127.0.0.1"); err != nil {
		return err
	}
	if _, err := reach(kept, "allowed"); err != nil {
		return err
	}
	// SAVE of a big store outlasts the client's default read timeout.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 2 * time.Minute, Protocol: 2, DisableIdentity: true})
	err := c.Save(context.Background()).Err()
	c.Close()
	if err != nil {
		return fmt.Errorf("redis SAVE: %w", err)
	}
	if err := decisions("before redis-server was killed"); err != nil {
		return err
	}
	srv.Kill()
	began := time.Now()
	for _, node := range nodes {
		if _, ok := testkit.Wait(30*time.Second, func() bool { return strings.Contains(nodeLog(dir, node), "redis unreachable") }); !ok {
			return fmt.Errorf("%s did not log the outage within 30s", node.name)
		}
	}
	rounds := 0
	for time.Since(began) < 3*time.Second || rounds < 3 {
		if err := decisions("redis-server killed"); err != nil {
			return err
		}
		if reason(nodes[0].url, kept) != "allowed" || reason(nodes[1].url, kept) != "allowed" {
			return errors.New("redis-server killed: the token put before the outage is no longer allowed")
		}
		rounds++
		time.Sleep(100 * time.Millisecond)
	}
	if err := srv.Start(); err != nil {
		return err
	}
	for _, node := range nodes {
		if _, ok := testkit.Wait(time.Minute, func() bool { return strings.Contains(nodeLog(dir, node), "redis reachable again") }); !ok {
			return fmt.Errorf("%s did not log Redis's return within a minute", node.name)
		}
	}
	if err := decisions("after redis-server returned"); err != nil {
		return err
	}
	fmt.Printf("fleet: redis-server killed (SIGKILL) for %.1fs halfway through the changes: both nodes logged the outage, "+
		"and decided as before in %d rounds of checks while it was down and after it returned\n", time.Since(began).Seconds(), rounds)
	return nil
}

func nodeLog(dir string, s *server) string {
	b, _ := os.ReadFile(filepath.Join(dir, s.name+".log"))
	return string(b)
}

var client = &http.Client{Timeout: 20 * time.Second}

// reason is the decision's reason in the fleet nodes' answer for token,
// or "" for no answer.
func reason(url, token string) string { return reasonVia(client, url, token) }

// reasonVia is reason, sent through c.
func reasonVia(c *http.Client, url, token string) string {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
