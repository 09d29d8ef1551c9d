# python/: the sparccl package (ctypes binding of libsparccl, the DDP hook) and its tests in
# real PyTorch training (gloo, CPU).  `make torchtest` (part of `make test`):
#   1. python/tests/test_ddp.py on 2 and 3 processes: the hook against the library's one
#      call bitwise, replicas, warm-up, non-finite skips, checkpoint/resume, collective
#      order, refusals (its docstring lists every check);
#   2. `pip install ./python` into a scratch folder: the package builds, carries
#      libsparccl.so and imports from elsewhere;
#   3. examples/pytorch/ddp_train.py under torchrun (2 processes) with that installed
#      package: the three documented lines in a plain DDP script.
# Without torch it says so and skips (SPARCCL_REQUIRE_TORCH=1 makes that a failure: CI).

PYTHON3     ?= $(shell command -v python3 2>/dev/null)
TORCH_WORLDS ?= 2 3
PY_INSTALL  := $(abspath $(BUILD))/pyinstall
# One intra-op thread a process (the ranks share the cores); torch's NumPy notice off.
TORCH_ENV   := OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore::UserWarning
EXTRA_TESTS += torchtest

.PHONY: torchtest

torchtest: lib
	@if [ -z "$(PYTHON3)" ] || ! $(PYTHON3) -c 'import torch' >/dev/null 2>&1; then \
	  if [ "$$SPARCCL_REQUIRE_TORCH" = 1 ]; then echo "FAIL: torchtest: torch is not installed"; exit 1; fi; \
	  echo "SKIP: torchtest: torch is not installed for $(or $(PYTHON3),python3) (pip install torch; .ci/run installs it)"; \
	  exit 0; fi; \
	echo "== sparccl DDP hook in real torch (gloo): $(TORCH_WORLDS) processes"; \
	SPARCCL_LIB=$(abspath $(BUILD))/lib/libsparccl.so $(TORCH_ENV) timeout 900 \
	  $(PYTHON3) python/tests/test_ddp.py $(addprefix --world ,$(TORCH_WORLDS)) || exit 1; \
	echo "== pip install ./python (into $(PY_INSTALL)), then import it from elsewhere"; \
	rm -rf $(PY_INSTALL) python/build python/sparccl.egg-info; \
	PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON3) -m pip install -q --no-deps --target $(PY_INSTALL) ./python \
	  > $(BUILD)/pyinstall.log 2>&1 || { cat $(BUILD)/pyinstall.log; exit 1; }; \
	rm -rf python/build python/sparccl.egg-info; \
	cd / && env -u SPARCCL_LIB PYTHONPATH=$(PY_INSTALL) $(TORCH_ENV) $(PYTHON3) -c 'import os, sparccl, sparccl.bindings as b; \
	  lib = b.load_library(); here = os.path.dirname(sparccl.__file__); \
	  assert lib.path == os.path.join(here, "libsparccl.so"), lib.path; \
	  from sparccl import SparcclOptions, SparcclState, sparccl_hook; \
	  print("   ok: sparccl %s from %s, library %s (version %d)" % (SparcclOptions.__module__, here, lib.path, lib.version()))' \
	  || exit 1; \
	echo "== examples/pytorch/ddp_train.py under torchrun, 2 processes, the installed package"; \
	cd / && env -u SPARCCL_LIB PYTHONPATH=$(PY_INSTALL) $(TORCH_ENV) timeout 300 $(PYTHON3) -m torch.distributed.run \
	  --standalone --nproc_per_node 2 $(CURDIR)/examples/pytorch/ddp_train.py --steps 40 \
	  > $(abspath $(BUILD))/ddp_train.log 2>&1 || { cat $(abspath $(BUILD))/ddp_train.log; exit 1; }; \
	grep -E '^(step|sparccl:|replicas)' $(abspath $(BUILD))/ddp_train.log | sed 's/^/   /'
