package ipallowlist

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts decisions in the config's metrics registry, which Caddy
// serves at the admin endpoint's /metrics. Each config has its own registry,
// so a reload starts fresh counters and leaves no stale ones behind.
type metrics struct {
	// byReason is resolved at provision, so counting a request is one
	// atomic add, with no label lookup or allocation.
	byReason [len(reasonNames)]prometheus.Counter
	// perToken is nil unless metrics_per_token is set: it has a series per
	// listed token (two, allow and deny), so its cardinality grows with the
	// token list.
	perToken *prometheus.CounterVec
	// leaks counts leak_alert's alerts.
	leaks prometheus.Counter
	// dnsLookups counts the lookups of dns: names, by result.
	dnsLookups [len(dnsResultNames)]prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, perToken bool) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	requests, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "http_ip_allowlist",
		Name:      "requests_total",
		Help:      "Requests decided by ip_allowlist, by decision and reason (in report mode, what enforce mode would decide).",
	}, []string{"decision", "reason"}))
	if err != nil {
		return nil, err
	}
	m := &metrics{}
	leaks, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "http_ip_allowlist",
		Name:      "leak_alerts_total",
		Help:      "Alerts of leak_alert: a listed token refused from many distinct addresses outside its list within its window.",
	}, nil))
	if err != nil {
		return nil, err
	}
	m.leaks = leaks.WithLabelValues()
	lookups, err := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "http_ip_allowlist",
		Name:      "dns_lookups_total",
		Help:      "Lookups of the names of dns: allow entries, by result: answered (an answer taken), failed (no resolver answered one family), refused (more addresses than a name may admit).",
	}, []string{"result"}))
	if err != nil {
		return nil, err
	}
	for r, name := range dnsResultNames {
		m.dnsLookups[r] = lookups.WithLabelValues(name)
	}
	for r := range m.byReason {
		decision := decisionDeny
		if reason(r) == reasonAllowed {
			decision = decisionAllow
		}
		m.byReason[r] = requests.WithLabelValues(decision, reasonNames[r])
	}
	if perToken {
		if m.perToken, err = registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "http_ip_allowlist",
			Name:      "token_requests_total",
			Help:      "Requests with a listed token, by token label and decision (only with metrics_per_token).",
		}, []string{"token_label", "decision"})); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// registerOrReuse registers c, or returns the same collector that another
// ip_allowlist handler of this config registered first.
func registerOrReuse(reg *prometheus.Registry, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	return c, err
}

// count records one decision.
func (m *metrics) count(d decision, label *labelRef) {
	if m == nil {
		return
	}
	m.byReason[d.reason].Inc()
	if m.perToken != nil && d.policy != nil {
		decision := decisionAllow
		if !d.allowed() {
			decision = decisionDeny
		}
		m.perToken.WithLabelValues(label.String(), decision).Inc()
	}
}

// leak counts one leak_alert alert.
func (m *metrics) leak() {
	if m != nil {
		m.leaks.Inc()
	}
}
