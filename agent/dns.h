/*
 * dns: host name to addresses without the C library's resolver.
 *
 * A static glibc's getaddrinfo() loads the host's NSS modules at run time, which defeats
 * a self-contained binary (and fails outright on a C library of another version), so
 * the agent resolves names itself, in the order glibc's default "files dns" does:
 *   1. IP literals (IPv4 dotted quad, IPv6) are used as they are;
 *   2. the hosts file (/etc/hosts): every address listed for the name, v4 and v6;
 *   3. DNS: an A query over UDP to each nameserver of resolv.conf in turn (up to 3,
 *      default 127.0.0.1 when none is listed), honouring `search`/`domain`,
 *      `options ndots:N timeout:N attempts:N`; a truncated answer is asked again over
 *      TCP. Only A records are asked for (IPv4); AAAA is not.
 * Answers are cached in-process for their TTL (at most DNS_CACHE_TTL_MAX seconds), so
 * parallel uploads to one host cost one query.
 *
 * Thread-safe; blocks up to timeout x attempts x servers per name tried. Nothing logs.
 */
#ifndef XM_AGENT_DNS_H
#define XM_AGENT_DNS_H

#include <sys/socket.h>

#include "err.h"

#define DNS_ADDRS_MAX 8
#define DNS_NAME_MAX 253
#define DNS_CACHE_TTL_MAX 300

struct dns_addr {
    struct sockaddr_storage sa; /* port filled in */
    socklen_t len;
};

/* Use other files than /etc/resolv.conf and /etc/hosts (tests; NULL keeps the default).
 * Call before any dns_resolve(); the strings are copied. */
void dns_configure(const char *resolv_conf, const char *hosts);

/*
 * Resolve host (a name or an IP literal without brackets) for port into out[0..max-1].
 * Returns how many addresses (>= 1), or -1 with err: permanent for a malformed name or
 * a name that does not exist (NXDOMAIN everywhere, or no A record), transient when no
 * nameserver answered or one answered SERVFAIL.
 */
int dns_resolve(const char *host, int port, struct dns_addr *out, int max, struct err *err);

#endif
