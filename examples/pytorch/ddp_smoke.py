"""ddp_smoke.py: a few DDP steps with the sparccl hook, one process, backend nccl.

    SPARCCL_LIB=build/lib/libsparccl_cuda.so SPARCCL_DEBUG=INFO python3 examples/pytorch/ddp_smoke.py

Run by tools/gpu_preload_check.sh on a GPU machine.  World size 1 (one GPU): the sparccl
average of a bucket is then its own compressed gradient, so after each step every layer
holds about density * d nonzeros (TopK + EF) -- the check here.  DDP rebuilds its buckets
after the first step; the hook's keys are per parameter, so nothing changes for sparccl.
The path it exercises: a device comm, the phase API on the current stream around torch's
own NCCL all_gather (python/sparccl/hook.py).
Prints one line per step and the comm's counters; exits 1 if the hook did not run.
"""
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparccl_hook import SparcclOptions, SparcclState, sparccl_hook  # noqa: E402


def main():
    density = float(os.environ.get("DENSITY", "0.01"))
    steps = int(os.environ.get("STEPS", "4"))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                          nn.Linear(2048, 10)).cuda()
    # Small buckets: several of them, so that the rebuild after step 1 changes some.
    ddp = DDP(model, device_ids=[0], bucket_cap_mb=4)
    state = SparcclState(options=SparcclOptions(density=density, compressor="topk",
                                                feedback="ef"))
    ddp.register_comm_hook(state, sparccl_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)

    min_sparse = state.lib.comm_get_config(state.comm).minSparseCount
    ok = True
    for step in range(steps):
        x = torch.randn(64, 1024, device="cuda")
        y = torch.randint(0, 10, (64,), device="cuda")
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        torch.cuda.synchronize()
        worst = 0.0
        for name, p in model.named_parameters():
            d = p.grad.numel()
            nz = int((p.grad != 0).sum())
            # TopK sends ceil(density * d) per layer; layers under SPARCCL_MIN_SPARSE go dense.
            if d >= min_sparse:
                worst = max(worst, nz / d)
        print("step %d loss %.4f largest nonzero fraction of a big layer %.4f (density %.4f)"
              % (step, loss.item(), worst, density))
        if worst > 2 * density + 1e-6:
            ok = False
        opt.step()

    stats = state.stats()
    print("sparccl stats: calls %d, bytes sent %d of %d dense (%.2f%%), live keys %d"
          % (stats["calls"], stats["bytesSent"], stats["bytesDense"],
             100.0 * stats["bytesSent"] / max(1, stats["bytesDense"]), stats["layerSets"]))
    ok = ok and stats["calls"] > 0
    state.close()
    dist.destroy_process_group()
    print("DDP + sparccl hook, world size 1: %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
