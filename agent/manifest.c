#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "sbuf.h"
#include "tjson.h"
#include "xmalloc.h"

#define CHUNKS_MAX (1ULL << 26)

char *manifest_build(const struct manifest_info *mi, const struct chunk_rec *recs, uint64_t n,
                     size_t *len)
{
    struct sbuf b;
    sbuf_init(&b);
    struct tm tm;
    char created[32];
    gmtime_r(&mi->created, &tm);
    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
    uint64_t zero = 0, stored = 0, bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        zero += recs[i].zero;
        stored += !recs[i].zero;
        bytes += recs[i].stored;
    }
    sbuf_adds(
        &b,
        "{\"format\":\"xmigrate-manifest\",\"format_version\":1,\"agent_version\":\"" AGENT_VERSION
        "\",\"device\":");
    sbuf_json_str(&b, mi->device);
    sbuf_printf(&b,
                ",\"device_size\":%llu,\"chunk_size\":%llu,\"consistency\":\"%s\",\"created\":"
                "\"%s\",\"compression\":\"zstd\",\"zstd_level\":%d,\"chunks_total\":%llu,"
                "\"chunks_zero\":%llu,\"chunks_stored\":%llu,\"bytes_stored\":%llu,\"chunks\":[",
                (unsigned long long)mi->device_size, (unsigned long long)mi->chunk_size,
                mi->consistency, created, mi->zstd_level, (unsigned long long)n,
                (unsigned long long)zero, (unsigned long long)stored, (unsigned long long)bytes);
    for (uint64_t i = 0; i < n; i++) {
        char hex[65];
        agent_hex32(recs[i].sha, hex);
        uint64_t off = i * mi->chunk_size;
        uint64_t clen =
            mi->device_size - off < mi->chunk_size ? mi->device_size - off : mi->chunk_size;
        sbuf_printf(&b,
                    "%s\n{\"index\":%llu,\"offset\":%llu,\"length\":%llu,\"sha256\":\"%s\","
                    "\"zero\":%s,\"stored_size\":%llu}",
                    i ? "," : "", (unsigned long long)i, (unsigned long long)off,
                    (unsigned long long)clen, hex, recs[i].zero ? "true" : "false",
                    (unsigned long long)recs[i].stored);
    }
    sbuf_adds(&b, "\n]}\n");
    return sbuf_steal(&b, len);
}

/* ---------------------------------------------------------------- reading back */

static int unhex32(const char *s, unsigned char out[32])
{
    if (!s || strlen(s) != 64)
        return -1;
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        int v = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (v < 0)
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return 0;
}

static int take_chunk(void *arg, const struct tjson *e, struct err *err)
{
    struct prev_manifest *pm = arg;
    long long idx, length, stored = 0;
    int zero = tjson_bool(tjson_get(e, "zero"));
    unsigned char sha[32];
    if (tjson_ll(tjson_get(e, "index"), &idx) < 0 || idx < 0 ||
        (unsigned long long)idx >= CHUNKS_MAX || tjson_ll(tjson_get(e, "length"), &length) < 0 ||
        length < 0 || zero < 0 || unhex32(tjson_str(tjson_get(e, "sha256")), sha) < 0 ||
        (tjson_get(e, "stored_size") && tjson_ll(tjson_get(e, "stored_size"), &stored) < 0))
        return err_set(err, ERR_PERMANENT,
                       "manifest: a chunk entry lacks index, length, "
                       "sha256 or zero");
    if ((uint64_t)idx >= pm->n) {
        uint64_t n = pm->n ? pm->n : 1024;
        while (n <= (uint64_t)idx)
            n *= 2;
        pm->c = xrealloc(pm->c, n * sizeof(*pm->c));
        memset(pm->c + pm->n, 0, (n - pm->n) * sizeof(*pm->c));
        pm->n = n;
    }
    struct prev_chunk *c = &pm->c[idx];
    memcpy(c->sha, sha, 32);
    c->length = (uint64_t)length;
    c->stored = (uint64_t)stored;
    c->zero = (uint8_t)zero;
    c->present = 1;
    return 0;
}

int prev_manifest_parse(const char *text, size_t len, struct prev_manifest *pm, struct err *err)
{
    memset(pm, 0, sizeof(*pm));
    struct tjson *j = tjson_parse_each(text, len, "chunks", take_chunk, pm, err);
    long long cs;
    int rc = -1;
    if (!j) {
        err_prefix(err, "previous manifest");
        goto out;
    }
    if (tjson_ll(tjson_get(j, "chunk_size"), &cs) < 0 || cs <= 0) {
        err_set(err, ERR_PERMANENT, "previous manifest has no chunk_size");
        goto out;
    }
    pm->chunk_size = (uint64_t)cs;
    rc = 0;
out:
    tjson_free(j);
    if (rc < 0)
        prev_manifest_release(pm);
    return rc;
}

void prev_manifest_release(struct prev_manifest *pm)
{
    free(pm->c);
    memset(pm, 0, sizeof(*pm));
}

static int read_file(const char *path, char **text, size_t *len, struct err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return err_set(err, ERR_PERMANENT, "cannot open '%s': %s%s", path, strerror(errno),
                       errno == ENOENT ? " (not found)" : "");
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MANIFEST_MAX) {
        close(fd);
        return err_set(err, ERR_PERMANENT, "'%s' is not a regular file under %llu bytes", path,
                       (unsigned long long)MANIFEST_MAX);
    }
    *text = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, *text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != (size_t)st.st_size) {
        free(*text);
        *text = NULL;
        return err_set(err, ERR_PERMANENT, "cannot read '%s'", path);
    }
    (*text)[got] = '\0';
    *len = got;
    return 0;
}

int prev_manifest_load(const char *src, struct hclient_tls *tls, struct prev_manifest *pm,
                       struct err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = -1;
    memset(pm, 0, sizeof(*pm));
    if (strncmp(src, "http://", 7) == 0 || strncmp(src, "https://", 8) == 0) {
        struct hclient_opts ho = {.tls = tls};
        struct hclient *c = hclient_new(&ho);
        struct hreq req = {.method = "GET", .url = src, .resp_max = MANIFEST_MAX};
        struct hresp r;
        char shown[256];
        hurl_redact(src, shown, sizeof(shown));
        /* a few tries: a transient failure here would only cost a full copy */
        for (int attempt = 0; attempt < 3; attempt++) {
            if (attempt)
                agent_sleep_ms(500L << attempt, NULL);
            err_clear(err);
            if (hclient_do(c, &req, &r, err) < 0) {
                if (err && err->kind == ERR_PERMANENT)
                    break;
                continue;
            }
            if (r.status == 200) {
                text = r.body;
                len = r.body_len;
                r.body = NULL;
                hresp_release(&r);
                break;
            }
            int status = r.status;
            hresp_release(&r);
            err_set(err, status >= 500 ? ERR_TRANSIENT : ERR_PERMANENT, "GET '%s': HTTP %d%s",
                    shown, status, status == 404 ? " (not found)" : "");
            if (status < 500 && status != 429)
                break;
        }
        hclient_free(c);
        if (!text)
            goto out;
    } else if (read_file(src, &text, &len, err) < 0) {
        goto out;
    }
    rc = prev_manifest_parse(text, len, pm, err);
out:
    free(text);
    return rc;
}
