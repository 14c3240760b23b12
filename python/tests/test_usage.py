"""Expert usage from Python (Layer.track_usage / usage, moe.usage_save / usage_load /
usage_expert_order) against the independent NumPy forward's counts."""

import numpy as np
import pytest

import moe
from numpy_moe import forward as numpy_forward
from test_layer import FAMILIES, SEED, random_layer


def test_counts_window_and_files(ctx, tmp_path):
    cfg, T = FAMILIES["olmoe"]
    rng = np.random.default_rng([SEED, 11])
    w = random_layer(cfg, rng)
    layer = ctx.layer(w, max_tokens=T, **cfg)
    assert layer.usage().window == 0
    layer.track_usage(window=2)
    counts = []
    for n in (T, 1, 4):
        x = rng.standard_normal((n, cfg["d_model"])).astype(np.float32)
        layer(x)
        counts.append(numpy_forward(cfg, w, x)[3])
    u = layer.usage()
    assert (u.window, u.window_forwards, u.forwards, u.tokens, u.uncounted_forwards) == (2, 2, 3, T + 5, 0)
    np.testing.assert_array_equal(u.routed_total, sum(counts))
    np.testing.assert_array_equal(u.routed_window, counts[1] + counts[2])
    path = tmp_path / "usage.json"
    moe.usage_save(path, [layer], indices=[5])
    np.testing.assert_array_equal(moe.usage_load(path, 5, cfg["n_experts"]), u.routed_total)
    order = moe.usage_expert_order(u.routed_total)
    assert sorted(order) == list(range(cfg["n_experts"]))
    assert all(u.routed_total[a] >= u.routed_total[b] for a, b in zip(order, order[1:]))
    with pytest.raises(moe.InvalidArgumentError, match="no layer with index 4"):
        moe.usage_load(path, 4, cfg["n_experts"])
    with pytest.raises(moe.FileError):
        moe.usage_load(tmp_path / "missing.json", 5, cfg["n_experts"])
    with pytest.raises(moe.InvalidArgumentError):
        layer.track_usage(window=-1)
