#!/usr/bin/env python3
"""Writes powersgd_torch.json: what PyTorch's own powerSGD_hook does to known
gradients, for TestPowerSGDMatchesTorch to compare a Reducer with.

Two processes (gloo, on 127.0.0.1) train a DistributedDataParallel module
with the hook registered. Each parameter's loss is sum(param * G), so its
gradient is exactly G, a matrix drawn per member and step. After each
backward the gradient DDP leaves is the hook's result (the average over the
members). The first Q the hook draws (torch.randn, before it
orthogonalises) is recorded, so that the Go test can start from the same Q.

Run (Debian's python3-torch; no network):

    /usr/bin/python3 allreduce/testdata/powersgd_torch.py > allreduce/testdata/powersgd_torch.json
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ph
from torch.nn.parallel import DistributedDataParallel as DDP

WORLD = 2
RANK = 4  # matrix_approximation_rank
START = 2  # start_powerSGD_iter (the hook wants at least 2 with error feedback)
STEPS = 6
SEED = 11  # the hook's random_seed
# name, shape: compressed at rank 4 (24x16, 16x4x5 seen as 16x20, 20x24) and uncompressed (a vector; 4x6 and 3x30 fail
# min_compression_rate).
SHAPES = [
    ("w1", (24, 16)),
    ("b1", (10,)),
    ("conv", (16, 4, 5)),
    ("small", (4, 6)),
    ("thin", (3, 30)),
    ("w2", (20, 24)),
]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ps = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(s)) for _, s in SHAPES])

    def forward(self, gs):
        return sum((p * g).sum() for p, g in zip(self.ps, gs))


def grads(rank, step):
    """Gradients of member rank at step: a part shared by the members and a
    part of its own, so that the average differs from each."""
    shared = np.random.RandomState(1000 + step)
    own = np.random.RandomState(2000 + 100 * step + rank)
    out = []
    for _, s in SHAPES:
        g = shared.standard_normal(s) + 0.5 * own.standard_normal(s)
        out.append(torch.tensor(g, dtype=torch.float32))
    return out


def f32(t):
    """The float32 values of t in their shortest decimal form, marked for
    main to write as JSON numbers."""
    return ["@%s@" % v for v in t.numpy()]


def worker(rank, path, q):
    dist.init_process_group("gloo", init_method="file://" + path,
                            rank=rank, world_size=WORLD)
    drawn = []
    randn = torch.randn

    def recording_randn(*a, **k):
        t = randn(*a, **k)
        drawn.append(t.clone())
        return t

    torch.randn = recording_randn
    net = DDP(Net())
    state = ph.PowerSGDState(
        process_group=None, matrix_approximation_rank=RANK,
        start_powerSGD_iter=START, min_compression_rate=2,
        use_error_feedback=True, warm_start=True,
        orthogonalization_epsilon=0, random_seed=SEED)
    net.register_comm_hook(state, ph.powerSGD_hook)
    steps = []
    for step in range(STEPS):
        gs = grads(rank, step)
        net.zero_grad()
        net(gs).backward()
        steps.append({
            "grads": f32(torch.cat([g.flatten() for g in gs])),
            "out": f32(torch.cat([p.grad.flatten() for p in net.module.ps])),
        })
    q.put((rank, steps, [f32(t.flatten()) for t in drawn],
           [list(t.shape) for t in drawn]))
    dist.destroy_process_group()


def main():
    torch.set_num_threads(1)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "store")
        ps = [ctx.Process(target=worker, args=(r, path, q)) for r in range(WORLD)]
        for p in ps:
            p.start()
        res = sorted(q.get() for _ in ps)
        for p in ps:
            p.join()
            if p.exitcode != 0:
                sys.exit("a worker failed")
    # Every member draws the same Qs (the hook's seeded generator).
    if res[0][2] != res[1][2]:
        sys.exit("members drew different Qs")
    for s in range(STEPS):
        if res[0][1][s]["out"] != res[1][1][s]["out"]:
            sys.exit("members disagree on step %d" % s)
    out = {
        "torch": torch.__version__,
        "world": WORLD, "rank": RANK, "start": START,
        "tensors": [{"name": n, "shape": list(s)} for n, s in SHAPES],
        "q0": [{"shape": s, "values": v} for v, s in zip(res[0][2], res[0][3])],
        "steps": [{"grads": [r[1][s]["grads"] for r in res], "out": res[0][1][s]["out"]}
                  for s in range(STEPS)],
    }
    # float32 values in their shortest form (json.dump would print the
    # float64 they widen to, twice as long).
    text = json.dumps(out, separators=(",", ":"))
    sys.stdout.write(text.replace('"@', "").replace('@"', "") + "\n")


if __name__ == "__main__":
    main()
