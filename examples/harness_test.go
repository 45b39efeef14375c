package examples

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this package run the examples against the Caddy binary that
// make test builds with xcaddy (CADDY_BIN). Each Caddy gets free loopback
// ports in place of the examples' fixed ones, and is stopped by the test.

func caddyBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CADDY_BIN")
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CADDY_BIN is not set: run the tests with make test, which builds Caddy with xcaddy")
		}
		t.Skip("CADDY_BIN is not set: make test builds Caddy with xcaddy and sets it")
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// output collects everything the process writes, safe for concurrent use.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

type caddy struct {
	t     *testing.T
	cmd   *exec.Cmd
	out   *output
	admin string // http://127.0.0.1:port
	site  string // http://127.0.0.1:port
	done  chan struct{}
}

// startCaddy runs example (a file in this folder) with its admin address
// and sitePort replaced by free ports. env is added to Caddy's environment.
func startCaddy(t *testing.T, example, sitePort string, env ...string) *caddy {
	t.Helper()
	raw, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	return startConfig(t, filepath.Base(example), func(admin, site string) string {
		cfg := strings.ReplaceAll(string(raw), "127.0.0.1:2019", admin)
		return strings.ReplaceAll(cfg, "127.0.0.1:"+sitePort, site)
	}, env...)
}

// startConfig runs the config that config returns for a free admin and site
// address, written to a file named name (".json" selects JSON, anything
// else the Caddyfile adapter).
func startConfig(t *testing.T, name string, config func(admin, site string) string, env ...string) *caddy {
	t.Helper()
	bin := caddyBin(t)
	admin, site := freePort(t), freePort(t)
	dir := t.TempDir()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(config(admin, site)), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--config", path}
	if !strings.HasSuffix(name, ".json") {
		args = append(args, "--adapter", "caddyfile")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = ".." // the examples name tokens files relative to the repository
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Env = append(cmd.Env, env...)
	out := &output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &caddy{t: t, cmd: cmd, out: out, admin: "http://" + admin, site: "http://" + site, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	c.waitReady()
	return c
}

func (c *caddy) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			c.t.Fatalf("caddy exited while starting:\n%s", c.out)
		default:
		}
		if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.site, "http://"), time.Second); err == nil {
			conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("caddy did not start listening within 30s:\n%s", c.out)
}

// waitOutput waits up to 5 seconds for Caddy's output to satisfy ok, and
// returns it. Caddy writes a log entry before it answers, but the entry
// reaches us through a pipe and may arrive after the response.
func (c *caddy) waitOutput(ok func(string) bool) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := c.out.String()
		if ok(out) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *caddy) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

func (c *caddy) stop() {
	if c.running() {
		_ = c.cmd.Process.Signal(os.Interrupt)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	if c.t.Failed() {
		c.t.Logf("caddy output:\n%s", c.out)
	}
}

// reply is one HTTP response, read whole.
type reply struct {
	status int
	header http.Header
	body   string
}

// request describes one request to the site: from the loopback address
// local, with extra headers as name, value pairs.
type request struct {
	local  string
	path   string
	header []string
}

func (c *caddy) do(r request) reply {
	c.t.Helper()
	local := r.local
	if local == "" {
		local = "127.0.0.1"
	}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext,
			DisableKeepAlives: true,
		},
	}
	path := r.path
	if path == "" {
		path = "/v1/items"
	}
	req, err := http.NewRequest(http.MethodGet, c.site+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(r.header); i += 2 {
		req.Header.Add(r.header[i], r.header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s from %s: %v", path, local, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(body)}
}

// adminDo sends a request to the admin API and returns status and body.
func (c *caddy) adminDo(method, path, contentType, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.admin+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	// A connection per request: after a refused /load Caddy may close the
	// admin connection, and a POST on a reused one would fail unretried.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if method != http.MethodGet {
		c.settle()
	}
	return resp.StatusCode, string(b)
}

// settle waits until the old config's sockets are closed after a config
// change. Caddy (v2.11) binds each config's listeners with SO_REUSEPORT and
// answers the admin request once the old servers have started shutting
// down, not once their sockets are closed. A connection the kernel queues
// on an old socket in that window is reset when the socket closes, so a
// request sent right after a reload can fail with EOF or "connection reset
// by peer" (seen on a loaded CI machine). settle waits until the site and
// admin ports have one listening socket each, as Linux reports them in
// /proc/net/tcp.
func (c *caddy) settle() {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		site, admin := listening(c.t, c.site), listening(c.t, c.admin)
		if site <= 1 && admin <= 1 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after a config change: %d sockets still listen on the site port and %d on the admin port after 5s", site, admin)
		}
		time.Sleep(time.Millisecond)
	}
}

// listening counts the TCP sockets in the LISTEN state on the port of url
// (http://127.0.0.1:port), from /proc/net/tcp and /proc/net/tcp6.
func listening(t *testing.T, url string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var p int
	if _, err := fmt.Sscan(port, &p); err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf(":%04X", p)
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			continue // no IPv6, or not Linux
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			// sl local_address rem_address st ...; st 0A is LISTEN.
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasSuffix(f[1], local) && f[3] == "0A" {
				n++
			}
		}
	}
	return n
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func (r reply) String() string { return fmt.Sprintf("%d %q", r.status, r.body) }

// metric sums the samples of name whose labels contain every labelPair
// (like `reason="allowed"`) in the admin endpoint's /metrics.
func (c *caddy) metric(name string, labelPairs ...string) (float64, bool) {
	c.t.Helper()
	status, body := c.adminDo(http.MethodGet, "/metrics", "", "")
	if status != 200 {
		c.t.Fatalf("GET /metrics: %d", status)
	}
	var sum float64
	found := false
lines:
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, p := range labelPairs {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err != nil {
			c.t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
		found = true
	}
	return sum, found
}

// settle relies on listening; it must see a socket that listens, and stop
// seeing it once closed.
func TestListeningCountsSockets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	if n := listening(t, url); n != 1 {
		t.Errorf("listening(%s) = %d with one listener, want 1", url, n)
	}
	l.Close()
	if n := listening(t, url); n != 0 {
		t.Errorf("listening(%s) = %d after closing, want 0", url, n)
	}
}
