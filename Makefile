# kvbench: the two commands a fresh Debian 12 machine needs.
#   make demo   set up, build, run the main job on the embedded default
#   make test   set up, build, run every test (ctest, in parallel)
BUILD      ?= build
BUILD_TYPE ?= Release
JOBS       ?= $(shell nproc)
SANITIZE   ?=
# A PyTorch install (2.x, e.g. with CUDA) is used when python3 can import torch; otherwise
# Debian's libtorch-dev (1.13) from scripts/setup.sh.
TORCH_PREFIX := $(shell python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
CMAKE_ARGS ?=

.PHONY: all setup configure build test demo bench clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  $(if $(TORCH_PREFIX),-DCMAKE_PREFIX_PATH=$(TORCH_PREFIX)) \
	  $(if $(SANITIZE),-DKVB_SANITIZE=$(SANITIZE)) $(CMAKE_ARGS)

configure: $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: setup
	@$(MAKE) --no-print-directory build
	ctest --test-dir $(BUILD) -j $(JOBS) --output-on-failure --timeout 900

demo: setup
	@$(MAKE) --no-print-directory build
	@bash scripts/demo.sh $(BUILD)

bench: setup
	@$(MAKE) --no-print-directory build
	$(BUILD)/kvbench_bench

clean:
	rm -rf $(BUILD)
