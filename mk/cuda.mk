# The device part (cuda/): built when nvcc and NCCL are found.  `make cuda` compiles every
# CUDA file for sm_80, sm_90 and PTX with warnings as errors (CI does this with no GPU);
# `make gpucheck` (on a machine with a GPU) builds, runs the GPU suite and the GPU benchmark.
CUDA_SRC := $(sort $(wildcard cuda/*.cu))
CUDA_OBJ := $(CUDA_SRC:cuda/%.cu=$(BUILD)/cuda/%.o)
# -warn-spills: with -Werror, a kernel that spills registers to local memory fails the build
# (each kernel's __launch_bounds__ is chosen to fit without: cuda/select_kernels.cu).
NVCCFLAGS := -O3 -std=c++14 -fmad=false -Xcompiler -fPIC,-fvisibility=hidden,-ffp-contract=off \
             -Werror all-warnings -Xptxas -warn-spills -Xcudafe --display_error_number \
             -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90 -Iinclude -Isrc -Icuda $(NCCL_INC)

# MPI for nvcc's command lines: --showme:link may carry gcc-only flags (-pthread, -Wl,...;
# Open MPI 5 does), so take the directories and libraries and say them nvcc's way.
MPI_LIBDIRS := $(shell $(MPICC) --showme:libdirs 2>/dev/null)
MPI_NVINC   := $(addprefix -I,$(shell $(MPICC) --showme:incdirs 2>/dev/null))
MPI_NVLINK  := $(foreach d,$(MPI_LIBDIRS),-L$(d) -Xlinker -rpath -Xlinker $(d)) \
               $(addprefix -l,$(shell $(MPICC) --showme:libs 2>/dev/null))

ifneq ($(NVCC),)
ifeq ($(HAVE_NCCL),1)
cuda: lib $(BUILD)/lib/libsparccl_cuda.so
EXTRA_TESTS += cuda
else
EXTRA_TESTS += cuda
cuda:
	@echo "NCCL headers not found (nccl.h beside CUDA, in /usr or in python3's nvidia-nccl wheel; or set NCCL_HOME): skipping the device part"
	@mkdir -p $(BUILD) && echo cuda >> $(SKIPPED)
endif
else
EXTRA_TESTS += cuda
cuda:
	@echo "nvcc not found: skipping the device part (CUDA code not compiled)"
	@mkdir -p $(BUILD) && echo cuda >> $(SKIPPED)
endif

$(BUILD)/cuda/%.o: cuda/%.cu cuda/*.cuh src/*.h include/*.h
	@mkdir -p $(BUILD)/cuda
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# The device library: the host library's objects plus the kernels, so one library serves
# host and device comms.
$(BUILD)/lib/libsparccl_cuda.so: $(LIB_OBJ) $(CUDA_OBJ) src/sparccl.map | $(BUILD)/lib
	$(NVCC) -shared -Xlinker --version-script=src/sparccl.map -o $@ $(LIB_OBJ) $(CUDA_OBJ) \
	  -L$(CUDA_HOME)/lib64 -lcudart $(NCCL_NVLINK) $(MPI_NVLINK) $(LDLIBS)

# ---------------------------------------------------------------- GPU suite and benchmark
CUDA_LINK := -L$(BUILD)/lib -lsparccl_cuda -Wl,-rpath,$(abspath $(BUILD)/lib) \
             -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart $(NCCL_LINK)
GPU_CFLAGS := $(CFLAGS) -I$(CUDA_HOME)/include $(NCCL_INC)

# The device suite at full size (SPARCCL_TEST_SCALE=1; the emulator build, mk/cuda_emu.mk,
# compiles the same source with 0).
$(BUILD)/bin/sparccl_gpu_tests: tests/gpu/gpu_tests.c $(BUILD)/lib/libsparccl_cuda.so | $(BUILD)/bin
	$(CC) $(GPU_CFLAGS) -DSPARCCL_TEST_SCALE=1 -o $@ $< $(CUDA_LINK) $(CHECK_LIBS) $(LDLIBS)

# The same suite at the emulator's sizes on the GPU: what compute-sanitizer (memcheck,
# racecheck) runs, since it slows kernels down 10-100x.
$(BUILD)/bin/sparccl_gpu_tests_small: tests/gpu/gpu_tests.c $(BUILD)/lib/libsparccl_cuda.so | $(BUILD)/bin
	$(CC) $(GPU_CFLAGS) -DSPARCCL_TEST_SCALE=0 -o $@ $< $(CUDA_LINK) $(CHECK_LIBS) $(LDLIBS)

$(BUILD)/bin/sparccl_gpu_multirank: tests/gpu/multirank.c $(BUILD)/lib/libsparccl_cuda.so | $(BUILD)/bin
	$(CC) $(GPU_CFLAGS) -o $@ $< $(CUDA_LINK) $(LDLIBS)

$(BUILD)/bin/sparccl_gpu_perf: tools/gpu_perf.cu tools/tool_util.h $(TOOL_UTIL_OBJ) $(BUILD)/lib/libsparccl_cuda.so $(CUDA_OBJ) | $(BUILD)/bin
	$(NVCC) $(NVCCFLAGS) $(MPI_NVINC) -o $@ $< $(TOOL_UTIL_OBJ) $(LIB_OBJ) $(CUDA_OBJ) -L$(CUDA_HOME)/lib64 -lcudart $(NCCL_NVLINK) \
	  $(MPI_NVLINK) $(LDLIBS)

GPU_BINS := $(BUILD)/bin/sparccl_gpu_tests $(BUILD)/bin/sparccl_gpu_tests_small \
            $(BUILD)/bin/sparccl_gpu_multirank $(BUILD)/bin/sparccl_gpu_perf

ifneq ($(NVCC),)
ifeq ($(HAVE_NCCL),1)
# CI (no GPU): everything compiles and links; the suite says in one line that it did not run.
# With no device the suite prints "GPU suite not run" and exits 0: `make test` counts it skipped.
cuda: $(GPU_BINS)
	@$(MPIRUN) -np 1 $(BUILD)/bin/sparccl_gpu_tests > $(BUILD)/gpu_tests.log 2>&1; rc=$$?; \
	  cat $(BUILD)/gpu_tests.log; test $$rc = 0 || exit $$rc; \
	  if grep -q '^GPU suite not run' $(BUILD)/gpu_tests.log; then echo cuda >> $(SKIPPED); fi

# On a GPU machine: build, run the suite, multi-process on one GPU, the benchmark; one table.
gpucheck: lib $(GPU_BINS)
	@COMPUTE_SANITIZER=$(or $(shell command -v compute-sanitizer 2>/dev/null),$(wildcard $(CUDA_HOME)/bin/compute-sanitizer)) \
	  bash tools/gpucheck.sh $(BUILD)
endif
endif
