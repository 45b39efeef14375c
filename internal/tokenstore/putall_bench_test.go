package tokenstore

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFilePutAll writes 100,000 entries in one PutAll, as an import
// of that size now does, and, to compare, in PutBatch transactions of
// MaxBatch, as imports did before; it reports the write's time and the
// process's peak RSS (run each alone for the RSS). It runs only when
// asked for by name:
//
//	go test -run '^$' -bench FilePutAll -benchtime 1x ./internal/tokenstore
func BenchmarkFilePutAll(b *testing.B) {
	if !strings.Contains(flag.Lookup("test.bench").Value.String(), "FilePutAll") {
		b.Skip("writes 100,000 entries; run it with -bench FilePutAll")
	}
	const n = 100_000
	for _, bb := range []struct {
		name  string
		write func(f *File) error
	}{
		{"putall", func(f *File) error {
			return f.PutAll(func(put func(Record) error) error {
				for i := range n {
					if err := put(benchRecord(fmt.Sprintf("customer-%09d", i))); err != nil {
						return err
					}
				}
				return nil
			})
		}},
		{"batches", func(f *File) error {
			for i := 0; i < n; i += MaxBatch {
				rs := make([]Record, 0, MaxBatch)
				for j := i; j < min(i+MaxBatch, n); j++ {
					rs = append(rs, benchRecord(fmt.Sprintf("customer-%09d", j)))
				}
				if err := f.PutBatch(rs); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				f, err := OpenFile(filepath.Join(b.TempDir(), "tokens.db"), FileOptions{})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				err = bb.write(f)
				took := time.Since(start)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
				var ru syscall.Rusage
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				b.ReportMetric(took.Seconds(), "write-s")
				b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
			}
		})
	}
}
