"""Checkpoints (tests/data: Hugging Face folders and GGUF files) against their independent
reference outputs, ‖y − y_ref‖ / ‖y_ref‖ ≤ 1e-4, on every backend."""

import json
import os

import numpy as np
import pytest

import moe
from conftest import REPO

HF = os.path.join(REPO, "tests", "data", "hf-moe")
CASES = json.load(open(os.path.join(HF, "index.json"))) if os.path.isdir(HF) else []


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_checkpoint_layer_matches_reference(ctx, case):
    path = os.path.join(HF, case["name"])
    x, y_ref = np.load(os.path.join(path, "x.npy")), np.load(os.path.join(path, "y_ref.npy"))
    with moe.Model(path) as model:
        assert case["layer"] in model.moe_layers()
        cfg = model.config(case["layer"], max_tokens=x.shape[0])
        assert cfg["d_model"] == model.hidden_size and cfg["top_k"] == model.top_k
        layer = model.layer(ctx, case["layer"], max_tokens=x.shape[0])
    y = layer(x)  # the model is closed: the layer stays valid
    err = np.linalg.norm(y.astype(np.float64) - y_ref) / np.linalg.norm(y_ref)
    assert err <= 1e-4, f"{case['name']}: relative L2 error {err:.3g}"


GGUF = os.path.join(REPO, "tests", "data", "gguf-moe")
GGUF_CASES = ([c for c in json.load(open(os.path.join(GGUF, "index.json"))) if c.get("y_ref") or c.get("deq")]
              if os.path.isdir(GGUF) else [])


@pytest.mark.parametrize("case", GGUF_CASES, ids=[c["file"] for c in GGUF_CASES])
def test_gguf_layer(ctx, case):
    """A GGUF file's layer: the Hugging Face case's reference output, or (quantised files) the
    output of its dequantised twin, written by the gguf package (tests/data/gguf-moe)."""
    x = np.load(os.path.join(GGUF, case["x"]))
    with moe.Model(os.path.join(GGUF, case["file"])) as model:
        layer = model.layer(ctx, case["layer"], max_tokens=x.shape[0])
        if case["weight_dtype"] != "mixed":
            assert layer.config["weight_dtype"] == case["weight_dtype"]  # kept as the file has it
    y = layer(x).astype(np.float64)
    if case.get("y_ref"):
        want = np.load(os.path.join(GGUF, case["y_ref"]))
    else:
        with moe.Model(os.path.join(GGUF, case["deq"])) as twin:
            want = twin.layer(ctx, case["layer"], max_tokens=x.shape[0])(x)
    err = np.linalg.norm(y - want) / np.linalg.norm(want)
    assert err <= 1e-4, f"{case['file']}: relative L2 error {err:.3g}"
