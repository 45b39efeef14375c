package tokenstore

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchData is about the size of a real entry's JSON.
var benchData = []byte(`{"allow":["192.0.2.0/24","198.51.100.7","2001:db8:1234::/48"],"note":"customer 1234, office and VPN","owner":"team-a"}`)

func openBenchFile(b *testing.B) *File {
	b.Helper()
	f, err := OpenFile(filepath.Join(b.TempDir(), "tokens.db"), FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func benchRecord(label string) Record {
	return Record{Label: label, Digest: digestOf(label), Data: benchData}
}

// BenchmarkFilePut creates new labels, each Put durable when it returns:
// one writer, and 16 at once (SetParallelism 8 on 2 CPUs), which share
// commits through DB.Batch.
func BenchmarkFilePut(b *testing.B) {
	b.Run("single", func(b *testing.B) {
		f := openBenchFile(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := f.Put(benchRecord(fmt.Sprintf("customer-%09d", i)), Cond{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		f := openBenchFile(b)
		var n atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.Put(benchRecord(fmt.Sprintf("customer-%09d", n.Add(1))), Cond{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkFileGet reads random labels of 10,000.
func BenchmarkFileGet(b *testing.B) {
	f := openBenchFile(b)
	ls := fillBench(b, f, 10000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Get(ls[rand.N(len(ls))]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFilePutLatency replaces random entries of a store of 1,000,
// reporting the median and 99th percentile of one Put.
func BenchmarkFilePutLatency(b *testing.B) {
	f := openBenchFile(b)
	putLatency(b, f, fillBench(b, f, 1000))
}

// BenchmarkFileMillion fills a store with 1,000,000 entries by PutBatch
// in batches of MaxBatch, reporting how long that took and the file's
// size, then measures Put, Get and reopening the file (warm: the file is
// in the page cache). It runs only when asked for by name, as it takes
// about 20 s and 360 MB of disk:
//
//	go test -run '^$' -bench FileMillion ./internal/tokenstore
func BenchmarkFileMillion(b *testing.B) {
	if !strings.Contains(flag.Lookup("test.bench").Value.String(), "Million") {
		b.Skip("fills 1,000,000 entries; run it with -bench FileMillion")
	}
	path := filepath.Join(b.TempDir(), "tokens.db")
	f, err := OpenFile(path, FileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { f.Close() }()
	start := time.Now()
	ls := fillBench(b, f, 1000000)
	fill := time.Since(start)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("put", func(b *testing.B) {
		putLatency(b, f, ls)
		b.ReportMetric(fill.Seconds(), "fill-s")
		b.ReportMetric(float64(fi.Size())/1e6, "file-MB")
	})
	b.Run("get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.Get(ls[rand.N(len(ls))]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			f.Close()
			if f, err = OpenFile(path, FileOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fillBench puts n entries in batches of MaxBatch, in label order as an
// export would give them, and returns their labels.
func fillBench(b *testing.B, f *File, n int) []string {
	b.Helper()
	ls := make([]string, n)
	for i := range ls {
		ls[i] = fmt.Sprintf("customer-%09d", i)
	}
	for chunk := range slices.Chunk(ls, MaxBatch) {
		rs := make([]Record, len(chunk))
		for i, l := range chunk {
			rs[i] = benchRecord(l)
		}
		if err := f.PutBatch(rs); err != nil {
			b.Fatal(err)
		}
	}
	return ls
}

// putLatency replaces a random one of ls per iteration, one writer at a
// time as a route call would, and reports the latency's median and 99th
// percentile.
func putLatency(b *testing.B, f *File, ls []string) {
	b.Helper()
	var took []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		if _, err := f.Put(benchRecord(ls[rand.N(len(ls))]), Cond{}); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2])/1e3, "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100])/1e3, "p99-µs")
}
