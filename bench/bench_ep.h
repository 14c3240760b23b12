/*
 * bench_ep.h — moe-bench --ep: one MoE layer spread over the ranks of MPI_COMM_WORLD with
 * moe_mpi (expert parallelism), run under mpirun. Each rank holds its contiguous range of the
 * experts on its own context and brings its own tokens (the rows after the lower ranks' in one
 * global input, so the ranks' tokens in rank order are the tokens of a one-process run). Per
 * (format, token count) every rank runs the same fixed number of forwards, each started after a
 * barrier, and rank 0 prints and writes what each rank measured: wall time, the part inside the
 * exchange (moe_layer_get_ep_stats), compute = wall − exchange, rows and bytes to and from the
 * other ranks, and in total the slowest rank's time per forward and tokens/s.
 *
 * Built only with moe_mpi (MOE_MPI, which defines MOE_BENCH_EP); without it --ep is refused.
 */
#ifndef MOE_BENCH_EP_H
#define MOE_BENCH_EP_H

#include "bench_config.h"

/* Runs --ep (MPI_Init and MPI_Finalize included). Rank 0 prints the results and writes --json,
 * one object per (format, token count); the other ranks print only their own errors. Returns an
 * exit status, the same on every rank. */
int bench_ep_run(const bench_config *cfg);

#endif /* MOE_BENCH_EP_H */
