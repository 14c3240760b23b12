#!/usr/bin/env python3
"""Writes the gpt-oss case of tests/data/hf-moe (see README.md): a tiny checkpoint laid out as
the released openai/gpt-oss ones are (config.json's keys, the MoE block's tensor names, MXFP4
experts as `*_blocks` / `*_scales` U8 tensors, BF16 router and biases) and the block's output,
computed in float64 by the numpy code below, written from transformers' GptOssTopKRouter,
GptOssExperts (its CPU path) and integrations/mxfp4.py's convert_moe_packed_tensors, and from
OpenAI's gpt_oss/torch/model.py (the same formula): nothing of this project's code.

    python3 make_gpt_oss.py        (numpy only; deterministic)

The GGUF twin (tests/data/gguf-moe/gpt-oss.gguf) is made from these files by make_gguf.py.
"""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 3001
T, D, F, E, K = 7, 64, 64, 8, 4
LIMIT, ALPHA = 7.0, 1.702  # the released models' (a GGUF file has no key for them: llama.cpp fixes both)
FOLDER = f"gpt_oss_T{T}_d{D}_f{F}_E{E}_k{K}"

# transformers integrations/mxfp4.py FP4_VALUES: the E2M1 value of each 4-bit code
FP4_VALUES = np.array([+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
                       -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def bf16(a):
    """float32 -> bfloat16 bits, round to nearest even (as torch's .to(torch.bfloat16))."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def from_bf16(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def dequant(blocks, scales):
    """convert_moe_packed_tensors: [..., G, 16] codes + [..., G] exponents -> [..., G * 32];
    byte i holds value 2i (low nibble) and 2i + 1 (high); value = FP4 * 2^(scale - 127)."""
    lo, hi = FP4_VALUES[blocks & 0x0F], FP4_VALUES[blocks >> 4]
    out = np.empty(blocks.shape[:-1] + (32,))
    out[..., 0::2], out[..., 1::2] = lo, hi
    out = np.ldexp(out, (scales.astype(np.int32) - 127)[..., None])
    return out.reshape(blocks.shape[:-2] + (blocks.shape[-2] * 32,))


def mxfp4_tensors(rng, rows, cols, lo):
    """Random MXFP4 experts [E, rows, cols] as HF stores them: codes uniform, exponents 127 - lo
    .. 127 - lo - 1 (a weight's rms ~ 2.9 * 2^-(lo + 0.5))."""
    blocks = rng.integers(0, 256, size=(E, rows, cols // 32, 16), dtype=np.uint8)
    scales = (127 - rng.integers(lo, lo + 2, size=(E, rows, cols // 32))).astype(np.uint8)
    return blocks, scales


def save_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, (dtype, arr) in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def reference(x, p):
    """The MoE block in float64: transformers' GptOssTopKRouter then GptOssExperts."""
    wr, br = from_bf16(p["router.weight"]), from_bf16(p["router.bias"])
    logits = x @ wr.T + br                                       # F.linear(h, weight, bias)
    idx = np.argsort(-logits, axis=1, kind="stable")[:, :K]      # torch.topk(sorted=True)
    top = np.take_along_axis(logits, idx, axis=1)
    w = np.exp(top - top.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)                            # softmax over the k chosen
    # dequantised as [E, out, in], then transposed to the module's [E, in, out]
    gate_up = dequant(p["experts.gate_up_proj_blocks"], p["experts.gate_up_proj_scales"]).transpose(0, 2, 1)
    down = dequant(p["experts.down_proj_blocks"], p["experts.down_proj_scales"]).transpose(0, 2, 1)
    gub, dnb = from_bf16(p["experts.gate_up_proj_bias"]), from_bf16(p["experts.down_proj_bias"])
    y = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(K):
            e = idx[t, j]
            gu = x[t] @ gate_up[e] + gub[e]
            gate, up = gu[0::2], gu[1::2]
            gate = np.minimum(gate, LIMIT)                       # clamp(max=limit)
            up = np.clip(up, -LIMIT, LIMIT)                      # clamp(-limit, limit)
            glu = gate / (1.0 + np.exp(-gate * ALPHA))           # gate * sigmoid(gate * alpha)
            out = ((up + 1.0) * glu) @ down[e] + dnb[e]
            y[t] += w[t, j] * out                                # the weight times (down + bias)
    return y, logits


def main():
    rng = np.random.default_rng(SEED)
    # gate/up products of rms ~2.5 plus biases of rms 3, so that limit 7 clamps some of them
    gu_b, gu_s = mxfp4_tensors(rng, 2 * F, D, 3)
    dn_b, dn_s = mxfp4_tensors(rng, D, F, 6)
    p = {
        "router.weight": bf16(rng.standard_normal((E, D)) / np.sqrt(D)),
        "router.bias": bf16(rng.standard_normal(E) * 0.5),
        "experts.gate_up_proj_blocks": gu_b,
        "experts.gate_up_proj_scales": gu_s,
        "experts.gate_up_proj_bias": bf16(rng.standard_normal((E, 2 * F)) * 3.0),
        "experts.down_proj_blocks": dn_b,
        "experts.down_proj_scales": dn_s,
        "experts.down_proj_bias": bf16(rng.standard_normal((E, D)) * 0.1),
    }
    x = rng.standard_normal((T, D)).astype(np.float32)
    y, logits = reference(x.astype(np.float64), p)
    s = -np.sort(-logits, axis=1)
    assert (s[:, K - 1] - s[:, K]).min() > 1e-2, "a near-tie at the top-k boundary"

    out = os.path.join(HERE, FOLDER)
    os.makedirs(out, exist_ok=True)
    tensors = {}
    for name, arr in p.items():
        tensors["model.layers.0.mlp." + name] = ("U8" if arr.dtype == np.uint8 else "BF16", arr)
    save_safetensors(os.path.join(out, "model.safetensors"), tensors)
    config = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
        "hidden_size": D, "intermediate_size": F, "num_hidden_layers": 1, "num_local_experts": E,
        "num_experts_per_tok": K, "experts_per_token": K, "swiglu_limit": LIMIT, "hidden_act": "silu",
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-05,
        "router_aux_loss_coef": 0.9, "layer_types": ["sliding_attention"], "sliding_window": 128,
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y_ref.npy"), y.astype(np.float32))
    print(f"{FOLDER}: |y| rms {np.sqrt((y ** 2).mean()):.3f}, clamped gate/up share "
          f"{clamp_share(x.astype(np.float64), p):.2f}")


def clamp_share(x, p):
    """How many of the chosen experts' gate/up values the limit clamps (so the test sees it)."""
    gate_up = dequant(p["experts.gate_up_proj_blocks"], p["experts.gate_up_proj_scales"]).transpose(0, 2, 1)
    gu = np.einsum("td,edo->teo", x, gate_up) + from_bf16(p["experts.gate_up_proj_bias"])[None]
    return float((np.abs(gu) > LIMIT).mean())


if __name__ == "__main__":
    main()
