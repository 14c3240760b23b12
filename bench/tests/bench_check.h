/*
 * bench_check.h — the bench tests' one assertion: CHECK(cond) reports the file, line and
 * condition that failed and counts it in `failures`, which each test program defines and turns
 * into its exit status; the test goes on, so one run lists every failure.
 */
#ifndef MOE_BENCH_CHECK_H
#define MOE_BENCH_CHECK_H

#include <stdio.h>

extern int failures;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
            failures++;                                                                                      \
        }                                                                                                    \
    } while (0)

#endif
