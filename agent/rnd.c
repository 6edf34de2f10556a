#include "rnd.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t state[2];
static int seeded;

/* Seed bytes from the kernel: getrandom(2) by number (glibc's wrapper is fine too, but
 * calling the syscall makes the ENOSYS fallback explicit), then /dev/urandom. */
static int kernel_seed(void *buf, size_t len)
{
#ifdef SYS_getrandom
    long n = syscall(SYS_getrandom, buf, len, 0x0001 /* GRND_NONBLOCK */);
    if (n == (long)len)
        return 0;
#endif
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, len);
    close(fd);
    return got == (ssize_t)len ? 0 : -1;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rnd_u64(void)
{
    pthread_mutex_lock(&lock);
    if (!seeded) {
        uint64_t s[2];
        if (kernel_seed(s, sizeof(s)) < 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            s[0] = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
            s[1] = (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&ts;
        }
        uint64_t x = s[0] ^ (s[1] * 0x2545f4914f6cdd1dULL);
        state[0] = splitmix(&x);
        state[1] = splitmix(&x);
        seeded = 1;
    }
    /* xorshift128+ */
    uint64_t a = state[0], b = state[1];
    state[0] = b;
    a ^= a << 23;
    state[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    uint64_t r = state[1] + b;
    pthread_mutex_unlock(&lock);
    return r;
}

uint64_t rnd_below(uint64_t n)
{
    return n ? rnd_u64() % n : 0;
}
