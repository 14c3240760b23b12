#!/usr/bin/env python3
"""make_seeds.py - writes the model-directory seeds of fuzz/corpus (model_*): tiny but complete
Hugging Face model directories in the framing fuzz_model.c reads. Run from anywhere:
    python3 fuzz/make_seeds.py
Mode byte 3, a flags byte, an allocation-failure byte, then config.json, the index (empty for
an unsharded model) and the shards, split by FUZZ_SPLIT."""
import json
import os
import struct

SPLIT = b"\n--8<--\n"
HERE = os.path.dirname(os.path.abspath(__file__))


def tensor_bytes(dtype, values):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F16":
        return struct.pack("<%de" % len(values), *values)
    # BF16: the top half of the float32 (the seeds' values are exact in BF16)
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def safetensors(tensors, dtype):
    """tensors: [(name, shape)] -> a safetensors file with small deterministic values."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for i, (name, shape) in enumerate(tensors):
        count = 1
        for d in shape:
            count *= d
        values = [((i * 5 + j * 3) % 9 - 4) / 8.0 for j in range(count)]
        raw = tensor_bytes(dtype, values)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def experts(prefix, n, d, f, names=("gate_proj", "up_proj", "down_proj"), pattern="experts.%d.%s.weight"):
    out = []
    for e in range(n):
        for w in names:
            out.append((prefix + pattern % (e, w), (d, f) if w in ("down_proj", "w2", "wo") else (f, d)))
    return out


def seed(name, flags, alloc, config, shards, dtype="F32"):
    parts = [json.dumps(config).encode()]
    if len(shards) == 1:
        parts += [b"", safetensors(shards[0], dtype)]
    else:
        files = ["model-%05d-of-%05d.safetensors" % (i + 1, len(shards)) for i in range(len(shards))]
        wmap = {t: files[i] for i, s in enumerate(shards) for t, _ in s}
        parts.append(json.dumps({"metadata": {"total_size": 0}, "weight_map": wmap}).encode())
        parts += [safetensors(s, dtype) for s in shards]
    body = bytes([3, flags, alloc]) + SPLIT.join(parts)
    with open(os.path.join(HERE, "corpus", name), "wb") as f:
        f.write(body)
    print("%-28s %5d bytes" % (name, len(body)))


def main():
    d, f = 4, 3
    p = "model.layers.1.block_sparse_moe."
    mixtral = {"model_type": "mixtral", "hidden_size": d, "intermediate_size": f, "num_local_experts": 2,
               "num_experts_per_tok": 2, "num_hidden_layers": 2}
    mix = [(p + "gate.weight", (2, d))] + experts(p, 2, d, f, ("w1", "w3", "w2"))
    limit = 12 << 4  # the bounded reader's limit 12^2 * 64 bytes: the seeds' files fit
    seed("model_mixtral", limit | 1, 0, mixtral, [mix])
    seed("model_mixtral_sharded_bf16", limit | 1, 0, mixtral, [mix[:4], mix[4:]], "BF16")
    seed("model_mixtral_oom", limit | 1, 9, mixtral, [mix])
    seed("model_config_fifo", (13 << 4) | 1, 0, mixtral, [mix])
    seed("model_weights_dir", (14 << 4) | 1, 0, mixtral, [mix])

    p = "model.layers.1.mlp."
    v3 = {"model_type": "deepseek_v3", "hidden_size": d, "moe_intermediate_size": 2, "n_routed_experts": 4,
          "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 2, "topk_group": 1,
          "first_k_dense_replace": 1, "num_hidden_layers": 2}
    seed("model_deepseek_v3_f16", limit | 1, 0, v3,
         [[(p + "gate.weight", (4, d)), (p + "gate.e_score_correction_bias", (4,))] + experts(p, 4, d, 2)
          + [(p + "shared_experts.gate_proj.weight", (2, d)), (p + "shared_experts.up_proj.weight", (2, d)),
             (p + "shared_experts.down_proj.weight", (d, 2))]], "F16")

    p = "model.layers.0.mlp."
    qwen = {"model_type": "qwen2_moe", "hidden_size": d, "moe_intermediate_size": 2, "num_experts": 3,
            "num_experts_per_tok": 2, "shared_expert_intermediate_size": 3, "num_hidden_layers": 1}
    seed("model_qwen2_moe", limit | 0, 0, qwen,
         [[(p + "gate.weight", (3, d))] + experts(p, 3, d, 2)
          + [(p + "shared_expert.gate_proj.weight", (3, d)), (p + "shared_expert.up_proj.weight", (3, d)),
             (p + "shared_expert.down_proj.weight", (d, 3)), (p + "shared_expert_gate.weight", (1, d))]])

    p = "decoder.block.1.layer.2.mlp."
    switch = {"model_type": "switch_transformers", "d_model": d, "d_ff": f, "num_experts": 2, "expert_capacity": 1,
              "num_layers": 2, "num_decoder_layers": 2, "encoder_sparse_step": 2, "decoder_sparse_step": 2}
    seed("model_switch_decoder", limit | 4 | 8 | 1, 0, switch,
         [[(p + "router.classifier.weight", (2, d))]
          + experts(p, 2, d, f, ("wi", "wo"), "experts.expert_%d.%s.weight")])


if __name__ == "__main__":
    main()
