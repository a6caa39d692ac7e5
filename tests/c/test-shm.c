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
