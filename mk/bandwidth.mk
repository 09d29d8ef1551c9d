# Bandwidth-limited links (docs/PERFORMANCE.md, "Bandwidth-limited links"): dense
# MPI_Allreduce against sparcclAllReduce with N ranks, each in its own network namespace,
# joined through a bridge by rate-limited veth links, plus a shared rate-limited loopback.
# Needs root (ip netns, tc) and takes minutes, so it is not part of `make test`.
# BANDWIDTH_ARGS: options for tools/bandwidth_bench.sh (--help lists them).

.PHONY: bandwidth bwbench
DEB_PACKAGES += iproute2 gnuplot-nox

bwbench: lib $(BUILD)/bin/bandwidth_bench

$(BUILD)/bin/bandwidth_bench: tools/bandwidth_bench.c tools/tool_util.h $(TOOL_UTIL_OBJ) \
                              $(BUILD)/lib/libsparccl.a | $(BUILD)/bin
	$(CC) $(CFLAGS) -o $@ tools/bandwidth_bench.c $(TOOL_UTIL_OBJ) $(BUILD)/lib/libsparccl.a $(LDLIBS)

bandwidth: deps bwbench
	BUILD=$(BUILD) bash tools/bandwidth_bench.sh $(BANDWIDTH_ARGS)
