/*
 * fuzz_model.h — the model-directory mode of the fuzz target (fuzz_model.c).
 */
#ifndef MOE_FUZZ_MODEL_H
#define MOE_FUZZ_MODEL_H

#include <stddef.h>
#include <stdint.h>

/* Writes the model directory `data` describes (see fuzz_model.c) and opens it. */
void fuzz_model_dir(const uint8_t *data, size_t size);

#endif
