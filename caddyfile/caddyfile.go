// Package caddyfile is the ip_allowlist Caddyfile directive: it parses the
// directive into the http.handlers.ip_allowlist module's JSON config and
// places the directive right after basic_auth.
package caddyfile

import (
	"crypto/sha256"
	"fmt"
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
//		ip_set <name> <range>...
//		token <token> [<range>...]
//		token <token> {
//			label <name>
//			allow <range>...
//			deny  <range>...
//		}
//		tokens_file <path>
//		redis [<host:port>] {
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
//		admin_id <id>
//	}
//
// Everything that can be checked without resolving placeholders or reading
// files is checked here, so `caddy adapt` names the file and line.
func Parse(d *caddyfile.Dispenser) (*ipallowlist.Handler, error) {
	p := parser{
		d: d,
		h: &ipallowlist.Handler{},
		// pending holds an error per set name used, made where it was used,
		// returned if no ip_set of that name turns up.
		pending: map[string]error{},
		digests: map[[32]byte]string{},
	}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.h, nil
}

type parser struct {
	d       *caddyfile.Dispenser
	h       *ipallowlist.Handler
	pending map[string]error
	digests map[[32]byte]string // known token digest -> label, for duplicates
}

func (p *parser) parse() error {
	d, h := p.d, p.h
	d.Next() // the directive name
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
			if h.Redis != nil {
				return d.Err("redis given twice; a handler follows one store")
			}
			src, err := p.redis()
			if err != nil {
				return err
			}
			h.Redis = src
		case "unlisted_tokens":
			if h.Unlisted != nil {
				return d.Err("unlisted_tokens given twice")
			}
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
			if err := p.ranges(args); err != nil {
				return err
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
		case "metrics_per_token":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.MetricsPerToken = true
		case "admin_id":
			if !d.Args(&h.AdminID) || d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
	}
	for name, err := range p.pending {
		if _, ok := h.IPSets[name]; !ok {
			return err
		}
	}
	return nil
}

// redis reads the redis subdirective and its block.
func (p *parser) redis() (*ipallowlist.RedisSource, error) {
	d := p.d
	src := &ipallowlist.RedisSource{}
	if d.NextArg() {
		src.Address = d.Val()
	}
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
	}
	return ipallowlist.TokenSource{}, d.Errf("token_from %q: want header or query", args[0])
}

func (p *parser) ipSet() error {
	d := p.d
	if !d.NextArg() {
		return d.ArgErr()
	}
	name := d.Val()
	if !ipallowlist.IsSetName(name) {
		return d.Errf("ip_set %q: a set name starts with a letter or _ and has only letters, digits, _ and -, and is not any, private_ranges or none", name)
	}
	if _, dup := p.h.IPSets[name]; dup {
		return d.Errf("ip_set %q defined twice", name)
	}
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("ip_set %q: no ranges", name)
	}
	for _, a := range args {
		if ipallowlist.IsSetName(a) {
			return d.Errf("ip_set %q: %q: a set cannot contain another set; list its ranges", name, a)
		}
		if _, err := ipallowlist.ParseRange(a); err != nil {
			return d.Errf("ip_set %q: %q: %v", name, a, err)
		}
	}
	if p.h.IPSets == nil {
		p.h.IPSets = map[string][]string{}
	}
	p.h.IPSets[name] = args
	return nil
}

// ranges checks each range now, and set names once the whole block is read.
func (p *parser) ranges(args []string) error {
	for _, a := range args {
		if ipallowlist.IsSetName(a) {
			if _, seen := p.pending[a]; !seen {
				p.pending[a] = p.d.Errf("unknown ip_set %q", a)
			}
			continue
		}
		if _, err := ipallowlist.ParseRange(a); err != nil {
			return p.d.Errf("%q: %v", a, err)
		}
	}
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
	// Errors found after the block is read name the token's own line.
	line := d.Line()
	tp.Allow = d.RemainingArgs()
	if err := p.ranges(tp.Allow); err != nil {
		return err
	}
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
			if err := p.ranges(args); err != nil {
				return err
			}
			if dir == "allow" {
				tp.Allow = append(tp.Allow, args...)
			} else {
				tp.Deny = append(tp.Deny, args...)
			}
		default:
			return d.Errf("unrecognized token subdirective %q", d.Val())
		}
	}
	if err := ipallowlist.CheckLabel(label); err != nil {
		return p.errAt(line, err)
	}
	if _, dup := p.h.Tokens[label]; dup {
		return p.errAt(line, fmt.Errorf("token %q: label used twice", label))
	}
	if len(tp.Allow) == 0 {
		return p.errAt(line, fmt.Errorf("token %q: allow is empty; list where the token may be used from (use any for everywhere)", label))
	}
	if digest, known := p.knownDigest(tp); known {
		if other, dup := p.digests[digest]; dup {
			return p.errAt(line, fmt.Errorf("token %q: same token as %q; a token can have one label only", label, other))
		}
		p.digests[digest] = label
	}
	if p.h.Tokens == nil {
		p.h.Tokens = map[string]*ipallowlist.TokenPolicy{}
	}
	p.h.Tokens[label] = tp
	return nil
}

// knownDigest is the token's SHA-256 where it is known before provision:
// for a literal token or a sha256: digest, not for a placeholder.
func (p *parser) knownDigest(tp *ipallowlist.TokenPolicy) ([32]byte, bool) {
	switch {
	case tp.TokenSHA256 != "":
		d, err := ipallowlist.ParseDigest(tp.TokenSHA256)
		return d, err == nil
	case ipallowlist.IsPlaceholder(tp.Token):
		return [32]byte{}, false
	}
	return sha256.Sum256([]byte(tp.Token)), true
}

// tokenValue fills tp from the token argument and returns its default label.
// Errors about a literal token never include it.
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
		if err := ipallowlist.CheckToken(secret); err != nil {
			return "", d.Errf("token: %v", err)
		}
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
