# turbo-coder: the facade. CI calls make targets only (see .ci/run).
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/turbo-coder/target
# mold links several times faster than ld on 2 cores; used when installed.
ifneq ($(shell command -v mold 2>/dev/null),)
export RUSTFLAGS ?= -C link-arg=-fuse-ld=mold
endif
CARGO ?= cargo
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: help setup build test lint fmt bench bench-gateway bench-knowledge cluster run-example clean-data

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

bench: ## print every benchmark of docs/benchmarks.md (release build); BENCH_ARGS / KNOWLEDGE_BENCH_ARGS pass options
	$(CARGO) build --locked --release -p turbo-tests --bin turbo-bench -p turbo-coder --bin turbo-coder \
		-p turbo-knowledge --bin turbo-knowledge-bench -p turbo-gateway --bin turbo-gateway \
		-p turbo-orchestrator --bin turbo-orchestrator
	$(CARGO_TARGET_DIR)/release/turbo-bench $(BENCH_ARGS)
	$(CARGO_TARGET_DIR)/release/turbo-knowledge-bench $(KNOWLEDGE_BENCH_ARGS)
	$(CARGO_TARGET_DIR)/release/turbo-knowledge-bench --embedder minilm-static --only-quality

bench-gateway: ## only the gateway benchmark (figure 9): GET /v1/tasks/{id} under wrk, 1,000 WebSocket sessions
	$(CARGO) build --locked --release -p turbo-tests --bin turbo-bench -p turbo-gateway --bin turbo-gateway \
		-p turbo-orchestrator --bin turbo-orchestrator
	$(CARGO_TARGET_DIR)/release/turbo-bench --only-gateway

bench-knowledge: ## only the knowledge benchmark: index throughput, retrieval quality, search at 10k/100k chunks
	$(CARGO) build --locked --release -p turbo-knowledge --bin turbo-knowledge-bench
	$(CARGO_TARGET_DIR)/release/turbo-knowledge-bench $(KNOWLEDGE_BENCH_ARGS)
	$(CARGO_TARGET_DIR)/release/turbo-knowledge-bench --embedder minilm-static --only-quality
