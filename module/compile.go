package ipallowlist

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go4.org/netipx"
)

// compiler holds what compile needs while it turns a Handler's configuration
// into a table.
type compiler struct {
	sets   map[string][]netipx.IPRange
	repl   *caddy.Replacer
	b      *tableBuilder
	labels labelIndex

	// origins says where tokens came from: tokens from policy index
	// origins[i].start on were defined in origins[i].where.
	origins []origin

	// scratch, reused for every policy
	allow, deny, allowed, denied spanLists
}

// compile validates h and builds its table. Placeholders in tokens are
// resolved with repl.
func compile(h *Handler, repl *caddy.Replacer) (*table, error) {
	return compileWith(h, repl, nil, nil)
}

// compileWith is compile with the tokens of a shared store (redis) added
// last. The store is written by others, so one bad entry must not stop the
// rest: an entry that does not compile is left out and passed to skip.
func compileWith(h *Handler, repl *caddy.Replacer, shared []labeledEntry, skip func(label string, err error)) (*table, error) {
	c := &compiler{
		repl: repl,
		b:    newTableBuilder(len(h.Tokens)),
		labels: labelIndex{
			byHash:  make(map[uint64]uint32, len(h.Tokens)),
			collide: map[string]uint32{},
			seed:    maphash.MakeSeed(),
		},
	}
	if err := c.compileSets(h.IPSets); err != nil {
		return nil, err
	}

	switch h.MissingToken {
	case "", MissingAllow:
		c.b.t.missingAllow = true
	case MissingDeny:
	default:
		return nil, fmt.Errorf("missing_token %q: must be %s or %s", h.MissingToken, MissingAllow, MissingDeny)
	}

	unlisted := h.Unlisted
	if unlisted == nil {
		unlisted = &Policy{Allow: []string{KeywordAny}}
	}
	p, err := c.policy("", unlisted.Allow, unlisted.Deny)
	if err != nil {
		return nil, fmt.Errorf("unlisted: %w", err)
	}
	c.b.t.unlisted = p

	labels := make([]string, 0, len(h.Tokens))
	for label := range h.Tokens {
		labels = append(labels, label)
	}
	slices.Sort(labels)
	c.from("tokens")
	for _, label := range labels {
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
		c.from("redis")
		c.b.grow(len(shared))
		for _, e := range shared {
			err := e.err
			if err != nil {
				err = fmt.Errorf("token %q: %w", e.label, err)
			} else {
				err = c.addToken(e.label, &e.tp, "redis")
			}
			if err != nil && skip != nil {
				skip(e.label, err)
			}
		}
	}
	return c.b.finish(), nil
}

func (c *compiler) compileSets(sets map[string][]string) error {
	c.sets = make(map[string][]netipx.IPRange, len(sets))
	names := make([]string, 0, len(sets))
	for name := range sets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !IsSetName(name) {
			return fmt.Errorf("ip_set %q: a set name starts with a letter or _ and has only letters, digits, _ and -, and is not any, private_ranges or none", name)
		}
		var all []netipx.IPRange
		for i, entry := range sets[name] {
			if _, isSet := sets[entry]; isSet {
				return fmt.Errorf("ip_set %q: [%d] %q: a set cannot contain another set; list its ranges", name, i, entry)
			}
			rs, err := ParseRange(entry)
			if err != nil {
				return fmt.Errorf("ip_set %q: [%d] %q: %w", name, i, entry, err)
			}
			all = append(all, rs...)
		}
		c.sets[name] = all
	}
	return nil
}

// collect resolves entries (ranges and set names) into dst, normalized.
func (c *compiler) collect(dst *spanLists, field string, entries []string) error {
	dst.reset()
	var one [2]netipx.IPRange
	for i, entry := range entries {
		rs, ok := c.sets[entry]
		if !ok {
			if IsSetName(entry) {
				return fmt.Errorf("%s[%d] %q: unknown ip_set", field, i, entry)
			}
			var err error
			if rs, err = appendRange(one[:0], entry); err != nil {
				return fmt.Errorf("%s[%d] %q: %w", field, i, entry, err)
			}
		}
		for _, r := range rs {
			dst.add(r)
		}
	}
	dst.normalize()
	return nil
}

// policy compiles allow and deny: the table keeps allow minus deny, and the
// part of deny inside allow, which tells ip_denied from ip_not_allowed.
func (c *compiler) policy(label string, allow, deny []string) (policy, error) {
	if err := c.collect(&c.allow, "allow", allow); err != nil {
		return policy{}, err
	}
	if err := c.collect(&c.deny, "deny", deny); err != nil {
		return policy{}, err
	}
	c.allowed.v4 = subtractSpans(c.allowed.v4[:0], c.allow.v4, c.deny.v4)
	c.allowed.v6 = subtractSpans(c.allowed.v6[:0], c.allow.v6, c.deny.v6)
	c.denied.v4 = intersectSpans(c.denied.v4[:0], c.allow.v4, c.deny.v4)
	c.denied.v6 = intersectSpans(c.denied.v6[:0], c.allow.v6, c.deny.v6)
	return c.b.addPolicy(label, &c.allowed, &c.denied)
}

// addToken validates and compiles one listed token. where says where it was
// defined ("tokens" or a file), for the duplicate-label error.
func (c *compiler) addToken(label string, tp *TokenPolicy, where string) error {
	if err := CheckLabel(label); err != nil {
		return err
	}
	if i, dup := c.labels.find(c.b, label); dup {
		return fmt.Errorf("token %q: label defined twice, in %s and in %s", label, c.originOf(i), where)
	}
	if tp == nil {
		return fmt.Errorf("token %q: no token or token_sha256 given", label)
	}
	digest, err := c.digest(tp)
	if err != nil {
		return fmt.Errorf("token %q: %w", label, err)
	}
	if other, dup := c.b.lookup(digest); dup {
		return fmt.Errorf("token %q: same token as %q; a token can have one label only", label, other)
	}
	if len(tp.Allow) == 0 {
		return fmt.Errorf("token %q: allow is empty; list where the token may be used from (use any for everywhere)", label)
	}
	p, err := c.policy(label, tp.Allow, tp.Deny)
	if err != nil {
		return fmt.Errorf("token %q: %w", label, err)
	}
	c.labels.add(c.b, label, c.b.addToken(digest, p))
	return nil
}

type origin struct {
	start uint32
	where string
}

// from records that the tokens added from now on are defined in where.
func (c *compiler) from(where string) {
	c.origins = append(c.origins, origin{uint32(len(c.b.t.policies)), where})
}

func (c *compiler) originOf(i uint32) string {
	where := ""
	for _, o := range c.origins {
		if o.start <= i {
			where = o.where
		}
	}
	return where
}

// labelIndex finds a label among the tokens added so far without keeping a
// string per token: it maps a hash of the label to the token's index, and
// the label itself is compared in the table. Labels whose hash another
// label already has go in collide.
type labelIndex struct {
	byHash  map[uint64]uint32
	collide map[string]uint32
	seed    maphash.Seed
}

func (x *labelIndex) find(b *tableBuilder, label string) (uint32, bool) {
	if i, ok := x.byHash[maphash.String(x.seed, label)]; ok && b.t.label(&b.t.policies[i]).String() == label {
		return i, true
	}
	i, ok := x.collide[label]
	return i, ok
}

func (x *labelIndex) add(b *tableBuilder, label string, i uint32) {
	h := maphash.String(x.seed, label)
	if _, taken := x.byHash[h]; taken {
		x.collide[label] = i
		return
	}
	x.byHash[h] = i
}

// digest returns the SHA-256 of the policy's token, resolving a placeholder
// first. Errors never include the token.
func (c *compiler) digest(tp *TokenPolicy) ([32]byte, error) {
	if tp.Token != "" && tp.TokenSHA256 != "" {
		return [32]byte{}, errors.New("set token or token_sha256, not both")
	}
	if tp.TokenSHA256 != "" {
		return ParseDigest(tp.TokenSHA256)
	}
	tok := tp.Token
	if IsPlaceholder(tok) {
		v, err := c.repl.ReplaceOrErr(tok, true, true)
		if err != nil {
			return [32]byte{}, fmt.Errorf("token %s: %w", tok, err)
		}
		tok = v
	} else if strings.HasPrefix(tok, DigestPrefix) {
		return [32]byte{}, errors.New("token starts with sha256:; put a digest in token_sha256 without the prefix")
	}
	if err := CheckToken(tok); err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256([]byte(tok)), nil
}

// DigestPrefix marks a token given as its SHA-256 in the Caddyfile.
const DigestPrefix = "sha256:"

// CheckToken refuses tokens that cannot be what the user meant.
func CheckToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("empty token")
	case strings.TrimSpace(tok) != tok:
		return errors.New("the token has leading or trailing white space; tokens are compared byte for byte")
	}
	return nil
}

// ParseDigest parses 64 hex digits.
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	if len(s) != 64 {
		return d, fmt.Errorf("malformed sha256 digest: want 64 hex digits, got %d characters", len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, errors.New("malformed sha256 digest: not hex")
	}
	return d, nil
}

// IsPlaceholder reports whether s is exactly one placeholder, such as
// {env.PARTNER_A}. A token with braces elsewhere is taken literally.
func IsPlaceholder(s string) bool {
	return len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' && strings.Count(s, "{") == 1 && strings.Count(s, "}") == 1
}

// Fingerprint is the default label of a token given in the Caddyfile
// without one: sha256: and the first 12 hex digits of its SHA-256.
func Fingerprint(digest [32]byte) string {
	return DigestPrefix + hex.EncodeToString(digest[:6])
}

// CheckLabel refuses labels that would not be a plain admin API path segment.
func CheckLabel(label string) error {
	if label == "" || len(label) > 128 {
		return fmt.Errorf("token label %q: a label has 1 to 128 characters", label)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:-", c) >= 0) {
			return fmt.Errorf("token label %q: use letters, digits, _ . : and - only, so the label is a plain admin API path segment", label)
		}
	}
	return nil
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
	if info, err := f.Stat(); err == nil {
		// An entry takes 100 bytes or more, so this bounds the tokens to come.
		c.b.grow(int(info.Size() / 100))
	}

	return eachTokenBatch(f, func(entries []tokenEntry) error {
		for i := range entries {
			if err := c.addToken(entries[i].label, &entries[i].tp, where); err != nil {
				return err
			}
		}
		return nil
	})
}

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
