/* gilfree core: monotonic time, CPU relax hint, usable CPU count. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int64_t
gf_now_ns(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC cannot fail with a valid pointer. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * GF__NS_PER_SEC + ts.tv_nsec;
}

void
gf_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#elif defined(__powerpc__) || defined(__powerpc64__)
    __asm__ __volatile__("or 27,27,27" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* --- affinity ------------------------------------------------------------ */

int
gf__affinity_cpus(void)
{
#if defined(__linux__)
    /* Grow the mask until the kernel accepts its size (machines with more
     * than CPU_SETSIZE CPUs). */
    for (int ncpus = 1024; ncpus <= (1 << 20); ncpus *= 2) {
        cpu_set_t *set = CPU_ALLOC(ncpus);
        if (set == NULL) {
            return 0;
        }
        size_t size = CPU_ALLOC_SIZE(ncpus);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int count = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return count;
        }
        int err = errno;
        CPU_FREE(set);
        if (err != EINVAL) {
            return 0;
        }
    }
    return 0;
#else
    return 0;
#endif
}

/* --- cgroup limits ------------------------------------------------------- */

/* Ceiling of quota / period, at least 1; 0 for no limit. */
static int
gf__quota_to_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0) {
        return 0;
    }
    long long cpus = quota / period + (quota % period != 0);
    if (cpus > INT_MAX) {
        return 0;
    }
    return cpus < 1 ? 1 : (int)cpus;
}

/* Parse a decimal integer that may be surrounded by blanks; 0 on success. */
static int
gf__parse_ll(const char *text, const char **end, long long *out)
{
    char *stop;
    errno = 0;
    long long v = strtoll(text, &stop, 10);
    if (stop == text || errno != 0) {
        return -1;
    }
    *out = v;
    if (end != NULL) {
        *end = stop;
    }
    return 0;
}

static int
gf__only_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n') {
        s++;
    }
    return *s == '\0';
}

/* cgroup v2 cpu.max: "<quota> <period>" or "max <period>". */
int
gf__cgroup2_cpu_max_parse(const char *text)
{
    while (*text == ' ' || *text == '\t') {
        text++;
    }
    if (strncmp(text, "max", 3) == 0) {
        return 0;
    }
    long long quota, period;
    const char *rest;
    if (gf__parse_ll(text, &rest, &quota) != 0) {
        return 0;
    }
    if (gf__parse_ll(rest, &rest, &period) != 0 || !gf__only_blanks(rest)) {
        return 0;
    }
    return gf__quota_to_cpus(quota, period);
}

/* cgroup v1 cpu.cfs_quota_us ("-1" = no limit) and cpu.cfs_period_us. */
int
gf__cgroup1_quota_parse(const char *quota_text, const char *period_text)
{
    long long quota, period;
    const char *rest;
    if (gf__parse_ll(quota_text, &rest, &quota) != 0 || !gf__only_blanks(rest)) {
        return 0;
    }
    if (gf__parse_ll(period_text, &rest, &period) != 0 || !gf__only_blanks(rest)) {
        return 0;
    }
    return gf__quota_to_cpus(quota, period);
}

#if defined(__linux__)
/* Read a small text file into buf (NUL-terminated); 0 on success. */
static int
gf__read_small_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return -1;
    }
    size_t n = fread(buf, 1, size - 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        return -1;
    }
    buf[n] = '\0';
    return 0;
}

/* Keep the tighter of two limits (0 = none). */
static int
gf__tighter(int a, int b)
{
    if (a == 0) {
        return b;
    }
    if (b == 0) {
        return a;
    }
    return a < b ? a : b;
}

#define GF__PATH_MAX 4096
#define GF__CGROUP_MAX_DEPTH 64

/* Walk from base/cgpath up to base, reading the CPU limit of each level
 * (v2: cpu.max; v1: cpu.cfs_quota_us + cpu.cfs_period_us) and return the
 * tightest.  A limit on an ancestor caps its descendants.  Walking up also
 * covers containers where /proc/self/cgroup names a host path that the
 * container's mount does not have: the root of the mount is still read. */
static int
gf__cgroup_walk(const char *base, const char *cgpath, int v2)
{
    char dir[GF__PATH_MAX];
    char file[GF__PATH_MAX + 32];
    char text[128];
    char text2[128];
    int limit = 0;

    int n = snprintf(dir, sizeof(dir), "%s%s", base, cgpath);
    if (n < 0 || (size_t)n >= sizeof(dir)) {
        return 0;
    }
    size_t base_len = strlen(base);
    for (int depth = 0; depth < GF__CGROUP_MAX_DEPTH; depth++) {
        /* Strip a trailing slash (the root path "/" gives "base/"). */
        size_t len = strlen(dir);
        while (len > base_len && dir[len - 1] == '/') {
            dir[--len] = '\0';
        }
        if (v2) {
            snprintf(file, sizeof(file), "%s/cpu.max", dir);
            if (gf__read_small_file(file, text, sizeof(text)) == 0) {
                limit = gf__tighter(limit, gf__cgroup2_cpu_max_parse(text));
            }
        }
        else {
            snprintf(file, sizeof(file), "%s/cpu.cfs_quota_us", dir);
            if (gf__read_small_file(file, text, sizeof(text)) == 0) {
                snprintf(file, sizeof(file), "%s/cpu.cfs_period_us", dir);
                if (gf__read_small_file(file, text2, sizeof(text2)) == 0) {
                    limit = gf__tighter(limit, gf__cgroup1_quota_parse(text, text2));
                }
            }
        }
        if (len <= base_len) {
            break;
        }
        char *slash = strrchr(dir + base_len, '/');
        if (slash == NULL) {
            break;
        }
        *slash = '\0';
    }
    return limit;
}

/* Is `name` one of the comma-separated controllers in `list`? */
static int
gf__has_controller(const char *list, size_t list_len, const char *name)
{
    size_t name_len = strlen(name);
    const char *p = list;
    const char *end = list + list_len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        if ((size_t)(stop - p) == name_len && memcmp(p, name, name_len) == 0) {
            return 1;
        }
        p = stop + 1;
    }
    return 0;
}

/* The tightest CPU quota of this process's cgroups (v2 and v1), 0 = none. */
static int
gf__cgroup_cpu_limit(void)
{
    static const char *const v2_bases[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    static const char *const v1_bases[] = {
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/cpuacct,cpu",
    };
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL) {
        return 0;
    }
    int limit = 0;
    char line[GF__PATH_MAX];
    while (fgets(line, sizeof(line), f) != NULL) {
        /* "<id>:<controllers>:<path>\n" */
        char *c1 = strchr(line, ':');
        if (c1 == NULL) {
            continue;
        }
        char *c2 = strchr(c1 + 1, ':');
        if (c2 == NULL) {
            continue;
        }
        char *path = c2 + 1;
        path[strcspn(path, "\n")] = '\0';
        if (path[0] != '/') {
            continue;
        }
        size_t controllers_len = (size_t)(c2 - (c1 + 1));
        if (strncmp(line, "0:", 2) == 0 && controllers_len == 0) {
            for (size_t i = 0; i < sizeof(v2_bases) / sizeof(v2_bases[0]); i++) {
                limit = gf__tighter(limit, gf__cgroup_walk(v2_bases[i], path, 1));
            }
        }
        else if (gf__has_controller(c1 + 1, controllers_len, "cpu")) {
            for (size_t i = 0; i < sizeof(v1_bases) / sizeof(v1_bases[0]); i++) {
                limit = gf__tighter(limit, gf__cgroup_walk(v1_bases[i], path, 0));
            }
        }
    }
    fclose(f);
    return limit;
}
#endif /* __linux__ */

int
gf_usable_cpus(void)
{
    int cpus = gf__affinity_cpus();
    if (cpus <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        cpus = online > 0 && online < INT_MAX ? (int)online : 1;
    }
#if defined(__linux__)
    int limit = gf__cgroup_cpu_limit();
    if (limit > 0 && limit < cpus) {
        cpus = limit;
    }
#endif
    return cpus < 1 ? 1 : cpus;
}
