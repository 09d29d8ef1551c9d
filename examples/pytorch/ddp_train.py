"""ddp_train.py: a plain DDP training script with the three sparccl lines, for torchrun.

    python3 -m torch.distributed.run --standalone --nproc_per_node 2 examples/pytorch/ddp_train.py
    python3 -m torch.distributed.run --standalone --nproc_per_node 2 examples/pytorch/ddp_train.py \
        --backend nccl        # one GPU per process

The sparccl package must be importable (`pip install ./python`, or PYTHONPATH=python).  A
small MLP learns a fixed random linear map on random data; DDP uses several buckets
(bucket_cap_mb 0.05).  At the end it prints the sparccl counters and checks, on every rank,
that the parameters are bitwise identical everywhere and that the steps after the warm-up
sent a small part of the dense bytes; exits 1 otherwise.
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="gloo")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=5, help="dense steps first (SPEC 9)")
    ap.add_argument("--hook", choices=("sparccl", "dense"), default="sparccl",
                    help="dense: DDP's own allreduce, for the time per step beside it")
    args = ap.parse_args()

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    torch.set_num_threads(1)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 16)).to(device)
    target = (torch.randn(256, 16, generator=torch.Generator().manual_seed(1)) / 16).to(device)
    ddp = DDP(model, bucket_cap_mb=0.05, device_ids=[device.index] if device.index is not None
              else None)

    # ------------------------------------------------ the three lines
    from sparccl import SparcclOptions, SparcclState, sparccl_hook
    state = SparcclState(options=SparcclOptions(density=args.density, warmup_steps=args.warmup))
    if args.hook == "sparccl":
        ddp.register_comm_hook(state, sparccl_hook)
    # ------------------------------------------------

    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(100 + rank)
    sent_after_warmup = dense_after_warmup = 0
    seconds = 0.0
    for step in range(args.steps):
        start = time.perf_counter()
        x = torch.randn(64, 256, generator=data).to(device)
        y = x @ target
        before = state.stats()
        opt.zero_grad()
        loss = (ddp(x) - y).square().mean()
        loss.backward()
        opt.step()
        if step >= args.warmup:
            seconds += time.perf_counter() - start
        after = state.stats()
        if step >= args.warmup:
            sent_after_warmup += after["bytesSent"] - before["bytesSent"]
            dense_after_warmup += after["bytesDense"] - before["bytesDense"]
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print("step %3d loss %.5f" % (step, loss.item()), flush=True)

    stats = state.stats()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()
    every = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(every, flat.to(device) if args.backend == "nccl" else flat)
    identical = all(torch.equal(every[0].cpu().view(torch.int32), e.cpu().view(torch.int32))
                    for e in every)
    ratio = sent_after_warmup / max(1, dense_after_warmup)
    sparse = ratio < 10 * args.density + 0.05 or args.hook == "dense"
    if rank == 0:
        print("sparccl: %d calls on %d keys, %d bytes sent of %d dense; after the warm-up "
              "%.2f%% of dense" % (stats["calls"], stats["layerSets"], stats["bytesSent"],
                                   stats["bytesDense"], 100 * ratio))
        print("%s: %.2f ms a step after the warm-up (mean of %d)"
              % (args.hook, 1e3 * seconds / max(1, args.steps - args.warmup),
                 args.steps - args.warmup))
        print("replicas bitwise identical on %d ranks: %s; sparse after the warm-up: %s"
              % (world, identical, sparse))
    state.close()
    dist.destroy_process_group()
    return 0 if identical and sparse else 1


if __name__ == "__main__":
    sys.exit(main())
