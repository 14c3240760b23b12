#!/usr/bin/env python3
"""One Mixtral MoE block from a Hugging Face checkpoint, run by moe and by PyTorch
(transformers' MixtralSparseMoeBlock with the same weights), on the same input.

    pip install torch "transformers<5" safetensors   (tested: transformers 4.46.3, torch 1.13)
    python3 python/examples/compare_torch.py /models/Mixtral-8x7B-v0.1 --layer 3 --backend vulkan
    python3 python/examples/compare_torch.py tests/data/hf-moe/mixtral_T5_d48_f80_E4_k2

Prints the relative L2 difference of the outputs and whether both chose the same experts.
transformers 5 fuses the experts' tensors (gate_up_proj, down_proj) and returns one tensor from
the block: this script follows the 4.x module, whose state_dict names are the checkpoint's.
"""
import argparse
import glob
import json
import os

import numpy as np
import torch
from safetensors import safe_open
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

import moe


def block_state_dict(path, layer):
    """The tensors of layer `layer`'s block_sparse_moe, named as the module's state_dict, from
    whichever safetensors files of the checkpoint hold them."""
    prefix = f"model.layers.{layer}.block_sparse_moe."
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted({v for k, v in json.load(f)["weight_map"].items() if k.startswith(prefix)})
    else:
        files = [os.path.basename(p) for p in glob.glob(os.path.join(path, "*.safetensors"))]
    state = {}
    for name in files:
        with safe_open(os.path.join(path, name), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    state[key[len(prefix):]] = f.get_tensor(key).float()
    return state


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a Mixtral checkpoint folder (config.json + safetensors)")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--backend", default="auto", help="moe's backend: auto, cpu, vulkan, opencl")
    a = p.parse_args()

    # PyTorch: the block as transformers builds it, in float32.
    config = MixtralConfig.from_pretrained(a.checkpoint)
    block = MixtralSparseMoeBlock(config).float().eval()
    block.load_state_dict(block_state_dict(a.checkpoint, a.layer))

    # moe: the same layer, read from the checkpoint (the experts keep its format, so a BF16
    # checkpoint runs as BF16: PyTorch above reads the same BF16 values widened to float32).
    ctx = moe.Context(a.backend)
    with moe.Model(a.checkpoint) as model:
        layer = model.layer(ctx, a.layer, max_tokens=a.tokens)

    x = torch.randn(1, a.tokens, config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_torch, router_logits = block(x)
    y_moe, routing = layer.forward(x, routing=True)  # a CPU tensor in, a tensor out

    diff = float(torch.linalg.vector_norm(y_moe - y_torch) / torch.linalg.vector_norm(y_torch))
    torch_ids = torch.topk(router_logits, config.num_experts_per_tok, dim=-1).indices.numpy()
    same = (np.sort(torch_ids, axis=1) == np.sort(routing.topk_ids, axis=1)).all()
    print(f"moe {moe.version()} on {ctx.backend} ({ctx.device.name}), layer {a.layer}, {a.tokens} tokens")
    print(f"relative L2 difference to PyTorch: {diff:.2e}; same experts chosen: {bool(same)}")


if __name__ == "__main__":
    main()
