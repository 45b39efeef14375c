package ipallowlist

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// fileStamp is what watching compares: a file is taken as changed when its
// size or modification time is. Polling, unlike inotify, also sees the
// symlink swap that Kubernetes uses to update a mounted ConfigMap.
type fileStamp struct {
	size    int64
	modTime time.Time
	err     string
}

func stamps(paths []string) []fileStamp {
	out := make([]fileStamp, len(paths))
	for i, p := range paths {
		if info, err := os.Stat(p); err != nil {
			out[i].err = err.Error()
		} else {
			out[i] = fileStamp{size: info.Size(), modTime: info.ModTime()}
		}
	}
	return out
}

func sameStamps(a, b []fileStamp) bool {
	for i := range a {
		if a[i].size != b[i].size || !a[i].modTime.Equal(b[i].modTime) || a[i].err != b[i].err {
			return false
		}
	}
	return true
}

// watch recompiles the table when a tokens file changes, until ctx (the
// config's) is done. The new table is built beside the one in force and
// published as a new view (publishBuild); one that does not compile is
// logged and dropped, and the same files are not tried again until they
// change again.
func (h *Handler) watch(ctx caddy.Context, every time.Duration) {
	seen := stamps(h.TokensFiles)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := stamps(h.TokensFiles)
		if sameStamps(seen, now) {
			continue
		}
		seen = now
		h.reloadTokens(ctx)
	}
}

func (h *Handler) reloadTokens(ctx context.Context) {
	h.rebuild.Lock()
	defer h.rebuild.Unlock()
	began := time.Now()
	t, err := h.build()
	if err != nil {
		h.logger.Error("tokens files refused; the tokens in force keep serving",
			zap.Strings("tokens_files", h.TokensFiles), zap.Error(err))
		return
	}
	if ctx.Err() != nil {
		return // the config was unloaded while compiling
	}
	h.publishBuild(t)
	h.logger.Info("tokens files reloaded",
		zap.Int("tokens", len(t.policies)),
		zap.Int("ranges", t.ranges),
		zap.Duration("took", time.Since(began)))
}

// build compiles the handler's table from its config and the tokens of its
// store (Redis, or the token store's entries) as they are now, and notes
// what it read. Callers hold h.rebuild, or are Provision.
func (h *Handler) build() (*table, error) {
	b, err := h.compileAll(h.skipped)
	h.builtLoaded, h.builtGen = b.loaded, b.gen
	if err == nil {
		h.skipped = b.skipped
	}
	return b.t, err
}

// built is a full build and what it read.
type built struct {
	t *table
	// loaded: the store had loaded when its entries were read; gen: the
	// Redis store's generation they were read at.
	loaded  bool
	gen     uint64
	skipped map[string]string // the bad entries, each logged once
}

// compileAll is build without writing to h, so a merge can run it without
// holding h.rebuild: it reads only the config, which provisioning fixed,
// and the store, which is safe for concurrent use. logged holds the bad
// entries logged before, which are not logged again.
func (h *Handler) compileAll(logged map[string]string) (built, error) {
	var shared []labeledEntry
	var b built
	cfg := h
	where, skippedMsg, unknownMsg := whereRedis, "redis token entry skipped; fix or delete it",
		"redis token entry names an ip_set this node does not define; it matches nothing here"
	switch {
	case h.storeEntries != nil && h.store != nil:
		return b, errors.New("a handler takes tokens from one store: redis or the token store")
	case h.storeEntries != nil:
		// Read before the entries, as for Redis below.
		b.loaded = h.fileStore == nil || h.fileStore.isLoaded()
		var err error
		if shared, err = h.storeEntries(); err != nil {
			return b, fmt.Errorf("reading the token store: %w", err)
		}
		where, skippedMsg, unknownMsg = whereStore, "token store entry skipped; fix or delete it",
			"token store entry names an ip_set this config does not define; it matches nothing here"
	case h.store != nil:
		// Loaded is read before the entries: the store sets them before
		// it says it has loaded, so a build that sees it loaded sees them.
		// Read after, a load in between would leave them out and the
		// store's tokens unlisted.
		b.loaded = h.store.isLoaded()
		shared, b.gen = h.store.list()
	}
	if (h.storeEntries != nil || h.store != nil) && !b.loaded {
		// Until the store has loaded, its tokens are not known: refuse
		// every token the config does not list, rather than let the
		// store's tokens be unlisted.
		pending := h.configOnly()
		pending.Unlisted = &Policy{}
		cfg = pending
	}
	b.skipped = map[string]string{}
	t, err := compileShared(cfg, caddy.NewReplacer(), where, shared, func(label string, err error) {
		msg := err.Error()
		b.skipped[label] = msg
		if logged[label] != msg { // each bad entry is logged once
			h.logger.Error(skippedMsg, zap.String("token_label", label), zap.Error(err))
		}
	}, func(label, set string) {
		// Kept with the skipped entries under a key no label can be.
		key := "ip_set\x00" + label + "\x00" + set
		b.skipped[key] = ""
		if _, seen := logged[key]; !seen { // once per entry and set, while it lasts
			h.logger.Warn(unknownMsg, zap.String("token_label", label), zap.String("ip_set", set))
		}
	})
	b.t = t
	return b, err
}

// configOnly is a copy of h's configuration, without its state: what the
// compiler reads.
func (h *Handler) configOnly() *Handler {
	return &Handler{
		TokenSources: h.TokenSources,
		IPSets:       h.IPSets,
		Tokens:       h.Tokens,
		TokensFiles:  h.TokensFiles,
		Unlisted:     h.Unlisted,
		MissingToken: h.MissingToken,
		Mode:         h.Mode,
		Watch:        h.Watch,
	}
}
