package ipallowlist

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// TokenStore is a writable token store: tokens added, changed and removed
// one at a time through the admin routes or the CLI, each change applied
// in place (applyToken), without a reload. Exactly one of file and redis
// is used; with neither, the file store at its default path.
type TokenStore struct {
	// The embedded store: one file, no server, mode 0600. Default:
	// ip-allowlist/tokens.db in Caddy's data directory.
	File string `json:"file,omitempty"`
	// A Redis store shared by a fleet, as the handler's redis field,
	// which stays as its alias.
	Redis *RedisSource `json:"redis,omitempty"`
	// The store's name, for the routes' ?store=<name> when a config has
	// several stores. Default: default.
	Name string `json:"name,omitempty"`
}

// defaultStoreName names a store that is given no name.
const defaultStoreName = "default"

// CheckStoreName applies the rule for a store's name: as a label's, so it
// is a plain query value.
func CheckStoreName(name string) error {
	if name == "" {
		return nil
	}
	if err := labelRule(name); err != nil {
		return fmt.Errorf("%q: %w", name, err)
	}
	return nil
}

// defaultStoreFile is the file store's path in Caddy's data directory.
func defaultStoreFile() string {
	return filepath.Join(caddy.AppDataDir(), "ip-allowlist", "tokens.db")
}

// fileStores holds the open file stores, keyed by absolute path, so that
// handlers naming the same file share one handle (bbolt locks the file)
// across sites and reloads.
var fileStores = caddy.NewUsagePool()

// fileStoreAppID is the app that opens the file stores when a config
// starts: caddy validate provisions handlers but starts no app, and must
// not take the file's lock from a running Caddy.
const fileStoreAppID = "ip_allowlist_store"

// fileStore is one open store file and the handlers that use it.
type fileStore struct {
	path   string
	name   atomic.Pointer[string] // the name the newest handler to join gave it
	logger *zap.Logger

	// mu orders the writes: a change is checked against every handler,
	// kept, and published before the next begins.
	mu sync.Mutex

	// openTimeout is how long start waits for another process to let go
	// of the file; 0 is storeOpenTimeout.
	openTimeout time.Duration
	startOnce   sync.Once
	startErr    atomic.Pointer[error]           // why start failed
	eng         atomic.Pointer[tokenstore.File] // nil until started
	opened      chan struct{}                   // closed when eng is set

	hmu      sync.Mutex
	handlers []*Handler // in the order they joined

	// owners finds the entries of one owner, for the console.
	owners ownerIndex
}

func newFileStore(path, name string, logger *zap.Logger) *fileStore {
	s := &fileStore{path: path, logger: logger, opened: make(chan struct{})}
	s.name.Store(&name)
	return s
}

// Name is the store's name, for ?store= and logs.
func (s *fileStore) Name() string { return *s.name.Load() }

// storeOpenTimeout is how long a config's start waits for the file's
// lock, as an old config's Caddy lets go of it.
const storeOpenTimeout = 5 * time.Second

// start opens the file, once.
func (s *fileStore) start() error {
	s.startOnce.Do(func() {
		timeout := s.openTimeout
		if timeout == 0 {
			timeout = storeOpenTimeout
		}
		eng, err := tokenstore.OpenFile(s.path, tokenstore.FileOptions{Timeout: timeout})
		if err != nil {
			err = fmt.Errorf("token store %q: %w", s.Name(), err)
			s.startErr.Store(&err)
			return
		}
		s.eng.Store(eng)
		close(s.opened)
		rev, _ := eng.Rev()
		s.logger.Info("token store opened", zap.String("store", s.Name()), zap.String("file", s.path), zap.Uint64("rev", rev))
	})
	if err := s.startErr.Load(); err != nil {
		return *err
	}
	return nil
}

func (s *fileStore) isLoaded() bool { return s.eng.Load() != nil }

// engine is the open file, or an error saying it is not open yet.
func (s *fileStore) engine() (*tokenstore.File, error) {
	if eng := s.eng.Load(); eng != nil {
		return eng, nil
	}
	if err := s.startErr.Load(); err != nil {
		return nil, *err
	}
	return nil, fmt.Errorf("token store %q: %w", s.Name(), errStoreNotOpen)
}

// errStoreNotOpen: the config that opens the store has not started yet.
var errStoreNotOpen = errors.New("not open yet: the config using it is still starting")

// waitOpen waits until the store is open, at most storeWait or until done
// is closed, as a request waits for its handler's store (waitForStore): a
// route called as Caddy starts, before the app that opens the file has
// started, is answered once it has rather than refused.
func (s *fileStore) waitOpen(done <-chan struct{}) {
	if s.isLoaded() {
		return
	}
	t := time.NewTimer(storeWait)
	defer t.Stop()
	select {
	case <-s.opened:
	case <-t.C:
	case <-done:
	}
}

// Destruct closes the file when the last handler using it has gone.
func (s *fileStore) Destruct() error {
	leakAlerts.Range(func(k, _ any) bool {
		if k.(leakKey).store == s {
			leakAlerts.Delete(k)
		}
		return true
	})
	if eng := s.eng.Load(); eng != nil {
		return eng.Close()
	}
	return nil
}

func (s *fileStore) join(h *Handler) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if !slices.Contains(s.handlers, h) { // twice, a change would wait for itself
		s.handlers = append(s.handlers, h)
	}
}

func (s *fileStore) leave(h *Handler) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.handlers = slices.DeleteFunc(s.handlers, func(o *Handler) bool { return o == h })
}

// users are the handlers a change must be applied to: every provisioned
// handler of every loaded config that uses the store. A handler joins
// once its first view is published (Provision), so each has one.
func (s *fileStore) users() []*Handler {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	return slices.Clone(s.handlers)
}

// entries reads every entry, for a full build.
func (s *fileStore) entries() ([]labeledEntry, error) {
	eng, err := s.engine()
	if err != nil {
		return nil, nil // not open: build treats the store as pending
	}
	var out []labeledEntry
	err = eng.Scan(func(r tokenstore.Record) error {
		out = append(out, recordEntry(r))
		return nil
	})
	return out, err
}

// recordEntry decodes a stored record as build compiles it: strictly, so
// that an entry this build cannot read is refused, never misread.
func recordEntry(r tokenstore.Record) labeledEntry {
	e := decodeEntry(string(r.Data))
	return labeledEntry{label: r.Label, redisEntry: e, d: r.Digest, dOK: true}
}

// stored is one entry read back from the store.
type stored struct {
	tp  TokenPolicy
	rev uint64
}

// get reads label's entry; ErrNotFound (wrapped) when there is none.
func (s *fileStore) get(label string) (stored, error) {
	eng, err := s.engine()
	if err != nil {
		return stored{}, err
	}
	r, err := eng.Get(label)
	if err != nil {
		return stored{}, err
	}
	e := decodeEntry(string(r.Data))
	if e.err != nil {
		return stored{}, fmt.Errorf("token %q: the stored entry cannot be read by this build: %w", label, e.err)
	}
	return stored{e.tp, r.Rev}, nil
}

// audit describes a change for its log line.
type audit struct {
	action  string   // put, revoke, unrestrict, allow, remove, suspend, resume, promote, expire, import
	entries []string // the allow entries the change concerns, if any
	source  string   // admin, cli, expiry, console
	remote  string   // the caller's address, through the routes
	user    string   // who made it, through the console: {http.auth.user.id}
}

// errUnchanged says an update would change nothing: it is not kept, and
// the caller answers with the entry as it is.
var errUnchanged = errors.New("unchanged")

// update changes label's entry: fn gets the entry in force (nil when the
// label has none) and returns the entry to keep, or nil to remove it
// entirely. The change is checked against the rules and against every
// handler using the store (their config's labels and tokens win), kept
// durably, and published to each of them before update returns; if any
// step refuses it, nothing changes. cond is checked against the entry's
// revision. It returns the entry kept and whether it is new.
func (s *fileStore) update(label string, cond tokenstore.Cond, a audit, fn func(cur *TokenPolicy) (*TokenPolicy, error)) (kept stored, created bool, err error) {
	if err := labelRule(label); err != nil {
		return stored{}, false, &ConfigError{Token: label, Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	eng, err := s.engine()
	if err != nil {
		return stored{}, false, err
	}
	var cur *TokenPolicy
	var rev uint64
	switch old, err := s.get(label); {
	case err == nil:
		// An entry stored with a range twice (before the duplicate rule)
		// is edited as one entry of each range.
		cur, rev = mergeDuplicates(&old.tp), old.rev
	case errors.Is(err, tokenstore.ErrNotFound):
	default:
		return stored{}, false, err
	}
	hs := s.users()
	if cur == nil {
		// A label a config lists is no store entry to edit: say where
		// it is, rather than that the store has none.
		for _, h := range hs {
			if err := checkChange(h.current.Load(), label, nil, h.storeWhere()); err != nil {
				return stored{}, false, err
			}
		}
	}
	if err := cond.Check(label, rev, cur != nil); err != nil {
		return stored{}, false, fmt.Errorf("token %q: %w", label, tokenstore.ErrPrecondition)
	}
	prev := digestOnlyCopy(cur)
	next, err := fn(cur)
	if errors.Is(err, errUnchanged) {
		return stored{*cur, rev}, false, nil
	}
	if err != nil {
		return stored{}, false, err
	}
	if next != nil {
		// An edit may leave an entry's allow list empty: it stays
		// listed, refused everywhere. An entry written whole (a new one,
		// a PUT) may not be empty.
		edit := cur != nil && a.action != "put"
		if edit {
			next = mergeDuplicates(next) // as promote may add a range listed otherwise
		} else if err := refuseDuplicates(label, next); err != nil {
			return stored{}, false, err
		}
		if err := checkWritten(label, next, edit); err != nil {
			return stored{}, false, err
		}
	}
	write := func(tp *TokenPolicy) error {
		if tp == nil {
			return eng.Delete(label, tokenstore.Cond{IfRev: rev})
		}
		data, err := json.Marshal(tp)
		if err != nil {
			return err
		}
		digest, err := ParseDigest(tp.TokenSHA256)
		if err != nil {
			return &ConfigError{Token: label, Err: err}
		}
		c := tokenstore.Cond{IfRev: rev, IfAbsent: cur == nil}
		newRev, err := eng.Put(tokenstore.Record{Label: label, Digest: digest, Data: data}, c)
		if err != nil {
			return err
		}
		kept = stored{*tp, newRev}
		return nil
	}
	if err := applyAll(hs, label, next, write); err != nil {
		if errors.Is(err, tokenstore.ErrDigestFixed) {
			err = fmt.Errorf("token %q: a label's token cannot change; use a new label, or remove this one first with DELETE ?unrestrict=true (a plain DELETE revokes it and keeps its token bound to it)", label)
			err = &digestFixedError{err}
		}
		return stored{}, false, err
	}
	logChange(s.logger, s.Name(), label, a, prev, next)
	s.owners.changed(label, prev, next)
	if cur == nil {
		// A new token under this label: what was observed or refused
		// under it belongs to an earlier token, or to none.
		s.forgetLabel(label)
	}
	return kept, cur == nil, nil
}

// digestFixedError is tokenstore.ErrDigestFixed, told the way the routes
// and the CLI undo it.
type digestFixedError struct{ error }

func (digestFixedError) Is(target error) bool { return target == tokenstore.ErrDigestFixed }

// applyAll applies one change to every handler in hs, then keeps it with
// write: each handler checks and compiles it, holding its lock, the last
// one writes, and each publishes on the way back. A handler that refuses
// the change stops it before anything is kept or published.
func applyAll(hs []*Handler, label string, tp *TokenPolicy, write func(*TokenPolicy) error) error {
	if len(hs) == 0 {
		return write(digestOnlyCopy(tp))
	}
	return hs[0].applyToken(label, tp, func(kept *TokenPolicy) error {
		return applyAll(hs[1:], label, kept, write)
	})
}

// logChange writes the audit line of one change. It never names the token:
// neither the token nor its digest.
func logChange(logger *zap.Logger, store, label string, a audit, prev, next *TokenPolicy) {
	fields := []zap.Field{
		zap.String("token_label", label),
		zap.String("action", a.action),
		zap.String("source", a.source),
		zap.String("store", store),
	}
	if len(a.entries) > 0 {
		fields = append(fields, zap.Strings("entries", a.entries))
	}
	if a.remote != "" {
		fields = append(fields, zap.String("remote_ip", a.remote))
	}
	if a.user != "" {
		fields = append(fields, zap.String("user_id", a.user))
	}
	if prev != nil && next != nil {
		added, removed := diffEntries(prev.Allow, next.Allow)
		if len(added) > 0 {
			fields = append(fields, zap.Strings("allow_added", added))
		}
		if len(removed) > 0 {
			fields = append(fields, zap.Strings("allow_removed", removed))
		}
	}
	logger.Info("token changed", fields...)
}

// diffEntries says which entries of b are not in a, and of a not in b.
func diffEntries(a, b []string) (added, removed []string) {
	for _, e := range b {
		if !slices.Contains(a, e) {
			added = append(added, e)
		}
	}
	for _, e := range a {
		if !slices.Contains(b, e) {
			removed = append(removed, e)
		}
	}
	return added, removed
}

// entryChecker is checkStoreEntry for many entries: one compiler, whose
// table is started again every storeImportBatch entries so that it never
// holds a whole import.
type entryChecker struct {
	c *compiler
	n int
}

func newEntryChecker() (*entryChecker, error) {
	c, err := newCompiler(&Handler{}, nil, storeImportBatch)
	if err != nil {
		return nil, err
	}
	c.origin = originWriter
	return &entryChecker{c: c}, nil
}

func (k *entryChecker) entry(label string, tp *TokenPolicy) error {
	if k.n++; k.n%storeImportBatch == 0 {
		k.c.b = newTableBuilder(storeImportBatch)
	}
	return k.c.addToken(label, tp, "the store")
}

// storeImportBatch is how many entries an import checks against the
// store in one read transaction.
const storeImportBatch = tokenstore.MaxBatch

// importTokens writes a tokens file's entries, all or nothing, then
// rebuilds every handler once: one change at a time would merge the
// overlay a thousand times over. entries is called twice. The first pass
// checks every entry as a PUT would be checked (the rules, every
// handler's config, the store's labels and tokens, a label or token given
// twice in the import) and writes nothing; the second writes them all in
// one transaction, in which the store checks its own rules again. So an
// entry that is refused refuses the import, and nothing of it is kept.
//
// The first pass runs without s.mu: changes to other labels go on while a
// large file is checked. The write and the rebuild hold it, and the write
// is one transaction, so a change to a label the import writes is made
// wholly before the import or after it, never between its entries; one
// made during the check that the import then clashes with (a token taken
// meanwhile) refuses the import, with nothing kept.
func (s *fileStore) importTokens(entries func(fn func(label string, tp *TokenPolicy) error) error, a audit) (imported, replaced int, err error) {
	eng, err := s.engine()
	if err != nil {
		return 0, 0, err
	}
	hs := s.users()
	views := make([]*view, len(hs))
	for i, h := range hs {
		views[i] = h.current.Load()
	}
	check, err := newEntryChecker()
	if err != nil {
		return 0, 0, err
	}
	seen := map[string]struct{}{}
	digests := map[[32]byte]string{}
	var imports []string // the labels imported, while few enough to apply alone
	batch := make([]tokenstore.Record, 0, storeImportBatch)
	checkBatch := func() error {
		n, err := eng.CheckBatch(batch)
		if err != nil {
			return err
		}
		replaced += n
		batch = batch[:0]
		return nil
	}
	// sum is what the first pass read, which the second must read again:
	// a tokens file changed between the two is refused, not half checked.
	var sum, again importSum
	err = entries(func(label string, tp *TokenPolicy) error {
		if _, dup := seen[label]; dup {
			return &ConfigError{Token: label, Err: errors.New("label given twice in the import")}
		}
		seen[label] = struct{}{}
		if err := check.entry(label, tp); err != nil {
			return err
		}
		for i, v := range views {
			if err := checkChange(v, label, tp, hs[i].storeWhere()); err != nil {
				return err
			}
		}
		r, err := importRecord(label, tp)
		if err != nil {
			return err
		}
		if other, dup := digests[r.Digest]; dup {
			return &ConfigError{Token: label, Err: fmt.Errorf("same token as %q in the import; a token can have one label only", other)}
		}
		digests[r.Digest] = label
		sum.add(r)
		if len(imports) <= overlayMergeNow {
			imports = append(imports, label) // past the bound, only counted
		}
		if batch = append(batch, r); len(batch) == storeImportBatch {
			return checkBatch()
		}
		return nil
	})
	if err == nil {
		err = checkBatch()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w (nothing was imported)", err)
	}
	clear(seen)
	clear(digests)

	s.mu.Lock()
	defer s.mu.Unlock()
	// A handler that joined during the check (a reload) read the store
	// before this write: it is rebuilt too.
	hs = s.users()
	err = eng.PutAll(func(put func(tokenstore.Record) error) error {
		err := entries(func(label string, tp *TokenPolicy) error {
			r, err := importRecord(label, tp)
			if err != nil {
				return err
			}
			again.add(r)
			if again.n > sum.n {
				return errImportChanged
			}
			if err := put(r); err != nil {
				return fmt.Errorf("token %q: %w", label, err)
			}
			return nil
		})
		if err == nil && again != sum {
			err = errImportChanged // in the transaction: nothing is kept
		}
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%w (nothing was imported)", err)
	}
	imported = sum.n
	if imported > 0 {
		s.owners.reset()
		for _, h := range hs {
			if rerr := h.reloadStore("token store import"); rerr != nil {
				// The entries are kept: put them in force one by one,
				// in the overlay, as changes; too many for that, say so.
				if aerr := h.applyImported(eng, imports); aerr != nil {
					err = errors.Join(err, fmt.Errorf("the %d entries are stored, but not in force: the handler's config did not build again (%v), and %v", imported, rerr, aerr))
				}
			}
		}
		s.logger.Info("token changed", zap.String("action", a.action), zap.String("source", a.source),
			zap.String("store", s.Name()), zap.Int("tokens", imported), zap.String("remote_ip", a.remote))
	}
	return imported, replaced, err
}

// importRecord is an import's entry as stored: digest only.
func importRecord(label string, tp *TokenPolicy) (tokenstore.Record, error) {
	kept := digestOnlyCopy(tp)
	digest, err := ParseDigest(kept.TokenSHA256)
	if err != nil {
		return tokenstore.Record{}, &ConfigError{Token: label, Err: err}
	}
	data, err := json.Marshal(kept)
	if err != nil {
		return tokenstore.Record{}, err
	}
	return tokenstore.Record{Label: label, Digest: digest, Data: data}, nil
}

// importSum sums what an import's pass read: its count, and a hash of its
// records.
type importSum struct {
	n   int
	sum [32]byte
}

func (s *importSum) add(r tokenstore.Record) {
	h := sha256.New()
	h.Write(s.sum[:])
	h.Write([]byte(r.Label))
	h.Write([]byte{0})
	h.Write(r.Digest[:])
	h.Write(r.Data)
	h.Sum(s.sum[:0])
	s.n++
}

// errImportChanged: the tokens file read twice did not read the same.
var errImportChanged = errors.New("the tokens file changed while it was imported")

// export writes every entry as a tokens file: a JSON object of label to
// entry, as stored (digests only), in label order, reading the store in
// bounded transactions.
func (s *fileStore) export(w interface{ Write([]byte) (int, error) }) error {
	eng, err := s.engine()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte("{")); err != nil {
		return err
	}
	first := true
	var buf bytes.Buffer
	err = eng.Scan(func(r tokenstore.Record) error {
		buf.Reset()
		if !first {
			buf.WriteString(",")
		}
		first = false
		buf.WriteString("\n  ")
		l, _ := json.Marshal(r.Label)
		buf.Write(l)
		buf.WriteString(": ")
		if err := json.Compact(&buf, r.Data); err != nil {
			return fmt.Errorf("token %q: %w", r.Label, err)
		}
		_, err := w.Write(buf.Bytes())
		return err
	})
	if err != nil {
		return err
	}
	_, err = w.Write([]byte("\n}\n"))
	return err
}

// applyImported puts imported entries in force through the overlay, when
// a full build cannot: labels are the entries imported, read back from eng.
func (h *Handler) applyImported(eng *tokenstore.File, labels []string) error {
	if len(labels) > overlayMergeNow {
		return fmt.Errorf("more than %d, too many to apply one by one", overlayMergeNow)
	}
	for _, label := range labels {
		r, err := eng.Get(label)
		if err != nil {
			return err
		}
		e := decodeEntry(string(r.Data))
		if e.err != nil {
			return fmt.Errorf("token %q: %w", label, e.err)
		}
		if err := h.apply(label, &e.tp, originStore, nil); err != nil {
			return err
		}
	}
	return nil
}

// reloadStore rebuilds the handler from its config and the store, as a
// watched file does, and publishes it.
func (h *Handler) reloadStore(why string) error {
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	began := time.Now()
	t, err := h.build()
	if err != nil {
		h.logger.Error("rebuilding from the token store failed; the tokens in force keep serving", zap.String("after", why), zap.Error(err))
		return err
	}
	h.publishBuild(t)
	h.logger.Info("tokens from the token store applied", zap.String("after", why),
		zap.Int("tokens", len(t.policies)), zap.Duration("took", time.Since(began)))
	return nil
}

// openFileStore joins the handler to its file store, creating the pool
// entry on first use. The file itself is opened when the config starts
// (storeApp), or at once where there is no http app to start.
func (h *Handler) openFileStore(ctx caddy.Context) error {
	path := h.Store.File
	if path == "" {
		path = defaultStoreFile()
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("store file %q: %w", path, err)
	}
	name := h.Store.Name
	if err := CheckStoreName(name); err != nil {
		return fmt.Errorf("store name %w", err)
	}
	if name == "" {
		name = defaultStoreName
	}
	v, _, err := fileStores.LoadOrNew(abs, func() (caddy.Destructor, error) {
		return newFileStore(abs, name, h.logger), nil
	})
	if err != nil {
		return err
	}
	s := v.(*fileStore)
	// A reload may rename the store: the new config's name is the one
	// the routes answer to from now on.
	s.name.Store(&name)
	h.fileStore = s
	h.storeEntries = s.entries
	// Provision joins the handler to the store once its first view is
	// published.
	return startWithConfig(ctx, fileStoreAppID, s)
}

// closeFileStore leaves the store; the last handler to leave closes it.
func (h *Handler) closeFileStore() error {
	s := h.fileStore
	if s == nil || h.fileStoreLeft {
		return nil
	}
	// h.fileStore stays set: requests still in flight read it (their
	// refusals name their store) while the config is let go of.
	h.fileStoreLeft = true
	s.leave(h)
	_, err := fileStores.Delete(s.path)
	return err
}

// followFileStore rebuilds the handler once its store has opened, if it
// was provisioned before: until then its view refuses every token the
// config does not list, and requests wait for this (waitForStore).
func (h *Handler) followFileStore(ctx caddy.Context, s *fileStore) {
	select {
	case <-ctx.Done():
		return
	case <-s.opened:
	}
	h.rebuild.Lock()
	loaded := h.builtLoaded
	h.rebuild.Unlock()
	if !loaded {
		_ = h.reloadStore("token store opened") // logged
	}
}

// storesNamed are the open file stores named name ("" or default: the
// default name), for the routes.
func storesNamed(name string) []*fileStore {
	if name == "" {
		name = defaultStoreName
	}
	var out []*fileStore
	fileStores.Range(func(_, v any) bool {
		if s := v.(*fileStore); s.Name() == name {
			out = append(out, s)
		}
		return true
	})
	return out
}

// storeNames lists the names of the open file stores.
func storeNames() []string {
	var out []string
	fileStores.Range(func(_, v any) bool {
		out = append(out, v.(*fileStore).Name())
		return true
	})
	slices.Sort(out)
	return slices.Compact(out)
}

func init() {
	caddy.RegisterModule(&storeApp{id: fileStoreAppID})
}

// starter is a store that connects or opens when its config starts.
type starter interface{ start() error }

// storeApp is the app that starts the stores a config's handlers use, when
// the config starts: never under caddy validate, which only provisions, so
// that it neither connects to Redis nor takes a store file's lock. One
// type serves the Redis stores (redisAppID) and the file stores
// (fileStoreAppID); a handler loads its app, which has nothing to
// configure.
type storeApp struct {
	id     caddy.ModuleID
	mu     sync.Mutex
	stores []starter
}

// CaddyModule returns the Caddy module information.
func (a *storeApp) CaddyModule() caddy.ModuleInfo {
	id := a.id
	return caddy.ModuleInfo{
		ID:  id,
		New: func() caddy.Module { return &storeApp{id: id} },
	}
}

func (a *storeApp) add(s starter) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Contains(a.stores, s) {
		a.stores = append(a.stores, s)
	}
}

// Start starts each store not started by an earlier config.
func (a *storeApp) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.stores {
		if err := s.start(); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops nothing: a store lives while a config uses it (its pool).
func (a *storeApp) Stop() error { return nil }

var _ caddy.App = (*storeApp)(nil)

// startWithConfig starts s when the config of ctx starts, through the app
// id; without a config to start (a bare context, as in tests), now.
func startWithConfig(ctx caddy.Context, id caddy.ModuleID, s starter) error {
	if _, err := ctx.AppIfConfigured("http"); err != nil {
		return s.start()
	}
	app, err := ctx.App(string(id))
	if err != nil {
		return err
	}
	app.(*storeApp).add(s)
	return nil
}

// digestHex is a digest as stored: 64 lowercase hex digits.
func digestHex(d [32]byte) string { return hex.EncodeToString(d[:]) }

// forgetLabel drops the observed addresses, the recent refusals and the
// leak alert kept under label, for a new entry that takes it.
func (s *fileStore) forgetLabel(label string) {
	forgetRefusals(s, label)
	leakAlerts.Delete(leakKey{s, label})
	s.forgetLeaks(label)
	observedPool.Range(func(_, v any) bool {
		v.(*observedAddrs).forget(label)
		return false
	})
}

// forgetLeaks drops the leak_alert count of label in every handler using
// the store: its token is new, or resumed, and counted afresh.
func (s *fileStore) forgetLeaks(label string) {
	for _, h := range s.users() {
		h.leaks.forget(label)
	}
}
