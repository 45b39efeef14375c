// Package testkit holds what the tests of every package share: free
// loopback ports, waiting until a condition holds, tokens files, captured
// logs and process output, and the real Caddy binary run as a process.
// The benchmark command (bench) uses the parts that need no testing.TB.
//
// It imports neither the module nor the caddyfile package: the module's
// own tests import it.
package testkit

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"testing"
	"time"
)

// FreeAddr returns a loopback address (127.0.0.1:port) whose port was
// free a moment ago: the kernel picked it for a listener, closed again.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// FreePort is FreeAddr for a test, which fails if no port can be had. With
// nothing started on it, the address also serves as one nothing listens on.
func FreePort(t testing.TB) string {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Unavailable ends t for want of something make test provides; missing
// says what, and how make test provides it. Where CI is set the test
// fails, since a test skipped there proves nothing; elsewhere it is
// skipped.
func Unavailable(t testing.TB, missing string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(missing + "; CI is set, so this fails instead of skipping")
	} else {
		t.Skip(missing)
	}
}

// Wait calls cond until it returns true or timeout has passed, and returns
// how long it waited and whether cond held. cond is called at least once,
// however short the timeout. Between calls it sleeps a tenth of the time
// waited so far, from 1 ms to 20 ms, so a duration it returns is close to
// when cond began to hold and a long wait costs little.
func Wait(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	began := time.Now()
	for {
		if cond() {
			return time.Since(began), true
		}
		waited := time.Since(began)
		if waited >= timeout {
			return waited, false
		}
		time.Sleep(min(max(waited/10, time.Millisecond), 20*time.Millisecond))
	}
}

// Eventually waits up to timeout for cond, and returns how long that took.
// If cond never holds, t fails with "<what>: not within <timeout>".
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	waited, ok := Wait(timeout, cond)
	if !ok {
		t.Fatalf("%s: not within %v", what, timeout)
	}
	return waited
}

// EventuallyLast is Eventually for a cond that also describes what it
// observed (a status, a count), so that the failure says what was last
// seen: "<what>: not within <timeout>; last: <description>".
func EventuallyLast(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) time.Duration {
	t.Helper()
	var last string
	waited, ok := Wait(timeout, func() bool {
		var held bool
		held, last = cond()
		return held
	})
	if !ok {
		t.Fatalf("%s: not within %v; last: %s", what, timeout, last)
	}
	return waited
}

// Digest is the hex SHA-256 of tok: what a token_sha256 field holds, and
// a Caddyfile token line after "sha256:".
func Digest(tok string) string {
	d := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(d[:])
}

// Bearer is the header pair (name, value) that sends tok as a bearer token.
func Bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
