# libsparccl_nccl_preload.so: sparccl for unmodified NCCL programs (README, "Without code
# changes: NCCL (LD_PRELOAD)"; docs/PRELOAD.md).  Built when nvcc and NCCL are found, like
# the device library (mk/cuda.mk).  `make ncclpreload` builds it; `make ncclpreloadtest`
# (part of `make test`, no GPU needed) checks how it links and loads, how an NCCL program's
# calls reach it, and the ctypes mirror of sparccl.h the PyTorch hook uses
# (python/sparccl).  tools/gpu_preload_check.sh runs it for real on a GPU.

NCCL_PRELOAD_LIB  := $(BUILD)/lib/libsparccl_nccl_preload.so
NCCL_PRELOAD_OBJ  := $(BUILD)/obj/preload/nccl_preload.o
# What it shares with the MPI preload: compiled by its rule in mk/preload.mk (included after
# this file, hence the paths spelled out here).
NCCL_PRELOAD_COMMON := $(BUILD)/obj/preload/preload_common.o
NCCL_PRELOAD_COMMON_HDR := src/preload/preload_common.h
# The host library's objects without MPI (src/mpi.c: the preload has no use for it, and an
# NCCL program need not have libmpi) and the device objects: one file to preload.
NCCL_PRELOAD_DEPS := $(filter-out $(BUILD)/obj/mpi.o,$(LIB_OBJ)) \
                     $(patsubst cuda/%.cu,$(BUILD)/cuda/%.o,$(sort $(wildcard cuda/*.cu)))
NCCL_PRELOAD_EXPORTS := ncclAllReduce ncclCommAbort ncclCommDestroy ncclCommInitAll \
                        ncclCommInitRank ncclCommInitRankConfig ncclCommInitRankScalable \
                        ncclCommShrink ncclCommSplit ncclGroupEnd ncclGroupSimulateEnd \
                        ncclGroupStart
NCCL_PRELOAD_CHECK  := $(BUILD)/bin/nccl_interpose_check
CONFIG_LAYOUT       := $(BUILD)/bin/config_layout
PYTHON3             ?= $(shell command -v python3 2>/dev/null)

.PHONY: ncclpreload ncclpreloadtest hooktest
EXTRA_TESTS += ncclpreloadtest

$(NCCL_PRELOAD_OBJ): src/preload/nccl_preload.c $(NCCL_PRELOAD_COMMON_HDR) include/sparccl.h \
                     include/sparccl_nccl.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -I$(CUDA_HOME)/include $(NCCL_INC) -c $< -o $@

# The CUDA runtime is linked statically (nvcc's default) and stays private like sparccl:
# the preload brings no libcudart.so of its own into a program that has another.  libnccl
# is linked dynamically, with no rpath: the program's NCCL and the preload's must be the
# same library, the one the program loads.
# --no-undefined: every symbol resolves at link time (the loader check below does the rest).
$(NCCL_PRELOAD_LIB): $(NCCL_PRELOAD_OBJ) $(NCCL_PRELOAD_COMMON) $(NCCL_PRELOAD_DEPS) \
                     src/preload/nccl_preload.map | $(BUILD)/lib
	$(NVCC) -shared --cudart static -Xlinker --version-script=src/preload/nccl_preload.map \
	  -Xlinker --no-undefined -o $@ $(NCCL_PRELOAD_OBJ) $(NCCL_PRELOAD_COMMON) $(NCCL_PRELOAD_DEPS) \
	  -L$(NCCL_LIBDIR) -Xlinker $(NCCL_LNAME) $(LDLIBS) -ldl

$(NCCL_PRELOAD_CHECK): tests/nccl_preload/interpose_check.c | $(BUILD)/bin
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include $(NCCL_INC) -o $@ $< $(NCCL_LINK) -ldl

$(CONFIG_LAYOUT): tests/nccl_preload/config_layout.c include/sparccl.h | $(BUILD)/bin
	$(CC) $(CFLAGS) -o $@ $<

# The PyTorch package and examples, without torch or a GPU: every module compiles (the GPU
# path included, which no CI machine runs), and the ctypes mirror of sparcclConfig_t /
# sparcclStats_t (offsets, sizes, initializer sentinels) equals C's.  The hook in real torch
# training: `make torchtest` (mk/python.mk).
hooktest: $(CONFIG_LAYOUT)
ifneq ($(PYTHON3),)
	@echo "== PyTorch hook: byte-compile, ctypes layout against the C structs"
	PYTHONPYCACHEPREFIX=$(abspath $(BUILD))/pycache $(PYTHON3) -m py_compile python/sparccl/*.py \
	  python/setup.py python/tests/*.py examples/pytorch/*.py
	$(CONFIG_LAYOUT) > $(BUILD)/config_layout.txt
	$(PYTHON3) -B tests/nccl_preload/check_ctypes_layout.py $(BUILD)/config_layout.txt
else
	@echo "python3 not found: skipping the PyTorch hook checks"
endif

ifneq ($(NVCC),)
ifeq ($(HAVE_NCCL),1)
all: ncclpreload
ncclpreload: lib $(NCCL_PRELOAD_LIB)

ncclpreloadtest: ncclpreload $(NCCL_PRELOAD_CHECK) hooktest
	@echo "== NCCL preload: exported symbols are exactly the interposed NCCL entry points"
	@got=$$(nm -D --defined-only $(NCCL_PRELOAD_LIB) | awk '{print $$3}' | sort | tr '\n' ' '); \
	 want=$$(printf '%s\n' $(NCCL_PRELOAD_EXPORTS) | sort | tr '\n' ' '); \
	 if [ "$$got" != "$$want" ]; then echo "FAIL: exports: $$got"; echo "       wanted: $$want"; exit 1; fi; \
	 echo "   ok: $$got"
	@echo "== NCCL preload: every needed library resolves (ldd), no libcudart or libmpi"
	@ldd $(NCCL_PRELOAD_LIB) | sed 's/^/   /'; \
	 if ldd $(NCCL_PRELOAD_LIB) | grep -q 'not found'; then echo "FAIL: unresolved library"; exit 1; fi; \
	 if ldd $(NCCL_PRELOAD_LIB) | grep -Eq 'libcudart|libmpi'; then echo "FAIL: libcudart or libmpi needed"; exit 1; fi; \
	 ldd $(NCCL_PRELOAD_LIB) | grep -q 'libnccl' || { echo "FAIL: libnccl not needed"; exit 1; }
	@echo "== NCCL preload: dlopen(RTLD_NOW) and its exports"
	$(NCCL_PRELOAD_CHECK) --dlopen $(NCCL_PRELOAD_LIB)
	@echo "== NCCL preload: an NCCL program's calls reach it and pass through (no GPU needed)"
	SPARCCL_DEBUG=INFO LD_PRELOAD=$(abspath $(NCCL_PRELOAD_LIB)) $(NCCL_PRELOAD_CHECK) \
	  2> $(BUILD)/nccl_preload_log.txt || { cat $(BUILD)/nccl_preload_log.txt; exit 1; }
	@sh tests/nccl_preload/check_log.sh $(BUILD)/nccl_preload_log.txt
	@echo "== NCCL preload: without LD_PRELOAD, the same program prints no decision line"
	@SPARCCL_DEBUG=INFO $(NCCL_PRELOAD_CHECK) > /dev/null 2> $(BUILD)/nccl_nopreload_log.txt; \
	 if grep -q 'nccl preload' $(BUILD)/nccl_nopreload_log.txt; then echo "FAIL: decision lines without the preload"; exit 1; fi; \
	 echo "   ok"
	@echo "== NCCL preload: SPARCCL_PRELOAD_ENABLE=0 passes everything, a bad value warns"
	@SPARCCL_DEBUG=INFO SPARCCL_PRELOAD_ENABLE=0 LD_PRELOAD=$(abspath $(NCCL_PRELOAD_LIB)) \
	  $(NCCL_PRELOAD_CHECK) > /dev/null 2> $(BUILD)/nccl_preload_off.txt; \
	 grep -q 'count 1048576 float32 sum .*-> NCCL (preload disabled)' $(BUILD)/nccl_preload_off.txt \
	   || { echo "FAIL: disabled"; cat $(BUILD)/nccl_preload_off.txt; exit 1; }; \
	 SPARCCL_PRELOAD_MIN_COUNT=lots LD_PRELOAD=$(abspath $(NCCL_PRELOAD_LIB)) \
	  $(NCCL_PRELOAD_CHECK) > /dev/null 2> $(BUILD)/nccl_preload_bad.txt; \
	 grep -q 'SPARCCL WARN nccl preload: SPARCCL_PRELOAD_MIN_COUNT=lots is not' $(BUILD)/nccl_preload_bad.txt \
	   || { echo "FAIL: no warning for a bad value"; cat $(BUILD)/nccl_preload_bad.txt; exit 1; }; \
	 echo "   ok"
else
ncclpreload:
	@echo "NCCL headers not found (or set NCCL_HOME): skipping the NCCL preload"
ncclpreloadtest: hooktest
	@echo "NCCL headers not found (or set NCCL_HOME): NCCL preload checks skipped"
	@mkdir -p $(BUILD) && echo ncclpreloadtest >> $(SKIPPED)
endif
else
ncclpreload:
	@echo "nvcc not found: skipping the NCCL preload"
ncclpreloadtest: hooktest
	@echo "nvcc not found: NCCL preload checks skipped"
	@mkdir -p $(BUILD) && echo ncclpreloadtest >> $(SKIPPED)
endif
