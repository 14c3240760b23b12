"""Layers from NumPy arrays against the independent NumPy forward (numpy_moe.py), one routing
family each, on every backend; fresh random inputs on each run (the seed is printed)."""

import os

import numpy as np
import pytest

import moe
from numpy_moe import forward as numpy_forward

SEED = int(os.environ.get("MOE_TEST_SEED", np.random.SeedSequence().entropy % (1 << 32)))
print(f"python tests: seed {SEED} (replay with MOE_TEST_SEED={SEED})")

# Each family's settings (moe_layer_desc's names) and its token count.
FAMILIES = {
    "mixtral": (dict(d_model=48, d_ff=80, n_experts=8, top_k=2, renormalize=True), 7),
    "olmoe": (dict(d_model=40, d_ff=24, n_experts=32, top_k=8), 9),
    "qwen2_moe": (dict(d_model=32, d_ff=40, n_experts=8, top_k=2, d_ff_shared=56, shared_expert_gate=True), 6),
    "deepseek_v3": (dict(d_model=36, d_ff=20, n_experts=16, top_k=4, score_func="sigmoid", n_group=4,
                         topk_group=2, has_selection_bias=True, renormalize=True, routed_scaling_factor=2.5,
                         d_ff_shared=40), 8),
    "deepseek_v2": (dict(d_model=36, d_ff=20, n_experts=16, top_k=3, n_group=4, topk_group=2, group_score="max",
                         routed_scaling_factor=16.0, d_ff_shared=20), 5),
    "switch_zero": (dict(d_model=32, d_ff=48, n_experts=4, top_k=1, activation="relu", expert_capacity=2), 12),
    "switch_passthrough": (dict(d_model=32, d_ff=48, n_experts=4, top_k=1, activation="relu", expert_capacity=2,
                                drop_policy="passthrough"), 12),
    "geglu_gelu_shared": (dict(d_model=40, d_ff=33, n_experts=6, top_k=2, activation="geglu", d_ff_shared=17), 5),
    "gelu": (dict(d_model=24, d_ff=31, n_experts=5, top_k=2, activation="gelu"), 4),
    "gpt_oss": (dict(d_model=64, d_ff=64, n_experts=8, top_k=4, renormalize=True, activation="swiglu_oai",
                     router_has_bias=True, expert_has_bias=True, swiglu_limit=0.75, swiglu_alpha=1.5), 7),
    "one_token": (dict(d_model=64, d_ff=96, n_experts=16, top_k=4, renormalize=True), 1),
}


def random_layer(cfg, rng):
    """Weights for cfg: experts scaled so products are O(1)."""
    E, D, F, S = cfg["n_experts"], cfg["d_model"], cfg["d_ff"], cfg.get("d_ff_shared", 0)
    gated = cfg.get("activation", "swiglu") in ("swiglu", "geglu", "swiglu_oai")

    def m(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[-1])).astype(np.float32)

    w = {"router": m(E, D, scale=3.0), "up": m(E, F, D, scale=2.0), "down": m(E, D, F, scale=2.0)}
    if gated:
        w["gate"] = m(E, F, D, scale=2.0)
    if cfg.get("has_selection_bias") or cfg.get("router_has_bias"):
        w["router_bias"] = (rng.standard_normal(E) * 0.3).astype(np.float32)
    if S:
        w["shared_up"], w["shared_down"] = m(S, D, scale=2.0), m(D, S, scale=2.0)
        if gated:
            w["shared_gate"] = m(S, D, scale=2.0)
        if cfg.get("shared_expert_gate"):
            w["shared_expert_gate"] = m(D)
    if cfg.get("expert_has_bias"):
        w["up_bias"] = (rng.standard_normal((E, F)) * 0.2).astype(np.float32)
        w["down_bias"] = (rng.standard_normal((E, D)) * 0.2).astype(np.float32)
        if gated:
            w["gate_bias"] = (rng.standard_normal((E, F)) * 0.2).astype(np.float32)
    return w


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_matches_numpy(ctx, family):
    cfg, T = FAMILIES[family]
    rng = np.random.default_rng([SEED, sorted(FAMILIES).index(family)])
    w = random_layer(cfg, rng)
    x = rng.standard_normal((T, cfg["d_model"])).astype(np.float32)
    layer = ctx.layer(w, max_tokens=T + 3, **cfg)
    y, r = layer.forward(x, routing=True)
    want, ids, wts, counts, dropped, aux, z = numpy_forward(cfg, w, x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert rel_l2(y, want) <= 1e-4, f"{family}: relative L2 error {rel_l2(y, want):.3g}"
    np.testing.assert_array_equal(r.topk_ids, ids)
    np.testing.assert_allclose(r.topk_weights, wts, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(r.expert_counts, counts)
    assert r.dropped == dropped
    assert r.aux_loss == pytest.approx(aux, rel=1e-4)
    assert r.z_loss == pytest.approx(z, rel=1e-4)
    assert r.device_ms >= 0.0
    # The plain call gives the same bits, and `out=` receives them.
    out = np.full_like(x, np.nan)
    layer(x, out=out)
    np.testing.assert_array_equal(out, y)


def test_formats_match_their_dequantised_weights(ctx):
    """Experts stored in each format give the NumPy forward of the weights the format keeps
    (their round trip through moe.convert_row)."""
    cfg = dict(d_model=64, d_ff=64, n_experts=4, top_k=2, renormalize=True)
    rng = np.random.default_rng([SEED, 100])
    w = random_layer(cfg, rng)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    for fmt in ("f16", "bf16", "q8_0", "q4_0", "mxfp4"):
        y = ctx.layer(w, max_tokens=5, weight_dtype=fmt, **cfg)(x)
        deq = dict(w)
        for name in ("gate", "up", "down"):
            rows = w[name].reshape(-1, 64)
            deq[name] = np.stack([moe.convert_row(moe.convert_row(r, "f32", fmt), fmt, "f32", n=64)
                                  for r in rows]).reshape(w[name].shape)
        want = numpy_forward(cfg, deq, x)[0]
        assert rel_l2(y, want) <= 1e-4, f"{fmt}: relative L2 error {rel_l2(y, want):.3g}"


def test_pre_quantised_rows_are_read_unchanged(ctx):
    """uint8 rows in a block format (as a GGUF file holds them) give the same layer as float
    weights quantised at upload."""
    cfg = dict(d_model=64, d_ff=32, n_experts=4, top_k=2)
    rng = np.random.default_rng([SEED, 101])
    w = random_layer(cfg, rng)
    q = dict(w)
    for name in ("gate", "up", "down"):
        rows = w[name].reshape(-1, w[name].shape[-1])
        q[name] = np.stack([moe.convert_row(r, "f32", "q8_0") for r in rows])
    x = rng.standard_normal((3, 64)).astype(np.float32)
    a = ctx.layer(w, max_tokens=3, weight_dtype="q8_0", **cfg)(x)
    b = ctx.layer(q, max_tokens=3, input_dtype="q8_0", **cfg)(x)
    np.testing.assert_array_equal(a, b)


def test_device_buffers_chain(ctx):
    """Two layers chained on device buffers, asynchronously, equal the host forwards."""
    cfg = dict(d_model=32, d_ff=40, n_experts=8, top_k=2)
    rng = np.random.default_rng([SEED, 102])
    l1 = ctx.layer(random_layer(cfg, rng), max_tokens=4, **cfg)
    l2 = ctx.layer(random_layer(cfg, rng), max_tokens=4, **cfg)
    x = rng.standard_normal((4, 32)).astype(np.float32)
    want = l2(l1(x))
    a, b, c = ctx.buffer(x.size), ctx.buffer(x.size), ctx.buffer(x.size)
    assert len(a) == x.size
    a.write(x)
    l1.forward_async(4, a, b)
    l2.forward_async(4, b, c)
    ctx.wait()
    np.testing.assert_array_equal(c.read().reshape(x.shape), want)
    r = l1.forward_buffers(4, a, b, routing=True)
    assert r.topk_ids.shape == (4, 2)


class _DLPackOnly:
    """An array that offers nothing but DLPack (as JAX's or another library's CPU arrays do)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_and_buffer_protocol_inputs(ctx):
    """Weights and x handed over by DLPack or the buffer protocol give the NumPy arrays' bits."""
    cfg = dict(d_model=32, d_ff=40, n_experts=8, top_k=2)
    rng = np.random.default_rng([SEED, 103])
    w = random_layer(cfg, rng)
    x = rng.standard_normal((3, 32)).astype(np.float32)
    want = ctx.layer(w, max_tokens=3, **cfg)(x)
    layer = ctx.layer({k: _DLPackOnly(v) for k, v in w.items()}, max_tokens=3, **cfg)
    np.testing.assert_array_equal(layer(_DLPackOnly(x)), want)
    view = memoryview(x.copy()).cast("B").cast("f", shape=list(x.shape))
    np.testing.assert_array_equal(layer(view), want)


def test_torch_tensors_in_and_out(ctx):
    """CPU PyTorch tensors (float32 and bfloat16 experts) are read in place; a tensor in gives
    a tensor out, and out= may be a tensor."""
    torch = pytest.importorskip("torch")
    cfg = dict(d_model=32, d_ff=40, n_experts=8, top_k=2)
    rng = np.random.default_rng([SEED, 104])
    w = random_layer(cfg, rng)
    x = rng.standard_normal((3, 32)).astype(np.float32)
    want = ctx.layer(w, max_tokens=3, **cfg)(x)
    tw = {k: torch.from_numpy(v) for k, v in w.items()}
    layer = ctx.layer(tw, max_tokens=3, **cfg)
    y = layer(torch.from_numpy(x))
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), want)
    out = torch.full((3, 32), float("nan"))
    assert layer(torch.from_numpy(x), out=out) is out
    np.testing.assert_array_equal(out.numpy(), want)
    # bfloat16 experts are stored as BF16: the same as float32 experts converted by the library.
    bw = dict(tw, **{k: tw[k].to(torch.bfloat16) for k in ("gate", "up", "down")})
    a = ctx.layer(bw, max_tokens=3, **cfg)(x)
    b = ctx.layer(w, max_tokens=3, weight_dtype="bf16", **cfg)(x)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="C-contiguous"):
        layer(torch.from_numpy(x).t().contiguous().t())


def test_batch_and_sequence_axes(ctx):
    """x [batch, seq, d_model], as a PyTorch block takes it, is its rows in order: the same bits
    as the flat [tokens, d_model] forward, in x's shape, and the routing per row."""
    cfg = dict(d_model=32, d_ff=40, n_experts=8, top_k=2)
    rng = np.random.default_rng([SEED, 105])
    layer = ctx.layer(random_layer(cfg, rng), max_tokens=6, **cfg)
    x = rng.standard_normal((2, 3, 32)).astype(np.float32)
    want, r_flat = layer.forward(x.reshape(6, 32), routing=True)
    y, r = layer.forward(x, routing=True)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y.reshape(6, 32), want)
    np.testing.assert_array_equal(r.topk_ids, r_flat.topk_ids)
    with pytest.raises(moe.InvalidArgumentError, match="max_tokens"):
        layer(np.zeros((2, 4, 32), np.float32))
