# Tandem quick start: `make demo` and `make test` install what is missing, configure, build, run.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= Release

.PHONY: all deps configure build test demo bench clean

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

clean:
	rm -rf $(BUILD_DIR)
