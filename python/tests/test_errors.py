"""Bad input raises the right exception with the library's message, and leaves the caller's
arrays untouched; objects outliving each other never crash."""

import gc

import numpy as np
import pytest

import moe

CFG = dict(d_model=32, d_ff=40, n_experts=8, top_k=2, max_tokens=4)


def weights(rng=None):
    rng = rng or np.random.default_rng(7)
    return {"router": rng.standard_normal((8, 32)).astype(np.float32),
            "gate": (rng.standard_normal((8, 40, 32)) * 0.1).astype(np.float32),
            "up": (rng.standard_normal((8, 40, 32)) * 0.1).astype(np.float32),
            "down": (rng.standard_normal((8, 32, 40)) * 0.1).astype(np.float32)}


def test_arrays_are_checked(ctx):
    layer = ctx.layer(weights(), **CFG)
    with pytest.raises(TypeError, match="float32"):
        layer(np.zeros((2, 32), np.float64))
    with pytest.raises(ValueError, match="shape"):
        layer(np.zeros((2, 31), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        layer(np.zeros((32, 2), np.float32).T)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        layer([[0.0] * 32])
    w = weights()
    w["up"] = w["up"][:, :39]
    with pytest.raises(ValueError, match="up: shape"):
        ctx.layer(w, **CFG)
    with pytest.raises(TypeError, match="unknown layer setting 'n_expert'"):
        ctx.layer(weights(), n_expert=8, **{k: v for k, v in CFG.items() if k != "n_experts"})
    with pytest.raises(ValueError, match="score_func"):
        ctx.layer(weights(), score_func="softmin", **CFG)
    with pytest.raises(ValueError, match="weight_dtype='q3'"):
        ctx.layer(weights(), weight_dtype="q3", **CFG)


def test_library_errors_carry_status_and_message(ctx):
    with pytest.raises(moe.InvalidArgumentError) as e:
        ctx.layer(weights(), **dict(CFG, top_k=9))
    assert e.value.status_name == "MOE_ERROR_INVALID_CONFIG" and "top_k" in str(e.value)
    w = weights()
    del w["gate"]
    with pytest.raises(moe.MoeError, match="gate"):
        ctx.layer(w, **CFG)
    layer = ctx.layer(weights(), **CFG)
    x = np.ones((5, 32), np.float32)
    out = np.full((5, 32), 7.0, np.float32)
    with pytest.raises(moe.InvalidArgumentError) as e:
        layer(x, out=out)
    assert e.value.status_name == "MOE_ERROR_TOKEN_BUDGET" and "max_tokens" in e.value.message
    assert (out == 7.0).all(), "a failed forward wrote to the caller's array"
    with pytest.raises(moe.InvalidArgumentError, match="not a multiple of 256"):
        ctx.layer(weights(), weight_dtype="q4_k", **CFG)


def test_no_device_is_backend_unavailable():
    with pytest.raises(moe.BackendUnavailableError, match="no-such-device"):
        moe.Context("cpu", device="name:no-such-device")
    with pytest.raises(ValueError, match="backend"):
        moe.Context("cuda")


def test_missing_checkpoint_is_oserror(tmp_path):
    with pytest.raises(OSError) as e:
        moe.Model(tmp_path / "absent")
    assert isinstance(e.value, moe.MoeError) and "absent" in str(e.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(moe.FileFormatError, match="config.json"):
        moe.Model(tmp_path)


def test_layer_outlives_its_context(backend):
    ctx = moe.Context(backend)
    layer = ctx.layer(weights(), **CFG)
    x = np.ones((2, 32), np.float32)
    y = layer(x)
    del ctx
    gc.collect()
    np.testing.assert_array_equal(layer(x), y)  # the layer keeps its context alive
    layer.context.close()  # released once the layer goes; until then calls fail cleanly
    with pytest.raises(moe.MoeError):
        layer(x)
    layer.close()
    with pytest.raises(ValueError, match="closed"):
        layer(x)


def test_arrays_freed_while_the_layer_lives(ctx):
    w = weights()
    layer = ctx.layer(w, **CFG)
    x = np.random.default_rng(3).standard_normal((3, 32)).astype(np.float32)
    y = layer(x)
    for v in w.values():
        v[...] = np.nan  # the layer copied them at creation
    del w
    gc.collect()
    np.testing.assert_array_equal(layer(x), y)
    b = ctx.buffer(96)
    layer2 = ctx.layer(weights(), **CFG)
    del layer2
    gc.collect()
    b.write(x)
    np.testing.assert_array_equal(b.read().reshape(3, 32), x)


def test_out_and_inputs_are_checked_before_the_call(ctx):
    layer = ctx.layer(weights(), **CFG)
    x = np.ones((2, 32), np.float32)
    with pytest.raises(ValueError, match="out: shape"):
        layer(x, out=np.empty((2, 31), np.float32))
    with pytest.raises(TypeError, match="out: dtype float64"):
        layer(x, out=np.empty((2, 32)))
    ro = np.zeros((2, 32), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: read-only"):
        layer(x, out=ro)
    assert (ro == 0).all()
    y = layer(np.ones(32, np.float32))  # one token as a vector: [d_model] in, [d_model] out
    np.testing.assert_array_equal(y, layer(x)[0])


def test_expert_arrays_must_share_the_group_format(ctx):
    w = weights()
    w["gate"] = w["gate"].astype(np.float16)
    with pytest.raises(TypeError, match="gate: dtype float16, but the group's format is f32"):
        ctx.layer(w, **CFG)
    w = weights()
    w["down"] = w["down"].view(np.int32)
    with pytest.raises(TypeError, match="down: dtype int32"):
        ctx.layer(w, **CFG)
    w = weights()
    w["up"] = w["up"].astype(">f4")
    with pytest.raises(TypeError, match="up"):
        ctx.layer(w, **CFG)


def test_convert_row_checks_its_source():
    with pytest.raises(ValueError, match="40 bytes, but 32 values of f32 take 128"):
        moe.convert_row(np.zeros(10, np.float32), "f32", "q8_0", n=32)
    with pytest.raises(TypeError, match="float64"):
        moe.convert_row(np.zeros(32), "f32", "q8_0")
    with pytest.raises(ValueError, match="n .the row's values. is needed for a q8_0"):
        moe.convert_row(np.zeros(34, np.uint8), "q8_0", "f32")
    q = moe.convert_row(np.arange(32, dtype=np.float32), "f32", "q8_0")
    assert q.dtype == np.uint8 and q.size == moe.row_bytes("q8_0", 32)
    back = moe.convert_row(q, "q8_0", "f32", n=32)
    assert back.dtype == np.float32 and np.abs(back - np.arange(32)).max() < 0.2


def test_takes_activations():
    # moe.h's table: the opt-ins per format, float32 for all (q3_k: library 0.15.0; q2_k: 0.16.0, 84 bytes
    # a super-block of 256)
    assert "q3_k" in moe.dtypes() and moe.row_bytes("q3_k", 512) == 220 and moe.row_bytes("q3_k", 384) == 0
    assert "q2_k" in moe.dtypes() and moe.row_bytes("q2_k", 512) == 168 and moe.row_bytes("q2_k", 384) == 0
    for w in moe.dtypes():
        assert moe.takes_activations(w, "f32")
        assert moe.takes_activations(w, "q8_0") == (w in ("q8_0", "q4_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k")), w
        assert moe.takes_activations(w, "bf16") == (w in ("q4_0", "mxfp4", "q4_k")), w
        assert not moe.takes_activations(w, "f16")
    with pytest.raises(ValueError, match="q7"):
        moe.takes_activations("q7", "q8_0")


def test_buffer_outlives_its_context(backend):
    ctx = moe.Context(backend)
    b = ctx.buffer(8)
    b.write(np.arange(8, dtype=np.float32))
    ctx.close()  # released once the buffer goes; until then calls fail cleanly
    with pytest.raises(moe.MoeError):
        b.read()
    b.close()
    with pytest.raises(ValueError, match="closed"):
        b.read()
    ctx = moe.Context(backend)
    layer = ctx.layer(weights(), **CFG)
    ctx.close()
    assert "closed context" in repr(layer)
    layer.close()
    assert "closed" in repr(layer)


def test_threads_sharing_a_context_take_turns(ctx):
    """Forwards from several Python threads on one context's layers (the GIL released in each)
    give each thread the serial result: the context's lock keeps them from overlapping."""
    import threading
    layers = [ctx.layer(weights(np.random.default_rng(i)), **CFG) for i in range(3)]
    xs = [np.random.default_rng(10 + i).standard_normal((4, 32)).astype(np.float32) for i in range(3)]
    want = [layer(x) for layer, x in zip(layers, xs)]
    errors = []

    def run(i):
        try:
            for _ in range(20):
                np.testing.assert_array_equal(layers[i](xs[i]), want[i])
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
