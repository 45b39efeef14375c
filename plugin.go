// Package caddyipallowlist registers the ip_allowlist Caddy module and its
// Caddyfile directive; xcaddy imports this path when built with
// --with github.com/ipallowlist/caddy-ip-allowlist.
package caddyipallowlist

import (
	_ "github.com/ipallowlist/caddy-ip-allowlist/caddyfile"
	_ "github.com/ipallowlist/caddy-ip-allowlist/module"
)
