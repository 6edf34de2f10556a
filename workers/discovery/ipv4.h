/*
 * ipv4: the little IPv4 arithmetic discovery needs: parsing "a.b.c.d" and
 * "a.b.c.d/len", telling public addresses from private ones, and printing a block.
 * Pure functions on host-order integers; nothing allocates.
 */
#ifndef XM_DISCOVERY_IPV4_H
#define XM_DISCOVERY_IPV4_H

#include <stddef.h>
#include <stdint.h>

/* "a.b.c.d" -> host order. 0, or -1 when it is not a dotted quad. */
int ipv4_parse(const char *s, uint32_t *addr);
/* "a.b.c.d/len" (or a bare address: /32) -> address and prefix length. 0 or -1. */
int ipv4_parse_cidr(const char *s, uint32_t *addr, int *len);
/* The mask of a prefix length (0..32). */
uint32_t ipv4_mask(int len);
/* 1 when addr is routable on the internet: not RFC 1918, loopback, link-local,
 * shared (100.64/10), "this network", multicast or reserved. */
int ipv4_is_public(uint32_t addr);
/* "a.b.c.d" or "a.b.c.d/len" (len < 0: no suffix) into out. */
void ipv4_format(uint32_t addr, int len, char *out, size_t size);

#endif
