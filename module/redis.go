package ipallowlist

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisSource is a token store shared by many Caddy nodes. Tokens live in a
// Redis hash, <key_prefix>entries, keyed by label, each value a JSON object
// of the same shape as a tokens_file entry, beside a digest index of token
// to label (see redisKeys). Every node holds all of them in
// memory, so Redis is never on a request's path: changes arrive on the
// channel <key_prefix>changes, each handler compiles a whole new table and
// publishes a view of it, and a periodic resync repairs what a node missed.
type RedisSource struct {
	// host:port of the Redis server, or one {env.NAME} placeholder
	// resolved at provision (refused when unset). Required: there is no
	// default, so a missing address is never some other Redis.
	Address string `json:"address,omitempty"`
	// ACL user name, if the server uses ACLs.
	Username string `json:"username,omitempty"`
	// The password, normally a placeholder such as {env.REDIS_PASSWORD},
	// resolved at provision.
	Password string `json:"password,omitempty"`
	// The database number. Default 0.
	DB int `json:"db,omitempty"`
	// Prefix of the keys used: <prefix>entries (hash of label to entry),
	// <prefix>digests (hash of token digest to label), <prefix>schema,
	// <prefix>version (bumped on every change), the channel
	// <prefix>changes, and <prefix>tokens (the previous release's entries,
	// read while there is no schema key). Default "ip_allowlist:".
	KeyPrefix string `json:"key_prefix,omitempty"`
	// Connect with TLS. Absent: plain TCP.
	TLS *RedisTLS `json:"tls,omitempty"`
	// A file the node keeps a copy of the store in (a tokens_file). If
	// Redis cannot be reached at start, the node starts from this copy
	// instead of failing. Default: none.
	Snapshot string `json:"snapshot,omitempty"`
	// How often to compare the store's version with the node's, and load
	// the whole store when they differ. Default 30s.
	Resync caddy.Duration `json:"resync,omitempty"`
}

// RedisTLS is the TLS client configuration for Redis.
type RedisTLS struct {
	// The name to verify the server's certificate for. Default: the host
	// of address.
	ServerName string `json:"server_name,omitempty"`
	// A PEM file of CA certificates to verify the server with. Default:
	// the system's roots.
	CAFile string `json:"ca_file,omitempty"`
}

// Defaults of the redis source. DefaultRedisAddress is the tokens
// command's --redis default only: the source itself requires an address.
const (
	DefaultRedisAddress = "127.0.0.1:6379"
	DefaultKeyPrefix    = "ip_allowlist:"
	defaultResync       = 30 * time.Second
)

// redisKeys are the names a store uses under its prefix.
type redisKeys struct {
	// Tokens is the hash of label to entry (schema 2).
	Tokens string
	// Digests is the hash of token digest (64 hex digits) to label: which
	// label a token belongs to, written in the same transaction as each
	// entry. It lets a node refuse the token of an entry it cannot read,
	// and tells the rightful label when two entries claim one token.
	Digests string
	// Schema holds the store's schema number; absent: schema 1, whose
	// entries are in Legacy.
	Schema string
	// Legacy is schema 1's hash of label to entry, read by nodes of the
	// previous release, which refuse fields they do not know (revoked).
	// It is left as it was when the store moved to schema 2.
	Legacy string
	// Version is bumped on every change; Changes is the channel of labels.
	Version, Changes string
}

// storeSchema is the schema this release reads and writes.
const storeSchema = 2

// keysFor returns the key names under prefix ("" for the default).
func keysFor(prefix string) redisKeys {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return redisKeys{
		Tokens:  prefix + "entries",
		Digests: prefix + "digests",
		Schema:  prefix + "schema",
		Legacy:  prefix + "tokens",
		Version: prefix + "version",
		Changes: prefix + "changes",
	}
}

// redisOptions returns the client options for src after resolving its
// password with repl. It checks the source but does not connect.
func redisOptions(src *RedisSource, repl *caddy.Replacer) (*redis.Options, error) {
	if err := CheckRedisSource(src); err != nil {
		return nil, err
	}
	addr := src.Address
	var err error
	if isPlaceholder(addr) {
		if repl == nil {
			return nil, fmt.Errorf("address %q: want host:port", addr)
		}
		if addr, err = repl.ReplaceOrErr(addr, true, true); err != nil {
			return nil, fmt.Errorf("address %s: %w", src.Address, err)
		}
		if _, _, err := splitHostPort(addr); err != nil {
			return nil, fmt.Errorf("address %s: %w", src.Address, err)
		}
	}
	host, _, _ := splitHostPort(addr)
	password := src.Password
	if strings.Contains(password, "{") && repl != nil {
		// An unset variable is no password; an unknown placeholder is a mistake.
		if password, err = repl.ReplaceOrErr(password, false, true); err != nil {
			return nil, fmt.Errorf("password: %w", err)
		}
	}
	opts := &redis.Options{
		Addr:     addr,
		Username: src.Username,
		Password: password,
		DB:       src.DB,
		// Fail fast: a node must not hang at start or on a dead server;
		// the resync and the subscriber retry on their own.
		DialTimeout:  2 * time.Second,
		ReadTimeout:  5 * time.Second,
		WriteTimeout: 5 * time.Second,
		MaxRetries:   1,
		// The store keeps its own state: never the RESP3 client-side cache.
		Protocol:        2,
		DisableIdentity: true,
	}
	if src.TLS != nil {
		cfg := &tls.Config{ServerName: src.TLS.ServerName, MinVersion: tls.VersionTLS12}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		if src.TLS.CAFile != "" {
			pem, err := os.ReadFile(src.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls ca_file: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls ca_file %q: no PEM certificates", src.TLS.CAFile)
			}
		}
		opts.TLSConfig = cfg
	}
	return opts, nil
}

// CheckRedisSource checks what can be checked of src without placeholders,
// files or the network.
func CheckRedisSource(src *RedisSource) error {
	switch {
	case src.Address == "":
		return errors.New("address: required, as host:port or {env.REDIS_ADDR}; there is no default")
	case isPlaceholder(src.Address):
		if !strings.HasPrefix(src.Address, "{env.") {
			return fmt.Errorf("address %q: the only placeholder taken is {env.NAME}", src.Address)
		}
	default:
		if _, _, err := splitHostPort(src.Address); err != nil {
			return fmt.Errorf("address %q: %w", src.Address, err)
		}
	}
	if src.DB < 0 {
		return fmt.Errorf("db %d: must be 0 or more", src.DB)
	}
	if src.Resync < 0 {
		return errors.New("resync: must be positive")
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, errors.New("want host:port")
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, errors.New("want host:port with a port from 1 to 65535")
	}
	return host, port, nil
}

// redisEntry is one token of the store: its JSON as stored, and decoded.
type redisEntry struct {
	raw string
	tp  TokenPolicy
	err error // the JSON does not decode, strictly
	// The token the entry claims, where the entry itself says it: its
	// token_sha256 (or literal token), read even from an entry that does
	// not decode strictly, such as one with fields this node does not know.
	claim   [32]byte
	claimed bool
}

// decodeEntry decodes an entry strictly: fields this node does not know,
// or data after the object, make it a bad entry. Entries in the form the
// CLI writes take a fast path (decodeCanonical) that decodes them alike.
func decodeEntry(raw string) *redisEntry {
	e := &redisEntry{raw: raw}
	if decodeCanonical(raw, &e.tp) {
		e.claimFrom(&e.tp)
		return e
	}
	return decodeStrict(raw)
}

// decodeStrict is decodeEntry with encoding/json, for every entry.
func decodeStrict(raw string) *redisEntry {
	e := &redisEntry{raw: raw}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e.tp); err != nil {
		e.err = jsonErr(err)
	} else if _, err := dec.Token(); err != io.EOF {
		// dec.More is false before a stray } or ], so only io.EOF
		// proves nothing follows the object.
		e.err = errors.New("data after the JSON object")
	}
	tp := e.tp
	if e.err != nil {
		// Read what the entry says of its token, leniently, so that its
		// token is refused rather than unlisted.
		tp = TokenPolicy{}
		var probe struct {
			Token       string `json:"token"`
			TokenSHA256 string `json:"token_sha256"`
		}
		if json.Unmarshal([]byte(raw), &probe) != nil {
			_ = json.NewDecoder(strings.NewReader(raw)).Decode(&probe) // trailing data
		}
		tp.Token, tp.TokenSHA256 = probe.Token, probe.TokenSHA256
	}
	e.claimFrom(&tp)
	return e
}

// claimFrom sets the token the entry claims, from what tp says of it.
func (e *redisEntry) claimFrom(tp *TokenPolicy) {
	switch {
	case tp.TokenSHA256 != "":
		d, err := ParseDigest(tp.TokenSHA256)
		e.claim, e.claimed = d, err == nil
	case tp.Token != "" && !isPlaceholder(tp.Token):
		e.claim, e.claimed = sha256.Sum256([]byte(tp.Token)), true
	}
}

// labeledEntry is an entry with its label, as compileShared takes them, and
// the token it stands for (see redisStore.list).
type labeledEntry struct {
	label string
	*redisEntry
	d   [32]byte
	dOK bool
}

// digest is the token the entry stands for, where it can be known: from
// the entry itself, even one that is otherwise bad, or else from the
// store's digest index. It is unknown for an entry that lost a conflict:
// the token is another label's, which keeps it.
func (e labeledEntry) digest() ([32]byte, bool) {
	return e.d, e.dOK
}

// redisStore is one node's copy of a Redis token store. Handlers of every
// loaded config that name the same store share it (it lives in a
// caddy.UsagePool), so a reload neither reloads the store nor needs Redis
// to be up.
type redisStore struct {
	keys     redisKeys
	addr     string
	snapshot string
	resync   time.Duration
	client   *redis.Client
	pubsub   *redis.PubSub
	logger   *zap.Logger

	mu      sync.Mutex
	entries map[string]*redisEntry
	index   map[[32]byte]string // the store's digest index: token -> label
	byLabel map[string][32]byte // index reversed (one token a label)
	gen     uint64              // bumped on every change of entries
	subs    map[chan struct{}]*pending
	// contested are the tokens two or more entries claim, as the last
	// list found them: a change to one of their entries may hand the
	// token to another, which only a full build decides.
	contested map[[32]byte]struct{}

	// Owned by run's goroutine.
	version    int64 // of entries; -1 unknown (snapshot, bad version key, missed change): sync loads all
	down       time.Time
	dataLoss   bool
	badVersion bool // the version key holds no integer (logged once)
	badSchema  bool // the store's schema is newer than this node's (logged once)
	dirtySnap  bool
	lastFull   time.Time // of the last load of the whole store
	fullDue    bool      // a * message waits, until fullAt, for a load
	fullAt     time.Time
	fullLoads  atomic.Int64
	noScan     atomic.Bool // HSCAN was refused (logged once)

	startOnce sync.Once
	startErr  error
	loaded    atomic.Bool
	running   bool // run was started (set within startOnce)
	closed    bool // Destruct ran; under mu
	cancel    context.CancelFunc
	done      chan struct{}
}

var redisStores = caddy.NewUsagePool()

// redisStoreKey names a store by everything that makes it a different
// connection or a different copy.
func redisStoreKey(opts *redis.Options, src *RedisSource) string {
	pw := sha256.Sum256([]byte(opts.Password))
	tlsOn, sn, ca := false, "", ""
	if src.TLS != nil {
		tlsOn, sn, ca = true, src.TLS.ServerName, src.TLS.CAFile
	}
	return fmt.Sprintf("%s|%s|%s|%d|%s|%t|%s|%s|%s|%d", opts.Addr, opts.Username, hex.EncodeToString(pw[:8]),
		opts.DB, keysFor(src.KeyPrefix).Tokens, tlsOn, sn, ca, src.Snapshot, src.Resync)
}

// newRedisStore makes a node's copy of a store, empty and not yet
// connected: start connects. Nothing here touches the network or the
// snapshot file, so caddy validate, which provisions but never starts,
// needs neither.
func newRedisStore(opts *redis.Options, src *RedisSource, logger *zap.Logger) *redisStore {
	useZapForRedis()
	s := &redisStore{
		keys:     keysFor(src.KeyPrefix),
		addr:     opts.Addr,
		snapshot: src.Snapshot,
		resync:   time.Duration(src.Resync),
		client:   redis.NewClient(opts),
		logger:   logger.With(zap.String("redis", opts.Addr)),
		entries:  map[string]*redisEntry{},
		index:    map[[32]byte]string{},
		byLabel:  map[string][32]byte{},
		subs:     map[chan struct{}]*pending{},
		version:  -1,
		done:     make(chan struct{}),
	}
	if s.resync == 0 {
		s.resync = defaultResync
	}
	return s
}

// start connects, subscribes and loads the whole store, once; later calls
// return the first one's result. If Redis cannot be reached and a snapshot
// file is configured, it starts from the snapshot and keeps trying in the
// background.
func (s *redisStore) start() error {
	s.startOnce.Do(func() { s.startErr = s.connect() })
	return s.startErr
}

func (s *redisStore) connect() error {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return errors.New("redis store closed before it started")
	}
	s.cancel = cancel
	s.mu.Unlock()

	start, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	// Subscribe before loading, so no change falls between the two.
	s.pubsub = s.client.Subscribe(ctx, s.keys.Changes)
	_, err := s.pubsub.Receive(start)
	if err == nil {
		// Redis answered: the load takes as long as the store's size
		// needs, each read bounded by the client's read timeout.
		load, stop := context.WithTimeout(ctx, startLoad)
		err = s.loadAll(load)
		stop()
	}
	if err != nil {
		cause := err.Error()
		if isAuthError(err) {
			cause = authMessage(err)
		}
		if s.snapshot == "" {
			s.close()
			return fmt.Errorf("redis %s unreachable at start: %s; configure a snapshot file to start from the last copy instead", s.addr, cause)
		}
		entries, serr := readSnapshot(s.snapshot)
		if serr != nil {
			s.close()
			return fmt.Errorf("redis %s unreachable at start: %s; and the snapshot file: %v", s.addr, cause, serr)
		}
		s.mu.Lock()
		s.entries = entries
		s.mu.Unlock()
		s.down = time.Now()
		if isAuthError(err) {
			s.logger.Error(authMessage(err)+"; serving the snapshot file until it is accepted",
				zap.String("snapshot", s.snapshot), zap.Int("tokens", len(entries)))
		} else {
			s.logger.Warn("redis unreachable at start; serving the snapshot file until it returns",
				zap.String("snapshot", s.snapshot), zap.Int("tokens", len(entries)), zap.Error(err))
		}
	} else {
		s.writeSnapshot()
	}
	s.loaded.Store(true)
	s.changed(allLabels) // handlers built before the first load rebuild now
	s.running = true
	go s.run(ctx)
	return nil
}

// startLoad bounds the first load of a store that answered at start.
const startLoad = 2 * time.Minute

// isLoaded reports whether the store has loaded, from Redis or the
// snapshot. Until it has, a handler refuses every token that is not in its
// config (Handler.build): an empty copy must not make the store's tokens
// unlisted.
func (s *redisStore) isLoaded() bool { return s.loaded.Load() }

// Destruct stops the store when no loaded config uses it any more.
func (s *redisStore) Destruct() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.startOnce.Do(func() { s.startErr = errors.New("never started") })
	if !s.running {
		if s.cancel == nil { // never connected (caddy validate)
			_ = s.client.Close()
		}
		return nil
	}
	s.cancel()
	<-s.done
	return nil
}

func (s *redisStore) close() {
	s.cancel()
	if s.pubsub != nil {
		_ = s.pubsub.Close()
	}
	_ = s.client.Close()
}

// fullLoadEvery bounds how often a * message loads the whole store, and
// idleFullLoadEvery how often it does when the store's version is the
// node's: a flood of them costs one load every 10 s, and the last one is
// always applied.
const (
	fullLoadEvery     = time.Second
	idleFullLoadEvery = 10 * time.Second
)

// sameVersion reports whether the store's version is known to be the
// node's; an error says no.
func (s *redisStore) sameVersion(ctx context.Context) bool {
	v, err := s.client.Get(ctx, s.keys.Version).Result()
	return err == nil && s.version >= 0 && v == strconv.FormatInt(s.version, 10)
}

// loadAll replaces the entries with the whole store. A store equal to
// the node's copy tells no handler to rebuild.
//
// The hashes are read in chunks (HSCAN), each entry decoded as its chunk
// arrives, on every core, so that no one reply holds the whole store
// (one HGETALL of 1,000,000 entries outlasts the read timeout) and an
// entry as the node has it is not decoded again. A scan is not one
// transaction: an entry written meanwhile may be read before or after
// its change, but every change also bumps the version and publishes its
// label, which is applied after the load, and the version kept is the
// one read before the scan, so a change written without a message is
// loaded again at the next resync.
func (s *redisStore) loadAll(ctx context.Context) error {
	s.lastFull = time.Now()
	s.fullDue = false
	s.fullLoads.Add(1)
	var ver, schema *redis.StringCmd
	var legacy *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ver = p.Get(ctx, s.keys.Version)
		schema = p.Get(ctx, s.keys.Schema)
		legacy = p.Exists(ctx, s.keys.Legacy)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	// The sizes only make room in advance: an ACL without HLEN costs
	// the maps' growth, nothing more.
	var size, indexSize *redis.IntCmd
	_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		size = p.HLen(ctx, s.keys.Tokens)
		indexSize = p.HLen(ctx, s.keys.Digests)
		return nil
	})
	entriesKey, ok := s.checkSchema(schema, legacy)
	if !ok {
		return nil
	}
	version := s.parseVersion(ver)
	var index map[[32]byte]string
	indexed := make(chan error, 1)
	go func() {
		var err error
		index, err = s.scanIndex(ctx, int(indexSize.Val()))
		indexed <- err
	}()
	entries, err := s.scanEntries(ctx, entriesKey, int(size.Val()))
	if ierr := <-indexed; err == nil {
		err = ierr
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	have := len(s.entries)
	s.mu.Unlock()
	if version == versionMissing && len(entries) == 0 && have > 0 {
		// A store with no version and no tokens, where this node has
		// tokens: Redis lost its data (restarted without persistence),
		// or the prefix is wrong. Dropping every token would make them
		// all unlisted, so keep them and say so.
		s.version = -1 // whatever is written next, load it all
		if !s.dataLoss {
			s.logger.Error("redis holds no tokens and no version key; keeping the tokens in force instead of dropping them all (was its data lost?)",
				zap.String("key", s.keys.Version), zap.Int("tokens", have))
			s.dataLoss = true
		}
		return nil
	}
	s.dataLoss = false
	s.mu.Lock()
	// Unchanged entries are the node's own (scanEntries reuses them).
	same := len(entries) == len(s.entries) && maps.Equal(index, s.index) &&
		maps.EqualFunc(entries, s.entries, func(a, b *redisEntry) bool { return a == b })
	if !same {
		s.entries, s.index, s.byLabel = entries, index, reverseIndex(index)
	}
	s.mu.Unlock()
	s.version = max(version, -1)
	if !same {
		if s.loaded.Load() {
			// Before the first load, connect tells the handlers once
			// it has said the store has loaded: a build before that
			// would compile every entry for nothing.
			s.changed(allLabels)
		}
		s.dirtySnap = true
	}
	return nil
}

// scanCount is how many fields one HSCAN asks for: a reply of about 1.5 MB
// with entries of 150 bytes.
const scanCount = 10_000

// scan reads the hash key in chunks, calling fn with each chunk's fields
// and values, in turn, from one goroutine.
func (s *redisStore) scan(ctx context.Context, key string, fn func(kv []string)) error {
	var cursor uint64
	for {
		kv, next, err := s.client.HScan(ctx, key, cursor, "", scanCount).Result()
		if err != nil && cursor == 0 && strings.HasPrefix(err.Error(), "NOPERM") {
			// An ACL written for the previous release: read it whole.
			if !s.noScan.Swap(true) {
				s.logger.Warn("the redis user may not run HSCAN: loading the store with one HGETALL, which a large store can outlast the read timeout with; "+
					"add +hscan +hlen to its ACL (see the README's Security section)", zap.String("key", key))
			}
			kv, err = s.client.Do(ctx, "HGETALL", key).StringSlice()
			if err == nil {
				fn(kv)
			}
			return err
		}
		if err != nil {
			return err
		}
		fn(kv)
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// scanEntries reads the hash key of entries, about size of them, decoding
// each on one of the cores while the next chunk is read. An entry whose
// JSON is the one the node holds is kept, not decoded again. It reads
// s.entries without s.mu: only run's goroutine (or connect, before it)
// writes them, and it is the caller.
func (s *redisStore) scanEntries(ctx context.Context, key string, size int) (map[string]*redisEntry, error) {
	type chunk struct {
		kv      []string
		decoded []*redisEntry
		done    chan struct{}
	}
	chunks := make(chan *chunk, 4)
	ordered := make(chan *chunk, 4)
	var workers sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for c := range chunks {
				c.decoded = make([]*redisEntry, len(c.kv)/2)
				for i := range c.decoded {
					raw := c.kv[2*i+1]
					if e, ok := s.entries[c.kv[2*i]]; ok && e.raw == raw {
						c.decoded[i] = e
					} else {
						c.decoded[i] = decodeEntry(raw)
					}
				}
				close(c.done)
			}
		}()
	}
	scanned := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(chunks)
		scanned <- s.scan(ctx, key, func(kv []string) {
			c := &chunk{kv: kv, done: make(chan struct{})}
			ordered <- c
			chunks <- c
		})
	}()
	entries := make(map[string]*redisEntry, size+size/16)
	for c := range ordered {
		<-c.done
		for i, e := range c.decoded {
			entries[c.kv[2*i]] = e // a field seen twice (a scan may): the later
		}
	}
	workers.Wait()
	return entries, <-scanned
}

// scanIndex reads the digest index, about size fields, in chunks; a
// malformed field is ignored.
func (s *redisStore) scanIndex(ctx context.Context, size int) (map[[32]byte]string, error) {
	index := make(map[[32]byte]string, size+size/16)
	err := s.scan(ctx, s.keys.Digests, func(kv []string) {
		for i := 0; i+1 < len(kv); i += 2 {
			if d, err := ParseDigest(kv[i]); err == nil {
				index[d] = kv[i+1]
			}
		}
	})
	return index, err
}

// Results of parseVersion besides a version.
const (
	versionMissing = -2
	versionBad     = -3
)

// parseVersion returns the store's version, versionMissing, or versionBad
// for a value that is no integer: changes still apply then, one by one, and
// the whole store is loaded at every resync; it is logged once.
func (s *redisStore) parseVersion(cmd *redis.StringCmd) int64 {
	if errors.Is(cmd.Err(), redis.Nil) {
		s.badVersion = false
		return versionMissing
	}
	v, err := strconv.ParseInt(cmd.Val(), 10, 64)
	if err != nil || v < 0 {
		if !s.badVersion {
			s.logger.Error("the redis version key is not an integer; changes still apply, but one missed is only repaired at a resync; set it to an integer, e.g. with INCR after DEL",
				zap.String("key", s.keys.Version))
			s.badVersion = true
		}
		return versionBad
	}
	s.badVersion = false
	return v
}

// checkSchema returns the hash the entries are in, by the store's schema:
// with no schema key, schema 1's legacy hash if there is one (a store the
// previous release wrote), else schema 2's (a new store written by hand).
// A newer schema than this node's is not read: the node keeps what it has
// and says so once.
func (s *redisStore) checkSchema(cmd *redis.StringCmd, legacy *redis.IntCmd) (string, bool) {
	if errors.Is(cmd.Err(), redis.Nil) {
		if legacy.Val() > 0 {
			return s.keys.Legacy, true
		}
		return s.keys.Tokens, true
	}
	if cmd.Val() == strconv.Itoa(storeSchema) {
		s.badSchema = false
		return s.keys.Tokens, true
	}
	if !s.badSchema {
		s.logger.Error("the redis store has a schema this node does not know; keeping the tokens in force: upgrade this node",
			zap.String("key", s.keys.Schema), zap.String("schema", cmd.Val()), zap.Int("known", storeSchema))
		s.badSchema = true
	}
	return "", false
}

func reverseIndex(index map[[32]byte]string) map[string][32]byte {
	byLabel := make(map[string][32]byte, len(index))
	for d, l := range index {
		byLabel[l] = d
	}
	return byLabel
}

// applyChange re-reads one label after a message about it. A message that
// changes nothing (the entry and its index entries are as the node has
// them) rebuilds nothing, so a flood of messages costs a read each.
func (s *redisStore) applyChange(ctx context.Context, label string) error {
	var ver, schema, val, legacy *redis.StringCmd
	var legacyN *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		val = p.HGet(ctx, s.keys.Tokens, label)
		legacy = p.HGet(ctx, s.keys.Legacy, label)
		legacyN = p.Exists(ctx, s.keys.Legacy)
		ver = p.Get(ctx, s.keys.Version)
		schema = p.Get(ctx, s.keys.Schema)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	entriesKey, ok := s.checkSchema(schema, legacyN)
	if !ok {
		return nil
	}
	if entriesKey == s.keys.Legacy {
		val = legacy
	}
	version := s.parseVersion(ver)
	var next *redisEntry
	if !errors.Is(val.Err(), redis.Nil) {
		next = decodeEntry(val.Val())
	}
	s.mu.Lock()
	cur := s.entries[label]
	// The index entries that may concern this label: its new token, its
	// old one, and any the index gives it.
	var ds [][32]byte
	for _, e := range []*redisEntry{next, cur} {
		if e != nil && e.claimed {
			ds = append(ds, e.claim)
		}
	}
	if d, ok := s.byLabel[label]; ok {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	owners := map[[32]byte]string{}
	if len(ds) > 0 && entriesKey == s.keys.Tokens {
		fields := make([]string, len(ds))
		for i, d := range ds {
			fields[i] = hex.EncodeToString(d[:])
		}
		vals, err := s.client.HMGet(ctx, s.keys.Digests, fields...).Result()
		if err != nil {
			return err
		}
		for i, v := range vals {
			if l, ok := v.(string); ok {
				owners[ds[i]] = l
			}
		}
	}
	s.mu.Lock()
	same := (next == nil) == (cur == nil) && (next == nil || next.raw == cur.raw)
	entryChanged := !same
	// otherIndexed: an index entry of another label changed, which may
	// change the token of that label's entry (an entry that claims none).
	otherIndexed := false
	for _, d := range ds {
		l, ok := owners[d]
		if had, hadOK := s.index[d]; hadOK != ok || had != l {
			same = false
			otherIndexed = otherIndexed || hadOK && had != label || ok && l != label
			if hadOK && s.byLabel[had] == d {
				delete(s.byLabel, had)
			}
			if ok {
				s.index[d] = l
				s.byLabel[l] = d
			} else {
				delete(s.index, d)
			}
		}
	}
	if next == nil {
		delete(s.entries, label)
	} else if !same {
		s.entries[label] = next
	}
	oneLabel := entriesKey == s.keys.Tokens && !otherIndexed && s.oneLabel(label, cur, next)
	s.mu.Unlock()
	// In step only if this was the one change since the version held;
	// otherwise the resync loads the whole store. A version that went
	// back means the store was emptied and written again.
	switch {
	case version < 0:
		s.version = -1
	case s.version >= 0 && version == s.version+1:
		s.version = version
	case version <= s.version:
		s.version = -1
	}
	if entryChanged {
		s.logChange(label, next)
	}
	if !same {
		if oneLabel {
			s.changed(label)
		} else {
			s.changed(allLabels)
		}
		s.dirtySnap = true
	}
	return nil
}

// oneLabel reports whether a change of label's entry from cur to next
// (either nil: no entry) can be applied to that label alone, as
// Handler.apply does, with the outcome a full build would have. It says
// no, and the handlers build all, for an entry this node cannot read or
// that claims no token of its own (its token is the index's, and a full
// build refuses it), a label whose token changed, and a token two entries
// claim (contested): which of them keeps it, or whether another takes it
// over when it goes, is for the full build to decide. A token or label
// the view holds for another, Handler.apply refuses, and the handler
// then builds all. Called with s.mu held, after the change.
func (s *redisStore) oneLabel(label string, cur, next *redisEntry) bool {
	var d [32]byte
	for _, e := range []*redisEntry{cur, next} {
		if e == nil {
			continue
		}
		if e.err != nil || !e.claimed {
			return false
		}
		if e != cur && cur != nil && cur.claim != e.claim {
			return false
		}
		d = e.claim
	}
	if cur == nil && next == nil {
		return true
	}
	_, contested := s.contested[d]
	return !contested
}

// logChange writes the audit line of a change to label's entry that
// arrived from Redis: one a change, on each node; never the token.
func (s *redisStore) logChange(label string, next *redisEntry) {
	c := s.logger.Check(zap.InfoLevel, "token changed")
	if c == nil {
		return
	}
	action := "put"
	if next == nil {
		action = "delete"
	}
	fields := []zap.Field{zap.String("token_label", label), zap.String("action", action), zap.String("source", whereRedis)}
	if next != nil && next.err == nil {
		fields = append(fields, zap.Int("entries", len(next.tp.Allow)))
		if next.tp.Revoked {
			fields = append(fields, zap.Bool("revoked", true))
		}
	}
	c.Write(fields...)
}

// allLabels, as a changed label, says the whole store may have changed.
// No label is empty (labelRule).
const allLabels = ""

// maxLabelsApplied bounds the labels a handler applies one at a time
// between two of its turns (Handler.followStore); past it, it builds all.
const maxLabelsApplied = 256

// pending is what changed since a handler last took it (take): the
// labels, or everything.
type pending struct {
	labels map[string]struct{}
	all    bool
}

// changed tells every subscribed handler that label's entry changed, or
// with allLabels that any may have.
func (s *redisStore) changed(label string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for c, p := range s.subs {
		switch {
		case p.all:
		case label == allLabels || len(p.labels) >= maxLabelsApplied:
			p.all, p.labels = true, nil
		default:
			if p.labels == nil {
				p.labels = map[string]struct{}{}
			}
			p.labels[label] = struct{}{}
		}
		select {
		case c <- struct{}{}:
		default: // the handler has yet to take the earlier ones
		}
	}
}

// take returns, and forgets, what changed since c last took it: the
// labels, sorted, or all; and the generation it is of.
func (s *redisStore) take(c chan struct{}) (labels []string, all bool, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.subs[c]
	if !ok {
		return nil, true, s.gen
	}
	labels, all = sortedKeys(p.labels), p.all
	p.labels, p.all = nil, false
	return labels, all, s.gen
}

// entry is label's entry as the node holds it now; nil: none.
func (s *redisStore) entry(label string) *redisEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[label]
}

func (s *redisStore) subscribe() chan struct{} {
	c := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[c] = &pending{}
	s.mu.Unlock()
	return c
}

func (s *redisStore) unsubscribe(c chan struct{}) {
	s.mu.Lock()
	delete(s.subs, c)
	s.mu.Unlock()
}

// list returns the entries sorted by label, each with the token it stands
// for, and the generation they are of.
//
// The token of an entry is the one it claims, or, for an entry that
// claims none it can be read from, the one the digest index gives its
// label: such an entry is refused, never unlisted. Where entries claim one
// token, the one the index names keeps it and the others are bad entries
// that refuse nothing; where the index names none of them, the token is
// refused.
func (s *redisStore) list() ([]labeledEntry, uint64) {
	s.mu.Lock()
	// Sorting the labels, then looking each up, is faster than sorting
	// the entries: a label is a quarter of an entry's size.
	labels := slices.Sorted(maps.Keys(s.entries))
	out := make([]labeledEntry, len(labels))
	byLabel := s.byLabel
	first := make(map[[32]byte]int, len(s.entries))
	var conflicts map[[32]byte][]int
	for i, label := range labels {
		e := s.entries[label]
		le := labeledEntry{label: label, redisEntry: e}
		if e.claimed {
			le.d, le.dOK = e.claim, true
		} else if d, ok := byLabel[label]; ok {
			le.d, le.dOK = d, true
		}
		out[i] = le
	}
	for i, e := range out {
		if !e.dOK {
			continue
		}
		if j, dup := first[e.d]; dup {
			if conflicts == nil {
				conflicts = map[[32]byte][]int{}
			}
			if len(conflicts[e.d]) == 0 {
				conflicts[e.d] = []int{j}
			}
			conflicts[e.d] = append(conflicts[e.d], i)
			continue
		}
		first[e.d] = i
	}
	owners := make(map[[32]byte]string, len(conflicts))
	s.contested = make(map[[32]byte]struct{}, len(conflicts))
	for d := range conflicts {
		owners[d] = s.index[d]
		s.contested[d] = struct{}{}
	}
	gen := s.gen
	s.mu.Unlock()
	for d, idx := range conflicts {
		owner := owners[d]
		rightful := slices.ContainsFunc(idx, func(i int) bool { return out[i].label == owner })
		labels := make([]string, len(idx))
		for k, i := range idx {
			labels[k] = out[i].label
		}
		for _, i := range idx {
			e := &out[i]
			if rightful && e.label == owner {
				continue
			}
			bad := *e.redisEntry
			if rightful {
				bad.err = fmt.Errorf("same token as %q, which the store's digest index names; a token can have one label only", owner)
				e.dOK = false // the token is owner's
			} else {
				bad.err = fmt.Errorf("the same token as %s, and the store's digest index names none of them: the token is refused until one is deleted",
					quoteLabels(slices.DeleteFunc(slices.Clone(labels), func(l string) bool { return l == e.label })))
			}
			e.redisEntry = &bad
		}
	}
	return out, gen
}

func quoteLabels(labels []string) string {
	q := make([]string, len(labels))
	for i, l := range labels {
		q[i] = strconv.Quote(l)
	}
	return strings.Join(q, " and ")
}

// event is what the subscriber goroutine hands to run.
type event struct {
	label      string // a change message
	subscribed bool   // (re)subscribed: messages may have been missed
	err        error
}

// run applies changes and resyncs until the store is destroyed. It is the
// only goroutine that reads Redis after start, so changes apply in order.
func (s *redisStore) run(ctx context.Context) {
	defer close(s.done)
	events := make(chan event, 64)
	received := make(chan struct{})
	go s.receive(ctx, events, received)
	defer func() {
		_ = s.pubsub.Close() // ends receive
		<-received
		_ = s.client.Close()
	}()

	tick := time.NewTicker(s.resync)
	defer tick.Stop()
	snap := time.NewTicker(time.Second)
	defer snap.Stop()
	full := time.NewTimer(time.Hour)
	full.Stop()
	defer full.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			s.writeSnapshot()
			return
		case ev := <-events:
			switch {
			case ev.err != nil:
				// The subscriber lost its connection. Its error may be
				// stale (the client caches dial errors for a while), so
				// whether Redis is down is for a call of our own to say.
				err = s.sync(ctx)
			case ev.subscribed:
				// Subscribed again after an error: Redis may have
				// restarted, and lost or restored data, so the version
				// proves nothing. Load it all.
				err = s.loadAll(ctx)
			case ev.label == reloadAll:
				every := fullLoadEvery
				if s.sameVersion(ctx) {
					// Nothing says the store changed: a flood of * from
					// someone who can only PUBLISH costs a load every
					// idleFullLoadEvery, and a * sent without INCR still
					// arrives within it.
					every = idleFullLoadEvery
				}
				if wait := every - time.Since(s.lastFull); wait > 0 {
					if at := time.Now().Add(wait); !s.fullDue || at.Before(s.fullAt) {
						s.fullDue, s.fullAt = true, at
						full.Reset(wait)
					}
					continue
				}
				err = s.loadAll(ctx)
			default:
				err = s.applyChange(ctx, ev.label)
			}
		case <-full.C:
			if !s.fullDue {
				continue
			}
			err = s.loadAll(ctx)
		case <-tick.C:
			err = s.sync(ctx)
		case <-snap.C:
			if s.dirtySnap {
				s.writeSnapshot()
			}
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		s.health(err)
	}
}

// sync loads the whole store if its version is not the node's.
func (s *redisStore) sync(ctx context.Context) error {
	v, err := s.client.Get(ctx, s.keys.Version).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if err == nil && s.version >= 0 && v == strconv.FormatInt(s.version, 10) {
		return nil
	}
	return s.loadAll(ctx)
}

// health logs an outage once when it starts and once when it ends.
func (s *redisStore) health(err error) {
	switch {
	case err != nil && s.down.IsZero():
		s.down = time.Now()
		s.mu.Lock()
		n := len(s.entries)
		s.mu.Unlock()
		if isAuthError(err) {
			s.logger.Error(authMessage(err)+"; the tokens in force keep serving until it is accepted",
				zap.Int("tokens", n))
			return
		}
		s.logger.Error("redis unreachable; the tokens in force keep serving until it returns",
			zap.Int("tokens", n), zap.Error(err))
	case err == nil && !s.down.IsZero():
		s.logger.Info("redis reachable again; tokens resynced",
			zap.Duration("outage", time.Since(s.down).Round(time.Millisecond)), zap.Int64("version", s.version))
		s.down = time.Time{}
	}
}

// isAuthError reports whether Redis refused the credentials.
func isAuthError(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") ||
		strings.Contains(msg, "invalid password") || strings.Contains(msg, "invalid username-password")
}

// authMessage says that Redis refused the credentials; Redis's own words
// (WRONGPASS, NOAUTH) name no secret.
func authMessage(err error) string {
	word, _, _ := strings.Cut(err.Error(), " ")
	return "redis refused the password (" + word + "): check the redis block's password and username"
}

// idlePing is how long the subscriber waits for a message before it pings.
const idlePing = 15 * time.Second

// receive reads the change channel and hands what it reads to run. The
// client reconnects and subscribes again by itself after an error; that
// shows as a new subscription, after which run resyncs.
func (s *redisStore) receive(ctx context.Context, events chan<- event, done chan<- struct{}) {
	defer close(done)
	backoff := 50 * time.Millisecond
	for {
		msg, err := s.pubsub.ReceiveTimeout(ctx, idlePing)
		if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
			return
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			// Quiet for a while: make sure the connection is alive, as
			// a half-open one would never deliver anything again. A
			// failed ping drops it, and the next Receive reconnects.
			if err = s.pubsub.Ping(ctx); err == nil {
				continue
			}
		}
		var ev event
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			ev.subscribed = true
			backoff = 50 * time.Millisecond
		case *redis.Message:
			ev.label = m.Payload
		case nil:
			ev.err = err
		default:
			continue
		}
		select {
		case events <- ev:
		case <-ctx.Done():
			return
		}
		if ev.err != nil {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, s.resync, 2*time.Second)
		}
	}
}

// writeSnapshot writes the entries as a tokens_file, atomically. It is
// written from the decoded entries, never their raw text: tokens as
// digests only, and an entry this node refuses as a revoked one, so a node
// started from the snapshot refuses its token too.
func (s *redisStore) writeSnapshot() {
	s.dirtySnap = false
	if s.snapshot == "" {
		return
	}
	list, _ := s.list()
	var b strings.Builder
	b.WriteString("{")
	sep := "\n"
	for _, e := range list {
		tp := e.tp
		if e.err == nil {
			tp, _ = digestOnly(tp, nil)
		}
		if e.err != nil || tp.Token != "" {
			d, ok := e.digest()
			if !ok {
				continue // refuses nothing, here or from the snapshot
			}
			tp = TokenPolicy{TokenSHA256: hex.EncodeToString(d[:]), Revoked: true}
		}
		label, _ := json.Marshal(e.label)
		entry, _ := json.Marshal(&tp)
		b.WriteString(sep)
		b.Write(label)
		b.WriteString(": ")
		b.Write(entry)
		sep = ",\n"
	}
	b.WriteString("\n}\n")
	out := b.String()
	tmp, err := os.CreateTemp(filepath.Dir(s.snapshot), ".ip-allowlist-snapshot-*")
	if err == nil {
		_, err = tmp.WriteString(out)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), s.snapshot)
		}
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}
	if err != nil {
		s.logger.Error("writing the redis snapshot file", zap.String("snapshot", s.snapshot), zap.Error(err))
	}
}

// readSnapshot reads a snapshot (or any tokens_file) into entries.
func readSnapshot(path string) (map[string]*redisEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, jsonErr(err)
	}
	entries := make(map[string]*redisEntry, len(m))
	for label, raw := range m {
		entries[label] = decodeEntry(string(raw))
	}
	return entries, nil
}

// openStore joins (or makes) the store the handler's redis source names.
// It does not connect: the store starts when the config does, through the
// ip_allowlist_redis app (storeApp), so that caddy validate needs no Redis
// and writes no snapshot. Without a config to start (a bare context, as in
// tests), it starts the store now.
func (h *Handler) openStore(ctx caddy.Context) error {
	opts, err := redisOptions(h.Redis, caddy.NewReplacer())
	if err != nil {
		return err
	}
	key := redisStoreKey(opts, h.Redis)
	v, _, err := redisStores.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newRedisStore(opts, h.Redis, h.logger), nil
	})
	if err != nil {
		return err
	}
	h.store, h.storeKey = v.(*redisStore), key
	h.storeSubs = h.store.subscribe() // before the first build: no change is missed
	return startWithConfig(ctx, redisAppID, h.store)
}

// closeStore leaves the store; the last handler to leave closes it.
func (h *Handler) closeStore() error {
	if h.store == nil || h.storeLeft {
		return nil
	}
	h.storeLeft = true
	h.store.unsubscribe(h.storeSubs)
	_, err := redisStores.Delete(h.storeKey)
	return err
}

// followStore follows the store until the config is unloaded. A change
// to one label's entry is applied to that token alone (applyStoreChanges);
// anything else, a whole load of the store, more than maxLabelsApplied
// labels at once, or a change the one-token path refuses, rebuilds the
// table from all the store's entries and publishes a view of it
// (publishBuild), which refuses and logs what it must. Changes that arrive
// meanwhile are taken together at the next turn.
func (h *Handler) followStore(ctx caddy.Context) {
	store := h.store
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.storeSubs:
		}
		labels, all, gen := store.take(h.storeSubs)
		if !all && h.applyStoreChanges(ctx, labels, gen) {
			continue
		}
		h.rebuild.Lock()
		began := time.Now()
		t, err := h.build()
		if err == nil && ctx.Err() == nil {
			h.publishBuild(t)
		}
		h.rebuild.Unlock()
		if err != nil {
			h.logger.Error("tokens from redis refused; the tokens in force keep serving", zap.Error(err))
			continue
		}
		h.logger.Info("tokens from redis applied",
			zap.String("redis", store.addr),
			zap.Int("tokens", len(t.policies)),
			zap.Duration("took", time.Since(began)))
	}
}

// applyStoreChanges applies the store's entry of each label to that token
// alone (Handler.apply, with the rules of an entry another node wrote),
// and reports whether all were applied. It stops at the first it cannot
// apply so, and the caller then builds all: an entry this node cannot
// read, whose refusal is the full build's to make; a change the store
// says only a full build decides (redisStore.oneLabel); or one apply
// refuses, such as a label the config lists or a token another label
// holds, which the full build refuses and logs once.
func (h *Handler) applyStoreChanges(ctx context.Context, labels []string, gen uint64) bool {
	for _, label := range labels {
		if ctx.Err() != nil {
			return true // unloaded: nothing to build for
		}
		e := h.store.entry(label)
		var tp *TokenPolicy
		if e != nil {
			if e.err != nil || !e.claimed {
				return false
			}
			tp = &e.tp
		}
		began := time.Now()
		if err := h.apply(label, tp, originStore, nil); err != nil {
			if c := h.logger.Check(zap.DebugLevel, "token from redis needs a full build"); c != nil {
				c.Write(zap.String("token_label", label), zap.Error(err))
			}
			return false
		}
		h.appliedStoreEntry(label, tp)
		if c := h.logger.Check(zap.DebugLevel, "token from redis applied"); c != nil {
			c.Write(zap.String("token_label", label), zap.Duration("took", time.Since(began)))
		}
	}
	h.rebuild.Lock()
	// The view holds every change up to gen: waitApplied and the like
	// read it as they read a full build's.
	h.builtGen = max(h.builtGen, gen)
	h.rebuild.Unlock()
	return true
}

// appliedStoreEntry keeps the record of what the full build logs once
// (h.skipped) true of label's entry after it was applied alone: it is no
// longer a skipped entry, and the ip_set names it uses that this node does
// not define are logged, once each while it uses them, as the full build
// does.
func (h *Handler) appliedStoreEntry(label string, tp *TokenPolicy) {
	unknown := h.unknownSets(label, tp)
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	if h.skipped == nil {
		h.skipped = map[string]string{}
	}
	delete(h.skipped, label)
	prefix := skippedSetKey(label, "")
	for key := range h.skipped {
		if strings.HasPrefix(key, prefix) && !slices.Contains(unknown, key[len(prefix):]) {
			delete(h.skipped, key)
		}
	}
	for _, set := range unknown {
		key := skippedSetKey(label, set)
		if _, seen := h.skipped[key]; !seen {
			h.skipped[key] = ""
			h.logger.Warn("redis token entry names an ip_set this node does not define; it matches nothing here",
				zap.String("token_label", label), zap.String("ip_set", set))
		}
	}
}

// skippedSetKey is the key of h.skipped that records label's entry using
// set, which the node does not define: a key no label can be (Handler.build
// writes the same).
func skippedSetKey(label, set string) string { return "ip_set\x00" + label + "\x00" + set }

// unknownSets returns the ip_set names tp uses that h does not define,
// from the compiler's own rule, compiling tp once more (one token) only
// when it names a set at all.
func (h *Handler) unknownSets(label string, tp *TokenPolicy) []string {
	if tp == nil || !slices.ContainsFunc(slices.Concat(tp.Allow, tp.Deny), isSetName) {
		return nil
	}
	c, err := newCompiler(h, nil, 1)
	if err != nil {
		return nil
	}
	var unknown []string
	c.origin = originStore
	c.unknownSet = func(name string) {
		if !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	_ = c.addToken(label, tp, whereRedis)
	return unknown
}

// redisLog writes go-redis's own log lines (dial errors, about one a
// second while Redis is down) through Caddy's logger at debug level: the
// store logs an outage once, at its start, and once at its end.
type redisLog struct{}

func (redisLog) Printf(_ context.Context, format string, v ...any) {
	// caddy.Log each time: the logging config may change on a reload.
	if c := caddy.Log().Named("http.handlers.ip_allowlist.redis").Check(zap.DebugLevel, "go-redis"); c != nil {
		c.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

var redisLogOnce sync.Once

// useZapForRedis routes go-redis's logging, which is process-wide, through
// Caddy's logger, once.
func useZapForRedis() {
	redisLogOnce.Do(func() {
		redis.SetLogger(redisLog{})
	})
}

func init() {
	caddy.RegisterModule(&storeApp{id: redisAppID})
}

// redisAppID is the app that starts the Redis stores of a config. Start
// returns when every store has loaded, from Redis or its snapshot, or fails
// as a store that can do neither.
const redisAppID = "ip_allowlist_redis"
