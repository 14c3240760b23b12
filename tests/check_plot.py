#!/usr/bin/env python3
"""check_plot.py — tools/moe-plot keeps apart what moe-bench ran side by side: results that
differ only in weight format, activations, experts on a CPU context or expert cache are
different bars (and sweep lines), none overwriting another; both charts are written.

usage: check_plot.py MOE_PLOT WORKDIR   (exit 77, skipped, without matplotlib)"""
import importlib.machinery
import importlib.util
import json
import os
import sys


def main():
    plot_path, work = sys.argv[1], sys.argv[2]
    loader = importlib.machinery.SourceFileLoader("moe_plot", plot_path)
    spec = importlib.util.spec_from_loader("moe_plot", loader)
    mp = importlib.util.module_from_spec(spec)
    loader.exec_module(mp)

    base = {"kind": "forward", "backend": "cpu", "device": "Some CPU", "device_index": 0, "isa": "avx2",
            "preset": "olmoe-1b-7b", "weight_dtype": "f32", "activation_dtype": "f32", "cpu_experts": 0,
            "cache_slots": 0, "cache_policy": None, "version": "0", "commit": "x"}
    variants = [{}, {"weight_dtype": "q4_0"}, {"weight_dtype": "q8_0", "activation_dtype": "q8_0"},
                {"cpu_experts": 32}, {"cpu_experts": 32, "cache_slots": 8, "cache_policy": "lru"},
                {"cpu_experts": 32, "cache_slots": 8, "cache_policy": "lfu"}]
    results = []
    for i, v in enumerate(variants):
        for tokens in (1, 8):
            o = dict(base, **v)
            o.update(tokens=tokens, gflops=1.0 + i + tokens, tokens_per_s=10.0 * (i + 1) * tokens)
            results.append(o)
    labels = [mp.target(o) for o in results if o["tokens"] == 1]
    assert len(set(labels)) == len(variants), labels
    assert labels[0] == "cpu 0 (Some CPU, avx2)", labels[0]  # a plain float32 run: no suffix
    assert "q4_0" in labels[1] and "act q8_0" in labels[2], labels
    assert "32 experts on cpu" in labels[3] and "cache 8 lru" in labels[4] and "cache 8 lfu" in labels[5], labels
    for label in labels:
        print("ok: moe-plot label: " + label)

    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: the charts are not drawn (skipped)")
        return 77
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "results.json")
    with open(data, "w", encoding="utf-8") as f:
        json.dump(results, f)
    bars = []
    real_bar = plt.Axes.bar

    def counting_bar(self, xs, ys, *args, **kwargs):
        bars.append((kwargs.get("label"), list(ys)))
        return real_bar(self, xs, ys, *args, **kwargs)

    plt.Axes.bar = counting_bar
    try:
        mp.plot_gflops(plt, mp.load([data]), os.path.join(work, "gflops.png"), None)
        mp.plot_sweep(plt, mp.load([data]), os.path.join(work, "sweep.png"), None)
    finally:
        plt.Axes.bar = real_bar
    # One bar series per variant, each with its own values at both token counts.
    assert len(bars) == len(variants), bars
    assert sorted(v for _, ys in bars for v in ys) == sorted(o["gflops"] for o in results), bars
    for name in ("gflops.png", "sweep.png"):
        assert os.path.getsize(os.path.join(work, name)) > 1000, name
    print("ok: %d bar series, both charts written in %s" % (len(bars), work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
