package tokenstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// File is the embedded engine: one bbolt file, held open with an
// exclusive lock, so that one File at a time, in this process or another,
// may use it.
//
// The file has three buckets: entries (label → value), digests (digest →
// label) and meta (schema version, revision). A value is, in schema 1,
// the record's Rev (8 bytes, big-endian), its Digest (32 bytes) and its
// Data. One bucket holds every entry, rather than one per token, so that a
// million tokens are a million keys in one B+tree, not a million buckets.
type File struct {
	db   *bbolt.DB
	path string
	// scanBatch is how many records Scan reads per transaction: a field,
	// not a constant, so tests can make a scan take many.
	scanBatch int
	// writers counts the Puts and Deletes in progress, to choose
	// between a commit of their own and a shared one (see write).
	writers atomic.Int64
}

// FileOptions configures OpenFile. The zero value is the default.
type FileOptions struct {
	// Timeout is how long OpenFile waits for another process to let go
	// of the file before failing with ErrLocked. Default 1s. Without it,
	// bbolt waits forever.
	Timeout time.Duration
	// BatchDelay is how long a Put or Delete that shares a commit waits
	// for others to join it (bbolt's MaxBatchDelay). It applies only
	// when more than two writes are in progress: a lone writer commits
	// at once. Default 200µs; bbolt's own 10ms would be added to every
	// write of a busy store.
	BatchDelay time.Duration
}

// Defaults of FileOptions.
const (
	DefaultTimeout    = time.Second
	DefaultBatchDelay = 200 * time.Microsecond
	// defaultScanBatch bounds Scan's read transactions: a long read
	// transaction keeps bbolt from remapping the file as it grows, which
	// stalls every writer behind it.
	defaultScanBatch = 10000
	// compactTxSize is how many bytes Compact copies per transaction.
	compactTxSize = 16 << 20
)

// ErrLocked is returned by OpenFile when another process, or another File
// in this one, holds the file.
var ErrLocked = errors.New("held by another process")

// schemaVersion is the layout this code reads and writes. A file with a
// newer one is refused, so an older build never misreads a newer file.
const schemaVersion = 1

// The file's buckets, and the keys of its meta bucket.
const (
	bucketEntries = "entries"
	bucketDigests = "digests"
	bucketMeta    = "meta"
	keySchema     = "schema"
	keyRev        = "rev"
)

// valueHeader is the length of a value before its Data: Rev and Digest.
const valueHeader = 8 + 32

// OpenFile opens the store at path, creating it (mode 0600, and its
// directory 0700) if missing. It fails with ErrLocked if another process
// holds it for longer than opts.Timeout, and refuses a file of a newer
// schema than this build knows.
func OpenFile(path string, opts FileOptions) (*File, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.BatchDelay <= 0 {
		opts.BatchDelay = DefaultBatchDelay
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store file %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      opts.Timeout,
		FreelistType: bbolt.FreelistMapType,
		// As etcd does: the free page list is rebuilt on open rather than
		// written on every commit, where with a million entries it was
		// 67 KB a commit and tripled a Put's latency (1.2 ms to 0.38 ms).
		NoFreelistSync: true,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store file %s is %w (waited %s)", path, ErrLocked, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store file %s: %w", path, err)
	}
	db.MaxBatchDelay = opts.BatchDelay
	if err := initSchema(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store file %s: %w", path, err)
	}
	return &File{db: db, path: path, scanBatch: defaultScanBatch}, nil
}

// initSchema writes the buckets and schema of a new file, and checks
// those of an existing one.
func initSchema(db *bbolt.DB) error {
	fresh := false
	err := db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		if meta == nil {
			if tx.ForEach(func([]byte, *bbolt.Bucket) error { return errNotStore }) != nil {
				return errNotStore
			}
			fresh = true
			return nil
		}
		v := meta.Get([]byte(keySchema))
		if len(v) != 8 {
			return errNotStore
		}
		if n := binary.BigEndian.Uint64(v); n > schemaVersion {
			return fmt.Errorf("schema version %d is newer than this build knows (%d): upgrade it to use this file", n, schemaVersion)
		}
		if tx.Bucket([]byte(bucketEntries)) == nil || tx.Bucket([]byte(bucketDigests)) == nil {
			return errNotStore
		}
		return nil
	})
	if err != nil || !fresh {
		return err
	}
	return db.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{bucketEntries, bucketDigests, bucketMeta} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		meta := tx.Bucket([]byte(bucketMeta))
		if err := meta.Put([]byte(keySchema), binary.BigEndian.AppendUint64(nil, schemaVersion)); err != nil {
			return err
		}
		return meta.Put([]byte(keyRev), make([]byte, 8))
	})
}

var errNotStore = errors.New("not a token store (no schema in its meta bucket)")

// Get returns the record with this label, or ErrNotFound.
func (f *File) Get(label string) (Record, error) {
	var r Record
	err := f.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket([]byte(bucketEntries)).Get([]byte(label))
		if v == nil {
			return fmt.Errorf("label %q: %w", label, ErrNotFound)
		}
		var err error
		r, err = decode([]byte(label), v)
		return err
	})
	return r, err
}

// Put creates or replaces r.Label; see Engine.Put.
func (f *File) Put(r Record, c Cond) (uint64, error) {
	if err := checkRecord(r); err != nil {
		return 0, err
	}
	var rev uint64
	err := f.write(func(tx *bbolt.Tx) error {
		var err error
		rev, err = put(tx, r, c)
		return err
	})
	if err != nil {
		return 0, err
	}
	return rev, nil
}

// Delete removes label and frees its digest; see Engine.Delete.
func (f *File) Delete(label string, c Cond) error {
	return f.write(func(tx *bbolt.Tx) error {
		entries := tx.Bucket([]byte(bucketEntries))
		key := []byte(label)
		v := entries.Get(key)
		if v == nil {
			return fmt.Errorf("label %q: %w", label, ErrNotFound)
		}
		cur, err := decode(key, v)
		if err != nil {
			return err
		}
		if err := c.Check(label, cur.Rev, true); err != nil {
			return err
		}
		if _, err := nextRev(tx); err != nil {
			return err
		}
		digests := tx.Bucket([]byte(bucketDigests))
		if bytes.Equal(digests.Get(cur.Digest[:]), key) {
			if err := digests.Delete(cur.Digest[:]); err != nil {
				return err
			}
		}
		return entries.Delete(key)
	})
}

// write runs fn, a Put or a Delete, in a transaction of its own or, when
// more than two writes are in progress, in one shared through DB.Batch,
// so that many writers pay for one commit's fsyncs. Not always Batch: its
// timer makes a write wait BatchDelay, and, the process idle, about a
// millisecond whatever the delay, since Go's timers then sleep in whole
// milliseconds; the second of two writers waits less behind the first's
// commit. Measured here: a lone Put 0.33 ms in its own transaction, 1.3
// to 1.6 ms through Batch; 16 writers 0.12 ms a Put through Batch, 0.4 ms
// each in its own.
//
// bbolt runs a batch's functions in one transaction, and when one
// returns an error it rolls them all back and runs the others again. So
// fn must write only through tx, and each run must overwrite what it
// sets outside (as Put's rev), never add to it; and in a batch a refusal
// (which fn returns before writing anything) is carried out beside it,
// not as its error, so that it costs the other writers nothing. In a
// transaction of its own, a refusal is its error, so that bbolt rolls
// back instead of committing, and syncing, an empty transaction.
func (f *File) write(fn func(*bbolt.Tx) error) error {
	defer f.writers.Add(-1)
	if f.writers.Add(1) <= 2 {
		return f.db.Update(fn)
	}
	var refused error
	err := f.db.Batch(func(tx *bbolt.Tx) error {
		refused = nil
		err := fn(tx)
		if isRefusal(err) {
			refused = err
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	return refused
}

func isRefusal(err error) bool {
	var taken *DigestTakenError
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrPrecondition) ||
		errors.Is(err, ErrDigestFixed) || errors.As(err, &taken)
}

// put writes r in tx under c and returns its Rev. It refuses before
// writing anything, which write relies on.
func put(tx *bbolt.Tx, r Record, c Cond) (uint64, error) {
	exists, err := checkPut(tx, r, c)
	if err != nil {
		return 0, err
	}
	entries, digests := tx.Bucket([]byte(bucketEntries)), tx.Bucket([]byte(bucketDigests))
	key := []byte(r.Label)
	rev, err := nextRev(tx)
	if err != nil {
		return 0, err
	}
	if !exists {
		if err := digests.Put(r.Digest[:], key); err != nil {
			return 0, err
		}
	}
	return rev, entries.Put(key, encode(rev, r))
}

// checkPut says whether put would refuse r under c in tx, and whether a
// record has its label: everything put checks, nothing written.
func checkPut(tx *bbolt.Tx, r Record, c Cond) (exists bool, err error) {
	entries, digests := tx.Bucket([]byte(bucketEntries)), tx.Bucket([]byte(bucketDigests))
	key := []byte(r.Label)
	var cur Record
	v := entries.Get(key)
	exists = v != nil
	if exists {
		if cur, err = decode(key, v); err != nil {
			return false, err
		}
	}
	if err := c.Check(r.Label, cur.Rev, exists); err != nil {
		return false, err
	}
	if exists && cur.Digest != r.Digest {
		return false, fmt.Errorf("label %q: %w", r.Label, ErrDigestFixed)
	}
	if owner := digests.Get(r.Digest[:]); owner != nil && !bytes.Equal(owner, key) {
		return false, &DigestTakenError{Digest: r.Digest, Label: string(owner)}
	}
	return exists, nil
}

// Check says whether c holds for a record that exists (or not) with rev.
func (c Cond) Check(label string, rev uint64, exists bool) error {
	if c.IfAbsent && exists || c.IfRev != 0 && (!exists || rev != c.IfRev) ||
		c.IfRevIn != nil && (!exists || !slices.Contains(c.IfRevIn, rev)) ||
		exists && slices.Contains(c.IfRevNotIn, rev) {
		return fmt.Errorf("label %q: %w", label, ErrPrecondition)
	}
	return nil
}

// checkRecord refuses what bbolt cannot store, and the zero digest, which
// is a caller that forgot to set one rather than any token's SHA-256.
func checkRecord(r Record) error {
	switch {
	case r.Label == "":
		return errors.New("record has no label")
	case len(r.Label) > bbolt.MaxKeySize:
		return fmt.Errorf("label of %d bytes is longer than %d", len(r.Label), bbolt.MaxKeySize)
	case r.Digest == [32]byte{}:
		return fmt.Errorf("label %q: record has no digest", r.Label)
	}
	return nil
}

// nextRev increments the store's revision in tx and returns it.
func nextRev(tx *bbolt.Tx) (uint64, error) {
	meta := tx.Bucket([]byte(bucketMeta))
	rev := binary.BigEndian.Uint64(meta.Get([]byte(keyRev))) + 1
	return rev, meta.Put([]byte(keyRev), binary.BigEndian.AppendUint64(nil, rev))
}

func encode(rev uint64, r Record) []byte {
	v := make([]byte, valueHeader, valueHeader+len(r.Data))
	binary.BigEndian.PutUint64(v, rev)
	copy(v[8:], r.Digest[:])
	return append(v, r.Data...)
}

// decode copies a stored value out of its transaction.
func decode(key, v []byte) (Record, error) {
	if len(v) < valueHeader {
		return Record{}, fmt.Errorf("label %q: stored value of %d bytes is too short", key, len(v))
	}
	r := Record{
		Label: string(key),
		Rev:   binary.BigEndian.Uint64(v),
		Data:  bytes.Clone(v[valueHeader:]),
	}
	copy(r.Digest[:], v[8:valueHeader])
	return r, nil
}

// List returns up to limit records after `after`; see Engine.List.
func (f *File) List(after string, limit int) ([]Record, error) {
	if limit < 1 || limit > MaxList {
		limit = MaxList
	}
	return f.page(after, limit)
}

// page reads up to n records after `after` in one read transaction.
func (f *File) page(after string, n int) ([]Record, error) {
	return f.pagePrefix("", after, n)
}

// ListPrefix returns up to limit records whose labels begin with prefix
// and sort after `after`, in label order: a page of a search by prefix,
// read in one transaction however many records there are.
func (f *File) ListPrefix(prefix, after string, limit int) ([]Record, error) {
	if limit < 1 || limit > MaxList {
		limit = MaxList
	}
	return f.pagePrefix(prefix, after, limit)
}

// pagePrefix reads up to n records whose labels begin with prefix, after
// `after`, in one read transaction.
func (f *File) pagePrefix(prefix, after string, n int) ([]Record, error) {
	start := max(prefix, after)
	var rs []Record
	err := f.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket([]byte(bucketEntries)).Cursor()
		k, v := c.Seek([]byte(start))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && len(rs) < n && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			r, err := decode(k, v)
			if err != nil {
				return err
			}
			rs = append(rs, r)
		}
		return nil
	})
	return rs, err
}

// Scan calls fn for every record; see Engine.Scan. It reads scanBatch
// records per transaction and calls fn outside it, so neither a large
// store nor a slow fn holds a read transaction open.
func (f *File) Scan(fn func(Record) error) error {
	after := ""
	for {
		rs, err := f.page(after, f.scanBatch)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rs) < f.scanBatch {
			return nil
		}
		after = rs[len(rs)-1].Label
	}
}

// PutBatch writes rs in one transaction; see Engine.PutBatch. It does not
// go through DB.Batch: one large transaction gains nothing from sharing a
// commit, and a refused import would make the writers batched with it
// run again.
func (f *File) PutBatch(rs []Record) error {
	if len(rs) > MaxBatch {
		return fmt.Errorf("batch of %d records is larger than %d", len(rs), MaxBatch)
	}
	for i, r := range rs {
		if err := checkRecord(r); err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
	}
	return f.db.Update(func(tx *bbolt.Tx) error {
		// An import mostly comes in label order, as an export gives it,
		// where bbolt's default of half-full pages doubles the file
		// (1,000,000 entries: 566 MB, 358 MB at 0.9). This transaction
		// only; single Puts keep the default, fit for keys in any order.
		tx.Bucket([]byte(bucketEntries)).FillPercent = 0.9
		for i, r := range rs {
			if _, err := put(tx, r, Cond{}); err != nil {
				return fmt.Errorf("record %d: %w", i, err)
			}
		}
		return nil
	})
}

// CheckBatch says whether PutBatch(rs) would refuse one of rs, checking
// each against the store as put does (another token under its label, its
// token under another label), in one read transaction, writing nothing;
// replaced counts the records whose label the store has. It takes at most
// MaxBatch records, and does not compare rs with one another.
func (f *File) CheckBatch(rs []Record) (replaced int, err error) {
	if len(rs) > MaxBatch {
		return 0, fmt.Errorf("batch of %d records is larger than %d", len(rs), MaxBatch)
	}
	err = f.db.View(func(tx *bbolt.Tx) error {
		for _, r := range rs {
			if err := checkRecord(r); err != nil {
				return err
			}
			exists, err := checkPut(tx, r, Cond{})
			var taken *DigestTakenError
			if errors.As(err, &taken) {
				err = fmt.Errorf("label %q: %w", r.Label, err) // which record
			}
			if err != nil {
				return err
			}
			if exists {
				replaced++
			}
		}
		return nil
	})
	return replaced, err
}

// PutAll writes every record each passes to put, as Puts without
// conditions, in one transaction: all or nothing, whatever their number.
// A refused record (put's error), or an error of each, writes none of
// them. Meant for an import checked first (CheckBatch): the transaction
// holds every page it changes in memory until it commits, and other
// writers wait for it. Records in label order, as an export gives them,
// are written fastest.
func (f *File) PutAll(each func(put func(Record) error) error) error {
	return f.db.Update(func(tx *bbolt.Tx) error {
		entries, digests := tx.Bucket([]byte(bucketEntries)), tx.Bucket([]byte(bucketDigests))
		// As PutBatch: an import mostly comes in label order.
		entries.FillPercent = 0.9
		// The digest index is written last, in digest order: one
		// transaction splits bbolt's nodes only as it commits, so
		// random digests inserted as they come would make one leaf
		// copy its tail at every insert (100,000 records: 11.8 s
		// against 2.7 s in batches).
		type link struct {
			digest [32]byte
			label  string
		}
		var links []link
		err := each(func(r Record) error {
			if err := checkRecord(r); err != nil {
				return err
			}
			exists, err := checkPut(tx, r, Cond{})
			if err != nil {
				return err
			}
			rev, err := nextRev(tx)
			if err != nil {
				return err
			}
			if !exists {
				links = append(links, link{r.Digest, r.Label})
			}
			return entries.Put([]byte(r.Label), encode(rev, r))
		})
		if err != nil {
			return err
		}
		slices.SortFunc(links, func(a, b link) int { return bytes.Compare(a.digest[:], b.digest[:]) })
		digests.FillPercent = 0.9
		for i, l := range links {
			if i > 0 && links[i-1].digest == l.digest {
				return fmt.Errorf("label %q: %w", l.label, &DigestTakenError{Digest: l.digest, Label: links[i-1].label})
			}
			if err := digests.Put(l.digest[:], []byte(l.label)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Rev returns the store's revision.
func (f *File) Rev() (uint64, error) {
	var rev uint64
	err := f.db.View(func(tx *bbolt.Tx) error {
		rev = binary.BigEndian.Uint64(tx.Bucket([]byte(bucketMeta)).Get([]byte(keyRev)))
		return nil
	})
	return rev, err
}

// Close closes the file and releases its lock. It is safe on a nil File.
func (f *File) Close() error {
	if f == nil {
		return nil
	}
	return f.db.Close()
}

// Compact rewrites the store at path without its free pages, and returns
// the file's size before and after. It holds the file's lock throughout,
// so no write is lost: it fails with ErrLocked while another process has
// the file open. The copy is written beside the file, synced, and renamed
// over it, so a crash leaves either the old file or the new one.
func Compact(path string, opts FileOptions) (before, after int64, err error) {
	if _, err := os.Stat(path); err != nil {
		return 0, 0, fmt.Errorf("store file: %w", err)
	}
	src, err := OpenFile(path, opts)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, 0, err
	}
	// NoSync while copying, and one sync at the end: the copy is not
	// the store until the rename.
	dst, err := bbolt.Open(tmp, 0o600, &bbolt.Options{FreelistType: bbolt.FreelistMapType, NoSync: true})
	if err != nil {
		return 0, 0, fmt.Errorf("store file %s: %w", tmp, err)
	}
	err = bbolt.Compact(dst, src.db, compactTxSize)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return 0, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	if before, err = fileSize(path); err != nil {
		return 0, 0, err
	}
	if after, err = fileSize(tmp); err != nil {
		return 0, 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, 0, err
	}
	return before, after, syncDir(filepath.Dir(path))
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

var _ Engine = (*File)(nil)
