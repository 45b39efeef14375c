package examples

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/redistest"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/redis/go-redis/v9"
)

// cpuOf is the CPU time the process pid has used, from /proc.
func cpuOf(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// TestFleetPublishFlood: a client that can only PUBLISH sends a label with
// no entry every 10 ms. The node must not rebuild its table for it, so its
// CPU stays near idle however many tokens it holds. The figure is printed;
// FLEET_FLOOD_TOKENS sets the store's size (default 20,000, 2 s a flood; set,
// 5 s a flood; the finding was measured with 100,000).
func TestFleetPublishFlood(t *testing.T) {
	testkit.CaddyBin(t)
	n, each := 20_000, 2*time.Second
	if v, err := strconv.Atoi(os.Getenv("FLEET_FLOOD_TOKENS")); err == nil && v > 0 {
		n, each = v, 5*time.Second
	}
	srv := redistest.New(t)
	file := testkit.TokensFile(t, n, func(i int) testkit.Entry {
		return testkit.Entry{
			Label: fmt.Sprintf("t%06d", i),
			Token: fmt.Sprintf("flood-token-%08d-0123456789", i),
			Allow: []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)},
		}
	})
	tokensCLI(t, srv.Addr, "", "import", file)
	node := startFleetNode(t, srv.Addr, "1h")
	waitStatus(t, node, "127.0.0.1", "flood-token-00000000-0123456789", 401)
	node.WaitOutput(func(out string) bool { return strings.Contains(out, "tokens from redis applied") })
	time.Sleep(time.Second)

	pub := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer pub.Close()
	ctx := context.Background()
	applied := strings.Count(node.Output(), "tokens from redis applied")
	for _, label := range []string{"no-such-label", "t000007", "*"} {
		began, used := time.Now(), cpuOf(t, node.Pid())
		for time.Since(began) < each {
			pub.Publish(ctx, "ip_allowlist:changes", label)
			time.Sleep(10 * time.Millisecond)
		}
		wall, cpu := time.Since(began), cpuOf(t, node.Pid())-used
		t.Logf("PUBLISH %q every 10 ms for %v, %d tokens: the node used %.1f%% of a core", label, wall.Round(time.Millisecond), n, 100*cpu.Seconds()/wall.Seconds())
	}
	if got := strings.Count(node.Output(), "tokens from redis applied") - applied; got != 0 {
		t.Errorf("%d rebuilds from messages that changed nothing, want 0", got)
	}
}
