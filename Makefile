# vrouter — see README.md.
#
#   make demo   build vrouter and run the seed's two-node cluster in network namespaces
#   make test   lint, then every test: unit tests; as root also the namespace
#               tests, the tests against a real kube-apiserver and etcd (built
#               or installed first by kube-tools) and a short benchmark run

GO          ?= go
BIN         := bin/vrouter
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
# Packages are listed so that the tools module (if any) stays out.
PKGS        := ./...

.PHONY: all build demo test lint unit smoke integration tools clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vrouter

demo: build
	./$(BIN) demo

test: lint kube-tools smoke unit

# Unit tests need no privileges; as root, the same run includes the
# namespace tests in integration/ (they skip themselves otherwise). With
# kube-tools done, a missing kube-apiserver or etcd fails the tests rather
# than skipping them.
unit:
	VROUTER_REQUIRE_KUBE=1 $(GO) test -race -count=1 -timeout 30m $(PKGS)

# smoke runs the benchmark briefly so it never rots (root only: it builds
# namespaces); timings never fail it.
smoke:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) bench-smoke; else echo "smoke: skipped (needs root)"; fi

integration: build
	$(GO) test -race -count=1 -timeout 20m -v ./integration/...

lint: tools
	@fmt="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$fmt" ]; then echo "gofmt needed:"; echo "$$fmt"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

tools: $(STATICCHECK)

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean:
	rm -rf bin

# kube-tools builds kube-apiserver v1.37.2 into .cache/bin and installs etcd
# (Debian's etcd-server, else built) for the tests in integration/kube, which
# skip themselves without them. ~9 minutes cold; an up-to-date build is skipped.
.PHONY: kube-tools
kube-tools:
	bash integration/tools/build.sh

# vrouter against the kernel (flannel host-gw + kube-proxy iptables) on the
# seed's cluster in namespaces, as root; see integration/bench and README's
# Benchmarks. bench: about 4 minutes. bench-smoke: about 30 seconds, fails
# only if a measurement cannot be taken at all (timings never fail).
# Extra flags: make bench BENCHFLAGS='--json bench.json'.
.PHONY: bench bench-smoke
bench: build
	$(GO) run ./integration/bench --vrouter $(BIN) $(BENCHFLAGS)

bench-smoke: build
	$(GO) run ./integration/bench --smoke --vrouter $(BIN) $(BENCHFLAGS)
