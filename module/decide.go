package ipallowlist

import (
	"net/http"
	"net/netip"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Reasons, as set in {http.ip_allowlist.reason} and logged.
const (
	ReasonAllowed        = "allowed"
	ReasonIPNotAllowed   = "ip_not_allowed"
	ReasonIPDenied       = "ip_denied"
	ReasonUnlistedToken  = "unlisted_token"
	ReasonMissingToken   = "missing_token"
	ReasonAmbiguousToken = "ambiguous_token"
	ReasonNoClientIP     = "no_client_ip"
	ReasonTokenRevoked   = "token_revoked"
	ReasonInvalidEntry   = "invalid_entry"
	ReasonTokenSuspended = "token_suspended"
	// ReasonCredentialMalformed: a credential value over
	// max_credential_bytes, or more candidates than
	// max_credential_candidates; never read as missing.
	ReasonCredentialMalformed = "credential_malformed"
)

// reason is a Reason* as a small number, so the request path can index
// reasonValues instead of converting a string to an interface, which
// allocates.
type reason uint8

const (
	reasonAllowed reason = iota
	reasonIPNotAllowed
	reasonIPDenied
	reasonUnlistedToken
	reasonMissingToken
	reasonAmbiguousToken
	reasonNoClientIP
	reasonTokenRevoked
	reasonInvalidEntry
	reasonTokenSuspended
	reasonCredentialMalformed
)

var reasonNames = [...]string{
	reasonAllowed:             ReasonAllowed,
	reasonIPNotAllowed:        ReasonIPNotAllowed,
	reasonIPDenied:            ReasonIPDenied,
	reasonUnlistedToken:       ReasonUnlistedToken,
	reasonMissingToken:        ReasonMissingToken,
	reasonAmbiguousToken:      ReasonAmbiguousToken,
	reasonNoClientIP:          ReasonNoClientIP,
	reasonTokenRevoked:        ReasonTokenRevoked,
	reasonInvalidEntry:        ReasonInvalidEntry,
	reasonTokenSuspended:      ReasonTokenSuspended,
	reasonCredentialMalformed: ReasonCredentialMalformed,
}

// reasonValues holds each reason boxed once, for placeholders.
var reasonValues = func() (v [len(reasonNames)]any) {
	for i, name := range reasonNames {
		v[i] = name
	}
	return v
}()

func (r reason) String() string { return reasonNames[r] }

// decision is the outcome for one request. policy is the listed token's
// policy, nil for unlisted, missing and ambiguous tokens, and table the
// table whose arrays it refers to.
type decision struct {
	reason   reason
	policy   *policy
	table    *table
	clientIP string
	addr     netip.Addr // the parsed client address, when there is one
	token    bool       // a token was presented, listed or not
	name     *dnsName   // the dns: name that admitted addr, if one did
}

func (d decision) allowed() bool { return d.reason == reasonAllowed }

// report says whether a refusal of d is logged and let through: the
// token's own mode where it has one, else the handler's (handler).
func (d decision) report(handler bool) bool {
	// A token's own report mode learns where a working token is used
	// from; it never lets a revoked, suspended or unreadable one through.
	if d.policy != nil && d.policy.mode != modeInherit && d.policy.state == stateListed {
		return d.policy.mode == modeReport
	}
	return handler
}

// decide applies the view v to r.
func (h *Handler) decide(r *http.Request, v *view) decision {
	raw, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	d := decision{clientIP: raw}
	addr, ok := clientAddr(raw)
	d.addr = addr

	t := v.base // the unlisted and missing-token policies are the config's
	d.table = t
	tok, res := extractToken(r, h.sources, v)
	switch res {
	case tokenAmbiguous:
		d.reason = reasonAmbiguousToken
		return d
	case tokenMalformed:
		d.reason = reasonCredentialMalformed
		return d
	case tokenMissing:
		// missing_token allow does not depend on the address.
		if t.missingAllow {
			d.reason = reasonAllowed
		} else {
			d.reason = reasonMissingToken
		}
		return d
	}

	// extractToken hashed and looked up every candidate, listed or not,
	// and every presented token is observed, known or not, so the time
	// taken says nothing about which tokens exist.
	d.token = true
	if !ok {
		d.reason = reasonNoClientIP
		if tok.listed {
			d.table, d.policy = v.policy(tok.policy)
		}
		return d
	}
	if !tok.listed {
		d.reason = t.checkUnlisted(addr)
		return d
	}
	d.table, d.policy = v.policy(tok.policy)
	d.reason, d.name = d.table.checkNamed(d.policy, addr)
	return d
}

// checkNamed applies a listed token's policy to addr, and returns the
// dns: name that admitted it, when its ranges did not.
func (t *table) checkNamed(p *policy, addr netip.Addr) (reason, *dnsName) {
	switch {
	case p.state == stateRevoked:
		return reasonTokenRevoked, nil
	case p.state == stateInvalid:
		return reasonInvalidEntry, nil
	case p.state == stateSuspended:
		return reasonTokenSuspended, nil
	case t.contains(p.allowed, addr):
		return reasonAllowed, nil
	case p.named:
		return t.checkNames(p, addr)
	case t.contains(p.denied, addr):
		return reasonIPDenied, nil
	}
	return reasonIPNotAllowed, nil
}

// checkUnlisted applies the unlisted policy to addr.
func (t *table) checkUnlisted(addr netip.Addr) reason {
	if t.contains(t.unlisted.allowed, addr) {
		return reasonAllowed
	}
	return reasonUnlistedToken
}

// clientAddr parses Caddy's client_ip: zones dropped, IPv4-mapped unmapped.
func clientAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}
