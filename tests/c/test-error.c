/* Tests: error codes, names and messages. */
#include <errno.h>
#include <limits.h>

#include "runner.h"

TEST_IMPL(error_table)
{
    int count = 0;
#define GFT__CHECK(name, value, msg)                          \
    do {                                                      \
        ASSERT_LT(GF_##name, 0);                              \
        ASSERT_EQ(GF_##name, value);                          \
        ASSERT_STR_EQ(gf_strerror(GF_##name), msg);           \
        ASSERT_STR_EQ(gf_err_name(GF_##name), "GF_" #name);   \
        count++;                                              \
    } while (0);
    GF_ERRNO_MAP(GFT__CHECK)
#undef GFT__CHECK
    ASSERT_EQ(count, 14);

    /* Codes are distinct: every value maps back to its own name. */
    int codes[] = {
#define GFT__VALUE(name, value, msg) GF_##name,
        GF_ERRNO_MAP(GFT__VALUE)
#undef GFT__VALUE
    };
    for (int i = 0; i < count; i++) {
        for (int j = i + 1; j < count; j++) {
            ASSERT_NE(codes[i], codes[j]);
        }
    }

    /* errno-backed codes are negated errnos; private ones sit below -4000. */
    ASSERT_EQ(GF_EINVAL, -EINVAL);
    ASSERT_EQ(GF_ETIMEDOUT, -ETIMEDOUT);
    ASSERT_EQ(GF_EINTR, -EINTR);
    ASSERT_EQ(GF_EPIPE, -EPIPE);
    ASSERT_EQ(GF_EPROTO, -EPROTO);
    ASSERT_EQ(GF_EMSGSIZE, -EMSGSIZE);
    ASSERT_EQ(GF_ESRCH, -ESRCH);
    ASSERT_LT(GF_ECLOSED, -4000);
    ASSERT_LT(GF_EFORKED, -4000);

    /* Anything else, including 0 and positive values, is unknown. */
    int unknown[] = {0, 1, EINVAL, -1234567, INT_MIN, INT_MAX, -4079};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        ASSERT_STR_EQ(gf_strerror(unknown[i]), "unknown error");
        ASSERT_STR_EQ(gf_err_name(unknown[i]), "GF_UNKNOWN");
    }
}
