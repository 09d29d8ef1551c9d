"""test_ddp.py [--world N ...]: the sparccl DDP hook in real PyTorch training on gloo (CPU).

    python3 python/tests/test_ddp.py --world 2 --world 3      # `make torchtest` runs this

N processes (torch.multiprocessing) train a small MLP whose buckets DDP rebuilds after the
first step (several buckets from small bucket_cap_mb), with the hook of python/sparccl.  Each
scenario runs on every rank; each check is asserted on every rank and reported by rank 0:

  reference    the hook's averaged gradient of every parameter equals, bitwise, the C
               library's one call (sparcclAllReduceTagged) of the same gradient on a second
               comm with the same config, at every step, through DDP's bucket rebuild; every
               rank holds the same bits.  Variants: topk/ef, the default method (scam-impk),
               gradient_as_bucket_view, static_graph, bfloat16 and float16 models, dgc-topk
               with warm-up (momentum kept by sparccl)
  replicas     after many SGD steps the parameters are bitwise identical on every rank; the
               loss fell; the bytes sent are a small part of the dense bytes
  warmup       warm-up calls equal the rank-ordered float32 dense average (and, 2 ranks,
               torch's own DDP average) bitwise; compression starts after them
  nonfinite    an overflowed step on one rank: every sparse layer's output NaN on every rank,
               and the state untouched (the next step equals a run without the bad step)
  resume       state_dict through torch.save / torch.load(weights_only=True), and pickling of
               the state: the resumed run continues bitwise as the uninterrupted one; a run
               resumed without the hook's state does not (the check can fail); also with
               dgc-topk, resumed in the middle of its warm-up
  order        callbacks delayed on one rank (completing in another order on each rank),
               and a new key registered while an earlier bucket is in flight: no deadlock,
               the same bits as the reference
  refusal      buckets whose layouts differ between ranks: refused on every rank alike, so
               every rank averages that bucket dense (bitwise torch's dense average)
  importance   scam-impk_c (SPEC 7): SparcclState.importance_step's weights give, bitwise,
               the hook output of the C calls (sparcclImportanceResetTagged, then per
               solver step sparcclImportanceProbeTagged, the gradient at the probe,
               sparcclImportanceUpdateTagged, then sparcclAllReduceTagged) on a second comm
               fed by plain autograd on the same batch; the solve changes the selection
               (the output differs from w = 1); parameters, .grad and buffers are as before
               the step, BatchNorm's statistics and the random state too, and its g under
               dropout is bitwise the step's hook input; replicas identical after many
               steps with a solve every "epoch";
               resume: the weights are in state_dict (a resumed run continues bitwise, one
               whose weights are reset to 1 after the load does not), also when the first
               call after the load is a solve
"""
import argparse
import datetime
import gc
import io
import os
import socket
import sys
import threading
import time
import types
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this repository's python/ first

import sparccl  # noqa: E402
import sparccl.hook as sparccl_hook_module  # noqa: E402
from sparccl import SparcclOptions, SparcclState, sparccl_hook  # noqa: E402
from sparccl.bindings import AVG  # noqa: E402

TOPK_EF = dict(density=0.05, min_sparse=256, compressor="topk", feedback="ef")
# SPEC 9's dense start and momentum correction (the trainer's SGD then has no momentum).
DGC_WARMUP = dict(density=0.05, min_sparse=256, compressor="topk", feedback="dgc",
                  momentum=0.9, warmup_steps=3)
# the thesis' scam-impk_c: ImpK with weights solved on the cube [0, 2]^d (importance_step)
IMPK_C = dict(density=0.05, min_sparse=256, compressor="impk", feedback="scam",
              importance="cube", importance_gamma=0.1, importance_eta=1e4,
              importance_low=0.0, importance_high=2.0)
BUCKET_MB = 0.02  # about 5000 float32 elements: several buckets once DDP rebuilds them


# ------------------------------------------------------------------ helpers
class Checks:
    def __init__(self):
        self.results = []  # (ok, what)

    def __call__(self, ok, what):
        self.results.append((bool(ok), what))
        return ok


def same_bits(a, b):
    """Bitwise equality (NaN payloads included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.detach().contiguous().view(torch.uint8),
                       b.detach().contiguous().view(torch.uint8))


def same_on_every_rank(tensors):
    """Every rank holds the same bits in these tensors."""
    flat = torch.cat([t.detach().contiguous().view(torch.uint8).reshape(-1) for t in tensors])
    rows = torch.empty(dist.get_world_size() * flat.numel(), dtype=torch.uint8)
    dist.all_gather_into_tensor(rows, flat)
    rows = rows.view(dist.get_world_size(), -1)
    return all(torch.equal(rows[0], rows[r]) for r in range(1, rows.shape[0]))


def make_model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 96), nn.ReLU(), nn.Linear(96, 96), nn.ReLU(),
                         nn.Linear(96, 10)).to(dtype)


def batch(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(1000 * step + dist.get_rank())
    return (torch.randn(16, 32, generator=g).to(dtype),
            torch.randn(16, 10, generator=g).to(dtype))


def loss_of(ddp, step, dtype=torch.float32):
    x, y = batch(step, dtype)
    return (ddp(x) - y).float().square().mean()


class Recorder:
    """A hook around sparccl_hook that keeps each parameter's input and the buckets seen."""

    def __init__(self):
        self.inputs, self.buckets = {}, []
        self.slow = None

    def hook(self, state, bucket):
        if self.slow is not None:
            self.slow.bucket = bucket.index()
        for p, g in zip(bucket.parameters(), bucket.gradients()):
            self.inputs[p] = g.detach().clone()
        self.buckets.append(bucket.index())
        return sparccl_hook(state, bucket)


class Reference:
    """The one-call path: sparcclAllReduceTagged per key on a second comm, same config."""

    def __init__(self, options):
        self.state = SparcclState(options=options)

    def average(self, hook_state, inputs):
        """{parameter: sparcclAllReduceTagged(inputs[p])}, keys registered as the hook's."""
        ref = self.state
        outputs = {}
        for p, tag in sorted(hook_state.tags.items(), key=lambda kv: kv[1]):
            while len(ref.counts) <= tag - ref.tag_base:
                ref._register(hook_state.counts[len(ref.counts)])
            x = inputs[p]
            out = torch.empty_like(x)
            ref.lib.all_reduce_tagged(x.data_ptr(), out.data_ptr(), x.numel(),
                                      sparccl_hook_module._DTYPES[x.dtype], AVG, tag, ref.comm, 0)
            outputs[p] = out
        return outputs

    def close(self):
        self.state.close()


def ddp_with_hook(model, options, recorder=None, **ddp_args):
    # the same number of elements a bucket whatever the dtype
    cap = BUCKET_MB * next(model.parameters()).element_size() / 4
    ddp = DDP(model, bucket_cap_mb=cap, **ddp_args)
    state = SparcclState(options=SparcclOptions(**options))
    ddp.register_comm_hook(state, recorder.hook if recorder else sparccl_hook)
    return ddp, state


# ------------------------------------------------------------------ scenarios
def scenario_reference(check, options=TOPK_EF, dtype=torch.float32, steps=5, **ddp_args):
    model = make_model(dtype)
    rec = Recorder()
    ddp, state = ddp_with_hook(model, options, rec, **ddp_args)
    ref = Reference(SparcclOptions(**options))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    equal, identical, buckets = True, True, []
    for step in range(steps):
        rec.inputs, rec.buckets = {}, []
        opt.zero_grad(set_to_none=False)
        loss_of(ddp, step, dtype).backward()
        buckets.append(len(rec.buckets))
        expected = ref.average(state, rec.inputs)
        params = [p for p in model.parameters()]
        equal = equal and len(expected) == len(params) and \
            all(same_bits(p.grad, expected[p]) for p in params)
        identical = identical and same_on_every_rank([p.grad for p in params])
        opt.step()
    stats = state.stats()
    check(equal, "every parameter's averaged gradient equals sparcclAllReduceTagged's, "
          "bitwise, at each of %d steps" % steps)
    check(identical, "every rank holds the same averaged gradients")
    check(buckets[0] != buckets[-1] and max(buckets) > 1,
          "DDP rebuilt its buckets (buckets per step: %s)" % buckets)
    check(stats["calls"] == steps * len(state.counts) and stats["refusedCalls"] == 0,
          "%d sparccl calls, none refused (%s)" % (stats["calls"], stats["refusedCalls"]))
    state.close()
    ref.close()


def scenario_replicas(check, steps=40):
    model = make_model()
    ddp, state = ddp_with_hook(model, TOPK_EF)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_of(ddp, step % 4)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    stats = state.stats()
    check(same_on_every_rank(list(model.parameters())),
          "after %d steps the parameters are bitwise identical on every rank" % steps)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    check(last < first, "the training loss fell: %.4f -> %.4f" % (first, last))
    ratio = stats["bytesSent"] / stats["bytesDense"]
    check(ratio < 0.3, "bytes sent %d of %d dense (%.1f%%; density 5%%, small layers dense)"
          % (stats["bytesSent"], stats["bytesDense"], 100 * ratio))
    state.close()


def scenario_warmup(check, warmup=2, steps=4):
    options = dict(TOPK_EF, warmup_steps=warmup)
    model, plain = make_model(), make_model()
    rec = Recorder()
    ddp, state = ddp_with_hook(model, options, rec)
    ddp_plain = DDP(plain, bucket_cap_mb=BUCKET_MB)  # torch's own allreduce
    dense, torch_equal, sparse_after = True, True, None
    world = dist.get_world_size()
    for step in range(steps):
        rec.inputs = {}
        before = state.stats()["bytesSent"]
        loss_of(ddp, step).backward()
        loss_of(ddp_plain, step).backward()
        sent = state.stats()["bytesSent"] - before
        for p, q in zip(model.parameters(), plain.parameters()):
            x = rec.inputs[p]
            rows = torch.empty(world * x.numel(), dtype=x.dtype)
            dist.all_gather_into_tensor(rows, x.reshape(-1))
            rows = rows.view(world, -1)
            s = rows[0].clone()
            for r in range(1, world):
                s += rows[r]
            expected = (s / world).view_as(x)
            if step < warmup:
                dense = dense and same_bits(p.grad, expected)
                if world == 2:
                    torch_equal = torch_equal and same_bits(p.grad, q.grad)
            p.grad, q.grad = None, None
        if step == warmup:
            sparse_after = sent
        if step == 0:
            dense_bytes = sent
    check(dense, "the %d warm-up steps equal the rank-ordered float32 dense average, bitwise"
          % warmup)
    if world == 2:
        check(torch_equal, "and torch's own DDP average (2 ranks), bitwise")
    check(sparse_after is not None and sparse_after < dense_bytes / 5,
          "compression starts after the warm-up: %s bytes sent at step %d, %d at step 0"
          % (sparse_after, warmup, dense_bytes))
    state.close()


def scenario_nonfinite(check, steps=4):
    finals = []
    for bad in (True, False):
        model = make_model()
        ddp, state = ddp_with_hook(model, TOPK_EF)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(steps):
            opt.zero_grad()
            loss_of(ddp, step).backward()
            opt.step()
        if bad:
            skipped = state.stats()["skippedSteps"]
            opt.zero_grad()
            loss = loss_of(ddp, 99)
            if dist.get_rank() == dist.get_world_size() - 1:
                loss = loss * float("inf")  # an overflowed step on one rank
            loss.backward()
            sparse = [p for p in model.parameters() if p.numel() >= TOPK_EF["min_sparse"]]
            check(all(bool(torch.isnan(p.grad).all()) for p in sparse),
                  "an overflow on one rank: every sparse layer's output is all NaN on every rank")
            check(all(not bool(torch.isfinite(p.grad).all()) for p in model.parameters()),
                  "and no layer's output is finite")
            skipped = state.stats()["skippedSteps"] - skipped
            check(skipped == len(sparse), "%d layer steps counted as skipped (%d sparse layers)"
                  % (skipped, len(sparse)))
            # no optimizer step, as a loss scaler would skip it
        opt.zero_grad()
        loss_of(ddp, steps).backward()
        finals.append([p.grad.clone() for p in model.parameters()])
        state.close()
    check(all(same_bits(a, b) for a, b in zip(*finals)),
          "the step after the skipped one equals, bitwise, a run that never had it "
          "(the state was untouched)")


def train(ddp, opt, steps, state=None, solve_every=0):
    """SGD steps; with solve_every, state.importance_step at every multiple of it."""
    for step in steps:
        opt.zero_grad()
        if solve_every and step % solve_every == 0:
            state.importance_step(ddp, lambda: loss_of(ddp, step))
        loss_of(ddp, step).backward()
        opt.step()


def scenario_resume(check, options=TOPK_EF, before=4, after=4, solve_every=0):
    model = make_model()
    ddp, state = ddp_with_hook(model, options)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(ddp, opt, range(before), state, solve_every)
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sparccl": state.state_dict()}, saved)
    pickled = io.BytesIO()
    torch.save(state, pickled)  # SparcclState.__getstate__
    train(ddp, opt, range(before, before + after), state, solve_every)
    uninterrupted = [p.detach().clone() for p in model.parameters()]
    state.close()

    def resumed(how):
        saved.seek(0)
        checkpoint = torch.load(saved, weights_only=True)
        model = make_model()
        model.load_state_dict(checkpoint["model"])
        ddp = DDP(model, bucket_cap_mb=BUCKET_MB)
        if how == "pickle":
            pickled.seek(0)
            state = torch.load(pickled, weights_only=False)  # SparcclState.__setstate__
        else:
            state = SparcclState(options=SparcclOptions(**options))
            if how == "state_dict":
                state.load_state_dict(checkpoint["sparccl"])
            if how == "reset_w":
                state.load_state_dict(checkpoint["sparccl"])
        ddp.register_comm_hook(state, sparccl_hook)
        if how == "reset_w":
            state._apply_pending_load()  # the saved keys and state now, then w = 1
            state.importance_reset()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.load_state_dict(checkpoint["opt"])
        train(ddp, opt, range(before, before + after), state, solve_every)
        state.close()
        return all(same_bits(a, b) for a, b in zip(model.parameters(), uninterrupted))

    check(resumed("state_dict"), "resumed from state_dict (torch.save, torch.load with "
          "weights_only=True): %d more steps bitwise as the uninterrupted run" % after)
    check(resumed("pickle"), "resumed from the pickled SparcclState: the same bits")
    check(not resumed("fresh"), "control: resumed without the hook's state, the run differs")
    if solve_every and before % solve_every:
        check(not resumed("reset_w"), "control: resumed with the state but the importance "
              "weights reset to 1, the run differs (the weights are in the saved state)")

    # A checkpoint of another config: refused on every rank, with an error, not trained over.
    saved.seek(0)
    other = SparcclState(options=SparcclOptions(**dict(options, density=0.2)))
    other.load_state_dict(torch.load(saved, weights_only=True)["sparccl"])
    ddp = DDP(make_model(), bucket_cap_mb=BUCKET_MB)
    ddp.register_comm_hook(other, sparccl_hook)
    try:
        loss_of(ddp, 0).backward()
        error = ""
    except RuntimeError as e:
        error = str(e)
    check("resuming from the checkpoint failed" in error,
          "a checkpoint of another config is refused, and DDP's backward raises: %s"
          % (error.splitlines() or ["no error"])[0][:120])
    other.close()


class SlowExchange:
    """torch.distributed.all_gather_into_tensor(async_op=True) whose future completes, on
    another thread, `delay(bucket)` seconds late: a slow link on some rank, so that the
    buckets' callbacks run in another order on each rank."""

    def __init__(self, delay):
        self.delay, self.bucket, self.finished = delay, None, []
        self.real = dist.all_gather_into_tensor

    def __enter__(self):
        dist.all_gather_into_tensor = self
        return self

    def __exit__(self, *exc):
        dist.all_gather_into_tensor = self.real

    def __call__(self, out, inp, group=None, async_op=False):
        work = self.real(out, inp, group=group, async_op=async_op)
        if not async_op:
            return work
        bucket, late = self.bucket, torch.futures.Future()

        def complete():
            time.sleep(self.delay(bucket))
            work.wait()
            self.finished.append(bucket)
            late.set_result([out])

        threading.Thread(target=complete, daemon=True).start()
        return types.SimpleNamespace(get_future=lambda: late)


def scenario_order(check, steps=3):
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model()
    rec = Recorder()
    ddp, state = ddp_with_hook(model, TOPK_EF, rec)
    ref = Reference(SparcclOptions(**TOPK_EF))
    # rank 0's first bucket arrives late, the last rank's last bucket
    slow = SlowExchange(lambda b: 0.3 if (rank == 0 and b == 0) or
                        (rank == world - 1 and b == rec.last) else 0.0)
    rec.slow, rec.last = slow, 1
    equal, orders = True, []
    with slow:
        for step in range(steps):
            rec.inputs, rec.buckets, slow.finished[:] = {}, [], []
            loss_of(ddp, step).backward()
            orders.append(list(slow.finished))
            expected = ref.average(state, rec.inputs)
            equal = equal and all(same_bits(p.grad, expected[p]) for p in model.parameters())
            for p in model.parameters():
                p.grad = None
        # A bucket in flight (late on rank 0) while the next one registers new keys.
        params = [nn.Parameter(torch.zeros(600)), nn.Parameter(torch.zeros(700))]
        grads = [torch.randn(600, generator=torch.Generator().manual_seed(rank)),
                 torch.randn(700, generator=torch.Generator().manual_seed(rank + 10))]
        known = next(iter(state.tags))
        slow.bucket = 0
        f0 = sparccl_hook(state, FakeBucket(0, [known], [torch.ones(known.numel())]))
        slow.bucket = 1
        f1 = sparccl_hook(state, FakeBucket(1, params, grads))
        values = f1.wait().clone(), f0.wait()
    check(equal, "buckets arriving late on some ranks: the same bits as sparcclAllReduceTagged")
    check(world == 1 or not same_on_every_rank([torch.tensor(orders[-1])]),
          "the buckets completed in another order on each rank (rank %d: %s)"
          % (rank, orders[-1]))
    check(len(state.counts) == 8 and values[0].numel() == 1300,
          "a key registered while a bucket was in flight: no deadlock")
    state.close()
    ref.close()


class FakeBucket:
    """What sparccl_hook uses of a GradBucket, over a buffer of its own."""

    def __init__(self, index, params, grads):
        self._index, self._params = index, params
        self._buf = torch.cat([g.reshape(-1) for g in grads])
        self._grads, offset = [], 0
        for g in grads:
            self._grads.append(self._buf[offset:offset + g.numel()])
            offset += g.numel()

    def index(self):
        return self._index

    def buffer(self):
        return self._buf

    def gradients(self):
        return self._grads

    def parameters(self):
        return self._params


def scenario_refusal(check):
    rank, world = dist.get_rank(), dist.get_world_size()
    state = SparcclState(options=SparcclOptions(**TOPK_EF))
    sizes = [300, 500] if rank == 0 else [500, 300]  # the same bucket, other layouts
    params = [nn.Parameter(torch.zeros(n)) for n in sizes]
    grads = [torch.randn(n, generator=torch.Generator().manual_seed(rank + 1)) for n in sizes]
    bucket = FakeBucket(3, params, grads)
    local = bucket.buffer().clone()
    out = sparccl_hook(state, bucket).wait()
    expected = local / world
    dist.all_reduce(expected)
    check(same_bits(out, expected),
          "a bucket whose layouts differ between ranks is averaged dense on every rank, "
          "bitwise torch's dense average")
    check(state.counts == [] and same_on_every_rank([out]), "refused on every rank alike: no key")
    agreeing = FakeBucket(4, [nn.Parameter(torch.zeros(400))], [grads[0][:200].repeat(2)])
    sparccl_hook(state, agreeing).wait()
    check(state.stats()["calls"] == 1, "the next, agreeing bucket goes through sparccl")
    state.close()


def grads_at(model, step, values=None):
    """Plain autograd (no DDP) of this rank's loss on step's batch, at values if given
    (then the parameters are put back bitwise)."""
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values or []):
            p.copy_(v)
    x, y = batch(step)
    grads = torch.autograd.grad((model(x) - y).float().square().mean(), params)
    with torch.no_grad():
        for p, v in zip(params, saved):
            p.copy_(v)
    return dict(zip(params, grads))


def reference_solve(ref, hook_state, model, step, steps):
    """The C calls of the thesis' solve on ref's comm: reset, then per solver step the
    probe, plain autograd at the probe, the update (train.c's sequence)."""
    lib, comm = ref.state.lib, ref.state.comm
    for p in model.parameters():  # the hook's keys, on the reference comm too
        tag = hook_state.tags[p]
        while len(ref.state.counts) <= tag - ref.state.tag_base:
            ref.state._register(hook_state.counts[len(ref.state.counts)])
    keys = sorted(hook_state.tags.items(), key=lambda kv: kv[1])
    g = grads_at(model, step)
    for _, tag in keys:
        lib.importance_reset_tagged(comm, tag)
    for _ in range(steps):
        probes = {}
        for p, tag in keys:
            x, probes[p] = p.detach().clone(), torch.empty_like(p)
            lib.importance_probe_tagged(x.data_ptr(), g[p].data_ptr(), probes[p].data_ptr(),
                                        p.numel(), sparccl_hook_module._DTYPES[p.dtype], tag,
                                        comm, 0)
        q = grads_at(model, step, [probes[p] for p in model.parameters()])
        for p, tag in keys:
            lib.importance_update_tagged(q[p].data_ptr(), g[p].data_ptr(), p.numel(),
                                         sparccl_hook_module._DTYPES[p.dtype], tag, comm, 0)


def scenario_importance(check, steps=7, solve_every=3, solver_steps=3, **ddp_args):
    model = make_model()
    rec = Recorder()
    ddp, state = ddp_with_hook(model, IMPK_C, rec, **ddp_args)
    ref = Reference(SparcclOptions(**IMPK_C))
    flat = Reference(SparcclOptions(**IMPK_C))  # the same calls with w = 1: no solve
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    equal, identical, untouched, differs, nlosses = True, True, True, None, set()
    for step in range(steps):
        rec.inputs, rec.buckets = {}, []
        opt.zero_grad()
        if step % solve_every == 0:
            before = [p.detach().clone() for p in model.parameters()]
            sent = state.stats()["bytesSent"]
            losses = state.importance_step(ddp, lambda: loss_of(ddp, step), steps=solver_steps)
            nlosses.add(len(losses))
            untouched = untouched and state.stats()["bytesSent"] == sent and \
                all(same_bits(a, p) for a, p in zip(before, model.parameters())) and \
                all(p.grad is None for p in model.parameters())
            reference_solve(ref, state, model, step, solver_steps)
            rec.inputs = {}
        loss_of(ddp, step).backward()
        expected = ref.average(state, rec.inputs)
        if step == 0:
            without = flat.average(state, rec.inputs)
            differs = any(not same_bits(expected[p], without[p]) for p in model.parameters())
        params = list(model.parameters())
        equal = equal and all(same_bits(p.grad, expected[p]) for p in params)
        identical = identical and same_on_every_rank([p.grad for p in params])
        opt.step()
    stats = state.stats()
    check(equal, "the hook's output after importance_step equals, bitwise, "
          "sparcclAllReduceTagged after the C solve (reset, %d x probe / autograd at the probe "
          "/ update) on the same batch, at each of %d steps (a solve every %d)"
          % (solver_steps, steps, solve_every))
    check(differs, "the solve changed the selection: step 0's output differs from w = 1's")
    check(identical, "every rank holds the same averaged gradients")
    check(untouched and nlosses == {solver_steps + 1}, "importance_step leaves the parameters "
          "bitwise and .grad (None) as they were, sends nothing through sparccl, returns "
          "%d losses" % (solver_steps + 1))
    check(stats["calls"] == steps * len(state.counts) and stats["refusedCalls"] == 0,
          "%d sparccl calls (the solves' passes make none), none refused" % stats["calls"])
    state.close()
    ref.close()
    flat.close()


def scenario_importance_replicas(check, steps=32, epoch=8):
    model = make_model()
    ddp, state = ddp_with_hook(model, IMPK_C)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=False)  # the solve keeps zero .grad as it found them
        if step % epoch == 0:
            state.importance_step(ddp, lambda: loss_of(ddp, step % 4))
        loss = loss_of(ddp, step % 4)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    check(same_on_every_rank(list(model.parameters())),
          "scam-impk_c, a solve every %d steps: after %d steps the parameters are bitwise "
          "identical on every rank" % (epoch, steps))
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    check(last < first, "the training loss fell: %.4f -> %.4f" % (first, last))
    state.close()


def scenario_importance_buffers(check, steps=4):
    """A model with BatchNorm and dropout: the solve's passes leave the running statistics
    and the random state as they were, and record the gradient the step then sends."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 96), nn.BatchNorm1d(96), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(96, 10))
    rec = Recorder()
    ddp, state = ddp_with_hook(model, IMPK_C, rec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    kept, same_rng, same_g = True, True, True
    for step in range(steps):
        opt.zero_grad()
        solve = step % 2 == 0
        if solve:
            before = [b.detach().clone().reshape(-1) for b in model.buffers()]
            rng = torch.get_rng_state()
            rec.inputs = {}
            state.importance_step(ddp, lambda: loss_of(ddp, step), steps=0)  # g alone
            g = dict(rec.inputs)
            state.importance_step(ddp, lambda: loss_of(ddp, step))
            kept = kept and all(same_bits(a, b.reshape(-1))
                                for a, b in zip(before, model.buffers()))
            same_rng = same_rng and torch.equal(rng, torch.get_rng_state())
        rec.inputs = {}
        loss_of(ddp, step).backward()
        if solve:
            same_g = same_g and all(same_bits(rec.inputs[p], g[p]) for p in model.parameters())
        opt.step()
    check(kept, "BatchNorm's running statistics (and batch count) are as before each solve")
    check(same_rng, "the random state is as before each solve")
    check(same_g, "the solve's g is, bitwise, what the hook then compresses in the step "
          "(the same dropout masks)")
    # (the buffers are each rank's own after a forward: DDP broadcasts rank 0's at the next)
    check(same_on_every_rank(list(model.parameters())),
          "parameters bitwise identical on every rank after %d steps" % steps)
    state.close()


SCENARIOS = [
    ("reference topk/ef", lambda c: scenario_reference(c)),
    ("reference scam-impk (default method)",
     lambda c: scenario_reference(c, dict(density=0.05, min_sparse=256))),
    ("reference gradient_as_bucket_view",
     lambda c: scenario_reference(c, gradient_as_bucket_view=True)),
    ("reference static_graph", lambda c: scenario_reference(c, static_graph=True)),
    ("reference bfloat16 model", lambda c: scenario_reference(c, dtype=torch.bfloat16)),
    ("reference float16 model", lambda c: scenario_reference(c, dtype=torch.float16)),
    ("reference dgc-topk with warm-up (the recommended setting)",
     lambda c: scenario_reference(c, DGC_WARMUP, steps=6)),
    ("replicas", scenario_replicas),
    ("warmup", scenario_warmup),
    ("nonfinite", scenario_nonfinite),
    ("resume", scenario_resume),
    ("resume dgc-topk in the middle of the warm-up",
     lambda c: scenario_resume(c, DGC_WARMUP, before=2, after=4)),
    ("order", scenario_order),
    ("refusal", scenario_refusal),
    ("importance scam-impk_c against the C solve", scenario_importance),
    ("importance scam-impk_c, gradient_as_bucket_view",
     lambda c: scenario_importance(c, steps=4, gradient_as_bucket_view=True)),
    ("importance replicas", scenario_importance_replicas),
    ("importance BatchNorm buffers", scenario_importance_buffers),
    ("importance resume", lambda c: scenario_resume(c, IMPK_C, before=5, after=3,
                                                    solve_every=3)),
    ("importance resume, a solve first", lambda c: scenario_resume(c, IMPK_C, before=6,
                                                                  after=3, solve_every=3)),
]


# ------------------------------------------------------------------ runner
def worker(rank, world, port, only, results):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    for name, run in SCENARIOS:
        if only and not any(o in name for o in only):
            continue
        check = Checks()
        start = time.time()
        try:
            run(check)
        except Exception:  # noqa: BLE001 -- a failed scenario, reported as such
            check(False, "raised:\n" + traceback.format_exc())
        gc.collect()  # the scenario's DDP objects go while the process group is alive
        gathered = gather_results(check.results)
        if rank == 0:
            failed = [(r, what) for r, res in enumerate(gathered) for ok, what in res if not ok]
            for ok, what in gathered[0]:
                print("   %s: %s" % ("ok" if ok else "FAIL", what.splitlines()[0]))
            for r, what in failed:
                print("   FAIL on rank %d: %s" % (r, what))
            verdict = "FAIL" if failed or not gathered[0] else "PASS"
            print("%s: %d ranks, %s (%.1f s)" % (verdict, world, name, time.time() - start),
                  flush=True)
            results.append((name, verdict))
    dist.barrier()
    dist.destroy_process_group()


def gather_results(results):
    """Every rank's [(ok, what)] (all_gather_object without numpy)."""
    text = "\0".join(("1" if ok else "0") + what for ok, what in results).encode()
    mine = torch.tensor(list(text), dtype=torch.uint8)
    sizes = torch.empty(dist.get_world_size(), dtype=torch.int64)
    dist.all_gather_into_tensor(sizes, torch.tensor([mine.numel()]))
    rows = torch.zeros(dist.get_world_size() * int(sizes.max()), dtype=torch.uint8)
    padded = torch.zeros(int(sizes.max()), dtype=torch.uint8)
    padded[:mine.numel()] = mine
    dist.all_gather_into_tensor(rows, padded)
    out = []
    for r, row in enumerate(rows.view(dist.get_world_size(), -1)):
        text = bytes(row[:int(sizes[r])].tolist()).decode()
        out.append([(t[0] == "1", t[1:]) for t in text.split("\0")] if text else [])
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, action="append", help="ranks (repeatable; 2)")
    ap.add_argument("--only", action="append", help="scenarios whose name contains this")
    args = ap.parse_args()
    print("sparccl %s, torch %s, library %s" % (os.path.dirname(sparccl.__file__),
                                                torch.__version__,
                                                sparccl.bindings.default_library_path()))
    verdicts = []
    for world in args.world or [2]:
        with mp.Manager() as manager:
            results = manager.list()
            mp.spawn(worker, args=(world, free_port(), args.only, results), nprocs=world)
            verdicts += [(world, name, v) for name, v in results]
    failed = [v for v in verdicts if v[2] == "FAIL"]
    print("torch hook tests: %d passed, %d failed%s"
          % (len(verdicts) - len(failed), len(failed),
             "".join("\n   failed: %s (%d ranks)" % (n, w) for w, n, _ in failed)))
    return 1 if failed or not verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
