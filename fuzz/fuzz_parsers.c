/*
 * fuzz_parsers.c — libFuzzer target for every reader of untrusted bytes moe has: the
 * safetensors container (header length, UTF-8 JSON header, offsets), config.json (with the
 * derived layer desc and sparse-layer rule), the .npy reader of moe-run, and a whole model
 * directory (fuzz_model.c: shard index, tensor lookup, layer creation, the bounded file
 * reader), and a GGUF file (gguf.c: its header, then what gguf_arch.c reads of it: the
 * architecture's keys and each MoE layer's tensors). The first byte picks the mode (mod 5);
 * the rest is its input. Built with
 * -DMOE_FUZZ=ON and clang (-fsanitize=fuzzer,address,undefined) with the whole library
 * compiled in; CI runs it for a bounded time on fuzz/corpus.
 */
#include "../src/model/model_internal.h"
#include "../tools/npy.h"
#include "fuzz_model.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A GGUF file in memory: parsed, every key read through the typed getters, then taken as a
 * one-file model — its architecture and every MoE layer's tensors looked up (stacked, fused or
 * per expert; views into the bytes, each touched at both ends). */
static void fuzz_gguf(const uint8_t *buf, size_t size)
{
    moe_tensor_file f;
    if (moe_gguf_parse(NULL, "fuzz.gguf", buf, size, &f) != MOE_OK) return;
    for (size_t i = 0; i < f.n_kvs; i++) {
        uint64_t u;
        double d;
        bool b, found;
        char s[64];
        (void)moe_gguf_get_uint(NULL, &f, f.kvs[i].key, &u, &found);
        (void)moe_gguf_get_float(NULL, &f, f.kvs[i].key, &d, &found);
        (void)moe_gguf_get_bool(NULL, &f, f.kvs[i].key, &b, &found);
        (void)moe_gguf_get_string(NULL, &f, f.kvs[i].key, s, sizeof s, &found);
    }
    moe_model m = {.dir = "fuzz.gguf", .weights_label = "fuzz.gguf", .gguf = true, .files = &f, .n_files = 1};
    if (moe_model_index_tensors(&m) == MOE_OK && moe_gguf_read_arch(NULL, &m) == MOE_OK &&
        m.cfg.n_experts <= 4096) {
        const size_t E = (size_t)m.cfg.n_experts;
        moe_tensor_view *v = calloc(3 * E, sizeof *v);
        volatile uint8_t sink = 0;
        for (int64_t l = 0; v && l < m.cfg.n_layers && l < 64; l++) {
            if (!m.arch.moe_layer[l]) continue;
            moe_layer_refs r = {.gate = v, .up = v + E, .down = v + 2 * E};
            moe_layer_desc d;
            if (moe_gguf_layer_lookup(NULL, &m, l, &d, &r) != MOE_OK) continue;
            for (size_t i = 0; i < 3 * E; i++)
                if (v[i].data && v[i].bytes) sink ^= v[i].data[0] ^ v[i].data[v[i].bytes - 1];
        }
        (void)sink;
        free(v);
    }
    moe_free(m.arch.moe_layer);
    moe_free(m.tensors);
    f.map = NULL; /* the bytes are ours, not a mapping */
    moe_tensor_file_close(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t which = data[0] % 5;
    data++, size--;
    /* A private copy, so reads past `size` are caught exactly by ASan. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (which == 0) {
        moe_tensor_file f;
        if (moe_st_parse(NULL, "fuzz.safetensors", buf, size, &f) == MOE_OK) {
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < f.n_tensors; i++) {
                const moe_file_tensor *t = moe_tensor_file_find(&f, f.tensors[i].name);
                if (t && t->bytes) sink ^= t->data[0] ^ t->data[t->bytes - 1];
            }
            (void)sink;
            f.map = NULL; /* the bytes are ours, not a mapping */
            moe_tensor_file_close(&f);
        }
    } else if (which == 1) {
        moe_hf_config c;
        if (moe_hf_config_parse(NULL, "fuzz/config.json", (const char *)buf, size, &c) == MOE_OK) {
            moe_layer_desc d;
            moe_hf_config_desc(&c, &d);
            for (int64_t l = -1; l < 8; l++) (void)moe_hf_layer_is_moe(&c, l, l & 1);
        }
    } else if (which == 3) {
        fuzz_model_dir(buf, size);
    } else if (which == 4) {
        fuzz_gguf(buf, size);
    } else {
        npy_array a;
        char err[256];
        if (npy_parse(buf, size, &a, err, sizeof err) == 0 &&
            npy_check_f32_matrix(&a, 0, err, sizeof err) == 0) {
            volatile uint8_t sink = 0;
            if (a.data_bytes) sink ^= a.data[0] ^ a.data[a.data_bytes - 1];
            (void)sink;
        }
    }
    free(buf);
    return 0;
}
