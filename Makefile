# vrouter — see README.md.
#
#   make demo   build vrouter and run the seed's two-node cluster in network namespaces
#   make image  build vrouter's container image, without Docker: bin/vrouter-image.tar
#   make test   check-deps, lint, then every test: unit tests; as root also the
#               namespace tests, the tests against a real kube-apiserver and etcd
#               (built or installed first by kube-tools) and a short benchmark run

GO          ?= go
BIN         := bin/vrouter
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
# Packages are listed so that the tools module (if any) stays out.
PKGS        := ./...

.PHONY: all build demo test check-deps lint unit smoke integration tools clean image

all: build

# COMMIT is stamped into the binary (vrouter --version), so that it is
# known even where Go records no VCS information (-buildvcs=false). One
# commit gives one value: `make image` stays reproducible.
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)

build:
	$(GO) build -ldflags "-X main.commit=$(COMMIT)" -o $(BIN) ./cmd/vrouter

demo: build
	./$(BIN) demo

test: check-deps lint kube-tools smoke unit

# check-deps installs, as root with apt-get, the commands the tests run
# (iproute2, iperf3, nftables, containerd, ...), or stops make test at once
# with one line naming what is missing: integration/tools/deps.sh.
check-deps:
	@bash integration/tools/deps.sh

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
	GOOS=darwin $(GO) build $(PKGS)
	GOOS=darwin $(GO) vet ./router/... ./tun/... ./lb/... ./configs/...

tools: $(STATICCHECK)

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean:
	rm -rf bin

# image packs a static vrouter stamped with VERSION into the one-layer
# image vrouter:$(VERSION) — docker.io/library/vrouter:$(VERSION) to the
# kubelet — as bin/vrouter-image.tar, which `ctr -n k8s.io images import`,
# `podman load` and `docker load` accept, and prints its manifest digest.
# One commit gives one digest; a tree with uncommitted changes another
# (Go stamps vcs.modified). See docs/image.md.
VERSION := v0.2.0

image:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/vrouter-static ./cmd/vrouter
	$(GO) run ./integration/image/mkimage --binary bin/vrouter-static --name vrouter:$(VERSION) \
		--label org.opencontainers.image.version=$(VERSION) --out bin/vrouter-image.tar

# kube-tools builds kube-apiserver, kubelet, kube-controller-manager,
# kube-scheduler and kubectl v1.37.2 into .cache/bin and installs etcd
# (Debian's etcd-server, else built) and, as root, containerd, runc and the
# CNI plugins: for the tests in integration/kube and the real-cluster test,
# which skip themselves without them. 20-35 minutes cold; an up-to-date
# build is skipped.
.PHONY: kube-tools
kube-tools:
	bash integration/tools/build.sh

# vrouter against the kernel (flannel host-gw + kube-proxy iptables), and its
# encrypted overlay against host-gw routes over wireguard-go, on the
# seed's cluster in namespaces, as root; see integration/bench and README's
# Benchmarks. bench: about 15 minutes. bench-smoke: about a minute, fails
# only if a measurement cannot be taken at all (timings never fail).
# Extra flags: make bench BENCHFLAGS='--json bench.json'.
.PHONY: bench bench-smoke wireguard-go
bench: build wireguard-go
	$(GO) run ./integration/bench --vrouter $(BIN) $(BENCHFLAGS)

bench-smoke: build wireguard-go
	$(GO) run ./integration/bench --smoke --vrouter $(BIN) $(BENCHFLAGS)

# wireguard-go builds the userspace WireGuard daemon (golang.zx2c4.com/wireguard
# at go.mod's version) into .cache/bin, the baseline of the bench's encrypted
# rows; an up-to-date build is skipped. See integration/tools/wireguard-go.sh.
wireguard-go:
	@bash integration/tools/wireguard-go.sh
