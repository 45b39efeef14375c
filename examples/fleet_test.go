package examples

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

const (
	tokFleetA = "fleet-token-a-5c1d0e"
	tokFleetB = "fleet-token-b-93aa7f"
)

// startFleetNode runs examples/fleet.Caddyfile against the Redis at addr,
// with its snapshot in its own folder and a resync of resync.
func startFleetNode(t *testing.T, addr, resync string) *testkit.Caddy {
	t.Helper()
	raw, err := os.ReadFile("fleet.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(t.TempDir(), "snapshot.json")
	return testkit.StartCaddy(t, "fleet.Caddyfile", func(admin, site string) string {
		cfg := strings.NewReplacer(
			"127.0.0.1:2019", admin,
			"127.0.0.1:8080", site,
			"127.0.0.1:6379", addr,
			"ip-allowlist-snapshot.json", snapshot,
			"resync 30s", "resync "+resync,
		).Replace(string(raw))
		return cfg
	}, inRepo())
}

// tokensCLI runs `caddy ip-allowlist tokens <args>` against the Redis at
// addr, with stdin as its standard input, and returns its output.
func tokensCLI(t *testing.T, addr, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := tokensCLIResult(t, addr, stdin, args...)
	if err != nil {
		t.Fatalf("caddy ip-allowlist tokens %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out + errOut
}

// propagation waits until every node answers a request for tok from
// local with want, and returns how long that took from since.
func propagation(t *testing.T, nodes []*testkit.Caddy, since time.Time, local, tok string, want int) time.Duration {
	t.Helper()
	next := 0 // the nodes before it have answered want
	testkit.EventuallyLast(t, fmt.Sprintf("every node answering %d for the token from %s", want, local), 10*time.Second, func() (bool, string) {
		for ; next < len(nodes); next++ {
			if got := nodes[next].Do(testkit.Request{Local: local, Header: testkit.Bearer(tok)}); got.Status != want {
				return false, fmt.Sprintf("node %d answered %v", next, got)
			}
		}
		return true, ""
	})
	return time.Since(since)
}

// TestFleet: two Caddy nodes share one Redis. Changes made with the CLI
// reach both; when Redis stops, both keep answering from their copies; a
// change made while they cannot reach it arrives when it returns.
func TestFleet(t *testing.T) {
	testkit.CaddyBin(t)
	srv := redistest.New(t)
	tokensCLI(t, srv.Addr, tokFleetA, "put", "partner-a", "--allow", "127.0.0.2")
	// A resync of an hour: changes must arrive by their messages, and after
	// the outage by the resync a node makes when it reconnects.
	nodes := []*testkit.Caddy{startFleetNode(t, srv.Addr, "1h"), startFleetNode(t, srv.Addr, "1h")}
	for i, n := range nodes {
		// No wait: a node may listen before its store has loaded, and
		// its first requests wait for the load (waitForStore).
		if got := n.Do(testkit.Request{Local: "127.0.0.2", Header: testkit.Bearer(tokFleetA)}); got.Status != 200 || got.Body != "hello, partner-a" {
			t.Fatalf("node %d, token from the store at start: %v", i, got)
		}
		if got := n.Do(testkit.Request{Local: "127.0.0.3", Header: testkit.Bearer(tokFleetA)}); got.Status != 401 {
			t.Fatalf("node %d, from elsewhere: %v", i, got)
		}
	}

	// Each change: from the moment the CLI has written it to the moment
	// both nodes answer accordingly.
	tokensCLI(t, srv.Addr, "", "allow", "partner-a", "127.0.0.3")
	took := propagation(t, nodes, time.Now(), "127.0.0.3", tokFleetA, 200)
	t.Logf("fleet: an address allowed with the CLI took effect on both nodes after %v", took)

	tokensCLI(t, srv.Addr, tokFleetB, "put", "partner-b", "--allow", "127.0.0.4")
	took = propagation(t, nodes, time.Now(), "127.0.0.4", tokFleetB, 200)
	t.Logf("fleet: a token added with the CLI took effect on both nodes after %v", took)

	tokensCLI(t, srv.Addr, "", "delete", "partner-b")
	took = propagation(t, nodes, time.Now(), "127.0.0.4", tokFleetB, 401)
	t.Logf("fleet: a token deleted (revoked) with the CLI was refused by both nodes after %v", took)

	list := tokensCLI(t, srv.Addr, "", "list")
	if !strings.Contains(list, `"partner-a"`) || !strings.Contains(list, `"revoked":true`) || strings.Contains(list, tokFleetA) {
		t.Errorf("tokens list: %s", list)
	}

	// Redis stops while clients keep sending requests to both nodes.
	var (
		stop                      atomic.Bool
		sent, failed, transportEr atomic.Int64
		firstFailure              atomic.Value
		wg                        sync.WaitGroup
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[i%2]
			local, want := "127.0.0.2", http.StatusOK
			if i%4 >= 2 {
				local, want = "127.0.0.9", http.StatusUnauthorized
			}
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext,
			}}
			for !stop.Load() {
				req, _ := http.NewRequest(http.MethodGet, n.Site+"/v1/items", nil)
				req.Header.Set("Authorization", "Bearer "+tokFleetA)
				sent.Add(1)
				resp, err := client.Do(req)
				if err != nil {
					transportEr.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				// Read to the end, so the connection is reused: a new one
				// per request would run the machine out of ports.
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("from %s: %d, want %d", local, resp.StatusCode, want))
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	stopped := time.Now()
	srv.Stop()
	const outage = "redis unreachable; the tokens in force keep serving until it returns"
	for i, n := range nodes {
		if !strings.Contains(n.WaitOutput(func(out string) bool { return strings.Contains(out, outage) }), outage) {
			t.Fatalf("node %d did not log the outage", i)
		}
	}
	time.Sleep(time.Second)

	// A change made while the nodes cannot reach Redis: its message
	// reaches nobody; only the resync can bring it.
	if err := srv.Elsewhere(func(addr string) error {
		tokensCLI(t, addr, "", "allow", "partner-a", "127.0.0.5")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := nodes[0].Do(testkit.Request{Local: "127.0.0.5", Header: testkit.Bearer(tokFleetA)}); got.Status != 401 {
		t.Fatalf("a change made where the nodes cannot see it took effect: %v", got)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	took = propagation(t, nodes, back, "127.0.0.5", tokFleetA, 200)
	t.Logf("fleet: a change made during the outage took effect on both nodes %v after Redis returned", took)
	const recovered = "redis reachable again; tokens resynced"
	for i, n := range nodes {
		out := n.WaitOutput(func(out string) bool { return strings.Contains(out, recovered) })
		if c := strings.Count(out, outage); c != 1 {
			t.Errorf("node %d logged the outage %d times, want once", i, c)
		}
		if c := strings.Count(out, recovered); c != 1 {
			t.Errorf("node %d logged the recovery %d times, want once", i, c)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("fleet: Redis stopped for %v: %d requests to the two nodes, %d transport errors, %d wrong statuses",
		back.Sub(stopped).Round(time.Millisecond), sent.Load(), transportEr.Load(), failed.Load())
	if transportEr.Load() != 0 || failed.Load() != 0 {
		t.Errorf("requests failed while Redis was away; first: %v", firstFailure.Load())
	}
	for i, n := range nodes {
		if strings.Contains(n.Output(), tokFleetA) || strings.Contains(n.Output(), tokFleetB) {
			t.Errorf("node %d's output holds a token", i)
		}
		// go-redis's own lines (plain text, about one a second while
		// Redis is down) go through Caddy's logger, at debug level.
		for _, line := range strings.Split(n.Output(), "\n") {
			if strings.HasPrefix(line, "redis: ") {
				t.Errorf("node %d wrote a plain go-redis line: %s", i, line)
				break
			}
		}
	}
}
