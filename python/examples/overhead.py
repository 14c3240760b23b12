#!/usr/bin/env python3
"""The Python binding's cost per call, against the forward it wraps.

Times one layer's forward at T=1 (decode), in one run, on one context:

  binding   layer(x, out=y): the package's checks, pointer look-ups and the C call
  ctypes    lib.moe_layer_forward with its arguments prepared once: the C call alone, through
            ctypes (about a microsecond over a call from C)
  moe-bench (with --moe-bench PATH) the C benchmark's median at the same shape and backend: a
            direct C call, no Python at all

The forward's own time varies from call to call by more than the binding costs, so the binding's
cost is also measured alone, on a tiny layer whose forward takes microseconds (binding minus
ctypes there), and printed as a share of the forward at the given shape.

    python3 python/examples/overhead.py --backend cpu --moe-bench build/moe-bench
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np

import moe
from moe._capi import lib


def median_us(fn, iters):
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def time_layer(ctx, D, F, E, K, weights, iters):
    """Medians (us) of a T=1 forward through the binding and through bare ctypes, interleaved in
    rounds so that drift (clocks, caches) falls on both alike."""
    rng = np.random.default_rng(42)
    w = {"router": rng.standard_normal((E, D), dtype=np.float32),
         "gate": rng.standard_normal((E, F, D), dtype=np.float32) / np.float32(np.sqrt(D)),
         "up": rng.standard_normal((E, F, D), dtype=np.float32) / np.float32(np.sqrt(D)),
         "down": rng.standard_normal((E, D, F), dtype=np.float32) / np.float32(np.sqrt(F))}
    layer = ctx.layer(w, d_model=D, d_ff=F, n_experts=E, top_k=K, max_tokens=1, renormalize=True,
                      weight_dtype=weights)
    del w
    x = rng.standard_normal((1, D), dtype=np.float32)
    y = np.empty_like(x)
    for _ in range(10):  # warm-up: the first forward compiles or packs what it needs
        layer(x, out=y)
    handle, xp, yp = layer._h(), x.ctypes.data, y.ctypes.data
    forward = lib.moe_layer_forward

    def raw():
        if forward(handle, 1, xp, yp, None) != 0:
            raise RuntimeError(lib.moe_last_error())

    rounds = 5
    binding, bare = [], []
    for _ in range(rounds):
        binding.append(median_us(lambda: layer(x, out=y), max(iters // rounds, 1)))
        bare.append(median_us(raw, max(iters // rounds, 1)))
    layer.close()
    return statistics.median(binding), statistics.median(bare)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="cpu", help="cpu, vulkan, opencl or auto (default cpu)")
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--d-ff", type=int, default=2816)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--weights", default="f32", help="storage format of the experts (default f32)")
    p.add_argument("--iters", type=int, default=100, help="timed calls per variant (default 100)")
    p.add_argument("--moe-bench", metavar="PATH", help="moe-bench to time the same shape with, from C")
    a = p.parse_args()

    ctx = moe.Context(a.backend)
    b, c = time_layer(ctx, a.d_model, a.d_ff, a.experts, a.top_k, a.weights, a.iters)
    tiny_b, tiny_c = time_layer(ctx, 32, 32, 4, 2, "f32", 2000)
    own = tiny_b - tiny_c
    D, F, E, K = a.d_model, a.d_ff, a.experts, a.top_k

    print(f"moe {moe.version()} on {ctx.backend} ({ctx.device.name}); T=1, d_model={D}, d_ff={F}, "
          f"{E} experts, top-{K}, weights {a.weights}; median of {a.iters} calls each")
    print(f"  binding  layer(x, out=y)          {b:10.1f} us")
    print(f"  ctypes   moe_layer_forward only   {c:10.1f} us")
    base = c
    if a.moe_bench:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "bench.json")
            cmd = [a.moe_bench, "--backend", ctx.backend, "--tokens", "1", "--d-model", str(D), "--d-ff", str(F),
                   "--experts", str(E), "--top-k", str(K), "--weights", a.weights, "--no-ref", "--no-bandwidth",
                   "--iters", str(a.iters)]
            subprocess.run(cmd + ["--json", out], check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, MOE_BENCH_NO_PROGRESS="1"))
            with open(out) as f:
                base = json.load(f)[0]["latency_ms"]["median"] * 1e3
        print(f"  C        moe-bench median         {base:10.1f} us   (moe-bench {' '.join(cmd[1:])})")
    print(f"the binding's own cost, on a tiny layer (d_model 32, 4 experts): {tiny_b:.1f} us through the "
          f"binding, {tiny_c:.1f} us through bare ctypes")
    print(f"overhead per call: {own:.1f} us = {100.0 * own / base:.3f}% of the forward above")
    ctx.close()


if __name__ == "__main__":
    main()
