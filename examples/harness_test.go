package examples

import "github.com/ipallowlist/caddy-ip-allowlist/internal/testkit"

// The tests in this package run the examples against the Caddy binary that
// make test builds with xcaddy (CADDY_BIN), with testkit's harness: each
// Caddy gets free loopback ports in place of the examples' fixed ones, and
// is stopped by the test.

// inRepo runs Caddy from the repository's root, where the examples' own
// paths (examples/tokens.json) resolve, with env added to its environment.
func inRepo(env ...string) testkit.Options {
	return testkit.Options{Dir: "..", Env: env}
}
