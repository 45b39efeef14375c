package ipallowlist

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
)

// provisioned provisions h as Caddy would and swaps its logger for one the
// test can read.
func provisioned(t testing.TB, h *Handler) (*Handler, *observer.ObservedLogs) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	logger, logs := testkit.Logs(zapcore.InfoLevel)
	h.logger = logger
	return h, logs
}

// provisionLogging provisions h and returns its log entries at level and
// above, from provision's own on.
func provisionLogging(t testing.TB, h *Handler, level zapcore.Level) *observer.ObservedLogs {
	t.Helper()
	logger, logs := testkit.Logs(level)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.provisionWithLogger(ctx, logger); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return logs
}

// check is checkNamed's reason alone.
func (t *table) check(p *policy, addr netip.Addr) reason {
	r, _ := t.checkNamed(p, addr)
	return r
}

// result is what one request through the handler produced.
type result struct {
	status int // 200 when next ran, else the handler error's status
	next   bool
	header http.Header
	err    error
	repl   *caddy.Replacer
}

func (r result) placeholder(key string) string {
	v, _ := r.repl.GetString(key)
	return v
}

// newRequest builds a request from remote, prepared by Caddy itself so that
// client_ip is set the way the server sets it.
func newRequest(remote, target string, header ...string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.RemoteAddr = remote
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	repl := caddy.NewReplacer()
	// An empty server: no trusted proxies, so client_ip is the remote address.
	return caddyhttp.PrepareRequest(req, repl, nil, &caddyhttp.Server{})
}

func serve(h *Handler, req *http.Request) result {
	w := httptest.NewRecorder()
	res := result{repl: req.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.next = true
		w.WriteHeader(http.StatusOK)
		return nil
	})
	res.err = h.ServeHTTP(w, req, next)
	res.header = w.Header()
	switch {
	case res.err == nil:
		res.status = w.Code
	default:
		var he caddyhttp.HandlerError
		if errors.As(res.err, &he) {
			res.status = he.StatusCode
		}
	}
	return res
}

// seedLines reads a fuzz seed file of testdata/fuzz: per line, one or more
// Go-quoted strings separated by spaces, so seeds may hold NUL, CR and LF.
func seedLines(f *testing.F, name string) [][]string {
	f.Helper()
	data, err := os.ReadFile("../testdata/fuzz/" + name)
	if err != nil {
		f.Fatal(err)
	}
	var seeds [][]string
	for n, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		var fields []string
		for rest := line; rest != ""; rest = strings.TrimLeft(rest, " ") {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				f.Fatalf("%s:%d: %v", name, n+1, err)
			}
			s, _ := strconv.Unquote(q)
			fields = append(fields, s)
			rest = rest[len(q):]
		}
		seeds = append(seeds, fields)
	}
	return seeds
}
