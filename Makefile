# make run   builds Caddy with this plugin (xcaddy) and serves examples/Caddyfile on loopback.
# make test  runs go vet, gofmt, go test -race ./..., including the tests against the built Caddy.
# make bench measures the request path, a real Caddy under load, and provisioning (see docs/performance.md).
# make screenshot writes docs/console.png, the console's token page in Chromium.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

MODULE        := github.com/ipallowlist/caddy-ip-allowlist
CADDY_VERSION := $(shell go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
# The module proxy here does not serve this module; xcaddy's lookup of it must
# fall through to the local replace instead of failing.
XCADDY_GOPROXY := $(shell go env GOPROXY | cut -d, -f1)|off
CADDY_BIN     := $(CURDIR)/caddy
# What ./caddy is built from: not the tests, their helpers or the bench;
# the console's pages, which it embeds, too.
GO_SOURCES    := $(shell find . -name '*.go' -not -name '*_test.go' -not -path './.git/*' \
                   -not -path './internal/testkit/*' -not -path './internal/redistest/*' -not -path './bench/*') go.mod go.sum \
                 $(wildcard module/console/*)

# Demo tokens for make run; see examples/Caddyfile.
PARTNER_A_TOKEN ?= demo-partner-a-token
PARTNER_B_TOKEN ?= demo-partner-b-token

# Root installs Debian packages directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: build run test vet bench bench-go bench-caddy tools-bench tools-test fuzz screenshot clean

build: $(CADDY_BIN)

$(CADDY_BIN): $(GO_SOURCES)
	GOPROXY='$(XCADDY_GOPROXY)' go tool xcaddy build $(CADDY_VERSION) \
		--with $(MODULE)=./ --output $(CADDY_BIN)
	@# Not grep -q: it would stop reading, and pipefail would fail the build on
	@# list-modules' SIGPIPE.
	$(CADDY_BIN) list-modules | grep -x 'http.handlers.ip_allowlist' >/dev/null

run: $(CADDY_BIN)
	PARTNER_A_TOKEN='$(PARTNER_A_TOKEN)' PARTNER_B_TOKEN='$(PARTNER_B_TOKEN)' $(CADDY_BIN) run --config examples/Caddyfile --adapter caddyfile

vet:
	go vet ./...
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

# -p 1: the in-process caddytest servers bind fixed ports (admin 2999).
# The real-binary tests run with -v, so their counts (reloads, requests,
# goroutines, heap) are in the output.
test: vet $(CADDY_BIN) tools-test
	CADDY_BIN=$(CADDY_BIN) go test -race -p 1 -count=1 $$(go list ./... | grep -v '/examples$$')
	CADDY_BIN=$(CADDY_BIN) go test -race -count=1 -v ./examples
	@# Built without -race only: quic-go's 0-RTT client races (quic-go/quic-go#4303).
	CADDY_BIN=$(CADDY_BIN) go test -count=1 -v -run '^TestEarlyDataGets425$$' ./examples

# make bench: the request-path benchmarks (go test -bench), then a real Caddy
# under wrk with and without ip_allowlist, provisioning 1,000,000 tokens, the
# fleet, the token store's routes with 1,000 and 1,000,000 tokens, the
# console's token list with 1,000,000, and a dns: name's record changes
# until the new address is admitted.
bench: bench-go bench-caddy

# The parallel benchmark at -cpu 1 and 2 and the overlay benchmark run
# BENCH_COUNT times each, and bench/ratios prints their ratios beside the
# goals; then every other benchmark once.
BENCH_COUNT ?= 5
bench-go:
	go test ./module -run '^$$' -bench '^BenchmarkServeHTTPParallel$$' -cpu 1,2 -benchmem -count $(BENCH_COUNT) > bench-parallel.out
	go test ./module -run '^$$' -bench '^BenchmarkServeHTTPOverlay$$' -benchmem -count $(BENCH_COUNT) > bench-overlay.out
	cat bench-parallel.out bench-overlay.out | go run ./bench/ratios
	go test ./module -run '^$$' -bench '^Benchmark(ServeHTTP|ApplyToken|VersusRemoteIP|RangeLookup|ProvisionTokensFile|LeakAlert|DNSAdmit)$$' -benchmem -count 1

bench-caddy: $(CADDY_BIN) tools-bench
	go run ./bench -caddy $(CADDY_BIN)

tools-bench: tools-test
	@command -v wrk >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }

# The fleet tests run a real redis-server on loopback (internal/redistest);
# the console's tests (examples/console_test.go) drive Debian's chromium.
tools-test:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y redis-server; }
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

# make screenshot: the console's page of a token, in a store filled as in
# use, at 1100x900 in Chromium, written to docs/console.png (make test
# skips that test, and writes no file of the repository).
screenshot: $(CADDY_BIN) tools-test
	CADDY_BIN=$(CADDY_BIN) CONSOLE_SCREENSHOT=$(CURDIR)/docs/console.png \
		go test -count=1 -v -run '^TestConsoleScreenshot$$' ./examples

# make fuzz: each fuzz target for FUZZTIME. Seeds: testdata/fuzz/ and the
# adapt golden files. An input a fuzzer finds failing is saved by Go under
# the package's testdata/fuzz/<target>/; commit it, and it is replayed by
# every go test from then on.
FUZZTIME ?= 30s
fuzz:
	go test ./module -run '^$$' -fuzz '^FuzzParseRange$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzExtractToken$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzLenientParserAgrees$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzBackendModels$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzStoreRoutes$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzDecodeCanonical$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzConsole$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzDNSEntry$$' -fuzztime $(FUZZTIME)
	go test ./module -run '^$$' -fuzz '^FuzzDNSAnswer$$' -fuzztime $(FUZZTIME)
	go test ./caddyfile -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

clean:
	rm -f $(CADDY_BIN) *.out *.prof *.test
