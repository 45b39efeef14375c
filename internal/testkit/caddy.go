package testkit

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CaddyBin is the Caddy binary that make test builds with xcaddy
// (CADDY_BIN). Without it the test is skipped, or fails where CI is set.
func CaddyBin(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("CADDY_BIN")
	if bin == "" {
		Unavailable(t, "CADDY_BIN is not set: make test builds Caddy with xcaddy and sets it")
	}
	return bin
}

// CaddyEnv is this process's environment with HOME and the XDG folders
// moved to home, so that the Caddy it is given to keeps its data, config
// autosave and certificates there.
func CaddyEnv(home string) []string {
	return append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
}

// CaddyCommand is `bin run --config config`, with the Caddyfile adapter
// unless config ends in .json, in the environment CaddyEnv(home).
func CaddyCommand(bin, config, home string) *exec.Cmd {
	args := []string{"run", "--config", config}
	if !strings.HasSuffix(config, ".json") {
		args = append(args, "--adapter", "caddyfile")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = CaddyEnv(home)
	return cmd
}

// Options are how StartCaddy runs Caddy, beyond its config.
type Options struct {
	// Dir is Caddy's working directory, against which relative paths in
	// its config (a tokens_file) resolve. Empty is the test's own.
	Dir string
	// Env is added to Caddy's environment, NAME=value each.
	Env []string
}

// Caddy is the real binary (CaddyBin) running one config for a test, on
// free loopback ports, stopped when the test ends; its output is printed
// if the test failed.
type Caddy struct {
	Admin string // the admin endpoint, http://127.0.0.1:port
	Site  string // the site, http://127.0.0.1:port
	t     testing.TB
	proc  *Process
	out   *Output
}

// StartCaddy runs the config that config returns for a free admin and site
// address (host:port each), written to a file named name (".json" selects
// JSON, anything else the Caddyfile adapter), and waits until the site
// accepts connections.
func StartCaddy(t testing.TB, name string, config func(admin, site string) string, opt Options) *Caddy {
	t.Helper()
	bin := CaddyBin(t)
	admin, site := FreePort(t), FreePort(t)
	dir := t.TempDir()
	path := WriteFile(t, filepath.Join(dir, name), config(admin, site))
	cmd := CaddyCommand(bin, path, dir)
	cmd.Dir = opt.Dir
	cmd.Env = append(cmd.Env, opt.Env...)
	out := &Output{}
	cmd.Stdout, cmd.Stderr = out, out
	proc, err := StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	c := &Caddy{t: t, proc: proc, out: out, Admin: "http://" + admin, Site: "http://" + site}
	t.Cleanup(c.stop)
	if err := proc.WaitListening(site, 30*time.Second); err != nil {
		t.Fatalf("caddy %v:\n%s", err, out)
	}
	return c
}

// StartCaddyFile runs the config in file with its admin address
// (127.0.0.1:2019) and its site's (127.0.0.1:sitePort) replaced by free
// ones.
func StartCaddyFile(t testing.TB, file, sitePort string, opt Options) *Caddy {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return StartCaddy(t, filepath.Base(file), func(admin, site string) string {
		cfg := strings.ReplaceAll(string(raw), "127.0.0.1:2019", admin)
		return strings.ReplaceAll(cfg, "127.0.0.1:"+sitePort, site)
	}, opt)
}

// Output is everything Caddy has written so far, standard output and
// error together.
func (c *Caddy) Output() string { return c.out.String() }

// Pid is the process's id.
func (c *Caddy) Pid() int { return c.proc.Cmd.Process.Pid }

// Running reports whether the process has not exited.
func (c *Caddy) Running() bool { return c.proc.Running() }

// WaitOutput waits up to 5 seconds for Caddy's output to satisfy ok, and
// returns it either way. Caddy writes a log entry before it answers, but
// the entry reaches us through a pipe and may arrive after the response.
func (c *Caddy) WaitOutput(ok func(string) bool) string {
	var out string
	Wait(5*time.Second, func() bool {
		out = c.out.String()
		return ok(out)
	})
	return out
}

func (c *Caddy) stop() {
	c.proc.Stop()
	if c.t.Failed() {
		c.t.Logf("caddy output:\n%s", c.out)
	}
}

// Request describes one request to the site.
type Request struct {
	Local  string   // the loopback address it is sent from; empty is 127.0.0.1
	Path   string   // path and query; empty is /v1/items, the examples' API
	Header []string // extra headers, name, value pairs
}

// Reply is one HTTP response, read whole.
type Reply struct {
	Status int
	Header http.Header
	Body   string
}

func (r Reply) String() string { return fmt.Sprintf("%d %q", r.Status, r.Body) }

// Do sends r to the site, a GET on a connection of its own, and fails the
// test if no response comes.
func (c *Caddy) Do(r Request) Reply {
	c.t.Helper()
	local := r.Local
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
	path := r.Path
	if path == "" {
		path = "/v1/items"
	}
	req, err := http.NewRequest(http.MethodGet, c.Site+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(r.Header); i += 2 {
		req.Header.Add(r.Header[i], r.Header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s from %s: %v", path, local, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return Reply{resp.StatusCode, resp.Header, string(body)}
}

// AdminDo sends a request to the admin endpoint and returns status and
// body. After anything but a GET it waits for the config change to settle.
func (c *Caddy) AdminDo(method, path, contentType, body string) (int, string) {
	c.t.Helper()
	var header []string
	if contentType != "" {
		header = []string{"Content-Type", contentType}
	}
	r := c.admin(method, path, body, header)
	if method != http.MethodGet {
		c.settle()
	}
	return r.Status, r.Body
}

// AdminCall sends a request to the admin endpoint, with header's name,
// value pairs, and returns the whole response. Unlike AdminDo it never
// waits for a config change to settle: it is for routes that change no
// config, such as the token store's, whose changes apply in place.
func (c *Caddy) AdminCall(method, path, body string, header ...string) Reply {
	c.t.Helper()
	if body != "" {
		header = append([]string{"Content-Type", "application/json"}, header...)
	}
	return c.admin(method, path, body, header)
}

// admin sends one request to the admin endpoint, on a connection of its
// own: after a refused /load Caddy may close the admin connection, and a
// POST on a reused one would fail unretried.
func (c *Caddy) admin(method, path, body string, header []string) Reply {
	c.t.Helper()
	req, err := http.NewRequest(method, c.Admin+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return Reply{resp.StatusCode, resp.Header, string(b)}
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
func (c *Caddy) settle() {
	c.t.Helper()
	EventuallyLast(c.t, "after a config change, one socket listening on the site port and one on the admin port", 5*time.Second, func() (bool, string) {
		site, admin := listening(c.t, c.Site), listening(c.t, c.Admin)
		return site <= 1 && admin <= 1, fmt.Sprintf("%d on the site port, %d on the admin port", site, admin)
	})
}

// listening counts the TCP sockets in the LISTEN state on the port of url
// (http://127.0.0.1:port), from /proc/net/tcp and /proc/net/tcp6.
func listening(t testing.TB, url string) int {
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

// Metric sums the samples of name whose labels contain every labelPair
// (like `reason="allowed"`) in the admin endpoint's /metrics, and says
// whether there was any.
func (c *Caddy) Metric(name string, labelPairs ...string) (float64, bool) {
	c.t.Helper()
	status, body := c.AdminDo(http.MethodGet, "/metrics", "", "")
	if status != 200 {
		c.t.Fatalf("GET /metrics: %d", status)
	}
	var sum float64
	found := false
lines:
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
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

// Goroutines reads the process's goroutine count from the admin endpoint.
func (c *Caddy) Goroutines() int {
	c.t.Helper()
	status, body := c.AdminDo(http.MethodGet, "/debug/pprof/goroutine?debug=1", "", "")
	first, _, _ := strings.Cut(body, "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if status != 200 || err != nil {
		c.t.Fatalf("goroutine profile: %d %q", status, first)
	}
	return n
}

// HeapAfterGC runs a collection and returns the live heap in bytes.
func (c *Caddy) HeapAfterGC() uint64 {
	c.t.Helper()
	if status, _ := c.AdminDo(http.MethodGet, "/debug/pprof/heap?gc=1", "", ""); status != 200 {
		c.t.Fatalf("heap profile: %d", status)
	}
	status, body := c.AdminDo(http.MethodGet, "/debug/vars", "", "")
	var vars struct {
		Memstats struct{ HeapAlloc uint64 } `json:"memstats"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &vars) != nil || vars.Memstats.HeapAlloc == 0 {
		c.t.Fatalf("debug/vars: %d", status)
	}
	return vars.Memstats.HeapAlloc
}
