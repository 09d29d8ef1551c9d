"""compare_hooks.py: sparccl beside PyTorch's own DDP hooks on Fashion-MNIST, 2 ranks, gloo.

    python3 examples/pytorch/compare_hooks.py --method dense --seed 0 --csv out.csv
    examples/pytorch/compare_hooks.sh        # every method x 3 seeds behind a 1 Gbit/s link

One run: 2 processes (gloo on 127.0.0.1), a CNN with a wide fully connected layer (4.3M
parameters: the dense allreduce moves 17 MB a step, so a 1 Gbit/s link, not the two cores,
bounds the dense run), SGD, the same data order and initial weights for every method of one
seed.  Methods:

  dense              no hook: DDP's own allreduce
  fp16               torch's fp16_compress_hook
  powersgd1/4        torch's powerSGD_hook, matrix rank 1 or 4, one bucket (PowerSGD aborts
                     on gloo with several), start_powerSGD_iter 10
  sparccl-dgc-1/01   sparccl, dgc-topk with a 10-step dense warm-up (the recommended
                     setting: sparccl keeps the momentum, SGD has none), density 1% / 0.1%
  sparccl-scam-1/01  sparccl's default scam-impk at 1% / 0.1% with importance weights 1
                     (no solver is run, so it selects like scam-topk)
  sparccl-impkc-1/01 the thesis' scam-impk_c at 1% / 0.1%: weights on the cube [0, 2]^d,
                     solved at the first step of every epoch from w = 1 by 3 solver steps
                     on that step's batch (SparcclState.importance_step); gamma and eta by
                     train.c's pilot rule (sparccl.importance_pilot: gamma = lr, eta * gamma
                     = 0.1 / mean(g^2) of rank 0's gradient on its first batch, broadcast)

Every --eval-every steps the test accuracy of rank 0's replica is measured (outside the
timed training time).  Bytes are what the loopback device carried (/proc/net/dev, both
ranks' traffic, gloo's own included): run each method in a network namespace of its own
(compare_hooks.sh) so that nothing else is counted.  One CSV row per evaluation:
method,seed,step,train_seconds,test_accuracy,link_bytes.
"""
import argparse
import gzip
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

DATA = "/usr/share/datasets/fashion-mnist"
METHODS = ("dense", "fp16", "powersgd1", "powersgd4", "sparccl-dgc-1", "sparccl-dgc-01",
           "sparccl-scam-1", "sparccl-scam-01", "sparccl-impkc-1", "sparccl-impkc-01")
SOLVER_STEPS = 3  # importance solver steps at the first step of every epoch (impkc)


def load(kind, limit):
    """Fashion-MNIST images (N, 1, 28, 28) in [0, 1] and labels, the first `limit`."""
    with gzip.open(os.path.join(DATA, "%s-images-idx3-ubyte.gz" % kind)) as f:
        images = bytearray(f.read()[16:])
    with gzip.open(os.path.join(DATA, "%s-labels-idx1-ubyte.gz" % kind)) as f:
        labels = bytearray(f.read()[8:])
    x = torch.frombuffer(images, dtype=torch.uint8).view(-1, 1, 28, 28)[:limit].float() / 255
    y = torch.frombuffer(labels, dtype=torch.uint8)[:limit].long()
    return (x - 0.286) / 0.353, y


def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 4096), nn.ReLU(), nn.Linear(4096, 10))


def link_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                return int(line.split(":")[1].split()[8])  # transmitted bytes
    return 0


def pilot(model, x, y, lr):
    """impkc's (gamma, eta): train.c's pilot rule on rank 0's first batch, broadcast."""
    from sparccl import importance_pilot
    pair = torch.zeros(2, dtype=torch.float64)
    if dist.get_rank() == 0:
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y),
                                    list(model.parameters()))
        pair[:] = torch.tensor(importance_pilot(grads, lr, importance="cube"))
    dist.broadcast(pair, src=0)
    return float(pair[0]), float(pair[1])


def attach(method, ddp, model, pilot_batch=None, lr=None):
    """The method's hook; returns (optimizer momentum, state to close or None)."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    if method == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif method.startswith("powersgd"):
        state = powerSGD_hook.PowerSGDState(process_group=None,
                                            matrix_approximation_rank=int(method[-1]),
                                            start_powerSGD_iter=10)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    elif method.startswith("sparccl"):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "..", "python"))
        from sparccl import SparcclOptions, SparcclState, sparccl_hook
        density = 0.01 if method.endswith("-1") else 0.001
        if "-dgc-" in method:
            options = SparcclOptions(density=density, compressor="topk", feedback="dgc",
                                     momentum=0.9, warmup_steps=10)
        elif "-impkc-" in method:
            gamma, eta = pilot(model, *pilot_batch, lr)
            if dist.get_rank() == 0:
                print("importance: gamma %.4g eta %.4g (eta*gamma %.4g), %d solver steps per "
                      "epoch" % (gamma, eta, gamma * eta, SOLVER_STEPS), flush=True)
            options = SparcclOptions(density=density, compressor="impk", feedback="scam",
                                     importance="cube", importance_low=0.0,
                                     importance_high=2.0, importance_gamma=gamma,
                                     importance_eta=eta)
        else:
            options = SparcclOptions(density=density)
        state = SparcclState(options=options)
        ddp.register_comm_hook(state, sparccl_hook)
        return (0.0 if "-dgc-" in method else 0.9), state
    return 0.9, None


def worker(rank, world, args, port):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x, y = load("train", args.train_limit)
    tx, ty = load("t10k", args.test_limit)
    torch.manual_seed(args.seed)
    model = make_model()
    single_bucket = args.method.startswith("powersgd")
    ddp = DDP(model, bucket_cap_mb=1000 if single_bucket else 4)
    per_rank = args.batch // world
    # rank 0's first batch (the pilot of impkc), from the first epoch's order
    head = torch.randperm(x.shape[0],
                          generator=torch.Generator().manual_seed(1000 + args.seed))[:per_rank]
    momentum, state = attach(args.method, ddp, model, (x[head], y[head]), args.lr)
    solve = "-impkc-" in args.method
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=momentum)
    order = torch.Generator().manual_seed(1000 + args.seed)
    rows, trained, step, solving = [], 0.0, 0, 0.0
    start_bytes = link_bytes()
    for epoch in range(args.epochs):
        perm = torch.randperm(x.shape[0], generator=order)
        for first in range(0, x.shape[0] - args.batch + 1, args.batch):
            idx = perm[first + rank * per_rank:first + (rank + 1) * per_rank]
            t0 = time.perf_counter()
            opt.zero_grad()
            if solve and first == 0:  # the thesis' solve at the start of every epoch
                state.importance_step(ddp, lambda: nn.functional.cross_entropy(ddp(x[idx]),
                                                                                y[idx]),
                                      steps=SOLVER_STEPS)
                solving += time.perf_counter() - t0
            nn.functional.cross_entropy(ddp(x[idx]), y[idx]).backward()
            opt.step()
            dist.barrier()
            trained += time.perf_counter() - t0
            step += 1
            if step % args.eval_every == 0:
                sent = link_bytes() - start_bytes
                if rank == 0:
                    with torch.no_grad():
                        acc = (model(tx).argmax(1) == ty).float().mean().item()
                    rows.append("%s,%d,%d,%.3f,%.4f,%d" % (args.method, args.seed, step,
                                                           trained, acc, sent))
                    print(rows[-1], flush=True)
                dist.barrier()
    if rank == 0:
        with open(args.csv, "a") as f:
            f.write("".join(r + "\n" for r in rows))
        if solve:
            print("importance_step: %.2f s of the %.2f training s" % (solving, trained))
    if state is not None:
        state.close()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=METHODS, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=12800)
    ap.add_argument("--test-limit", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128, help="global batch (both ranks)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--eval-every", type=int, default=20)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, args, port), nprocs=2)


if __name__ == "__main__":
    main()
