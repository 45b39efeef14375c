package ipallowlist

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go4.org/netipx"
)

// The rules a token entry obeys, whatever its source: the Caddyfile (through
// Checker), JSON config, tokens files, Redis entries and the tokens CLI
// (through checkStoreEntry) all compile entries through compiler.addToken.
// It applies the rules below, and in compile.go the two that need the
// compiler's index: the same token, or the same label, twice. Each rule
// lives in one place.

// entryOrigin says who wrote the entries a compiler takes, since a few rules
// differ by it.
type entryOrigin uint8

const (
	// originConfig: Caddyfile, JSON, tokens files. Placeholders are
	// resolved at provision; an unknown set name is an error.
	originConfig entryOrigin = iota
	// originStore: a shared store, written by others. Entries are data: a
	// placeholder is refused, and an unknown set name matches nothing
	// (nodes may define different sets).
	originStore
	// originWriter: the machine writing a store (the tokens CLI). Set
	// names are the nodes', so they cannot be checked here.
	originWriter
	// originChange: one token changed on this node (applyToken). Entries
	// are data, as a store's, but the node knows its sets, so an unknown
	// set name is an error, and the change is refused.
	originChange
)

// DigestPrefix marks a token given as its SHA-256 in the Caddyfile.
const DigestPrefix = "sha256:"

// minTokenLen is the shortest literal token accepted. A shorter one can be
// found by trying, for instance from its default label (12 hex digits of
// its SHA-256).
const minTokenLen = 16

// Limits of the over-broad rule: an allow entry of a listed token may admit
// at most an IPv4 /8 or an IPv6 /32, unless the token says allow_broad.
const (
	broadV4 = 1 << 24
	broadV6 = 1 << 96 // as a float64, exact
)

// checkSecret refuses a token (the secret itself, after any placeholder is
// resolved) that cannot be what the user meant. Its errors never include
// the token.
func checkSecret(tok string) error {
	switch {
	case tok == "":
		return errors.New("empty token")
	case strings.TrimSpace(tok) != tok:
		return errors.New("the token has leading or trailing white space; tokens are compared byte for byte")
	case looksLikeRange(tok):
		return errors.New("the token is an IP address, range or keyword, not a secret; " +
			"if it was written as {$VAR}, that variable is unset and the next argument took its place: " +
			"write {env.VAR}, which is refused when unset")
	case len(tok) < minTokenLen:
		return fmt.Errorf("the token is %d bytes; tokens shorter than %d bytes can be guessed: make one with caddy ip-allowlist new-token", len(tok), minTokenLen)
	}
	return nil
}

func looksLikeRange(s string) bool {
	if s == KeywordAny || s == KeywordPrivateRanges || s == KeywordNone {
		return true
	}
	if !addressShaped(s) {
		return false // most tokens: no parse, no error to allocate
	}
	_, err := parseRange(s)
	return err == nil
}

// checkTokenText refuses a literal token written where a placeholder may
// stand: braces are kept for exactly one whole placeholder.
func checkTokenText(tok string) error {
	if strings.ContainsAny(tok, "{}") && !isPlaceholder(tok) {
		return errors.New("the token has { or }: only one whole placeholder, {env.NAME} or {file.PATH}, is resolved; a token with braces elsewhere is refused")
	}
	if strings.HasPrefix(tok, DigestPrefix) {
		return errors.New("token starts with sha256:; put a digest in token_sha256")
	}
	return nil
}

// isPlaceholder reports whether s is exactly one placeholder that a token
// may be: {env.NAME} or {file.PATH}.
func isPlaceholder(s string) bool {
	if len(s) < 3 || s[0] != '{' || s[len(s)-1] != '}' || strings.Count(s, "{") != 1 || strings.Count(s, "}") != 1 {
		return false
	}
	inner := s[1 : len(s)-1]
	return strings.HasPrefix(inner, "env.") && len(inner) > len("env.") ||
		strings.HasPrefix(inner, "file.") && len(inner) > len("file.")
}

// IsPlaceholder reports whether a token is one placeholder, resolved at
// provision, rather than the secret itself.
func IsPlaceholder(s string) bool { return isPlaceholder(s) }

// ParseDigest parses a token's SHA-256: 64 hex digits, with or without
// sha256: in front, as hash-token prints it.
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	s = strings.TrimPrefix(s, DigestPrefix)
	if len(s) != 64 {
		return d, fmt.Errorf("malformed sha256 digest: want 64 hex digits, got %d characters", len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, errors.New("malformed sha256 digest: not hex")
	}
	return d, nil
}

// Fingerprint is the default label of a token given in the Caddyfile
// without one: sha256: and the first 12 hex digits of its SHA-256.
func Fingerprint(digest [32]byte) string {
	return DigestPrefix + hex.EncodeToString(digest[:6])
}

// checkLabel refuses labels that would not be a plain admin API path segment.
func checkLabel(label string) error {
	if err := labelRule(label); err != nil {
		return fmt.Errorf("token label %q: %w", label, err)
	}
	return nil
}

func labelRule(label string) error {
	if label == "" || len(label) > 128 {
		return errors.New("a label has 1 to 128 characters")
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:-", c) >= 0) {
			return errors.New("use letters, digits, _ . : and - only, so the label is a plain admin API path segment")
		}
	}
	if label == "." || label == ".." {
		// A path segment that URL cleaning removes: no route could
		// name it.
		return errors.New(`"." and ".." are no label: they are no path segment a route can name`)
	}
	return nil
}

// tokenDigest applies the token rules to tp and returns its digest. known is
// false for a placeholder the compiler does not resolve (Checker).
func (c *compiler) tokenDigest(tp *TokenPolicy) (digest [32]byte, known bool, err error) {
	switch {
	case tp.Token != "" && tp.TokenSHA256 != "":
		return digest, false, errors.New("set token or token_sha256, not both")
	case tp.TokenSHA256 != "":
		digest, err = ParseDigest(tp.TokenSHA256)
		return digest, err == nil, err
	case tp.Token == "":
		return digest, false, errors.New("empty token: set token or token_sha256")
	}
	tok := tp.Token
	if err := checkTokenText(tok); err != nil {
		return digest, false, err
	}
	if isPlaceholder(tok) {
		switch {
		case c.origin != originConfig:
			return digest, false, errors.New("the token is a placeholder; store entries are data and hold token_sha256 (tokens import resolves placeholders before writing)")
		case c.repl == nil:
			return digest, false, nil
		}
		v, err := c.repl.ReplaceOrErr(tok, true, true)
		if err != nil {
			return digest, false, fmt.Errorf("token %s: %w", tok, err)
		}
		if err := checkSecret(v); err != nil {
			return digest, false, fmt.Errorf("token %s: %w", tok, err)
		}
		return sha256.Sum256([]byte(v)), true, nil
	}
	if err := checkSecret(tok); err != nil {
		return digest, false, err
	}
	return sha256.Sum256([]byte(tok)), true, nil
}

// checkAllow is the rule that a token says where it may be used from. A
// store's entry may have an empty allow list (its entries removed or
// expired one by one): it stays listed, and is refused everywhere. Only
// where an entry is written whole (the config, a PUT, an import, the CLI)
// is an empty list taken for a mistake.
func (c *compiler) checkAllow(tp *TokenPolicy) error {
	if len(tp.Allow) == 0 && !tp.Revoked && !tp.Suspended && !c.emptyAllow && (c.origin == originConfig || c.origin == originWriter) {
		return errors.New("allow is empty; list where the token may be used from (use any for everywhere), or set revoked to refuse it")
	}
	return nil
}

// setDef is a compiled ip_set.
type setDef struct {
	ranges []netipx.IPRange
	// What the set admits, less any and private_ranges, for the
	// over-broad rule: IPv4 addresses, and IPv6 addresses as a float64.
	v4 uint64
	v6 float64
}

// compileSets applies the set rules: names look like names, entries are
// ranges, and sets do not nest.
func (c *compiler) compileSets(sets map[string][]string) error {
	c.sets = make(map[string]*setDef, len(sets))
	for _, name := range sortedKeys(sets) {
		if !isSetName(name) {
			return &ConfigError{Set: name, Err: errors.New("a set name starts with a letter or _ and has only letters, digits, _ and -, and is not any, private_ranges or none")}
		}
		def := &setDef{}
		var counted spanLists
		for i, entry := range sets[name] {
			if _, isSet := sets[entry]; isSet {
				return &ConfigError{Set: name, Err: &EntryError{"", i, entry, errors.New("a set cannot contain another set; list its ranges")}}
			}
			if isDNSEntry(entry) {
				return &ConfigError{Set: name, Err: &EntryError{"", i, entry, errors.New("a set holds ranges only; list dns: names in a token's allow")}}
			}
			rs, err := parseRange(entry)
			if err != nil {
				return &ConfigError{Set: name, Err: &EntryError{"", i, entry, err}}
			}
			def.ranges = append(def.ranges, rs...)
			if entry != KeywordAny && entry != KeywordPrivateRanges {
				for _, r := range rs {
					counted.add(r)
				}
			}
		}
		if len(def.ranges) == 0 {
			return &ConfigError{Set: name, Err: errors.New("no ranges")}
		}
		counted.normalize()
		def.v4, def.v6 = counted.size()
		c.sets[name] = def
	}
	return nil
}

// collect applies the range rules to entries (ranges and set names) and
// resolves them into dst, normalized. With broad false, an allow entry may
// admit at most an IPv4 /8 or an IPv6 /32.
func (c *compiler) collect(dst *spanLists, field string, entries []string, broad bool) error {
	dst.reset()
	var one [2]netipx.IPRange
	for i, entry := range entries {
		var rs []netipx.IPRange
		var v4 uint64
		var v6 float64
		if def, ok := c.sets[entry]; ok {
			rs, v4, v6 = def.ranges, def.v4, def.v6
		} else if isDNSEntry(entry) {
			if err := c.collectName(field, entry); err != nil {
				return &EntryError{field, i, entry, err}
			}
			continue
		} else if isSetName(entry) {
			switch c.origin {
			case originWriter:
				continue // the nodes' sets: not known here
			case originStore:
				if c.unknownSet != nil {
					c.unknownSet(entry)
				}
				continue // matches nothing on this node
			}
			return &EntryError{field, i, entry, fmt.Errorf("unknown ip_set%s", noneHint(entry))}
		} else {
			var err error
			if rs, err = appendRange(one[:0], entry); err != nil {
				if joined := spacedRange(entries, i); joined != "" {
					err = fmt.Errorf("a range is written without spaces: %s", joined)
				}
				if hint := noneHint(entry); hint != "" {
					err = fmt.Errorf("%w%s", err, hint)
				}
				return &EntryError{field, i, entry, err}
			}
			if entry != KeywordAny && entry != KeywordPrivateRanges {
				v4, v6 = rangeSize(rs[0])
			}
		}
		if !broad && (v4 > broadV4 || v6 > broadV6) {
			return &EntryError{field, i, entry, fmt.Errorf("admits %s, more than an IPv4 /8 or an IPv6 /32; narrow it, or set allow_broad on the token if that is meant",
				addressCount(v4, v6))}
		}
		for _, r := range rs {
			dst.add(r)
		}
	}
	dst.normalize()
	return nil
}

// spacedRange returns the range that entries[i] and its neighbours make
// when joined, as a range written with spaces around its '-' is split into
// entries ("192.0.2.10", "-", "192.0.2.20"), or "" if they make none.
func spacedRange(entries []string, i int) string {
	e := entries[i]
	var joined string
	switch {
	case e == "-" && i > 0 && i+1 < len(entries):
		joined = entries[i-1] + e + entries[i+1]
	case strings.HasSuffix(e, "-") && i+1 < len(entries):
		joined = e + entries[i+1]
	case strings.HasPrefix(e, "-") && i > 0:
		joined = entries[i-1] + e
	default:
		return ""
	}
	if _, err := parseStartEnd(joined); err != nil {
		return ""
	}
	return joined
}

// collectName applies the rules of a dns: entry and, where names are
// resolved, adds its name to the policy's.
func (c *compiler) collectName(field, entry string) error {
	name, err := parseDNSEntry(entry)
	switch {
	case err != nil:
		return err
	case field != "allow" || !c.namesOK:
		return errors.New("a dns: name may be only in a token's allow list")
	}
	if err := c.checkNameQuota(); err != nil {
		return err
	}
	if c.dns != nil {
		n := c.dns.name(name, c.tenant)
		if !slices.Contains(c.names, n) {
			c.names = append(c.names, n)
		}
	}
	return nil
}

// noneHint helps with a word used where a range is, as in unlisted_tokens deny.
func noneHint(entry string) string {
	switch entry {
	case KeywordNone, "deny", "nowhere":
		return "; to allow nowhere, write unlisted_tokens none in the Caddyfile, or an empty allow list in JSON"
	}
	return ""
}

// rangeSize is how many addresses r admits, by family.
func rangeSize(r netipx.IPRange) (v4 uint64, v6 float64) {
	if r.From().Is4() {
		return addrKey(r.To()).lo - addrKey(r.From()).lo + 1, 0
	}
	return 0, spanSize6(addrKey(r.From()), addrKey(r.To()))
}

// spanSize6 is hi-lo+1 as a float64.
func spanSize6(lo, hi u128) float64 {
	d := hi.minus(lo)
	return float64(d.hi)*(1<<64) + float64(d.lo) + 1
}

// size is how many addresses normalized lists admit, by family.
func (l *spanLists) size() (v4 uint64, v6 float64) {
	for _, s := range l.v4 {
		v4 += s.hi.lo - s.lo.lo + 1
	}
	for _, s := range l.v6 {
		v6 += spanSize6(s.lo, s.hi)
	}
	return v4, v6
}

func addressCount(v4 uint64, v6 float64) string {
	if v6 > 0 {
		return fmt.Sprintf("about 2^%.0f IPv6 addresses", math.Log2(v6))
	}
	return fmt.Sprintf("%s IPv4 addresses", thousands(v4))
}

func thousands(n uint64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// quoteEntry quotes a range entry for an error message, unless it may be a
// token written in the wrong place (as in token 203.0.113.7 <secret>): an
// entry that is not shaped like an address, and a set name as long as a
// token, are shown by their length only.
func quoteEntry(s string) string {
	if len(s) < minTokenLen && !strings.ContainsFunc(s, unicode.IsControl) {
		// Too short to be a literal token: the config refuses those.
		return fmt.Sprintf("%q", s)
	}
	if isDNSEntry(s) && len(s) <= len(DNSPrefix)+253 {
		if ok, _, _ := nameChars(s[len(DNSPrefix):]); ok {
			return fmt.Sprintf("%q", s)
		}
	}
	if isSetName(s) {
		return fmt.Sprintf("(an entry of %d characters, not shown in case it is a token)", len(s))
	}
	if len(s) <= maxRangeLen && addressShaped(s) {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("(an entry of %d characters that is no address, not shown in case it is a token)", len(s))
}

// addressShaped reports whether s is made of what addresses, prefixes and
// ranges are made of (hex digits, . : / -, and a %zone), with a . or a :;
// spaces and commas too, as a list or a range mistyped has them. No run of
// hex digits is longer than 8 (an address's are at most 4), and a zone is
// an interface name's length at most, so that a hex token glued to an
// address ("203.0.113.5,9f86d0…") is not shown.
func addressShaped(s string) bool {
	addr, zone, _ := strings.Cut(s, "%")
	if !strings.ContainsAny(addr, ".:") || len(zone) > 15 {
		return false
	}
	run := 0
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		switch {
		case c >= '0' && c <= '9' || (c|0x20) >= 'a' && (c|0x20) <= 'f':
			if run++; run > 8 {
				return false
			}
		case strings.IndexByte(".:/-, ", c) >= 0:
			run = 0
		default:
			return false
		}
	}
	return true
}

// ConfigError is a configuration error about one named part of a config,
// so that an adapter can point at the line that defined it.
type ConfigError struct {
	Token string // the label of the token it is about
	Set   string // or the name of the ip_set
	Field string // or the field: unlisted, token_sources[i], ...
	Err   error
}

func (e *ConfigError) Error() string {
	switch {
	case e.Token != "":
		return fmt.Sprintf("token %q: %v", e.Token, e.Err)
	case e.Set != "":
		return fmt.Sprintf("ip_set %q: %v", e.Set, e.Err)
	case e.Field != "":
		return fmt.Sprintf("%s: %v", e.Field, e.Err)
	}
	return e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// EntryError is an error about one entry of a list of ranges, such as
// allow[2], so that an adapter can point at the line that holds it.
type EntryError struct {
	Field string // allow or deny
	Index int
	Entry string // quoted in Error only where it cannot be a token
	Err   error
}

func (e *EntryError) Error() string {
	q := quoteEntry(e.Entry)
	msg := e.Err.Error()
	if !strings.HasPrefix(q, `"`) {
		msg = redactEntry(msg, e.Entry)
	}
	return fmt.Sprintf("%s[%d] %s: %s", e.Field, e.Index, q, msg)
}

// redactEntry takes out of msg, a parser's words about an entry that is
// not shown, every quoted string made of the entry or a part of it (the
// parsers quote what they repeat: netip's `(at "…")`, our `range %q`), and
// the entry itself wherever it stands unquoted. A hidden entry is at least
// minTokenLen long, so no word of the message is taken for it.
func redactEntry(msg, entry string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(msg, '"')
		if i < 0 {
			break
		}
		q, err := strconv.QuotedPrefix(msg[i:])
		if err != nil {
			break
		}
		b.WriteString(msg[:i])
		switch u, _ := strconv.Unquote(q); {
		case u == entry:
			b.WriteString("(the entry)")
		case u != "" && strings.Contains(entry, u):
			b.WriteString("(part of the entry)")
		default:
			b.WriteString(q)
		}
		msg = msg[i+len(q):]
	}
	b.WriteString(msg)
	return strings.ReplaceAll(b.String(), entry, "(the entry)")
}

func (e *EntryError) Unwrap() error { return e.Err }

// The duplicate rule: two allow (or two deny) entries of one token that
// admit the same range, however written (127.0.0.9, 127.0.0.9/32 and
// 127.0.0.9-127.0.0.9 are one), are one entry. A write that would hold
// both is refused (refuseDuplicates); an entry read from the config or a
// store, or imported, keeps one of them (mergeDuplicates), so that nothing
// that loaded before stops loading. Add More and removal find an entry by
// the same key (findEntry), so that a removal removes every copy.

// entryKey is an entry in canonical form: its range, or, for a dns: name,
// a set name, a keyword or an entry that does not parse, its text (names
// are lower case without a trailing dot, or refused).
type entryKey struct {
	r netipx.IPRange
	s string
}

func keyOf(entry string) entryKey {
	if isDNSEntry(entry) || isSetName(entry) {
		return entryKey{s: entry}
	}
	var one [2]netipx.IPRange
	rs, err := appendRange(one[:0], entry)
	if err != nil || len(rs) != 1 {
		return entryKey{s: entry} // refused by the range rules, or a keyword
	}
	return entryKey{r: rs[0]}
}

// findEntry is the index of the entry of list that is entry's range, or -1.
func findEntry(list []string, entry string) int {
	k := keyOf(entry)
	for i, e := range list {
		if e == entry || keyOf(e) == k {
			return i
		}
	}
	return -1
}

// duplicates lists, for each entry of list that repeats an earlier one,
// the pair {first, repeat} of their indexes, by repeat.
func duplicates(list []string) [][2]int {
	if len(list) < 2 {
		return nil
	}
	var out [][2]int
	if len(list) <= 8 {
		// Most lists: no map to allocate.
		var small [8]entryKey
		keys := small[:0]
		for i, e := range list {
			k := keyOf(e)
			if j := slices.Index(keys, k); j >= 0 {
				out = append(out, [2]int{j, i})
			}
			keys = append(keys, k)
		}
		return out
	}
	first := make(map[entryKey]int, len(list))
	for i, e := range list {
		k := keyOf(e)
		if j, seen := first[k]; seen {
			out = append(out, [2]int{j, i})
			continue
		}
		first[k] = i
	}
	return out
}

// repeatedEntries names the entries of tp that repeat an earlier one, as
// "allow[1] \"127.0.0.9/32\"", for the WARN of mergeDuplicates.
func repeatedEntries(tp *TokenPolicy) []string {
	var out []string
	for _, f := range [...]struct {
		name string
		list []string
	}{{"allow", tp.Allow}, {"deny", tp.Deny}} {
		for _, d := range duplicates(f.list) {
			out = append(out, fmt.Sprintf("%s[%d] %s", f.name, d[1], quoteEntry(f.list[d[1]])))
		}
	}
	return out
}

// refuseDuplicates is the duplicate rule where an entry is written whole
// (a PUT, a new token, the CLI's put): an entry listed twice is a mistake,
// refused with both named.
func refuseDuplicates(label string, tp *TokenPolicy) error {
	if err := duplicateError("allow", tp.Allow); err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	if err := duplicateError("deny", tp.Deny); err != nil {
		return &ConfigError{Token: label, Err: err}
	}
	return nil
}

// duplicateError names the first entry of list (field: allow, deny, the
// entries Add More is given) that repeats an earlier one, and that one.
func duplicateError(field string, list []string) error {
	d := duplicates(list)
	if len(d) == 0 {
		return nil
	}
	first, again := d[0][0], d[0][1]
	return &EntryError{field, again, list[again],
		fmt.Errorf("the same range as %s[%d] %s; list each range once", field, first, quoteEntry(list[first]))}
}

// mergeDuplicates is the duplicate rule where an entry is read and then
// changed (an edit of a stored entry): tp with each range listed once, at
// its first place. A merged allow entry keeps the longest life of its
// copies (permanent if any copy is) and the first note given. tp itself
// is returned when it has no duplicate; it is never changed. A compile
// needs no merge: copies admit their range as one entry would, for as
// long as the longest-lived of them; it logs them (repeatedEntries).
func mergeDuplicates(tp *TokenPolicy) *TokenPolicy {
	da, dd := duplicates(tp.Allow), duplicates(tp.Deny)
	if len(da) == 0 && len(dd) == 0 {
		return tp
	}
	c := *tp
	c.Expires, c.Notes = maps.Clone(tp.Expires), maps.Clone(tp.Notes)
	for _, d := range da {
		keep, drop := tp.Allow[d[0]], tp.Allow[d[1]]
		if keep == drop {
			continue // one key of expires and notes serves both
		}
		at, temporary := c.Expires[keep]
		dropAt, dropTemporary := tp.Expires[drop]
		switch {
		case !temporary:
		case !dropTemporary:
			delete(c.Expires, keep) // permanent
		case laterExpiry(dropAt, at):
			c.Expires[keep] = dropAt
		}
		delete(c.Expires, drop)
		if note, ok := tp.Notes[drop]; ok {
			if _, has := c.Notes[keep]; !has {
				c.Notes[keep] = note
			}
			delete(c.Notes, drop)
		}
	}
	c.Allow, c.Deny = dropIndexes(tp.Allow, da), dropIndexes(tp.Deny, dd)
	if len(c.Expires) == 0 {
		c.Expires = nil
	}
	if len(c.Notes) == 0 {
		c.Notes = nil
	}
	return &c
}

// laterExpiry reports whether expiry time a is later than b. A time that
// does not parse counts as later, so that it is kept, and refused by the
// expiry rule, rather than dropped unseen.
func laterExpiry(a, b string) bool {
	ta, errA := time.Parse(time.RFC3339, a)
	tb, errB := time.Parse(time.RFC3339, b)
	return errA != nil || errB == nil && ta.After(tb)
}

// dropIndexes is list without the repeats dups names.
func dropIndexes(list []string, dups [][2]int) []string {
	if len(dups) == 0 {
		return list
	}
	out := make([]string, 0, len(list)-len(dups))
	j := 0
	for i, e := range list {
		if j < len(dups) && dups[j][1] == i {
			j++
			continue
		}
		out = append(out, e)
	}
	return out
}
