/*
 * rnd: random numbers for retry jitter and DNS query ids (not for keys: TLS draws its
 * own through OpenSSL).
 *
 * The first call seeds a per-process generator from getrandom(2) when the kernel has it
 * (3.17+), else /dev/urandom, else the clock and the pid (an empty chroot on an old
 * kernel still works; the values then only need to differ between calls). Thread-safe.
 */
#ifndef XM_AGENT_RND_H
#define XM_AGENT_RND_H

#include <stdint.h>

uint64_t rnd_u64(void);
/* Uniform in [0, n); 0 when n is 0. */
uint64_t rnd_below(uint64_t n);

#endif
