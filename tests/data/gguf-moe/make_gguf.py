#!/usr/bin/env python3
"""Regenerates every GGUF fixture in tests/data/gguf-moe/ (see README.md).

Run from this folder with a Python that has the `gguf` package (0.19.0) and numpy:

    /tmp/gguf-venv/bin/python make_gguf.py

Deterministic: the hf-moe weights are copied bit for bit; everything else comes from
numpy default_rng with the fixed seeds below. Then run check_gguf.py to verify.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGUFWriter, GGMLQuantizationType as T, LlamaFileType as FT
from gguf.quants import quantize, dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
HF = os.path.join(HERE, "..", "hf-moe")

N_VOCAB = 32          # token_embd rows and tokenizer size (realism only; not used by the MoE tests)
SEED_EMBD = 1001      # token_embd of every file
SEED_DS_DENSE = 1002  # deepseek2.gguf layer 0 dense FFN (the safetensors holds none)
SEED_SYN = 2024       # synthetic qwen3moe layer + synthetic-x.npy
SEED_SYN_DS = 2025    # synthetic deepseek2 layer
SEED_IQ2 = 2026       # synthetic-iq2_xxs.gguf (the refusal; synthetic-q2_k.gguf's until moe 0.16.0 read Q2_K)
SEED_FALCON = 2027    # unknown-arch.gguf
SEED_KQ = 2028        # synthetic-q{3,4,5}_k_m.gguf, synthetic-q2_k.gguf, synthetic-kx.npy


# ----------------------------------------------------------------------------------------------
# safetensors by hand: u64 LE header length, JSON header, raw data
def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "BF16":  # exactly, as float32
            arr = (np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype={"F32": "<f4", "U8": "u1"}[v["dtype"]])
        out[k] = arr.reshape(v["shape"]).copy()
    return out


def hf(folder):
    return load_safetensors(os.path.join(HF, folder, "model.safetensors"))


def stack(sd, fmt, n_expert):
    return np.stack([sd[fmt.format(e)] for e in range(n_expert)]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# common metadata, written the way convert_hf_to_gguf.py + gguf-py helpers write it
def tokenizer(w):
    toks = ["<unk>", "<s>", "</s>"] + [f"tok{i}" for i in range(3, N_VOCAB)]
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)                                   # ARRAY[STRING]
    w.add_token_scores([-float(i) for i in range(N_VOCAB)])  # ARRAY[FLOAT32]
    w.add_token_types([2, 3, 3] + [1] * (N_VOCAB - 3))       # ARRAY[INT32]: UNKNOWN, CONTROL, CONTROL, NORMAL...
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)


def common(w, name, ftype, n_embd, n_layer, n_ff, n_head=4, vocab_key=False):
    w.add_name(name)                          # general.name        STRING
    w.add_file_type(ftype)                    # general.file_type   UINT32
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)  # general.quantization_version UINT32 (2)
    w.add_context_length(256)                 # %s.context_length  UINT32
    w.add_embedding_length(n_embd)            # %s.embedding_length UINT32
    w.add_block_count(n_layer)                # %s.block_count     UINT32
    w.add_feed_forward_length(n_ff)           # %s.feed_forward_length UINT32
    w.add_head_count(n_head)                  # %s.attention.head_count UINT32
    w.add_head_count_kv(n_head)               # %s.attention.head_count_kv UINT32
    w.add_layer_norm_rms_eps(1e-6)            # %s.attention.layer_norm_rms_epsilon FLOAT32
    w.add_rope_freq_base(10000.0)             # %s.rope.freq_base FLOAT32
    if vocab_key:
        w.add_vocab_size(N_VOCAB)             # %s.vocab_size UINT32 (llama, deepseek2 converters write it)
    tokenizer(w)


def token_embd(w, n_embd):
    rng = np.random.default_rng(SEED_EMBD)
    w.add_tensor("token_embd.weight", (rng.standard_normal((N_VOCAB, n_embd)) * 0.02).astype(np.float32))


def norms(w, il, n_embd):
    w.add_tensor(f"blk.{il}.attn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor(f"blk.{il}.ffn_norm.weight", np.ones(n_embd, np.float32))


def add_w(w, name, arr, qt=T.F32):
    """arr float32 in numpy layout; stored as qt (F32 as is)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qt == T.F32:
        w.add_tensor(name, arr)
    elif qt == T.F16:
        w.add_tensor(name, quantize(arr, T.F16))
    else:
        w.add_tensor(name, quantize(arr, qt), raw_dtype=qt)


def stored_f32(arr, qt):
    """What a file storing arr as qt decodes to (the oracle of the -deq files)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qt == T.F32:
        return arr
    return dequantize(quantize(arr, qt), qt).astype(np.float32)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def writer(fname, arch, **kw):
    return GGUFWriter(os.path.join(HERE, fname), arch, **kw)


# ----------------------------------------------------------------------------------------------
# 1. Mixtral -> llama (stacked and legacy per-expert); 2. the same weights as qwen3moe
def mixtral_weights():
    sd = hf("mixtral_T5_d48_f80_E4_k2")
    p = "model.layers.0.block_sparse_moe."
    E = 4
    return dict(
        router=sd[p + "gate.weight"],                              # (4, 48)
        gate=stack(sd, p + "experts.{}.w1.weight", E),             # (4, 80, 48)
        up=stack(sd, p + "experts.{}.w3.weight", E),               # (4, 80, 48)
        down=stack(sd, p + "experts.{}.w2.weight", E),             # (4, 48, 80)
    )


def make_mixtral(per_expert):
    m = mixtral_weights()
    d, f, E, k = 48, 80, 4, 2
    fname = "mixtral-per-expert.gguf" if per_expert else "mixtral.gguf"
    w = writer(fname, "llama")
    common(w, "Mixtral tiny (hf-moe mixtral_T5_d48_f80_E4_k2)" + (" per-expert tensors" if per_expert else ""),
           FT.ALL_F32, d, 1, f, vocab_key=True)
    w.add_rope_dimension_count(d // 4)       # llama.rope.dimension_count UINT32
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    token_embd(w, d)
    norms(w, 0, d)
    w.add_tensor("blk.0.ffn_gate_inp.weight", m["router"])
    if per_expert:
        for e in range(E):
            w.add_tensor(f"blk.0.ffn_gate.{e}.weight", m["gate"][e])
            w.add_tensor(f"blk.0.ffn_down.{e}.weight", m["down"][e])
            w.add_tensor(f"blk.0.ffn_up.{e}.weight", m["up"][e])
    else:
        w.add_tensor("blk.0.ffn_gate_exps.weight", m["gate"])
        w.add_tensor("blk.0.ffn_down_exps.weight", m["down"])
        w.add_tensor("blk.0.ffn_up_exps.weight", m["up"])
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


def make_qwen3moe_from_mixtral():
    m = mixtral_weights()
    d, f, E, k = 48, 80, 4, 2
    w = writer("qwen3moe.gguf", "qwen3moe")
    common(w, "Qwen3-MoE tiny (weights of hf-moe mixtral_T5_d48_f80_E4_k2)", FT.ALL_F32, d, 1, 160)
    w.add_expert_feed_forward_length(f)
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    w.add_expert_weights_norm(True)
    token_embd(w, d)
    norms(w, 0, d)
    w.add_tensor("blk.0.ffn_gate_inp.weight", m["router"])
    w.add_tensor("blk.0.ffn_gate_exps.weight", m["gate"])
    w.add_tensor("blk.0.ffn_down_exps.weight", m["down"])
    w.add_tensor("blk.0.ffn_up_exps.weight", m["up"])
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 3. OLMoE
def make_olmoe():
    sd = hf("olmoe_T9_d40_f24_E32_k8")
    p = "model.layers.0.mlp."
    d, f, E, k = 40, 24, 32, 8
    w = writer("olmoe.gguf", "olmoe")
    common(w, "OLMoE tiny (hf-moe olmoe_T9_d40_f24_E32_k8)", FT.ALL_F32, d, 1, f)  # feed_forward_length = expert width
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    token_embd(w, d)
    norms(w, 0, d)
    w.add_tensor("blk.0.ffn_gate_inp.weight", sd[p + "gate.weight"])
    w.add_tensor("blk.0.ffn_gate_exps.weight", stack(sd, p + "experts.{}.gate_proj.weight", E))
    w.add_tensor("blk.0.ffn_down_exps.weight", stack(sd, p + "experts.{}.down_proj.weight", E))
    w.add_tensor("blk.0.ffn_up_exps.weight", stack(sd, p + "experts.{}.up_proj.weight", E))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 4. Qwen2-MoE, one file and a 3-way split
def make_qwen2moe(split):
    sd = hf("qwen2_moe_T6_d32_f40_E8_k2")
    p = "model.layers.0.mlp."
    d, f, fsh, E, k = 32, 40, 96, 8, 2
    if split:
        # 12 tensors, 5 per shard: shard 1 ends with ffn_gate_exps, shard 2 holds up/down_exps and
        # the first shared tensors, shard 3 ffn_down_shexp and output_norm.
        w = writer("qwen2moe-split.gguf", "qwen2moe", split_max_tensors=5)
    else:
        w = writer("qwen2moe.gguf", "qwen2moe")
    common(w, "Qwen2-MoE tiny (hf-moe qwen2_moe_T6_d32_f40_E8_k2)", FT.ALL_F32, d, 1, 128)
    w.add_expert_feed_forward_length(f)
    w.add_expert_shared_feed_forward_length(fsh)
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    token_embd(w, d)
    norms(w, 0, d)
    w.add_tensor("blk.0.ffn_gate_inp.weight", sd[p + "gate.weight"])
    w.add_tensor("blk.0.ffn_gate_exps.weight", stack(sd, p + "experts.{}.gate_proj.weight", E))
    w.add_tensor("blk.0.ffn_up_exps.weight", stack(sd, p + "experts.{}.up_proj.weight", E))
    w.add_tensor("blk.0.ffn_down_exps.weight", stack(sd, p + "experts.{}.down_proj.weight", E))
    w.add_tensor("blk.0.ffn_gate_inp_shexp.weight", sd[p + "shared_expert_gate.weight"].reshape(d))  # 1-D [n_embd]
    w.add_tensor("blk.0.ffn_gate_shexp.weight", sd[p + "shared_expert.gate_proj.weight"])
    w.add_tensor("blk.0.ffn_up_shexp.weight", sd[p + "shared_expert.up_proj.weight"])
    w.add_tensor("blk.0.ffn_down_shexp.weight", sd[p + "shared_expert.down_proj.weight"])
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 5. DeepSeek-V3 -> deepseek2 (layer 0 dense, layer 1 MoE)
def deepseek_keys(w, d, f_exp, E, k, n_shared, scale, n_group=0, n_group_used=0, n_dense=1):
    w.add_rope_dimension_count(8)             # deepseek2.rope.dimension_count UINT32
    w.add_q_lora_rank(24)                     # deepseek2.attention.q_lora_rank UINT32
    w.add_kv_lora_rank(16)                    # deepseek2.attention.kv_lora_rank UINT32
    w.add_key_length(24)                      # deepseek2.attention.key_length UINT32
    w.add_value_length(16)                    # deepseek2.attention.value_length UINT32
    w.add_leading_dense_block_count(n_dense)
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    w.add_expert_feed_forward_length(f_exp)
    w.add_expert_shared_count(n_shared)
    w.add_expert_weights_scale(scale)
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    if n_group:
        w.add_expert_group_count(n_group)
        w.add_expert_group_used_count(n_group_used)


def make_deepseek2():
    sd = hf("deepseek_v3_T8_d36_f20_E16_k4_g4")
    p = "model.layers.1.mlp."
    d, f_exp, f_dense, E, k = 36, 20, 60, 16, 4
    w = writer("deepseek2.gguf", "deepseek2")
    common(w, "DeepSeek-V3 tiny (hf-moe deepseek_v3_T8_d36_f20_E16_k4_g4)", FT.ALL_F32, d, 2, f_dense, vocab_key=True)
    deepseek_keys(w, d, f_exp, E, k, 1, 2.5, n_group=4, n_group_used=2, n_dense=1)
    token_embd(w, d)
    # layer 0: dense FFN. The hf fixture only holds the MoE layer, so these are random (not used by the test).
    dense = [k_ for k_ in sd if k_.startswith("model.layers.0.mlp.")]
    assert not dense, dense
    rng = np.random.default_rng(SEED_DS_DENSE)
    norms(w, 0, d)
    w.add_tensor("blk.0.ffn_gate.weight", (rng.standard_normal((f_dense, d)) / np.sqrt(d)).astype(np.float32))
    w.add_tensor("blk.0.ffn_down.weight", (rng.standard_normal((d, f_dense)) / np.sqrt(f_dense)).astype(np.float32))
    w.add_tensor("blk.0.ffn_up.weight", (rng.standard_normal((f_dense, d)) / np.sqrt(d)).astype(np.float32))
    # layer 1: MoE
    norms(w, 1, d)
    w.add_tensor("blk.1.ffn_gate_inp.weight", sd[p + "gate.weight"])
    w.add_tensor("blk.1.exp_probs_b.bias", sd[p + "gate.e_score_correction_bias"])
    w.add_tensor("blk.1.ffn_gate_exps.weight", stack(sd, p + "experts.{}.gate_proj.weight", E))
    w.add_tensor("blk.1.ffn_down_exps.weight", stack(sd, p + "experts.{}.down_proj.weight", E))
    w.add_tensor("blk.1.ffn_up_exps.weight", stack(sd, p + "experts.{}.up_proj.weight", E))
    w.add_tensor("blk.1.ffn_gate_shexp.weight", sd[p + "shared_experts.gate_proj.weight"])
    w.add_tensor("blk.1.ffn_down_shexp.weight", sd[p + "shared_experts.down_proj.weight"])
    w.add_tensor("blk.1.ffn_up_shexp.weight", sd[p + "shared_experts.up_proj.weight"])
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 6. Synthetic quantised cases
SYN_D, SYN_F, SYN_E, SYN_K, SYN_T = 64, 32, 8, 2, 7
FT_OF = {T.F32: FT.ALL_F32, T.F16: FT.MOSTLY_F16, T.BF16: FT.MOSTLY_BF16, T.Q8_0: FT.MOSTLY_Q8_0,
         T.Q4_0: FT.MOSTLY_Q4_0, T.MXFP4: FT.MOSTLY_MXFP4_MOE}


def synthetic_weights():
    rng = np.random.default_rng(SEED_SYN)
    d, f, E = SYN_D, SYN_F, SYN_E
    router = (rng.standard_normal((E, d)) / np.sqrt(d)).astype(np.float32)
    gate = (rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32)
    up = (rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32)
    down = (rng.standard_normal((E, d, f)) / np.sqrt(f)).astype(np.float32)
    x = rng.standard_normal((SYN_T, d)).astype(np.float32)
    return router, gate, up, down, x


def topk_margin(sel, k):
    s = -np.sort(-sel, axis=1)
    return float((s[:, k - 1] - s[:, k]).min())


def make_synthetic_qwen3(tag, qt_gate, qt_up, qt_down, deq):
    router, gate, up, down, _ = synthetic_weights()
    fname = f"synthetic-{tag}{'-deq' if deq else ''}.gguf"
    w = writer(fname, "qwen3moe")
    ftype = FT.ALL_F32 if deq else FT_OF[qt_gate]
    common(w, f"synthetic qwen3moe {tag}" + (" (experts dequantised to F32)" if deq else ""), ftype,
           SYN_D, 1, 2 * SYN_F)
    w.add_expert_feed_forward_length(SYN_F)
    w.add_expert_count(SYN_E)
    w.add_expert_used_count(SYN_K)
    w.add_expert_weights_norm(True)
    token_embd(w, SYN_D)
    norms(w, 0, SYN_D)
    w.add_tensor("blk.0.ffn_gate_inp.weight", router)
    for name, arr, qt in (("gate", gate, qt_gate), ("down", down, qt_down), ("up", up, qt_up)):
        if deq:
            w.add_tensor(f"blk.0.ffn_{name}_exps.weight", stored_f32(arr, qt))
        else:
            add_w(w, f"blk.0.ffn_{name}_exps.weight", arr, qt)
    w.add_tensor("output_norm.weight", np.ones(SYN_D, np.float32))
    finish(w)


def synthetic_ds_weights():
    rng = np.random.default_rng(SEED_SYN_DS)
    d, f, E = SYN_D, SYN_F, SYN_E
    return dict(
        router=(rng.standard_normal((E, d)) / np.sqrt(d)).astype(np.float32),
        bias=(rng.standard_normal(E) * 0.1).astype(np.float32),
        gate=(rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32),
        up=(rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32),
        down=(rng.standard_normal((E, d, f)) / np.sqrt(f)).astype(np.float32),
        sh_gate=(rng.standard_normal((f, d)) / np.sqrt(d)).astype(np.float32),
        sh_up=(rng.standard_normal((f, d)) / np.sqrt(d)).astype(np.float32),
        sh_down=(rng.standard_normal((d, f)) / np.sqrt(f)).astype(np.float32),
    )


def make_synthetic_deepseek2(deq):
    m = synthetic_ds_weights()
    fname = "synthetic-deepseek2-q-deq.gguf" if deq else "synthetic-deepseek2-q.gguf"
    w = writer(fname, "deepseek2")
    common(w, "synthetic deepseek2 (routed Q4_0, shared Q8_0)" + (" dequantised to F32" if deq else ""),
           FT.ALL_F32 if deq else FT.MOSTLY_Q4_0, SYN_D, 1, 4 * SYN_F, vocab_key=True)
    deepseek_keys(w, SYN_D, SYN_F, SYN_E, SYN_K, 1, 1.5, n_group=0, n_dense=0)
    token_embd(w, SYN_D)
    norms(w, 0, SYN_D)
    w.add_tensor("blk.0.ffn_gate_inp.weight", m["router"])
    w.add_tensor("blk.0.exp_probs_b.bias", m["bias"])
    for name, key, qt in (("ffn_gate_exps", "gate", T.Q4_0), ("ffn_down_exps", "down", T.Q4_0),
                          ("ffn_up_exps", "up", T.Q4_0), ("ffn_gate_shexp", "sh_gate", T.Q8_0),
                          ("ffn_down_shexp", "sh_down", T.Q8_0), ("ffn_up_shexp", "sh_up", T.Q8_0)):
        if deq:
            w.add_tensor(f"blk.0.{name}.weight", stored_f32(m[key], qt))
        else:
            add_w(w, f"blk.0.{name}.weight", m[key], qt)
    w.add_tensor("output_norm.weight", np.ones(SYN_D, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 7. Files the reader must refuse
def make_iq2_xxs():
    # A type moe does not read: IQ2_XXS (ggml type 16), whose blocks hold 256 values along ne[0];
    # ffn_down_exps' ne[0] is the expert width, so this file uses width 256 (with n_embd 32 and 2
    # experts to stay small) to keep the file well formed: the only thing wrong with it is the
    # unsupported type. (Until moe 0.16.0 read Q2_K, this file was synthetic-q2_k.gguf, the same with a
    # Q2_K down.)
    rng = np.random.default_rng(SEED_IQ2)
    d, f, E, k = 32, 256, 2, 2
    w = writer("synthetic-iq2_xxs.gguf", "qwen3moe")
    common(w, "synthetic qwen3moe with an IQ2_XXS ffn_down_exps (unsupported)", FT.MOSTLY_IQ2_XXS, d, 1, 2 * f)
    w.add_expert_feed_forward_length(f)
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    w.add_expert_weights_norm(True)
    token_embd(w, d)
    norms(w, 0, d)
    w.add_tensor("blk.0.ffn_gate_inp.weight", (rng.standard_normal((E, d)) / np.sqrt(d)).astype(np.float32))
    w.add_tensor("blk.0.ffn_gate_exps.weight", (rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32))
    # IQ2_XXS block (66 B): half d @0, then 32 uint16 qs: per 32 values 4 grid indices (a byte each, into
    # ggml's 256-entry iq2xxs_grid) and a word of four 7-bit sign indices and a 4-bit scale; every bit
    # pattern decodes, to at most d*(0.5 + 15)*0.25*43 = 1.67 with d = 0.01
    blk = rng.integers(0, 256, size=(E, d, f // 256, 66), dtype=np.uint8)
    blk[..., 0:2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    w.add_tensor("blk.0.ffn_down_exps.weight", blk.reshape(E, d, (f // 256) * 66), raw_dtype=T.IQ2_XXS)
    w.add_tensor("blk.0.ffn_up_exps.weight", (rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


def make_unknown_arch():
    rng = np.random.default_rng(SEED_FALCON)
    d, f, E, k = 32, 32, 4, 2
    w = writer("unknown-arch.gguf", "falcon")
    common(w, "falcon with MoE keys (no MoE falcon exists in llama.cpp)", FT.ALL_F32, d, 1, f)
    w.add_expert_feed_forward_length(f)
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    token_embd(w, d)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(d, np.float32))
    w.add_tensor("blk.0.ffn_gate_inp.weight", (rng.standard_normal((E, d)) / np.sqrt(d)).astype(np.float32))
    w.add_tensor("blk.0.ffn_gate_exps.weight", (rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32))
    w.add_tensor("blk.0.ffn_down_exps.weight", (rng.standard_normal((E, d, f)) / np.sqrt(f)).astype(np.float32))
    w.add_tensor("blk.0.ffn_up_exps.weight", (rng.standard_normal((E, f, d)) / np.sqrt(d)).astype(np.float32))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 8. K-quant cases (llama.cpp's Q4_K_M / Q5_K_M mixes): gate/up Q4_K or Q5_K, down Q6_K; and
#    (moe 0.15.0) its Q3_K_M mix: gate/up Q3_K, down Q4_K (llama-quantize gives a Q3_K_M file's
#    ffn_down Q5_K in its first n_layer/16 layers, Q4_K in the others: Q4_K for a file of one layer);
#    and (moe 0.16.0) its Q2_K mix: gate/up Q2_K, down Q3_K (llama-quantize's Q2_K gives every
#    ffn_down Q3_K)
KQ_D, KQ_F, KQ_E, KQ_K, KQ_T = 256, 256, 4, 2, 5   # K-quant rows are whole super-blocks of 256
KQ_BYTES = {T.Q2_K: 84, T.Q3_K: 110, T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210}
# gguf 0.19.0 has no K-quant quantizer, so the expert blocks are random bytes with scales chosen
# so that a decoded weight has rms ~ 1/sqrt(256) and mean ~ 0 (outputs O(1)). With the 6-bit sc
# and m and the quants uniform, E[sc] = E[m] = 31.5 and
#   Q4_K  w = d*sc*q - dmin*m, q in 0..15: dmin = 7.5 d centres it; rms = 252.8 d
#   Q5_K  q in 0..31: dmin = 15.5 d; rms = 515.5 d
#   Q6_K  w = d*sc*(q - 32), int8 sc, q in 0..63: rms = 1365.7 |d|; d of either sign, as ggml
#         writes it (d = -max_scale/128); |d| ~ 4.6e-5 is often an fp16 subnormal.
#   Q3_K  w = d*(sc - 32)*(q - 4), sc in 0..63, q in 0..7: E[(sc - 32)^2] = 341.5, E[(q - 4)^2] = 5.5,
#         rms = 43.34 |d| (mean 0.25 d, 0.6% of it); d of either sign, as ggml writes it
#         (d = 1/iscale, iscale = -32/max_scale).
#   Q2_K  w = d*sc*q - dmin*m, 4-bit sc and m (E = 7.5, E[sc^2] = 77.5), q in 0..3 (E = 1.5,
#         E[q^2] = 3.5): dmin = 1.5 d centres it; E[w^2] = (271.25 - 253.125 + 174.375) d^2,
#         rms = 13.87 d; d and dmin positive, as ggml writes them (max_scale/15, max_min/15).
KQ_SCALE = {T.Q4_K: (0.0625 / 252.8, 7.5), T.Q5_K: (0.0625 / 515.5, 15.5), T.Q6_K: (0.0625 / 1365.7, None),
            T.Q3_K: (0.0625 / 43.34, None), T.Q2_K: (0.0625 / 13.87, 1.5)}


def kquant_bytes(rng, qt, rows, cols):
    """(rows..., cols/256*size) uint8 of random qt blocks with sane scales (see KQ_SCALE)."""
    nb = cols // 256
    b = rng.integers(0, 256, size=(*rows, nb, KQ_BYTES[qt]), dtype=np.uint8)
    d0, dmin_per_d = KQ_SCALE[qt]
    d = (d0 * rng.uniform(0.5, 1.5, size=b.shape[:-1])).astype(np.float16)
    if qt in (T.Q6_K, T.Q3_K):  # block_q6_K: ql[128], qh[64], int8 scales[16], half d @208;
        # block_q3_K: hmask[32], qs[64], scales[12], half d @108
        d = np.where(rng.integers(0, 2, size=d.shape) == 1, -d, d).astype(np.float16)
        at = 208 if qt == T.Q6_K else 108
        b[..., at:at + 2] = d[..., None].view(np.uint8)
    else:              # block_q4_K / block_q5_K: half d @0, half dmin @2, scales[12] @4, ...;
        # block_q2_K: scales[16], qs[64], half d @80, half dmin @82
        dmin = (d0 * dmin_per_d * rng.uniform(0.5, 1.5, size=b.shape[:-1])).astype(np.float16)
        at = 80 if qt == T.Q2_K else 0
        b[..., at:at + 2] = d[..., None].view(np.uint8)
        b[..., at + 2:at + 4] = dmin[..., None].view(np.uint8)
    return b.reshape(*rows, nb * KQ_BYTES[qt])


def kquant_weights(qt_gate, qt_down=T.Q6_K):
    """Router (F32), x, and the raw bytes of down (qt_down), gate and up (qt_gate). The router and x
    are the same for every case, and so is a Q6_K down; a down of another type (Q3_K_M's Q4_K, Q2_K's
    Q3_K) comes after gate and up on their generator, so the files made before it keep their bytes."""
    rng = np.random.default_rng(SEED_KQ)
    d, f, E = KQ_D, KQ_F, KQ_E
    router = (rng.standard_normal((E, d)) / np.sqrt(d)).astype(np.float32)
    x = rng.standard_normal((KQ_T, d)).astype(np.float32)
    down = kquant_bytes(rng, T.Q6_K, (E, d), f)
    rng = np.random.default_rng([SEED_KQ, int(qt_gate)])
    gate = kquant_bytes(rng, qt_gate, (E, f), d)
    up = kquant_bytes(rng, qt_gate, (E, f), d)
    if qt_down != T.Q6_K:
        down = kquant_bytes(rng, qt_down, (E, d), f)
    return router, x, gate, up, down


def make_kquant(tag, qt_gate, ftype, qt_down=T.Q6_K):
    router, _, gate, up, down = kquant_weights(qt_gate, qt_down)
    w = writer(f"synthetic-{tag}.gguf", "qwen3moe")
    common(w, f"synthetic qwen3moe {tag.upper()} (gate/up {qt_gate.name}, down {qt_down.name})", ftype, KQ_D, 1,
           2 * KQ_F)
    w.add_expert_feed_forward_length(KQ_F)
    w.add_expert_count(KQ_E)
    w.add_expert_used_count(KQ_K)
    w.add_expert_weights_norm(True)
    token_embd(w, KQ_D)
    norms(w, 0, KQ_D)
    w.add_tensor("blk.0.ffn_gate_inp.weight", router)
    w.add_tensor("blk.0.ffn_gate_exps.weight", gate, raw_dtype=qt_gate)
    w.add_tensor("blk.0.ffn_down_exps.weight", down, raw_dtype=qt_down)
    w.add_tensor("blk.0.ffn_up_exps.weight", up, raw_dtype=qt_gate)
    w.add_tensor("output_norm.weight", np.ones(KQ_D, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
# 9. gpt-oss from hf-moe's gpt_oss case, as convert_hf_to_gguf.py's GptOssModel converts it:
#    gate_up_proj's even rows (and bias entries) become ffn_gate_exps, the odd ones ffn_up_exps;
#    each MXFP4 block becomes ggml's 17 bytes, the scale byte first and the nibbles reordered
#    (HF: byte i = values 2i | 2i+1; ggml: byte j = values j | j+16); router and biases F32.
GPT_OSS = "gpt_oss_T7_d64_f64_E8_k4"


def ggml_mxfp4(blocks, scales):
    """HF [..., G, 16] codes + [..., G] exponents -> ggml MXFP4 bytes [..., G * 17]."""
    lo, hi = blocks & 0x0F, blocks >> 4
    vals = np.empty(blocks.shape[:-1] + (32,), np.uint8)
    vals[..., 0::2], vals[..., 1::2] = lo, hi
    q = vals[..., :16] | (vals[..., 16:] << 4)
    out = np.concatenate([scales[..., None], q], axis=-1)
    return out.reshape(blocks.shape[:-2] + (blocks.shape[-2] * 17,))


def make_gpt_oss():
    sd = hf(GPT_OSS)
    p = "model.layers.0.mlp."
    d, f, E, k = 64, 64, 8, 4
    w = writer("gpt-oss.gguf", "gpt-oss")
    common(w, f"gpt-oss tiny (hf-moe {GPT_OSS})", FT.MOSTLY_MXFP4_MOE, d, 1, f)
    w.add_expert_feed_forward_length(f)
    w.add_expert_count(E)
    w.add_expert_used_count(k)
    token_embd(w, d)
    norms(w, 0, d)
    gu = ggml_mxfp4(sd[p + "experts.gate_up_proj_blocks"], sd[p + "experts.gate_up_proj_scales"])
    dn = ggml_mxfp4(sd[p + "experts.down_proj_blocks"], sd[p + "experts.down_proj_scales"])
    gub = sd[p + "experts.gate_up_proj_bias"]
    w.add_tensor("blk.0.ffn_gate_inp.weight", sd[p + "router.weight"])
    w.add_tensor("blk.0.ffn_gate_inp.bias", sd[p + "router.bias"])
    w.add_tensor("blk.0.ffn_gate_exps.weight", np.ascontiguousarray(gu[:, 0::2]), raw_dtype=T.MXFP4)
    w.add_tensor("blk.0.ffn_gate_exps.bias", np.ascontiguousarray(gub[:, 0::2]))
    w.add_tensor("blk.0.ffn_down_exps.weight", dn, raw_dtype=T.MXFP4)
    w.add_tensor("blk.0.ffn_down_exps.bias", sd[p + "experts.down_proj_bias"])
    w.add_tensor("blk.0.ffn_up_exps.weight", np.ascontiguousarray(gu[:, 1::2]), raw_dtype=T.MXFP4)
    w.add_tensor("blk.0.ffn_up_exps.bias", np.ascontiguousarray(gub[:, 1::2]))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    finish(w)


# ----------------------------------------------------------------------------------------------
def index():
    def hfcase(file, layer, folder, arch, T_, weight_dtype="f32"):
        return dict(file=file, layer=layer, T=T_, x=f"../hf-moe/{folder}/x.npy",
                    y_ref=f"../hf-moe/{folder}/y_ref.npy", hf=folder, deq=None, weight_dtype=weight_dtype,
                    arch=arch)

    mx = "mixtral_T5_d48_f80_E4_k2"
    cases = [
        hfcase("mixtral.gguf", 0, mx, "llama", 5),
        hfcase("mixtral-per-expert.gguf", 0, mx, "llama", 5),
        hfcase("qwen3moe.gguf", 0, mx, "qwen3moe", 5),
        hfcase("olmoe.gguf", 0, "olmoe_T9_d40_f24_E32_k8", "olmoe", 9),
        hfcase("qwen2moe.gguf", 0, "qwen2_moe_T6_d32_f40_E8_k2", "qwen2moe", 6),
        hfcase("qwen2moe-split-00001-of-00003.gguf", 0, "qwen2_moe_T6_d32_f40_E8_k2", "qwen2moe", 6),
        hfcase("deepseek2.gguf", 1, "deepseek_v3_T8_d36_f20_E16_k4_g4", "deepseek2", 8),
        hfcase("gpt-oss.gguf", 0, GPT_OSS, "gpt-oss", 7, "mxfp4"),
    ]
    for tag in ("f16", "bf16", "q8_0", "q4_0", "mixed", "mxfp4"):
        cases.append(dict(file=f"synthetic-{tag}.gguf", layer=0, T=SYN_T, x="synthetic-x.npy", y_ref=None, hf=None,
                          deq=f"synthetic-{tag}-deq.gguf", weight_dtype=tag, arch="qwen3moe"))
    cases.append(dict(file="synthetic-deepseek2-q.gguf", layer=0, T=SYN_T, x="synthetic-x.npy", y_ref=None,
                      hf=None, deq="synthetic-deepseek2-q-deq.gguf", weight_dtype="mixed", arch="deepseek2"))
    # weight_dtype: gate/up's; down is Q6_K (Q4_K in q3_k_m, Q3_K in q2_k)
    for tag, gate_dtype in (("q4_k_m", "q4_k"), ("q5_k_m", "q5_k"), ("q3_k_m", "q3_k"), ("q2_k", "q2_k")):
        cases.append(dict(file=f"synthetic-{tag}.gguf", layer=0, T=KQ_T, x="synthetic-kx.npy", y_ref=None,
                          hf=None, deq=None, weight_dtype=gate_dtype, arch="qwen3moe"))
    with open(os.path.join(HERE, "index.json"), "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


def main():
    # routing margins of the synthetic inputs: no near-ties at the top-k boundary
    router, _, _, _, x = synthetic_weights()
    np.save(os.path.join(HERE, "synthetic-x.npy"), x)
    lg = x.astype(np.float64) @ router.T.astype(np.float64)
    assert topk_margin(lg, SYN_K) > 1e-2, topk_margin(lg, SYN_K)
    m = synthetic_ds_weights()
    s = 1 / (1 + np.exp(-(x.astype(np.float64) @ m["router"].T.astype(np.float64)))) + m["bias"]
    assert topk_margin(s, SYN_K) > 1e-3, topk_margin(s, SYN_K)
    router, x, _, _, _ = kquant_weights(T.Q4_K)
    np.save(os.path.join(HERE, "synthetic-kx.npy"), x)
    lg = x.astype(np.float64) @ router.T.astype(np.float64)
    assert topk_margin(lg, KQ_K) > 1e-2, topk_margin(lg, KQ_K)

    make_mixtral(False)
    make_mixtral(True)
    make_qwen3moe_from_mixtral()
    make_olmoe()
    make_qwen2moe(False)
    make_qwen2moe(True)
    make_deepseek2()
    for tag, qt in (("f16", T.F16), ("bf16", T.BF16), ("q8_0", T.Q8_0), ("q4_0", T.Q4_0)):
        make_synthetic_qwen3(tag, qt, qt, qt, False)
        make_synthetic_qwen3(tag, qt, qt, qt, True)
    make_synthetic_qwen3("mixed", T.Q4_0, T.Q4_0, T.Q8_0, False)
    make_synthetic_qwen3("mixed", T.Q4_0, T.Q4_0, T.Q8_0, True)
    make_synthetic_deepseek2(False)
    make_synthetic_deepseek2(True)
    make_iq2_xxs()
    make_unknown_arch()
    make_kquant("q4_k_m", T.Q4_K, FT.MOSTLY_Q4_K_M)
    make_kquant("q5_k_m", T.Q5_K, FT.MOSTLY_Q5_K_M)
    make_kquant("q3_k_m", T.Q3_K, FT.MOSTLY_Q3_K_M, T.Q4_K)
    make_kquant("q2_k", T.Q2_K, FT.MOSTLY_Q2_K, T.Q3_K)
    make_synthetic_qwen3("mxfp4", T.MXFP4, T.MXFP4, T.MXFP4, False)
    make_synthetic_qwen3("mxfp4", T.MXFP4, T.MXFP4, T.MXFP4, True)
    make_gpt_oss()
    index()


if __name__ == "__main__":
    main()
