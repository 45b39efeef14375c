package ipallowlist

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/ipallowlist/caddy-ip-allowlist/internal/tokenstore"
)

// The token store's admin routes (see openapi.json, which they serve, and
// docs/operations.md):
//
//	GET    /ip-allowlist/tokens?after=&limit=          a page of entries
//	GET    /ip-allowlist/tokens/<label>                one entry, with an ETag
//	PUT    /ip-allowlist/tokens/<label>                create or replace
//	DELETE /ip-allowlist/tokens/<label>[?unrestrict=true]  revoke (or remove)
//	POST   /ip-allowlist/tokens/<label>/allow          Add More
//	DELETE /ip-allowlist/tokens/<label>/allow/<entry>  remove one entry
//	POST   /ip-allowlist/tokens/<label>/{suspend,resume,promote}
//	POST   /ip-allowlist/import, GET /ip-allowlist/export
//	GET    /ip-allowlist/openapi.json
//
// Every route takes ?store=<name> where several stores are open.
//
// Each route reads its request and calls one fileStore method (listPage,
// putEntry, revokeEntry, allowEntries, removeEntry, setSuspended,
// importStream, export), which does the work and returns an error with
// the route's status: `caddy ip-allowlist tokens --store` calls the same
// methods, so the CLI and the routes cannot drift.

//go:embed openapi.json
var openAPIDocument []byte

// maxBody bounds a request body, but an import's.
const maxBody = 1 << 20

// entryOut is an entry as the routes answer it.
type entryOut struct {
	Label string `json:"label"`
	*TokenPolicy
	Rev    uint64 `json:"rev"`
	Source string `json:"source"`
}

func newEntryOut(label string, s stored) entryOut {
	tp := s.tp
	return entryOut{Label: label, TokenPolicy: &tp, Rev: s.rev, Source: "store"}
}

// allowBody is Add More's request.
type allowBody struct {
	Entries []string `json:"entries"`
	Expires string   `json:"expires,omitempty"`
	TTL     string   `json:"ttl,omitempty"`
	Note    string   `json:"note,omitempty"`
}

// promoteBody is promote's request.
type promoteBody struct {
	MinRequests int `json:"min_requests"`
}

// apiErr is a route's refusal with its status.
func apiErr(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

// storeErr answers an error of the store or of the rules with its status:
// the caller's mistakes are 4xx, naming the entry.
func storeErr(err error) error {
	var conflict *ConflictError
	var taken *tokenstore.DigestTakenError
	var cfg *ConfigError
	var entry *EntryError
	switch {
	case errors.As(err, &conflict), errors.As(err, &taken), errors.Is(err, tokenstore.ErrDigestFixed):
		return apiErr(http.StatusConflict, err)
	case errors.Is(err, tokenstore.ErrPrecondition):
		return apiErr(http.StatusPreconditionFailed, err)
	case errors.Is(err, tokenstore.ErrNotFound):
		return apiErr(http.StatusNotFound, err)
	case errors.As(err, &cfg), errors.As(err, &entry):
		return apiErr(http.StatusBadRequest, err)
	case errors.Is(err, errNoStore), errors.Is(err, errStoreNotOpen):
		return apiErr(http.StatusServiceUnavailable, err)
	}
	return apiErr(http.StatusInternalServerError, err)
}

// routeStore picks the store a request names.
func routeStore(r *http.Request) (*fileStore, error) {
	name := r.URL.Query().Get("store")
	stores := storesNamed(name)
	switch {
	case len(stores) == 1:
		stores[0].waitOpen(r.Context().Done())
		return stores[0], nil
	case len(stores) > 1:
		return nil, apiErr(http.StatusConflict, fmt.Errorf("store %q names more than one store file; give each store its own name", name))
	}
	names := storeNames()
	if len(names) == 0 {
		return nil, apiErr(http.StatusNotFound, errors.New("no token store is open: add store file to an ip_allowlist handler"))
	}
	if name == "" {
		name = defaultStoreName
	}
	return nil, apiErr(http.StatusNotFound, fmt.Errorf("no token store named %q; open stores: %s", name, strings.Join(names, ", ")))
}

// decodeBody decodes a JSON body for label's entry strictly: an unknown
// field, a second value or a body too large is the caller's mistake, and
// the error names the entry, as every refusal does.
func decodeBody(r *http.Request, label string, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return apiErr(http.StatusRequestEntityTooLarge, fmt.Errorf("token %q: request body larger than %d bytes", label, maxBody))
		}
		return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: request body: %w", label, jsonErr(err)))
	}
	if _, err := dec.Token(); err != io.EOF {
		return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: request body: data after the JSON object", label))
	}
	return nil
}

// writeJSON answers v with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func writeEntry(w http.ResponseWriter, status int, label string, s stored) error {
	w.Header().Set("ETag", etag(s.rev))
	return writeJSON(w, status, newEntryOut(label, s))
}

func etag(rev uint64) string { return `"` + strconv.FormatUint(rev, 10) + `"` }

// preconditions reads If-Match and If-None-Match as RFC 9110 §13.1.1 and
// §13.1.2 say: each is * or a list of entity-tags. If-Match compares
// strongly (W/"6" never matches), If-None-Match weakly; a tag this API
// never answers (not a revision, such as "stale-etag") matches nothing,
// so the condition fails with 412 where the entry is compared, and only a
// header that is not a list of entity-tags is refused, with 400. If-Match:
// * is a label that must exist: any revision but none.
func preconditions(r *http.Request) (tokenstore.Cond, bool, error) {
	var c tokenstore.Cond
	exists := false
	if star, tags, err := entityTags(r.Header.Values("If-Match")); err != nil {
		return c, false, apiErr(http.StatusBadRequest, fmt.Errorf("If-Match: %w", err))
	} else if star {
		exists = true
	} else if tags != nil {
		c.IfRevIn = []uint64{} // no tag names a revision: nothing matches
		for _, t := range tags {
			if rev, ok := t.rev(); ok && !t.weak {
				c.IfRevIn = append(c.IfRevIn, rev)
			}
		}
	}
	if star, tags, err := entityTags(r.Header.Values("If-None-Match")); err != nil {
		return c, false, apiErr(http.StatusBadRequest, fmt.Errorf("If-None-Match: %w", err))
	} else if star {
		c.IfAbsent = true
	} else {
		for _, t := range tags {
			if rev, ok := t.rev(); ok {
				c.IfRevNotIn = append(c.IfRevNotIn, rev)
			}
		}
	}
	return c, exists, nil
}

// entityTag is one tag of If-Match or If-None-Match.
type entityTag struct {
	weak   bool
	opaque string // between the quotes
}

// rev is the revision the tag names, if it is one this API answers
// (etag): its digits exactly, so that "06" is not "6".
func (t entityTag) rev() (uint64, bool) {
	rev, err := strconv.ParseUint(t.opaque, 10, 64)
	return rev, err == nil && rev != 0 && strconv.FormatUint(rev, 10) == t.opaque
}

// entityTags parses a precondition's field lines as one list (RFC 9110
// §5.3): "*" alone, or entity-tags ("x" or W/"x") separated by commas,
// empty elements allowed. No field, or only white space, is star false
// and tags nil. The error quotes the field, which holds no secret.
func entityTags(lines []string) (star bool, tags []entityTag, err error) {
	v := strings.Join(lines, ", ")
	if strings.Trim(v, " \t") == "" {
		return false, nil, nil
	}
	if strings.Trim(v, " \t") == "*" {
		return true, nil, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%q: %s; want * or a list of entity-tags, such as \"42\" (an ETag this API returned)", v, why)
	}
	tags = []entityTag{}
	for i := 0; ; {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == ',') {
			i++
		}
		if i == len(v) {
			return false, tags, nil
		}
		var t entityTag
		if strings.HasPrefix(v[i:], "W/") {
			t.weak, i = true, i+2
		}
		if i == len(v) || v[i] != '"' {
			return false, nil, bad("an entity-tag is quoted")
		}
		j := i + 1
		for ; j < len(v) && v[j] != '"'; j++ {
			if v[j] < 0x21 || v[j] == 0x7f { // etagc: no white space or control
				return false, nil, bad("white space or a control character in an entity-tag")
			}
		}
		if j == len(v) {
			return false, nil, bad("an entity-tag is not closed")
		}
		t.opaque = v[i+1 : j]
		tags = append(tags, t)
		for i = j + 1; i < len(v) && (v[i] == ' ' || v[i] == '\t'); i++ {
		}
		if i < len(v) && v[i] != ',' {
			return false, nil, bad("entity-tags are separated by commas")
		}
	}
}

// remoteHost is the caller's address, for the audit line.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// handleTokens serves /ip-allowlist/tokens and everything under it.
func handleTokens(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/ip-allowlist/tokens")
	rest = strings.TrimPrefix(rest, "/")
	var parts []string
	if rest != "" {
		for _, p := range strings.Split(rest, "/") {
			u, err := url.PathUnescape(p)
			if err != nil {
				return apiErr(http.StatusBadRequest, fmt.Errorf("path segment %q: %w", p, err))
			}
			parts = append(parts, u)
		}
	}
	s, err := routeStore(r)
	if err != nil {
		return err
	}
	a := audit{source: "admin", remote: remoteHost(r)}
	switch {
	case len(parts) == 0:
		if r.Method != http.MethodGet {
			return methodNotAllowed(r)
		}
		return listTokens(w, r, s)
	case len(parts) == 1:
		switch r.Method {
		case http.MethodGet:
			e, err := s.get(parts[0])
			if err != nil {
				return storeErr(err)
			}
			return writeEntry(w, http.StatusOK, parts[0], e)
		case http.MethodPut:
			return putEntry(w, r, s, parts[0], a)
		case http.MethodDelete:
			return deleteEntry(w, r, s, parts[0], a)
		}
		return methodNotAllowed(r)
	case len(parts) == 2 && r.Method == http.MethodPost:
		switch parts[1] {
		case "allow":
			return addAllow(w, r, s, parts[0], a)
		case "suspend", "resume":
			return suspend(w, r, s, parts[0], parts[1] == "suspend", a)
		case "promote":
			return promote(w, r, s, parts[0], a)
		}
	case len(parts) == 3 && parts[1] == "allow" && r.Method == http.MethodDelete:
		return removeAllow(w, r, s, parts[0], parts[2], a)
	}
	return apiErr(http.StatusNotFound, fmt.Errorf("no route %s %s", r.Method, r.URL.Path))
}

func methodNotAllowed(r *http.Request) error {
	return apiErr(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s", r.Method, r.URL.Path))
}

// tokenList is a page of entries.
type tokenList struct {
	Tokens []entryOut `json:"tokens"`
	Next   string     `json:"next,omitempty"`
}

// defaultListLimit is how many entries a page holds when no limit is given.
const defaultListLimit = 100

func listTokens(w http.ResponseWriter, r *http.Request, s *fileStore) error {
	q := r.URL.Query()
	limit := defaultListLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return apiErr(http.StatusBadRequest, fmt.Errorf("limit %q: want 1 to %d", l, tokenstore.MaxList))
		}
		limit = n
	}
	page, err := s.listPage(q.Get("after"), limit)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, page)
}

// listPage is a page of at most limit entries, those whose labels sort
// after after.
func (s *fileStore) listPage(after string, limit int) (tokenList, error) {
	if limit < 1 || limit > tokenstore.MaxList {
		return tokenList{}, apiErr(http.StatusBadRequest, fmt.Errorf("limit %q: want 1 to %d", strconv.Itoa(limit), tokenstore.MaxList))
	}
	eng, err := s.engine()
	if err != nil {
		return tokenList{}, storeErr(err)
	}
	recs, err := eng.List(after, limit)
	if err != nil {
		return tokenList{}, storeErr(err)
	}
	out := tokenList{Tokens: make([]entryOut, 0, len(recs))}
	for _, rec := range recs {
		e := decodeEntry(string(rec.Data))
		if e.err != nil {
			e.tp = TokenPolicy{TokenSHA256: digestHex(rec.Digest), Note: "this build cannot read the entry: " + e.err.Error()}
		}
		out.Tokens = append(out.Tokens, newEntryOut(rec.Label, stored{e.tp, rec.Rev}))
	}
	if len(recs) == limit {
		out.Next = recs[len(recs)-1].Label
	}
	return out, nil
}

func putEntry(w http.ResponseWriter, r *http.Request, s *fileStore, label string, a audit) error {
	var tp TokenPolicy
	if err := decodeBody(r, label, &tp); err != nil {
		return err
	}
	cond, mustExist, err := preconditions(r)
	if err != nil {
		return err
	}
	kept, created, err := s.putEntry(label, tp, cond, mustExist, a)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeEntry(w, status, label, kept)
}

// putEntry creates or replaces label's entry with tp; mustExist refuses
// a label that has none (If-Match: *).
func (s *fileStore) putEntry(label string, tp TokenPolicy, cond tokenstore.Cond, mustExist bool, a audit) (stored, bool, error) {
	a.action = "put"
	a.entries = tp.Allow
	kept, created, err := s.update(label, cond, a, func(cur *TokenPolicy) (*TokenPolicy, error) {
		if mustExist && cur == nil {
			return nil, fmt.Errorf("label %q: %w", label, tokenstore.ErrPrecondition)
		}
		if err := newExpiries(label, cur, &tp, time.Now()); err != nil {
			return nil, err
		}
		return &tp, nil // checked by update, as an entry written whole
	})
	if err != nil {
		return stored{}, false, storeErr(err)
	}
	return kept, created, nil
}

func deleteEntry(w http.ResponseWriter, r *http.Request, s *fileStore, label string, a audit) error {
	cond, _, err := preconditions(r)
	if err != nil {
		return err
	}
	unrestrict := false
	if u := r.URL.Query().Get("unrestrict"); u != "" {
		if unrestrict, err = strconv.ParseBool(u); err != nil {
			return apiErr(http.StatusBadRequest, fmt.Errorf("unrestrict %q: want true or false", u))
		}
	}
	if err := s.revokeEntry(label, cond, unrestrict, a); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeEntry revokes label's entry, or with unrestrict removes it, which
// is logged at WARN.
func (s *fileStore) revokeEntry(label string, cond tokenstore.Cond, unrestrict bool, a audit) error {
	a.action = "revoke"
	if unrestrict {
		a.action = "unrestrict"
	}
	_, _, err := s.update(label, cond, a, func(cur *TokenPolicy) (*TokenPolicy, error) {
		if cur == nil {
			return nil, fmt.Errorf("token %q: %w", label, tokenstore.ErrNotFound)
		}
		if unrestrict {
			return nil, nil
		}
		if cur.Revoked {
			return nil, errUnchanged
		}
		next := *cur
		next.Revoked = true
		return &next, nil
	})
	if err != nil {
		return storeErr(err)
	}
	if unrestrict {
		s.logger.Warn("token unrestricted: removed from the token store, it is now usable wherever unlisted_tokens allows; PUT it again to restrict it",
			zap.String("token_label", label), zap.String("store", s.Name()), zap.String("source", a.source), zap.String("remote_ip", a.remote))
	}
	return nil
}

// answerEdit answers an edit of one entry (allowEntries, removeEntry,
// setSuspended) with the entry kept.
func answerEdit(w http.ResponseWriter, r *http.Request, label string, edit func(tokenstore.Cond) (stored, error)) error {
	cond, _, err := preconditions(r)
	if err != nil {
		return err
	}
	kept, err := edit(cond)
	if err != nil {
		return err
	}
	return writeEntry(w, http.StatusOK, label, kept)
}

// editEntry applies edit to a copy of label's entry, which must exist,
// and keeps it.
func (s *fileStore) editEntry(label string, cond tokenstore.Cond, a audit, edit func(tp *TokenPolicy) error) (stored, error) {
	kept, _, err := s.update(label, cond, a, func(cur *TokenPolicy) (*TokenPolicy, error) {
		if cur == nil {
			return nil, fmt.Errorf("token %q: %w", label, tokenstore.ErrNotFound)
		}
		next := *cur
		next.Allow, next.Deny = slices.Clone(cur.Allow), slices.Clone(cur.Deny)
		next.Expires, next.Notes = maps.Clone(cur.Expires), maps.Clone(cur.Notes)
		if err := edit(&next); err != nil {
			return nil, err
		}
		return &next, nil
	})
	if err != nil {
		return stored{}, storeErr(err)
	}
	return kept, nil
}

func addAllow(w http.ResponseWriter, r *http.Request, s *fileStore, label string, a audit) error {
	var body allowBody
	if err := decodeBody(r, label, &body); err != nil {
		return err
	}
	return answerEdit(w, r, label, func(cond tokenstore.Cond) (stored, error) {
		return s.allowEntries(label, body, cond, a)
	})
}

// allowEntries is Add More: it adds body's entries to label's allow list,
// with their expiry and note. An entry the list has already, however
// written (findEntry), is updated instead: a new note replaces its note,
// and a new expiry moves a temporary entry's time (none makes it
// permanent); a permanent entry stays permanent.
func (s *fileStore) allowEntries(label string, body allowBody, cond tokenstore.Cond, a audit) (stored, error) {
	if len(body.Entries) == 0 {
		return stored{}, apiErr(http.StatusBadRequest, fmt.Errorf("token %q: entries is empty; list the addresses or ranges to add", label))
	}
	if err := duplicateError("entries", body.Entries); err != nil {
		return stored{}, apiErr(http.StatusBadRequest, &ConfigError{Token: label, Err: err})
	}
	expires, err := body.expiry(time.Now())
	if err != nil {
		return stored{}, apiErr(http.StatusBadRequest, fmt.Errorf("token %q: %w", label, err))
	}
	a.action, a.entries = "allow", body.Entries
	return s.editEntry(label, cond, a, func(tp *TokenPolicy) error {
		changed := false
		for _, e := range body.Entries {
			i := findEntry(tp.Allow, e)
			if i < 0 {
				tp.Allow = append(tp.Allow, e)
				changed = true
				if expires != "" {
					setKey(&tp.Expires, e, expires)
				}
				if body.Note != "" {
					setKey(&tp.Notes, e, body.Note)
				}
				continue
			}
			e = tp.Allow[i] // as the list writes it
			if old, temporary := tp.Expires[e]; temporary && expires != "" && old != expires {
				tp.Expires[e] = expires
				changed = true
			} else if temporary && expires == "" {
				delete(tp.Expires, e)
				changed = true
			}
			if body.Note != "" && tp.Notes[e] != body.Note {
				setKey(&tp.Notes, e, body.Note)
				changed = true
			}
		}
		if !changed {
			return errUnchanged
		}
		return nil
	})
}

// expiry is when the entries added expire, as RFC 3339 in UTC; "" for
// never. It is a new expiry: in the future, and in the window of
// parseExpiry.
func (b allowBody) expiry(now time.Time) (string, error) {
	switch {
	case b.Expires != "" && b.TTL != "":
		return "", errors.New("give expires or ttl, not both")
	case b.Expires != "":
		t, err := newExpiry(b.Expires, now)
		if err != nil {
			return "", fmt.Errorf("expires: %w", err)
		}
		return t.UTC().Format(time.RFC3339), nil
	case b.TTL != "":
		d, err := caddy.ParseDuration(b.TTL)
		if err != nil || d <= 0 {
			return "", fmt.Errorf("ttl %q: want a positive duration, such as 168h or 7d", b.TTL)
		}
		// Rounded up to the second RFC 3339 keeps, so an entry never
		// expires before its ttl.
		at := now.Add(d).Add(time.Second - 1).Truncate(time.Second).UTC().Format(time.RFC3339)
		if _, err := newExpiry(at, now); err != nil {
			return "", fmt.Errorf("ttl %q: %w", b.TTL, err)
		}
		return at, nil
	}
	return "", nil
}

func setKey(m *map[string]string, k, v string) {
	if *m == nil {
		*m = map[string]string{}
	}
	(*m)[k] = v
}

func removeAllow(w http.ResponseWriter, r *http.Request, s *fileStore, label, entry string, a audit) error {
	return answerEdit(w, r, label, func(cond tokenstore.Cond) (stored, error) {
		return s.removeEntry(label, entry, cond, a)
	})
}

// removeEntry removes one entry from label's allow list: by its range,
// however written (findEntry), with every copy of it.
func (s *fileStore) removeEntry(label, entry string, cond tokenstore.Cond, a audit) (stored, error) {
	a.action, a.entries = "remove", []string{entry}
	return s.editEntry(label, cond, a, func(tp *TokenPolicy) error {
		if findEntry(tp.Allow, entry) < 0 {
			return fmt.Errorf("token %q has no allow entry %q: %w", label, entry, tokenstore.ErrNotFound)
		}
		// Every copy of the range, however written: a copy left behind
		// would keep the address allowed.
		k := keyOf(entry)
		tp.Allow = slices.DeleteFunc(tp.Allow, func(e string) bool {
			if e != entry && keyOf(e) != k {
				return false
			}
			delete(tp.Expires, e)
			delete(tp.Notes, e)
			return true
		})
		if len(tp.Expires) == 0 {
			tp.Expires = nil
		}
		if len(tp.Notes) == 0 {
			tp.Notes = nil
		}
		return nil
	})
}

func suspend(w http.ResponseWriter, r *http.Request, s *fileStore, label string, on bool, a audit) error {
	return answerEdit(w, r, label, func(cond tokenstore.Cond) (stored, error) {
		return s.setSuspended(label, on, cond, a)
	})
}

// setSuspended suspends (on) or resumes label's token; a suspension is
// recorded as made by a's source (admin, cli, leak_alert).
func (s *fileStore) setSuspended(label string, on bool, cond tokenstore.Cond, a audit) (stored, error) {
	return s.suspendAs(label, on, a.source, cond, a)
}

// suspendAs is setSuspended, the suspension recorded as made by by
// (suspended_by). An owner's suspension gives way to anyone else's, so
// that the owner cannot resume what the leak signal or an operator
// suspended after them; any other stays as first made.
func (s *fileStore) suspendAs(label string, on bool, by string, cond tokenstore.Cond, a audit) (stored, error) {
	a.action = "resume"
	if on {
		a.action = "suspend"
	}
	kept, err := s.editEntry(label, cond, a, func(tp *TokenPolicy) error {
		switch {
		case !on && !tp.Suspended:
			return errUnchanged
		case on && tp.Suspended && !(isOwnerSuspension(tp.SuspendedBy) && !isOwnerSuspension(by)):
			return errUnchanged
		}
		tp.Suspended, tp.SuspendedBy = on, ""
		if on {
			tp.SuspendedBy = by
		}
		return nil
	})
	if err == nil && !on {
		// Resumed: leak_alert counts afresh, rather than stay silent
		// for the rest of the window that suspended it.
		s.forgetLeaks(label)
	}
	return kept, err
}

// promoteResult is promote's answer.
type promoteResult struct {
	Entry    entryOut `json:"entry"`
	Promoted []string `json:"promoted"`
	// LeftOut is the addresses report mode learned that promote did not
	// add, each with why.
	LeftOut []promoteLeftOut `json:"left_out"`
}

// promoteLeftOut is an address promote did not add, and why.
type promoteLeftOut struct {
	IP string `json:"ip"`
	// Reason is refused (the counts show refusals in enforce mode),
	// refused_earlier (the token's record of refused addresses holds it),
	// refusals_lost (this node dropped that record, so it cannot tell),
	// or too_few_requests.
	Reason string `json:"reason"`
	Detail string `json:"detail"`
}

// Why promote leaves out an address report mode learned.
const (
	leftOutRefused        = "refused"
	leftOutRefusedEarlier = "refused_earlier"
	leftOutRefusalsLost   = "refusals_lost"
	leftOutTooFew         = "too_few_requests"
)

// promotable splits the addresses report mode learned for a token (those
// with would_deny) into those promote adds and those it leaves out, and
// why. An address that was, or may have been, refused in enforce mode is
// never added: when in doubt, promote leaves it out.
func promotable(seen []observedAddress, lost bool, minRequests int) (learned []string, leftOut []promoteLeftOut) {
	leftOut = []promoteLeftOut{}
	for _, addr := range seen {
		if addr.WouldDeny == 0 {
			continue
		}
		switch {
		case addr.Denied > 0:
			leftOut = append(leftOut, promoteLeftOut{addr.IP, leftOutRefused,
				fmt.Sprintf("refused in enforce mode (%s): add it by its value if you mean it", countsText(addr))})
		case addr.RefusedEarlier && lost:
			leftOut = append(leftOut, promoteLeftOut{addr.IP, leftOutRefusalsLost,
				fmt.Sprintf("this node dropped the token's record of refused addresses when more than %d tokens were observed, so it cannot tell whether enforce mode refused it: add it by its value if you mean it", observedLabels)})
		case addr.RefusedEarlier:
			leftOut = append(leftOut, promoteLeftOut{addr.IP, leftOutRefusedEarlier,
				"refused in enforce mode before its counts began, as this node's record of refused addresses says (it can err only this way): add it by its value if you mean it"})
		case addr.uses() < uint64(minRequests):
			leftOut = append(leftOut, promoteLeftOut{addr.IP, leftOutTooFew,
				fmt.Sprintf("seen %s, fewer than min_requests %d", plural(int(addr.uses()), "time"), minRequests)})
		default:
			learned = append(learned, addr.IP)
		}
	}
	return learned, leftOut
}

// promote adds the addresses this node saw the token used from in report
// mode, at least min_requests times and never refused in enforce mode,
// then switches the token to enforce. What it learns is this node's.
func promote(w http.ResponseWriter, r *http.Request, s *fileStore, label string, a audit) error {
	var body promoteBody
	if err := decodeBody(r, label, &body); err != nil {
		return err
	}
	if body.MinRequests < 1 {
		return apiErr(http.StatusBadRequest, fmt.Errorf("token %q: min_requests %d: want 1 or more", label, body.MinRequests))
	}
	var learned []string
	leftOut := []promoteLeftOut{}
	if o, err := loadObservedAddrs(); err == nil {
		learned, leftOut = promotable(o.snapshot(label)[label], o.refusalsLost(label), body.MinRequests)
		_, _ = observedPool.Delete(observedPoolKey)
	}
	a.action = "promote"
	promoted := []string{}
	var kept stored
	cond, _, err := preconditions(r)
	if err != nil {
		return err
	}
	kept, _, err = s.update(label, cond, a, func(cur *TokenPolicy) (*TokenPolicy, error) {
		if cur == nil {
			return nil, fmt.Errorf("token %q: %w", label, tokenstore.ErrNotFound)
		}
		next := *cur
		next.Allow = slices.Clone(cur.Allow)
		for _, ip := range learned {
			if !slices.Contains(next.Allow, ip) {
				next.Allow = append(next.Allow, ip)
				promoted = append(promoted, ip)
			}
		}
		if next.Mode == ModeEnforce && len(promoted) == 0 {
			return nil, errUnchanged
		}
		next.Mode = ModeEnforce
		a.entries = promoted
		return &next, nil
	})
	if err != nil {
		return storeErr(err)
	}
	return writeJSON(w, http.StatusOK, promoteResult{Entry: newEntryOut(label, kept), Promoted: promoted, LeftOut: leftOut})
}

// importResult is an import's answer.
type importResult struct {
	Imported int `json:"imported"`
	Replaced int `json:"replaced"`
}

func handleImport(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(r)
	}
	s, err := routeStore(r)
	if err != nil {
		return err
	}
	// Caddy's admin server gives a request 10 s to be read: the body is
	// read whole into a temporary file first, at the speed of the
	// connection, and then imported, however long that takes.
	spool, err := os.CreateTemp("", "ip-allowlist-import-*.json")
	if err != nil {
		return apiErr(http.StatusInternalServerError, fmt.Errorf("import: %w", err))
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	if _, err := io.Copy(spool, r.Body); err != nil {
		return apiErr(http.StatusBadRequest, fmt.Errorf("import: reading the request body: %w", err))
	}
	// All or nothing: a refused entry refuses the import, and nothing of
	// it is kept (importTokens).
	a := audit{action: "import", source: "admin", remote: remoteHost(r)}
	res, err := s.importStream(spool, a)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

// tokensFileError is an import's tokens file that does not decode.
type tokensFileError struct{ error }

func (e *tokensFileError) Unwrap() error { return e.error }

// importStream imports the tokens file read from in (importTokens), which
// reads it twice: in is read from its start each time if it can seek, and
// copied to a temporary file first if not.
func (s *fileStore) importStream(in io.Reader, a audit) (importResult, error) {
	rs, ok := in.(io.ReadSeeker)
	if ok { // a pipe is an *os.File that cannot seek
		_, err := rs.Seek(0, io.SeekCurrent)
		ok = err == nil
	}
	if !ok {
		spool, err := os.CreateTemp("", "ip-allowlist-import-*.json")
		if err != nil {
			return importResult{}, storeErr(fmt.Errorf("import: %w", err))
		}
		defer os.Remove(spool.Name())
		defer spool.Close()
		if _, err := io.Copy(spool, in); err != nil {
			return importResult{}, apiErr(http.StatusBadRequest, fmt.Errorf("import: reading the tokens file: %w", err))
		}
		rs = spool
	}
	// An error of the tokens file is the caller's (400); one an entry
	// met in the store answers as any change would (storeErr).
	n, replaced, err := s.importTokens(func(fn func(string, *TokenPolicy) error) error {
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return err
		}
		var entryErr error
		err := eachTokenBatch(bufio.NewReaderSize(rs, 1<<20), func(batch []tokenEntry) error {
			for i := range batch {
				if err := fn(batch[i].label, &batch[i].tp); err != nil {
					entryErr = err
					return err
				}
			}
			return nil
		})
		if err != nil && entryErr == nil {
			return &tokensFileError{err}
		}
		return err
	}, a)
	var ferr *tokensFileError
	switch {
	case errors.As(err, &ferr):
		return importResult{}, apiErr(http.StatusBadRequest, fmt.Errorf("import: %w", err))
	case err != nil:
		return importResult{}, storeErr(err)
	}
	return importResult{Imported: n, Replaced: replaced}, nil
}

func handleExport(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(r)
	}
	s, err := routeStore(r)
	if err != nil {
		return err
	}
	if _, err := s.engine(); err != nil {
		return storeErr(err)
	}
	w.Header().Set("Content-Type", "application/json")
	return s.export(w)
}

func handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(r)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPIDocument)
	return err
}
