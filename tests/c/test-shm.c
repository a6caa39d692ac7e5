/* Tests: memfd-backed shared memory regions. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/internal.h"
#include "runner.h"

static int
gft_fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static pid_t
gft_waitpid(pid_t pid, int *status)
{
    pid_t r;
    while ((r = waitpid(pid, status, 0)) < 0 && errno == EINTR) {
    }
    return r;
}

TEST_IMPL(shm_create_map)
{
    enum { SIZE = 12345 };
    gf_shm_t a = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(SIZE, "gft-create-map", &a));
    ASSERT_NOT_NULL(a.addr);
    ASSERT_EQ(a.size, SIZE);
    ASSERT_GE(a.fd, 0);

    struct stat st;
    ASSERT_EQ(fstat(a.fd, &st), 0);
    ASSERT_EQ(st.st_size, SIZE);

    unsigned char *p = a.addr;
    for (size_t i = 0; i < SIZE; i++) {
        ASSERT_EQ(p[i], 0); /* a new region is zero-filled */
        p[i] = (unsigned char)(i * 7 + 1);
    }

    /* The same descriptor mapped a second time: another address, the same
     * bytes, and writes through either mapping show in the other. */
    int fd2 = dup(a.fd);
    ASSERT_GE(fd2, 0);
    gf_shm_t b = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(fd2, 0, 0, &b)); /* 0: the whole file */
    ASSERT_EQ(b.size, SIZE);
    ASSERT_EQ(b.fd, fd2);
    ASSERT_PTR_NE(b.addr, a.addr);
    ASSERT_EQ(memcmp(a.addr, b.addr, SIZE), 0);
    ((unsigned char *)b.addr)[SIZE - 1] = 0xA5;
    ASSERT_EQ(p[SIZE - 1], 0xA5);
    p[0] = 0x5A;
    ASSERT_EQ(((unsigned char *)b.addr)[0], 0x5A);

    /* A prefix only. */
    int fd3 = dup(a.fd);
    gf_shm_t c = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(fd3, 100, GF_SHM_READONLY, &c));
    ASSERT_EQ(c.size, 100);
    ASSERT_EQ(memcmp(c.addr, a.addr, 100), 0);

    /* Read-only really is: a write faults (in a child, to survive it). */
    fflush(stdout);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        ((volatile unsigned char *)c.addr)[1] = 1;
        _exit(0);
    }
    int status;
    ASSERT_EQ(gft_waitpid(pid, &status), pid);
    ASSERT(WIFSIGNALED(status));
    ASSERT(WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS);

    /* The mapping outlives the descriptor. */
    ASSERT_OK(gf_shm_close_fd(&b));
    ASSERT_EQ(b.fd, -1);
    ASSERT(!gft_fd_is_open(fd2));
    ASSERT_EQ(((unsigned char *)b.addr)[0], 0x5A);
    ASSERT_OK(gf_shm_close_fd(&b)); /* idempotent */

    /* unmap keeps the descriptor; close releases the rest; both idempotent */
    ASSERT_OK(gf_shm_unmap(&c));
    ASSERT_NULL(c.addr);
    ASSERT(gft_fd_is_open(fd3));
    ASSERT_OK(gf_shm_unmap(&c));
    ASSERT_OK(gf_shm_close(&c));
    ASSERT(!gft_fd_is_open(fd3));
    ASSERT_OK(gf_shm_close(&b));
    ASSERT_NULL(b.addr);

    int fd = a.fd;
    ASSERT_OK(gf_shm_close(&a));
    ASSERT_NULL(a.addr);
    ASSERT_EQ(a.fd, -1);
    ASSERT_EQ(a.size, 0);
    ASSERT(!gft_fd_is_open(fd));
    ASSERT_OK(gf_shm_close(&a));

    ASSERT_ERR(gf_shm_close(NULL), GF_EINVAL);
    ASSERT_ERR(gf_shm_unmap(NULL), GF_EINVAL);
    ASSERT_ERR(gf_shm_close_fd(NULL), GF_EINVAL);
}

TEST_IMPL(shm_cloexec_and_seals)
{
    gf_shm_t a = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(4096, NULL, &a));

    int fdflags = fcntl(a.fd, F_GETFD);
    ASSERT_GE(fdflags, 0);
    ASSERT(fdflags & FD_CLOEXEC);

    /* The size is sealed both ways: nobody can truncate it under a mapping
     * (SIGBUS) or grow it. */
    int seals = fcntl(a.fd, F_GET_SEALS);
    ASSERT_GE(seals, 0);
    ASSERT(seals & F_SEAL_SHRINK);
    ASSERT(seals & F_SEAL_GROW);
    ASSERT_EQ(ftruncate(a.fd, 100), -1);
    ASSERT_EQ(errno, EPERM);
    ASSERT_EQ(ftruncate(a.fd, 8192), -1);
    ASSERT_EQ(errno, EPERM);

    /* An exec'd program does not inherit it. */
    char script[128];
    snprintf(script, sizeof(script), "test -e /proc/self/fd/%d && exit 3; exit 0", a.fd);
    fflush(stdout);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    int status;
    ASSERT_EQ(gft_waitpid(pid, &status), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);

    /* A descriptor that arrives without FD_CLOEXEC (as through pass_fds)
     * gets it back when mapped. */
    int fd2 = fcntl(a.fd, F_DUPFD, 0); /* plain dup: no FD_CLOEXEC */
    ASSERT_GE(fd2, 0);
    ASSERT_EQ(fcntl(fd2, F_GETFD) & FD_CLOEXEC, 0);
    gf_shm_t b = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(fd2, 4096, 0, &b));
    ASSERT(fcntl(fd2, F_GETFD) & FD_CLOEXEC);
    ASSERT_OK(gf_shm_close(&b));
    ASSERT_OK(gf_shm_close(&a));
}

TEST_IMPL(shm_validation)
{
    gf_shm_t s = GF_SHM_INIT;
    ASSERT_ERR(gf_shm_create(0, NULL, &s), GF_EINVAL);
    ASSERT_NULL(s.addr);
    ASSERT_EQ(s.fd, -1);
    ASSERT_ERR(gf_shm_create(4096, NULL, NULL), GF_EINVAL);
    ASSERT_ERR(gf_shm_create(SIZE_MAX, NULL, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_map(-1, 0, 0, &s), GF_EINVAL);

    gf_shm_t a = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(4096, NULL, &a));
    int fd = dup(a.fd);
    ASSERT_ERR(gf_shm_map(fd, 0, 0, NULL), GF_EINVAL);
    ASSERT_ERR(gf_shm_map(fd, 0, 0x80, &s), GF_EINVAL);      /* unknown flag */
    ASSERT_ERR(gf_shm_map(fd, 4097, 0, &s), GF_EINVAL);      /* beyond the file */
    ASSERT(gft_fd_is_open(fd)); /* failures leave the descriptor to the caller */
    ASSERT_NULL(s.addr);
    ASSERT_EQ(s.fd, -1);
    close(fd);

    /* Not a memfd: a pipe has no seals. */
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_ERR(gf_shm_map(p[0], 4096, 0, &s), GF_EINVAL);
    close(p[0]);
    close(p[1]);

    /* A memfd without the shrink seal could be truncated under us. */
    int raw = memfd_create("gft-unsealed", MFD_CLOEXEC);
    ASSERT_GE(raw, 0);
    ASSERT_EQ(ftruncate(raw, 4096), 0);
    ASSERT_ERR(gf_shm_map(raw, 4096, 0, &s), GF_EINVAL);
    ASSERT(gft_fd_is_open(raw));
    close(raw);

    /* An empty sealed memfd. */
    int empty = memfd_create("gft-empty", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ASSERT_GE(empty, 0);
    ASSERT_EQ(fcntl(empty, F_ADD_SEALS, F_SEAL_SHRINK), 0);
    ASSERT_ERR(gf_shm_map(empty, 0, 0, &s), GF_EINVAL);
    close(empty);

    ASSERT_OK(gf_shm_close(&a));
}

/* The memfd's name labels the mapping in /proc/self/maps, which is how the
 * Python side's leak tests can count our regions. */
TEST_IMPL(shm_name_in_maps)
{
    gf_shm_t a = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(8192, "gft-maps-label", &a));
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL) {
        gf_shm_close(&a);
        TEST_SKIP("no /proc/self/maps");
    }
    char line[512];
    int found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        found += strstr(line, "memfd:gft-maps-label") != NULL;
    }
    fclose(f);
    ASSERT_EQ(found, 1);
    ASSERT_OK(gf_shm_close(&a));

    f = fopen("/proc/self/maps", "r");
    ASSERT_NOT_NULL(f);
    found = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        found += strstr(line, "memfd:gft-maps-label") != NULL;
    }
    fclose(f);
    ASSERT_EQ(found, 0);
}

/* --- flags: private, populate ---------------------------------------------- */

/* Pages of [addr, addr + size) that are resident (mincore). */
static size_t
gft_resident_pages(void *addr, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t n = (size + page - 1) / page;
    unsigned char *vec = malloc(n);
    ASSERT_NOT_NULL(vec);
    ASSERT_EQ(mincore(addr, size, vec), 0);
    size_t resident = 0;
    for (size_t i = 0; i < n; i++) {
        resident += vec[i] & 1;
    }
    free(vec);
    return resident;
}

/* A field ("Rss", "Anonymous") of the mapping at addr in /proc/self/smaps,
 * in kB; -1 when smaps cannot be read. */
static int64_t
gft_smaps_kb(void *addr, const char *field)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL) {
        return -1;
    }
    char line[512];
    int in_ours = 0;
    int64_t kb = -1;
    size_t flen = strlen(field);
    while (kb < 0 && fgets(line, sizeof(line), f) != NULL) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2) { /* a mapping's first line */
            in_ours = (void *)start == addr;
        }
        else if (in_ours && strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kb = strtoll(line + flen + 1, NULL, 10);
        }
    }
    fclose(f);
    return kb;
}

/* Check copy-on-write on private mapping p of region a (3 pages, page i
 * holding 'a' + i, p not yet written). */
static void
gft_check_private(gf_shm_t *a, gf_shm_t *p, size_t page)
{
    unsigned char *ra = a->addr;
    unsigned char *rp = p->addr;
    ASSERT_EQ(memcmp(ra, rp, 3 * page), 0);

    /* A write through the private mapping stays in it: the region, and so
     * any other mapping of it, never sees it. */
    rp[0] = 'P';
    ASSERT_EQ(ra[0], 'a');
    int fd = dup(a->fd);
    gf_shm_t other = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(fd, 0, GF_SHM_READONLY, &other));
    ASSERT_EQ(((unsigned char *)other.addr)[0], 'a');
    ASSERT_OK(gf_shm_close(&other));

    /* A page not written privately still shows the region, changes made
     * after the mapping included; a written one keeps its private copy. */
    ra[page] = 'R';
    ASSERT_EQ(rp[page], 'R');
    ASSERT_EQ(rp[2 * page], 'c');
    ra[1] = 'Z';
    ASSERT_EQ(rp[1], 'a');
    ASSERT_EQ(rp[0], 'P');
}

TEST_IMPL(shm_private)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    gf_shm_t a = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create(3 * page, "gft-private", &a));
    for (size_t i = 0; i < 3; i++) {
        memset((unsigned char *)a.addr + i * page, 'a' + (int)i, page);
    }

    gf_shm_t p = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(dup(a.fd), 0, GF_SHM_PRIVATE, &p));
    gft_check_private(&a, &p, page);
    ASSERT_OK(gf_shm_close(&p));

    /* Populated too: the pages are mapped at once, but shared until
     * written (populating a writable private mapping naively would copy
     * every page, and the mapping would stop following the region). */
    for (size_t i = 0; i < 3; i++) {
        memset((unsigned char *)a.addr + i * page, 'a' + (int)i, page);
    }
    ASSERT_OK(gf_shm_map(dup(a.fd), 0, GF_SHM_PRIVATE | GF_SHM_POPULATE, &p));
    int64_t rss = gft_smaps_kb(p.addr, "Rss");
    int64_t anon = gft_smaps_kb(p.addr, "Anonymous");
    if (rss >= 0 && anon >= 0) {
        ASSERT_EQ(rss, (int64_t)(3 * page / 1024));
        ASSERT_EQ(anon, 0);
    }
    gft_check_private(&a, &p, page);
    anon = gft_smaps_kb(p.addr, "Anonymous");
    if (anon >= 0) {
        ASSERT_EQ(anon, (int64_t)(page / 1024)); /* the one page written */
    }
    ASSERT_OK(gf_shm_close(&p));
    ASSERT_OK(gf_shm_close(&a));
}

TEST_IMPL(shm_populate)
{
    const size_t size = 64 * (size_t)sysconf(_SC_PAGESIZE);
    const size_t pages = 64;

    /* A new region has no pages until touched... */
    gf_shm_t lazy = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create_ex(size, "gft-lazy", 0, &lazy));
    ASSERT_EQ(gft_resident_pages(lazy.addr, size), 0);
    /* ...unless populated. */
    gf_shm_t eager = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create_ex(size, "gft-eager", GF_SHM_POPULATE, &eager));
    ASSERT_EQ(gft_resident_pages(eager.addr, size), pages);
    for (size_t i = 0; i < size; i++) {
        ASSERT_EQ(((unsigned char *)eager.addr)[i], 0); /* still zero-filled */
    }

    /* Mapping with POPULATE faults in the lazy region's pages too, and
     * the mappings still share them. */
    gf_shm_t m = GF_SHM_INIT;
    ASSERT_OK(gf_shm_map(dup(lazy.fd), 0, GF_SHM_READONLY | GF_SHM_POPULATE, &m));
    ASSERT_EQ(gft_resident_pages(lazy.addr, size), pages);
    int64_t rss = gft_smaps_kb(m.addr, "Rss");
    if (rss >= 0) {
        ASSERT_EQ(rss, (int64_t)(size / 1024));
    }
    ((unsigned char *)lazy.addr)[size - 1] = 7;
    ASSERT_EQ(((unsigned char *)m.addr)[size - 1], 7);
    ASSERT_OK(gf_shm_close(&m));
    ASSERT_OK(gf_shm_map(dup(eager.fd), 0, GF_SHM_POPULATE, &m));
    ((unsigned char *)m.addr)[5] = 9;
    ASSERT_EQ(((unsigned char *)eager.addr)[5], 9);
    ASSERT_OK(gf_shm_close(&m));

    ASSERT_OK(gf_shm_close(&eager));
    ASSERT_OK(gf_shm_close(&lazy));
}

TEST_IMPL(shm_flag_validation)
{
    gf_shm_t s = GF_SHM_INIT;
    /* create: only POPULATE */
    ASSERT_ERR(gf_shm_create_ex(4096, NULL, GF_SHM_READONLY, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_create_ex(4096, NULL, GF_SHM_PRIVATE, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_create_ex(4096, NULL, 0x80, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_create_ex(4096, NULL, GF_SHM_POPULATE | 0x8, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_create_ex(0, NULL, GF_SHM_POPULATE, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_create_ex(4096, NULL, 0, NULL), GF_EINVAL);
    ASSERT_NULL(s.addr);
    ASSERT_EQ(s.fd, -1);

    /* map: READONLY and PRIVATE exclude each other; unknown bits */
    gf_shm_t a = GF_SHM_INIT;
    ASSERT_OK(gf_shm_create_ex(4096, NULL, 0, &a));
    int fd = dup(a.fd);
    ASSERT_ERR(gf_shm_map(fd, 0, GF_SHM_READONLY | GF_SHM_PRIVATE, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_map(fd, 0, GF_SHM_READONLY | GF_SHM_PRIVATE | GF_SHM_POPULATE, &s),
               GF_EINVAL);
    ASSERT_ERR(gf_shm_map(fd, 0, 0x8, &s), GF_EINVAL);
    ASSERT_ERR(gf_shm_map(fd, 0, GF_SHM_PRIVATE | 0x100, &s), GF_EINVAL);
    ASSERT(gft_fd_is_open(fd));
    ASSERT_NULL(s.addr);
    ASSERT_EQ(s.fd, -1);
    /* every allowed combination maps */
    const unsigned ok[] = {0, GF_SHM_READONLY, GF_SHM_PRIVATE, GF_SHM_POPULATE,
                           GF_SHM_READONLY | GF_SHM_POPULATE,
                           GF_SHM_PRIVATE | GF_SHM_POPULATE};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int d = dup(a.fd);
        ASSERT_OK(gf_shm_map(d, 0, ok[i], &s));
        ASSERT_OK(gf_shm_close(&s));
    }
    close(fd);
    ASSERT_OK(gf_shm_close(&a));
}
