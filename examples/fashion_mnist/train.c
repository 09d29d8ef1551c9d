/*
 * Fashion-MNIST data-parallel trainer for sparccl: an MLP 784-1024-1024-10 (ReLU, softmax
 * cross-entropy), data split across MPI ranks, gradients reduced by sparcclAllReduce (AVG)
 * on one flat float32 buffer registered layer by layer (or plain MPI_Allreduce for
 * --method dense), then SGD with momentum or AdamW (the thesis' CAdamW).  With --method
 * dgc-* sparccl keeps the momentum (SPEC 9) and the SGD step has none of its own.
 *
 *   mpirun -np 2 build/bin/fmnist_train --method scam-impk_c --epochs 5 --csv out.csv
 *
 * Run with --help for every option.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>
#include <sparccl_mpi.h>

#include "example_util.h"
#include "idx.h"
#include "mlp.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

typedef struct {
  const char* data;
  const char* method;
  const char* optimizer;
  const char* csv;
  double lr, momentum, wd, beta1, beta2, adamEps;
  int epochs;
  size_t batch;
  unsigned long long seed;
  double density;
  long long minSparse;
  size_t trainLimit, testLimit;
  int noniid;
  int impSteps;
  double impGamma, impEta, impLow, impHigh;
  long long restartEvery;
  double restartRatio;
  int restartLag, restartOnLoss, restartMomentum;
  long long warmup;      /* dense calls first (SPEC 9), in steps; -1: from warmupEpochs */
  double warmupEpochs;
  size_t hidden;
  int quiet;
} opts_t;

static int rank_ = 0, nranks_ = 1;

/* The recommended setting, chosen from the measurements in docs/RESULTS.md. */
#define RECOMMENDED_METHOD "dgc-topk"
#define RECOMMENDED_WARMUP_EPOCHS 0.25
#define RECOMMENDED_TEXT \
  "--method dgc-topk --optimizer sgd --warmup-epochs 0.25 (lr 0.05, momentum 0.9)"

static void recommended(opts_t* o) {
  o->method = RECOMMENDED_METHOD;
  o->optimizer = "sgd";
  o->warmupEpochs = RECOMMENDED_WARMUP_EPOCHS;
  o->warmup = -1;
}

/* Printed on rank 0 only (example_help_exit). */
static void usage(void) {
  printf(
      "usage: mpirun -np N fmnist_train [options]\n"
      "  --method M        dense | [ef-|ef21-|scam-|dgc-]{topk,randk,impk_c,impk_s} (default scam-impk_c)\n"
      "                    impk_c: ImpK with the cube solver [low,high]^d; impk_s: simplex solver\n"
      "                    dgc-: sparccl keeps the momentum (--momentum), SGD adds none (needs sgd)\n"
      "  --optimizer O     adamw (CAdamW, default) | sgd (with momentum)\n"
      "  --warmup N        the first N steps are dense allreduces inside sparccl (0)\n"
      "  --warmup-epochs X the same in epochs (0.25: a quarter of the first epoch)\n"
      "  --recommended     sparccl's recommended setting (docs/RESULTS.md): " RECOMMENDED_TEXT "\n"
      "  --lr X            learning rate (default 1e-3 adamw, 0.05 sgd)\n"
      "  --momentum X      SGD momentum (0.9)      --wd X  weight decay (0.01 adamw, 0 sgd)\n"
      "  --beta1 X --beta2 X   AdamW betas (0.9, 0.999)\n"
      "  --epochs N (2)    --batch B per rank (64)  --seed S (1)\n"
      "  --density X       fraction of each layer sent (0.01)\n"
      "  --min-sparse N    layers smaller than N are sent dense (sparccl default 4096)\n"
      "  --train-limit N   use N training images (default all 60000)\n"
      "  --test-limit N    evaluate on N test images (default all 10000)\n"
      "  --noniid          label-skewed shards (sorted by label) instead of iid shards\n"
      "  --imp-steps N     importance solver steps at the start of each epoch (3)\n"
      "  --imp-gamma X     probe step (default: lr for sgd, lr/rms(g) for adamw)\n"
      "  --imp-eta X       solver step (default: from a pilot gradient, see README)\n"
      "  --imp-low X --imp-high X   cube bounds (0, 2)\n"
      "  --restart-every N      restart the compressor state every N steps (0 off)\n"
      "  --restart-ratio R      restart when ||out_t||/||out_t-p|| > R (0 off)\n"
      "  --restart-lag P        the lag p (1)\n"
      "  --restart-on-loss      restart when the test loss (reported each epoch) rises\n"
      "  --restart-momentum     also reset the optimiser state when sparccl restarts\n"
      "  --hidden H        hidden width (1024)\n"
      "  --data DIR        dataset directory (" DEFAULT_DATA ")\n"
      "  --csv FILE        append one row per epoch (header written if the file is new)\n"
      "  --quiet           only the final line\n");
}

static void parseArgs(int argc, char** argv, opts_t* o) {
  int i;
  memset(o, 0, sizeof(*o));
  o->data = DEFAULT_DATA;
  o->method = "scam-impk_c";
  o->optimizer = "adamw";
  o->lr = -1;
  o->momentum = 0.9;
  o->wd = -1;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->adamEps = 1e-8;
  o->epochs = 2;
  o->batch = 64;
  o->seed = 1;
  o->density = 0.01;
  o->minSparse = 4096;
  o->impSteps = 3;
  o->impGamma = -1;
  o->impEta = -1;
  o->impLow = 0.0;
  o->impHigh = 2.0;
  o->restartLag = 1;
  o->warmup = 0;
  o->hidden = 1024;
  for (i = 1; i < argc; i++) {
    const char* a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      example_help_exit(usage);
    } else if (!strcmp(a, "--method")) o->method = example_arg_str(argc, argv, &i);
    else if (!strcmp(a, "--optimizer")) o->optimizer = example_arg_str(argc, argv, &i);
    else if (!strcmp(a, "--data")) o->data = example_arg_str(argc, argv, &i);
    else if (!strcmp(a, "--csv")) o->csv = example_arg_str(argc, argv, &i);
    else if (!strcmp(a, "--lr")) o->lr = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--momentum")) o->momentum = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--wd")) o->wd = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--beta1")) o->beta1 = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--beta2")) o->beta2 = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--epochs")) o->epochs = (int)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--batch")) o->batch = (size_t)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--seed")) o->seed = (unsigned long long)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--density")) o->density = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--min-sparse")) o->minSparse = example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--train-limit")) o->trainLimit = (size_t)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--test-limit")) o->testLimit = (size_t)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--noniid")) o->noniid = 1;
    else if (!strcmp(a, "--imp-steps")) o->impSteps = (int)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--imp-gamma")) o->impGamma = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--imp-eta")) o->impEta = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--imp-low")) o->impLow = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--imp-high")) o->impHigh = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--restart-every")) o->restartEvery = example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--restart-ratio")) o->restartRatio = example_arg_double(argc, argv, &i);
    else if (!strcmp(a, "--restart-lag")) o->restartLag = (int)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--restart-on-loss")) o->restartOnLoss = 1;
    else if (!strcmp(a, "--restart-momentum")) o->restartMomentum = 1;
    else if (!strcmp(a, "--warmup")) o->warmup = example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--warmup-epochs")) {
      o->warmupEpochs = example_arg_double(argc, argv, &i);
      o->warmup = -1;
    } else if (!strcmp(a, "--recommended")) recommended(o);
    else if (!strcmp(a, "--hidden")) o->hidden = (size_t)example_arg_count(argc, argv, &i);
    else if (!strcmp(a, "--quiet")) o->quiet = 1;
    else example_die("unknown option %s (see --help)", a);
  }
  if (strcmp(o->optimizer, "adamw") && strcmp(o->optimizer, "sgd"))
    example_die("unknown optimizer %s (adamw or sgd)", o->optimizer);
  if (o->lr < 0) o->lr = strcmp(o->optimizer, "sgd") ? 1e-3 : 0.05;
  if (o->wd < 0) o->wd = strcmp(o->optimizer, "sgd") ? 0.01 : 0.0;
  if (o->batch == 0 || o->epochs < 1 || o->hidden == 0)
    example_die("%s", "batch, epochs and hidden must be positive");
  if (!(o->density > 0.0 && o->density <= 1.0)) example_die("%s", "density must be in (0, 1]");
  if (o->warmup < -1 || !(o->warmupEpochs >= 0.0)) example_die("%s", "warm-up must be >= 0");
}

static uint64_t rngState(unsigned long long a, unsigned long long b, unsigned long long c) {
  return (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ (c * 0x165667B19E3779F9ULL) ^ 0x1234567ULL;
}
static void shuffle(size_t* v, size_t n, uint64_t* s) {
  size_t i;
  for (i = n; i > 1; i--) {
    size_t j = (size_t)(example_splitmix64(s) % i), t = v[i - 1];
    v[i - 1] = v[j];
    v[j] = t;
  }
}

static void loadBatch(const idxData_t* img, const idxData_t* lab, const size_t* idx, size_t B,
                      float* x, unsigned char* y) {
  size_t r, j, px = img->rows * img->cols;
  for (r = 0; r < B; r++) {
    const unsigned char* p = img->data + idx[r] * px;
    for (j = 0; j < px; j++) x[r * px + j] = (float)p[j] * (1.0f / 255.0f);
    y[r] = lab->data[idx[r]];
  }
}

static int allFinite(const float* v, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (!isfinite(v[i])) return 0;
  return 1;
}

/* Mean test loss and accuracy; every rank evaluates a slice, the sums are all-reduced. */
static void evaluate(mlp_t* m, const float* params, const idxData_t* img, const idxData_t* lab,
                     size_t ntest, float* x, unsigned char* y, size_t maxB, double* loss,
                     double* acc) {
  size_t lo = ntest * (size_t)rank_ / (size_t)nranks_, hi = ntest * (size_t)(rank_ + 1) / (size_t)nranks_;
  size_t i, idx[1024];
  double sums[2] = {0.0, 0.0};
  for (i = lo; i < hi;) {
    size_t B = hi - i < maxB ? hi - i : maxB, r, correct = 0;
    if (B > 1024) B = 1024;
    for (r = 0; r < B; r++) idx[r] = i + r;
    loadBatch(img, lab, idx, B, x, y);
    sums[0] += mlpForward(m, params, x, y, B, &correct) * (double)B;
    sums[1] += (double)correct;
    i += B;
  }
  MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  *loss = sums[0] / (double)ntest;
  *acc = sums[1] / (double)ntest;
}

int main(int argc, char** argv) {
  opts_t o;
  example_method_t meth;
  idxData_t trImg, trLab, teImg, teLab;
  char err[512], p1[1024], p2[1024];
  mlp_t net;
  size_t sizes[4], counts[2 * MLP_MAX_LAYERS], nlayers, np, ntrain, ntest, per, i;
  size_t *perm, *shard, evalB;
  float *params, *grad, *probe, *gprobe, *mom, *vel, *x;
  unsigned char* y;
  sparcclComm_t comm = NULL;
  long long t = 0;
  unsigned long long lastRestarts = 0, skipped = 0;
  double trainSeconds = 0.0;
  int epoch, isSgd;

  MPI_Init(&argc, &argv);
  example_init("fmnist_train", NULL, &rank_, &nranks_);
  parseArgs(argc, argv, &o);
  if (example_parse_method(o.method, &meth) != 0)
    example_die("unknown method %s (see --help)", o.method);
  isSgd = strcmp(o.optimizer, "sgd") == 0;
  if (meth.feedback == sparcclFeedbackDGC && !isSgd)
    example_die("%s", "dgc keeps the momentum inside sparccl: use --optimizer sgd");

  /* ---- data */
  snprintf(p1, sizeof p1, "%s/train-images-idx3-ubyte.gz", o.data);
  snprintf(p2, sizeof p2, "%s/train-labels-idx1-ubyte.gz", o.data);
  if (idxLoadPair(p1, p2, &trImg, &trLab, err, sizeof err) != 0) example_die("%s", err);
  snprintf(p1, sizeof p1, "%s/t10k-images-idx3-ubyte.gz", o.data);
  snprintf(p2, sizeof p2, "%s/t10k-labels-idx1-ubyte.gz", o.data);
  if (idxLoadPair(p1, p2, &teImg, &teLab, err, sizeof err) != 0) example_die("%s", err);
  ntrain = o.trainLimit && o.trainLimit < trImg.n ? o.trainLimit : trImg.n;
  ntest = o.testLimit && o.testLimit < teImg.n ? o.testLimit : teImg.n;
  per = ntrain / (size_t)nranks_;
  if (per < o.batch) example_die("%s", "fewer training images per rank than one batch");
  if (o.warmup < 0) o.warmup = (long long)(o.warmupEpochs * (double)(per / o.batch) + 0.5);

  /* The same permutation on every rank (seeded); rank r takes the r-th contiguous chunk:
   * iid shards, or, with --noniid, chunks of the subset sorted by label (label skew). */
  perm = (size_t*)malloc(trImg.n * sizeof(size_t));
  shard = (size_t*)malloc(per * sizeof(size_t));
  {
    uint64_t s = rngState(o.seed, 77, 0);
    for (i = 0; i < trImg.n; i++) perm[i] = i;
    shuffle(perm, trImg.n, &s);
    if (o.noniid) { /* counting sort of the first ntrain by label, stable */
      size_t cnt[11] = {0}, *tmp = (size_t*)malloc(ntrain * sizeof(size_t));
      int c;
      for (i = 0; i < ntrain; i++) cnt[trLab.data[perm[i]] + 1]++;
      for (c = 0; c < 10; c++) cnt[c + 1] += cnt[c];
      for (i = 0; i < ntrain; i++) tmp[cnt[trLab.data[perm[i]]]++] = perm[i];
      memcpy(perm, tmp, ntrain * sizeof(size_t));
      free(tmp);
    }
    memcpy(shard, perm + per * (size_t)rank_, per * sizeof(size_t));
  }

  /* ---- model and buffers */
  sizes[0] = trImg.rows * trImg.cols;
  sizes[1] = o.hidden;
  sizes[2] = o.hidden;
  sizes[3] = 10;
  evalB = o.batch > 256 ? o.batch : 256;
  if (mlpInit(&net, 3, sizes, evalB) != 0) example_die("%s", "out of memory");
  np = net.nparams;
  nlayers = mlpLayout(&net, counts);
  params = (float*)calloc(np, sizeof(float));
  grad = (float*)calloc(np, sizeof(float));
  probe = (float*)calloc(np, sizeof(float));
  gprobe = (float*)calloc(np, sizeof(float));
  mom = (float*)calloc(np, sizeof(float));
  vel = (float*)calloc(np, sizeof(float));
  x = (float*)malloc(evalB * sizes[0] * sizeof(float));
  y = (unsigned char*)malloc(evalB);
  if (!params || !grad || !probe || !gprobe || !mom || !vel || !x || !y)
    example_die("%s", "out of memory");
  mlpInitParams(&net, params, o.seed);

  /* ---- sparccl */
  if (!meth.dense) {
    sparcclConfig_t cfg = SPARCCL_CONFIG_INITIALIZER;
    example_config(&cfg, &meth, o.density, (size_t)o.minSparse, o.seed);
    cfg.sharedRandomness = 0;
    cfg.importanceLow = o.impLow;
    cfg.importanceHigh = o.impHigh;
    cfg.restartEvery = o.restartEvery;
    cfg.restartRatio = o.restartRatio;
    cfg.restartLag = o.restartLag;
    cfg.restartOnLoss = o.restartOnLoss;
    cfg.warmupSteps = (size_t)o.warmup;
    cfg.momentum = o.momentum;
    if (meth.importance != sparcclImportanceNone) {
      /* gamma: how far the probe looks ahead, about one optimiser step; eta: chosen so that
       * one solver step moves a typical weight by ~0.1 (cube) or changes a weight ratio by at
       * most e (simplex), from a pilot gradient on rank 0's first batch, broadcast. */
      double pg[2] = {o.impGamma, o.impEta};
      if (rank_ == 0 && (pg[0] <= 0 || pg[1] <= 0)) {
        double sq = 0.0, mx = 0.0;
        loadBatch(&trImg, &trLab, shard, o.batch, x, y);
        mlpLossGrad(&net, params, x, y, o.batch, grad);
        for (i = 0; i < np; i++) {
          double g2 = (double)grad[i] * (double)grad[i];
          sq += g2;
          if (g2 > mx) mx = g2;
        }
        sq /= (double)np;
        if (pg[0] <= 0) pg[0] = isSgd ? o.lr : o.lr / sqrt(sq > 0 ? sq : 1.0);
        if (pg[1] <= 0) {
          double c = meth.importance == sparcclImportanceSimplex ? 1.0 / (mx > 0 ? mx : 1.0)
                                                                 : 0.1 / (sq > 0 ? sq : 1.0);
          pg[1] = c / pg[0];
        }
      }
      MPI_Bcast(pg, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
      cfg.importanceGamma = pg[0];
      cfg.importanceEta = pg[1];
      if (rank_ == 0 && !o.quiet)
        printf("importance: gamma %.4g eta %.4g (eta*gamma %.4g), %d solver steps per epoch\n",
               pg[0], pg[1], pg[0] * pg[1], o.impSteps);
    }
    EXAMPLE_CHECK(sparcclCommInitMpi(&comm, MPI_COMM_WORLD, &cfg));
    EXAMPLE_CHECK(sparcclRegisterLayout(comm, grad, nlayers, counts));
  }
  if (rank_ == 0 && !o.quiet)
    printf("fmnist_train: %s, %s lr %g, %d ranks x batch %zu, %zu train (%s) / %zu test, "
           "%zu params in %zu layers, density %g, warm-up %lld steps\n",
           o.method, o.optimizer, o.lr, nranks_, o.batch, ntrain, o.noniid ? "non-iid" : "iid",
           ntest, np, nlayers, meth.dense ? 1.0 : o.density, meth.dense ? 0 : o.warmup);

  if (rank_ == 0 && o.csv != NULL)
    fclose(example_open_append(o.csv,
                               "method,optimizer,seed,epoch,train_loss,test_loss,test_acc,"
                               "bytes_per_step,dense_bytes_per_step,bytes_ratio,train_seconds,"
                               "restarts,skipped_steps,lr\n",
                               1));

  for (epoch = 1; epoch <= o.epochs; epoch++) {
    size_t steps = per / o.batch, s;
    double lossSum = 0.0, t0 = MPI_Wtime(), teLoss, teAcc, bps, dbps;
    uint64_t rs = rngState(o.seed, (unsigned long long)epoch, (unsigned long long)rank_ + 1000);
    unsigned long long restarts = 0;
    shuffle(shard, per, &rs);
    for (s = 0; s < steps; s++) {
      loadBatch(&trImg, &trLab, shard + s * o.batch, o.batch, x, y);
      lossSum += mlpLossGrad(&net, params, x, y, o.batch, grad);
      if (s == 0 && meth.importance != sparcclImportanceNone && o.impSteps > 0) {
        int k;
        /* The thesis' per-epoch solve: from w = 1 (TopK), a few solver steps on this batch. */
        EXAMPLE_CHECK(sparcclImportanceReset(comm, grad, np));
        for (k = 0; k < o.impSteps; k++) {
          EXAMPLE_CHECK(
              sparcclImportanceProbe(params, grad, probe, np, sparcclFloat32, comm, NULL));
          mlpLossGrad(&net, probe, x, y, o.batch, gprobe);
          EXAMPLE_CHECK(sparcclImportanceUpdate(gprobe, grad, np, sparcclFloat32, comm, NULL));
        }
      }
      if (meth.feedback == sparcclFeedbackDGC && o.wd != 0.0) /* sparccl gets g + wd x */
        for (i = 0; i < np; i++) grad[i] = grad[i] + (float)o.wd * params[i];
      if (meth.dense) {
        example_dense_average(grad, np, nranks_);
      } else {
        EXAMPLE_CHECK(sparcclAllReduce(grad, grad, np, sparcclFloat32, sparcclAvg, comm, NULL));
        if (o.restartMomentum) {
          sparcclStats_t st;
          EXAMPLE_CHECK(sparcclCommGetStats(comm, &st));
          if (st.restarts != lastRestarts) { /* the slides reset the momentum with the state */
            memset(mom, 0, np * sizeof(float));
            memset(vel, 0, np * sizeof(float));
            t = 0;
            lastRestarts = st.restarts;
          }
        }
      }
      if (!allFinite(grad, np)) { /* a non-finite step: skip it, as a loss scaler would */
        skipped++;
        continue;
      }
      t++;
      if (isSgd && meth.feedback == sparcclFeedbackDGC) {
        const float lr = (float)o.lr; /* the output is already the momentum (SPEC 9) */
        for (i = 0; i < np; i++) params[i] = params[i] - lr * grad[i];
      } else if (isSgd) {
        const float lr = (float)o.lr, mu = (float)o.momentum, wd = (float)o.wd;
        for (i = 0; i < np; i++) {
          float g = grad[i] + wd * params[i];
          mom[i] = mu * mom[i] + g;
          params[i] = params[i] - lr * mom[i];
        }
      } else {
        example_adamw_step(params, grad, mom, vel, np, t, o.lr, o.beta1, o.beta2, o.wd,
                           o.adamEps);
      }
    }
    trainSeconds += MPI_Wtime() - t0;
    {
      double l[1] = {lossSum / (double)steps};
      MPI_Allreduce(MPI_IN_PLACE, l, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
      lossSum = l[0] / (double)nranks_;
    }
    evaluate(&net, params, &teImg, &teLab, ntest, x, y, evalB, &teLoss, &teAcc);
    if (meth.dense) {
      bps = dbps = (double)np * sizeof(float);
    } else {
      sparcclStats_t st;
      if (o.restartOnLoss) EXAMPLE_CHECK(sparcclReportLoss(comm, teLoss));
      EXAMPLE_CHECK(sparcclCommGetStats(comm, &st));
      bps = st.calls ? (double)st.bytesSent / (double)st.calls : 0.0;
      dbps = st.calls ? (double)st.bytesDense / (double)st.calls : 0.0;
      restarts = st.restarts;
    }
    if (rank_ == 0) {
      if (!o.quiet || epoch == o.epochs)
        printf("%-12s seed %llu epoch %d/%d  train loss %.4f  test loss %.4f  test acc %.4f  "
               "bytes/step %.0f (%.4f of dense)  train %.1fs  restarts %llu  skipped %llu\n",
               o.method, o.seed, epoch, o.epochs, lossSum, teLoss, teAcc, bps,
               dbps > 0 ? bps / dbps : 0.0, trainSeconds, restarts, skipped);
      fflush(stdout);
      if (o.csv != NULL) {
        FILE* f = example_open_append(o.csv, NULL, 1);
        fprintf(f, "%s,%s,%llu,%d,%.6f,%.6f,%.6f,%.0f,%.0f,%.6f,%.3f,%llu,%llu,%g\n", o.method,
                o.optimizer, o.seed, epoch, lossSum, teLoss, teAcc, bps, dbps,
                dbps > 0 ? bps / dbps : 0.0, trainSeconds, restarts, skipped, o.lr);
        fclose(f);
      }
    }
  }

  if (comm != NULL) EXAMPLE_CHECK(sparcclCommDestroy(comm));
  mlpFree(&net);
  free(params);
  free(grad);
  free(probe);
  free(gprobe);
  free(mom);
  free(vel);
  free(x);
  free(y);
  free(perm);
  free(shard);
  idxFree(&trImg);
  idxFree(&trLab);
  idxFree(&teImg);
  idxFree(&teLab);
  MPI_Finalize();
  return 0;
}
