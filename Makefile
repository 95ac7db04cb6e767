# Tandem quick start: `make demo` and `make test` install what is missing, configure, build, run.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= Release

.PHONY: all deps configure build test demo bench bench-grid bench-load clean

all: build

deps:
	bash tools/install_deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) --timeout 900

demo: build
	bash tools/demo.sh $(BUILD_DIR)

# Benchmarks are run on purpose, not by CI (see bench/README.md).
bench: build
	bash bench/run_engine_bench.sh $(BUILD_DIR)

# Every edge configuration through the link emulator against a real verifier, the uplink-drop
# run, and their plot (about 30 minutes on 2 cores; GRID_FLAGS=--quick for a one-minute check).
GRID_OUT ?= bench/results
GRID_FLAGS ?=
bench-grid: build
	bash tools/install_deps.sh --bench
	$(BUILD_DIR)/bin/tandem-bench grid --out $(GRID_OUT)/grid.json $(GRID_FLAGS)
	$(BUILD_DIR)/bin/tandem-bench drop --out $(GRID_OUT)/drop.json
	bash bench/plot_grid.sh $(GRID_OUT)/grid.json $(GRID_OUT)

# The verifier under 1-128 concurrent sessions with batching on and off, and under 4x its
# session capacity (a few minutes on 2 cores; LOAD_FLAGS=--quick for a few seconds).
LOAD_FLAGS ?=
bench-load: build
	$(BUILD_DIR)/bin/tandem-bench load --out $(GRID_OUT)/load.json $(LOAD_FLAGS)
	$(BUILD_DIR)/bin/tandem-bench overload --out $(GRID_OUT)/overload.json

clean:
	rm -rf $(BUILD_DIR)
