#include "ipv4.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ipv4_parse(const char *s, uint32_t *addr)
{
    struct in_addr a;
    if (!s || inet_pton(AF_INET, s, &a) != 1)
        return -1;
    *addr = ntohl(a.s_addr);
    return 0;
}

int ipv4_parse_cidr(const char *s, uint32_t *addr, int *len)
{
    char ip[16];
    const char *slash = s ? strchr(s, '/') : NULL;
    size_t n = slash ? (size_t)(slash - s) : (s ? strlen(s) : 0);
    if (!s || n == 0 || n >= sizeof(ip))
        return -1;
    memcpy(ip, s, n);
    ip[n] = '\0';
    *len = 32;
    if (slash) {
        char *end;
        long l = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || l < 0 || l > 32)
            return -1;
        *len = (int)l;
    }
    return ipv4_parse(ip, addr);
}

uint32_t ipv4_mask(int len)
{
    return len <= 0 ? 0 : len >= 32 ? 0xffffffffu : 0xffffffffu << (32 - len);
}

int ipv4_is_public(uint32_t a)
{
    static const struct {
        uint32_t net;
        int len;
    } special[] = {
        {0x00000000u, 8},  /* this network */
        {0x0a000000u, 8},  /* 10/8 */
        {0x64400000u, 10}, /* 100.64/10 shared */
        {0x7f000000u, 8},  /* loopback */
        {0xa9fe0000u, 16}, /* link-local */
        {0xac100000u, 12}, /* 172.16/12 */
        {0xc0000000u, 24}, /* IETF protocol assignments */
        {0xc0000200u, 24}, /* TEST-NET-1 */
        {0xc0a80000u, 16}, /* 192.168/16 */
        {0xc6120000u, 15}, /* benchmarking */
        {0xc6336400u, 24}, /* TEST-NET-2 */
        {0xcb007100u, 24}, /* TEST-NET-3 */
        {0xe0000000u, 3},  /* multicast and reserved */
    };
    for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
        if ((a & ipv4_mask(special[i].len)) == special[i].net)
            return 0;
    return 1;
}

void ipv4_format(uint32_t a, int len, char *out, size_t size)
{
    if (len < 0)
        snprintf(out, size, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
    else
        snprintf(out, size, "%u.%u.%u.%u/%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255,
                 len);
}
