#include "suggest.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "ipv4.h"
#include "machine_types.h"

#define MAX_SUBNETS 64
#define MAX_RULES 200

struct block {
    uint32_t net;
    int len;
};

static int contains(struct block outer, struct block inner)
{
    return outer.len <= inner.len && (inner.net & ipv4_mask(outer.len)) == outer.net;
}

/* The private block "a.b.c.d/p" lies in (prefix clamped to /16../28), or -1. */
static int block_of(const char *cidr, struct block *b, uint32_t *addr)
{
    int len;
    if (ipv4_parse_cidr(cidr, addr, &len) < 0 || ipv4_is_public(*addr) || (*addr >> 24) == 127 ||
        (*addr >> 16) == 0xa9fe)
        return -1;
    b->len = len < 16 ? 16 : len > 28 ? 28 : len;
    b->net = *addr & ipv4_mask(b->len);
    return 0;
}

/* The discovered subnets, largest first, none inside another. */
static size_t collect(const json_t *records, struct block *out)
{
    struct block all[MAX_SUBNETS * 4];
    size_t n = 0, kept = 0;
    const char *name;
    const json_t *rec;
    json_object_foreach((json_t *)records, name, rec)
    {
        size_t i, j;
        const json_t *nic, *a;
        json_array_foreach(json_object_get(rec, "nics"), i, nic)
        {
            json_array_foreach(json_object_get(nic, "addresses"), j, a)
            {
                uint32_t addr;
                if (n < sizeof(all) / sizeof(all[0]) &&
                    block_of(json_string_value(a), &all[n], &addr) == 0)
                    n++;
            }
        }
    }
    for (int len = 16; len <= 28; len++)
        for (size_t i = 0; i < n; i++) {
            if (all[i].len != len || kept == MAX_SUBNETS)
                continue;
            int inside = 0;
            for (size_t k = 0; k < kept && !inside; k++)
                inside = contains(out[k], all[i]);
            if (!inside)
                out[kept++] = all[i];
        }
    return kept;
}

/* The smallest block holding every subnet, at least /16: subnets outside the /16 of
 * the first are dropped (n shrinks). */
static struct block cover(struct block *subnets, size_t *n)
{
    struct block net = {subnets[0].net, subnets[0].len};
    for (size_t i = 1; i < *n; i++)
        while (!contains(net, subnets[i]) && net.len > 0) {
            net.len--;
            net.net &= ipv4_mask(net.len);
        }
    if (net.len >= 16)
        return net;
    net.len = 16;
    net.net = subnets[0].net & ipv4_mask(16);
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++)
        if (contains(net, subnets[i]))
            subnets[kept++] = subnets[i];
    *n = kept;
    return net;
}

static void subnet_name(struct block b, char *out, size_t size)
{
    char cidr[24];
    ipv4_format(b.net, b.len, cidr, sizeof(cidr));
    snprintf(out, size, "net-%s", cidr);
    for (char *c = out; *c; c++)
        if (*c == '.' || *c == '/')
            *c = '-';
}

/* The subnet (index) the host goes in: that of its default interface, else of any of
 * its addresses, else 0. */
static size_t place(const json_t *rec, const struct block *subnets, size_t n)
{
    for (int pass = 0; pass < 2; pass++) {
        size_t i, j;
        const json_t *nic, *a;
        json_array_foreach(json_object_get(rec, "nics"), i, nic)
        {
            if (pass == 0 && !json_is_true(json_object_get(nic, "default")))
                continue;
            json_array_foreach(json_object_get(nic, "addresses"), j, a)
            {
                uint32_t addr;
                int len;
                if (ipv4_parse_cidr(json_string_value(a), &addr, &len) < 0)
                    continue;
                for (size_t k = 0; k < n; k++)
                    if ((addr & ipv4_mask(subnets[k].len)) == subnets[k].net)
                        return k;
            }
        }
    }
    return 0;
}

static int is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 || strcmp(addr, "[::1]") == 0;
}

/* One rule per TCP port listened on beyond loopback, naming who listens, by port. */
static json_t *firewall(const json_t *records, const char *source)
{
    struct {
        int port;
        char desc[201];
    } seen[MAX_RULES];
    size_t n = 0;
    const char *host;
    const json_t *rec;
    json_object_foreach((json_t *)records, host, rec)
    {
        size_t i;
        const json_t *l;
        json_array_foreach(json_object_get(rec, "listening"), i, l)
        {
            const char *addr = json_string_value(json_object_get(l, "address"));
            const char *proc = json_string_value(json_object_get(l, "process"));
            int port = (int)json_integer_value(json_object_get(l, "port"));
            if (!addr || is_loopback(addr))
                continue;
            size_t k = 0;
            while (k < n && seen[k].port != port)
                k++;
            if (k == n && n < MAX_RULES) {
                seen[n].port = port;
                snprintf(seen[n++].desc, sizeof(seen[0].desc), "%s on %s", proc ? proc : "listener",
                         host);
            } else if (k < n && !strstr(seen[k].desc, host)) {
                size_t len = strlen(seen[k].desc);
                snprintf(seen[k].desc + len, sizeof(seen[0].desc) - len, ", %s", host);
            }
        }
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && seen[j - 1].port > seen[j].port; j--) {
            int p = seen[j].port;
            char d[201];
            memcpy(d, seen[j].desc, sizeof(d));
            seen[j].port = seen[j - 1].port;
            memcpy(seen[j].desc, seen[j - 1].desc, sizeof(d));
            seen[j - 1].port = p;
            memcpy(seen[j - 1].desc, d, sizeof(d));
        }
    json_t *rules = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(rules, json_pack("{s:s, s:i, s:s, s:s}", "protocol", "tcp", "port",
                                               seen[i].port, "source", source, "description",
                                               seen[i].desc));
    return rules;
}

json_t *suggest_blueprint(const char *mig, const char *cloud, const json_t *hosts,
                          const json_t *records, const json_t *types)
{
    struct block subnets[MAX_SUBNETS];
    size_t n = collect(records, subnets);
    struct block net = {0x0a000000u, 16}; /* nothing discovered: 10.0.0.0/24 in /16 */
    if (n == 0) {
        subnets[0].net = 0x0a000000u;
        subnets[0].len = 24;
        n = 1;
    } else {
        net = cover(subnets, &n);
    }
    char cidr[24], name[64];
    ipv4_format(net.net, net.len, cidr, sizeof(cidr));
    snprintf(name, sizeof(name), "xm-%.8s", mig);
    for (char *c = name; *c; c++)
        *c = (char)tolower((unsigned char)*c);

    int is_public[MAX_SUBNETS] = {0};
    json_t *placed = json_array();
    size_t i;
    const json_t *h;
    json_array_foreach(hosts, i, h)
    {
        const char *host = json_string_value(h);
        const json_t *rec = json_object_get(records, host);
        size_t k = rec ? place(rec, subnets, n) : 0;
        char sname[64];
        subnet_name(subnets[k], sname, sizeof(sname));
        long long vcpus = rec ? (long long)json_integer_value(json_object_get(rec, "vcpus")) : 1;
        long long mem = rec ? (long long)json_integer_value(json_object_get(rec, "memory_mib")) : 0;
        const char *type = machine_types_fit(types, cloud, vcpus, mem);
        int pub = json_array_size(json_object_get(rec, "public_addresses")) > 0;
        is_public[k] |= pub;
        json_t *o = json_pack("{s:s, s:s, s:s, s:b}", "host", host, "machine_type",
                              type ? type : "unknown", "subnet", sname, "public_ip", pub);
        json_t *disks = json_array();
        size_t j;
        const json_t *d;
        json_array_foreach(json_object_get(rec, "disks"), j, d)
        {
            json_array_append_new(disks,
                                  json_pack("{s:O}", "device", json_object_get(d, "device")));
        }
        if (json_array_size(disks))
            json_object_set_new(o, "disks", disks);
        else
            json_decref(disks);
        json_array_append_new(placed, o);
    }
    json_t *subs = json_array();
    for (size_t k = 0; k < n; k++) {
        char sname[64], scidr[24];
        subnet_name(subnets[k], sname, sizeof(sname));
        ipv4_format(subnets[k].net, subnets[k].len, scidr, sizeof(scidr));
        json_array_append_new(subs, json_pack("{s:s, s:s, s:b}", "name", sname, "cidr", scidr,
                                              "public", is_public[k]));
    }
    return json_pack("{s:{s:s, s:s, s:o}, s:o, s:o}", "network", "name", name, "cidr", cidr,
                     "subnets", subs, "hosts", placed, "firewall", firewall(records, cidr));
}
