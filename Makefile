# sparccl: `make` builds the host library; `make test` runs every test; `make demo` the demo;
# `make deps` installs the Debian packages; `make cuda` / `make gpucheck` the device part.
# The Makefile says plainly what it skips when a tool is missing.

PREFIX   ?= /usr/local
BUILD    ?= build
MPICC    ?= $(shell command -v mpicc 2>/dev/null)
MPIRUN   ?= mpirun --allow-run-as-root --oversubscribe
# CUDA: /usr/local/cuda, else wherever the nvcc on PATH lives.
ifeq ($(origin CUDA_HOME),undefined)
CUDA_HOME := $(shell test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda || \
               { n=$$(command -v nvcc) && dirname "$$(dirname "$$(readlink -f "$$n")")"; })
CUDA_HOME := $(or $(CUDA_HOME),/usr/local/cuda)
endif
NVCC     ?= $(shell command -v nvcc 2>/dev/null || ls $(CUDA_HOME)/bin/nvcc 2>/dev/null)
# NCCL: beside CUDA, in /usr, or the nvidia-nccl wheel of the python3 on PATH (how the GPU
# machines' PyTorch brings it: nvidia/nccl/{include,lib}, libnccl.so.2 with no libnccl.so).
ifeq ($(origin NCCL_HOME),undefined)
NCCL_HOME := $(shell for d in $(CUDA_HOME) /usr; do test -f $$d/include/nccl.h && { echo $$d; exit; }; done; \
               python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
endif
HAVE_NCCL := $(shell test -n "$(NCCL_HOME)" && test -f $(NCCL_HOME)/include/nccl.h && echo 1)
NCCL_SO   := $(firstword $(wildcard $(addprefix $(NCCL_HOME)/,lib64/libnccl.so lib/libnccl.so \
               lib/x86_64-linux-gnu/libnccl.so lib64/libnccl.so.2 lib/libnccl.so.2 \
               lib/x86_64-linux-gnu/libnccl.so.2)))
NCCL_LIBDIR := $(patsubst %/,%,$(dir $(NCCL_SO)))
# -I only where the compilers would not look anyway; -l:libnccl.so.2 where there is no
# development symlink.  NCCL_LINK for gcc, NCCL_NVLINK for nvcc.
NCCL_INC  := $(if $(filter $(CUDA_HOME) /usr,$(NCCL_HOME)),,-I$(NCCL_HOME)/include)
NCCL_LNAME := $(if $(filter %.so,$(NCCL_SO)),-lnccl,-l:libnccl.so.2)
NCCL_LINK := -L$(NCCL_LIBDIR) -Wl,-rpath,$(NCCL_LIBDIR) $(NCCL_LNAME)
NCCL_NVLINK := -L$(NCCL_LIBDIR) -Xlinker -rpath -Xlinker $(NCCL_LIBDIR) -Xlinker $(NCCL_LNAME)
HAVE_CHECK := $(shell pkg-config --exists check 2>/dev/null && echo 1)

CC       := $(if $(MPICC),$(MPICC),cc)
# Bitwise reproducibility (SPEC 1): no contraction into fma, no fast-math, IEEE everywhere.
# `override`: a CFLAGS given on the command line (`make CFLAGS=-O3`) replaces only the
# optimisation flags; these are still appended (GCC's default -ffp-contract=fast would fuse
# into fma on aarch64, e.g. Grace, and the CPU reference would no longer match bitwise).
FPFLAGS  := -ffp-contract=off -fno-fast-math -fexcess-precision=standard
CFLAGS   ?= -O2 -g
override CFLAGS += -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wno-unused-parameter $(FPFLAGS) \
            -Iinclude -Isrc
LIB_CFLAGS := -fPIC -fvisibility=hidden
LDLIBS   := -lm -lpthread

LIB_SRC  := src/errors.c src/debug.c src/config.c src/comm.c src/select.c src/select_stream.c src/simd.c src/compress.c \
            src/decompress.c src/dense.c src/callcheck.c src/allreduce.c src/pipeline.c src/phase.c src/callback.c src/importance.c src/restart.c src/checkpoint.c \
            src/host.c src/host_importance.c src/exchange_hierarchical.c src/exchange_split.c \
            src/mpi.c
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
# In the host-only library, src/no_device.c answers the device-comm calls (sparcclNotSupported);
# the CUDA library (mk/cuda.mk) has the real ones instead.
HOST_OBJ := $(BUILD)/obj/no_device.o
SAN_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/san/%.o) $(BUILD)/san/no_device.o
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_COMMON := tests/common.c tests/reference.c

.PHONY: all lib test unit mpitest sanitize demo deps clean perf check-tools cuda gpucheck

all: lib perf

check-tools:
	@test -n "$(MPICC)" || { echo "mpicc not found: run 'make deps' (or: apt-get install -y libopenmpi-dev openmpi-bin check pkg-config)"; exit 1; }

lib: check-tools $(BUILD)/lib/libsparccl.so $(BUILD)/lib/libsparccl.a

$(BUILD)/obj/%.o: src/%.c src/*.h include/*.h | $(BUILD)/obj
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -c $< -o $@
$(BUILD)/san/%.o: src/%.c src/*.h include/*.h | $(BUILD)/san
	$(CC) $(CFLAGS) $(SANFLAGS) -c $< -o $@

$(BUILD)/lib/libsparccl.so: $(LIB_OBJ) $(HOST_OBJ) src/sparccl.map | $(BUILD)/lib
	$(CC) -shared -Wl,--version-script=src/sparccl.map -o $@ $(LIB_OBJ) $(HOST_OBJ) $(LDLIBS)
$(BUILD)/lib/libsparccl.a: $(LIB_OBJ) $(HOST_OBJ) | $(BUILD)/lib
	rm -f $@ && ar rcs $@ $(LIB_OBJ) $(HOST_OBJ)

$(BUILD)/obj $(BUILD)/san $(BUILD)/lib $(BUILD)/bin:
	mkdir -p $@

# ---------------------------------------------------------------- tests
# Check: from pkg-config, or given on the command line / in the environment (a machine with
# no pkg-config, e.g. the GPU machines: tools/gpu_session.sh).
CHECK_LIBS ?= $(shell pkg-config --libs check 2>/dev/null)
SANFLAGS := -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

$(BUILD)/tests/suites.h: $(TEST_SRC) | $(BUILD)/bin
	@mkdir -p $(BUILD)/tests
	@grep -ho 'Suite\s*\*\s*make_[a-z0-9_]*_suite' $(TEST_SRC) | sed 's/.*\(make_[a-z0-9_]*_suite\)/SUITE(\1)/' > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

$(BUILD)/bin/sparccl_tests: $(TEST_SRC) $(TEST_COMMON) tests/main.c tests/common.h $(BUILD)/tests/suites.h $(BUILD)/lib/libsparccl.a
	$(CC) $(CFLAGS) -I$(BUILD)/tests -Itests -o $@ tests/main.c $(TEST_COMMON) $(TEST_SRC) $(BUILD)/lib/libsparccl.a $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/bin/sparccl_tests_san: $(TEST_SRC) $(TEST_COMMON) tests/main.c tests/common.h $(BUILD)/tests/suites.h $(SAN_OBJ)
	$(CC) $(CFLAGS) $(SANFLAGS) -I$(BUILD)/tests -Itests -o $@ tests/main.c $(TEST_COMMON) $(TEST_SRC) $(SAN_OBJ) $(CHECK_LIBS) $(LDLIBS)

MPI_TEST_SRC := tests/mpi/mpi_tests.c tests/mpi/test_trust.c tests/mpi/test_pipeline.c tests/mpi/test_hier.c tests/mpi/test_split.c
$(BUILD)/bin/sparccl_mpi_tests: $(MPI_TEST_SRC) $(TEST_COMMON) tests/common.h $(BUILD)/lib/libsparccl.a
	$(CC) $(CFLAGS) -Itests -o $@ $(MPI_TEST_SRC) $(TEST_COMMON) $(BUILD)/lib/libsparccl.a $(CHECK_LIBS) $(LDLIBS)

# The multi-rank suites under ASan+UBSan (2 and 4 ranks): what other ranks send is never
# trusted, and this is where a bad block would write outside a buffer.
$(BUILD)/bin/sparccl_mpi_tests_san: $(MPI_TEST_SRC) $(TEST_COMMON) tests/common.h $(SAN_OBJ)
	$(CC) $(CFLAGS) $(SANFLAGS) -Itests -o $@ $(MPI_TEST_SRC) $(TEST_COMMON) $(SAN_OBJ) $(CHECK_LIBS) $(LDLIBS)

# `make test`: installs what is missing, then the unit suites, the multi-rank suites under
# mpirun with 1-4 ranks, and the unit suites again under ASan+UBSan.
# A group that could not run (no GPU, no nvcc) adds its name to $(SKIPPED) and is counted as
# skipped, never as passed.
TEST_GROUPS = unit mpitest sanitize $(EXTRA_TESTS)
SKIPPED := $(BUILD)/skipped-groups
test: deps
	@mkdir -p $(BUILD) && rm -f $(SKIPPED)
	@$(MAKE) --no-print-directory $(TEST_GROUPS)
	@skipped=$$(sort -u $(SKIPPED) 2>/dev/null | tr '\n' ' '); n=$$(echo $$skipped | wc -w); \
	  echo "test groups ($(strip $(TEST_GROUPS))): $$(( $(words $(TEST_GROUPS)) - n )) passed, $$n skipped$${skipped:+ ($${skipped% })}, 0 failed"

unit: lib $(BUILD)/bin/sparccl_tests $(BUILD)/bin/sparccl_log_probe
	bash tests/log_check.sh $(BUILD)/bin/sparccl_log_probe
	$(MPIRUN) -np 1 $(BUILD)/bin/sparccl_tests

$(BUILD)/bin/sparccl_log_probe: tests/log_probe.c $(BUILD)/lib/libsparccl.a | $(BUILD)/bin
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/lib/libsparccl.a $(LDLIBS)

mpitest: lib $(BUILD)/bin/sparccl_mpi_tests
	@for n in 1 2 3 4; do \
	  echo "== multi-rank suite, $$n ranks"; \
	  $(MPIRUN) -np $$n $(BUILD)/bin/sparccl_mpi_tests || exit 1; \
	done
	@echo "== hierarchical exchange, 8 ranks (4 nodes of 2: node order matters from 3 nodes)"
	@CK_RUN_SUITE=hierarchical $(MPIRUN) -np 8 $(BUILD)/bin/sparccl_mpi_tests
	@echo "== split exchange, 8 ranks"
	@CK_RUN_SUITE=split $(MPIRUN) -np 8 $(BUILD)/bin/sparccl_mpi_tests

# Open MPI's own leaks are not ours: LeakSanitizer off, ASan and UBSan on.
SAN_ENV := ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
sanitize: check-tools $(BUILD)/bin/sparccl_tests_san $(BUILD)/bin/sparccl_mpi_tests_san
	$(SAN_ENV) $(MPIRUN) -np 1 $(BUILD)/bin/sparccl_tests_san
	@for n in 2 4; do \
	  echo "== multi-rank suite under ASan+UBSan, $$n ranks"; \
	  $(SAN_ENV) $(MPIRUN) -np $$n $(BUILD)/bin/sparccl_mpi_tests_san || exit 1; \
	done

# ---------------------------------------------------------------- tools
perf: lib $(BUILD)/bin/sparccl_perf

# What the benchmark tools share (layouts, gradients, statistics, method names): linked by
# sparccl_perf, bandwidth_bench (mk/bandwidth.mk) and sparccl_gpu_perf (mk/cuda.mk).
TOOL_UTIL_OBJ := $(BUILD)/obj/tool_util.o
$(TOOL_UTIL_OBJ): tools/tool_util.c tools/tool_util.h src/*.h include/*.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -c tools/tool_util.c -o $@

# The perf tool and the plain baseline it times sparccl against (docs/PERFORMANCE.md).
$(BUILD)/bin/sparccl_perf: tools/sparccl_perf.c tools/tool_util.h tools/baseline_select.cc \
                           tools/baseline_select.h $(TOOL_UTIL_OBJ) $(BUILD)/lib/libsparccl.a | $(BUILD)/bin
	$(CC) $(CFLAGS) -Itools -c tools/sparccl_perf.c -o $(BUILD)/obj/sparccl_perf.o
	mpicxx -O2 -g -std=c++11 -Wall -Wextra -ffp-contract=off -fno-fast-math -Iinclude -Isrc -Itools -c tools/baseline_select.cc -o $(BUILD)/obj/baseline_select.o
	mpicxx -o $@ $(BUILD)/obj/sparccl_perf.o $(BUILD)/obj/baseline_select.o $(TOOL_UTIL_OBJ) $(BUILD)/lib/libsparccl.a $(LDLIBS)

# ---------------------------------------------------------------- demo
demo: deps
	@$(MAKE) --no-print-directory fmnist
	OPENBLAS_NUM_THREADS=1 MPIRUN="$(MPIRUN)" BUILD=$(BUILD) examples/fashion_mnist/demo.sh

# ---------------------------------------------------------------- dependencies
DEB_PACKAGES := libopenmpi-dev openmpi-bin check pkg-config libsubunit-dev
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing packages; run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(BUILD)

# Each further part (examples, preload libraries, CUDA) brings its own rules in mk/*.mk and
# may add to DEB_PACKAGES, EXTRA_TESTS and all.
include $(sort $(wildcard mk/*.mk))
