package caddyfile

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	ipallowlist "github.com/ipallowlist/caddy-ip-allowlist/module"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("ip_allowlist_console", parseConsole)
	// After the authentication directives (basic_auth, then forward_auth):
	// the console serves only users a handler before it authenticated.
	httpcaddyfile.RegisterDirectiveOrder("ip_allowlist_console", httpcaddyfile.After, "forward_auth")
}

func parseConsole(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	return ParseConsole(h.Dispenser)
}

// ParseConsole reads one ip_allowlist_console directive:
//
//	ip_allowlist_console [<matcher>] {
//		store <name>            # the token store to serve; default: the only one
//		operators <user id>...  # repeatable; default: every authenticated user
//	}
func ParseConsole(d *caddyfile.Dispenser) (*ipallowlist.Console, error) {
	c := new(ipallowlist.Console)
	d.Next() // the directive's name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "store":
			if !d.NextArg() {
				return nil, d.Err("store needs the name of a token store (store file { name <name> })")
			}
			if c.Store != "" {
				return nil, d.Err("store given twice")
			}
			c.Store = d.Val()
			if err := ipallowlist.CheckStoreName(c.Store); err != nil {
				return nil, d.Errf("store %v", err)
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "operators":
			ids := d.RemainingArgs()
			if len(ids) == 0 {
				return nil, d.Err("operators needs at least one user id, as the authentication handler sets it ({http.auth.user.id})")
			}
			c.Operators = append(c.Operators, ids...)
		default:
			return nil, d.Errf("unknown ip_allowlist_console option %q: want store or operators", d.Val())
		}
	}
	return c, nil
}
