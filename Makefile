# turbo-coder: the facade. CI calls make targets only (see .ci/run).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/turbo-coder/target
# mold links several times faster than ld on 2 cores; used when installed.
ifneq ($(shell command -v mold 2>/dev/null),)
export RUSTFLAGS ?= -C link-arg=-fuse-ld=mold
endif
CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: help setup build test lint fmt bench cluster run-example clean-data

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## install what builds and tests need (protoc, mold, python3, git, postgres), idempotently
	bash deploy/scripts/setup.sh

build: ## build every crate and the turbo-coder binary (debug)
	$(CARGO) build --workspace --locked

test: ## run every test (unit, property, end-to-end against the scripted model server)
	$(CARGO) build --locked --workspace --bins
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --locked --profile ci
else
	$(CARGO) test --workspace --locked
endif

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

cluster: ## run the cluster locally: nats-server, the orchestrator on Postgres, one agent worker per role (Ctrl-C stops)
	$(CARGO) build --locked -p turbo-coder
	bash deploy/scripts/cluster.sh

bench: ## print the framework-overhead benchmark (see docs/benchmarks.md); BENCH_ARGS="--steps N" to change it
	$(CARGO) build --locked --release -p turbo-tests --bin turbo-bench -p turbo-coder --bin turbo-coder
	$(CARGO_TARGET_DIR)/release/turbo-bench $(BENCH_ARGS)
