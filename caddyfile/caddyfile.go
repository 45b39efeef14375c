// Package caddyfile is the ip_allowlist Caddyfile directive: it parses the
// directive into the http.handlers.ip_allowlist module's JSON config and
// places the directive right after basic_auth.
package caddyfile

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	ipallowlist "github.com/ipallowlist/caddy-ip-allowlist/module"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ip_allowlist", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("ip_allowlist", httpcaddyfile.After, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	return Parse(h.Dispenser)
}

// Parse reads one ip_allowlist directive:
//
//	ip_allowlist [<matcher>] {
//		token_from header <field> [<scheme>]
//		token_from query <param>
//		token_from cookie <name>
//		max_credential_candidates <n>
//		max_credential_bytes <size>
//		ip_set <name> <range>...
//		token <token> [<range>...]
//		token <token> {
//			label <name>
//			allow <range>...
//			deny  <range>...
//			allow_broad
//			revoked
//			suspended
//			mode enforce|report
//			owner <id>
//			note <text>
//		}
//		tokens_file <path>
//		store file [<path>] {
//			name <name>
//		}
//		store redis <host:port> {
//			name <name>
//			(the redis block's subdirectives)
//		}
//		redis <host:port> {
//			username <name>
//			password <password>
//			db <number>
//			key_prefix <prefix>
//			tls
//			tls_server_name <name>
//			tls_ca <file>
//			snapshot <file>
//			resync <interval>
//		}
//		watch [<interval>]
//		unlisted_tokens <range>...|none
//		missing_token allow|deny
//		mode enforce|report
//		metrics_per_token
//		leak_alert <distinct_addresses> <window> [suspend]
//		resolvers <ip[:port]>...
//		admin_id <id>
//	}
//
// Everything that can be checked without resolving placeholders or reading
// files is checked here, so `caddy adapt` names the file and line.
func Parse(d *caddyfile.Dispenser) (*ipallowlist.Handler, error) {
	p := parser{d: d, h: &ipallowlist.Handler{}, setLines: map[string]int{}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p.h, nil
}

type parser struct {
	d *caddyfile.Dispenser
	h *ipallowlist.Handler

	// What check needs to point at the line an error is about.
	line         int // of the directive
	tokens       []tokenLine
	setLines     map[string]int
	unlistedLine int
}

// tokenLine is a token entry as written, in order, with its line and the
// line of each allow and deny entry.
type tokenLine struct {
	label      string
	tp         *ipallowlist.TokenPolicy
	line       int
	allowLines []int
	denyLines  []int
}

// lineOf is the line of the token's entry that err is about, or the
// token's own.
func (t *tokenLine) lineOf(err error) int {
	var ee *ipallowlist.EntryError
	if errors.As(err, &ee) {
		lines := t.allowLines
		if ee.Field == "deny" {
			lines = t.denyLines
		}
		if ee.Index < len(lines) {
			return lines[ee.Index]
		}
	}
	return t.line
}

// check applies the module's rules (ipallowlist.Checker, the same code
// Provision runs) once the whole block is read, so set names may be used
// before their ip_set line, and names each error's line.
func (p *parser) check() error {
	at := func(err error) error {
		var ce *ipallowlist.ConfigError
		line := p.line
		if errors.As(err, &ce) {
			switch {
			case ce.Token != "":
				for _, t := range p.tokens {
					if t.label == ce.Token {
						line = t.line
					}
				}
			case ce.Set != "":
				line = p.setLines[ce.Set]
			case ce.Field == "unlisted":
				line = p.unlistedLine
			}
		}
		return p.errAt(line, err)
	}
	chk, err := ipallowlist.NewChecker(p.h)
	if err != nil {
		return at(err)
	}
	for _, t := range p.tokens {
		if err := chk.Token(t.label, t.tp); err != nil {
			return p.errAt(t.lineOf(err), err)
		}
	}
	for _, t := range p.tokens {
		if p.h.Tokens == nil {
			p.h.Tokens = map[string]*ipallowlist.TokenPolicy{}
		}
		p.h.Tokens[t.label] = t.tp
	}
	return nil
}

func (p *parser) parse() error {
	d, h := p.d, p.h
	d.Next() // the directive name
	p.line = d.Line()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "token_from":
			src, err := p.tokenFrom()
			if err != nil {
				return err
			}
			if err := ipallowlist.CheckTokenSource(src); err != nil {
				return d.Errf("token_from: %v", err)
			}
			h.TokenSources = append(h.TokenSources, src)
		case "ip_set":
			if err := p.ipSet(); err != nil {
				return err
			}
		case "token":
			if err := p.token(); err != nil {
				return err
			}
		case "tokens_file":
			var path string
			if !d.Args(&path) || d.NextArg() {
				return d.ArgErr()
			}
			h.TokensFiles = append(h.TokensFiles, path)
		case "redis":
			if h.Redis != nil || h.Store != nil {
				return d.Err("redis given twice, or with store; a handler follows one store")
			}
			src, err := p.redis(nil)
			if err != nil {
				return err
			}
			h.Redis = src
		case "store":
			if h.Redis != nil || h.Store != nil {
				return d.Err("store given twice, or with redis; a handler follows one store")
			}
			st, err := p.store()
			if err != nil {
				return err
			}
			h.Store = st
		case "unlisted_tokens":
			if h.Unlisted != nil {
				return d.Err("unlisted_tokens given twice")
			}
			p.unlistedLine = d.Line()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Err("unlisted_tokens needs ranges, or none")
			}
			h.Unlisted = &ipallowlist.Policy{Allow: []string{}}
			if len(args) == 1 && args[0] == ipallowlist.KeywordNone {
				continue
			}
			for _, a := range args {
				if a == ipallowlist.KeywordNone {
					return d.Err("none cannot be combined with ranges")
				}
			}
			h.Unlisted.Allow = args
		case "missing_token":
			v, err := p.oneOf(ipallowlist.MissingAllow, ipallowlist.MissingDeny)
			if err != nil {
				return err
			}
			h.MissingToken = v
		case "mode":
			v, err := p.oneOf(ipallowlist.ModeEnforce, ipallowlist.ModeReport)
			if err != nil {
				return err
			}
			h.Mode = v
		case "watch":
			// watch [<interval>]: default 2s
			h.Watch = caddy.Duration(2 * time.Second)
			if d.NextArg() {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur <= 0 {
					return d.Errf("watch %q: want a positive duration such as 2s", d.Val())
				}
				h.Watch = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_credential_candidates", "max_credential_bytes":
			if err := p.credentialBound(); err != nil {
				return err
			}
		case "metrics_per_token":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.MetricsPerToken = true
		case "leak_alert":
			// leak_alert <distinct_addresses> <window> [suspend]
			if h.LeakAlert != nil {
				return d.Err("leak_alert given twice")
			}
			args := d.RemainingArgs()
			if len(args) < 2 || len(args) > 3 || len(args) == 3 && args[2] != "suspend" {
				return d.Err("leak_alert <distinct_addresses> <window> [suspend], such as leak_alert 20 10m suspend")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return d.Errf("leak_alert: addresses %q: want a number of distinct addresses, 2 to 1000", args[0])
			}
			w, err := caddy.ParseDuration(args[1])
			if err != nil {
				return d.Errf("leak_alert: window %q: want a duration such as 10m", args[1])
			}
			h.LeakAlert = &ipallowlist.LeakAlert{Addresses: n, Window: caddy.Duration(w), Suspend: len(args) == 3}
			if err := ipallowlist.CheckLeakAlert(h.LeakAlert); err != nil {
				return d.Err(err.Error())
			}
		case "resolvers":
			// resolvers <ip[:port]>...: the DNS servers of dns: entries
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Err("resolvers <ip[:port]>..., such as resolvers 192.0.2.53 [2001:db8::53]:53")
			}
			if _, err := ipallowlist.CheckResolvers(args); err != nil {
				return d.Err(err.Error())
			}
			h.Resolvers = append(h.Resolvers, args...)
		case "admin_id":
			if !d.Args(&h.AdminID) || d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
	}
	return nil
}

// store reads the store subdirective and its block:
//
//	store file [<path>] { name <name> }
//	store redis <host:port> { name <name>; the redis block's subdirectives }
func (p *parser) store() (*ipallowlist.TokenStore, error) {
	d := p.d
	st := &ipallowlist.TokenStore{}
	if !d.NextArg() {
		return nil, d.Err("store: give file [<path>] or redis <host:port>")
	}
	switch d.Val() {
	case "redis":
		src, err := p.redis(&st.Name)
		if err != nil {
			return nil, err
		}
		st.Redis = src
	case "file":
		if d.NextArg() {
			st.File = d.Val()
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			if d.Val() != "name" {
				return nil, d.Errf("unrecognized store file subdirective %q", d.Val())
			}
			if !d.Args(&st.Name) || d.NextArg() {
				return nil, d.ArgErr()
			}
		}
	default:
		return nil, d.Errf("store %q: want file or redis", d.Val())
	}
	if err := ipallowlist.CheckStoreName(st.Name); err != nil {
		return nil, d.Errf("store name: %v", err)
	}
	return st, nil
}

// redis reads the redis subdirective and its block; with name not nil,
// as store redis, whose block also takes name.
func (p *parser) redis(name *string) (*ipallowlist.RedisSource, error) {
	d := p.d
	src := &ipallowlist.RedisSource{}
	// No default address: with redis {$REDIS_ADDR} and the variable
	// unset, the Caddyfile has no argument here, and a default would
	// quietly follow some other Redis.
	if !d.NextArg() {
		return nil, d.Err("redis: give the address, as redis <host:port> or redis {env.REDIS_ADDR} (resolved at start, and refused if unset); a {$VAR} that is unset leaves no address")
	}
	src.Address = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	one := func() (string, error) {
		var v string
		if !d.Args(&v) || d.NextArg() {
			return "", d.ArgErr()
		}
		return v, nil
	}
	tls := func() *ipallowlist.RedisTLS {
		if src.TLS == nil {
			src.TLS = &ipallowlist.RedisTLS{}
		}
		return src.TLS
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		var err error
		switch sub {
		case "username":
			src.Username, err = one()
		case "password":
			src.Password, err = one()
		case "db":
			var v string
			if v, err = one(); err == nil {
				if _, serr := fmt.Sscanf(v, "%d", &src.DB); serr != nil || fmt.Sprint(src.DB) != v || src.DB < 0 {
					return nil, d.Errf("redis db %q: want a database number, 0 or more", v)
				}
			}
		case "key_prefix":
			src.KeyPrefix, err = one()
		case "tls":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			tls()
		case "tls_server_name":
			tls().ServerName, err = one()
		case "tls_ca":
			tls().CAFile, err = one()
		case "snapshot":
			src.Snapshot, err = one()
		case "resync":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur <= 0 {
					return nil, d.Errf("redis resync %q: want a positive duration such as 30s", v)
				}
				src.Resync = caddy.Duration(dur)
			}
		case "name":
			if name == nil {
				return nil, d.Err("redis: name is a subdirective of store redis")
			}
			*name, err = one()
		default:
			return nil, d.Errf("unrecognized redis subdirective %q", sub)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := ipallowlist.CheckRedisSource(src); err != nil {
		return nil, d.Errf("redis: %v", err)
	}
	return src, nil
}

func (p *parser) tokenFrom() (ipallowlist.TokenSource, error) {
	d := p.d
	args := d.RemainingArgs()
	if len(args) < 2 {
		return ipallowlist.TokenSource{}, d.ArgErr()
	}
	switch args[0] {
	case "header":
		if len(args) > 3 {
			return ipallowlist.TokenSource{}, d.ArgErr()
		}
		src := ipallowlist.TokenSource{Header: args[1]}
		if len(args) == 3 {
			src.Scheme = args[2]
		}
		return src, nil
	case "query":
		if len(args) != 2 {
			return ipallowlist.TokenSource{}, d.ArgErr()
		}
		return ipallowlist.TokenSource{Query: args[1]}, nil
	case "cookie":
		if len(args) != 2 {
			return ipallowlist.TokenSource{}, d.ArgErr()
		}
		return ipallowlist.TokenSource{Cookie: args[1]}, nil
	}
	return ipallowlist.TokenSource{}, d.Errf("token_from %q: want header, query or cookie", args[0])
}

// parseSize reads a number of bytes, with KiB or MiB after it or not.
func parseSize(s string) (int, error) {
	unit := 1
	for suffix, u := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			s, unit = n, u
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<30/unit {
		return 0, errors.New("not a size")
	}
	return n * unit, nil
}

// credentialBound reads max_credential_candidates <n> or
// max_credential_bytes <size> (a number of bytes, or a size such as
// 32KiB).
func (p *parser) credentialBound() error {
	d, h := p.d, p.h
	name := d.Val()
	var arg string
	if !d.Args(&arg) || d.NextArg() {
		return d.ArgErr()
	}
	if name == "max_credential_candidates" {
		if h.MaxCredentialCandidates != 0 {
			return d.Errf("%s given twice", name)
		}
		n, err := strconv.Atoi(arg)
		if err != nil {
			return d.Errf("%s %q: want a number", name, arg)
		}
		h.MaxCredentialCandidates = n
	} else {
		if h.MaxCredentialBytes != 0 {
			return d.Errf("%s given twice", name)
		}
		n, err := parseSize(arg)
		if err != nil {
			return d.Errf("%s %q: want a number of bytes or a size such as 32KiB", name, arg)
		}
		h.MaxCredentialBytes = n
	}
	if err := ipallowlist.CheckCredentialBounds(h.MaxCredentialCandidates, h.MaxCredentialBytes); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

func (p *parser) ipSet() error {
	d := p.d
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	if _, dup := p.h.IPSets[name]; dup {
		return d.Errf("ip_set %q defined twice", name)
	}
	p.setLines[name] = d.Line()
	args := d.RemainingArgs()
	if p.h.IPSets == nil {
		p.h.IPSets = map[string][]string{}
	}
	p.h.IPSets[name] = args
	return nil
}

func (p *parser) token() error {
	d := p.d
	if !d.NextArg() {
		return d.ArgErr()
	}
	secret := d.Val()
	tp := &ipallowlist.TokenPolicy{}
	label, err := p.tokenValue(secret, tp)
	if err != nil {
		return err
	}
	// The module's rules are applied once the block is read (check), at
	// this line.
	t := tokenLine{tp: tp, line: d.Line()}
	lines := func(dst []int, n int) []int {
		for range n {
			dst = append(dst, d.Line())
		}
		return dst
	}
	tp.Allow = d.RemainingArgs()
	t.allowLines = lines(nil, len(tp.Allow))
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "label":
			if !d.Args(&label) || d.NextArg() {
				return d.ArgErr()
			}
		case "allow", "deny":
			dir := d.Val()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if dir == "allow" {
				tp.Allow = append(tp.Allow, args...)
				t.allowLines = lines(t.allowLines, len(args))
			} else {
				tp.Deny = append(tp.Deny, args...)
				t.denyLines = lines(t.denyLines, len(args))
			}
		case "revoked":
			if d.NextArg() {
				return d.ArgErr()
			}
			tp.Revoked = true
		case "allow_broad":
			if d.NextArg() {
				return d.ArgErr()
			}
			tp.AllowBroad = true
		case "suspended":
			if d.NextArg() {
				return d.ArgErr()
			}
			tp.Suspended = true
		case "mode":
			v, err := p.oneOf(ipallowlist.ModeEnforce, ipallowlist.ModeReport)
			if err != nil {
				return err
			}
			tp.Mode = v
		case "owner", "note":
			sub := d.Val()
			var v string
			if !d.Args(&v) || d.NextArg() {
				return d.ArgErr()
			}
			if sub == "owner" {
				tp.Owner = v
			} else {
				tp.Note = v
			}
		default:
			return d.Errf("unrecognized token subdirective %q", d.Val())
		}
	}
	t.label = label
	p.tokens = append(p.tokens, t)
	return nil
}

// tokenValue fills tp from the token argument and returns its default label.
// The token's rules are the Checker's; errors here never include it.
func (p *parser) tokenValue(secret string, tp *ipallowlist.TokenPolicy) (string, error) {
	d := p.d
	switch {
	case strings.HasPrefix(secret, ipallowlist.DigestPrefix):
		hexDigest := secret[len(ipallowlist.DigestPrefix):]
		digest, err := ipallowlist.ParseDigest(hexDigest)
		if err != nil {
			return "", d.Errf("token: %v", err)
		}
		tp.TokenSHA256 = strings.ToLower(hexDigest)
		return ipallowlist.Fingerprint(digest), nil
	case ipallowlist.IsPlaceholder(secret):
		tp.Token = secret
		return placeholderLabel(secret), nil
	default:
		tp.Token = secret
		return ipallowlist.Fingerprint(sha256.Sum256([]byte(secret))), nil
	}
}

// placeholderLabel is the default label of a placeholder token, whose value
// is not known until provision: {env.PARTNER_A} becomes env.PARTNER_A, and
// characters a label may not hold become _.
func placeholderLabel(ph string) string {
	b := []byte(ph[1 : len(ph)-1])
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:-", c) >= 0) {
			b[i] = '_'
		}
	}
	return string(b)
}

// errAt is Dispenser.WrapErr for an earlier line of the current file.
func (p *parser) errAt(line int, err error) error {
	return fmt.Errorf("%w, at %s:%d", err, p.d.File(), line)
}

func (p *parser) oneOf(a, b string) (string, error) {
	d := p.d
	name := d.Val()
	var v string
	if !d.Args(&v) || d.NextArg() {
		return "", d.ArgErr()
	}
	if v != a && v != b {
		return "", d.Errf("%s %q: want %s or %s", name, v, a, b)
	}
	return v, nil
}
