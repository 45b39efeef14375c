package tokenstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// openTestFile opens a new store in t's temporary directory, with a scan
// batch small enough for the suite to see a scan resume.
func openTestFile(t *testing.T) *File {
	t.Helper()
	f := mustOpen(t, filepath.Join(t.TempDir(), "tokens.db"))
	f.scanBatch = 7
	return f
}

func mustOpen(t testing.TB, path string) *File {
	t.Helper()
	f, err := OpenFile(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFileEngine(t *testing.T) {
	testEngine(t, func(t *testing.T) Engine { return openTestFile(t) })
}

func TestFileScanReadsInBoundedTransactions(t *testing.T) {
	f := openTestFile(t)
	defer f.Close()
	f.scanBatch = 10
	mustPutLabels(t, f, labels(95))
	before := f.db.Stats().TxN
	n := 0
	if err := f.Scan(func(Record) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if txs := f.db.Stats().TxN - before; n != 95 || txs != 10 {
		t.Fatalf("scanned %d records in %d read transactions, want 95 in 10", n, txs)
	}
}

func TestFileCreatesPrivateFileAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "caddy", "ip_allowlist")
	path := filepath.Join(dir, "tokens.db")
	f := mustOpen(t, path)
	defer f.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}
}

func TestFileReopenKeepsRecordsAndRev(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	f := mustOpen(t, path)
	mustPutLabels(t, f, labels(20))
	if err := f.Delete(labels(20)[3], Cond{}); err != nil {
		t.Fatal(err)
	}
	rev := mustRev(t, f)
	f.Close()

	f = mustOpen(t, path)
	defer f.Close()
	if got := mustRev(t, f); got != rev {
		t.Errorf("rev %d after reopening, was %d", got, rev)
	}
	if rs, _ := f.List("", 0); len(rs) != 19 {
		t.Errorf("%d records after reopening, want 19", len(rs))
	}
	if _, err := f.Put(Record{Label: "x", Digest: digestOf(labels(20)[0])}, Cond{}); err == nil {
		t.Error("the digest index was not kept")
	}
}

func TestFileSecondOpenerFailsWithinTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	f := mustOpen(t, path)
	done := make(chan error, 1)
	go func() {
		g, err := OpenFile(path, FileOptions{Timeout: 50 * time.Millisecond})
		g.Close()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path+" is held by another process") {
			t.Fatalf("second opener: %v, want ErrLocked naming the file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second opener still waiting")
	}
	f.Close()
	g, err := OpenFile(path, FileOptions{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
	g.Close()
}

func TestFileRefusesWhatItCannotRead(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, path string)
		want  string
	}{
		{"a newer schema", func(t *testing.T, path string) {
			f := mustOpen(t, path)
			f.Close()
			updateBolt(t, path, func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte(bucketMeta)).Put([]byte(keySchema), binary.BigEndian.AppendUint64(nil, schemaVersion+1))
			})
		}, fmt.Sprintf("schema version %d is newer than this build knows (%d)", schemaVersion+1, schemaVersion)},
		{"another program's bbolt file", func(t *testing.T, path string) {
			updateBolt(t, path, func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucket([]byte("other"))
				return err
			})
		}, "not a token store"},
		{"a file that is not bbolt", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.db")
			c.write(t, path)
			f, err := OpenFile(path, FileOptions{})
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %q, want it to name the file and say %q", err, c.want)
			}
		})
	}
}

func updateBolt(t *testing.T, path string, fn func(*bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestCompactShrinksAndKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	f := mustOpen(t, path)
	// Large records replaced by small ones leave most pages free, and a
	// few deletes free digests, without a commit per record.
	all := labels(3000)
	big := make([]Record, len(all))
	for i, l := range all {
		big[i] = rec(l, strings.Repeat("x", 1000))
	}
	if err := f.PutBatch(big); err != nil {
		t.Fatal(err)
	}
	mustPutLabels(t, f, all)
	for _, l := range all[100:110] {
		if err := f.Delete(l, Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	rev := mustRev(t, f)
	if _, _, err := Compact(path, FileOptions{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Errorf("compact of an open store: %v, want ErrLocked", err)
	}
	f.Close()

	before, after, err := Compact(path, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after >= before {
		t.Errorf("compacted from %d to %d bytes", before, after)
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the copy is left beside the file: %v", err)
	}
	f = mustOpen(t, path)
	defer f.Close()
	if got := mustRev(t, f); got != rev {
		t.Errorf("rev %d after compact, was %d", got, rev)
	}
	n := 0
	if err := f.Scan(func(r Record) error {
		if string(r.Data) != "data of "+r.Label {
			return fmt.Errorf("%s: data %q after compact", r.Label, r.Data)
		}
		n++
		return nil
	}); err != nil || n != len(all)-10 {
		t.Errorf("%d records after compact (%v), want %d", n, err, len(all)-10)
	}
	if _, err := f.Put(Record{Label: "x", Digest: digestOf(all[0])}, Cond{}); err == nil {
		t.Error("the digest index was not kept")
	}
	mustPut(t, f, Record{Label: "x", Digest: digestOf(all[105])}) // freed before compact
}

func TestCompactOfAMissingFileCreatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	if _, _, err := Compact(path, FileOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want not exist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("compact created the file: %v", err)
	}
}

// killChildEnv names the store file TestFileKillChild writes to; unset,
// that test does nothing.
const killChildEnv = "TOKENSTORE_KILL_CHILD"

// TestFileKillChild is the process TestFileSurvivesKill kills: writers
// that print "ack <label>" once each Put has returned, until killed (or
// a minute has passed, so that it never outlives a parent that died).
func TestFileKillChild(t *testing.T) {
	path := os.Getenv(killChildEnv)
	if path == "" {
		t.Skip("the child of TestFileSurvivesKill")
	}
	f, err := OpenFile(path, FileOptions{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	prefix := os.Getenv(killChildEnv + "_PREFIX")
	for w := range 4 {
		go func() {
			for i := 0; ; i++ {
				label := fmt.Sprintf("%s-w%d-%06d", prefix, w, i)
				if _, err := f.Put(rec(label, "data of "+label), Cond{}); err != nil {
					fmt.Println("put:", err)
					os.Exit(1)
				}
				fmt.Println("ack", label) // one write(2) per line, so a kill never splits one
			}
		}()
	}
	time.Sleep(time.Minute)
	os.Exit(1)
}

// TestFileSurvivesKill kills a writing process at a random moment, several
// times over the same file, and checks that every Put that returned is in
// the file. It tests what a crash of the process can lose; a power cut is
// bbolt's fsync, which this cannot test.
func TestFileSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	var acked []string
	deadline := time.Now().Add(3 * time.Second)
	for round := 0; round < 8 && (round < 3 || time.Now().Before(deadline)); round++ {
		acked = append(acked, killWriter(t, path, fmt.Sprintf("r%d", round))...)
		f, err := OpenFile(path, FileOptions{})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		for _, label := range acked {
			r, err := f.Get(label)
			if err != nil || string(r.Data) != "data of "+label {
				f.Close()
				t.Fatalf("round %d: acknowledged %s: %v (data %q)", round, label, err, r.Data)
			}
		}
		f.Close()
		t.Logf("round %d: %d acknowledged puts present", round, len(acked))
	}
}

// killWriter runs TestFileKillChild on path, kills it with SIGKILL a
// random moment after its first acknowledgement, and returns the labels
// it acknowledged.
func killWriter(t *testing.T, path, prefix string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileKillChild$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+path, killChildEnv+"_PREFIX="+prefix)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var acked []string
	read := func(line string) {
		label, ok := strings.CutPrefix(line, "ack ")
		if !ok {
			t.Errorf("child: %s", line)
			return
		}
		acked = append(acked, label)
	}
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("child exited before its first put")
		}
		read(line)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no put acknowledged in 30s")
	}
	time.Sleep(rand.N(200 * time.Millisecond))
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for line := range lines { // what the child wrote before it died is still in the pipe
		read(line)
	}
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, not killed", cmd.ProcessState)
	}
	return acked
}

func TestFileListPrefix(t *testing.T) {
	f := openTestFile(t)
	labels := []string{"a", "acme", "acme-1", "acme-2", "acme-3", "acmf", "b"}
	for i, l := range labels {
		var d [32]byte
		d[0] = byte(i + 1)
		if _, err := f.Put(Record{Label: l, Digest: d, Data: []byte("{}")}, Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	got := func(prefix, after string, limit int) []string {
		t.Helper()
		rs, err := f.ListPrefix(prefix, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Label)
		}
		return out
	}
	for _, c := range []struct {
		prefix, after string
		limit         int
		want          []string
	}{
		{"acme", "", 10, []string{"acme", "acme-1", "acme-2", "acme-3"}},
		{"acme", "", 2, []string{"acme", "acme-1"}},
		{"acme", "acme-1", 10, []string{"acme-2", "acme-3"}},
		{"acme", "a", 10, []string{"acme", "acme-1", "acme-2", "acme-3"}},
		{"acme-", "", 10, []string{"acme-1", "acme-2", "acme-3"}},
		{"", "acmf", 10, []string{"b"}},
		{"z", "", 10, nil},
		{"acme", "acme-3", 10, nil},
	} {
		if g := got(c.prefix, c.after, c.limit); !slices.Equal(g, c.want) {
			t.Errorf("ListPrefix(%q, %q, %d) = %q, want %q", c.prefix, c.after, c.limit, g, c.want)
		}
	}
}
