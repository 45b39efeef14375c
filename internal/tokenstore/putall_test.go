package tokenstore

import (
	"errors"
	"fmt"
	"testing"
)

// CheckBatch refuses what put refuses, writing nothing, and PutAll writes
// all of its records or none, however many: a record refused after
// MaxBatch others keeps none of them.
func TestFileCheckBatchAndPutAllAreAllOrNothing(t *testing.T) {
	for _, tt := range []struct {
		name    string
		last    Record // written after MaxBatch+1 good records
		refused func(error) bool
	}{
		{"another token under a stored label", Record{Label: "stored", Digest: digestOf("other"), Data: []byte("{}")},
			func(err error) bool { return errors.Is(err, ErrDigestFixed) }},
		{"a stored token under another label", Record{Label: "late", Digest: digestOf("stored"), Data: []byte("{}")},
			func(err error) bool {
				var taken *DigestTakenError
				return errors.As(err, &taken) && taken.Label == "stored"
			}},
		{"a good record", rec("late", "{}"), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := openTestFile(t)
			mustPut(t, f, rec("stored", "{}"))
			before, _ := f.Rev()
			var rs []Record
			for i := range MaxBatch + 1 {
				rs = append(rs, rec(fmt.Sprintf("r-%05d", i), "{}"))
			}
			rs = append(rs, tt.last)
			_, err := f.CheckBatch(rs[len(rs)-1:])
			if (err != nil) != (tt.refused != nil) || err != nil && !tt.refused(err) {
				t.Fatalf("CheckBatch: %v", err)
			}
			err = f.PutAll(func(put func(Record) error) error {
				for _, r := range rs {
					if err := put(r); err != nil {
						return err
					}
				}
				return nil
			})
			if (err != nil) != (tt.refused != nil) || err != nil && !tt.refused(err) {
				t.Fatalf("PutAll: %v", err)
			}
			n := 0
			if err := f.Scan(func(Record) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			rev, _ := f.Rev()
			switch {
			case tt.refused != nil && (n != 1 || rev != before):
				t.Errorf("refused: %d records, rev %d (was %d); want the stored one alone, unchanged", n, rev, before)
			case tt.refused == nil && n != len(rs)+1:
				t.Errorf("written: %d records, want %d", n, len(rs)+1)
			}
		})
	}
}
