/*
 * plan.h — what the three passes of the plan (plan_count.h, plan_scan.h, plan_scatter.h)
 * share: the tokens per block, one invocation's share of the (token, slot) entries. Counts
 * and positions are kept per block of MOE_PLAN_BLOCK tokens, so the host sizes the plan's
 * workspace as ceil(T / MOE_PLAN_BLOCK) · E integers.
 */
#ifndef MOE_KERNEL_PLAN_H
#define MOE_KERNEL_PLAN_H

#define MOE_PLAN_BLOCK 32

#endif
