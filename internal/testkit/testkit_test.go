package testkit

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeT records how a helper ended the test instead of ending it, so the
// tests below can read the message. Helpers return after Fatal here, as
// they must not rely on Fatal stopping them for their result.
type fakeT struct {
	testing.TB
	fatal, skip string
}

func (f *fakeT) Helper()                        {}
func (f *fakeT) Fatal(args ...any)              { f.fatal = fmt.Sprint(args...) }
func (f *fakeT) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...) }
func (f *fakeT) Skip(args ...any)               { f.skip = fmt.Sprint(args...) }

func TestEventually(t *testing.T) {
	t.Run("failure says what was awaited and how long", func(t *testing.T) {
		f := &fakeT{TB: t}
		calls := 0
		Eventually(f, "token answered 200", 30*time.Millisecond, func() bool { calls++; return false })
		if want := "token answered 200: not within 30ms"; f.fatal != want {
			t.Errorf("failure %q, want %q", f.fatal, want)
		}
		if calls < 2 {
			t.Errorf("cond called %d times in 30ms, want it polled", calls)
		}
	})
	t.Run("failure says what was last seen", func(t *testing.T) {
		f := &fakeT{TB: t}
		calls := 0
		EventuallyLast(f, "token answered 200", 30*time.Millisecond, func() (bool, string) {
			calls++
			return false, "401 after " + strconv.Itoa(calls) + " tries"
		})
		if want := fmt.Sprintf("token answered 200: not within 30ms; last: 401 after %d tries", calls); f.fatal != want {
			t.Errorf("failure %q, want %q", f.fatal, want)
		}
	})
	t.Run("returns once cond holds", func(t *testing.T) {
		f := &fakeT{TB: t}
		calls := 0
		took := Eventually(f, "third call", 5*time.Second, func() bool { calls++; return calls == 3 })
		if f.fatal != "" || calls != 3 || took >= time.Second {
			t.Errorf("failure %q, %d calls, took %v; want none, 3 calls, at once", f.fatal, calls, took)
		}
	})
	t.Run("cond is tried once however short the timeout", func(t *testing.T) {
		f := &fakeT{TB: t}
		calls := 0
		EventuallyLast(f, "first call", 0, func() (bool, string) { calls++; return true, "" })
		if f.fatal != "" || calls != 1 {
			t.Errorf("failure %q after %d calls, want none after 1", f.fatal, calls)
		}
	})
}

func TestFreePort(t *testing.T) {
	addr := FreePort(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("FreePort = %q (%v), want 127.0.0.1:<port>", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port FreePort gave cannot be listened on: %v", err)
	}
	l.Close()
}

func TestUnavailable(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeT{TB: t}
	Unavailable(f, "redis-server is not installed")
	if f.skip != "redis-server is not installed" || f.fatal != "" {
		t.Errorf("without CI: skip %q, fatal %q; want a skip", f.skip, f.fatal)
	}
	t.Setenv("CI", "true")
	f = &fakeT{TB: t}
	Unavailable(f, "redis-server is not installed")
	if !strings.HasPrefix(f.fatal, "redis-server is not installed;") || f.skip != "" {
		t.Errorf("with CI: skip %q, fatal %q; want a failure", f.skip, f.fatal)
	}
}

func TestDigest(t *testing.T) {
	if got, want := Digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("Digest(abc) = %s, want %s", got, want)
	}
}

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	WriteFile(t, path, "a longer first version")
	WriteFile(t, path, "second")
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "second" {
		t.Fatalf("read %q %v, want second", b, err)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files in the folder, want only the one written", len(entries))
	}
}

func TestTokensFile(t *testing.T) {
	path := TokensFile(t, 3, func(i int) Entry {
		return Entry{Label: "t" + strconv.Itoa(i), Token: "tok-" + strconv.Itoa(i), Allow: []string{"10.0.0." + strconv.Itoa(i), "2001:db8::/64"}}
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]struct {
		TokenSHA256 string   `json:"token_sha256"`
		Allow       []string `json:"allow"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	if len(got) != 3 || got["t2"].TokenSHA256 != Digest("tok-2") || strings.Join(got["t2"].Allow, " ") != "10.0.0.2 2001:db8::/64" {
		t.Errorf("file:\n%s", b)
	}
}
