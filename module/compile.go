package ipallowlist

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// compiler holds what compileShared and Checker need while they turn a
// Handler's configuration into a table.
type compiler struct {
	sets   map[string]*setDef
	repl   *caddy.Replacer // nil: placeholders are checked, not resolved (Checker)
	origin entryOrigin     // of the entries being added
	b      *tableBuilder

	// unknownSet is told of a set name a store entry uses that this node
	// does not define.
	unknownSet func(name string)
	// logger has the WARN of duplicate entries merged; nil: not logged
	// (Checker, the store's writers).
	logger *zap.Logger

	// now is the time allow entries' expiry is compared with: entries
	// expired by then are left out.
	now time.Time
	// scratch for the entries of one token that have not expired
	live []string
	// emptyAllow accepts an empty allow list from a writer: the last
	// entry removed from a token.
	emptyAllow bool

	// dns holds the names entries list, resolved by its pool; nil where
	// names are checked, not resolved (Checker, the store's writers).
	dns *dnsHold
	// names: the dns: entries of the policy being compiled; namesOK says
	// it is a listed token's, the only policy that may have them, and
	// tenant whose. nameCount counts its dns: entries, and ownerNames
	// those of each owner's tokens compiled so far, and, for a change,
	// those of the owner's other tokens in the view changed
	// (checkNameQuota).
	names      []*dnsName
	namesOK    bool
	tenant     dnsTenant
	nameCount  int
	ownerNames map[string]int

	// scratch, reused for every policy
	allow, deny, allowed, denied spanLists
}

// newCompiler applies the rules of h that are not its tokens: modes, token
// sources, sets and the unlisted policy.
func newCompiler(h *Handler, repl *caddy.Replacer, tokens int) (*compiler, error) {
	c := &compiler{
		repl:   repl,
		b:      newTableBuilder(tokens),
		now:    time.Now(),
		dns:    h.dns,
		logger: h.logger,
	}
	if err := checkModes(h); err != nil {
		return nil, err
	}
	if _, err := compileCredentials(h); err != nil {
		return nil, err
	}
	if err := c.compileSets(h.IPSets); err != nil {
		return nil, err
	}
	c.b.t.missingAllow = h.MissingToken != MissingDeny
	unlisted := h.Unlisted
	if unlisted == nil {
		unlisted = &Policy{Allow: []string{KeywordAny}}
	}
	p, err := c.policy("", unlisted.Allow, unlisted.Deny, true)
	if err != nil {
		return nil, &ConfigError{Field: "unlisted", Err: err}
	}
	c.b.t.unlisted = p
	return c, nil
}

// checkModes checks the fields that take one of a few words.
func checkModes(h *Handler) error {
	switch h.Mode {
	case "", ModeEnforce, ModeReport:
	default:
		return fmt.Errorf("mode %q: must be %s or %s", h.Mode, ModeEnforce, ModeReport)
	}
	switch h.MissingToken {
	case "", MissingAllow, MissingDeny:
	default:
		return fmt.Errorf("missing_token %q: must be %s or %s", h.MissingToken, MissingAllow, MissingDeny)
	}
	if h.Watch > 0 && len(h.TokensFiles) == 0 {
		return errors.New("watch: there is no tokens_file to watch")
	}
	return nil
}

// compileShared compiles h's tokens and tokens files, then the entries of
// the store named where (redis, or the token store), into a table. A store
// is data written elsewhere, so one bad entry must not stop the rest: an
// entry that does not compile is refused (its token, where known, is
// refused on every request) and passed to skip. A set name an entry uses
// that h does not define matches nothing and is passed to unknown.
func compileShared(h *Handler, repl *caddy.Replacer, where string, shared []labeledEntry, skip func(label string, err error), unknown func(label, set string)) (*table, error) {
	c, err := newCompiler(h, repl, len(h.Tokens))
	if err != nil {
		return nil, err
	}
	c.from("tokens")
	for _, label := range sortedKeys(h.Tokens) {
		if err := c.addToken(label, h.Tokens[label], "tokens"); err != nil {
			return nil, err
		}
	}
	for _, path := range h.TokensFiles {
		if err := c.addTokensFile(path); err != nil {
			return nil, fmt.Errorf("tokens_file %q: %w", path, err)
		}
	}
	if len(shared) > 0 {
		c.from(where)
		c.origin = originStore
		c.b.grow(len(shared))
		var current string
		if unknown != nil {
			c.unknownSet = func(name string) { unknown(current, name) }
		}
		for _, e := range shared {
			current = e.label
			err := e.err
			if err != nil {
				err = &ConfigError{Token: e.label, Err: err}
			} else {
				err = c.addToken(e.label, &e.tp, where)
			}
			if err != nil {
				c.refuse(e)
				if skip != nil {
					skip(e.label, err)
				}
			}
		}
	}
	return c.b.finish(), nil
}

// refuse makes a store entry that does not compile fail closed: its token,
// where its digest is known, is refused instead of becoming unlisted. A
// digest listed already (by the config, or an earlier entry) keeps its
// policy.
func (c *compiler) refuse(e labeledEntry) {
	digest, ok := e.digest()
	if !ok {
		return
	}
	if _, listed := c.b.t.index[digest]; listed {
		return
	}
	p, err := c.b.addPolicy(e.label, &spanLists{}, &spanLists{})
	if err != nil {
		p, _ = c.b.addPolicy("", &spanLists{}, &spanLists{})
	}
	p.state = stateInvalid
	i := c.b.addToken(digest, p)
	// A config token of the same label keeps the label.
	if _, taken := c.b.t.labelled(e.label); !taken && err == nil {
		c.b.t.byLabel.add(e.label, i)
	}
}

// policy compiles allow and deny: the table keeps allow minus deny, and the
// part of deny inside allow, which tells ip_denied from ip_not_allowed.
func (c *compiler) policy(label string, allow, deny []string, broad bool) (policy, error) {
	c.names, c.nameCount = c.names[:0], 0
	if err := c.collect(&c.allow, "allow", allow, broad); err != nil {
		return policy{}, err
	}
	if err := c.collect(&c.deny, "deny", deny, true); err != nil {
		return policy{}, err
	}
	c.allowed.v4 = subtractSpans(c.allowed.v4[:0], c.allow.v4, c.deny.v4)
	c.allowed.v6 = subtractSpans(c.allowed.v6[:0], c.allow.v6, c.deny.v6)
	c.denied.v4 = intersectSpans(c.denied.v4[:0], c.allow.v4, c.deny.v4)
	c.denied.v6 = intersectSpans(c.denied.v6[:0], c.allow.v6, c.deny.v6)
	p, err := c.b.addPolicy(label, &c.allowed, &c.denied)
	if err != nil || len(c.names) == 0 {
		return p, err
	}
	p.named = true
	c.b.addNames(p, c.tenant, c.names, &c.deny)
	return p, nil
}

// addToken applies every entry rule to one listed token and compiles it.
// where says where it was defined ("tokens" or a file), for the
// duplicate-label error. Errors are *ConfigError naming the label.
func (c *compiler) addToken(label string, tp *TokenPolicy, where string) error {
	if err := labelRule(label); err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	if tp == nil {
		return &ConfigError{Token: label, Err: errors.New("no token or token_sha256 given")}
	}
	digest, known, err := c.tokenDigest(tp)
	if err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	if known {
		if other, dup := c.b.lookup(digest); dup {
			if other == label {
				return &ConfigError{Token: label, Err: errors.New("the same token is listed twice")}
			}
			return &ConfigError{Token: label, Err: fmt.Errorf("same token as %q; a token can have one label only", other)}
		}
	}
	if i, dup := c.b.t.labelled(label); dup {
		if first := c.b.t.originOf(i); first != where {
			return &ConfigError{Token: label, Err: fmt.Errorf("label defined twice, in %s and in %s", first, where)}
		}
		return &ConfigError{Token: label, Err: fmt.Errorf("label defined twice in %s", where)}
	}
	if err := c.checkAllow(tp); err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	if c.logger != nil {
		// Compiled as they are, copies admit their range as one entry
		// would, for as long as the longest-lived of them.
		if merged := repeatedEntries(tp); len(merged) > 0 {
			c.logger.Warn("duplicate entries merged: each range counts once, an allow entry for the longest life of its copies; remove the repeats",
				zap.String("token_label", label), zap.String("where", where), zap.Strings("merged", merged))
		}
	}
	mode, err := tokenMode(tp.Mode)
	if err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	allow, next, err := c.unexpired(tp)
	if err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	c.namesOK, c.tenant = true, dnsTenant{owner: tp.Owner, label: label}
	p, err := c.policy(label, allow, tp.Deny, tp.AllowBroad)
	c.namesOK, c.tenant = false, dnsTenant{}
	if err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	c.countNames(tp.Owner)
	p.mode = mode
	switch {
	case tp.Revoked:
		p.state = stateRevoked
	case tp.Suspended:
		p.state = stateSuspended
	}
	var i uint32
	if known {
		i = c.b.addToken(digest, p)
	} else {
		i = c.b.addUnindexed(p)
	}
	c.b.t.byLabel.add(label, i)
	if next != 0 {
		c.b.t.expiring = append(c.b.t.expiring, expiry{at: next, policy: i})
	}
	return nil
}

// tokenMode applies the rule for a token's own mode.
func tokenMode(m string) (policyMode, error) {
	switch m {
	case "":
		return modeInherit, nil
	case ModeEnforce:
		return modeEnforce, nil
	case ModeReport:
		return modeReport, nil
	}
	return 0, fmt.Errorf("mode %q: must be %s or %s", m, ModeEnforce, ModeReport)
}

type origin struct {
	start uint32
	where string
}

// from records that the tokens added from now on are defined in where.
func (c *compiler) from(where string) {
	c.b.t.origins = append(c.b.t.origins, origin{uint32(len(c.b.t.policies)), where})
}

// originOf says where the token of policy i was defined: "tokens", a
// tokens file's path, or a store.
func (t *table) originOf(i uint32) string {
	where := ""
	for _, o := range t.origins {
		if o.start <= i {
			where = o.where
		}
	}
	return where
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Checker applies every rule of Provision that needs no placeholder, file
// or network, so an adapter can report each error at the line it is about.
// Tokens are added one at a time, in the order they were written.
type Checker struct{ c *compiler }

// NewChecker checks everything of h but its tokens: modes, token sources,
// ip_sets and the unlisted policy. A *ConfigError names the set or field.
func NewChecker(h *Handler) (*Checker, error) {
	c, err := newCompiler(h, nil, 0)
	if err != nil {
		return nil, err
	}
	c.from(checkerWhere)
	return &Checker{c}, nil
}

// Token checks one token entry and adds it, so that a later token with the
// same label or token is refused. Errors are *ConfigError.
func (k *Checker) Token(label string, tp *TokenPolicy) error {
	return k.c.addToken(label, tp, checkerWhere)
}

const checkerWhere = "this block"

// checkStoreEntry applies the rules a store entry must pass where it is
// written, before any node sees it: set names are the nodes' and are not
// checked, placeholders are refused.
func checkStoreEntry(label string, tp *TokenPolicy) error {
	return checkWritten(label, tp, false)
}

// checkWritten is checkStoreEntry, where emptyAllow accepts an entry
// whose allow list an edit emptied.
func checkWritten(label string, tp *TokenPolicy, emptyAllow bool) error {
	c, err := newCompiler(&Handler{}, nil, 1)
	if err != nil {
		return err
	}
	c.origin = originWriter
	c.emptyAllow = emptyAllow
	return c.addToken(label, tp, "the store")
}

// addTokensFile streams a JSON object of label -> TokenPolicy, so a file of
// a million tokens is never held whole in memory. Decoding, the larger
// part of the work, runs beside compiling (decodeTokens).
func (c *compiler) addTokensFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	where := fmt.Sprintf("tokens_file %q", path)
	c.from(where)
	// An entry takes 100 bytes or more, so the size bounds the tokens to
	// come. Room is made once the first entries decode, and for at most
	// maxPresize tokens: a file of zeros or a sparse one costs nothing.
	var presize int
	if info, err := f.Stat(); err == nil {
		presize = int(min(info.Size()/100, maxPresize))
	}
	return eachTokenBatch(f, func(entries []tokenEntry) error {
		if presize > 0 {
			c.b.grow(presize)
			presize = 0
		}
		for i := range entries {
			if err := c.addToken(entries[i].label, &entries[i].tp, where); err != nil {
				return err
			}
		}
		return nil
	})
}

// maxPresize bounds the tokens a tokens file makes room for in advance.
const maxPresize = 2_000_000

// eachTokenBatch decodes a tokens file from r in a goroutine of its own
// (decodeTokens) and calls fn with each batch of entries, which are reused
// once fn returns. It stops at fn's first error and returns it, or returns
// the decoder's.
func eachTokenBatch(r io.Reader, fn func([]tokenEntry) error) error {
	full := make(chan *entryBatch, 2)
	free := make(chan *entryBatch, 4)
	stop := make(chan struct{})
	decoded := make(chan error, 1)
	go func() { decoded <- decodeTokens(r, full, free, stop) }()
	for batch := range full {
		if err := fn(batch.entries); err != nil {
			close(stop)
			for range full { // let the decoder see stop and return
			}
			<-decoded
			return err
		}
		select {
		case free <- batch:
		default:
		}
	}
	return <-decoded
}

// entryBatch carries decoded entries from decodeTokens to the compiler.
// Batches are recycled, and with them their TokenPolicy slices.
type entryBatch struct {
	entries []tokenEntry
}

type tokenEntry struct {
	label string
	tp    TokenPolicy
}

const entryBatchSize = 512

// decodeTokens decodes a tokens file into batches sent on full, taking
// empty ones from free, until the object ends, an error, or stop. It
// closes full when done.
func decodeTokens(r io.Reader, full chan<- *entryBatch, free chan *entryBatch, stop <-chan struct{}) error {
	defer close(full)
	dec := json.NewDecoder(bufio.NewReaderSize(r, 1<<16))
	dec.DisallowUnknownFields()
	if t, err := dec.Token(); err != nil {
		return jsonErr(err)
	} else if t != json.Delim('{') {
		return errors.New("want a JSON object of label to token")
	}
	batch := &entryBatch{}
	send := func() bool {
		select {
		case full <- batch:
		case <-stop:
			return false
		}
		select {
		case batch = <-free:
			batch.entries = batch.entries[:0]
		default:
			batch = &entryBatch{}
		}
		return true
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		label := t.(string)
		if len(batch.entries) < cap(batch.entries) {
			batch.entries = batch.entries[:len(batch.entries)+1]
		} else {
			batch.entries = append(batch.entries, tokenEntry{})
		}
		e := &batch.entries[len(batch.entries)-1]
		e.label, e.tp = label, TokenPolicy{Allow: e.tp.Allow[:0], Deny: e.tp.Deny[:0]}
		if err := dec.Decode(&e.tp); err != nil {
			return fmt.Errorf("token %q: %v", label, jsonErr(err))
		}
		if len(batch.entries) == entryBatchSize && !send() {
			return nil
		}
	}
	if _, err := dec.Token(); err != nil {
		return jsonErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	if len(batch.entries) > 0 {
		send()
	}
	return nil
}

// jsonErr reports a decoding error without quoting the input: a syntax error
// near a token must not print the token.
func jsonErr(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: want %s at byte %d", te.Field, te.Type, te.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("unexpected end of file")
	}
	return err
}
