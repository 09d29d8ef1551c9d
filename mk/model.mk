# The exchange cost model (tools/exchange_model.py; docs/PERFORMANCE.md, "Exchange cost model
# to 4,096 ranks"). `make modeltest` (part of `make test`, a second or so): its volumes against
# closed forms and against the stored bandwidth_bench CSVs (tests/test_exchange_model.py).
# `make exchange-model` redraws docs/exchange_model_*.png and prints the crossovers tables
# (Debian's python3-matplotlib; about a minute).

MODEL_PYTHON ?= $(shell command -v python3 2>/dev/null)
EXTRA_TESTS  += modeltest

.PHONY: modeltest exchange-model

modeltest:
	@if [ -z "$(MODEL_PYTHON)" ]; then echo "SKIP: modeltest: no python3"; \
	  mkdir -p $(BUILD) && echo modeltest >> $(SKIPPED); exit 0; fi; \
	echo "== exchange cost model (tests/test_exchange_model.py)"; \
	$(MODEL_PYTHON) tests/test_exchange_model.py

exchange-model:
	/usr/bin/python3 tools/exchange_model.py plot --out docs
	$(MODEL_PYTHON) tools/exchange_model.py table --compute host
	$(MODEL_PYTHON) tools/exchange_model.py table --compute none
	$(MODEL_PYTHON) tools/exchange_model.py check docs/exchange_model/resnet18_1gbit.csv \
	  docs/exchange_model/resnet18_1gbit_b.csv --probe docs/exchange_model/probe_1gbit.csv \
	  docs/exchange_model/probe_1gbit_b.csv
