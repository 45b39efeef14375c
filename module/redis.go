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
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisSource is a token store shared by many Caddy nodes. Tokens live in a
// Redis hash, <key_prefix>tokens, keyed by label, each value a JSON object
// of the same shape as a tokens_file entry. Every node holds all of them in
// memory, so Redis is never on a request's path: changes arrive on the
// channel <key_prefix>changes and are swapped in as a whole new table, and
// a periodic resync repairs what a node missed.
type RedisSource struct {
	// host:port of the Redis server. Default: 127.0.0.1:6379.
	Address string `json:"address,omitempty"`
	// ACL user name, if the server uses ACLs.
	Username string `json:"username,omitempty"`
	// The password, normally a placeholder such as {env.REDIS_PASSWORD},
	// resolved at provision.
	Password string `json:"password,omitempty"`
	// The database number. Default 0.
	DB int `json:"db,omitempty"`
	// Prefix of the keys used: <prefix>tokens (hash of label to entry),
	// <prefix>version (bumped on every change) and the channel
	// <prefix>changes. Default "ip_allowlist:".
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

// Defaults of the redis source.
const (
	DefaultRedisAddress = "127.0.0.1:6379"
	DefaultKeyPrefix    = "ip_allowlist:"
	defaultResync       = 30 * time.Second
)

// RedisKeys are the names a store uses under its prefix.
type RedisKeys struct {
	Tokens, Version, Changes string
}

// Keys returns the key names under prefix ("" for the default).
func Keys(prefix string) RedisKeys {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return RedisKeys{Tokens: prefix + "tokens", Version: prefix + "version", Changes: prefix + "changes"}
}

// RedisOptions returns the client options for src after resolving its
// password with repl. It checks the source but does not connect.
func RedisOptions(src *RedisSource, repl *caddy.Replacer) (*redis.Options, error) {
	if err := CheckRedisSource(src); err != nil {
		return nil, err
	}
	addr := src.Address
	if addr == "" {
		addr = DefaultRedisAddress
	}
	host, _, _ := splitHostPort(addr)
	var err error
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
	if src.Address != "" {
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
	err error // the JSON does not decode
}

func decodeEntry(raw string) *redisEntry {
	e := &redisEntry{raw: raw}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e.tp); err != nil {
		e.err = jsonErr(err)
	} else if dec.More() {
		e.err = errors.New("data after the JSON object")
	}
	return e
}

// labeledEntry is an entry with its label, as compile takes them.
type labeledEntry struct {
	label string
	*redisEntry
}

// digest is the entry's token digest, where it can be known: from the
// entry itself, even one that is otherwise bad.
func (e labeledEntry) digest() ([32]byte, bool) {
	d, err := ParseDigest(e.tp.TokenSHA256)
	return d, err == nil
}

// redisStore is one node's copy of a Redis token store. Handlers of every
// loaded config that name the same store share it (it lives in a
// caddy.UsagePool), so a reload neither reloads the store nor needs Redis
// to be up.
type redisStore struct {
	keys     RedisKeys
	addr     string
	snapshot string
	resync   time.Duration
	client   *redis.Client
	pubsub   *redis.PubSub
	logger   *zap.Logger

	mu      sync.Mutex
	entries map[string]*redisEntry
	gen     uint64 // bumped on every change of entries
	subs    map[chan struct{}]struct{}

	// Owned by run's goroutine.
	version   int64 // of entries; -1 unknown (started from the snapshot)
	down      time.Time
	dataLoss  bool
	dirtySnap bool

	cancel context.CancelFunc
	done   chan struct{}
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
		opts.DB, Keys(src.KeyPrefix).Tokens, tlsOn, sn, ca, src.Snapshot, src.Resync)
}

// openRedisStore connects, subscribes and loads the whole store. If Redis
// cannot be reached and a snapshot file is configured, it starts from the
// snapshot and keeps trying in the background.
func openRedisStore(opts *redis.Options, src *RedisSource, logger *zap.Logger) (*redisStore, error) {
	s := &redisStore{
		keys:     Keys(src.KeyPrefix),
		addr:     opts.Addr,
		snapshot: src.Snapshot,
		resync:   time.Duration(src.Resync),
		client:   redis.NewClient(opts),
		logger:   logger.With(zap.String("redis", opts.Addr)),
		subs:     map[chan struct{}]struct{}{},
		version:  -1,
		done:     make(chan struct{}),
	}
	if s.resync == 0 {
		s.resync = defaultResync
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel

	start, stop := context.WithTimeout(ctx, 5*time.Second)
	defer stop()
	// Subscribe before loading, so no change falls between the two.
	s.pubsub = s.client.Subscribe(ctx, s.keys.Changes)
	_, err := s.pubsub.Receive(start)
	if err == nil {
		err = s.loadAll(start)
	}
	if err != nil {
		if s.snapshot == "" {
			s.close()
			return nil, fmt.Errorf("redis %s unreachable at start: %v; configure a snapshot file to start from the last copy instead", opts.Addr, err)
		}
		entries, serr := readSnapshot(s.snapshot)
		if serr != nil {
			s.close()
			return nil, fmt.Errorf("redis %s unreachable at start: %v; and the snapshot file: %v", opts.Addr, err, serr)
		}
		s.entries = entries
		s.down = time.Now()
		s.logger.Warn("redis unreachable at start; serving the snapshot file until it returns",
			zap.String("snapshot", s.snapshot), zap.Int("tokens", len(entries)), zap.Error(err))
	} else {
		s.writeSnapshot()
	}
	go s.run(ctx)
	return s, nil
}

// Destruct stops the store when no loaded config uses it any more.
func (s *redisStore) Destruct() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *redisStore) close() {
	s.cancel()
	_ = s.pubsub.Close()
	_ = s.client.Close()
}

// loadAll replaces the entries with the whole store, read atomically.
func (s *redisStore) loadAll(ctx context.Context) error {
	var ver *redis.StringCmd
	var all *redis.MapStringStringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		ver = p.Get(ctx, s.keys.Version)
		all = p.HGetAll(ctx, s.keys.Tokens)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	version, missing, err := parseVersion(ver)
	if err != nil {
		return err
	}
	m := all.Val()
	s.mu.Lock()
	have := len(s.entries)
	s.mu.Unlock()
	if missing && len(m) == 0 && have > 0 {
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
	entries := make(map[string]*redisEntry, len(m))
	for label, raw := range m {
		entries[label] = decodeEntry(raw)
	}
	s.mu.Lock()
	s.entries = entries
	s.mu.Unlock()
	s.version = version
	s.changed()
	s.dirtySnap = true
	return nil
}

func parseVersion(cmd *redis.StringCmd) (v int64, missing bool, err error) {
	if errors.Is(cmd.Err(), redis.Nil) {
		return 0, true, nil
	}
	if cmd.Err() != nil {
		return 0, false, cmd.Err()
	}
	v, err = cmd.Int64()
	return v, false, err
}

// applyChange re-reads one label after a message about it.
func (s *redisStore) applyChange(ctx context.Context, label string) error {
	var ver *redis.StringCmd
	var val *redis.StringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		val = p.HGet(ctx, s.keys.Tokens, label)
		ver = p.Get(ctx, s.keys.Version)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	version, _, err := parseVersion(ver)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if errors.Is(val.Err(), redis.Nil) {
		delete(s.entries, label)
	} else {
		s.entries[label] = decodeEntry(val.Val())
	}
	s.mu.Unlock()
	// In step only if this was the one change since the version held;
	// otherwise the resync loads the whole store. A version that went
	// back means the store was emptied and written again.
	switch {
	case s.version >= 0 && version == s.version+1:
		s.version = version
	case version <= s.version:
		s.version = -1
	}
	s.changed()
	s.dirtySnap = true
	return nil
}

// changed tells every subscribed handler to rebuild its table.
func (s *redisStore) changed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for c := range s.subs {
		select {
		case c <- struct{}{}:
		default: // a rebuild is already due
		}
	}
}

func (s *redisStore) subscribe() chan struct{} {
	c := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[c] = struct{}{}
	s.mu.Unlock()
	return c
}

func (s *redisStore) unsubscribe(c chan struct{}) {
	s.mu.Lock()
	delete(s.subs, c)
	s.mu.Unlock()
}

// list returns the entries sorted by label, and the generation they are of.
func (s *redisStore) list() ([]labeledEntry, uint64) {
	s.mu.Lock()
	out := make([]labeledEntry, 0, len(s.entries))
	for label, e := range s.entries {
		out = append(out, labeledEntry{label, e})
	}
	gen := s.gen
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b labeledEntry) int { return strings.Compare(a.label, b.label) })
	return out, gen
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
			case ev.label == ReloadAll:
				err = s.loadAll(ctx)
			default:
				err = s.applyChange(ctx, ev.label)
			}
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
	if err == nil && v == strconv.FormatInt(s.version, 10) {
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
		s.logger.Error("redis unreachable; the tokens in force keep serving until it returns",
			zap.Int("tokens", n), zap.Error(err))
	case err == nil && !s.down.IsZero():
		s.logger.Info("redis reachable again; tokens resynced",
			zap.Duration("outage", time.Since(s.down).Round(time.Millisecond)), zap.Int64("version", s.version))
		s.down = time.Time{}
	}
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

// writeSnapshot writes the entries as a tokens_file, atomically.
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
		if e.err != nil {
			continue // never decoded; nothing a node could use
		}
		label, _ := json.Marshal(e.label)
		b.WriteString(sep)
		b.Write(label)
		b.WriteString(": ")
		b.WriteString(strings.TrimSpace(e.raw))
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

// openStore joins (or opens) the store the handler's redis source names.
func (h *Handler) openStore() error {
	opts, err := RedisOptions(h.Redis, caddy.NewReplacer())
	if err != nil {
		return err
	}
	key := redisStoreKey(opts, h.Redis)
	v, _, err := redisStores.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openRedisStore(opts, h.Redis, h.logger)
	})
	if err != nil {
		return err
	}
	h.store, h.storeKey = v.(*redisStore), key
	h.storeSubs = h.store.subscribe() // before the first build: no change is missed
	return nil
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

// followStore rebuilds the table whenever the store changes, until the
// config is unloaded. Changes that arrive during a rebuild are taken
// together by the next one.
func (h *Handler) followStore(ctx caddy.Context) {
	store := h.store
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.storeSubs:
		}
		h.rebuild.Lock()
		began := time.Now()
		t, err := h.build()
		if err == nil && ctx.Err() == nil {
			h.warnUnlisted(h.current.Swap(t), t)
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
