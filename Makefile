# difftrain: `make demo` runs a small local cluster, `make test` runs the tests.
GO       ?= go
BIN      ?= bin/trainer
PKGS     ?= ./...
# Packages with goroutines of their own run under the race detector too.
RACE_PKGS ?= ./allreduce/... ./cluster/... ./node/... ./checkpoint/... ./dataset/... ./shard/... ./train/overlapbench/...

.PHONY: all build test vet bench deps system-deps demo gpu-check-build clean

all: build

# Debian packages used at run time (OpenBLAS); installs them when root.
system-deps:
	@scripts/system-deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/trainer

# A seed and two joiners on 127.0.0.1 train on the Go standard library source
# for a few minutes, checkpoint, and print a sample (scripts/demo.sh).
demo: system-deps build
	@scripts/demo.sh

# Binaries that scripts/gpu-check.sh runs on a GPU machine (it builds nothing there).
gpu-check-build:
	mkdir -p bin
	$(GO) build -trimpath -ldflags='-s -w' -o bin/trainer ./cmd/trainer
	$(GO) test -c -trimpath -ldflags='-s -w' -o bin/cuda.test ./compute/cuda
	$(GO) test -c -trimpath -ldflags='-s -w' -o bin/device.test ./compute/device

deps:
	$(GO) mod download

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

test: system-deps vet
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -short -race -timeout 20m $$($(GO) list $(RACE_PKGS) 2>/dev/null)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x $(PKGS)

clean:
	rm -rf bin
