package caddyfile

import (
	"strconv"

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
//		operators <user id>...  # repeatable; default: none, and every authenticated user sees every token, bounded as an owner
//		owner_max_prefix <ipv4> <ipv6>  # the widest range an owner may add; default: 24 48
//		owner_max_entries <n>   # allow entries an owner may keep on a token; default: 50
//		owner_dns               # owners may add dns: entries; default: not
//		owner_ip_sets <name>... # repeatable; the ip_sets an owner may name; default: none
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
		case "owner_max_prefix":
			if c.OwnerMaxPrefixIPv4 != nil {
				return nil, d.Err("owner_max_prefix given twice")
			}
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Err("owner_max_prefix needs two prefix lengths, IPv4 then IPv6, as in owner_max_prefix 24 48")
			}
			v4, err4 := strconv.Atoi(args[0])
			v6, err6 := strconv.Atoi(args[1])
			if err4 != nil || err6 != nil {
				return nil, d.Errf("owner_max_prefix %s %s: want two prefix lengths, IPv4 then IPv6, as in owner_max_prefix 24 48", args[0], args[1])
			}
			c.OwnerMaxPrefixIPv4, c.OwnerMaxPrefixIPv6 = &v4, &v6
		case "owner_max_entries":
			if c.OwnerMaxEntries != 0 {
				return nil, d.Err("owner_max_entries given twice")
			}
			args := d.RemainingArgs()
			if len(args) != 1 {
				return nil, d.Err("owner_max_entries needs one number: the most allow entries an owner may keep on a token")
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return nil, d.Errf("owner_max_entries %q: want a number of entries, 1 or more", args[0])
			}
			c.OwnerMaxEntries = n
		case "owner_dns":
			if c.OwnerDNS {
				return nil, d.Err("owner_dns given twice")
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			c.OwnerDNS = true
		case "owner_ip_sets":
			names := d.RemainingArgs()
			if len(names) == 0 {
				return nil, d.Err("owner_ip_sets needs at least one ip_set name")
			}
			c.OwnerIPSets = append(c.OwnerIPSets, names...)
		default:
			return nil, d.Errf("unknown ip_allowlist_console option %q: want store, operators, owner_max_prefix, owner_max_entries, owner_dns or owner_ip_sets", d.Val())
		}
		// The bounds' rules live with the module: the line that broke
		// one is the one just read.
		if err := c.CheckOwnerBounds(); err != nil {
			return nil, d.Errf("%v", err)
		}
	}
	return c, nil
}
