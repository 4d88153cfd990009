# dynamo: see README.md. `make testcase` starts a local ring and opens the REPL.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release

.PHONY: build test sim sim-scale chaos lint check fuzz run-db testcase run-client stop clean bench bench-move bench-ae bench-detector bench-failover bench-http bench-security bench-scan profile bench-ab help

## release build of both binaries
build:
	$(CARGO) build --release --bins

## the whole test suite: unit, property, script, in-process cluster and end-to-end tests
test:
	$(CARGO) build --bins
	$(CARGO) test --all-targets -- --test-threads=2

SEEDS ?= 100
STEPS ?= 80
## the nemesis in simulation, SEEDS seeds (100) of STEPS steps (80) from FIRST (random) on every core; SEED=S replays one
sim:
	@if [ -n "$(SEED)" ]; then \
	  SIM_SEED=$(SEED) SIM_STEPS=$(STEPS) $(CARGO) test --release --test sim nemesis_seeds -- --nocapture; \
	else \
	  first=$${FIRST:-$$(( (RANDOM << 15 | RANDOM) + 1 ))}; \
	  echo "make sim: $(SEEDS) seeds from $$first (FIRST=$$first to run them again)"; \
	  SIM_FIRST=$$first SIM_SEEDS=$(SEEDS) SIM_STEPS=$(STEPS) SIM_JOBS=$$(nproc) \
	    $(CARGO) test --release --test sim nemesis_seeds -- --nocapture; \
	fi

SIZES ?= 10 100
## a simulated ring of each of SIZES nodes ("10 100"; "10 100 1000"), formed in bulk: idle traffic per node, then one add-node and one remove-node with keys (options: tests/sim/scale.rs)
sim-scale:
	SIM_SCALE="$(SIZES)" $(CARGO) test --release --test sim idle_traffic_as_the_ring_grows -- --ignored --nocapture

## the nemesis against five real processes in network namespaces (root), CHAOS_SECONDS of schedule (300); CHAOS_SEED=S draws a seed's choices again
chaos:
	$(CARGO) build --bins
	CHAOS_SECONDS=$${CHAOS_SECONDS:-300} $(CARGO) test --test chaos -- --nocapture --exact chaos

## formatting and lints
lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## the one gate: formatting, lints, tests
check: lint test

## coverage-guided fuzzing (cargo-fuzz, nightly): each target FUZZ_SECONDS (default 60) from fuzz/corpus; skipped without nightly
fuzz:
	@scripts/fuzz.sh

## a local ring in the background: leader 127.0.0.1:13337, members 13338-13341
run-db: build
	@scripts/ring.sh start

## run-db, add every member at the leader, then the REPL on the leader
testcase: run-db
	@scripts/ring.sh add-members
	@$(BIN)/client --node 127.0.0.1 --port 13337 --token-file data/secrets/admin.token

## the REPL on the leader
run-client: build
	@$(BIN)/client --node 127.0.0.1 --port 13337 --token-file data/secrets/admin.token

## stop the local ring
stop:
	@scripts/ring.sh stop

## stop, then remove data and logs
clean: stop
	rm -rf data logs

## the benchmark: fresh local rings, workloads, table, target/bench/results.json
bench: build
	@scripts/bench.sh

## a ring change under load: add a 4th node to 3 nodes holding 1,000,000 keys, YCSB A before and during
bench-move: build
	@scripts/bench-move.sh

## foreground latency while anti-entropy refills a wiped node, against anti-entropy off
bench-ae: build
	@scripts/bench-ae.sh

## time from the leader's kill -9 to a new leader named by every member, over BENCH_FAILOVER_KILLS kills (20)
bench-failover: build
	@scripts/bench-failover.sh

## foreground latency with one node hung (SIGSTOP), without and with the failure detector
bench-detector: build
	@scripts/bench-detector.sh

## where the time goes: perf over the 3 nodes and the load generator during YCSB A, a table and a flamegraph
profile: build
	@scripts/profile.sh

## what security costs: a ring with a cluster secret and tokens against one run --insecure, alternating (ROUNDS, 3), and connection set-up time
bench-security: build
	@scripts/bench-security.sh $${ROUNDS:-3}

## listing, backup and restore: scan rate (one replica and R per range), backup and restore rates of a KEYS-key ring (1,000,000), YCSB A with a scan beside it against alone
bench-scan: build
	@scripts/bench-scan.sh $${KEYS:-1000000}

## two builds A/B, alternating on fresh rings: scripts/bench-ab.sh DIR_A DIR_B [ROUNDS]
bench-ab:
	@scripts/bench-ab.sh $(A) $(B) $(ROUNDS)

## the HTTP API (wrk) beside the RPC port on one ring, and YCSB A with and without a /metrics scraper
bench-http: build
	@scripts/bench-http.sh

# The same ring in containers (docker-compose.yaml): `docker compose` (v2) when present,
# else `docker-compose` (v1); the image is built from target/release, nothing is pulled.
DOCKER := scripts/docker.sh

.PHONY: docker-image run-db-docker testcase-docker run-client-docker stop-docker clean-docker logs-docker test-docker

## the image dynamo:local: the release binaries and their shared libraries, FROM scratch
docker-image: build
	@$(DOCKER) image

## the ring in containers, detached: leader and member1-4 (port 13337 each), data in volumes
run-db-docker: docker-image
	@$(DOCKER) up

## run-db-docker, add every member at the leader, then the REPL on the leader
testcase-docker: run-db-docker
	@$(DOCKER) add-members
	@$(DOCKER) client

## the REPL on the leader, in the client container
run-client-docker:
	@$(DOCKER) client

## stop and remove the containers; the volumes (the data) are kept
stop-docker:
	@$(DOCKER) down

## stop-docker, then remove the volumes too
clean-docker:
	@$(DOCKER) clean

## the nodes' recent logs
logs-docker:
	@$(DOCKER) compose logs --tail=50

## the docker ring end to end (tests/docker.sh, its own compose project)
test-docker: docker-image
	@tests/docker.sh

## this list: every target with the comment above it
help:
	@awk '/^## /{doc=substr($$0,4); next} /^[a-zA-Z][a-zA-Z_-]*:/{if (doc != "") {split($$1, t, ":"); printf "  %-22s %s\n", t[1], doc}} {doc=""}' $(MAKEFILE_LIST)
