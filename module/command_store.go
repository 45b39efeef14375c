package ipallowlist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// tokensTarget is what `caddy ip-allowlist tokens` changes, but for Redis:
// a running Caddy through its admin routes (adminTarget), or a store file
// no Caddy holds (fileTarget), which calls the routes' own fileStore
// methods. Both answer errors with the route's status and message.
type tokensTarget interface {
	list(after string, limit int) (tokenList, error)
	get(label string) (entryOut, error)
	put(label string, tp TokenPolicy, cond tokenstore.Cond) (entryOut, error)
	revoke(label string, unrestrict bool, cond tokenstore.Cond) error
	allow(label string, body allowBody, cond tokenstore.Cond) (entryOut, error)
	remove(label, entry string, cond tokenstore.Cond) (entryOut, error)
	suspend(label string, on bool, cond tokenstore.Cond) (entryOut, error)
	promote(label string, minRequests int, cond tokenstore.Cond) (promoteResult, error)
	importFrom(in io.Reader) (importResult, error)
	export(w io.Writer) error
	// where names the target in messages.
	where() string
	close() error
}

// Targets of the tokens commands.
const (
	targetAdmin = "admin"
	targetStore = "store"
	targetRedis = "redis"
)

// redisFlags are the flags that only a Redis target takes.
var redisFlags = []string{"username", "password-env", "db", "prefix", "tls", "tls-ca", "tls-server-name"}

// target says which store the flags name: --redis, --store, or else the
// admin endpoint (--admin, or Caddy's default admin address).
func (f *tokensFlags) target(cmd *cobra.Command) (string, error) {
	var given []string
	for _, name := range []string{targetAdmin, targetStore, targetRedis} {
		if cmd.Flags().Changed(name) {
			given = append(given, "--"+name)
		}
	}
	if len(given) > 1 {
		return "", fmt.Errorf("%s: give one target only", strings.Join(given, " and "))
	}
	target := targetAdmin
	switch {
	case cmd.Flags().Changed(targetRedis):
		target = targetRedis
	case cmd.Flags().Changed(targetStore):
		target = targetStore
	}
	if target != targetRedis {
		for _, name := range redisFlags {
			if cmd.Flags().Changed(name) {
				return "", fmt.Errorf("--%s is a Redis flag: give --redis <host:port> too (without --redis, tokens changes the store of the Caddy at --admin, by default %s)", name, caddy.DefaultAdminListen)
			}
		}
	}
	if target != targetAdmin {
		if err := refuseFlags(cmd, target, "config", "adapter"); err != nil {
			return "", err
		}
	}
	if target == targetRedis {
		if err := refuseFlags(cmd, target, "store-name"); err != nil {
			return "", err
		}
	}
	return target, nil
}

// refuseFlags refuses the flags given that target does not take.
func refuseFlags(cmd *cobra.Command, target string, names ...string) error {
	for _, name := range names {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s is not taken with %s", name, targetFlag(target))
		}
	}
	return nil
}

func targetFlag(target string) string {
	if target == targetAdmin {
		return "--admin (the default target)"
	}
	return "--" + target
}

// runTarget opens the admin or store target and calls do with it.
func (f *tokensFlags) runTarget(cmd *cobra.Command, target string, do func(tokensTarget) error) error {
	var t tokensTarget
	var err error
	switch target {
	case targetStore:
		t, err = f.openFileTarget(cmd)
	default:
		t, err = f.adminTarget()
	}
	if err != nil {
		return err
	}
	defer t.close()
	return do(t)
}

// cliOpenTimeout is how long --store waits for the store file's lock: not
// long, as whoever holds it (a running Caddy) holds it for good.
const cliOpenTimeout = time.Second

// openFileTarget opens the --store file, refusing one a Caddy holds.
func (f *tokensFlags) openFileTarget(cmd *cobra.Command) (*fileTarget, error) {
	path, err := filepath.Abs(f.store)
	if err != nil {
		return nil, fmt.Errorf("--store %q: %w", f.store, err)
	}
	if err := CheckStoreName(f.storeName); err != nil {
		return nil, fmt.Errorf("--store-name %w", err)
	}
	name := f.storeName
	if name == "" {
		name = defaultStoreName
	}
	logger := f.logger
	if logger == nil {
		logger = caddy.Log().Named("ip_allowlist.tokens")
	}
	s := newFileStore(path, name, logger)
	s.openTimeout = cliOpenTimeout
	if err := s.start(); err != nil {
		if errors.Is(err, tokenstore.ErrLocked) {
			return nil, fmt.Errorf("%w: a running Caddy holds it; change it through that Caddy with --admin <address> instead of --store", err)
		}
		return nil, err
	}
	return &fileTarget{s: s, a: audit{source: "cli"}, notes: cmd.ErrOrStderr()}, nil
}

// fileTarget is a store file no Caddy holds, changed with the routes'
// methods and no handler to apply the change to.
type fileTarget struct {
	s     *fileStore
	a     audit
	notes io.Writer
}

func (t *fileTarget) where() string { return "store file " + t.s.path }

func (t *fileTarget) close() error { return t.s.Destruct() }

func (t *fileTarget) list(after string, limit int) (tokenList, error) {
	return t.s.listPage(after, limit)
}

func (t *fileTarget) get(label string) (entryOut, error) {
	s, err := t.s.get(label)
	if err != nil {
		return entryOut{}, storeErr(err)
	}
	return newEntryOut(label, s), nil
}

func (t *fileTarget) put(label string, tp TokenPolicy, cond tokenstore.Cond) (entryOut, error) {
	t.noteSets(label, tp.Allow, tp.Deny)
	s, _, err := t.s.putEntry(label, tp, cond, false, t.a)
	return newEntryOut(label, s), err
}

func (t *fileTarget) revoke(label string, unrestrict bool, cond tokenstore.Cond) error {
	return t.s.revokeEntry(label, cond, unrestrict, t.a)
}

func (t *fileTarget) allow(label string, body allowBody, cond tokenstore.Cond) (entryOut, error) {
	t.noteSets(label, body.Entries)
	s, err := t.s.allowEntries(label, body, cond, t.a)
	return newEntryOut(label, s), err
}

func (t *fileTarget) remove(label, entry string, cond tokenstore.Cond) (entryOut, error) {
	s, err := t.s.removeEntry(label, entry, cond, t.a)
	return newEntryOut(label, s), err
}

func (t *fileTarget) suspend(label string, on bool, cond tokenstore.Cond) (entryOut, error) {
	s, err := t.s.setSuspended(label, on, cond, t.a)
	return newEntryOut(label, s), err
}

func (t *fileTarget) promote(string, int, tokenstore.Cond) (promoteResult, error) {
	return promoteResult{}, errors.New("promote adds the addresses a running node learned in report mode, which only that node knows: use --admin <address> of that node, not --store")
}

func (t *fileTarget) importFrom(in io.Reader) (importResult, error) {
	return t.s.importStream(in, audit{action: "import", source: t.a.source})
}

func (t *fileTarget) export(w io.Writer) error { return t.s.export(w) }

// noteSets says that set names cannot be checked without the config that
// defines them: a handler using the store checks them when it applies the
// entry, and a running Caddy (--admin) would have refused an unknown one.
func (t *fileTarget) noteSets(label string, lists ...[]string) {
	if note := setNamesNote(label, lists...); note != "" {
		fmt.Fprintln(t.notes, note)
	}
}

// adminTarget is a running Caddy's admin endpoint.
type adminTarget struct {
	addr   string // as given or found
	origin string // scheme and host of the request URLs
	host   bool   // whether to send Origin, as Caddy's CLI does for TCP
	store  string // ?store=
	client *http.Client
}

// adminTarget finds the admin address as Caddy's own commands do (caddy
// stop, caddy reload): --admin, else the config's admin listen address
// (--config), else Caddy's default (CADDY_ADMIN, else localhost:2019);
// unix//<path> is a unix socket.
func (f *tokensFlags) adminTarget() (*adminTarget, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(f.admin, nil, f.config, f.adapter)
	if err != nil {
		return nil, err
	}
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil || na.PortRangeSize() > 1 {
		return nil, fmt.Errorf("admin address %q: want host:port or unix//<path>", addr)
	}
	t := &adminTarget{addr: addr, store: f.storeName}
	dialAddr := na.JoinHostPort(0)
	switch {
	case na.IsUnixNetwork():
		// Drop the socket's permission bits (unix//<path>|0220), which
		// are Caddy's listener's business.
		dialAddr, _, _ = strings.Cut(na.Host, "|")
		t.origin = "http://127.0.0.1"
	case na.IsFdNetwork():
		return nil, fmt.Errorf("admin address %q is a file descriptor, which only the Caddy process that owns it can use", addr)
	default:
		t.origin = "http://" + dialAddr
		t.host = true
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	t.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, na.Network, dialAddr)
		},
	}}
	return t, nil
}

func (t *adminTarget) where() string { return "the Caddy at " + t.addr }

func (t *adminTarget) close() error {
	t.client.CloseIdleConnections()
	return nil
}

// call makes one request of the routes and decodes the answer into out
// (unless nil). An answer of 400 or more is a caddy.APIError holding the
// route's status and message.
func (t *adminTarget) call(method, path string, cond tokenstore.Cond, body io.Reader, out any) error {
	resp, err := t.send(method, path, nil, cond, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return nil
}

// send makes one request and returns its answer if it is no error.
func (t *adminTarget) send(method, path string, q url.Values, cond tokenstore.Cond, body io.Reader) (*http.Response, error) {
	if t.store != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("store", t.store)
	}
	u := t.origin + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if t.host {
		req.Header.Set("Origin", t.origin)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cond.IfRev != 0 {
		req.Header.Set("If-Match", etag(cond.IfRev))
	}
	if cond.IfAbsent {
		req.Header.Set("If-None-Match", "*")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("no Caddy answers at %s (%v): start it, give its admin address with --admin, or change a store file no Caddy holds with --store <path>; Redis stores need --redis, which was the default target before the token store", t.addr, op.Err)
		}
		return nil, err
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	if resp.StatusCode == http.StatusNotFound && strings.Contains(e.Error, "resource not found") {
		e.Error = fmt.Sprintf("the Caddy at %s has no token store routes: build it with this plugin and load a config whose ip_allowlist has a store file", t.addr)
	}
	return nil, caddy.APIError{HTTPStatus: resp.StatusCode, Err: errors.New(e.Error)}
}

func tokenPath(label string, rest ...string) string {
	p := "/ip-allowlist/tokens/" + url.PathEscape(label)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

func (t *adminTarget) list(after string, limit int) (tokenList, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if after != "" {
		q.Set("after", after)
	}
	resp, err := t.send(http.MethodGet, "/ip-allowlist/tokens", q, tokenstore.Cond{}, nil)
	if err != nil {
		return tokenList{}, err
	}
	defer resp.Body.Close()
	var out tokenList
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out, err
}

func (t *adminTarget) get(label string) (entryOut, error) {
	var e entryOut
	err := t.call(http.MethodGet, tokenPath(label), tokenstore.Cond{}, nil, &e)
	return e, err
}

func (t *adminTarget) put(label string, tp TokenPolicy, cond tokenstore.Cond) (entryOut, error) {
	b, err := json.Marshal(&tp)
	if err != nil {
		return entryOut{}, err
	}
	var e entryOut
	err = t.call(http.MethodPut, tokenPath(label), cond, strings.NewReader(string(b)), &e)
	return e, err
}

func (t *adminTarget) revoke(label string, unrestrict bool, cond tokenstore.Cond) error {
	var q url.Values
	if unrestrict {
		q = url.Values{"unrestrict": {"true"}}
	}
	resp, err := t.send(http.MethodDelete, tokenPath(label), q, cond, nil)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func (t *adminTarget) allow(label string, body allowBody, cond tokenstore.Cond) (entryOut, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return entryOut{}, err
	}
	var e entryOut
	err = t.call(http.MethodPost, tokenPath(label, "allow"), cond, strings.NewReader(string(b)), &e)
	return e, err
}

func (t *adminTarget) remove(label, entry string, cond tokenstore.Cond) (entryOut, error) {
	var e entryOut
	err := t.call(http.MethodDelete, tokenPath(label, "allow", entry), cond, nil, &e)
	return e, err
}

func (t *adminTarget) suspend(label string, on bool, cond tokenstore.Cond) (entryOut, error) {
	action := "resume"
	if on {
		action = "suspend"
	}
	var e entryOut
	err := t.call(http.MethodPost, tokenPath(label, action), cond, nil, &e)
	return e, err
}

func (t *adminTarget) promote(label string, minRequests int, cond tokenstore.Cond) (promoteResult, error) {
	b, _ := json.Marshal(promoteBody{MinRequests: minRequests})
	var p promoteResult
	err := t.call(http.MethodPost, tokenPath(label, "promote"), cond, strings.NewReader(string(b)), &p)
	return p, err
}

func (t *adminTarget) importFrom(in io.Reader) (importResult, error) {
	var res importResult
	err := t.call(http.MethodPost, "/ip-allowlist/import", tokenstore.Cond{}, in, &res)
	return res, err
}

func (t *adminTarget) export(w io.Writer) error {
	resp, err := t.send(http.MethodGet, "/ip-allowlist/export", nil, tokenstore.Cond{}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// statusOf is the route status of err; 0 if it has none.
func statusOf(err error) int {
	var e caddy.APIError
	if errors.As(err, &e) {
		return e.HTTPStatus
	}
	return 0
}

// changeTries bounds how often changeEntry reads again after another
// writer changed the entry first.
const changeTries = 3

// changeEntry reads label's entry (nil if it has none), makes one change
// with op on the condition that the entry is still the one read, and
// prints what changed. If another writer changes the entry first, it reads
// it again and retries, so what it prints is exactly this change.
func changeEntry(t tokensTarget, w io.Writer, label string, op func(before *entryOut, cond tokenstore.Cond) (*entryOut, error)) error {
	for try := 1; ; try++ {
		var before *entryOut
		cur, err := t.get(label)
		switch {
		case err == nil:
			before = &cur
		case statusOf(err) != http.StatusNotFound:
			return err
		}
		var cond tokenstore.Cond
		if before != nil {
			cond.IfRev = before.Rev
		}
		after, err := op(before, cond)
		if statusOf(err) == http.StatusPreconditionFailed && try < changeTries {
			continue
		}
		if err != nil {
			return err
		}
		var b, a *TokenPolicy
		if before != nil {
			b = before.TokenPolicy
		}
		if after != nil {
			a = after.TokenPolicy
		}
		for _, line := range describeChange(label, b, a) {
			fmt.Fprintln(w, line)
		}
		return nil
	}
}

// describeChange says, a line each, what changed from before to after
// (nil: no entry).
func describeChange(label string, before, after *TokenPolicy) []string {
	var out []string
	say := func(format string, args ...any) {
		out = append(out, label+": "+fmt.Sprintf(format, args...))
	}
	switch {
	case after == nil && before == nil:
		say("unchanged")
		return out
	case after == nil:
		say("removed; its token is now unlisted, usable wherever unlisted_tokens allows (put it again to restrict it)")
		return out
	case before == nil:
		what := "created, allow " + listOrNone(after.Allow)
		if len(after.Deny) > 0 {
			what += ", deny " + strings.Join(after.Deny, ",")
		}
		if after.Mode != "" {
			what += ", mode " + after.Mode
		}
		if after.Suspended {
			what += ", suspended"
		}
		if after.Owner != "" {
			what += fmt.Sprintf(", owner %q", after.Owner)
		}
		if after.Note != "" {
			what += fmt.Sprintf(", note %q", after.Note)
		}
		say("%s", what)
		return out
	case after.Revoked && !before.Revoked:
		say("revoked; its token is refused everywhere (token_revoked)")
		return out
	case before.Revoked && !after.Revoked:
		say("listed again (no longer revoked), allow %s", listOrNone(after.Allow))
		return out
	}
	added, removed := diffEntries(before.Allow, after.Allow)
	for _, e := range added {
		say("allow + %s%s", e, entryDetail(after, e))
	}
	for _, e := range removed {
		say("allow - %s", e)
	}
	for _, e := range after.Allow {
		if !slices.Contains(before.Allow, e) {
			continue
		}
		was, now := before.Expires[e], after.Expires[e]
		switch {
		case was == now:
		case now == "":
			say("allow %s is permanent (it expired at %s)", e, was)
		case was == "":
			say("allow %s expires %s (it was permanent)", e, now)
		default:
			say("allow %s expires %s (was %s)", e, now, was)
		}
		switch was, now := before.Notes[e], after.Notes[e]; {
		case was == now:
		case now == "":
			say("allow %s note dropped (was %q)", e, was)
		default:
			say("allow %s note %q (was %q)", e, now, was)
		}
	}
	added, removed = diffEntries(before.Deny, after.Deny)
	for _, e := range added {
		say("deny + %s", e)
	}
	for _, e := range removed {
		say("deny - %s", e)
	}
	switch {
	case after.Suspended && !before.Suspended:
		say("suspended; its token is refused everywhere (token_suspended) until resumed")
	case before.Suspended && !after.Suspended:
		say("resumed")
	}
	if before.Mode != after.Mode {
		say("mode %s (was %s)", modeName(after.Mode), modeName(before.Mode))
	}
	if before.Owner != after.Owner {
		say("owner %q (was %q)", after.Owner, before.Owner)
	}
	if before.Note != after.Note {
		say("note %q (was %q)", after.Note, before.Note)
	}
	if before.AllowBroad != after.AllowBroad {
		say("allow_broad %t", after.AllowBroad)
	}
	if len(out) == 0 {
		say("unchanged")
	}
	return out
}

func listOrNone(list []string) string {
	if len(list) == 0 {
		return "nothing (refused everywhere)"
	}
	return strings.Join(list, ",")
}

func modeName(m string) string {
	if m == "" {
		return "the handler's"
	}
	return m
}

// entryDetail is an allow entry's expiry and note, for a line that adds it.
func entryDetail(tp *TokenPolicy, e string) string {
	var d string
	if x := tp.Expires[e]; x != "" {
		d += " (expires " + x + ")"
	}
	if n := tp.Notes[e]; n != "" {
		d += fmt.Sprintf(" (note %q)", n)
	}
	return d
}

// printPage prints a page of entries, one line each: the label and what
// the entry allows. The token is never printed, not even as its digest.
func printPage(w io.Writer, page tokenList) {
	for _, e := range page.Tokens {
		fmt.Fprintf(w, "%s\t%s\n", e.Label, entrySummary(e.TokenPolicy))
	}
}

func entrySummary(tp *TokenPolicy) string {
	if tp.Revoked {
		return "revoked"
	}
	parts := []string{"allow " + listOrNone(tp.Allow)}
	if len(tp.Deny) > 0 {
		parts = append(parts, "deny "+strings.Join(tp.Deny, ","))
	}
	if n := len(tp.Expires); n > 0 {
		parts = append(parts, plural(n, "expiring entry"))
	}
	if tp.Suspended {
		parts = append(parts, "suspended")
	}
	if tp.Mode != "" {
		parts = append(parts, "mode "+tp.Mode)
	}
	if tp.Owner != "" {
		parts = append(parts, "owner "+strconv.Quote(tp.Owner))
	}
	return strings.Join(parts, "; ")
}

// writeExport writes the export to path, or standard output for "" or
// "-". A file is written beside its path and renamed over it once
// complete, so a failed export leaves no half a backup.
func writeExport(t tokensTarget, cmd *cobra.Command, path string) error {
	w, done, err := exportOutput(cmd, path)
	if err != nil {
		return err
	}
	if err := done(t.export(w)); err != nil {
		return err
	}
	if path != "" && path != "-" {
		fmt.Fprintf(cmd.OutOrStdout(), "exported the tokens of %s to %s\n", t.where(), path)
	}
	return nil
}

// openInput opens path for reading, standard input for "-".
func openInput(cmd *cobra.Command, path string) (io.ReadCloser, error) {
	if path == "-" {
		return io.NopCloser(cmd.InOrStdin()), nil
	}
	return os.Open(path)
}

// compactStore compacts the store file at path, which no Caddy may hold.
func compactStore(w io.Writer, path string) error {
	before, after, err := tokenstore.Compact(path, tokenstore.FileOptions{Timeout: cliOpenTimeout})
	if errors.Is(err, tokenstore.ErrLocked) {
		return fmt.Errorf("%w: compact needs the file to itself; stop the Caddy that holds it (or copy it away with export, and import it into a new file)", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "compacted %s: %s to %s\n", path, byteSize(before), byteSize(after))
	return nil
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// cloneEntry copies tp deeply enough for describeChange.
func cloneEntry(tp *TokenPolicy) *TokenPolicy {
	c := *tp
	c.Allow, c.Deny = slices.Clone(tp.Allow), slices.Clone(tp.Deny)
	c.Expires, c.Notes = maps.Clone(tp.Expires), maps.Clone(tp.Notes)
	return &c
}

var (
	_ tokensTarget = (*fileTarget)(nil)
	_ tokensTarget = (*adminTarget)(nil)
)
