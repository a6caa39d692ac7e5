/* gilfree core: memfd-backed shared memory regions.
 *
 * Why memfd rather than shm_open: the region has no name, so there is no
 * window in which another process (or user) could open it, and nothing to
 * unlink if we die: the memory goes away with the last descriptor and the
 * last mapping.  (loky and multiprocessing.shared_memory leave entries in
 * /dev/shm when a process is killed; we cannot.)
 *
 * Why the seals: a MAP_SHARED mapping of a file that is later truncated
 * raises SIGBUS on access past the new end.  With F_SEAL_SHRINK nobody,
 * including a buggy or hostile peer holding the descriptor, can shrink the
 * file, and gf_shm_map() insists on that seal before it maps.  F_SEAL_GROW
 * keeps the size the creator chose, so both sides agree on it.  F_SEAL_SEAL
 * is deliberately not added: the creator may later want F_SEAL_FUTURE_WRITE
 * (hand a finished buffer to a reader that cannot modify it).
 *
 * Why GF_SHM_PRIVATE with GF_SHM_POPULATE is two steps: MAP_POPULATE on a
 * writable MAP_PRIVATE mapping pre-faults every page for writing, which
 * copies each one at once (the kernel breaks copy-on-write up front).  The
 * mapping would then be a snapshot that no longer shows the region's later
 * changes, and would cost a full copy of the memory.  So it is populated
 * read-only (page tables point at the region's pages) and made writable
 * afterwards with mprotect(), which leaves those entries copy-on-write.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <sys/stat.h>
#endif

#include "internal.h"

#define GF__SHM_DEFAULT_NAME "gilfree"

static void
gf__shm_reset(gf_shm_t *shm)
{
    shm->addr = NULL;
    shm->size = 0;
    shm->fd = -1;
}

#if defined(__linux__)

/* The largest size we accept: it must fit in off_t (ftruncate, fstat) and
 * in ptrdiff_t (pointer arithmetic over the mapping). */
#define GF__SHM_MAX_SIZE ((size_t)GF__MIN((uint64_t)INT64_MAX, (uint64_t)PTRDIFF_MAX))

int
gf_shm_create_ex(size_t size, const char *name, unsigned flags, gf_shm_t *out)
{
    if (out == NULL) {
        return GF_EINVAL;
    }
    gf__shm_reset(out);
    if (size == 0 || size > GF__SHM_MAX_SIZE || (flags & ~GF_SHM_POPULATE) != 0) {
        return GF_EINVAL;
    }
    int fd = memfd_create(name != NULL ? name : GF__SHM_DEFAULT_NAME,
                          MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        return -errno;
    }
    int rc;
    while ((rc = ftruncate(fd, (off_t)size)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
        goto fail;
    }
    if ((flags & GF_SHM_POPULATE) != 0) {
        /* Allocate every page in one call before mapping: measured here,
         * fallocate + populate costs ~30% less than a fault per page
         * (the kernel zeroes the pages either way).  Best effort: a file
         * system without fallocate still gets MAP_POPULATE. */
        while (fallocate(fd, 0, 0, (off_t)size) != 0 && errno == EINTR) {
        }
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        goto fail;
    }
    int mapflags = MAP_SHARED | ((flags & GF_SHM_POPULATE) ? MAP_POPULATE : 0);
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, mapflags, fd, 0);
    if (addr == MAP_FAILED) {
        goto fail;
    }
    out->addr = addr;
    out->size = size;
    out->fd = fd;
    return 0;

fail:
    rc = -errno;
    close(fd);
    return rc;
}

/* mmap() for gf_shm_map(): flags already checked. */
static void *
gf__shm_mmap(int fd, size_t offset, size_t size, unsigned flags)
{
    int prot = PROT_READ | ((flags & GF_SHM_READONLY) ? 0 : PROT_WRITE);
    int mapflags = (flags & GF_SHM_PRIVATE) ? MAP_PRIVATE : MAP_SHARED;
    if (flags & GF_SHM_POPULATE) {
        mapflags |= MAP_POPULATE;
    }
    if ((flags & (GF_SHM_PRIVATE | GF_SHM_POPULATE)) != (GF_SHM_PRIVATE | GF_SHM_POPULATE)) {
        return mmap(NULL, size, prot, mapflags, fd, (off_t)offset);
    }
    /* Private and populated: read-only first, so that populating does not
     * copy every page (see the top of the file). */
    void *addr = mmap(NULL, size, PROT_READ, mapflags, fd, (off_t)offset);
    if (addr != MAP_FAILED && mprotect(addr, size, prot) != 0) {
        int err = errno;
        munmap(addr, size);
        errno = err;
        return MAP_FAILED;
    }
    return addr;
}

/* The checks and the mapping shared by gf_shm_map and gf_shm_map_at. */
static int
gf__shm_map_common(int fd, size_t offset, size_t size, unsigned flags,
                   gf_shm_t *out)
{
    if (out == NULL) {
        return GF_EINVAL;
    }
    gf__shm_reset(out);
    const unsigned known = GF_SHM_READONLY | GF_SHM_PRIVATE | GF_SHM_POPULATE;
    if (fd < 0 || (flags & ~known) != 0) {
        return GF_EINVAL;
    }
    /* Read-only and copy-on-write contradict each other: a private mapping
     * exists to be written. */
    if ((flags & GF_SHM_READONLY) && (flags & GF_SHM_PRIVATE)) {
        return GF_EINVAL;
    }
    /* Seals first: F_GET_SEALS fails with EINVAL on anything but a memfd
     * (or another sealable file), which we refuse the same way. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        return errno == EINVAL ? GF_EINVAL : -errno;
    }
    if (!(seals & F_SEAL_SHRINK)) {
        return GF_EINVAL;
    }
    /* The size cannot shrink from here on (the seal), so this check stays
     * true for the life of the mapping. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    if (st.st_size <= 0 || (uint64_t)st.st_size > (uint64_t)GF__SHM_MAX_SIZE) {
        return GF_EINVAL;
    }
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || offset % (size_t)page != 0 ||
        (uint64_t)offset >= (uint64_t)st.st_size) {
        return GF_EINVAL;
    }
    if (size == 0) {
        size = (size_t)st.st_size - offset;
    }
    else if ((uint64_t)size > (uint64_t)st.st_size - offset) {
        return GF_EINVAL;
    }
    /* Close-on-exec before anything can fail after it: a descriptor that
     * reached us through pass_fds or SCM_RIGHTS without MSG_CMSG_CLOEXEC
     * lacks the flag, and we now own it. */
    int fdflags = fcntl(fd, F_GETFD);
    if (fdflags < 0 || fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC) != 0) {
        return -errno;
    }
    void *addr = gf__shm_mmap(fd, offset, size, flags);
    if (addr == MAP_FAILED) {
        return -errno;
    }
    out->addr = addr;
    out->size = size;
    out->fd = fd;
    return 0;
}

int
gf_shm_map(int fd, size_t size, unsigned flags, gf_shm_t *out)
{
    return gf__shm_map_common(fd, 0, size, flags, out);
}

int
gf_shm_map_at(int fd, size_t offset, size_t size, unsigned flags,
              gf_shm_t *out)
{
    int rc = gf__shm_map_common(fd, offset, size, flags, out);
    if (rc == 0) {
        out->fd = -1;  /* the descriptor stays the caller's */
    }
    return rc;
}

int
gf_shm_unmap(gf_shm_t *shm)
{
    if (shm == NULL) {
        return GF_EINVAL;
    }
    if (shm->addr == NULL) {
        return 0;
    }
    int rc = munmap(shm->addr, shm->size) == 0 ? 0 : -errno;
    /* Forget the address even on failure (munmap fails only for arguments
     * that were never a mapping of ours): never unmap twice. */
    shm->addr = NULL;
    return rc;
}

int
gf_shm_close_fd(gf_shm_t *shm)
{
    if (shm == NULL) {
        return GF_EINVAL;
    }
    if (shm->fd < 0) {
        return 0;
    }
    int rc = close(shm->fd) == 0 ? 0 : -errno;
    /* On Linux the descriptor is released even when close() reports an
     * error (EINTR included), so retrying could close someone else's. */
    shm->fd = -1;
    return rc == GF_EINTR ? 0 : rc;
}

#else /* !__linux__ */

int
gf_shm_create_ex(size_t size, const char *name, unsigned flags, gf_shm_t *out)
{
    (void)size;
    (void)name;
    (void)flags;
    if (out != NULL) {
        gf__shm_reset(out);
    }
    return GF_ENOSYS;
}

int
gf_shm_map(int fd, size_t size, unsigned flags, gf_shm_t *out)
{
    (void)fd;
    (void)size;
    (void)flags;
    if (out != NULL) {
        gf__shm_reset(out);
    }
    return GF_ENOSYS;
}

int
gf_shm_map_at(int fd, size_t offset, size_t size, unsigned flags,
              gf_shm_t *out)
{
    (void)offset;
    return gf_shm_map(fd, size, flags, out);
}

int
gf_shm_unmap(gf_shm_t *shm)
{
    return shm == NULL ? GF_EINVAL : 0;
}

int
gf_shm_close_fd(gf_shm_t *shm)
{
    return shm == NULL ? GF_EINVAL : 0;
}

#endif /* __linux__ */

int
gf_shm_create(size_t size, const char *name, gf_shm_t *out)
{
    return gf_shm_create_ex(size, name, 0, out);
}

int
gf_shm_close(gf_shm_t *shm)
{
    if (shm == NULL) {
        return GF_EINVAL;
    }
    int rc = gf_shm_unmap(shm);
    int rc2 = gf_shm_close_fd(shm);
    shm->size = 0;
    return rc != 0 ? rc : rc2;
}
