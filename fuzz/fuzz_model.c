/*
 * fuzz_model.c — the model-directory mode of the fuzz target (fuzz_parsers.c picks it): one
 * input describes a small Hugging Face model directory, which is written to a temporary
 * directory of this process and opened through the public API as moe-run does —
 * moe_model_open, _get_info, _layer_desc, _create_layer on a one-thread CPU context with a
 * 4-token budget, and one forward — so the shard index, the tensor lookup, the config's
 * reduction to a layer and the weight upload see fuzzed input together. Every file written is
 * then read back through the bounded reader (src/file.h) with a small limit.
 *
 * Input, after the target's selector byte:
 *   flags   bits 0-1 the layer, bit 2 a Switch decoder block, bit 3 the passthrough drop
 *           policy; bits 4-7 `kind`: 0-12 the bounded reader's limit, kind² × 64 bytes;
 *           13 config.json is a FIFO, 14 the weights file is a directory, 15 it is a link
 *           to /dev/zero (each must be refused at once as "not a regular file"); kind
 *           mod 6 also picks the layer's storage format (moe_dtype: 0 = the checkpoint's)
 *   alloc   0, or the allocation point that fails (moe_test_inject_alloc_failure): 1-127 as
 *           is, 128-255 as (alloc - 127) × 16
 *   then up to four parts split by FUZZ_SPLIT: config.json, model.safetensors.index.json,
 *   and two shards. An empty index part means one unsharded model.safetensors (the first
 *   shard part); otherwise the shards are model-0000{1,2}-of-00002.safetensors.
 * A property that fails aborts, so libFuzzer reports it like a crash.
 */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_model.h"

#include "../src/file.h"

#include <moe.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_SPLIT "\n--8<--\n"

static const char *const names[] = {"config.json", "model.safetensors.index.json", "model.safetensors",
                                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
enum { N_NAMES = sizeof names / sizeof names[0] };

static char g_dir[512];
static int g_verbose = -1; /* MOE_FUZZ_VERBOSE=1: say how far each input got (to check seeds) */

static void say(const char *step, moe_status st, const char *detail)
{
    if (g_verbose < 0) g_verbose = getenv("MOE_FUZZ_VERBOSE") != NULL;
    if (g_verbose) fprintf(stderr, "fuzz_model: %s: %s %s\n", step, moe_status_string(st), st ? detail : "");
}

static void path_of(const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

/* Removes whatever the last input left: files, FIFOs, links, the directory special case. */
static void clear_dir(void)
{
    char p[600];
    for (int i = 0; i < N_NAMES; i++) {
        path_of(names[i], p, sizeof p);
        if (unlink(p) != 0) rmdir(p);
    }
}

static void remove_dir(void)
{
    clear_dir();
    rmdir(g_dir);
}

static void need(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_model: property violated: %s (last error: %s)\n", what, moe_last_error());
        abort();
    }
}

static void write_file(const char *name, const uint8_t *data, size_t size)
{
    char p[600];
    path_of(name, p, sizeof p);
    const int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    need(fd >= 0, "cannot create a file in the temporary directory");
    size_t done = 0;
    while (done < size) {
        const ssize_t w = write(fd, data + done, size - done);
        need(w > 0, "cannot write a file in the temporary directory");
        done += (size_t)w;
    }
    close(fd);
}

/* The bounded reader on a file just written: the bytes back when they fit the limit, a
 * refusal naming the limit when not. */
static void check_reader(const char *name, const uint8_t *data, size_t size, uint64_t limit)
{
    char p[600], err[1024];
    path_of(name, p, sizeof p);
    uint8_t *got = NULL;
    size_t n = 0;
    const moe_file_error e =
        moe_file_read_all(p, limit, "a fuzz file", malloc, free, &got, &n, err, sizeof err);
    if (size > limit) {
        need(e == MOE_FILE_TOO_LARGE && got == NULL && strstr(err, "more than"),
             "a file over the limit was read");
        return;
    }
    need(e == MOE_FILE_OK && n == size && (size == 0 || !memcmp(got, data, size)) && got[size] == 0,
         "the bounded reader did not return the file's bytes");
    free(got);
}

/* Whether the message `msg` is about the file `path` ("PATH: ..."). */
static bool about(const char *msg, const char *path)
{
    const char *at = strstr(msg, path);
    return at && at[strlen(path)] == ':';
}

/* Splits data into parts at FUZZ_SPLIT. */
static int split(const uint8_t *data, size_t size, const uint8_t **part, size_t *len, int max)
{
    const size_t sl = sizeof FUZZ_SPLIT - 1;
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; n < max - 1 && i + sl <= size; i++)
        if (!memcmp(data + i, FUZZ_SPLIT, sl)) {
            part[n] = data + start, len[n++] = i - start;
            start = i + sl;
            i += sl - 1;
        }
    part[n] = data + start, len[n++] = size - start;
    return n;
}

void fuzz_model_dir(const uint8_t *data, size_t size)
{
    if (!g_dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/moe-fuzz-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        need(mkdtemp(g_dir) != NULL, "cannot create the temporary directory");
        atexit(remove_dir);
    }
    if (size < 2) return;
    const uint8_t flags = data[0], alloc = data[1];
    const int kind = flags >> 4;
    data += 2, size -= 2;
    const uint8_t *part[4] = {0};
    size_t len[4] = {0};
    const int n_parts = split(data, size, part, len, 4);

    clear_dir();
    const bool sharded = n_parts > 1 && len[1] > 0;
    write_file(names[0], part[0], len[0]);
    if (sharded) write_file(names[1], part[1], len[1]);
    for (int s = 0; s < (sharded ? 2 : 1); s++)
        if (2 + s < n_parts) write_file(names[sharded ? 3 + s : 2], part[2 + s], len[2 + s]);

    const char *special = NULL;
    char p[600];
    if (kind >= 13) {
        special = kind == 13 ? names[0] : names[sharded ? 3 : 2];
        path_of(special, p, sizeof p);
        unlink(p);
        const int made = kind == 13 ? mkfifo(p, 0600) : kind == 14 ? mkdir(p, 0700) : symlink("/dev/zero", p);
        need(made == 0, "cannot make the special file");
    }

    const int64_t inject = alloc == 0 ? 0 : alloc < 128 ? alloc : (int64_t)(alloc - 127) * 16;
    moe_context *ctx = NULL;
    const moe_context_desc cdesc = {.struct_size = sizeof cdesc, .backend = MOE_BACKEND_CPU, .n_threads = 1};
    need(moe_context_create(&cdesc, &ctx) == MOE_OK, "cannot create a CPU context");
    if (inject) moe_test_inject_alloc_failure(inject);

    moe_model *sentinel = (moe_model *)&sentinel, *model = sentinel;
    moe_status st = moe_model_open(g_dir, &model);
    say("moe_model_open", st, moe_last_error());
    if (st != MOE_OK) {
        need(model == sentinel, "moe_model_open wrote its out-param on failure");
        need(moe_last_error()[0] != '\0', "moe_model_open failed without a message");
        need(inject || st != MOE_ERROR_OUT_OF_MEMORY, "out of memory without an injected failure");
    }
    if (special) {
        /* config.json is read first, so a FIFO there is always what is refused; a weights
         * file may be refused for it, or the model fail earlier (a bad config) or never reach
         * it (an index that does not name it). Whenever the message is about it, it says why. */
        if (kind == 13) need(st == MOE_ERROR_IO || inject, "a FIFO config.json was not refused");
        if (st == MOE_ERROR_IO && about(moe_last_error(), p))
            need(strstr(moe_last_error(), "not a regular file") != NULL,
                 "a FIFO, directory or device was not refused as not a regular file");
    }
    if (st == MOE_OK) {
        moe_model_info info = {.struct_size = sizeof info};
        need(moe_model_get_info(model, &info) == MOE_OK, "moe_model_get_info failed");
        const moe_model_layer_options opts = {.struct_size = sizeof opts,
                                              .max_tokens = 4,
                                              .drop_policy =
                                                  (flags & 8) ? MOE_DROP_PASSTHROUGH : MOE_DROP_ZERO,
                                              .decoder = (flags >> 2) & 1,
                                              .weight_dtype = (moe_dtype)((flags >> 4) % 6)};
        const int64_t layer = flags & 3;
        moe_layer_desc d = {.struct_size = sizeof d};
        const moe_status sd = moe_model_layer_desc(model, layer, &opts, &d);
        moe_layer *l = NULL;
        const moe_status sc = moe_model_create_layer(ctx, model, layer, &opts, &l);
        say("moe_model_create_layer", sc, moe_context_error(ctx));
        need(inject || sd == MOE_OK || sc == sd,
             "moe_model_create_layer disagrees with moe_model_layer_desc");
        need(sc == MOE_OK || l == NULL, "moe_model_create_layer wrote its out-param on failure");
        /* The layer owns its weights: the model goes first. */
        moe_model_close(model);
        if (sc == MOE_OK) {
            need(sd == MOE_OK || inject, "a layer was created where its desc was refused");
            const int64_t T = 2, D = d.d_model;
            float *x = malloc(sizeof(float) * (size_t)(T * D)), *y = malloc(sizeof(float) * (size_t)(T * D));
            need(x && y, "out of memory in the harness");
            for (int64_t i = 0; i < T * D; i++) x[i] = (float)((i * 7) % 13) / 6.0f - 1.0f;
            const moe_status sf = moe_layer_forward(l, T, x, y, NULL);
            say("moe_layer_forward", sf, moe_context_error(ctx));
            need(sf == MOE_OK || inject, "a forward on a created layer failed");
            free(x);
            free(y);
            moe_layer_destroy(l);
        }
    }
    moe_test_inject_alloc_failure(0);
    moe_context_destroy(ctx);

    if (!special) {
        const uint64_t limit = (uint64_t)kind * (uint64_t)kind * 64;
        check_reader(names[0], part[0], len[0], limit);
        if (sharded) check_reader(names[1], part[1], len[1], limit);
    } else {
        /* The reader alone on the special file: refused, without blocking or reading. */
        char err[1024];
        uint8_t *got = NULL;
        size_t n = 0;
        const moe_file_error e =
            moe_file_read_all(p, 1 << 20, "a fuzz file", malloc, free, &got, &n, err, sizeof err);
        need(e == MOE_FILE_NOT_REGULAR && got == NULL && strstr(err, "not a regular file"),
             "the bounded reader accepted a FIFO, directory or device");
    }
}
