# Convenience entry points; the build itself is CMake (see CMakeLists.txt).
#
#   make deps      install missing Debian packages (scripts/install-deps.sh)
#   make build     configure and build build/ (RelWithDebInfo)
#   make demo      build, then ingest the Python docs and ask questions (scripts/demo.sh)
#   make test      the whole suite: build/ and build-asan/ (ASan+UBSan), both through CTest
#   make bench     build, then run the benchmarks (target bench_run) when they exist
#   make docs      API reference from the header comments (Doxygen) into build/doxygen/html
#   make install   cmake --install build --prefix $(PREFIX)   (PREFIX=/usr/local)
#   make clean     remove build/ and build-asan/ (distclean also removes demo-data/)

PREFIX ?= /usr/local
BUILD_DIR ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build demo test bench docs install clean distclean

all: build

deps:
	scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD_DIR) -j$(JOBS)

demo: build
	RAG_BIN=$(BUILD_DIR)/rag scripts/demo.sh

test:
	BUILD_DIR=$(BUILD_DIR) scripts/test.sh

bench: build
	@if cmake --build $(BUILD_DIR) --target help 2>/dev/null | grep -qw bench_run; then \
		cmake --build $(BUILD_DIR) --target bench_run; \
	else \
		echo "bench: no bench_run target in $(BUILD_DIR) (no benchmarks under bench/ yet, or RAG_BUILD_BENCH=OFF)"; \
	fi

docs:
	@command -v doxygen >/dev/null || { echo "docs: doxygen not installed (make deps)"; exit 1; }
	mkdir -p $(BUILD_DIR)
	BUILD=$(BUILD_DIR) doxygen Doxyfile
	@echo "API reference: $(BUILD_DIR)/doxygen/html/index.html"

install:
	@test -f $(BUILD_DIR)/CMakeCache.txt || { echo "install: run 'make build' first"; exit 1; }
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR) build-asan

distclean: clean
	rm -rf demo-data
