// Package tokenstore stores token entries keyed by label, with an index
// of token digest to label, so that one entry can be read or written
// without touching the others. It knows nothing of what an entry means:
// the entry is opaque bytes, and the rules (label characters, allow lists,
// what clashes with the config) belong to the handler package. The engine
// keeps only the invariants a store must hold by itself: a digest is bound
// to at most one label, a label's digest never changes, and every write
// has a revision.
package tokenstore

import (
	"errors"
	"fmt"
)

// Record is one token entry as stored.
type Record struct {
	// Label names the entry; the key of the store. Never empty.
	Label string
	// Digest is the SHA-256 of the token, bound to Label in the digest
	// index for as long as the record exists.
	Digest [32]byte
	// Data is the entry, opaque to the engine.
	Data []byte
	// Rev is the store's revision when this record was last written. It
	// is ignored on input and set on output, so it serves as an ETag.
	Rev uint64
}

// Cond is a write's precondition. The zero Cond writes unconditionally.
type Cond struct {
	// IfRev, when not 0, writes only if the record exists and its Rev is
	// this (If-Match).
	IfRev uint64
	// IfAbsent writes only if no record has this label (If-None-Match: *).
	// With IfRev as well, no record can satisfy both, so the write fails.
	IfAbsent bool
	// IfRevIn, when not nil, writes only if the record exists and its Rev
	// is one of these (If-Match with a list of tags). Empty and not nil,
	// it never holds: the tags named no revision.
	IfRevIn []uint64
	// IfRevNotIn writes only if no record has this label or its Rev is
	// none of these (If-None-Match with a list of tags).
	IfRevNotIn []uint64
}

// Limits on the size of one call, so that no call holds a transaction
// (and the memory to answer it) in proportion to the store's size.
const (
	// MaxList is the most records List returns in one call.
	MaxList = 1000
	// MaxBatch is the most records PutBatch takes in one call; a larger
	// import must be split into batches of at most this many.
	MaxBatch = 10000
)

// Errors a write or a read refuses with. They are wrapped with the label
// they concern, so test them with errors.Is.
var (
	// ErrNotFound: no record has this label.
	ErrNotFound = errors.New("not found")
	// ErrPrecondition: the Cond does not hold (the record changed since
	// IfRev was read, or IfAbsent found one).
	ErrPrecondition = errors.New("precondition failed")
	// ErrDigestFixed: a Put gave an existing label another digest. A
	// label's token does not change; a new token is a new label, or the
	// old label deleted first.
	ErrDigestFixed = errors.New("a label's token cannot change; delete the label first")
)

// DigestTakenError is returned by a write whose digest is bound to another
// label. It names that label; it never prints the digest, which would
// let a log reader test guesses of the token.
type DigestTakenError struct {
	Digest [32]byte
	Label  string
}

func (e *DigestTakenError) Error() string {
	return fmt.Sprintf("this token is already stored under label %q", e.Label)
}

// Engine is a token store. All methods are safe for concurrent use. A
// write is durable when it returns without error.
type Engine interface {
	// Get returns the record with this label, or ErrNotFound.
	Get(label string) (Record, error)
	// Put creates or replaces the record r.Label under c and returns the
	// record's new Rev. It refuses a digest bound to another label
	// (*DigestTakenError) and a digest other than the one the label
	// already has (ErrDigestFixed).
	Put(r Record, c Cond) (rev uint64, err error)
	// Delete removes the record under c and frees its digest for another
	// label. A label with no record gives ErrNotFound.
	Delete(label string, c Cond) error
	// List returns the records whose labels sort strictly after `after`
	// in byte order, at most limit of them; a limit below 1 or above
	// MaxList means MaxList. Fewer than limit means there are no more.
	List(after string, limit int) ([]Record, error)
	// Scan calls fn for every record in label order, stopping at fn's
	// first error and returning it. It reads in bounded transactions, so
	// it is not a snapshot: a record written during the scan may or may
	// not be seen, but none is seen twice. fn may call the Engine.
	Scan(fn func(Record) error) error
	// PutBatch writes rs as Puts without conditions, in order, all or
	// nothing: one refused record writes none of them. It takes at most
	// MaxBatch records.
	PutBatch(rs []Record) error
	// CheckBatch says whether PutBatch(rs) would refuse one of rs, and
	// how many of their labels the store has, writing nothing.
	CheckBatch(rs []Record) (replaced int, err error)
	// PutAll writes the records each passes to put in one transaction,
	// all or nothing, however many there are.
	PutAll(each func(put func(Record) error) error) error
	// Rev returns the store's revision: 0 when new, one more for each
	// record written or deleted since.
	Rev() (uint64, error)
	// Close releases the store. The Engine cannot be used after.
	Close() error
}
