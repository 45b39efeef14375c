package ipallowlist

import (
	"crypto/sha256"
	"net/http"
	"net/netip"
	"unsafe"

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
)

// decision is the outcome for one request. policy is the listed token's
// policy, nil for unlisted, missing and ambiguous tokens.
type decision struct {
	reason   string
	policy   *policy
	clientIP string
}

func (d decision) allowed() bool { return d.reason == ReasonAllowed }

// decide applies the compiled table to r.
func (h *Handler) decide(r *http.Request) decision {
	raw, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	d := decision{clientIP: raw}
	addr, ok := clientAddr(raw)

	tok, res := extractToken(r, h.sources)
	t := h.table
	switch res {
	case tokenAmbiguous:
		d.reason = ReasonAmbiguousToken
		return d
	case tokenMissing:
		// missing_token allow does not depend on the address.
		if t.missingAllow {
			d.reason = ReasonAllowed
		} else {
			d.reason = ReasonMissingToken
		}
		return d
	}

	// Every presented token is hashed and looked up, known or not, so the
	// time taken says nothing about which tokens exist.
	digest := sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
	i, listed := t.index[digest]
	if !ok {
		d.reason = ReasonNoClientIP
		if listed {
			d.policy = &t.policies[i]
		}
		return d
	}
	if !listed {
		if t.contains(t.unlisted.allowed, addr) {
			d.reason = ReasonAllowed
		} else {
			d.reason = ReasonUnlistedToken
		}
		return d
	}
	p := &t.policies[i]
	d.policy = p
	switch {
	case t.contains(p.allowed, addr):
		d.reason = ReasonAllowed
	case t.contains(p.denied, addr):
		d.reason = ReasonIPDenied
	default:
		d.reason = ReasonIPNotAllowed
	}
	return d
}

// clientAddr parses Caddy's client_ip: zones dropped, IPv4-mapped unmapped.
func clientAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}
