/* gilfree core: shared memory regions backed by memfd.
 *
 * A region is an anonymous memory file (memfd_create) of a fixed size,
 * mapped MAP_SHARED.  It has no name in any file system (nothing under
 * /dev/shm to leak or for another user to open): a process gets at it only
 * through its file descriptor, which the creator hands to a child explicitly
 * (pass_fds, SCM_RIGHTS, inheritance across fork).  The descriptor is
 * close-on-exec, so an exec'd program never inherits it by accident.
 *
 * gf_shm_create() seals the size (F_SEAL_SHRINK | F_SEAL_GROW), and
 * gf_shm_map() refuses a descriptor without the shrink seal: a peer can then
 * never truncate the file under our mapping, which would turn our next access
 * into SIGBUS.  This is what makes it safe to map a region that an untrusted
 * peer (a worker process) created.
 *
 * The same region may be mapped at different addresses in different
 * processes (or twice in one); structures placed in it hold offsets, never
 * pointers (see ring.h).
 *
 * Every function returns 0 or a negative GF_E* code; a failing system call's
 * errno passes through negated (e.g. -EMFILE).  GF_ENOSYS off Linux.
 */
#ifndef GILFREE_SHM_H
#define GILFREE_SHM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A mapped region.  Public so it can be embedded; treat the fields as
 * read-only and change them only through the functions below. */
typedef struct gf_shm {
    void *addr;  /* start of the mapping; NULL when not mapped */
    size_t size; /* bytes mapped (and the file's size for created regions) */
    int fd;      /* the memfd, close-on-exec; -1 once closed */
} gf_shm_t;

#define GF_SHM_INIT {NULL, 0, -1}

/* gf_shm_map() flag: map read-only (PROT_READ).  Writes through the mapping
 * then fault; the region may still change under it if another mapping writes. */
#define GF_SHM_READONLY 0x1u
/* gf_shm_map() flag: map copy-on-write (MAP_PRIVATE): writes through this
 * mapping stay private to it and never reach the region (a worker may
 * modify an argument array in place without touching the sender's data).
 * Pages not yet written still show the region's current contents. */
#define GF_SHM_PRIVATE 0x2u
/* gf_shm_map() / gf_shm_create_ex() flag: fault every page in at once
 * (MAP_POPULATE): one system call instead of a trap per page, for a
 * region that is about to be read or written whole. */
#define GF_SHM_POPULATE 0x4u

/* Create a zero-filled region of `size` bytes (> 0) and map it read-write.
 * `name` only labels the memfd in /proc/<pid>/fd and /proc/<pid>/maps
 * ("memfd:<name> (deleted)"); NULL means "gilfree".  On success *out owns the
 * descriptor and the mapping.  Returns 0, GF_EINVAL, GF_ENOMEM, GF_ENOSYS or a
 * negated errno (-EMFILE, ...). */
int gf_shm_create(size_t size, const char *name, gf_shm_t *out);

/* gf_shm_create() with flags: 0 or GF_SHM_POPULATE. */
int gf_shm_create_ex(size_t size, const char *name, unsigned flags, gf_shm_t *out);

/* Map a region received as a descriptor (e.g. in a worker).  `size` bytes
 * from the start are mapped; 0 maps the whole file.  The file must carry the
 * shrink seal (any gf_shm_create() region does) and be at least `size`
 * bytes, else GF_EINVAL.  On success *out owns fd and marks it close-on-exec
 * again (a descriptor passed to a child arrives without the flag); on failure
 * the caller still owns fd.  `flags`: GF_SHM_READONLY, GF_SHM_PRIVATE,
 * GF_SHM_POPULATE, or'ed (READONLY and PRIVATE exclude each other). */
int gf_shm_map(int fd, size_t size, unsigned flags, gf_shm_t *out);

/* Map bytes [offset, offset + size) of a region received as a descriptor
 * (offset a multiple of the page size; size 0: to the end), with the checks
 * and flags of gf_shm_map().  The descriptor stays the caller's (out->fd is
 * -1), so one descriptor can back several mappings (e.g. a shared header
 * page and a copy-on-write body). */
int gf_shm_map_at(int fd, size_t offset, size_t size, unsigned flags,
                  gf_shm_t *out);

/* Unmap, keeping the descriptor (to pass on, or map again later).
 * Idempotent. */
int gf_shm_unmap(gf_shm_t *shm);

/* Close the descriptor, keeping the mapping (which stays valid: a mapping
 * holds its own reference to the file).  Idempotent. */
int gf_shm_close_fd(gf_shm_t *shm);

/* Unmap and close.  Idempotent; returns the first error, after attempting
 * both. */
int gf_shm_close(gf_shm_t *shm);

#ifdef __cplusplus
}
#endif
#endif /* GILFREE_SHM_H */
