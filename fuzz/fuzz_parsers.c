/*
 * fuzz_parsers.c — libFuzzer target for every reader of untrusted bytes moe has: the
 * safetensors container (header length, UTF-8 JSON header, offsets), config.json (with the
 * derived layer desc and sparse-layer rule), the .npy reader of moe-run, and a whole model
 * directory (fuzz_model.c: shard index, tensor lookup, layer creation, the bounded file
 * reader). The first byte picks the mode (mod 4); the rest is its input. Built with
 * -DMOE_FUZZ=ON and clang (-fsanitize=fuzzer,address,undefined) with the whole library
 * compiled in; CI runs it for a bounded time on fuzz/corpus.
 */
#include "../src/model/model_internal.h"
#include "../tools/npy.h"
#include "fuzz_model.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t which = data[0] % 4;
    data++, size--;
    /* A private copy, so reads past `size` are caught exactly by ASan. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (which == 0) {
        moe_st_file f;
        if (moe_st_parse(NULL, "fuzz.safetensors", buf, size, &f) == MOE_OK) {
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < f.n_tensors; i++) {
                const moe_st_tensor *t = moe_st_find(&f, f.tensors[i].name);
                if (t && t->bytes) sink ^= t->data[0] ^ t->data[t->bytes - 1];
            }
            (void)sink;
            f.map = NULL; /* the bytes are ours, not a mapping */
            moe_st_close(&f);
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
