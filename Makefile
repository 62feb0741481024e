# proxynorm — build, test, demo, benchmarks.
#   make            library (build/libproxynorm.a, .so) and the command line (build/proxynorm)
#   make demo       install what is missing, build, train a small GN+PN ResNet on Fashion-MNIST
#   make test       install what is missing, build, run every test; last line "N passed, N failed"
#   make bench-norm normalization kernels against PyTorch (bench/)
#   make bench-train full training steps of resnet20 against PyTorch (bench/; BENCH_ROUNDS=N rounds)
#   make bench-conv Winograd, the direct 3x3 kernel and im2col + OpenBLAS sgemm (bench/)
#   make bench-mpi  data-parallel throughput and bytes per update, 1 and 2 MPI ranks
#   make fuzz       libFuzzer harnesses of every input parser, FUZZ_SECONDS each [30] (fuzz/)

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -march=native
# -ffp-contract=off: no multiply-add fused by the compiler on its own (gcc's default under
# -std=c11 already; clang's default contracts within an expression), so that code paths the
# tests compare bit for bit (scalar against vector, recomputed against stored) stay equal
# with either compiler.
CFLAGS  += -std=c11 -ffp-contract=off -Wall -Wextra -fPIC -fopenmp $(OPT) -Iinclude -Isrc -D_GNU_SOURCE
# OpenBLAS built on OpenMP (Debian's libopenblas-openmp-dev): BLAS and our kernels then
# share one thread pool. The pthreads build spins its own threads against libgomp's
# (measured: a 3x3 convolution 9x slower at 2 threads than at 1).
BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
LDLIBS  += -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lcjson -lz -lm
LDFLAGS += -fopenmp

# MPI (Open MPI, `pkg-config ompi-c`): when found, the build (library, command line,
# tests) includes data-parallel training (src/dist/, docs/DISTRIBUTED.md); MPI=0 builds
# without it. make test installs Open MPI first (scripts/install-deps.sh --mpi).
MPI ?= $(shell pkg-config --exists ompi-c 2>/dev/null && echo 1 || echo 0)
ifeq ($(MPI),1)
CFLAGS  += -DPN_HAVE_MPI $(shell pkg-config --cflags ompi-c)
LDLIBS  += $(shell pkg-config --libs ompi-c)
endif
# Objects are rebuilt when the MPI choice changes.
CONFIG_STAMP = $(BUILD)/.config-mpi$(MPI)

# Add a flag only when the compiler accepts it.
cc-option = $(shell $(CC) -Werror $(1) -x c -c /dev/null -o /dev/null 2>/dev/null && echo $(1))
CFLAGS += $(call cc-option,-Wno-stringop-truncation)

LIB_SRC  := $(sort $(wildcard src/kernels/*.c src/nn/*.c src/train/*.c src/data/*.c src/io/*.c src/diag/*.c src/dist/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
HEADERS  := $(wildcard include/*.h src/*/*.h)

.PHONY: all deps deps-test demo test test-fast test-sanitize sanitize-build fuzz fuzz-build check bench-norm bench-train bench-conv bench-mpi clean
all: $(BUILD)/libproxynorm.a $(BUILD)/libproxynorm.so $(if $(CLI_SRC),$(BUILD)/proxynorm) \
     $(BUILD)/examples/quickstart

$(CONFIG_STAMP):
	@mkdir -p $(dir $@)
	@rm -f $(BUILD)/.config-mpi*
	@touch $@

$(BUILD)/%.o: %.c $(HEADERS) $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libproxynorm.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libproxynorm.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/proxynorm: $(CLI_OBJ) $(BUILD)/libproxynorm.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/libproxynorm.a $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(BUILD)/libproxynorm.a $(LDFLAGS) $(LDLIBS)

deps:
	@scripts/install-deps.sh

# The tests also run the distributed training under mpirun, the fuzzers (clang,
# libFuzzer) and the command line under valgrind.
deps-test:
	@scripts/install-deps.sh --mpi --test

# make test: the suite built normally and built with AddressSanitizer and
# UndefinedBehaviorSanitizer, and every fuzzer for FUZZ_SECONDS, one summary.
# make test-fast: the normal build only.
# -march=native as in the normal build, so that the AVX2 kernels (conv_direct.c) run sanitized.
SAN_FLAGS = -O1 -g -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SAN_BIN   = $(TEST_BIN:$(BUILD)/%=build-san/%)
# Passive OpenMP waiting: spinning threads starve each other when the 2 cores are shared.
TEST_ENV  = ASAN_OPTIONS=detect_leaks=1 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive
test: deps-test
	@$(MAKE) --no-print-directory all $(TEST_BIN)
	@$(MAKE) --no-print-directory sanitize-build
	@$(MAKE) --no-print-directory fuzz-build
	@$(TEST_ENV) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/run.sh $(TEST_BIN) $(SAN_BIN) $(FUZZ_TEST)

test-fast: deps-test
	@$(MAKE) --no-print-directory all $(TEST_BIN)
	@$(TEST_ENV) tests/run.sh $(TEST_BIN)

test-sanitize: deps-test
	@$(MAKE) --no-print-directory sanitize-build
	@$(TEST_ENV) tests/run.sh $(SAN_BIN)

sanitize-build:
	@$(MAKE) --no-print-directory BUILD=build-san OPT="$(SAN_FLAGS)" LDFLAGS="-fopenmp $(SAN_FLAGS)" \
		build-san/libproxynorm.a $(SAN_BIN) $(if $(CLI_SRC),build-san/proxynorm)

# Fuzzing (fuzz/README.md): clang's libFuzzer with ASan and UBSan, the library
# built into build-fuzz/ without MPI. Each harness runs as a test program
# (build-fuzz/tests/fuzz_X, a wrapper around fuzz/run-one.sh).
FUZZ_SECONDS ?= 30
FUZZ_CC      ?= clang-14
FUZZ_FLAGS    = -O1 -g -fno-omit-frame-pointer -Wno-pass-failed -fsanitize=fuzzer-no-link,address,undefined \
                -fno-sanitize-recover=undefined
FUZZ_NAMES   := $(patsubst fuzz/%.c,%,$(sort $(wildcard fuzz/fuzz_*.c)))
FUZZ_TEST     = $(FUZZ_NAMES:%=build-fuzz/tests/%)

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=$(FUZZ_CC) MPI=0 OPT="$(FUZZ_FLAGS)" \
		LDFLAGS="-fopenmp $(FUZZ_FLAGS)" $(FUZZ_TEST)

fuzz: deps-test
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/run.sh $(FUZZ_TEST)

$(BUILD)/fuzz/%: fuzz/%.c fuzz/fuzz_util.h $(BUILD)/libproxynorm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $< $(filter %.o,$^) $(BUILD)/libproxynorm.a $(LDFLAGS) $(LDLIBS)

# The command line's parsing, with main renamed so that the harness can call it.
$(BUILD)/fuzz/fuzz_cli: $(BUILD)/fuzz/cli_main.o $(filter-out %/main.o,$(CLI_OBJ))
$(BUILD)/fuzz/cli_main.o: src/cli/main.c $(HEADERS) $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Dmain=pn_cli_main -c $< -o $@

.SECONDARY: $(FUZZ_NAMES:%=build-fuzz/fuzz/%)
$(BUILD)/tests/fuzz_%: $(BUILD)/fuzz/fuzz_% fuzz/run-one.sh
	@mkdir -p $(dir $@)
	@printf '#!/bin/sh\nexec fuzz/run-one.sh %s "$${FUZZ_SECONDS:-30}"\n' $< >$@
	@chmod +x $@

check: test

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

# Benchmarks run both sides (ours and PyTorch, both on libgomp) with passive OpenMP waiting,
# as the command line does, unless OMP_WAIT_POLICY is set.
bench-norm: deps
	@scripts/install-deps.sh --torch
	@$(MAKE) --no-print-directory all $(BUILD)/bench/bench_norm
	@OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} bench/bench_norm.sh $(BUILD)/bench/bench_norm

bench-train: deps
	@scripts/install-deps.sh --torch
	@$(MAKE) --no-print-directory all $(BUILD)/bench/bench_train
	@OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} bench/bench_train.sh $(BUILD)/bench/bench_train

bench-conv: deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench/bench_conv
	@OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-passive} $(BUILD)/bench/bench_conv

bench-mpi: deps
	@scripts/install-deps.sh --mpi
	@$(MAKE) --no-print-directory all
	@bench/bench_mpi.sh $(BUILD)/proxynorm

$(BUILD)/examples/%: examples/%.c $(BUILD)/libproxynorm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libproxynorm.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(wildcard bench/*.h) $(BUILD)/libproxynorm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libproxynorm.a $(LDFLAGS) $(LDLIBS)

clean:
	rm -rf $(BUILD) build-san build-fuzz
