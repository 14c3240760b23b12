/*
 * json.h — the library's one way to parse JSON (json.c): cJSON allocating through
 * moe_malloc, out-of-memory told apart from bad input, trailing text and duplicate keys
 * refused.
 */
#ifndef MOE_JSON_H
#define MOE_JSON_H

#include "internal.h"

#include <cjson/cJSON.h>

/* Whether s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
bool moe_utf8_valid(const uint8_t *s, size_t n);

/* Parses `len` bytes holding one JSON value (whitespace may follow it) into *out (cJSON_Delete
 * it). Errors name `what` (a file path): MOE_ERROR_FORMAT for bad UTF-8, bad JSON, trailing
 * text, a key repeated in one object, or a string holding a NUL or a raw control byte;
 * MOE_ERROR_OUT_OF_MEMORY when an allocation failed. */
moe_status moe_json_parse(moe_context *ctx, const char *what, const char *text, size_t len, cJSON **out);

#endif /* MOE_JSON_H */
