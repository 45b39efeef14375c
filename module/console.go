package ipallowlist

import (
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

func init() {
	caddy.RegisterModule(Console{})
}

// Console (http.handlers.ip_allowlist_console) serves a web console for a
// token store: the token list, each token's entries (and what each dns:
// entry resolves to on this node), Add More, Add my IP, suspend and
// resume, the decision tester, the observed addresses, the recent
// refusals, and new tokens. It talks to the store in the process,
// as the admin routes do, through the same fileStore methods, so a change
// made here is checked, kept and published exactly as theirs are.
//
// It serves no one that no authentication handler before it (basic_auth,
// forward_auth, ...) has authenticated: {http.auth.user.id} must be set,
// and not by ip_allowlist, whose user id is an API token's label.
//
// Mounted at a path ending in / (ROOT), it serves the page at ROOT, its
// script and style at ROOT-/app.js and ROOT-/app.css, and its JSON API
// under ROOT-/api/ (docs/console.md). It works the same under handle_path,
// which strips ROOT, and under route or handle, which do not.
type Console struct {
	// The name of the token store (store file { name }) to serve.
	// Default: the store named default, or the only one open.
	Store string `json:"store,omitempty"`
	// The user ids ({http.auth.user.id}) who see and change every token,
	// unbounded by the owner_* fields. Every other authenticated user
	// sees and changes only the tokens whose owner is their user id,
	// within those bounds. Default: none given, and every authenticated
	// user sees every token, but every one is bounded as an owner is:
	// naming operators is what lifts the bounds.
	Operators []string `json:"operators,omitempty"`
	// The widest IPv4 range an owner may add, as a prefix length: an
	// address, prefix or start-end range holding more addresses than
	// such a prefix is refused, and so are any and private_ranges, which
	// hold more. 0 lets owners add any IPv4 range. Default: 24.
	OwnerMaxPrefixIPv4 *int `json:"owner_max_prefix_ipv4,omitempty"`
	// The widest IPv6 range an owner may add, as owner_max_prefix_ipv4
	// is for IPv4. Default: 48.
	OwnerMaxPrefixIPv6 *int `json:"owner_max_prefix_ipv6,omitempty"`
	// The most allow entries an owner's change may leave on a token (one
	// an operator gave more keeps them, but takes no more from its owner).
	// At most 1000. Default: 50.
	OwnerMaxEntries int `json:"owner_max_entries,omitempty"`
	// Let owners add dns: entries. Default: false, since one name gives
	// its owner up to 256 addresses of their choosing, wherever they are.
	OwnerDNS bool `json:"owner_dns,omitempty"`
	// The ip_set names an owner may add. Default: none.
	OwnerIPSets []string `json:"owner_ip_sets,omitempty"`

	logger    *zap.Logger
	operators map[string]struct{}
	owners    *ownerBounds
	cfg       *configLabelCache
	// loginWarned: the WARN for a request without a login was logged.
	loginWarned *atomic.Bool
}

// CaddyModule returns the Caddy module information.
func (Console) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ip_allowlist_console",
		New: func() caddy.Module { return new(Console) },
	}
}

// CheckOwnerBounds applies the rules of the owner_* fields.
func (c *Console) CheckOwnerBounds() error {
	_, err := newOwnerBounds(c)
	return err
}

// Provision checks the config.
func (c *Console) Provision(ctx caddy.Context) error {
	return c.provisionWithLogger(ctx.Logger())
}

// provisionWithLogger is Provision, logging to logger.
func (c *Console) provisionWithLogger(logger *zap.Logger) error {
	c.logger = logger
	c.cfg = new(configLabelCache)
	c.loginWarned = new(atomic.Bool)
	if c.Store != "" {
		if err := CheckStoreName(c.Store); err != nil {
			return fmt.Errorf("ip_allowlist_console: store %w", err)
		}
	}
	c.operators = map[string]struct{}{}
	for i, op := range c.Operators {
		if strings.TrimSpace(op) == "" {
			return fmt.Errorf("ip_allowlist_console: operators[%d] is empty", i)
		}
		c.operators[op] = struct{}{}
	}
	b, err := newOwnerBounds(c)
	if err != nil {
		return fmt.Errorf("ip_allowlist_console: %w", err)
	}
	c.owners = b
	if len(c.operators) == 0 {
		c.logger.Info("console: no operators given, so every authenticated user sees every token, and every one is bounded as an owner is; list the operators (operators <user id>...) to lift the bounds for them and give other users their own tokens only",
			zap.Stringer("owner_bounds", b))
	} else {
		c.logger.Info("console: operators see and change every token; every other user, their own tokens only, within the owner bounds",
			zap.Strings("operators", c.Operators), zap.Stringer("owner_bounds", b))
	}
	return nil
}

//go:embed console/index.html console/app.js console/app.css console/icon.svg
var consoleFiles embed.FS

// consoleCSP keeps the pages to their own script and style, in no frame.
const consoleCSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// errConsoleLogin is the 401 of a request no authentication handler
// authenticated.
var errConsoleLogin = errors.New("ip_allowlist_console: no authenticated user; put basic_auth, or another authentication handler, before ip_allowlist_console (an API token accepted by ip_allowlist is not a login)")

// ServeHTTP serves the console; it never calls next.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h := w.Header()
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	user, ok := consoleUser(r)
	if !ok {
		if !c.loginWarned.Swap(true) {
			// Once per console: a misconfigured one is refused for
			// every request, and a flood must not flood the log.
			c.logger.Warn("console request refused: no authenticated user; put basic_auth, or another authentication handler, before ip_allowlist_console", zap.String("path", r.URL.Path))
		}
		return writeConsoleError(w, http.StatusUnauthorized, errConsoleLogin)
	}
	p := r.URL.EscapedPath()
	i := strings.Index(p, "/-/")
	if i < 0 {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return writeConsoleError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
		}
		if !strings.HasSuffix(p, "/") {
			// Relative links need ROOT to end in /.
			// "./" keeps a last segment such as "https:x" a path.
			h.Set("Location", "./"+p[strings.LastIndexByte(p, '/')+1:]+"/")
			w.WriteHeader(http.StatusPermanentRedirect)
			return nil
		}
		return serveConsoleFile(w, "index.html", "text/html; charset=utf-8")
	}
	rest := p[i+3:]
	switch rest {
	case "app.js":
		return serveConsoleFile(w, rest, "text/javascript; charset=utf-8")
	case "app.css":
		return serveConsoleFile(w, rest, "text/css; charset=utf-8")
	case "icon.svg":
		return serveConsoleFile(w, rest, "image/svg+xml")
	}
	api, found := strings.CutPrefix(rest, "api/")
	if !found && rest != "api" {
		return writeConsoleError(w, http.StatusNotFound, fmt.Errorf("no console page %s", r.URL.Path))
	}
	req := &consoleRequest{c: c, w: w, r: r, user: user}
	_, named := c.operators[user]
	req.operator = named || len(c.operators) == 0
	req.bounded = !named
	err := req.serve(api)
	if err != nil {
		status := http.StatusInternalServerError
		var ae caddy.APIError
		if errors.As(err, &ae) {
			status, err = ae.HTTPStatus, ae.Err
		}
		if status >= 500 {
			c.logger.Error("console request failed", zap.String("path", r.URL.Path), zap.Error(err))
		}
		return writeConsoleError(w, status, err)
	}
	return nil
}

// consoleUser is the request's authenticated user: {http.auth.user.id},
// as an authentication handler sets it, unless ip_allowlist set it, to an
// API token's label.
func consoleUser(r *http.Request) (string, bool) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return "", false
	}
	v, _ := repl.Get(placeholderUserID)
	user := fmt.Sprint(v)
	if v == nil || user == "" {
		return "", false
	}
	// ip_allowlist sets the user id and its variable to the same label
	// (a pointer into its table): the id is an API token's while it is
	// that very value. An authentication handler after it sets an id of
	// its own, which is a login even when it reads the same.
	if label := caddyhttp.GetVar(r.Context(), userIDVar); label != nil && label == v {
		return "", false
	}
	if _, isLabel := v.(*labelRef); isLabel {
		return "", false
	}
	return user, true
}

func serveConsoleFile(w http.ResponseWriter, name, ctype string) error {
	b, err := consoleFiles.ReadFile("console/" + name)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-cache")
	_, err = w.Write(b)
	return err
}

func writeConsoleError(w http.ResponseWriter, status int, err error) error {
	return writeJSON(w, status, map[string]string{"error": err.Error()})
}

// consoleRequest is one API call.
type consoleRequest struct {
	c        *Console
	w        http.ResponseWriter
	r        *http.Request
	user     string
	operator bool // sees and changes every token
	bounded  bool // held to the owner bounds: not a named operator
	store    *fileStore
}

// serve dispatches an API call: path is what follows ROOT-/api/.
func (q *consoleRequest) serve(path string) error {
	var parts []string
	if path != "" {
		for _, p := range strings.Split(path, "/") {
			u, err := url.PathUnescape(p)
			if err != nil {
				return apiErr(http.StatusBadRequest, fmt.Errorf("path segment %q: %w", p, err))
			}
			parts = append(parts, u)
		}
	}
	switch q.r.Method {
	case http.MethodGet:
	case http.MethodPost:
		if err := q.sameOrigin(); err != nil {
			return err
		}
	default:
		return apiErr(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed: the console reads with GET and changes with POST", q.r.Method))
	}
	s, err := q.c.openStore(q.r)
	if err != nil {
		return err
	}
	q.store = s
	get := q.r.Method == http.MethodGet
	switch {
	case len(parts) == 1 && parts[0] == "me" && get:
		return q.me()
	case len(parts) == 1 && parts[0] == "refusals" && get:
		return q.refusals()
	case len(parts) == 1 && parts[0] == "tokens" && get:
		return q.list()
	case len(parts) == 1 && parts[0] == "tokens":
		return q.create()
	case len(parts) == 2 && parts[0] == "tokens" && get:
		return q.token(parts[1])
	case len(parts) == 3 && parts[0] == "tokens" && get:
		switch parts[2] {
		case "check":
			return q.check(parts[1])
		case "observed":
			return q.observed(parts[1])
		}
	case len(parts) == 3 && parts[0] == "tokens":
		return q.change(parts[1], parts[2])
	}
	return apiErr(http.StatusNotFound, fmt.Errorf("no console route %s %s", q.r.Method, q.r.URL.Path))
}

// sameOrigin refuses a change that a page of another site could have
// sent: its Origin must be this host, Sec-Fetch-Site (where the browser
// sends it) same-origin, and its body JSON, which a form cannot send.
func (q *consoleRequest) sameOrigin() error {
	r := q.r
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return apiErr(http.StatusForbidden, fmt.Errorf("cross-origin request refused (Sec-Fetch-Site: %s): changes are made from the console's own pages", site))
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return apiErr(http.StatusForbidden, errors.New("request without Origin refused: changes are made from the console's own pages"))
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if u, err := url.Parse(origin); err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, r.Host) {
		return apiErr(http.StatusForbidden, fmt.Errorf("cross-origin request refused (Origin: %s): changes are made from the console's own pages", origin))
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/json" {
		return apiErr(http.StatusUnsupportedMediaType, errors.New("a change takes a JSON body, with Content-Type: application/json"))
	}
	return nil
}

// openStore is the store the console serves, once open.
func (c *Console) openStore(r *http.Request) (*fileStore, error) {
	var stores []*fileStore
	if c.Store != "" {
		stores = storesNamed(c.Store)
	} else if stores = storesNamed(defaultStoreName); len(stores) == 0 {
		fileStores.Range(func(_, v any) bool {
			stores = append(stores, v.(*fileStore))
			return true
		})
	}
	switch {
	case len(stores) == 1:
		stores[0].waitOpen(r.Context().Done())
		if !stores[0].isLoaded() {
			return nil, apiErr(http.StatusServiceUnavailable, errStoreNotOpen)
		}
		return stores[0], nil
	case len(stores) > 1 && c.Store == "":
		return nil, apiErr(http.StatusConflict, fmt.Errorf("several token stores are open (%s): name the one to serve, ip_allowlist_console { store <name> }", strings.Join(storeNames(), ", ")))
	case len(stores) > 1:
		return nil, apiErr(http.StatusConflict, fmt.Errorf("store %q names more than one store file; give each store its own name", c.Store))
	}
	return nil, apiErr(http.StatusServiceUnavailable, errors.New("no token store is open: add store file to an ip_allowlist handler"))
}

// audit describes a change made through the console.
func (q *consoleRequest) audit() audit {
	return audit{source: "console", remote: remoteHost(q.r), user: q.user}
}

func (q *consoleRequest) me() error {
	ip, _ := caddyhttp.GetVar(q.r.Context(), caddyhttp.ClientIPVarKey).(string)
	if a, ok := clientAddr(ip); ok {
		ip = a.String()
	}
	return writeJSON(q.w, http.StatusOK, map[string]any{
		"user": q.user, "operator": q.operator, "bounded": q.bounded, "client_ip": ip, "store": q.store.Name(),
	})
}

// consoleToken is a token as the console lists and shows it.
type consoleToken struct {
	Label     string            `json:"label"`
	Source    string            `json:"source"`          // store or config
	Where     string            `json:"where,omitempty"` // where a config token is defined
	Rev       uint64            `json:"rev,omitempty"`
	Allow     []string          `json:"allow,omitempty"`
	Deny      []string          `json:"deny,omitempty"`
	Expires   map[string]string `json:"expires,omitempty"`
	Notes     map[string]string `json:"notes,omitempty"`
	Note      string            `json:"note,omitempty"`
	Owner     string            `json:"owner,omitempty"`
	Mode      string            `json:"mode,omitempty"`
	Suspended bool              `json:"suspended,omitempty"`
	Revoked   bool              `json:"revoked,omitempty"`
	// The latest leak_alert alert of the token, on this node.
	LeakAlert *leakEvent `json:"leak_alert,omitempty"`
	// What each dns: entry admits on this node: the names of the token
	// as in force, with their addresses and state.
	Names []nameStatus `json:"names,omitempty"`

	suspendedBy string // a store entry's suspended_by
}

// listedToken is a row of the token list.
type listedToken struct {
	Label     string `json:"label"`
	Source    string `json:"source"`
	Where     string `json:"where,omitempty"`
	Owner     string `json:"owner,omitempty"`
	Note      string `json:"note,omitempty"`
	Mode      string `json:"mode,omitempty"`
	Suspended bool   `json:"suspended,omitempty"`
	Revoked   bool   `json:"revoked,omitempty"`
	Allow     int    `json:"allow"`
}

func storeToken(label string, s stored) consoleToken {
	tp := s.tp
	return consoleToken{
		Label: label, Source: "store", Rev: s.rev,
		Allow: tp.Allow, Deny: tp.Deny, Expires: tp.Expires, Notes: tp.Notes,
		Note: tp.Note, Owner: tp.Owner, Mode: tp.Mode, Suspended: tp.Suspended, Revoked: tp.Revoked,
		suspendedBy: tp.SuspendedBy,
	}
}

func (t consoleToken) row() listedToken {
	return listedToken{Label: t.Label, Source: t.Source, Where: t.Where, Owner: t.Owner, Note: t.Note,
		Mode: t.Mode, Suspended: t.Suspended, Revoked: t.Revoked, Allow: len(t.Allow)}
}

const (
	consoleListDefault = 50
	consoleListMax     = 500
)

// list answers a page of the tokens whose labels begin with ?prefix and
// sort after ?after: the store's and the config's, merged in label order,
// an owner's own only.
func (q *consoleRequest) list() error {
	v := q.r.URL.Query()
	prefix, after := v.Get("prefix"), v.Get("after")
	limit := consoleListDefault
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > consoleListMax {
			return apiErr(http.StatusBadRequest, fmt.Errorf("limit %q: want 1 to %d", l, consoleListMax))
		}
		limit = n
	}
	// One more than a page from each source says whether another follows.
	stored, err := q.storeRows(prefix, after, limit+1)
	if err != nil {
		return err
	}
	config := q.c.cfg.rows(q.store, prefix, after, limit+1, q.visibleConfig)
	rows := make([]listedToken, 0, limit+1)
	for len(rows) <= limit && (len(stored) > 0 || len(config) > 0) {
		switch {
		case len(config) == 0 || len(stored) > 0 && stored[0].Label < config[0].Label:
			rows, stored = append(rows, stored[0]), stored[1:]
		case len(stored) > 0 && stored[0].Label == config[0].Label:
			// A store entry the config's label shadows: the config's
			// is in force.
			stored = stored[1:]
		default:
			rows, config = append(rows, config[0]), config[1:]
		}
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = rows[limit-1].Label
	}
	return writeJSON(q.w, http.StatusOK, map[string]any{"tokens": rows, "next": next})
}

// storeRows reads up to n store entries of the page.
func (q *consoleRequest) storeRows(prefix, after string, n int) ([]listedToken, error) {
	eng, err := q.store.engine()
	if err != nil {
		return nil, storeErr(err)
	}
	var out []listedToken
	if q.operator {
		recs, err := eng.ListPrefix(prefix, after, n)
		if err != nil {
			return nil, storeErr(err)
		}
		for _, rec := range recs {
			out = append(out, recordRow(rec))
		}
		return out, nil
	}
	labels, _, err := q.store.owners.labels(q.store, q.user, prefix, after, n)
	if err != nil {
		return nil, storeErr(err)
	}
	for _, l := range labels {
		rec, err := eng.Get(l)
		if err != nil {
			continue // removed meanwhile
		}
		if row := recordRow(rec); row.Owner == q.user {
			out = append(out, row)
		}
	}
	return out, nil
}

func recordRow(rec tokenstore.Record) listedToken {
	e := decodeEntry(string(rec.Data))
	if e.err != nil {
		return listedToken{Label: rec.Label, Source: "store", Note: "this build cannot read the entry: " + e.err.Error()}
	}
	return storeToken(rec.Label, stored{e.tp, rec.Rev}).row()
}

// visibleConfig says whether the user may see a config token.
func (q *consoleRequest) visibleConfig(t consoleToken) bool {
	return q.operator || t.Owner != "" && t.Owner == q.user
}

// find reads label's token as this user may see it: a store entry, or a
// config token; 404, naming only the label, for one they may not see.
func (q *consoleRequest) find(label string) (consoleToken, error) {
	if t, ok := q.c.cfg.token(q.store, label); ok {
		if !q.visibleConfig(t) {
			return consoleToken{}, q.notFound(label)
		}
		return t, nil
	}
	s, err := q.store.get(label)
	if err != nil {
		if errors.Is(err, tokenstore.ErrNotFound) {
			return consoleToken{}, q.notFound(label)
		}
		return consoleToken{}, storeErr(err)
	}
	if !q.operator && s.tp.Owner != q.user {
		return consoleToken{}, q.notFound(label)
	}
	return storeToken(label, s), nil
}

func (q *consoleRequest) notFound(label string) error {
	return apiErr(http.StatusNotFound, fmt.Errorf("no token %q", label))
}

func (q *consoleRequest) token(label string) error {
	t, err := q.find(label)
	if err != nil {
		return err
	}
	if ev, ok := latestLeak(q.store, label); ok {
		t.LeakAlert = &ev
	}
	return q.writeToken(t)
}

// writeToken answers t, with the state of its dns: names as in force.
func (q *consoleRequest) writeToken(t consoleToken) error {
	if _, tb, p := q.policyInForce(t.Label); p != nil {
		t.Names = tb.names(p)
	}
	return writeJSON(q.w, http.StatusOK, t)
}

// policyInForce finds label's policy, and its table, as the first handler
// using the store has it in force on this node; nil when none does.
func (q *consoleRequest) policyInForce(label string) (*Handler, *table, *policy) {
	for _, h := range q.store.users() {
		if t, p := h.current.Load().byLabel(label); p != nil {
			return h, t, p
		}
	}
	return nil, nil, nil
}

// Bounds on what one console user can make the store keep, so that a
// customer given the console cannot fill the server's memory or disk with
// notes, entries or tokens. The admin routes, an operator's tool, have
// only their body's bound.
const (
	consoleMaxText    = 1024 // bytes of a note, and of an owner
	consoleMaxAdd     = 256  // allow entries added (or a new token's) in one call
	consoleMaxEntries = 1000 // allow entries a token can have through the console
)

// consoleMaxOwned is how many store tokens an owner (not an operator) can
// have the console make; a variable for the tests.
var consoleMaxOwned = 1000

// checkText refuses a note or an owner longer than consoleMaxText.
func checkText(label, field, v string) error {
	if len(v) > consoleMaxText {
		return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: %s of %d bytes is longer than %d", label, field, len(v), consoleMaxText))
	}
	return nil
}

// consoleBody is what a change may carry.
type consoleBody struct {
	allowBody
	Entry string `json:"entry,omitempty"`
	Owner string `json:"owner,omitempty"`
}

// change makes one change to label's store entry, which this user may
// see: allow, remove, suspend, resume, owner. The entry read is the one
// changed (its revision is the write's condition), so an owner's right
// to it cannot change between the two.
func (q *consoleRequest) change(label, action string) error {
	var body consoleBody
	if err := decodeBody(q.r, label, &body); err != nil {
		return err
	}
	t, err := q.find(label)
	if err != nil {
		return err
	}
	if t.Source != "store" {
		return apiErr(http.StatusConflict, fmt.Errorf("token %q is defined in %s: the console cannot change it; change the config", label, t.Where))
	}
	cond := tokenstore.Cond{IfRev: t.Rev}
	a := q.audit()
	if err := errors.Join(checkText(label, "note", body.Note), checkText(label, "owner", body.Owner)); err != nil {
		return err
	}
	var kept stored
	switch action {
	case "allow":
		if n := len(body.Entries); n > consoleMaxAdd || len(t.Allow)+n > consoleMaxEntries {
			return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: %d entries and %d more: the console adds at most %d at a time, up to %d a token; the admin routes take more", label, len(t.Allow), n, consoleMaxAdd, consoleMaxEntries))
		}
		if q.bounded {
			// Every entry, those present too: adding one again
			// changes its expiry, and can make an operator's
			// temporary entry permanent.
			if err := q.c.owners.checkAdd(label, t.Allow, body.Entries); err != nil {
				return err
			}
		}
		kept, err = q.store.allowEntries(label, body.allowBody, cond, a)
	case "remove":
		if body.Entry == "" {
			return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: entry is empty; give the allow entry to remove", label))
		}
		kept, err = q.store.removeEntry(label, body.Entry, cond, a)
	case "suspend", "resume":
		by := "operator:" + q.user
		if q.bounded {
			if action == "resume" {
				if err := q.c.owners.checkResume(label, q.user, t); err != nil {
					return err
				}
			}
			by = ownerSuspensionPrefix + q.user
		}
		kept, err = q.store.suspendAs(label, action == "suspend", by, cond, a)
	case "owner":
		if !q.operator {
			return apiErr(http.StatusForbidden, fmt.Errorf("token %q: only an operator can change a token's owner", label))
		}
		a.action = "owner"
		kept, err = q.store.editEntry(label, cond, a, func(tp *TokenPolicy) error {
			if tp.Owner == body.Owner {
				return errUnchanged
			}
			tp.Owner = body.Owner
			return nil
		})
	default:
		return apiErr(http.StatusNotFound, fmt.Errorf("no console route %s %s", q.r.Method, q.r.URL.Path))
	}
	if err != nil {
		if errors.Is(err, tokenstore.ErrPrecondition) {
			return apiErr(http.StatusConflict, fmt.Errorf("token %q changed meanwhile; reload it and try again", label))
		}
		return err
	}
	return q.writeToken(storeToken(label, kept))
}

// createBody is a new token's request.
type createBody struct {
	Label string   `json:"label"`
	Allow []string `json:"allow"`
	Note  string   `json:"note,omitempty"`
	Owner string   `json:"owner,omitempty"`
}

// newTokenBytes is the entropy of a token the console makes.
const newTokenBytes = 32

// create makes a new random token, keeps only its digest, and answers the
// token once.
func (q *consoleRequest) create() error {
	var body createBody
	if err := decodeBody(q.r, "", &body); err != nil {
		return err
	}
	if !q.operator {
		body.Owner = q.user // an owner's new token is theirs
	}
	if err := errors.Join(checkText(body.Label, "note", body.Note), checkText(body.Label, "owner", body.Owner)); err != nil {
		return err
	}
	if len(body.Allow) > consoleMaxAdd {
		return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: %d allow entries: a new token has at most %d; add more later", body.Label, len(body.Allow), consoleMaxAdd))
	}
	if q.bounded {
		if err := q.c.owners.checkAdd(body.Label, nil, body.Allow); err != nil {
			return err
		}
	}
	if !q.operator {
		owned, _, err := q.store.owners.labels(q.store, q.user, "", "", consoleMaxOwned)
		if err != nil {
			return storeErr(err)
		}
		if len(owned) >= consoleMaxOwned {
			return apiErr(http.StatusForbidden, fmt.Errorf("token %q: you have %d tokens, the most the console makes for one owner", body.Label, len(owned)))
		}
	}
	secret := make([]byte, newTokenBytes)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	token := "ipa_" + base64.RawURLEncoding.EncodeToString(secret)
	digest := sha256.Sum256([]byte(token))
	tp := TokenPolicy{TokenSHA256: hex.EncodeToString(digest[:]), Allow: body.Allow, Note: body.Note, Owner: body.Owner}
	a := q.audit()
	a.action, a.entries = "create", body.Allow
	kept, _, err := q.store.update(body.Label, tokenstore.Cond{IfAbsent: true}, a, func(cur *TokenPolicy) (*TokenPolicy, error) {
		return &tp, nil
	})
	if err != nil {
		var conflict *ConflictError
		if errors.Is(err, tokenstore.ErrPrecondition) || !q.operator && errors.As(err, &conflict) {
			// To an owner, a label the config holds is taken, as one
			// another owner holds: where it is listed is not theirs to
			// know.
			return apiErr(http.StatusConflict, fmt.Errorf("token %q: the label is taken; choose another", body.Label))
		}
		return storeErr(err)
	}
	q.w.Header().Set("Cache-Control", "no-store")
	return writeJSON(q.w, http.StatusCreated, map[string]any{"token": token, "entry": storeToken(body.Label, kept)})
}

// check answers what the handlers using the store decide for label used
// from ?ip.
func (q *consoleRequest) check(label string) error {
	if _, err := q.find(label); err != nil {
		return err
	}
	ipText := q.r.URL.Query().Get("ip")
	addr, ok := clientAddr(ipText)
	if !ok {
		return apiErr(http.StatusBadRequest, fmt.Errorf("ip %q: not an IP address", ipText))
	}
	h, t, p := q.policyInForce(label)
	if p == nil {
		return apiErr(http.StatusNotFound, fmt.Errorf("token %q is not in force on this node", label))
	}
	res, name := t.checkNamed(p, addr)
	return writeJSON(q.w, http.StatusOK, newCheckResult(label, addr, res, name, h.modeName()))
}

// consoleObserved is an observed address with what became of it.
type consoleObserved struct {
	observedAddress
	// allowed, learned (report mode let it through), or refused.
	Status string `json:"status"`
}

func (q *consoleRequest) observed(label string) error {
	if _, err := q.find(label); err != nil {
		return err
	}
	if !q.operator && q.listedElsewhere(label) {
		return apiErr(http.StatusConflict, fmt.Errorf("token %q: another site of this Caddy lists a token under the same label, and the addresses observed are kept by label: they are not shown to owners", label))
	}
	var seen []observedAddress
	observedPool.Range(func(_, v any) bool {
		seen = v.(*observedAddrs).snapshot(label)[label]
		return false
	})
	out := make([]consoleObserved, 0, len(seen))
	for _, a := range seen {
		status := "allowed"
		switch {
		case a.refused():
			status = "refused"
		case a.WouldDeny > 0:
			status = "learned"
		}
		out = append(out, consoleObserved{a, status})
	}
	return writeJSON(q.w, http.StatusOK, map[string]any{"addresses": out})
}

// listedElsewhere says whether a handler in force that does not use the
// console's store lists label: the observed addresses of the two are kept
// together, by label.
func (q *consoleRequest) listedElsewhere(label string) bool {
	users := q.store.users()
	inForce.RLock()
	defer inForce.RUnlock()
	for h := range inForce.handlers {
		if slices.Contains(users, h) {
			continue
		}
		if _, p := h.current.Load().byLabel(label); p != nil {
			return true
		}
	}
	return false
}

// refusalsShown bounds the recent refusals one call answers.
const refusalsShown = 100

// refusals answers the recent refusals, of ?label's token only if given:
// an operator's of every token, an owner's of their own.
func (q *consoleRequest) refusals() error {
	label := q.r.URL.Query().Get("label")
	if label != "" {
		if _, err := q.find(label); err != nil {
			return err
		}
	}
	owned := map[string]bool{}
	keep := func(r *refusal) bool {
		switch {
		case r.store != q.store:
			return false // another site's, whatever its label
		case label != "":
			return r.Label == label
		case q.operator:
			return true
		case r.Label == "":
			return false
		}
		ok, seen := owned[r.Label]
		if !seen {
			_, err := q.find(r.Label)
			ok = err == nil
			owned[r.Label] = ok
		}
		return ok
	}
	return writeJSON(q.w, http.StatusOK, map[string]any{"refusals": recentRefusals(refusalsShown, keep)})
}

// configLabelCache lists the config's tokens of the handlers using a
// store in label order, built once per full build of their tables: the
// tables find a token by label but do not sort them.
type configLabelCache struct {
	mu     sync.Mutex
	bases  []*table
	tokens []consoleToken
}

// load returns the config tokens of s's handlers, rebuilding the list when
// any handler's base table changed.
func (c *configLabelCache) load(s *fileStore) []consoleToken {
	hs := s.users()
	bases := make([]*table, len(hs))
	for i, h := range hs {
		bases[i] = h.current.Load().base
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(bases, c.bases) {
		return c.tokens
	}
	seen := map[string]bool{}
	var tokens []consoleToken
	for i, h := range hs {
		t, store := bases[i], h.storeWhere()
		// Policies are compiled in runs of one origin: read the
		// config's runs only, not the store's million.
		for j, o := range t.origins {
			if o.where == store {
				continue
			}
			end := uint32(len(t.policies))
			if j+1 < len(t.origins) {
				end = t.origins[j+1].start
			}
			for id := o.start; id < end; id++ {
				label := t.label(&t.policies[id]).String()
				if i, listed := t.labelled(label); !listed || i != id || seen[label] {
					continue
				}
				seen[label] = true
				ct := consoleToken{Label: strings.Clone(label), Source: "config", Where: o.where}
				if tp := h.Tokens[label]; tp != nil {
					ct.Allow, ct.Deny, ct.Note, ct.Owner, ct.Mode = tp.Allow, tp.Deny, tp.Note, tp.Owner, tp.Mode
					ct.Suspended, ct.Revoked = tp.Suspended, tp.Revoked
				}
				tokens = append(tokens, ct)
			}
		}
	}
	slices.SortFunc(tokens, func(a, b consoleToken) int { return strings.Compare(a.Label, b.Label) })
	c.bases, c.tokens = bases, tokens
	return tokens
}

// rows returns up to n config tokens of a page that keep says to show.
func (c *configLabelCache) rows(s *fileStore, prefix, after string, n int, keep func(consoleToken) bool) []listedToken {
	all := c.load(s)
	i, _ := slices.BinarySearchFunc(all, max(prefix, after), func(t consoleToken, l string) int { return strings.Compare(t.Label, l) })
	var out []listedToken
	for ; i < len(all) && len(out) < n && strings.HasPrefix(all[i].Label, prefix); i++ {
		if all[i].Label != after && keep(all[i]) {
			out = append(out, all[i].row())
		}
	}
	return out
}

// token finds label among the config's tokens.
func (c *configLabelCache) token(s *fileStore, label string) (consoleToken, bool) {
	all := c.load(s)
	i, ok := slices.BinarySearchFunc(all, label, func(t consoleToken, l string) int { return strings.Compare(t.Label, l) })
	if !ok {
		return consoleToken{}, false
	}
	return all[i], true
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Console)(nil)
	_ caddyhttp.MiddlewareHandler = (*Console)(nil)
)
