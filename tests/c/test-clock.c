/* Tests: clock, CPU relax, usable CPU count and cgroup parsing. */
#include <unistd.h>

#include "../../src/core/internal.h"
#include "runner.h"

TEST_IMPL(clock_monotonic)
{
    int64_t a = gf_now_ns();
    gft_sleep_ms(5);
    int64_t b = gf_now_ns();
    ASSERT_GE(b - a, 5000000);
    for (int i = 0; i < 1000; i++) {
        gf_cpu_relax();
        int64_t c = gf_now_ns();
        ASSERT_GE(c, b);
        b = c;
    }
}

TEST_IMPL(usable_cpus)
{
    int n = gf_usable_cpus();
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    long onln = sysconf(_SC_NPROCESSORS_ONLN);
    long most = conf > onln ? conf : onln;
    printf("gf_usable_cpus() = %d, affinity %d, sysconf conf %ld onln %ld\n", n,
           gf__affinity_cpus(), conf, onln);
    ASSERT_GE(n, 1);
    ASSERT_LE(n, most);
    int aff = gf__affinity_cpus();
    if (aff > 0) {
        ASSERT_LE(n, aff);
    }
}

TEST_IMPL(cgroup_parse)
{
    /* cgroup v2 cpu.max */
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("max 100000\n"), 0);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("max\n"), 0);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("200000 100000\n"), 2);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("150000 100000\n"), 2); /* rounded up */
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("50000 100000"), 1);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("1000 100000"), 1);      /* at least 1 */
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("400000 100000 \n"), 4);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse(""), 0);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("garbage"), 0);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("100000"), 0);           /* no period */
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("100000 0"), 0);
    ASSERT_EQ(gf__cgroup2_cpu_max_parse("100000 100000 x"), 0);

    /* cgroup v1 cfs quota / period */
    ASSERT_EQ(gf__cgroup1_quota_parse("-1\n", "100000\n"), 0);
    ASSERT_EQ(gf__cgroup1_quota_parse("300000\n", "100000\n"), 3);
    ASSERT_EQ(gf__cgroup1_quota_parse("250000\n", "100000\n"), 3);
    ASSERT_EQ(gf__cgroup1_quota_parse("10\n", "100000\n"), 1);
    ASSERT_EQ(gf__cgroup1_quota_parse("abc", "100000"), 0);
    ASSERT_EQ(gf__cgroup1_quota_parse("100000", "0"), 0);
}
