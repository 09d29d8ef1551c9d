# libsparccl_mpi_preload.so: sparccl for unmodified MPI programs through PMPI (README,
# "Without code changes: MPI (PMPI preload)").  `make preload` builds it, `make preloadtest`
# checks it under mpirun with 2 and 4 ranks (part of `make test`).

PRELOAD_LIB    := $(BUILD)/lib/libsparccl_mpi_preload.so
PRELOAD_OBJ    := $(BUILD)/obj/preload/mpi_preload.o
# What the MPI and the NCCL preload share (settings, log, decision table, layers); each
# library links this object, hidden like the rest (mk/nccl_preload.mk names it by its path).
PRELOAD_COMMON_OBJ := $(BUILD)/obj/preload/preload_common.o
PRELOAD_COMMON_HDR := src/preload/preload_common.h
PRELOAD_CHECK  := $(BUILD)/bin/preload_allreduce_check
PRELOAD_DIRECT := $(BUILD)/bin/preload_allreduce_direct
PRELOAD_TMP    ?= /tmp/sparccl_preload_$(shell id -u)_$(notdir $(abspath $(BUILD)))

.PHONY: preload preloadtest
all: preload
preload: check-tools $(PRELOAD_LIB)
EXTRA_TESTS += preloadtest

$(PRELOAD_OBJ): src/preload/mpi_preload.c $(PRELOAD_COMMON_HDR) include/sparccl.h \
                include/sparccl_mpi.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -c $< -o $@

$(PRELOAD_COMMON_OBJ): src/preload/preload_common.c $(PRELOAD_COMMON_HDR) include/sparccl.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LIB_CFLAGS) -c $< -o $@

# The library's objects are linked in (static, -fPIC): one file to preload.
$(PRELOAD_LIB): $(PRELOAD_OBJ) $(PRELOAD_COMMON_OBJ) $(BUILD)/lib/libsparccl.a \
                src/preload/mpi_preload.map | $(BUILD)/lib
	$(CC) -shared -Wl,--version-script=src/preload/mpi_preload.map -o $@ $(PRELOAD_OBJ) \
	  $(PRELOAD_COMMON_OBJ) $(BUILD)/lib/libsparccl.a $(LDLIBS)

# The check is a plain MPI program; built with -DPRELOAD_CHECK_DIRECT the same source calls
# sparcclAllReduce itself where the preload would, to compare the two bitwise.
$(PRELOAD_CHECK): tests/preload/allreduce_check.c | $(BUILD)/bin
	$(CC) $(CFLAGS) -o $@ $< -lm
$(PRELOAD_DIRECT): tests/preload/allreduce_check.c $(BUILD)/lib/libsparccl.a | $(BUILD)/bin
	$(CC) $(CFLAGS) -DPRELOAD_CHECK_DIRECT -o $@ $< $(BUILD)/lib/libsparccl.a $(LDLIBS)

# run_pair NP, NAME, ENV: the preloaded plain program and the direct one on the same inputs
# with the same config; their outputs must be equal to the bit, rank by rank.
define preload_pair
	@echo "== preload: $(1) ranks, $(2): $(3)"
	@rm -f $(PRELOAD_TMP)_$(2)_*
	$(MPIRUN) -np $(1) -x LD_PRELOAD=$(abspath $(PRELOAD_LIB)) -x SPARCCL_PRELOAD_MIN_COUNT=65536 \
	  $(foreach v,$(3),-x $(v)) $(PRELOAD_CHECK) $(PRELOAD_TMP)_$(2)_preload sparse
	$(MPIRUN) -np $(1) -x SPARCCL_PRELOAD_MIN_COUNT=65536 \
	  $(foreach v,$(3),-x $(v)) $(PRELOAD_DIRECT) $(PRELOAD_TMP)_$(2)_direct direct
	@for r in $$(seq 0 $$(($(1) - 1))); do \
	  cmp $(PRELOAD_TMP)_$(2)_preload_r$$r.bin $(PRELOAD_TMP)_$(2)_direct_r$$r.bin || exit 1; \
	done; echo "   preload == direct sparccl, bitwise, on every rank"
endef

preloadtest: preload $(PRELOAD_CHECK) $(PRELOAD_DIRECT)
	$(call preload_pair,2,np2,SPARCCL_DENSITY=0.01)
	$(call preload_pair,4,np4chunks,SPARCCL_PRELOAD_LAYER=30000 SPARCCL_COMPRESSOR=randk SPARCCL_FEEDBACK=ef SPARCCL_SEED=7)
	$(call preload_pair,2,np2ef21,SPARCCL_PRELOAD_LAYER=50000 SPARCCL_COMPRESSOR=topk SPARCCL_FEEDBACK=ef21 SPARCCL_WIRE=bf16)
	@echo "== preload disabled (SPARCCL_PRELOAD_ENABLE=0): every call dense"
	$(MPIRUN) -np 2 -x LD_PRELOAD=$(abspath $(PRELOAD_LIB)) -x SPARCCL_PRELOAD_ENABLE=0 \
	  $(PRELOAD_CHECK) $(PRELOAD_TMP)_off dense
	@echo "== no preload at all: every call dense"
	$(MPIRUN) -np 2 $(PRELOAD_CHECK) $(PRELOAD_TMP)_none dense
	@echo "== SPARCCL_DEBUG=INFO: one decision line per buffer and rank"
	@$(MPIRUN) -np 2 -x LD_PRELOAD=$(abspath $(PRELOAD_LIB)) -x SPARCCL_DEBUG=INFO \
	  -x SPARCCL_PRELOAD_MIN_COUNT=65536 -x SPARCCL_PRELOAD_LAYER=30000 \
	  $(PRELOAD_CHECK) $(PRELOAD_TMP)_log sparse 2> $(PRELOAD_TMP)_log.txt || { cat $(PRELOAD_TMP)_log.txt; exit 1; }
	@sh tests/preload/check_log.sh $(PRELOAD_TMP)_log.txt 2
	@rm -f $(PRELOAD_TMP)_*
