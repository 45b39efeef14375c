package ipallowlist

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI (admin.api.ip_allowlist) adds the ip_allowlist routes to Caddy's
// admin endpoint:
//
//	GET /ip-allowlist/check?label=<label>&ip=<address>
//
// answers what the config in force decides for that token label used from
// that address; without label it answers for an unlisted token.
//
//	GET, DELETE /ip-allowlist/observed[/<label>]
//
// serve and reset the observed addresses (see handleObserved).
//
//	/ip-allowlist/tokens[/...], /ip-allowlist/import, /ip-allowlist/export
//
// read and change the token store (see routes.go and openapi.json).
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.ip_allowlist",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/ip-allowlist/check", Handler: caddy.AdminHandlerFunc(handleCheck)},
		{Pattern: "/ip-allowlist/observed", Handler: caddy.AdminHandlerFunc(handleObserved)},
		{Pattern: "/ip-allowlist/observed/", Handler: caddy.AdminHandlerFunc(handleObserved)},
		{Pattern: "/ip-allowlist/tokens", Handler: caddy.AdminHandlerFunc(handleTokens)},
		{Pattern: "/ip-allowlist/tokens/", Handler: caddy.AdminHandlerFunc(handleTokens)},
		{Pattern: "/ip-allowlist/import", Handler: caddy.AdminHandlerFunc(handleImport)},
		{Pattern: "/ip-allowlist/export", Handler: caddy.AdminHandlerFunc(handleExport)},
		{Pattern: "/ip-allowlist/openapi.json", Handler: caddy.AdminHandlerFunc(handleOpenAPI)},
	}
}

// handleObserved serves the observed addresses:
//
//	GET    /ip-allowlist/observed                         every label, as JSON
//	GET    /ip-allowlist/observed/<label>                 one label, as JSON
//	GET    /ip-allowlist/observed/<label>?format=caddyfile  an allow line to paste
//	DELETE /ip-allowlist/observed[/<label>]               forget, answering what was dropped
func handleObserved(w http.ResponseWriter, r *http.Request) error {
	label := strings.Trim(strings.TrimPrefix(r.URL.Path, "/ip-allowlist/observed"), "/")
	format := r.URL.Query().Get("format")
	switch {
	case r.Method != http.MethodGet && r.Method != http.MethodDelete:
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	case format != "" && format != "json" && format != "caddyfile":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("format %q: want json (the default) or caddyfile", format)}
	case format == "caddyfile" && label == "":
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("format=caddyfile needs a label: /ip-allowlist/observed/<label>")}
	case format == "caddyfile" && r.Method == http.MethodDelete:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("DELETE answers JSON only")}
	}
	seen := map[string][]observedAddress{}
	observedPool.Range(func(_, v any) bool {
		if r.Method == http.MethodDelete {
			seen = v.(*observedAddrs).drop(label)
		} else {
			seen = v.(*observedAddrs).snapshot(label)
		}
		return false
	})
	if label != "" && len(seen[label]) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no address observed for token %q", label)}
	}
	if format == "caddyfile" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, err := io.WriteString(w, observedCaddyfile(seen[label]))
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	if label != "" {
		return json.NewEncoder(w).Encode(seen[label])
	}
	return json.NewEncoder(w).Encode(seen)
}

// inForce holds the handlers of the configs in force. The admin routes live
// outside any one config, so, like caddy.UsagePool, this is the one piece of
// process-wide state: handlers join it when provisioned and leave it when
// cleaned up, so after a reload it holds the new config's handlers, and
// after a refused load the old ones.
var inForce = struct {
	sync.RWMutex
	handlers map[*Handler]struct{}
}{handlers: map[*Handler]struct{}{}}

func (h *Handler) register() {
	inForce.Lock()
	inForce.handlers[h] = struct{}{}
	inForce.Unlock()
}

// Cleanup takes the handler out of the admin routes' view. It is safe on a
// handler that was never provisioned.
func (h *Handler) Cleanup() error {
	inForce.Lock()
	_, provisioned := inForce.handlers[h]
	delete(inForce.handlers, h)
	inForce.Unlock()
	err := errors.Join(h.closeStore(), h.closeFileStore())
	if h.dns != nil {
		h.dns.close()
	}
	if provisioned && h.observed != nil {
		_, oerr := observedPool.Delete(observedPoolKey)
		err = errors.Join(err, oerr)
	}
	return err
}

// checkResult is one handler's answer.
type checkResult struct {
	Label    string `json:"label,omitempty"`
	IP       string `json:"ip"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Mode     string `json:"mode"`
	// The dns: name that admits the address, when a range does not.
	DNSName string `json:"dns_name,omitempty"`
}

func newCheckResult(label string, addr netip.Addr, res reason, name *dnsName, mode string) checkResult {
	c := checkResult{Label: label, IP: addr.String(), Decision: decisionAllow, Reason: res.String(), Mode: mode}
	if res != reasonAllowed {
		c.Decision = decisionDeny
	}
	if name != nil {
		c.DNSName = name.name
	}
	return c
}

func handleCheck(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed", r.Method)}
	}
	q := r.URL.Query()
	label, ipText := q.Get("label"), q.Get("ip")
	addr, ok := clientAddr(ipText)
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("ip %q: not an IP address", ipText)}
	}
	results := []checkResult{}
	inForce.RLock()
	for h := range inForce.handlers {
		v := h.current.Load()
		var res reason
		var name *dnsName
		if label == "" {
			res = v.base.checkUnlisted(addr)
		} else if t, p := v.byLabel(label); p != nil {
			res, name = t.checkNamed(p, addr)
		} else {
			continue
		}
		results = append(results, newCheckResult(label, addr, res, name, h.modeName()))
	}
	inForce.RUnlock()
	if len(results) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no token labelled %q in the config in force", label)}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"results": results})
}

// Interface guards
var (
	_ caddy.AdminRouter  = adminAPI{}
	_ caddy.CleanerUpper = (*Handler)(nil)
)
