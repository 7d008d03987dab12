# kvbench: the two commands a fresh Debian 12 machine needs.
#   make demo   set up, build, run the main job on the embedded default
#   make test   set up, build, run every test (ctest, in parallel), then every fuzz target for
#               a few seconds (fuzz-smoke)
# Fuzzing (tests/fuzz/README.md), in its own clang + ASan/UBSan tree $(FUZZ_BUILD):
#   make fuzz         every target for FUZZ_SECONDS each (FUZZ_TARGETS to choose)
#   make fuzz-smoke   every target for FUZZ_SMOKE_SECONDS each from the committed seeds (CI)
BUILD      ?= build
BUILD_TYPE ?= Release
JOBS       ?= $(shell nproc)
SANITIZE   ?=
# A PyTorch install (2.x, e.g. with CUDA) is used when python3 can import torch; otherwise
# Debian's libtorch-dev (1.13) from scripts/setup.sh.
TORCH_PREFIX := $(shell python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
CMAKE_ARGS ?=
FUZZ_BUILD         ?= build-fuzz
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_JOBS          ?= 2
FUZZ_OUT           ?= out/fuzz
FUZZ_TARGETS       ?= $(patsubst tests/fuzz/%.cpp,%,$(wildcard tests/fuzz/fuzz_*.cpp))
FUZZ_FLAGS         ?=

.PHONY: all setup configure build test demo bench clean fuzz-build fuzz fuzz-smoke

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
	@$(MAKE) --no-print-directory fuzz-smoke

demo: setup
	@$(MAKE) --no-print-directory build
	@bash scripts/demo.sh $(BUILD)

bench: setup
	@$(MAKE) --no-print-directory build
	$(BUILD)/kvbench_bench

# Every layer with coverage instrumentation, ASan and UBSan (CMakeLists.txt, KVB_FUZZ), at -O1
# with line tables for the stack traces; only the fuzz targets are linked.
$(FUZZ_BUILD)/build.ninja:
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DKVB_FUZZ=ON \
	  -DKVB_CUDA=OFF -DKVB_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" \
	  $(if $(TORCH_PREFIX),-DCMAKE_PREFIX_PATH=$(TORCH_PREFIX))

fuzz-build: $(FUZZ_BUILD)/build.ninja
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target kvb_fuzz

fuzz: setup
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_FLAGS="$(FUZZ_FLAGS)" bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_JOBS) \
	  $(FUZZ_OUT) $(FUZZ_TARGETS)

# CI: a regression in a parser shows up as a crash on the seeds or within seconds of mutation.
# A fresh corpus each time (nothing carried over from earlier runs) and a fixed seed, so that
# runs on one machine mutate alike (how far they get still depends on its speed).
fuzz-smoke: fuzz-build
	@rm -rf $(FUZZ_BUILD)/smoke
	@FUZZ_FLAGS="-seed=1 $(FUZZ_FLAGS)" bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SMOKE_SECONDS) \
	  $(FUZZ_JOBS) $(FUZZ_BUILD)/smoke $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD)
