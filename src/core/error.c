/* gilfree core: error names and messages, generated from GF_ERRNO_MAP. */
#include "internal.h"

const char *
gf_strerror(int err)
{
    switch (err) {
#define GF__STRERROR_CASE(name, value, msg) \
    case GF_##name:                         \
        return msg;
        GF_ERRNO_MAP(GF__STRERROR_CASE)
#undef GF__STRERROR_CASE
    default:
        return "unknown error";
    }
}

const char *
gf_err_name(int err)
{
    switch (err) {
#define GF__ERR_NAME_CASE(name, value, msg) \
    case GF_##name:                         \
        return "GF_" #name;
        GF_ERRNO_MAP(GF__ERR_NAME_CASE)
#undef GF__ERR_NAME_CASE
    default:
        return "GF_UNKNOWN";
    }
}
