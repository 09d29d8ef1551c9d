# The CUDA kernels on the CPU (tests/cuda_emu): cuda/*.cu compiled by g++ against a small
# CUDA emulator and a fake NCCL, linked with the host library's objects, and compared
# bitwise with the CPU reference by the GPU suite itself (tests/gpu/gpu_tests.c, one source
# for both) built with -DSPARCCL_TEST_SCALE=0: the emulator's smaller sizes.  Needs no GPU,
# no nvcc and no NCCL.  `make cudaemu` (part of `make test`) runs it with one rank, the
# selection tests again with the emulator's blocks and threads in reverse order
# (CUDA_EMU_ORDER=reverse), the selection tests once more in a random order, and with two
# ranks (the fake NCCL gathers over MPI).  The random run (CUDA_EMU_ORDER=random) shuffles
# the blocks of each launch, resumes the threads of a block in a fresh random order at its
# start and after every barrier, and lets a thread yield to another at random at each atomic;
# its seed is new each run and printed first ("CUDA_EMU_ORDER=random:SEED reproduces this
# run"): `make cudaemu EMU_RANDOM_ORDER=random:SEED` repeats a failing one.
EMU_DIR   := $(BUILD)/cuda_emu
EMU_SRC   := cuda/select_kernels.cu cuda/reduce_kernels.cu cuda/importance_kernels.cu \
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

# The same suite at the GPU's full sizes (SPARCCL_TEST_SCALE=1) on the emulator: built by
# `make cudaemu` (so the full-size build stays compiling) but run only by `make cudaemu-full`
# (its 10M-element layers take minutes when emulated).
$(BUILD)/bin/sparccl_gpu_tests_emu: tests/gpu/gpu_tests.c $(EMU_OBJ) $(LIB_OBJ) | $(BUILD)/bin
	$(CC) $(CFLAGS) -DSPARCCL_TEST_SCALE=1 -Itests/cuda_emu -c tests/gpu/gpu_tests.c -o $(EMU_DIR)/gpu_tests.o
	mpicxx -o $@ $(EMU_DIR)/gpu_tests.o $(EMU_OBJ) $(LIB_OBJ) $(CHECK_LIBS) $(LDLIBS)

EMU_RANDOM_ORDER ?= random

.PHONY: cudaemu cudaemu-full
cudaemu-full: check-tools $(BUILD)/bin/sparccl_gpu_tests_emu
	$(MPIRUN) -np 1 $(BUILD)/bin/sparccl_gpu_tests_emu

cudaemu: check-tools $(BUILD)/bin/sparccl_emu_tests $(BUILD)/bin/sparccl_gpu_tests_emu
	timeout 600 $(MPIRUN) -np 1 $(BUILD)/bin/sparccl_emu_tests
	CUDA_EMU_ORDER=reverse EMU_TESTS_SUBSET=select timeout 600 $(MPIRUN) -np 1 -x CUDA_EMU_ORDER -x EMU_TESTS_SUBSET $(BUILD)/bin/sparccl_emu_tests
	CUDA_EMU_ORDER=$(EMU_RANDOM_ORDER) EMU_TESTS_SUBSET=select timeout 600 $(MPIRUN) -np 1 -x CUDA_EMU_ORDER -x EMU_TESTS_SUBSET $(BUILD)/bin/sparccl_emu_tests
	timeout 600 $(MPIRUN) -np 2 $(BUILD)/bin/sparccl_emu_tests

EXTRA_TESTS += cudaemu
