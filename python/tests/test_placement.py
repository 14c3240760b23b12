"""Experts placed on several contexts (moe.Placement): every backend's context beside a CPU one,
against the independent NumPy forward and the one-context layer; budgets; misuse; checkpoints;
threads sharing the contexts."""

import os
import threading

import numpy as np
import pytest

import moe
from numpy_moe import forward as numpy_forward
from test_layer import FAMILIES, SEED, random_layer, rel_l2

HF = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "hf-moe")


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss"])
def test_alternate_experts_match_numpy(ctx, cpu, family):
    cfg, T = FAMILIES[family]
    rng = np.random.default_rng([SEED, 7, sorted(FAMILIES).index(family)])
    w = random_layer(cfg, rng)
    x = rng.standard_normal((T, cfg["d_model"])).astype(np.float32)
    E = cfg["n_experts"]
    where = [e % 2 for e in range(E)]
    placed = moe.Layer(moe.Placement([cpu, ctx], expert_context=where), w, max_tokens=T, **cfg)
    assert placed.placement == where
    assert placed.context is cpu
    y, r = placed.forward(x, routing=True)
    want, ids, wts, counts, dropped, aux, z = numpy_forward(cfg, w, x)
    assert rel_l2(y, want) <= 1e-4, f"{family}: relative L2 error {rel_l2(y, want):.3g}"
    np.testing.assert_array_equal(r.expert_counts, counts)
    assert r.aux_loss == pytest.approx(aux, rel=1e-4)
    one = cpu.layer(w, max_tokens=T, **cfg)
    if ctx.backend == "cpu":  # two CPU contexts: the one-context result, bit for bit
        np.testing.assert_array_equal(y, one(x))
    assert one.placement == [0] * E


def test_budgets_fill_in_order(ctx, cpu):
    cfg, T = FAMILIES["olmoe"]
    rng = np.random.default_rng([SEED, 8])
    w = random_layer(cfg, rng)
    x = rng.standard_normal((T, cfg["d_model"])).astype(np.float32)
    E = cfg["n_experts"]
    order = [int(e) for e in rng.permutation(E)]
    # What three experts take on ctx, measured: a layer with only them there.
    before = ctx.arena_stats().weights_bytes
    three = moe.Layer(moe.Placement([cpu, ctx], expert_context=[1 if e < 3 else 0 for e in range(E)]), w,
                      max_tokens=T, **cfg)
    budget = ctx.arena_stats().weights_bytes - before
    three.close()
    layer = moe.Layer(moe.Placement([ctx, cpu], home=1, budget_bytes=[budget, None], expert_order=order), w,
                      max_tokens=T, **cfg)
    assert ctx.arena_stats().weights_bytes - before <= budget
    assert [e for e in range(E) if layer.placement[e] == 0] == sorted(order[:3])
    want = numpy_forward(cfg, w, x)[0]
    assert rel_l2(layer(x), want) <= 1e-4


def test_misuse_is_refused(ctx, cpu):
    cfg, T = FAMILIES["mixtral"]
    w = random_layer(cfg, np.random.default_rng([SEED, 9]))
    E = cfg["n_experts"]
    with pytest.raises(moe.InvalidArgumentError, match="same context"):
        moe.Layer(moe.Placement([cpu, cpu], expert_context=[0] * E), w, max_tokens=T, **cfg)
    with pytest.raises(moe.InvalidArgumentError, match="expert_context"):
        moe.Layer(moe.Placement([cpu, ctx], expert_context=[5] * E), w,
                  max_tokens=T, **cfg)
    with pytest.raises(moe.InvalidArgumentError, match="budget_bytes"):
        moe.Layer(moe.Placement([cpu]), w, max_tokens=T, **cfg)
    with pytest.raises(moe.OutOfMemoryError, match="budget"):
        moe.Layer(moe.Placement([cpu], budget_bytes=[0]), w, max_tokens=T, **cfg)
    with pytest.raises(ValueError, match="home"):
        moe.Layer(moe.Placement([cpu], home=3, expert_context=[0] * E), w, max_tokens=T, **cfg)
    with pytest.raises(TypeError, match="moe.Context"):
        moe.Layer(moe.Placement([cpu, "gpu"], expert_context=[0] * E), w, max_tokens=T, **cfg)
    layer = moe.Layer(moe.Placement([cpu], expert_context=[0] * E), w, max_tokens=T, **cfg)
    xb, yb = cpu.buffer(T * cfg["d_model"]), cpu.buffer(T * cfg["d_model"])
    with pytest.raises(moe.UnsupportedError, match="several contexts"):
        layer.forward_async(T, xb, yb)


def test_checkpoint_placed(ctx, cpu):
    model = moe.Model(os.path.join(HF, "qwen2_moe_T6_d32_f40_E8_k2"))
    x = np.load(os.path.join(HF, "qwen2_moe_T6_d32_f40_E8_k2", "x.npy"))
    want = np.load(os.path.join(HF, "qwen2_moe_T6_d32_f40_E8_k2", "y_ref.npy"))
    layer = model.layer(moe.Placement([cpu, ctx], budget_bytes=[0, None]), 0, max_tokens=len(x))
    assert layer.placement == [1] * model.n_experts
    assert rel_l2(layer(x), want) <= 1e-4


def test_threads_share_the_contexts(cpu):
    """Two layers placed over the same two contexts, each called from its own thread: the
    contexts' locks keep one thread in each context at a time (moe.h), results unchanged."""
    cfg, T = FAMILIES["mixtral"]
    rng = np.random.default_rng([SEED, 10])
    with moe.Context("cpu", threads=1) as other:
        layers, xs, wants = [], [], []
        for i in range(2):
            w = random_layer(cfg, rng)
            xs.append(rng.standard_normal((T, cfg["d_model"])).astype(np.float32))
            where = [(e + i) % 2 for e in range(cfg["n_experts"])]
            layers.append(moe.Layer(moe.Placement([cpu, other], expert_context=where), w, max_tokens=T, **cfg))
            wants.append(layers[-1](xs[-1]))
        errors = []

        def run(i):
            try:
                for _ in range(20):
                    np.testing.assert_array_equal(layers[i](xs[i]), wants[i])
            except Exception as e:  # reported below, on the main thread
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
