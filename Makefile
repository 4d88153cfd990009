# dynamo: see README.md. `make testcase` starts a local ring and opens the REPL.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release

.PHONY: build test lint check run-db testcase run-client stop clean

## release build of both binaries
build:
	$(CARGO) build --release --bins

## the whole test suite: unit, property, script, in-process cluster and end-to-end tests
test:
	$(CARGO) build --bins
	$(CARGO) test --all-targets -- --test-threads=2

## formatting and lints
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## the one gate: formatting, lints, tests
check: lint test

## a local ring in the background: leader 127.0.0.1:13337, members 13338-13341
run-db: build
	@scripts/ring.sh start

## run-db, add every member at the leader, then the REPL on the leader
testcase: run-db
	@scripts/ring.sh add-members
	@$(BIN)/client --node 127.0.0.1 --port 13337

## the REPL on the leader
run-client: build
	@$(BIN)/client --node 127.0.0.1 --port 13337

## stop the local ring
stop:
	@scripts/ring.sh stop

## stop, then remove data and logs
clean: stop
	rm -rf data logs
