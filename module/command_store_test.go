package ipallowlist

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"
	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// adminServer serves the admin routes as Caddy's admin endpoint does (a
// ServeMux of the routes' patterns, errors answered by adminHTTP), on l if
// given, and checks every exchange against the OpenAPI document.
func adminServer(t *testing.T, l net.Listener) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, rt := range (adminAPI{}).Routes() {
		mux.Handle(rt.Pattern, adminHTTP{rt.Handler})
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading the request: %v", err)
		}
		sent := r.Clone(context.Background())
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		checkAPI(t, sent, body, rec.Code, rec.Header(), rec.Body.Bytes())
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	if l != nil {
		srv.Listener.Close()
		srv.Listener = l
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// cliRun is one run of `caddy ip-allowlist tokens`.
type cliRun struct {
	out, errOut string
	err         error
}

// runTokens runs `caddy ip-allowlist tokens args...` in process, with
// stdin as its standard input, the --store audit lines going to logger.
func runTokens(t *testing.T, logger *zap.Logger, stdin string, args ...string) cliRun {
	t.Helper()
	if logger == nil {
		logger = zap.NewNop()
	}
	cmd := tokensCommandLogging(logger)
	var out, errOut strings.Builder
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return cliRun{out.String(), errOut.String(), err}
}

// cliStep is one command of a scenario and what it must print: lines of
// standard output, or an error holding errWant.
type cliStep struct {
	args    []string
	stdin   string
	out     []string
	errWant string
}

// tokensScenario exercises every change command, with refusals between,
// against the tokens file of tokens of its own.
func tokensScenario(t *testing.T, dir string) []cliStep {
	tokFile := testkit.WriteFile(t, filepath.Join(dir, "token.txt"), applyTok(1)+"\n")
	imp := testkit.WriteFile(t, filepath.Join(dir, "import.json"), `{
		"imp-a": {"token": "`+applyTok(20)+`", "allow": ["198.51.100.20"]},
		"imp-b": {"token_sha256": "`+testkit.Digest(applyTok(21))+`", "allow": ["198.51.100.21"], "owner": "acct-2"}
	}`)
	const exp = "2030-12-08T00:00:00Z"
	return []cliStep{
		{args: []string{"put", "cust-1", "--token-file", tokFile, "--allow", "198.51.100.7", "--owner", "acct-9", "--note", "first"},
			out: []string{`cust-1: created, allow 198.51.100.7, owner "acct-9", note "first"`}},
		{args: []string{"allow", "cust-1", "192.0.2.200", "203.0.113.0/24", "--expires", exp, "--note", "new office"},
			out: []string{
				`cust-1: allow + 192.0.2.200 (expires ` + exp + `) (note "new office")`,
				`cust-1: allow + 203.0.113.0/24 (expires ` + exp + `) (note "new office")`,
			}},
		{args: []string{"allow", "cust-1", "198.51.100.7"}, out: []string{"cust-1: unchanged"}},
		{args: []string{"allow", "cust-1", "192.0.2.200"}, out: []string{"cust-1: allow 192.0.2.200 is permanent (it expired at " + exp + ")"}},
		{args: []string{"remove", "cust-1", "203.0.113.0/24"}, out: []string{"cust-1: allow - 203.0.113.0/24"}},
		{args: []string{"suspend", "cust-1"}, out: []string{"cust-1: suspended; its token is refused everywhere (token_suspended) until resumed"}},
		{args: []string{"resume", "cust-1"}, out: []string{"cust-1: resumed"}},
		{args: []string{"put", "cust-1", "--keep-token", "--allow", "198.51.100.7,192.0.2.200", "--deny", "192.0.2.201", "--mode", "report"},
			out: []string{`cust-1: allow 192.0.2.200 note dropped (was "new office")`, "cust-1: deny + 192.0.2.201", "cust-1: mode report (was the handler's)", `cust-1: owner "" (was "acct-9")`, `cust-1: note "" (was "first")`}},
		{args: []string{"put", "cust-2", "--token-sha256", "sha256:" + testkit.Digest(applyTok(2)), "--allow", "any", "--suspended"},
			out: []string{"cust-2: created, allow any, suspended"}},
		{args: []string{"delete", "cust-2"}, out: []string{"cust-2: revoked; its token is refused everywhere (token_revoked)"}},
		{args: []string{"put", "cust-2", "--token-file", "-", "--allow", "192.0.2.2"}, stdin: applyTok(2),
			out: []string{"cust-2: listed again (no longer revoked), allow 192.0.2.2"}},
		{args: []string{"put", "cust-3", "--allow", "any"}, stdin: applyTok(3), out: []string{"cust-3: created, allow any"}},
		{args: []string{"delete", "--unrestrict", "cust-3"}, out: []string{"cust-3: removed; its token is now unlisted, usable wherever unlisted_tokens allows (put it again to restrict it)"}},
		{args: []string{"import", imp}, out: []string{"imported 2 tokens into TARGET (0 replaced)"}},

		// Refused: the route's message, naming the entry; nothing printed.
		{args: []string{"allow", "cust-1", "10.0.0.1/8"}, errWant: `token "cust-1": allow[2] "10.0.0.1/8"`},
		{args: []string{"allow", "cust-1", "192.0.2.9", "--ttl", "1h", "--expires", exp}, errWant: `token "cust-1": give expires or ttl, not both`},
		{args: []string{"allow", "nobody", "192.0.2.1"}, errWant: `token "nobody": not found`},
		{args: []string{"remove", "cust-1", "192.0.2.99"}, errWant: `token "cust-1" has no allow entry "192.0.2.99"`},
		{args: []string{"put", "cust-4", "--allow", "any"}, stdin: applyTok(1), errWant: `"cust-1"`},
		{args: []string{"put", "cust-1", "--token-sha256", testkit.Digest(applyTok(4)), "--allow", "any"}, errWant: "a label's token cannot change"},
		{args: []string{"put", "cust-4", "--allow", "any"}, stdin: "short", errWant: `token "cust-4": the token is 5 bytes; tokens shorter than 16 bytes`},
		{args: []string{"delete", "nobody"}, errWant: `token "nobody": not found`},
		{args: []string{"put", "a/b", "--allow", "any"}, stdin: applyTok(5), errWant: `token "a/b": use letters, digits`},
		{args: []string{"list", "--limit", "0"}, errWant: `limit "0": want 1 to 1000`},

		{args: []string{"list", "--limit", "3"}, out: []string{
			"cust-1\tallow 198.51.100.7,192.0.2.200; deny 192.0.2.201; mode report",
			"cust-2\tallow 192.0.2.2",
			"imp-a\tallow 198.51.100.20",
		}},
		{args: []string{"list", "--after", "imp-a"}, out: []string{`imp-b` + "\t" + `allow 198.51.100.21; owner "acct-2"`}},
	}
}

// The same commands through a running Caddy's routes (--admin) and on a
// store file no Caddy holds (--store) print the same, refuse the same,
// and leave the same store.
func TestTokensCLITargetsAgree(t *testing.T) {
	dir := t.TempDir()
	steps := tokensScenario(t, dir)

	h, hlogs := storeHandler(t, filepath.Join(dir, "caddy.db"))
	srv := adminServer(t, nil)
	admin := []string{"--admin", strings.TrimPrefix(srv.URL, "http://")}
	logger, cliLogs := testkit.Logs(zapcore.InfoLevel)
	storeFile := filepath.Join(dir, "cli.db")
	store := []string{"--store", storeFile}

	for _, target := range []struct {
		name  string
		flags []string
		where string
	}{
		{"admin", admin, "the Caddy at " + admin[1]},
		{"store", store, "store file " + storeFile},
	} {
		for i, st := range steps {
			r := runTokens(t, logger, st.stdin, append(st.args, target.flags...)...)
			var want string
			if len(st.out) > 0 {
				want = strings.ReplaceAll(strings.Join(st.out, "\n")+"\n", "TARGET", target.where)
			}
			switch {
			case st.errWant != "" && (r.err == nil || !strings.Contains(r.err.Error(), st.errWant)):
				t.Errorf("%s, step %d %v: error %v, want one with %q", target.name, i, st.args, r.err, st.errWant)
			case st.errWant == "" && r.err != nil:
				t.Errorf("%s, step %d %v: %v", target.name, i, st.args, r.err)
			case r.out != want:
				t.Errorf("%s, step %d %v printed:\n%s\nwant:\n%s", target.name, i, st.args, r.out, want)
			}
			for _, tok := range []string{applyTok(1), applyTok(2), applyTok(20)} {
				if strings.Contains(r.out+r.errOut, tok) {
					t.Errorf("%s, step %d %v printed a token", target.name, i, st.args)
				}
			}
		}
	}

	// The same store, entry for entry (export holds no revision).
	exports := map[string]string{}
	for name, flags := range map[string][]string{"admin": admin, "store": store} {
		file := filepath.Join(dir, name+".json")
		if r := runTokens(t, logger, "", append([]string{"export", "-o", file}, flags...)...); r.err != nil {
			t.Fatalf("export through %s: %v", name, r.err)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		exports[name] = string(b)
	}
	if exports["admin"] != exports["store"] {
		t.Errorf("the targets' stores differ:\nadmin:\n%s\nstore:\n%s", exports["admin"], exports["store"])
	}
	if strings.Contains(exports["store"], applyTok(20)) || !strings.Contains(exports["store"], testkit.Digest(applyTok(20))) {
		t.Errorf("the export holds a literal token, or lacks its digest:\n%s", exports["store"])
	}

	// Through the routes, the change is in force at once.
	if got := decided(h, applyTok(1), "192.0.2.200"); got != "allowed cust-1" {
		t.Errorf("through --admin, cust-1 from an added entry: %s", got)
	}
	// One audit line per change, said to come from where it did.
	for name, n := range map[string]struct {
		lines  int
		source string
	}{"admin": {hlogs.FilterMessage("token changed").Len(), "admin"}, "cli": {cliLogs.FilterMessage("token changed").Len(), "cli"}} {
		if n.lines != 13 {
			t.Errorf("%s: %d token changed lines, want 13 (one per change, none for the no-op and the refusals)", name, n.lines)
		}
	}
	for _, l := range cliLogs.FilterMessage("token changed").All() {
		if l.ContextMap()["source"] != "cli" {
			t.Errorf("--store audit line %v, want source cli", l.ContextMap())
		}
	}
}

// get prints one entry, digest only; the file store is closed after each
// command, so the next can open it.
func TestTokensCLIGet(t *testing.T) {
	store := []string{"--store", filepath.Join(t.TempDir(), "tokens.db")}
	if r := runTokens(t, nil, applyTok(1), append([]string{"put", "cust-1", "--allow", "198.51.100.7"}, store...)...); r.err != nil {
		t.Fatal(r.err)
	}
	// Without the nodes' configs, a set name cannot be checked: said so.
	r := runTokens(t, nil, "", append([]string{"allow", "cust-1", "office"}, store...)...)
	if r.err != nil || !strings.Contains(r.errOut, `note: token "cust-1": "office" cannot be checked here`) {
		t.Errorf("allow of a set name on --store: %v, stderr %q", r.err, r.errOut)
	}
	r = runTokens(t, nil, "", append([]string{"get", "cust-1"}, store...)...)
	var e entryOut
	if err := json.Unmarshal([]byte(r.out), &e); r.err != nil || err != nil {
		t.Fatalf("get: %v %v\n%s", r.err, err, r.out)
	}
	if e.Label != "cust-1" || e.TokenSHA256 != testkit.Digest(applyTok(1)) || e.Rev == 0 || strings.Join(e.Allow, ",") != "198.51.100.7,office" {
		t.Errorf("get printed %+v %+v", e, e.TokenPolicy)
	}
	if r := runTokens(t, nil, "", append([]string{"get", "nobody"}, store...)...); r.err == nil || !strings.Contains(r.err.Error(), `"nobody": not found`) {
		t.Errorf("get of an unknown label: %v", r.err)
	}
}

// --store refuses a file a running Caddy holds, saying to use --admin,
// and so does compact; once let go of, both work.
func TestTokensCLIStoreRefusesHeldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	h, _ := storeHandler(t, path) // as a running Caddy, holding the file
	for _, args := range [][]string{
		{"list", "--store", path},
		{"put", "cust-1", "--allow", "any", "--store", path},
		{"compact", "--store", path},
	} {
		r := runTokens(t, nil, applyTok(1), args...)
		if r.err == nil || !strings.Contains(r.err.Error(), tokenstore.ErrLocked.Error()) {
			t.Errorf("%v while Caddy holds the file: %v, want %q", args, r.err, tokenstore.ErrLocked)
			continue
		}
		if !strings.Contains(r.err.Error(), "(waited "+cliOpenTimeout.String()+")") {
			t.Errorf("%v: %v, want it to wait %s only", args, r.err, cliOpenTimeout)
		}
		if !strings.Contains(r.err.Error(), "--admin") && args[0] != "compact" {
			t.Errorf("%v: %v does not say to use --admin", args, r.err)
		}
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if r := runTokens(t, nil, applyTok(1), "put", "cust-1", "--allow", "any", "--store", path); r.err != nil {
		t.Fatalf("put once Caddy let go: %v", r.err)
	}
	r := runTokens(t, nil, "", "compact", "--store", path)
	if r.err != nil || !strings.HasPrefix(r.out, "compacted "+path+": ") {
		t.Errorf("compact: %v %q", r.err, r.out)
	}
	if r := runTokens(t, nil, "", "list", "--store", path); r.out != "cust-1\tallow any\n" {
		t.Errorf("after compact: %v %q", r.err, r.out)
	}
}

// The admin address is found as Caddy's own commands find it: --admin
// (host:port or unix//<path>), else Caddy's default (CADDY_ADMIN, read
// into caddy.DefaultAdminListen at start).
func TestTokensCLIAdminAddress(t *testing.T) {
	storeHandler(t, "")
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	adminServer(t, l)
	if r := runTokens(t, nil, applyTok(1), "put", "cust-1", "--allow", "any", "--admin", "unix/"+sock); r.err != nil || r.out != "cust-1: created, allow any\n" {
		t.Fatalf("through unix/%s: %v %q", sock, r.err, r.out)
	}
	if r := runTokens(t, nil, "", "list", "--admin", "unix/"+sock+"|0200"); r.err != nil || r.out != "cust-1\tallow any\n" {
		t.Errorf("through a socket address with permission bits: %v %q", r.err, r.out)
	}

	tcp := adminServer(t, nil)
	was := caddy.DefaultAdminListen
	t.Cleanup(func() { caddy.DefaultAdminListen = was })
	caddy.DefaultAdminListen = strings.TrimPrefix(tcp.URL, "http://")
	if r := runTokens(t, nil, "", "list"); r.err != nil || r.out != "cust-1\tallow any\n" {
		t.Errorf("with no target, through the default admin address: %v %q", r.err, r.out)
	}

	caddy.DefaultAdminListen = testkit.FreePort(t) // nothing listens there
	r := runTokens(t, nil, "", "list")
	if r.err == nil || !strings.Contains(r.err.Error(), "no Caddy answers at "+caddy.DefaultAdminListen) || !strings.Contains(r.err.Error(), "--redis") {
		t.Errorf("with no Caddy listening: %v", r.err)
	}
}

// The targets exclude each other, Redis flags need --redis, and each
// command refuses what its target cannot do.
func TestTokensCLITargetFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"two targets", []string{"list", "--store", path, "--redis", "localhost:1"}, "--store and --redis: give one target only"},
		{"redis flag without redis", []string{"list", "--prefix", "x:"}, "--prefix is a Redis flag: give --redis <host:port> too"},
		{"promote on a file", []string{"promote", "cust-1", "--min-requests", "1", "--store", path}, "use --admin"},
		{"promote on redis", []string{"promote", "cust-1", "--redis", "localhost:1"}, "promote is not available with --redis"},
		{"compact without store", []string{"compact", "--admin", "localhost:1"}, "give --store <path>"},
		{"mode on redis", []string{"put", "a", "--allow", "any", "--mode", "report", "--redis", "localhost:1"}, "--mode is not taken with --redis"},
		{"ttl on redis", []string{"allow", "a", "192.0.2.1", "--ttl", "1h", "--redis", "localhost:1"}, "--ttl is not taken with --redis"},
		{"paging on redis", []string{"list", "--limit", "5", "--redis", "localhost:1"}, "--limit is not taken with --redis"},
		{"two token sources", []string{"put", "a", "--allow", "any", "--token-sha256", testkit.Digest("x"), "--keep-token", "--store", path}, "give one of --token-file, --token-sha256 and --keep-token"},
		{"keep a missing token", []string{"put", "a", "--allow", "any", "--keep-token", "--store", path}, `token "a" is not in store file`},
		{"labels to list", []string{"list", "a", "--store", path}, "get <label> prints one entry"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runTokens(t, nil, "", tt.args...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
				t.Errorf("%v: %v, want %q", tt.args, r.err, tt.want)
			}
		})
	}
}

// promote, through the routes, allows what the node learned in report
// mode and says so, and says which addresses it left out, and why.
func TestTokensCLIPromote(t *testing.T) {
	h, _ := storeHandler(t, "")
	srv := adminServer(t, nil)
	admin := []string{"--admin", strings.TrimPrefix(srv.URL, "http://")}
	tok := applyTok(1)
	if r := runTokens(t, nil, tok, append([]string{"put", "cust-1", "--allow", "198.51.100.7", "--mode", "report"}, admin...)...); r.err != nil {
		t.Fatal(r.err)
	}
	for range 3 {
		serve(h, newRequest("192.0.2.60:1", "/", testkit.Bearer(tok)...))
	}
	serve(h, newRequest("192.0.2.61:1", "/", testkit.Bearer(tok)...))
	r := runTokens(t, nil, "", append([]string{"promote", "cust-1", "--min-requests", "3"}, admin...)...)
	want := "cust-1: allow + 192.0.2.60\ncust-1: mode enforce (was report)\n" +
		"cust-1: left out 192.0.2.61: seen 1 time, fewer than min_requests 3\n"
	if r.err != nil || r.out != want {
		t.Errorf("promote: %v\n%s\nwant:\n%s", r.err, r.out, want)
	}
	if got := decided(h, tok, "192.0.2.60"); got != "allowed cust-1" {
		t.Errorf("after promote: %s", got)
	}
}

// racyTarget is a target whose entry another writer changes once, just
// after changeEntry first reads it.
type racyTarget struct {
	tokensTarget
	race func()
}

func (r *racyTarget) get(label string) (entryOut, error) {
	e, err := r.tokensTarget.get(label)
	if r.race != nil {
		r.race()
		r.race = nil
	}
	return e, err
}

// A change made on a stale read is refused (412) and made again on a
// fresh one, so what is printed is this change, not another writer's too.
func TestTokensCLIChangeRetriesAfterAnotherWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	if r := runTokens(t, nil, applyTok(1), "put", "cust-1", "--allow", "198.51.100.7", "--store", path); r.err != nil {
		t.Fatal(r.err)
	}
	cmd := tokensCommandLogging(zap.NewNop())
	f := tokensFlags{store: path, logger: zap.NewNop()}
	ft, err := f.openFileTarget(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer ft.close()
	tries := 0
	rt := &racyTarget{tokensTarget: ft, race: func() {
		if _, err := ft.allow("cust-1", allowBody{Entries: []string{"192.0.2.1"}}, tokenstore.Cond{}); err != nil {
			t.Fatal(err)
		}
	}}
	var out strings.Builder
	err = changeEntry(rt, &out, "cust-1", func(_ *entryOut, cond tokenstore.Cond) (*entryOut, error) {
		tries++
		after, err := rt.allow("cust-1", allowBody{Entries: []string{"192.0.2.2"}}, cond)
		return &after, err
	})
	if err != nil || tries != 2 || out.String() != "cust-1: allow + 192.0.2.2\n" {
		t.Errorf("%d tries, %v, printed %q; want 2, the second printing only its own entry", tries, err, out.String())
	}
}
