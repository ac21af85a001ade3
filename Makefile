# difftrain: `make demo` runs a small local cluster, `make test` runs the tests.
GO       ?= go
BIN      ?= bin/trainer
PKGS     ?= ./...
# Packages with goroutines of their own run under the race detector too.
RACE_PKGS ?= ./allreduce/... ./cluster/... ./node/... ./checkpoint/... ./dataset/... ./shard/...

.PHONY: all build test vet fmt bench deps clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/trainer

deps:
	$(GO) mod download

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

test: vet
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -timeout 20m $$($(GO) list $(RACE_PKGS) 2>/dev/null)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x $(PKGS)

clean:
	rm -rf bin
