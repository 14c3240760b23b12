"""A placed layer's expert cache from Python (moe.ExpertCache, Layer.cache_stats, Layer.context_ms):
every expert on a CPU context, the slots on the backend under test (the home), against the
independent NumPy forward; scripted traces whose counts and slots are worked out by hand from
moe.h's rules; budgets; misuse; a checkpoint; the arrays a cached layer uploads from."""

import gc
import os
import weakref

import numpy as np
import pytest

import moe
from numpy_moe import forward as numpy_forward
from test_layer import FAMILIES, SEED, random_layer, rel_l2

HF = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "hf-moe")
STEERED = dict(d_model=32, d_ff=24, n_experts=8, top_k=1, renormalize=True)


def cached(ctx, cpu, w, cfg, T, cache, order=None):
    """A layer with every expert on `cpu` and the cache on `ctx`, the home (contexts [ctx, cpu])."""
    where = [1] * cfg["n_experts"]
    return moe.Layer(moe.Placement([ctx, cpu], expert_context=where, expert_order=order, cache=cache), w,
                     max_tokens=T, **cfg)


def steered_layer(rng):
    """Router row e weighs only input feature e: a token whose feature e is 1 (the first E zero
    otherwise) is routed to e alone, by a clear margin."""
    w = random_layer(STEERED, rng)
    w["router"][:] = 0.0
    for e in range(STEERED["n_experts"]):
        w["router"][e, e] = 8.0
    return w


def tokens_to(experts, rng):
    x = rng.standard_normal((len(experts), STEERED["d_model"])).astype(np.float32)
    x[:, : STEERED["n_experts"]] = 0.0
    x[np.arange(len(experts)), experts] = 1.0
    return x


@pytest.mark.parametrize("family", ["mixtral", "gpt_oss"])
def test_cached_layer_matches_numpy(ctx, cpu, family):
    cfg, T = FAMILIES[family]
    rng = np.random.default_rng([SEED, 20, sorted(FAMILIES).index(family)])
    w = random_layer(cfg, rng)
    E, k = cfg["n_experts"], cfg["top_k"]
    layer = cached(ctx, cpu, w, cfg, T, moe.ExpertCache(context=0, slots=3))
    one = cpu.layer(w, max_tokens=T, **cfg)
    routed_in = np.zeros(E, np.int64)  # forwards that routed rows to each expert
    rows = 0
    for n in (T, 1, 4, T):
        x = rng.standard_normal((n, cfg["d_model"])).astype(np.float32)
        y, r = layer.forward(x, routing=True)
        want, _, _, counts, _, _, _ = numpy_forward(cfg, w, x)
        assert rel_l2(y, want) <= 1e-4, f"{family}, {n} tokens: relative L2 error {rel_l2(y, want):.3g}"
        np.testing.assert_array_equal(r.expert_counts, counts)
        if ctx.backend == "cpu":  # CPU contexts only: the one-context result, bit for bit
            np.testing.assert_array_equal(y, one(x))
        routed_in += counts > 0
        rows += n * k
    s = layer.cache_stats()
    assert (s.context, s.slots, s.forwards) == (0, 3, 4)
    assert s.bytes > 0 and s.upload_ms >= 0.0
    # Every expert lives off the cache's context: each routed expert is one lookup per forward.
    assert s.hits + s.misses == routed_in.sum() > 0
    np.testing.assert_array_equal(s.expert_hits + s.expert_misses, routed_in)
    assert (s.expert_hits.sum(), s.expert_misses.sum(), s.expert_uploads.sum()) == (s.hits, s.misses, s.uploads)
    assert s.evictions <= s.uploads <= s.misses and np.all(s.expert_uploads <= s.expert_misses)
    assert (s.upload_bytes > 0) == (s.uploads > 0)
    assert s.rows_cached + s.rows_elsewhere == rows
    assert s.slot_expert.dtype == np.int32 and s.slot_expert.shape == (3,)
    resident = [e for e in s.slot_expert if e >= 0]
    assert all(-1 <= e < E for e in s.slot_expert) and len(set(resident)) == len(resident)
    assert s.hit_rate == pytest.approx(s.hits / (s.hits + s.misses))


# Top-1 traces, each forward a list of experts (one per token) and the totals after it: hits,
# misses, uploads, evictions and the two slots' experts, worked out by hand from moe.h's rules
# (slots filled with experts 0 and 1 at creation, uncounted), then the rows in slots and elsewhere.
TRACES = {
    "lru": ("lru", 0, [
        ([2, 2, 3], (0, 2, 2, 2, [2, 3])),  # 2 (two rows) first, then 3: the slots unused, lower first
        ([3, 4], (1, 3, 3, 3, [4, 3])),     # 3 hits; 4 takes slot 0 (2, last routed in forward 1)
        ([2, 3, 3], (2, 4, 4, 4, [2, 3])),  # 3 hits; 2 comes back into slot 0
        ([3, 2], (4, 4, 4, 4, [2, 3])),     # both hit
        ([5], (4, 5, 5, 5, [5, 3])),        # both slots last routed in forward 4: the lower goes
    ], (11, 0)),
    "lru, min_rows 2": ("lru", 2, [
        ([2, 2, 3], (0, 2, 1, 1, [2, 1])),  # 2 uploaded; 3 has one row: a miss run on the CPU
        ([3, 2], (1, 3, 1, 1, [2, 1])),     # 3 again one row, not uploaded; 2 hits
        ([4, 4, 4], (1, 4, 2, 2, [2, 4])),  # uploaded; slot 1 (expert 1, never routed) goes
    ], (6, 2)),
    "lfu": ("lfu", 0, [
        ([2, 2, 3], (0, 2, 2, 2, [2, 3])),  # 2 and 3 (count 1) replace 0 and 1 (count 0)
        ([4], (0, 3, 3, 3, [4, 3])),        # 4 (1) against 2 and 3 (1 each, as old): slot 0
        ([3, 3], (1, 3, 3, 3, [4, 3])),     # 3 hits (count 2)
        ([2], (1, 4, 4, 4, [2, 3])),        # 2 (count 2) misses; the victim is 4 (1), not 3 (2)
        ([5], (1, 5, 4, 4, [2, 3])),        # 5 (1) would evict 3 (2): a one-off runs on the CPU
    ], (7, 1)),
}


@pytest.mark.parametrize("trace", sorted(TRACES))
def test_scripted_trace(ctx, cpu, trace):
    policy, min_rows, steps, (rows_cached, rows_elsewhere) = TRACES[trace]
    rng = np.random.default_rng([SEED, 21])
    w = steered_layer(rng)
    layer = cached(ctx, cpu, w, STEERED, 4, moe.ExpertCache(slots=2, policy=policy, min_rows=min_rows))
    one = cpu.layer(w, max_tokens=4, **STEERED)
    s = layer.cache_stats()
    assert (s.forwards, s.hits, s.misses, list(s.slot_expert)) == (0, 0, 0, [0, 1])
    routed_in = np.zeros(STEERED["n_experts"], np.int64)
    for f, (experts, (hits, misses, uploads, evictions, slots)) in enumerate(steps, 1):
        x = tokens_to(experts, rng)
        y, r = layer.forward(x, routing=True)
        assert list(r.topk_ids[:, 0]) == experts, "the steering routed elsewhere"
        assert rel_l2(y, numpy_forward(STEERED, w, x)[0]) <= 1e-4
        if ctx.backend == "cpu":
            np.testing.assert_array_equal(y, one(x))
        routed_in[sorted(set(experts))] += 1
        s = layer.cache_stats()
        got = (s.forwards, s.hits, s.misses, s.uploads, s.evictions, list(s.slot_expert))
        assert got == (f, hits, misses, uploads, evictions, slots), f"{trace}, forward {f}"
    np.testing.assert_array_equal(s.expert_hits + s.expert_misses, routed_in)
    assert (s.rows_cached, s.rows_elsewhere) == (rows_cached, rows_elsewhere)
    assert s.hit_rate == pytest.approx(s.hits / (s.hits + s.misses))


def test_budget_bytes(ctx, cpu):
    rng = np.random.default_rng([SEED, 22])
    w = steered_layer(rng)
    E = STEERED["n_experts"]
    bytes3 = cached(ctx, cpu, w, STEERED, 4, moe.ExpertCache(slots=3)).cache_stats().bytes
    gc.collect()  # that layer's slots gone from ctx's arena before measuring it
    for budget in (bytes3, bytes3 + bytes3 // 4):
        before = ctx.arena_stats().weights_bytes
        layer = cached(ctx, cpu, w, STEERED, 4, moe.ExpertCache(budget_bytes=budget))
        s = layer.cache_stats()
        assert (s.slots, s.bytes) == (3, bytes3), f"a budget of {budget} bytes"
        assert ctx.arena_stats().weights_bytes - before >= s.bytes  # plus the home's router
        layer.close()
    with pytest.raises(moe.OutOfMemoryError, match="holds no expert"):
        cached(ctx, cpu, w, STEERED, 4, moe.ExpertCache(budget_bytes=16))
    assert cached(ctx, cpu, w, STEERED, 4, moe.ExpertCache(slots=100)).cache_stats().slots == E


def test_misuse_is_refused(ctx, cpu):
    w = steered_layer(np.random.default_rng([SEED, 23]))
    E = STEERED["n_experts"]
    with pytest.raises(ValueError, match="policy='fifo'"):
        moe.ExpertCache(slots=2, policy="fifo")
    with pytest.raises(TypeError, match="moe.ExpertCache"):
        moe.Placement([ctx, cpu], expert_context=[1] * E, cache={"slots": 2})
    for cache, message in [(moe.ExpertCache(context=2, slots=2), "context is 2; there are 2"),
                           (moe.ExpertCache(context=-1, slots=2), "context is -1"),
                           (moe.ExpertCache(slots=-1), "slots is -1"),
                           (moe.ExpertCache(), "set slots"),
                           (moe.ExpertCache(slots=2, min_rows=-1), "min_rows is -1"),
                           (moe.ExpertCache(slots=2, policy="lfu", halving_forwards=-1), "halving_forwards")]:
        with pytest.raises(moe.InvalidArgumentError, match=message):
            cached(ctx, cpu, w, STEERED, 4, cache)
    with pytest.raises(moe.InvalidArgumentError, match="nothing to cache"):
        moe.Layer(moe.Placement([ctx, cpu], expert_context=[0] * E, cache=moe.ExpertCache(slots=2)), w,
                  max_tokens=4, **STEERED)
    plain = ctx.layer(w, max_tokens=4, **STEERED)
    s = plain.cache_stats()
    assert (s.slots, s.forwards, s.hits, s.misses, s.slot_expert.shape, s.hit_rate) == (0, 0, 0, 0, (0,), 0.0)
    with pytest.raises(moe.InvalidArgumentError, match="not placed"):
        plain.context_ms()


def test_context_ms(ctx, cpu):
    rng = np.random.default_rng([SEED, 24])
    w = steered_layer(rng)
    # min_rows above any forward's rows: every miss runs where it lives, on the CPU context.
    layer = cached(ctx, cpu, w, STEERED, 4, moe.ExpertCache(slots=2, min_rows=100))
    ms = layer.context_ms()
    assert ms.dtype == np.float64 and list(ms) == [0.0, 0.0]
    layer(tokens_to([2, 3, 4], rng))
    s = layer.cache_stats()
    assert (s.misses, s.uploads, s.rows_elsewhere, s.rows_cached) == (3, 0, 3, 0)
    first = layer.context_ms()
    assert first.shape == (2,) and first[0] > 0.0 and first[1] > 0.0
    layer(tokens_to([0, 1], rng))  # both resident since creation: the CPU has nothing to run
    assert np.all(layer.context_ms() >= first) and layer.context_ms()[0] > first[0]
    assert layer.cache_stats().hits == 2


def test_checkpoint_cached(ctx, cpu):
    name = "qwen2_moe_T6_d32_f40_E8_k2"
    model = moe.Model(os.path.join(HF, name))
    x = np.load(os.path.join(HF, name, "x.npy"))
    want = np.load(os.path.join(HF, name, "y_ref.npy"))
    E = model.n_experts
    layer = model.layer(moe.Placement([ctx, cpu], expert_context=[1] * E, cache=moe.ExpertCache(slots=2)), 0,
                        max_tokens=len(x))
    model.close()  # the layer keeps the files its uploads read
    for _ in range(2):
        assert rel_l2(layer(x), want) <= 1e-4
    s = layer.cache_stats()
    assert (s.slots, s.forwards) == (2, 2) and s.uploads > 0
    assert s.rows_cached + s.rows_elsewhere == 2 * len(x) * model.top_k


def test_sources_kept_while_cached(ctx, cpu):
    """A cached layer's uploads read the expert arrays again: the layer keeps them (and only
    then: a placement without a cache copies them at creation)."""
    rng = np.random.default_rng([SEED, 25])
    for cache in (moe.ExpertCache(slots=2), None):
        w = steered_layer(rng)
        want = {k: v.copy() for k, v in w.items()}
        refs = [weakref.ref(w[k]) for k in ("gate", "up", "down")]
        layer = cached(ctx, cpu, w, STEERED, 4, cache)
        del w
        gc.collect()
        assert all(r() is not None for r in refs) == (cache is not None)
        x = tokens_to([5, 6, 7], rng)  # misses: uploaded from the kept arrays
        assert rel_l2(layer(x), numpy_forward(STEERED, want, x)[0]) <= 1e-4
        del layer
        gc.collect()
        assert all(r() is None for r in refs)
