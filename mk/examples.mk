# examples/common: what the example programs share (error exits, options, method names,
# CSV files, AdamW); compiled into each program that uses it.
EXAMPLE_DIR    := examples/common
EXAMPLE_SRC    := $(EXAMPLE_DIR)/example_util.c
EXAMPLE_HDR    := $(EXAMPLE_DIR)/example_util.h
EXAMPLE_CFLAGS := -I$(EXAMPLE_DIR)

# examples/fashion_mnist: the data-parallel Fashion-MNIST trainer, its tests and the
# method comparison that `make demo` runs (short mode).

FMNIST_DIR  := examples/fashion_mnist
FMNIST_HDR  := $(FMNIST_DIR)/mlp.h $(FMNIST_DIR)/idx.h include/sparccl.h include/sparccl_mpi.h
FMNIST_LIBS := -lopenblas -lz
FMNIST_DATA ?= /usr/share/datasets/fashion-mnist
# One BLAS thread per MPI rank: the ranks already use the cores.
FMNIST_ENV  := OPENBLAS_NUM_THREADS=1

DEB_PACKAGES += libopenblas-dev dataset-fashion-mnist gnuplot-nox zlib1g-dev python3-matplotlib
EXTRA_TESTS  += fmnist-test

.PHONY: fmnist fmnist-test fmnist-compare

fmnist: lib $(BUILD)/bin/fmnist_train $(BUILD)/bin/fmnist_tests

$(BUILD)/bin/fmnist_train: $(FMNIST_DIR)/train.c $(FMNIST_DIR)/mlp.c $(FMNIST_DIR)/idx.c \
                           $(EXAMPLE_SRC) $(EXAMPLE_HDR) $(FMNIST_HDR) $(BUILD)/lib/libsparccl.a \
                           | $(BUILD)/bin
	$(CC) $(CFLAGS) -I$(FMNIST_DIR) $(EXAMPLE_CFLAGS) -o $@ $(FMNIST_DIR)/train.c \
	  $(FMNIST_DIR)/mlp.c $(FMNIST_DIR)/idx.c $(EXAMPLE_SRC) $(BUILD)/lib/libsparccl.a \
	  $(FMNIST_LIBS) $(LDLIBS)

$(BUILD)/bin/fmnist_tests: $(FMNIST_DIR)/test_example.c $(FMNIST_DIR)/mlp.c $(FMNIST_DIR)/idx.c \
                           $(EXAMPLE_SRC) $(EXAMPLE_HDR) $(FMNIST_HDR) $(BUILD)/lib/libsparccl.a \
                           | $(BUILD)/bin
	$(CC) $(CFLAGS) -I$(FMNIST_DIR) $(EXAMPLE_CFLAGS) -o $@ $(FMNIST_DIR)/test_example.c \
	  $(FMNIST_DIR)/mlp.c $(FMNIST_DIR)/idx.c $(EXAMPLE_SRC) $(BUILD)/lib/libsparccl.a \
	  $(FMNIST_LIBS) $(LDLIBS)

# Gradient check, tiny sparccl runs (1 and 2 ranks), IDX loader; then the real trainer:
# refusing a truncated dataset file, and a few seconds on a Fashion-MNIST subset whose
# training loss must fall between epochs.
fmnist-test: fmnist
	$(FMNIST_ENV) $(MPIRUN) -np 1 $(BUILD)/bin/fmnist_tests
	$(FMNIST_ENV) $(MPIRUN) -np 2 $(BUILD)/bin/fmnist_tests
	@if [ -f $(FMNIST_DATA)/train-images-idx3-ubyte.gz ]; then \
	  d=$(BUILD)/fmnist_badset; rm -rf $$d; mkdir -p $$d; \
	  for f in train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do \
	    ln -s $(FMNIST_DATA)/$$f $$d/$$f; done; \
	  head -c 100000 $(FMNIST_DATA)/train-images-idx3-ubyte.gz > $$d/train-images-idx3-ubyte.gz; \
	  if $(FMNIST_ENV) $(MPIRUN) -np 1 $(BUILD)/bin/fmnist_train --data $$d --epochs 1 \
	       > $$d/log 2>&1; then \
	    echo "FAIL: trainer accepted a truncated train-images file"; exit 1; fi; \
	  grep -q "fmnist_train: .*train-images-idx3-ubyte.gz: truncated or corrupt (zlib: .*unexpected end of file)" $$d/log \
	    || { echo "FAIL: no clear message for a truncated file:"; cat $$d/log; exit 1; }; \
	  echo "PASS: trainer refuses a truncated train-images file: $$(grep -o 'fmnist_train: .*' $$d/log | head -1)"; \
	  rm -rf $$d $(BUILD)/fmnist_smoke.csv; \
	  $(FMNIST_ENV) $(MPIRUN) -np 2 $(BUILD)/bin/fmnist_train --data $(FMNIST_DATA) \
	    --method scam-impk_c --hidden 128 --train-limit 2048 --test-limit 500 --epochs 2 \
	    --csv $(BUILD)/fmnist_smoke.csv --quiet || exit 1; \
	  awk -F, 'NR==2{a=$$5} NR==3{b=$$5} END{ok=(b<a); \
	    printf "%s: trainer on a Fashion-MNIST subset: train loss %.4f (epoch 1) -> %.4f (epoch 2)\n", \
	    ok?"PASS":"FAIL", a, b; exit ok?0:1}' $(BUILD)/fmnist_smoke.csv || exit 1; \
	else echo "SKIP: trainer runs on real data ($(FMNIST_DATA) missing: make deps)"; fi

# The full comparison (see docs/RESULTS.md); `make demo` runs its --short mode.
fmnist-compare: fmnist
	$(FMNIST_ENV) MPIRUN="$(MPIRUN)" BUILD=$(BUILD) $(FMNIST_DIR)/compare.sh $(COMPARE_ARGS)

# The restart slides' regression experiment (over-parameterised MLP, with/without restarts).
fmnist: $(BUILD)/bin/restarts_regression
$(BUILD)/bin/restarts_regression: $(FMNIST_DIR)/restarts_regression.c $(FMNIST_DIR)/mlp.c \
                                  $(EXAMPLE_SRC) $(EXAMPLE_HDR) $(FMNIST_HDR) \
                                  $(BUILD)/lib/libsparccl.a | $(BUILD)/bin
	$(CC) $(CFLAGS) -I$(FMNIST_DIR) $(EXAMPLE_CFLAGS) -o $@ $(FMNIST_DIR)/restarts_regression.c \
	  $(FMNIST_DIR)/mlp.c $(EXAMPLE_SRC) $(BUILD)/lib/libsparccl.a $(FMNIST_LIBS) $(LDLIBS)

# examples/theory: compressed gradient descent on a quadratic with a known spectrum against
# the thesis' linear-rate bounds (Theorems 2 and 4; docs/RESULTS.md, section 5).
THEORY_DIR := examples/theory
EXTRA_TESTS += theory-test

.PHONY: theory theory-bin theory-test

theory-bin: lib $(BUILD)/bin/theory_quadratic

$(BUILD)/bin/theory_quadratic: $(THEORY_DIR)/theory_quadratic.c $(EXAMPLE_SRC) $(EXAMPLE_HDR) \
                               include/sparccl.h include/sparccl_mpi.h $(BUILD)/lib/libsparccl.a \
                               | $(BUILD)/bin
	$(CC) $(CFLAGS) $(EXAMPLE_CFLAGS) -o $@ $(THEORY_DIR)/theory_quadratic.c $(EXAMPLE_SRC) \
	  $(BUILD)/lib/libsparccl.a $(LDLIBS)

# The full check: every method, gamma = 1/(2L) and 1/L, 1, 2 and 4 ranks; table, CSVs, plot.
theory: theory-bin
	MPIRUN="$(MPIRUN)" BUILD=$(BUILD) $(THEORY_DIR)/run.sh $(THEORY_ARGS)

# Smoke test (a few seconds): on one rank, TopK and ImpK (cube [1, 2]) at gamma = 1/(2L) must
# contract at least as fast as bound (20), SCAM-TopK at gamma = 1/L as bound (24) with delta
# measured, and every step must keep the proofs' per-step inequality.
theory-test: theory-bin
	$(MPIRUN) -np 1 $(BUILD)/bin/theory_quadratic --method topk --gamma-l 0.5 --d 1024 \
	  --steps 1500 --tol 1e-8 --assert-bound
	$(MPIRUN) -np 1 $(BUILD)/bin/theory_quadratic --method impk_c --gamma-l 0.5 --d 1024 \
	  --steps 1500 --tol 1e-8 --assert-bound --quiet
	$(MPIRUN) -np 1 $(BUILD)/bin/theory_quadratic --method scam-topk --gamma-l 1 --d 1024 \
	  --steps 1500 --tol 1e-8 --assert-bound --quiet
