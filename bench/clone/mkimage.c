/*
 * bench_clone_mkimage: the benchmark's disk image, written once into a cache directory.
 *
 *   bench_clone_mkimage PATH GIB
 *
 * GIB GiB in blocks of 256 MiB, repeating zero, text, zero, random: half zeros (left as
 * holes), a quarter log-like text (compresses about as real logs do), a quarter random
 * bytes (does not compress). Deterministic: the same bytes every time.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (256ULL << 20)
#define PIECE (4U << 20)

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bench_clone_mkimage PATH GIB\n");
        return 2;
    }
    unsigned long long gib = strtoull(argv[2], NULL, 10);
    if (gib == 0 || gib > 1024) {
        fprintf(stderr, "bench_clone_mkimage: GIB must be 1..1024\n");
        return 2;
    }
    unsigned long long size = gib << 30;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    char *buf = malloc(PIECE);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    unsigned long long line = 0;
    for (unsigned long long off = 0; off < size; off += BLOCK) {
        int kind = (int)((off / BLOCK) % 4); /* 0 zero, 1 text, 2 zero, 3 random */
        if (kind == 0 || kind == 2)
            continue;
        for (unsigned long long p = 0; p < BLOCK && off + p < size; p += PIECE) {
            if (kind == 3) {
                for (size_t i = 0; i < PIECE; i += 8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    memcpy(buf + i, &x, 8);
                }
            } else {
                size_t o = 0;
                while (o < PIECE) {
                    char l[200];
                    int w = snprintf(l, sizeof(l),
                                     "2026-11-%02llu %02llu:%02llu:%02llu.%03llu app[%llu]: GET "
                                     "/api/v1/items/%llu "
                                     "user=%llu status=%s bytes=%llu ms=%llu\n",
                                     10 + line / 8640000 % 20, line / 360000 % 24, line / 6000 % 60,
                                     line / 100 % 60, line % 1000, 1000 + line % 97,
                                     line * 7919 % 100000, line % 5000, line % 17 ? "200" : "404",
                                     200 + line * 31 % 50000, line * 13 % 900);
                    size_t take = (size_t)w < PIECE - o ? (size_t)w : PIECE - o;
                    memcpy(buf + o, l, take);
                    o += take;
                    line++;
                }
            }
            if (pwrite(fd, buf, PIECE, (off_t)(off + p)) != (ssize_t)PIECE) {
                perror("pwrite");
                return 1;
            }
        }
    }
    if (ftruncate(fd, (off_t)size) < 0 || close(fd) < 0) {
        perror(argv[1]);
        return 1;
    }
    free(buf);
    return 0;
}
