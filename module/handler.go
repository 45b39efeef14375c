// Package ipallowlist is the http.handlers.ip_allowlist Caddy module: each
// API token may be used only from the client addresses listed for it.
package ipallowlist

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler allows each API token to be used only from the client addresses
// listed for it. A request whose token is used from anywhere else is answered
// 401 Unauthorized (or, in report mode, logged and let through).
//
// The client address is Caddy's client_ip: the remote address, or the
// address forwarded by a proxy listed in the server's trusted_proxies.
type Handler struct {
	// An ID for the admin API, so a token's list has a stable path such as
	// /id/<id>/tokens/<label>/allow. Caddy strips it before the handler
	// is decoded; it is here so the Caddyfile adapter can emit it.
	AdminID string `json:"@id,omitempty"`

	// Where the token is read from, in order; every source is read on every
	// request. Default: the Authorization header with the Bearer scheme.
	TokenSources []TokenSource `json:"token_sources,omitempty"`

	// The most distinct candidates one request's credential values may be
	// read as (each costs a SHA-256 hash), 8 to 1024. Default: 64. A
	// request over it is refused as credential_malformed.
	MaxCredentialCandidates int `json:"max_credential_candidates,omitempty"`

	// The longest credential value (a header line, a query or cookie
	// value of a token source) in bytes, 64 to 1048576. Default: 16384
	// (16 KiB). A request with a longer one is refused as
	// credential_malformed.
	MaxCredentialBytes int `json:"max_credential_bytes,omitempty"`

	// Named sets of ranges that token policies can refer to by name.
	// A set holds addresses, CIDR prefixes, start-end ranges, any and
	// private_ranges, but not other set names.
	IPSets map[string][]string `json:"ip_sets,omitempty"`

	// The listed tokens, keyed by label. The label is shown in logs and
	// placeholders instead of the token, and gives each token's list a stable
	// admin API path (tokens/<label>/allow).
	Tokens map[string]*TokenPolicy `json:"tokens,omitempty"`

	// Files of further tokens, each a JSON object of the same shape as
	// tokens. A label may appear only once across tokens and all files.
	TokensFiles []string `json:"tokens_files,omitempty"`

	// Where tokens that are not listed may be used from. Default: any
	// address, so an API stays callable until its tokens are restricted.
	// An empty allow list denies every unlisted token.
	Unlisted *Policy `json:"unlisted,omitempty"`

	// What happens to a request that carries no token: "allow" (default)
	// passes it on, "deny" answers it 401.
	MissingToken string `json:"missing_token,omitempty"`

	// "enforce" (default) answers denied requests 401; "report" logs
	// "request would be denied" and passes them on.
	Mode string `json:"mode,omitempty"`

	// How often to look for changes to the tokens files; 0 (default) never.
	// A changed file is compiled beside the tokens in force and replaces
	// them whole, without a reload; a file that does not compile is refused
	// and logged, and the tokens in force keep serving.
	Watch caddy.Duration `json:"watch,omitempty"`

	// A Redis token store shared with other nodes. Its tokens are added
	// to those of tokens and tokens_files, which win: a Redis entry whose
	// label is taken is skipped and logged, and its token refused rather
	// than unlisted. Default: none.
	Redis *RedisSource `json:"redis,omitempty"`

	// A writable token store: tokens changed one at a time through the
	// admin routes or the CLI, in place, without a reload. Its tokens are
	// added to those of the config, which win. Default: none.
	Store *TokenStore `json:"store,omitempty"`

	// Also count requests per listed token, in a series labelled with the
	// token's label (caddy_http_ip_allowlist_token_requests_total). Off by
	// default: it adds two series per listed token.
	MetricsPerToken bool `json:"metrics_per_token,omitempty"`
	// The leak signal: warn (and, with suspend, suspend a store token)
	// when a listed token is refused from many distinct addresses outside
	// its list within a short window. Default: off.
	LeakAlert *LeakAlert `json:"leak_alert,omitempty"`

	// The DNS servers that resolve the dns: entries of allow lists, each
	// an IP address with or without a port (53), asked in order. Default:
	// the system's (the nameservers of /etc/resolv.conf).
	Resolvers []string `json:"resolvers,omitempty"`

	config   context.Context // of the config this handler belongs to
	sources  sourceSet
	bearer   bool // a source is Authorization with the Bearer scheme
	report   bool
	current  *atomic.Pointer[view] // replaced whole when a token, watched files or the store change
	logger   *zap.Logger
	metrics  *metrics
	observed *observedAddrs // the addresses tokens were used from, shared across reloads

	store     *redisStore   // of Redis, shared with other configs' handlers
	storeKey  string        // its key in redisStores
	storeSubs chan struct{} // tells this handler the store changed
	storeLeft bool          // closeStore ran
	rebuild   *sync.Mutex   // one rebuild (watch or store) or change at a time
	builtGen  uint64        // the Redis store's generation the last build read, under rebuild
	// builtLoaded: the last build read a loaded Redis store, under rebuild.
	builtLoaded bool
	// loaded says when the view in force was first built from a loaded
	// Redis store; until then requests wait for it (waitForStore).
	loaded  *storeLoad
	overlay map[string]change // the changes in the view's overlay, under rebuild
	// changeSeq counts the changes applied, builds the full builds
	// published, and merging says a merge runs in the background; all
	// under rebuild.
	changeSeq, builds uint64
	merging           bool
	// The token store's entries, as build compiles them; nil without a
	// token store, and then no change can be applied.
	storeEntries func() ([]labeledEntry, error)
	fileStore    *fileStore // the file store storeEntries reads, if that is the store
	skipped      map[string]string
	// expiryWake tells expireEntries a view was published.
	expiryWake chan struct{}

	dns        *dnsHold // the names of dns: entries, as resolved
	unixWarned uint32   // atomic: 1 once warnUnixSocket has logged
	leaks      *leakTracker
	// fileStoreLeft: closeFileStore ran (Cleanup may run twice).
	fileStoreLeft bool
}

// TokenSource says where a token is read: a header, optionally after an
// auth scheme, a query parameter or a cookie. Exactly one of header, query
// and cookie is set.
type TokenSource struct {
	// The request header to read, e.g. Authorization or X-Api-Key.
	Header string `json:"header,omitempty"`
	// The auth scheme before the token, e.g. Bearer, matched without
	// regard to case. Empty: the whole header value is the token.
	Scheme string `json:"scheme,omitempty"`
	// The query parameter to read, e.g. api_key.
	Query string `json:"query,omitempty"`
	// The cookie to read, e.g. api_key, in every Cookie header.
	Cookie string `json:"cookie,omitempty"`
}

// TokenPolicy is one token and the ranges it may be used from.
type TokenPolicy struct {
	// The token itself, or one placeholder resolved at provision, such
	// as {env.PARTNER_A} or {file./run/secrets/partner_a} (one trailing
	// newline of the file is dropped). Compared byte for byte. At least
	// 16 bytes; braces only as one whole placeholder.
	Token string `json:"token,omitempty"`
	// The SHA-256 of the token, as 64 hex digits (sha256: in front is
	// accepted), instead of the token.
	TokenSHA256 string `json:"token_sha256,omitempty"`
	// Where the token may be used from: addresses, CIDR prefixes, start-end
	// ranges, ip_set names, any, private_ranges. Required.
	Allow []string `json:"allow,omitempty"`
	// Exceptions inside allow: addresses the token may not be used from.
	Deny []string `json:"deny,omitempty"`
	// Refuse the token on every request (reason token_revoked). Deleting
	// a token instead would make it unlisted, usable wherever the unlisted
	// policy allows. allow may then be empty. Default: false.
	Revoked bool `json:"revoked,omitempty"`
	// Accept allow entries that admit more than an IPv4 /8 or an IPv6 /32
	// (any and private_ranges are always accepted). Default: false, and
	// such entries are refused as likely mistakes.
	AllowBroad bool `json:"allow_broad,omitempty"`
	// When allow entries stop matching: an allow entry, exactly as
	// written in allow, mapped to an RFC 3339 time. Past that time the
	// entry is left out, as if removed; the token stays listed, so a
	// token whose entries have all expired is refused everywhere.
	Expires map[string]string `json:"expires,omitempty"`
	// A note per allow entry, keyed as expires (Add More's note).
	Notes map[string]string `json:"notes,omitempty"`
	// A note on the token, for the people who keep the list.
	Note string `json:"note,omitempty"`
	// Who the token belongs to (a customer or account id), for the
	// people who keep the list. Not checked on requests.
	Owner string `json:"owner,omitempty"`
	// This token's mode: "report" logs its refusals and lets them through
	// (learning its addresses), "enforce" refuses them. Default: the
	// handler's mode.
	Mode string `json:"mode,omitempty"`
	// Refuse the token on every request (reason token_suspended) until
	// it is resumed; unlike revoked, meant to be undone. Default: false.
	Suspended bool `json:"suspended,omitempty"`
	// Who suspended the token, kept by the token store while it is
	// suspended: owner:<user id> or operator:<user id> through the
	// console, leak_alert, admin (the admin routes) or cli. The console
	// lets an owner resume only a suspension of their own. Default:
	// empty, which no owner may resume.
	SuspendedBy string `json:"suspended_by,omitempty"`
}

// Policy is where unlisted tokens may be used from.
type Policy struct {
	// Ranges as in a token's allow. Empty: nowhere.
	Allow []string `json:"allow"`
	// Exceptions inside allow.
	Deny []string `json:"deny,omitempty"`
}

// Values of missing_token and mode.
const (
	MissingAllow = "allow"
	MissingDeny  = "deny"
	ModeEnforce  = "enforce"
	ModeReport   = "report"
)

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ip_allowlist",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision compiles the configuration into an immutable table, and
// publishes a view of it for requests to read.
func (h *Handler) Provision(ctx caddy.Context) error {
	return h.provisionWithLogger(ctx, ctx.Logger())
}

func (h *Handler) provisionWithLogger(ctx caddy.Context, logger *zap.Logger) error {
	h.logger = logger
	if err := checkModes(h); err != nil {
		return err
	}
	h.report = h.Mode == ModeReport
	sources, err := compileCredentials(h)
	if err != nil {
		return err
	}
	h.sources = sources
	for _, s := range sources.list {
		h.bearer = h.bearer || s.header == "Authorization" && equalFoldASCII(s.scheme, "Bearer")
	}
	if exposed := sourcesLoggedInClear(sources.list); len(exposed) > 0 && logger.Core().Enabled(zapcore.DebugLevel) {
		logger.Warn("debug logging is on: Caddy's debug entries (http.log.error, reverse_proxy) record these token sources in plain text; "+
			"see the README, Tokens in Caddy's debug log",
			zap.Strings("token_sources", exposed))
	}
	h.rebuild = new(sync.Mutex)
	h.expiryWake = make(chan struct{}, 1)
	if err := h.openDNS(ctx); err != nil {
		return err
	}
	if s := h.Store; s != nil {
		switch {
		case s.Redis != nil && s.File != "":
			return errors.New("store: give file or redis, not both")
		case s.Redis != nil && h.Redis != nil:
			return errors.New("store redis and redis given; redis is an alias of store redis: give one")
		case s.Redis != nil:
			h.Redis = s.Redis
		default:
			if err := h.openFileStore(ctx); err != nil {
				return err
			}
		}
	}
	if h.Redis != nil {
		if err := h.openStore(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	if fs := h.fileStore; fs != nil {
		// The store's writes wait while this handler reads it and
		// publishes its first view, then reach this handler too: a change
		// made meanwhile (during a reload, say) is neither missed by the
		// build nor left out of the changes applied to it.
		fs.mu.Lock()
		defer fs.mu.Unlock()
	}
	t, err := h.build()
	if err != nil {
		return err
	}
	h.current = new(atomic.Pointer[view])
	h.current.Store(newView(t))
	if h.fileStore != nil {
		h.fileStore.join(h)
	}
	if h.store != nil || h.fileStore != nil {
		h.loaded = &storeLoad{done: make(chan struct{})}
		h.markLoaded()
	}
	h.config = ctx.Context
	h.warnUnlisted(h.previousView(), h.current.Load())
	if t.missingAllow && !h.unlistedAny(t) {
		// A token sent in a form no source reads (Basic credentials, a
		// cookie, a body) is no token here: it passes as missing, and the
		// unlisted policy never sees it.
		h.logger.Warn("unlisted_tokens is restricted but missing_token is allow: a request whose token is sent where no token_from source reads it passes as having no token; set missing_token deny")
	}
	if h.metrics, err = newMetrics(ctx.GetMetricsRegistry(), h.MetricsPerToken); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	h.dns.metrics.Store(h.metrics)
	if h.observed, err = loadObservedAddrs(); err != nil {
		return err
	}
	if err := CheckLeakAlert(h.LeakAlert); err != nil {
		return err
	}
	if a := h.LeakAlert; a != nil {
		h.leaks = newLeakTracker(a, h.onLeak)
		switch {
		case a.Suspend && h.fileStore == nil:
			h.logger.Info("leak_alert: suspend changes token store entries only, and this handler has no store file: every token is alerted, not suspended")
		case a.Suspend:
			h.logger.Info("leak_alert: store tokens that may be leaked are suspended through the store; the config's own tokens are alerted, not suspended: the store cannot change them")
		}
	}
	h.register()
	h.logger.Info("ip allowlist provisioned",
		zap.Int("tokens", len(t.policies)),
		zap.Int("ranges", t.ranges),
		zap.Int("dns_names", t.dnsNames()),
		zap.String("mode", h.modeName()))
	if h.Watch > 0 && len(h.TokensFiles) > 0 {
		go h.watch(ctx, time.Duration(h.Watch))
	}
	if h.store != nil {
		go h.followStore(ctx)
	}
	if h.fileStore != nil {
		go h.followFileStore(ctx, h.fileStore)
	}
	go h.expireEntries(ctx)
	return nil
}

func (h *Handler) modeName() string {
	if h.report {
		return ModeReport
	}
	return ModeEnforce
}

// Errors returned to Caddy. They are the same for every deny reason, and
// name no token.
var (
	errDenied    = errors.New("ip_allowlist: request denied")
	errEarlyData = errors.New("ip_allowlist: TLS handshake not complete, client address cannot be verified")
)

// Values of {http.ip_allowlist.decision}.
const (
	decisionAllow = "allow"
	decisionDeny  = "deny"
)

// Placeholder names set on every request.
const (
	placeholderDecision = "http.ip_allowlist.decision"
	placeholderReason   = "http.ip_allowlist.reason"
	placeholderLabel    = "http.ip_allowlist.token_label"
	// The dns: name that admitted the request; empty when none did.
	placeholderDNSName = "http.ip_allowlist.dns_name"
)

// ServeHTTP decides the request and either passes it on or answers 401.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// With 0-RTT the handshake is unfinished and the client address
	// unverified, so ask the client to retry once it is (as client_ip does).
	if r.TLS != nil && !r.TLS.HandshakeComplete {
		return caddyhttp.Error(http.StatusTooEarly, errEarlyData)
	}
	if h.loaded != nil && !h.loaded.ok.Load() {
		h.waitForStore(r)
	}
	// One view for the whole request: a change may swap it meanwhile.
	v := h.current.Load()
	d := h.decide(r, v)
	if d.reason == reasonIPNotAllowed && d.policy.named && d.table.awaitNames(r.Context(), d.policy) {
		d = h.decide(r, v) // a name of the token had not been looked up yet
	}
	label := d.table.label(d.policy)
	h.metrics.count(d, label)
	if d.reason == reasonNoClientIP {
		h.warnUnixSocket(r)
	}
	if d.token && d.addr.IsValid() {
		who := label
		if d.policy == nil {
			who = (*labelRef)(&v.base.labels[v.base.unlistedLabel])
		}
		h.observed.record(who, d.addr, h.observedOutcome(d), time.Now().UnixNano())
	}
	// Constants assigned to an interface are not allocated.
	var decision any = decisionAllow
	if !d.allowed() {
		decision = decisionDeny
	}
	// Reasons are boxed once, and the label and the name are pointers, so
	// no value here allocates.
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set(placeholderDecision, decision)
		repl.Set(placeholderReason, reasonValues[d.reason])
		repl.Set(placeholderLabel, label)
		var name any = ""
		if d.name != nil {
			name = d.name.boxed
		}
		repl.Set(placeholderDNSName, name)
	}
	if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok && accessLogged(r) {
		extra.Set(zap.String("ip_allowlist_decision", decision.(string)))
		extra.Set(zap.Stringer("ip_allowlist_token_label", label))
		if d.name != nil {
			extra.Set(zap.String("ip_allowlist_dns_name", d.name.name))
		}
	}
	if d.allowed() {
		if d.policy != nil {
			h.setUser(r, repl, label)
		}
		return next.ServeHTTP(w, r)
	}
	report := d.report(h.report)
	msg := "request denied"
	if report {
		msg = "request would be denied"
	}
	if c := h.logger.Check(zapcore.InfoLevel, msg); c != nil {
		remote, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			remote = r.RemoteAddr
		}
		c.Write(
			zap.Stringer("reason", d.reason),
			zap.Stringer("token_label", label),
			zap.String("client_ip", d.clientIP),
			zap.String("remote_ip", remote),
			zap.String("method", r.Method),
			zap.String("host", r.Host),
			zap.String("path", r.URL.Path),
		)
	}
	if h.leaks != nil && d.policy != nil && (d.reason == reasonIPNotAllowed || d.reason == reasonIPDenied) && d.addr.IsValid() {
		h.leaks.refused(label, d.addr, report, time.Now().UnixNano())
	}
	if report {
		return next.ServeHTTP(w, r)
	}
	recordRefusal(h.fileStore, label, d.addr, d.clientIP, d.reason)
	if h.bearer {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	return caddyhttp.Error(http.StatusUnauthorized, errDenied)
}

// storeWait bounds how long a request waits for the Redis store to load
// when Caddy starts: the http app may start serving before the app that
// loads the store (Caddy starts apps in no set order), and until the
// store has loaded its tokens are refused. Past the wait, the request is
// decided as things are: fail closed.
const storeWait = 10 * time.Second

// storeLoad is closed (done) and set (ok) once.
type storeLoad struct {
	done chan struct{}
	ok   atomic.Bool
	once sync.Once
}

// waitForStore holds a request until the view in force was built from a
// loaded store, storeWait passes, or the request ends.
func (h *Handler) waitForStore(r *http.Request) {
	t := time.NewTimer(storeWait)
	defer t.Stop()
	select {
	case <-h.loaded.done:
	case <-t.C:
	case <-r.Context().Done():
	}
}

// markLoaded lets requests through once the view in force was built from
// a loaded store. Callers hold h.rebuild, or are Provision.
func (h *Handler) markLoaded() {
	if h.loaded == nil || !h.builtLoaded {
		return
	}
	h.loaded.once.Do(func() {
		h.loaded.ok.Store(true)
		close(h.loaded.done)
	})
}

// previousView is the view in force of the config being replaced, when
// it has one ip_allowlist handler: with several, which one this handler
// replaces cannot be told.
func (h *Handler) previousView() *view {
	inForce.RLock()
	defer inForce.RUnlock()
	var prev *view
	n := 0
	for o := range inForce.handlers {
		if o.config != h.config {
			prev = o.current.Load()
			n++
		}
	}
	if n != 1 {
		return nil
	}
	return prev
}

// unlistedAny reports whether the config lets unlisted tokens in from
// anywhere. Until a store has loaded, t refuses every unlisted token for
// the while (compileAll), so the config itself says.
func (h *Handler) unlistedAny(t *table) bool {
	if (h.storeEntries != nil || h.store != nil) && !h.builtLoaded {
		u := h.Unlisted
		return u == nil || len(u.Deny) == 0 && slices.Equal(u.Allow, []string{KeywordAny})
	}
	return t.unlistedSummary() == KeywordAny
}

// maxUnlistedWarnings bounds the WARN lines of one change; the rest are
// counted in one more.
const maxUnlistedWarnings = 20

// warnUnlisted logs one WARN per token listed in old that v no longer
// lists, when v's unlisted policy admits addresses: removing a token from
// a config source does not revoke it, it makes it usable wherever unlisted
// tokens are.
func (h *Handler) warnUnlisted(old, v *view) {
	t := v.base
	if old == nil || t.unlisted.allowed.v4Len == 0 && t.unlisted.allowed.v6Len == 0 {
		return
	}
	n := 0
	for digest, label := range old.tokens {
		if _, still := v.find(digest); still {
			continue
		}
		if n++; n <= maxUnlistedWarnings {
			h.logger.Warn("token no longer listed: it is now usable wherever unlisted_tokens allows; set revoked on it to refuse it",
				zap.Stringer("token_label", label),
				zap.String("unlisted_tokens", t.unlistedSummary()))
		}
	}
	if n > maxUnlistedWarnings {
		h.logger.Warn("more tokens no longer listed", zap.Int("tokens", n-maxUnlistedWarnings))
	}
}

// userIDVar is the Caddy variable ({http.vars.ip_allowlist.user_id}) set
// to the label ip_allowlist put in {http.auth.user.id}. The label names an
// API token, not a person who logged in: a handler that takes
// {http.auth.user.id} as a login must refuse it when the two are equal.
const userIDVar = "ip_allowlist.user_id"

// setUser makes an allowed listed token's label the request's user id, as
// basic_auth does for its users, so the access log shows it as user_id. An
// id an authentication handler set before is kept.
func (h *Handler) setUser(r *http.Request, repl *caddy.Replacer, label *labelRef) {
	if repl == nil {
		return
	}
	if id, _ := repl.Get(placeholderUserID); id != nil && id != "" {
		return
	}
	repl.Set(placeholderUserID, label)
	caddyhttp.SetVar(r.Context(), userIDVar, label)
}

const placeholderUserID = "http.auth.user.id"

// warnUnixSocket logs, once per handler, why a request from a unix socket
// has no client address: the peer has no IP, and Caddy reads a forwarded
// one only from peers it trusts.
func (h *Handler) warnUnixSocket(r *http.Request) {
	if atomic.LoadUint32(&h.unixWarned) != 0 {
		return
	}
	if _, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return // a TCP peer whose address did not parse: not this case
	}
	if !atomic.CompareAndSwapUint32(&h.unixWarned, 0, 1) {
		return
	}
	h.logger.Warn("client address unknown: the listener is a unix socket, so every request with a token is denied as no_client_ip; "+
		"if the proxy in front sends the client address (X-Forwarded-For), trust it with the server option trusted_proxies_unix (Caddy 2.8 or later)",
		zap.String("remote_addr", r.RemoteAddr),
		zap.String("caddyfile", "{ servers { trusted_proxies_unix } }"))
}

// sourcesLoggedInClear names the token sources Caddy does not redact in
// the requests its debug entries record: all but the credential headers.
func sourcesLoggedInClear(sources []source) []string {
	var names []string
	for _, s := range sources {
		switch {
		case s.query != "":
			names = append(names, "query "+s.query)
		case s.cookie != "":
			// Caddy's logs redact the Cookie header.
		case s.header != "Authorization" && s.header != "Proxy-Authorization" && s.header != "Cookie":
			names = append(names, "header "+s.header)
		}
	}
	return names
}

// accessLogged reports whether the server writes access logs, so the
// extra fields are added only where someone will read them.
func accessLogged(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv != nil && srv.Logs != nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
