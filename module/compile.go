package ipallowlist

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	owners map[[32]byte]string // digest -> label, to name both sides of a duplicate
	seen   map[string]string   // label -> where it was defined
}

// compile validates h and builds its table. Placeholders in tokens are
// resolved with repl.
func compile(h *Handler, repl *caddy.Replacer) (*table, error) {
	c := &compiler{
		repl:   repl,
		b:      newTableBuilder(len(h.Tokens)),
		owners: make(map[[32]byte]string, len(h.Tokens)),
		seen:   make(map[string]string, len(h.Tokens)),
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

// ipSet resolves entries (ranges and set names) into one set.
func (c *compiler) ipSet(field string, entries []string) (*netipx.IPSet, error) {
	var b netipx.IPSetBuilder
	for i, entry := range entries {
		if rs, ok := c.sets[entry]; ok {
			for _, r := range rs {
				b.AddRange(r)
			}
			continue
		}
		if IsSetName(entry) {
			return nil, fmt.Errorf("%s[%d] %q: unknown ip_set", field, i, entry)
		}
		rs, err := ParseRange(entry)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] %q: %w", field, i, entry, err)
		}
		for _, r := range rs {
			b.AddRange(r)
		}
	}
	return b.IPSet()
}

func (c *compiler) policy(label string, allow, deny []string) (policy, error) {
	a, err := c.ipSet("allow", allow)
	if err != nil {
		return policy{}, err
	}
	d, err := c.ipSet("deny", deny)
	if err != nil {
		return policy{}, err
	}
	return c.b.compilePolicy(label, a, d)
}

// addToken validates and compiles one listed token. where says where it was
// defined ("tokens" or a file), for the duplicate-label error.
func (c *compiler) addToken(label string, tp *TokenPolicy, where string) error {
	if err := CheckLabel(label); err != nil {
		return err
	}
	if prev, dup := c.seen[label]; dup {
		return fmt.Errorf("token %q: label defined twice, in %s and in %s", label, prev, where)
	}
	c.seen[label] = where
	if tp == nil {
		return fmt.Errorf("token %q: no token or token_sha256 given", label)
	}
	digest, err := c.digest(tp)
	if err != nil {
		return fmt.Errorf("token %q: %w", label, err)
	}
	if other, dup := c.owners[digest]; dup {
		return fmt.Errorf("token %q: same token as %q; a token can have one label only", label, other)
	}
	c.owners[digest] = label
	if len(tp.Allow) == 0 {
		return fmt.Errorf("token %q: allow is empty; list where the token may be used from (use any for everywhere)", label)
	}
	p, err := c.policy(label, tp.Allow, tp.Deny)
	if err != nil {
		return fmt.Errorf("token %q: %w", label, err)
	}
	c.b.addToken(digest, p)
	return nil
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
// a million tokens is never held whole in memory.
func (c *compiler) addTokensFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(f, 1<<16))
	dec.DisallowUnknownFields()
	if t, err := dec.Token(); err != nil {
		return jsonErr(err)
	} else if t != json.Delim('{') {
		return errors.New("want a JSON object of label to token")
	}
	where := fmt.Sprintf("tokens_file %q", path)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		label := t.(string)
		var tp TokenPolicy
		if err := dec.Decode(&tp); err != nil {
			return fmt.Errorf("token %q: %v", label, jsonErr(err))
		}
		if err := c.addToken(label, &tp, where); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return jsonErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
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
