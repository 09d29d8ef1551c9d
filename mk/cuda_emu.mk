# The CUDA kernels on the CPU (tests/cuda_emu): cuda/*.cu compiled by g++ against a small
# CUDA emulator and a fake NCCL, linked with the host library's objects, and compared
# bitwise with the CPU reference by the GPU suite itself (tests/gpu/gpu_tests.c, one source
# for both) built with -DSPARCCL_TEST_SCALE=0: the emulator's smaller sizes.  Needs no GPU,
# no nvcc and no NCCL.  `make cudaemu` (part of `make test`) runs it with one rank, the
# selection tests again with the emulator's blocks and threads in reverse order
# (CUDA_EMU_ORDER=reverse), the selection tests once more in a random order, and with two
# ranks (the fake NCCL gathers over MPI), then SPEC 9's tests with three (EMU_TESTS_SUBSET=sec9:
# the dense ring's rank-ordered shard sums, whose order two ranks cannot show).  The random run (CUDA_EMU_ORDER=random) shuffles
# the blocks of each launch, resumes the threads of a block in a fresh random order at its
# start and after every barrier, and lets a thread yield to another at random at each atomic;
# its seed is new each run and printed first ("CUDA_EMU_ORDER=random:SEED reproduces this
# run"): `make cudaemu EMU_RANDOM_ORDER=random:SEED` repeats a failing one.  Last, the GPU
# benchmark (tools/gpu_perf.cu) runs on a small layout with one and two ranks: a smoke test
# of its logic and of its table, not of its times.
EMU_DIR   := $(BUILD)/cuda_emu
EMU_SRC   := cuda/select_kernels.cu cuda/reduce_kernels.cu cuda/importance_kernels.cu \
             cuda/callcheck_kernels.cu cuda/dense_kernels.cu cuda/plain_kernels.cu \
             cuda/nccl_comm.cu
EMU_OBJ   := $(EMU_SRC:cuda/%.cu=$(EMU_DIR)/%.o) $(EMU_DIR)/cuda_emu.o
EMU_CXX   ?= g++
# x86-64 SSE arithmetic has no excess precision; g++ refuses -fexcess-precision=standard.
# -Wno-sign-compare: `int b = threadIdx.x; b < SPARCCL_RADIX_BINS` (nvcc does not warn).
EMU_FLAGS := -std=c++17 -O2 -g -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Werror \
             -ffp-contract=off -fno-fast-math -Iinclude -Isrc -Icuda -Itests/cuda_emu

$(EMU_DIR)/%.o: cuda/%.cu cuda/*.cuh src/*.h include/*.h tests/cuda_emu/*.h
	@mkdir -p $(EMU_DIR)
	$(EMU_CXX) $(EMU_FLAGS) -include tests/cuda_emu/cuda_emu.h -x c++ -c $< -o $@

$(EMU_DIR)/cuda_emu.o: tests/cuda_emu/cuda_emu.cc tests/cuda_emu/*.h
	@mkdir -p $(EMU_DIR)
	mpicxx $(EMU_FLAGS) -DOMPI_SKIP_MPICXX=1 -c $< -o $@

$(BUILD)/bin/sparccl_emu_tests: tests/gpu/gpu_tests.c $(EMU_OBJ) $(LIB_OBJ) | $(BUILD)/bin
	$(CC) $(CFLAGS) -DSPARCCL_TEST_SCALE=0 -Itests/cuda_emu -c tests/gpu/gpu_tests.c -o $(EMU_DIR)/emu_tests.o
	mpicxx -o $@ $(EMU_DIR)/emu_tests.o $(EMU_OBJ) $(LIB_OBJ) $(CHECK_LIBS) $(LDLIBS)

# The same suite at the GPU's full sizes (SPARCCL_TEST_SCALE=1: layers up to 10M elements,
# up to 200 layers a call) on the emulator: `make cudaemu-full`, its own test group in
# `make test` (about 1.5 minutes here).
$(BUILD)/bin/sparccl_gpu_tests_emu: tests/gpu/gpu_tests.c $(EMU_OBJ) $(LIB_OBJ) | $(BUILD)/bin
	$(CC) $(CFLAGS) -DSPARCCL_TEST_SCALE=1 -Itests/cuda_emu -c tests/gpu/gpu_tests.c -o $(EMU_DIR)/gpu_tests.o
	mpicxx -o $@ $(EMU_DIR)/gpu_tests.o $(EMU_OBJ) $(LIB_OBJ) $(CHECK_LIBS) $(LDLIBS)

# The GPU benchmark on the emulator, and the layout it runs on there: five layers, two sent
# dense (below SPARCCL_MIN_SPARSE's 4096), one of exactly one chunk, two of several chunks
# with a partial last one (98192 elements).
$(BUILD)/bin/sparccl_gpu_perf_emu: tools/gpu_perf.cu tools/tool_util.h cuda/*.cuh src/*.h include/*.h \
                                   tests/cuda_emu/*.h $(EMU_OBJ) $(LIB_OBJ) $(TOOL_UTIL_OBJ) | $(BUILD)/bin
	mpicxx $(EMU_FLAGS) -DOMPI_SKIP_MPICXX=1 -include tests/cuda_emu/cuda_emu.h -x c++ -c tools/gpu_perf.cu -o $(EMU_DIR)/gpu_perf.o
	mpicxx -o $@ $(EMU_DIR)/gpu_perf.o $(EMU_OBJ) $(LIB_OBJ) $(TOOL_UTIL_OBJ) $(LDLIBS)

EMU_PERF_LAYOUT := $(EMU_DIR)/perf_smoke.txt
$(EMU_PERF_LAYOUT): mk/cuda_emu.mk
	@mkdir -p $(EMU_DIR)
	printf '# gpu_perf smoke test (mk/cuda_emu.mk): name count\nbias 1\nedge 4095\nchunk 4096\nmid 20000\nbig 70000\n' > $@

# Each rank count (and the plain kernels at one rank): exit 0, and rank 0's table has one
# row per method, every field a finite number (a failed call, a NaN or an Inf time fails).
# `make cudaemu-perf` runs only this.
EMU_PERF_METHODS := scam-topk ef-topk ef21-topk scam-impk ef-randk
define EMU_PERF_SMOKE
@for run in 1:optimised 2:optimised 1:plain; do \
	  np=$${run%%:*}; kernels=$${run#*:}; log=$(EMU_DIR)/gpu_perf_np$${np}_$$kernels.log; \
	  echo "$(MPIRUN) -np $$np $(BUILD)/bin/sparccl_gpu_perf_emu -n 1 -w 0 --copy-mib 16 --kernels $$kernels $(EMU_PERF_LAYOUT) > $$log"; \
	  timeout 120 $(MPIRUN) -np $$np $(BUILD)/bin/sparccl_gpu_perf_emu -n 1 -w 0 --copy-mib 16 --kernels $$kernels \
	    $(EMU_PERF_LAYOUT) > $$log || { cat $$log; echo "gpu_perf (emulated, $$np ranks) failed"; exit 1; }; \
	  cat $$log; \
	  test "$$(grep -c '^  ' $$log)" = 5 || { echo "gpu_perf (emulated, $$np ranks): not 5 rows"; exit 1; }; \
	  for m in $(EMU_PERF_METHODS); do \
	    grep -qE '^  perf_smoke +'"$$m"' +98192( +[0-9]+\.[0-9]+){8} +([0-9]+\.[0-9]+|-)$$' $$log || \
	      { echo "gpu_perf (emulated, $$np ranks): no row of finite numbers for $$m"; exit 1; }; \
	  done; \
done
endef

EMU_RANDOM_ORDER ?= random

.PHONY: cudaemu cudaemu-full cudaemu-perf
cudaemu-perf: check-tools $(BUILD)/bin/sparccl_gpu_perf_emu $(EMU_PERF_LAYOUT)
	$(EMU_PERF_SMOKE)

cudaemu-full: check-tools $(BUILD)/bin/sparccl_gpu_tests_emu
	$(MPIRUN) -np 1 $(BUILD)/bin/sparccl_gpu_tests_emu

cudaemu: check-tools $(BUILD)/bin/sparccl_emu_tests $(BUILD)/bin/sparccl_gpu_tests_emu \
         $(BUILD)/bin/sparccl_gpu_perf_emu $(EMU_PERF_LAYOUT)
	timeout 600 $(MPIRUN) -np 1 $(BUILD)/bin/sparccl_emu_tests
	CUDA_EMU_ORDER=reverse EMU_TESTS_SUBSET=select timeout 600 $(MPIRUN) -np 1 -x CUDA_EMU_ORDER -x EMU_TESTS_SUBSET $(BUILD)/bin/sparccl_emu_tests
	CUDA_EMU_ORDER=$(EMU_RANDOM_ORDER) EMU_TESTS_SUBSET=select timeout 600 $(MPIRUN) -np 1 -x CUDA_EMU_ORDER -x EMU_TESTS_SUBSET $(BUILD)/bin/sparccl_emu_tests
	timeout 600 $(MPIRUN) -np 2 $(BUILD)/bin/sparccl_emu_tests
	EMU_TESTS_SUBSET=sec9 timeout 600 $(MPIRUN) -np 3 -x EMU_TESTS_SUBSET $(BUILD)/bin/sparccl_emu_tests
	$(EMU_PERF_SMOKE)

EXTRA_TESTS += cudaemu cudaemu-full
