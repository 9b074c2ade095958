# xdplb: build, test and benchmark. Every target installs what it needs on Debian.
GO       ?= go
BIN      := bin/xdplb
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
FUZZTIME ?= 20s
APT_PKGS := clang llvm bpftool ethtool iproute2 tcpdump nftables linux-libc-dev mariadb-server mariadb-client keepalived sysbench
GENERATED := loader/xdplb_bpfel.go loader/xdplb_bpfel.o loader/xdplb_bpfeb.go loader/xdplb_bpfeb.o \
	internal/testbed/baseline/baseline_bpfel.go internal/testbed/baseline/baseline_bpfel.o \
	internal/testbed/baseline/baseline_bpfeb.go internal/testbed/baseline/baseline_bpfeb.o

.PHONY: all build generate check-generate deps test bench bench-quick bench-soak demo clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/xdplb

# deps: the Debian packages the tests and bpf2go need, and the Go modules. A policy-rc.d keeps
# apt from starting MariaDB in the root namespace: the tests run their own, in namespaces.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		rc=/usr/sbin/policy-rc.d; made=""; \
		if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' >$$rc; chmod +x $$rc; made=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; st=$$?; \
		[ -n "$$made" ] && rm -f $$rc; [ $$st = 0 ] || exit $$st; \
	fi
	$(GO) mod download

# generate: rebuild the committed bpf2go output from bpf/*.c (clang + llvm-strip).
generate:
	@command -v clang >/dev/null && command -v llvm-strip >/dev/null || $(MAKE) deps
	$(GO) generate ./loader ./internal/testbed/baseline

# check-generate: fail if the bpf2go output in the tree does not match bpf/ (in CI: the committed one).
check-generate:
	@command -v clang >/dev/null && command -v llvm-strip >/dev/null || $(MAKE) deps
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	for f in $(GENERATED); do mkdir -p $$tmp/$$(dirname $$f); cp $$f $$tmp/$$f; done; \
	$(GO) generate ./loader ./internal/testbed/baseline || exit 1; \
	stale=""; for f in $(GENERATED); do cmp -s $$f $$tmp/$$f || stale="$$stale $$f"; done; \
	if [ -n "$$stale" ]; then \
		for f in $(GENERATED); do cp $$tmp/$$f $$f; done; \
		echo "generated BPF output is stale:$$stale"; echo "run 'make generate' and commit the result"; exit 1; \
	fi; echo "generated BPF output matches bpf/"

# test: everything, as root, nothing skipped (the BPF and network-namespace tests are the point).
test: deps check-generate
	@[ "$$(id -u)" = 0 ] || { echo "make test needs root: the BPF and network-namespace tests run for real (sudo make test)"; exit 1; }
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	./.ci/gotest ./...
	$(GO) test ./loader -run '^$$' -fuzz FuzzXDP -fuzztime $(FUZZTIME)
	$(GO) test ./vrrp -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./vrrp -run '^$$' -fuzz '^FuzzParseHello$$' -fuzztime $(FUZZTIME)

# bench: every section of `xdplb bench` (bench/README.md), each against baselines measured in the
# same run; under 10 minutes. Writes bench/results/<date>.json (the CLI alone writes
# ./xdplb-bench-<date>.json unless told --out). The failover (keepalived) and sysbench (MariaDB)
# sections are part of the shipped command; they run on internal/testbed.
bench: deps build
	@[ "$$(id -u)" = 0 ] || { echo "make bench needs root (BPF_PROG_TEST_RUN)"; exit 1; }
	./$(BIN) bench --out bench/results/

bench-quick: deps build
	./$(BIN) bench --quick --out bench/results/

# bench-soak: issue 4's check that VRRP at 30 ms adverts does not flap in 5 minutes of full
# data-plane load (the full `make bench` runs it for 1 minute).
bench-soak: deps build
	@[ "$$(id -u)" = 0 ] || { echo "make bench-soak needs root"; exit 1; }
	./$(BIN) bench --only vrrp-load --vrrp-load-duration 5m --out bench/results/

# demo: the seeds' MySQL cluster in network namespaces (docs/demo.md): a client, a MariaDB primary
# and two replicas that are also xdplb directors with VRRP. Narrates reads spread over the
# replicas, `xdplb list --stats`, the Master director dying during writes, a replica's MySQL
# leaving and rejoining the reader service; tears everything down (also on Ctrl-C).
demo:
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, XDP, MariaDB): sudo make demo"; exit 1; }
	@$(MAKE) --no-print-directory deps build
	$(GO) build -o bin/demo ./test/demo
	./bin/demo --xdplb $(BIN)

clean:
	rm -rf bin
