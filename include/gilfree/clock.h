/* gilfree core: time and machine facts. */
#ifndef GILFREE_CLOCK_H
#define GILFREE_CLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC). */
int64_t gf_now_ns(void);

/* The number of CPUs this process may use: the affinity mask
 * (sched_getaffinity), further limited by a cgroup CPU quota (cgroup v2
 * cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), rounded up, at least 1. */
int gf_usable_cpus(void);

/* A hint to the CPU inside spin loops (pause / yield instruction). */
void gf_cpu_relax(void);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_CLOCK_H */
