package tokenstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// testEngine is the conformance suite every Engine passes. open returns a
// new, empty engine, closed by the suite; it should make the engine's
// Scan read fewer than scanRecords records per transaction, so that the
// suite sees a scan resume.
func testEngine(t *testing.T, open func(t *testing.T) Engine) {
	run := func(name string, fn func(t *testing.T, e Engine)) {
		t.Run(name, func(t *testing.T) {
			e := open(t)
			t.Cleanup(func() {
				if err := e.Close(); err != nil {
					t.Error(err)
				}
			})
			fn(t, e)
		})
	}
	run("put then get returns the record and its rev", testPutGet)
	run("get of an unknown label is not found", testGetUnknown)
	run("put replaces a label's data and keeps its digest", testPutReplaces)
	run("records do not share memory with the caller", testCopies)
	run("put conditions", testPutConditions)
	run("delete conditions", testDeleteConditions)
	run("digest bound to another label is refused naming that label", testDigestTaken)
	run("a label's digest cannot change", testDigestFixed)
	run("delete frees the label and its digest", testDeleteFrees)
	run("invalid records are refused", testInvalidRecords)
	run("list pages labels in byte order after a label", testListPages)
	run("scan visits every record once in order, across read batches", testScan)
	run("scan stops at the callback's error", testScanStops)
	run("put batch writes all records", testPutBatch)
	run("put batch with one bad record writes nothing", testPutBatchAllOrNothing)
	run("rev counts every write and no refusal", testRevCounts)
	run("concurrent puts, gets and lists", testConcurrent)
}

// scanRecords is more records than an engine under test reads per Scan
// transaction.
const scanRecords = 50

func digestOf(label string) [32]byte { return sha256.Sum256([]byte("token of " + label)) }

func rec(label, data string) Record {
	return Record{Label: label, Digest: digestOf(label), Data: []byte(data)}
}

func mustPut(t testing.TB, e Engine, r Record) uint64 {
	t.Helper()
	rev, err := e.Put(r, Cond{})
	if err != nil {
		t.Fatalf("put %q: %v", r.Label, err)
	}
	return rev
}

func mustGet(t testing.TB, e Engine, label string) Record {
	t.Helper()
	r, err := e.Get(label)
	if err != nil {
		t.Fatalf("get %q: %v", label, err)
	}
	return r
}

func mustRev(t testing.TB, e Engine) uint64 {
	t.Helper()
	rev, err := e.Rev()
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// labels makes n labels that sort in the order they are made.
func labels(n int) []string {
	ls := make([]string, n)
	for i := range ls {
		ls[i] = fmt.Sprintf("customer-%06d", i)
	}
	return ls
}

func mustPutLabels(t testing.TB, e Engine, ls []string) {
	t.Helper()
	for chunk := range slices.Chunk(ls, MaxBatch) {
		rs := make([]Record, len(chunk))
		for i, l := range chunk {
			rs[i] = rec(l, "data of "+l)
		}
		if err := e.PutBatch(rs); err != nil {
			t.Fatal(err)
		}
	}
}

func sameRecord(t *testing.T, got, want Record) {
	t.Helper()
	if got.Label != want.Label || got.Digest != want.Digest || !bytes.Equal(got.Data, want.Data) || got.Rev != want.Rev {
		t.Fatalf("got record %q rev %d data %q, want %q rev %d data %q (same digest: %v)",
			got.Label, got.Rev, got.Data, want.Label, want.Rev, want.Data, got.Digest == want.Digest)
	}
}

func testPutGet(t *testing.T, e Engine) {
	r := rec("alice", `{"allow":["192.0.2.1"]}`)
	rev := mustPut(t, e, r)
	if rev == 0 {
		t.Fatal("put returned rev 0")
	}
	r.Rev = rev
	sameRecord(t, mustGet(t, e, "alice"), r)
}

func testGetUnknown(t *testing.T, e Engine) {
	mustPut(t, e, rec("alice", "a"))
	for _, label := range []string{"bob", "alic", "alice2", ""} {
		if _, err := e.Get(label); !errors.Is(err, ErrNotFound) {
			t.Errorf("get %q: got %v, want ErrNotFound", label, err)
		}
	}
}

func testPutReplaces(t *testing.T, e Engine) {
	rev1 := mustPut(t, e, rec("alice", "one"))
	rev2 := mustPut(t, e, rec("alice", "two"))
	if rev2 <= rev1 {
		t.Fatalf("second put rev %d, not after first %d", rev2, rev1)
	}
	want := rec("alice", "two")
	want.Rev = rev2
	sameRecord(t, mustGet(t, e, "alice"), want)
}

func testCopies(t *testing.T, e Engine) {
	r := rec("alice", "original")
	r.Rev = mustPut(t, e, r)
	copy(r.Data, "CHANGED!")
	got := mustGet(t, e, "alice")
	if string(got.Data) != "original" {
		t.Fatalf("the caller's slice changed the stored data: %q", got.Data)
	}
	copy(got.Data, "CHANGED!")
	if again := mustGet(t, e, "alice"); string(again.Data) != "original" {
		t.Fatalf("a returned slice changed the stored data: %q", again.Data)
	}
}

func testPutConditions(t *testing.T, e Engine) {
	rev := mustPut(t, e, rec("existing", "old"))
	cases := []struct {
		name  string
		label string
		cond  Cond
		want  error // nil: written
	}{
		{"if-absent creates a new label", "new", Cond{IfAbsent: true}, nil},
		{"if-absent refuses an existing label", "existing", Cond{IfAbsent: true}, ErrPrecondition},
		{"if-rev refuses a stale rev", "existing", Cond{IfRev: rev + 100}, ErrPrecondition},
		{"if-rev refuses an absent label", "absent", Cond{IfRev: rev}, ErrPrecondition},
		{"if-rev and if-absent together never hold", "existing", Cond{IfRev: rev, IfAbsent: true}, ErrPrecondition},
		{"if-rev writes at the current rev", "existing", Cond{IfRev: rev}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := mustRev(t, e)
			prev, prevErr := e.Get(c.label)
			_, err := e.Put(rec(c.label, "new data"), c.cond)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil {
				return
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", c.label)) {
				t.Errorf("error %q does not name the label", err)
			}
			if after := mustRev(t, e); after != before {
				t.Errorf("refused put moved rev from %d to %d", before, after)
			}
			now, nowErr := e.Get(c.label)
			if errors.Is(nowErr, ErrNotFound) != errors.Is(prevErr, ErrNotFound) || !bytes.Equal(now.Data, prev.Data) || now.Rev != prev.Rev {
				t.Errorf("refused put changed the record: %q rev %d (%v), was %q rev %d (%v)",
					now.Data, now.Rev, nowErr, prev.Data, prev.Rev, prevErr)
			}
		})
	}
}

func testDeleteConditions(t *testing.T, e Engine) {
	cases := []struct {
		name string
		cond func(rev uint64) Cond
		want error
	}{
		{"no condition deletes", func(uint64) Cond { return Cond{} }, nil},
		{"if-rev deletes at the current rev", func(rev uint64) Cond { return Cond{IfRev: rev} }, nil},
		{"if-rev refuses a stale rev", func(rev uint64) Cond { return Cond{IfRev: rev + 100} }, ErrPrecondition},
		{"if-absent refuses an existing label", func(uint64) Cond { return Cond{IfAbsent: true} }, ErrPrecondition},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			label := fmt.Sprintf("label-%d", i)
			rev := mustPut(t, e, rec(label, "x"))
			err := e.Delete(label, c.cond(rev))
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			_, getErr := e.Get(label)
			if deleted := errors.Is(getErr, ErrNotFound); deleted != (c.want == nil) {
				t.Fatalf("after delete, get: %v", getErr)
			}
		})
	}
	t.Run("an unknown label is not found", func(t *testing.T) {
		if err := e.Delete("unknown", Cond{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
}

func testDigestTaken(t *testing.T, e Engine) {
	mustPut(t, e, rec("alice", "a"))
	rev := mustRev(t, e)
	stolen := Record{Label: "mallory", Digest: digestOf("alice"), Data: []byte("m")}
	_, err := e.Put(stolen, Cond{})
	var taken *DigestTakenError
	if !errors.As(err, &taken) {
		t.Fatalf("got %v, want a DigestTakenError", err)
	}
	if taken.Label != "alice" || taken.Digest != digestOf("alice") {
		t.Errorf("error names label %q, want alice", taken.Label)
	}
	d := digestOf("alice")
	if msg := err.Error(); !strings.Contains(msg, `"alice"`) || strings.Contains(msg, hex.EncodeToString(d[:])) {
		t.Errorf("message %q should name alice and not print the digest", msg)
	}
	if _, err := e.Get("mallory"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused label was stored: %v", err)
	}
	if got := mustRev(t, e); got != rev {
		t.Errorf("refused put moved rev from %d to %d", rev, got)
	}
}

func testDigestFixed(t *testing.T, e Engine) {
	rev := mustPut(t, e, rec("alice", "a"))
	other := Record{Label: "alice", Digest: digestOf("another token"), Data: []byte("b")}
	if _, err := e.Put(other, Cond{}); !errors.Is(err, ErrDigestFixed) {
		t.Fatalf("got %v, want ErrDigestFixed", err)
	}
	want := rec("alice", "a")
	want.Rev = rev
	sameRecord(t, mustGet(t, e, "alice"), want)
	// The refused digest stays free for the label that owns it.
	mustPut(t, e, rec("another token", "c"))
}

func testDeleteFrees(t *testing.T, e Engine) {
	mustPut(t, e, rec("alice", "a"))
	if err := e.Delete("alice", Cond{}); err != nil {
		t.Fatal(err)
	}
	// Alice's token under another label, and alice with another token.
	mustPut(t, e, Record{Label: "alice-renamed", Digest: digestOf("alice"), Data: []byte("b")})
	mustPut(t, e, Record{Label: "alice", Digest: digestOf("alice's new token"), Data: []byte("c")})
}

func testInvalidRecords(t *testing.T, e Engine) {
	cases := []struct {
		name string
		r    Record
	}{
		{"empty label", Record{Digest: digestOf("x")}},
		{"zero digest", Record{Label: "alice"}},
		{"label longer than a key", Record{Label: strings.Repeat("a", 1<<16), Digest: digestOf("x")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := e.Put(c.r, Cond{}); err == nil {
				t.Error("put: no error")
			}
			if err := e.PutBatch([]Record{c.r}); err == nil {
				t.Error("put batch: no error")
			}
		})
	}
	if rev := mustRev(t, e); rev != 0 {
		t.Errorf("refused records moved rev to %d", rev)
	}
}

func testListPages(t *testing.T, e Engine) {
	all := labels(2345)
	mustPutLabels(t, e, all)
	for _, limit := range []int{1, 7, 100, MaxList} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var got []string
			after := ""
			for {
				page, err := e.List(after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit {
					t.Fatalf("page of %d, limit %d", len(page), limit)
				}
				for _, r := range page {
					got = append(got, r.Label)
				}
				if len(page) < limit {
					break
				}
				after = page[len(page)-1].Label
			}
			if !slices.Equal(got, all) {
				t.Fatalf("paged %d labels, want %d in order", len(got), len(all))
			}
		})
	}
	cases := []struct {
		name  string
		after string
		limit int
		first string
		n     int
	}{
		{"a limit of 0 is the most", "", 0, all[0], MaxList},
		{"a limit above the most is the most", "", MaxList + 1, all[0], MaxList},
		{"after a label not stored", all[10] + "x", 3, all[11], 3},
		{"after the last label is empty", all[len(all)-1], 10, "", 0},
		{"after a label past every label is empty", "zzz", 10, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			page, err := e.List(c.after, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) != c.n || c.n > 0 && page[0].Label != c.first {
				t.Fatalf("got %d records, want %d from %q", len(page), c.n, c.first)
			}
		})
	}
	if page, _ := e.List("", 1); string(page[0].Data) != "data of "+all[0] || page[0].Digest != digestOf(all[0]) {
		t.Errorf("listed record has data %q", page[0].Data)
	}
}

func testScan(t *testing.T, e Engine) {
	all := labels(scanRecords*3 + 1)
	mustPutLabels(t, e, all)
	var got []string
	err := e.Scan(func(r Record) error {
		if string(r.Data) != "data of "+r.Label || r.Digest != digestOf(r.Label) {
			return fmt.Errorf("record %q has data %q", r.Label, r.Data)
		}
		// A write from the callback must neither deadlock nor be seen twice.
		if len(got) == 0 {
			mustPut(t, e, rec(r.Label, "data of "+r.Label))
		}
		got = append(got, r.Label)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, all) {
		t.Fatalf("scanned %d labels, want %d in order", len(got), len(all))
	}
}

func testScanStops(t *testing.T, e Engine) {
	mustPutLabels(t, e, labels(scanRecords*2))
	stop := errors.New("stop")
	n := 0
	err := e.Scan(func(Record) error {
		n++
		if n == scanRecords+1 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != scanRecords+1 {
		t.Fatalf("scan returned %v after %d records, want stop after %d", err, n, scanRecords+1)
	}
}

func testPutBatch(t *testing.T, e Engine) {
	mustPut(t, e, rec("existing", "old"))
	rs := []Record{rec("a", "1"), rec("existing", "new"), rec("b", "2"), rec("a", "1 again")}
	if err := e.PutBatch(rs); err != nil {
		t.Fatal(err)
	}
	for label, data := range map[string]string{"a": "1 again", "existing": "new", "b": "2"} {
		if got := mustGet(t, e, label); string(got.Data) != data {
			t.Errorf("%s: data %q, want %q", label, got.Data, data)
		}
	}
	if err := e.PutBatch(nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	if err := e.PutBatch(make([]Record, MaxBatch+1)); err == nil {
		t.Error("a batch larger than MaxBatch was taken")
	}
}

func testPutBatchAllOrNothing(t *testing.T, e Engine) {
	mustPut(t, e, rec("alice", "a"))
	cases := []struct {
		name string
		bad  Record
		want error
	}{
		{"a digest bound to a stored label", Record{Label: "mallory", Digest: digestOf("alice")}, &DigestTakenError{}},
		{"a digest bound to an earlier record of the batch", Record{Label: "mallory", Digest: digestOf("new-1")}, &DigestTakenError{}},
		{"a stored label's digest changed", Record{Label: "alice", Digest: digestOf("other")}, ErrDigestFixed},
		{"a record without a digest", Record{Label: "mallory"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := mustRev(t, e)
			rs := []Record{rec("new-1", "1"), rec("new-2", "2"), c.bad, rec("new-3", "3")}
			err := e.PutBatch(rs)
			if err == nil || !strings.Contains(err.Error(), "record 2") {
				t.Fatalf("got %v, want an error naming record 2", err)
			}
			var taken *DigestTakenError
			if _, wantTaken := c.want.(*DigestTakenError); wantTaken && !errors.As(err, &taken) {
				t.Errorf("got %v, want a DigestTakenError", err)
			} else if c.want != nil && !wantTaken && !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
			for _, label := range []string{"new-1", "new-2", "mallory", "new-3"} {
				if _, err := e.Get(label); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s was written by a refused batch", label)
				}
			}
			if got := mustGet(t, e, "alice"); string(got.Data) != "a" {
				t.Errorf("alice changed to %q", got.Data)
			}
			if after := mustRev(t, e); after != before {
				t.Errorf("refused batch moved rev from %d to %d", before, after)
			}
		})
	}
}

func testRevCounts(t *testing.T, e Engine) {
	steps := []struct {
		name  string
		write func() error
		delta uint64
	}{
		{"put of a new label", func() error { _, err := e.Put(rec("a", "1"), Cond{}); return err }, 1},
		{"put replacing a label", func() error { _, err := e.Put(rec("a", "2"), Cond{}); return err }, 1},
		{"batch of three", func() error { return e.PutBatch([]Record{rec("b", ""), rec("c", ""), rec("d", "")}) }, 3},
		{"delete", func() error { return e.Delete("b", Cond{}) }, 1},
		{"refused put", func() error { e.Put(rec("a", "3"), Cond{IfAbsent: true}); return nil }, 0},
		{"refused delete", func() error { e.Delete("b", Cond{}); return nil }, 0},
		{"refused batch", func() error { e.PutBatch([]Record{rec("e", ""), {Label: "f", Digest: digestOf("a")}}); return nil }, 0},
	}
	rev := mustRev(t, e)
	if rev != 0 {
		t.Fatalf("new store at rev %d", rev)
	}
	for _, s := range steps {
		if err := s.write(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := mustRev(t, e)
		if got != rev+s.delta {
			t.Fatalf("%s: rev %d, want %d", s.name, got, rev+s.delta)
		}
		rev = got
	}
	if r := mustGet(t, e, "d"); r.Rev != 5 {
		t.Errorf("last record of the batch has rev %d, want 5", r.Rev)
	}
}

// testConcurrent runs writers, some of them refused, beside readers, for
// the race detector and for the refusals' batching: a refused write must
// not undo the writes it shared a commit with.
func testConcurrent(t *testing.T, e Engine) {
	const writers, each = 4, 40
	mustPut(t, e, rec("shared", "x"))
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*3)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				label := fmt.Sprintf("w%d-%03d", w, i)
				rev, err := e.Put(rec(label, label), Cond{IfAbsent: true})
				if err != nil {
					errs <- err
					continue
				}
				if _, err := e.Put(rec(label, label+" again"), Cond{IfRev: rev}); err != nil {
					errs <- err
				}
				// Always refused: the digest is shared's.
				if _, err := e.Put(Record{Label: label + "-steal", Digest: digestOf("shared")}, Cond{}); err == nil {
					errs <- fmt.Errorf("%s took shared's digest", label)
				}
			}
		})
		wg.Go(func() {
			for range each {
				if _, err := e.Get("shared"); err != nil {
					errs <- err
				}
				if _, err := e.List(fmt.Sprintf("w%d", w), 10); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range writers {
		for i := range each {
			label := fmt.Sprintf("w%d-%03d", w, i)
			if r := mustGet(t, e, label); string(r.Data) != label+" again" {
				t.Fatalf("%s: data %q", label, r.Data)
			}
		}
	}
	if rev := mustRev(t, e); rev != 1+writers*each*2 {
		t.Errorf("rev %d after %d writes", rev, 1+writers*each*2)
	}
}
