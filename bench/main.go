// Command bench measures the plugin in a real Caddy (make bench):
//
//  1. Load: the same respond route served by two Caddy processes, one bare
//     and one behind ip_allowlist with -tokens tokens, driven in turn by wrk
//     on loopback, alternating; prints requests/s of each and the ratio.
//  2. Provisioning: Caddy started with a tokens_file of -provision tokens
//     (two ranges each); prints the seconds until it serves and its peak
//     resident memory, beside the same for a config with no tokens.
//  3. Fleet: -fleet tokens imported into a redis-server on loopback, two
//     Caddy nodes following it; prints each node's start-up time and how
//     long a change made with the CLI takes to reach both.
//
// It only talks to 127.0.0.1 and stops every process it starts.
package main

import (
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
)

var (
	caddyBin    = flag.String("caddy", "./caddy", "the xcaddy-built Caddy")
	tokens      = flag.Int("tokens", 10_000, "tokens in the load test's config")
	rounds      = flag.Int("rounds", 5, "wrk runs per server, alternating")
	duration    = flag.Duration("duration", 5*time.Second, "length of one wrk run")
	connections = flag.Int("connections", 32, "wrk connections")
	provision   = flag.Int("provision", 1_000_000, "tokens in the provisioning test's tokens_file")
	fleetTokens = flag.Int("fleet", 100_000, "tokens in the fleet test's Redis store")
	changes     = flag.Int("changes", 10, "changes timed in the fleet test")
	parts       = flag.String("parts", "load,provisioning,fleet,store", "which parts to run, comma-separated")
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
	}{{"load", load}, {"provisioning", provisioning}, {"fleet", fleet}, {"store", store}} {
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
	name  string
	url   string
	proc  *testkit.Process
	ready time.Duration // from start until the site accepted a connection
}

// start runs Caddy with one site on a free loopback port, no admin
// endpoint and no access log, and waits until it accepts connections.
func start(dir, name, route string) (*server, error) {
	addr, err := testkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, name+".Caddyfile")
	body := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tdefault_bind 127.0.0.1\n}\nhttp://%s {\n%s}\n", addr, route)
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
	s := &server{name: name, url: "http://" + addr + "/", proc: proc}
	if err := proc.WaitListening(addr, 2*time.Minute); err != nil {
		proc.Stop()
		out, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("caddy (%s) %v:\n%s", name, err, out)
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

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// fleet: a Redis store of -fleet tokens, two nodes following it.
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
	tokensFile := filepath.Join(dir, "fleet-tokens.json")
	if err := writeTokensFile(tokensFile, *fleetTokens, twoRanges); err != nil {
		return err
	}
	began := time.Now()
	if out, err := exec.Command(*caddyBin, "ip-allowlist", "tokens", "--redis", srv.Addr, "import", tokensFile).CombinedOutput(); err != nil {
		return fmt.Errorf("tokens import: %v\n%s", err, out)
	}
	fmt.Printf("fleet: imported %d tokens into Redis with the CLI in %.2fs\n", *fleetTokens, time.Since(began).Seconds())

	route := "\tip_allowlist {\n\t\tunlisted_tokens none\n\t\tredis " + srv.Addr + "\n\t}\n\trespond \"ok\"\n"
	var nodes []*server
	for i := range 2 {
		s, err := start(dir, fmt.Sprintf("fleet-node-%d", i), route)
		if err != nil {
			return err
		}
		defer s.stop()
		hwm, err := peakRSS(s.proc.Cmd.Process.Pid)
		if err != nil {
			return err
		}
		fmt.Printf("fleet: node %d with %d tokens from Redis serving after %.2fs, peak RSS %d MiB\n", i+1, *fleetTokens, s.ready.Seconds(), hwm>>20)
		nodes = append(nodes, s)
	}

	// Each change: a new token, allowed from 127.0.0.1, then deleted.
	var added, deleted, cli []float64
	for i := range *changes {
		tok := fmt.Sprintf("fleet-bench-token-%d", i)
		label := fmt.Sprintf("fleet-bench-%d", i)
		for _, step := range []struct {
			args []string
			want int
			into *[]float64
		}{
			{[]string{"put", label, "--allow", "127.0.0.1"}, http.StatusOK, &added},
			{[]string{"delete", label}, http.StatusUnauthorized, &deleted},
		} {
			cmd := exec.Command(*caddyBin, append([]string{"ip-allowlist", "tokens", "--redis", srv.Addr}, step.args...)...)
			cmd.Stdin = strings.NewReader(tok)
			began := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("tokens %s: %v\n%s", step.args[0], err, out)
			}
			written := time.Now()
			cli = append(cli, written.Sub(began).Seconds()*1000)
			for _, n := range nodes {
				if _, ok := testkit.Wait(30*time.Second-time.Since(written), func() bool { return status(n.url, tok) == step.want }); !ok {
					return fmt.Errorf("a change did not reach %s within 30s", n.name)
				}
			}
			*step.into = append(*step.into, time.Since(written).Seconds()*1000)
		}
	}
	fmt.Printf("fleet: propagation to both nodes with %d tokens, %d changes each (from the CLI's exit to both answering):\n", *fleetTokens, *changes)
	fmt.Printf("fleet:   token added:   median %6.1f ms, max %6.1f ms\n", median(added), slices.Max(added))
	fmt.Printf("fleet:   token deleted: median %6.1f ms, max %6.1f ms\n", median(deleted), slices.Max(deleted))
	fmt.Printf("fleet:   the CLI itself (process start to exit): median %.1f ms\n", median(cli))
	fmt.Println("fleet: goal: a change on both nodes within 1 s")
	return nil
}
