#!/usr/bin/env python3
"""make_seeds.py - writes the model-directory seeds of fuzz/corpus (model_*): tiny but complete
Hugging Face model directories in the framing fuzz_model.c reads, and the GGUF seeds (gguf_*):
mode byte 4, then a whole GGUF file (written here with struct, as the format's spec lays it out).
Run from anywhere:
    python3 fuzz/make_seeds.py
Model seeds: mode byte 3, a flags byte, an allocation-failure byte, then config.json, the index
(empty for an unsharded model) and the shards, split by FUZZ_SPLIT."""
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


def gguf_string(text):
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf(arch, kvs, tensors, alignment=32):
    """kvs: [(key, type id, packed value)]; tensors: [(name, ne, ggml type, raw bytes)]."""
    kvs = [("general.architecture", 8, gguf_string(arch))] + kvs
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, t, value in kvs:
        head += gguf_string(key) + struct.pack("<I", t) + value
    data, infos = b"", b""
    for name, ne, t, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += gguf_string(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        infos += struct.pack("<IQ", t, len(data))
        data += raw
    head += infos
    return head + b"\0" * (-len(head) % alignment) + data


def q4_0_rows(rows, cols):
    """rows x cols Q4_0: each block an fp16 scale of 1/8 and nibbles counting up."""
    block = struct.pack("<e", 0.125) + bytes((i * 17) & 0xFF for i in range(16))
    return block * (rows * cols // 32)


def gguf_seeds():
    u32 = lambda v: struct.pack("<I", v)
    d, f, e = 32, 32, 2
    keys = [("%s.embedding_length", 4, u32(d)), ("%s.block_count", 4, u32(2)), ("%s.expert_count", 4, u32(e)),
            ("%s.expert_used_count", 4, u32(1)), ("%s.expert_feed_forward_length", 4, u32(f))]
    router = struct.pack("<%df" % (e * d), *[((i * 7) % 5 - 2) / 4.0 for i in range(e * d)])
    for arch, extra, name in (("qwen3moe", [], "gguf_qwen3moe_q4_0"),
                              ("deepseek2", [("%s.expert_shared_count", 4, u32(1)),
                                             ("%s.expert_gating_func", 4, u32(2)),
                                             ("%s.expert_weights_norm", 7, b"\1"),
                                             ("%s.expert_weights_scale", 6, struct.pack("<f", 2.5)),
                                             ("%s.leading_dense_block_count", 4, u32(1))], "gguf_deepseek2_q4_0")):
        kv = [(k % arch, t, v) for k, t, v in keys + extra]
        tensors = [("blk.1.ffn_gate_inp.weight", (d, e), 0, router),
                   ("blk.1.ffn_gate_exps.weight", (d, f, e), 2, q4_0_rows(f * e, d)),
                   ("blk.1.ffn_up_exps.weight", (d, f, e), 2, q4_0_rows(f * e, d)),
                   ("blk.1.ffn_down_exps.weight", (f, d, e), 8, (struct.pack("<e", 0.25) + bytes(range(32))) * (d * e))]
        if arch == "deepseek2":
            tensors += [("blk.1.exp_probs_b.bias", (e,), 0, struct.pack("<2f", 0.5, -0.5)),
                        ("blk.1.ffn_gate_shexp.weight", (d, f), 30, b"\x80\x3f" * (d * f)),
                        ("blk.1.ffn_up_shexp.weight", (d, f), 1, b"\x00\x3c" * (d * f)),
                        ("blk.1.ffn_down_shexp.weight", (f, d), 0, struct.pack("<f", 0.5) * (d * f))]
        with open(os.path.join(HERE, "corpus", name), "wb") as out:
            out.write(b"\4" + gguf(arch, kv, tensors))


if __name__ == "__main__":
    main()
    gguf_seeds()
