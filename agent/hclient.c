#include "hclient.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dns.h"
#include "sbuf.h"
#include "xmalloc.h"

#define SLICE (128 * 1024)
#define RBUF 16384

/* ---------------------------------------------------------------- URLs */

int hurl_parse(const char *url, struct hurl *u, struct err *err)
{
    memset(u, 0, sizeof(*u));
    size_t len = strnlen(url, HURL_MAX + 1);
    if (len > HURL_MAX)
        return err_set(err, ERR_PERMANENT, "URL longer than %d bytes", HURL_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return err_set(err, ERR_PERMANENT, "URL has a space or control character");
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        u->port = 80;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        u->tls = 1;
        u->port = 443;
    } else {
        return err_set(err, ERR_PERMANENT, "URL is not http:// or https://");
    }
    const char *auth_end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(auth_end - p)))
        return err_set(err, ERR_PERMANENT, "URL with user info is not supported");
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (!host_end)
            return err_set(err, ERR_PERMANENT, "URL has an unclosed '['");
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':')
                return err_set(err, ERR_PERMANENT, "URL has junk after ']'");
            port = host_end + 2;
        }
    } else {
        host_end = memchr(host, ':', (size_t)(auth_end - host));
        if (host_end)
            port = host_end + 1;
        else
            host_end = auth_end;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen > HURL_HOST_MAX)
        return err_set(err, ERR_PERMANENT, "URL has an empty or too long host");
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    if (port) {
        if (port == auth_end)
            return err_set(err, ERR_PERMANENT, "URL has an empty port");
        long v = 0;
        for (const char *q = port; q < auth_end; q++) {
            if (*q < '0' || *q > '9' || (v = v * 10 + (*q - '0')) > 65535)
                return err_set(err, ERR_PERMANENT, "URL has a bad port");
        }
        if (v == 0)
            return err_set(err, ERR_PERMANENT, "URL has a bad port");
        u->port = (int)v;
    }
    const char *frag = strchr(auth_end, '#');
    size_t tlen = frag ? (size_t)(frag - auth_end) : strlen(auth_end);
    if (tlen == 0 || auth_end[0] == '?')
        u->target = xasprintf("/%.*s", (int)tlen, auth_end);
    else
        u->target = xstrndup(auth_end, tlen);
    int v6 = strchr(u->host, ':') != NULL;
    int dflt = u->port == (u->tls ? 443 : 80);
    if (dflt)
        u->hostport = xasprintf(v6 ? "[%s]" : "%s", u->host);
    else
        u->hostport = xasprintf(v6 ? "[%s]:%d" : "%s:%d", u->host, u->port);
    return 0;
}

void hurl_release(struct hurl *u)
{
    free(u->target);
    free(u->hostport);
    u->target = u->hostport = NULL;
}

const char *hurl_redact(const char *url, char *buf, size_t size)
{
    size_t n = strcspn(url, "?#");
    if (n >= size)
        n = size - 1;
    memcpy(buf, url, n);
    buf[n] = '\0';
    return buf;
}

/* ---------------------------------------------------------------- TLS settings */

struct hclient_tls {
    SSL_CTX *ctx; /* NULL when OpenSSL could not set up (why says so) */
    char *ca;     /* the bundle loaded, NULL when none */
    char why[128];
};

static const char *ssl_reason(void);

/* Where distributions keep their bundle: Debian/Ubuntu, RHEL/CentOS/Fedora (both
 * layouts), SUSE, Alpine/Arch (the same path as Debian's), old RHEL 5-era. */
static const char *const ca_paths[] = {
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
};

struct hclient_tls *hclient_tls_new(const char *ca_file, struct err *err)
{
    /* Never read openssl.cnf: the host's may name providers or engines this binary
     * cannot load. */
    OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
    struct hclient_tls *t = xcalloc(1, sizeof(*t));
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (!t->ctx) {
        /* Most likely no entropy (no getrandom(2), no /dev/urandom): plain http still
         * works; https requests say why they cannot. */
        xstrlcpy(t->why, ssl_reason(), sizeof(t->why));
        ERR_clear_error();
        if (ca_file) {
            err_set(err, ERR_PERMANENT, "tls unavailable: %s", t->why);
            hclient_tls_free(t);
            return NULL;
        }
        return t;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const char *path = ca_file;
    if (!path) {
        const char *env = getenv("SSL_CERT_FILE");
        struct stat st;
        if (env && *env && stat(env, &st) == 0)
            path = env;
        for (size_t i = 0; !path && i < sizeof(ca_paths) / sizeof(ca_paths[0]); i++)
            if (stat(ca_paths[i], &st) == 0 && S_ISREG(st.st_mode))
                path = ca_paths[i];
    }
    if (path) {
        if (SSL_CTX_load_verify_locations(t->ctx, path, NULL) != 1) {
            ERR_clear_error();
            if (ca_file) {
                err_set(err, ERR_PERMANENT, "cannot load CA bundle '%s'", ca_file);
                hclient_tls_free(t);
                return NULL;
            }
        } else {
            t->ca = xstrdup(path);
        }
    }
    return t;
}

void hclient_tls_free(struct hclient_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t->ca);
    free(t);
}

const char *hclient_tls_ca(const struct hclient_tls *t)
{
    return t ? t->ca : NULL;
}

/* ---------------------------------------------------------------- connection */

struct hclient {
    struct hclient_opts o;
    int fd;
    SSL *ssl;
    char origin[HURL_HOST_MAX + 32]; /* "tls host port" of the open connection */
    int used;                        /* a request completed on this connection */
    char rbuf[RBUF];
    size_t rpos, rlen;
    long long deadline; /* of the current operation */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct hclient *hclient_new(const struct hclient_opts *opts)
{
    struct hclient *c = xcalloc(1, sizeof(*c));
    if (opts)
        c->o = *opts;
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = 10000;
    if (c->o.io_timeout_ms <= 0)
        c->o.io_timeout_ms = 60000;
    c->fd = -1;
    return c;
}

static void disconnect(struct hclient *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->origin[0] = '\0';
    c->used = 0;
    c->rpos = c->rlen = 0;
}

void hclient_free(struct hclient *c)
{
    if (!c)
        return;
    disconnect(c);
    free(c);
}

/* Wait until fd is ready for ev or the operation's deadline passes: 1 ready, 0 timeout. */
static int wait_ready(struct hclient *c, short ev)
{
    for (;;) {
        long long left = c->deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = c->fd, .events = ev};
        int r = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return 0;
        return r > 0;
    }
}

static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "protocol error";
}

static int tls_handshake(struct hclient *c, const struct hurl *u, struct err *err)
{
    if (!c->o.tls)
        return err_set(err, ERR_PERMANENT, "https is not available here");
    if (!c->o.tls->ctx)
        return err_set(err, ERR_PERMANENT, "tls unavailable for '%s': %s", u->host, c->o.tls->why);
    if (!c->o.tls->ca)
        return err_set(err, ERR_PERMANENT, "no CA bundle found for https to '%s': pass --ca FILE",
                       u->host);
    ERR_clear_error();
    c->ssl = SSL_new(c->o.tls->ctx);
    XM_ASSERT(c->ssl != NULL);
    SSL_set_fd(c->ssl, c->fd);
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, u->host, ip) == 1 || inet_pton(AF_INET6, u->host, ip) == 1;
    if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), u->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, u->host);
        SSL_set1_host(c->ssl, u->host);
    }
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (!wait_ready(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
                return err_set(err, ERR_TRANSIENT, "tls handshake with '%s' timed out", u->host);
            continue;
        }
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK)
            return err_set(err, ERR_PERMANENT, "tls: certificate of '%s' not trusted: %s", u->host,
                           X509_verify_cert_error_string(v));
        if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
            return err_set(err, ERR_TRANSIENT, "tls handshake with '%s': connection closed",
                           u->host);
        return err_set(err, ERR_PERMANENT, "tls handshake with '%s' failed: %s", u->host,
                       ssl_reason());
    }
}

static int connect_to(struct hclient *c, const struct hurl *u, struct err *err)
{
    char origin[sizeof(c->origin)];
    snprintf(origin, sizeof(origin), "%d %s %d", u->tls, u->host, u->port);
    if (c->fd >= 0 && strcmp(origin, c->origin) == 0)
        return 0;
    disconnect(c);
    struct dns_addr addrs[DNS_ADDRS_MAX];
    int n = dns_resolve(u->host, u->port, addrs, DNS_ADDRS_MAX, err);
    if (n < 0)
        return -1;
    int last_errno = 0;
    for (int i = 0; i < n; i++) {
        c->fd = socket(addrs[i].sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            last_errno = errno;
            continue;
        }
        c->deadline = now_ms() + c->o.connect_timeout_ms;
        int r = connect(c->fd, (const struct sockaddr *)&addrs[i].sa, addrs[i].len);
        if (r < 0 && errno == EINPROGRESS) {
            if (!wait_ready(c, POLLOUT)) {
                last_errno = ETIMEDOUT;
            } else {
                int soerr = 0;
                socklen_t sl = sizeof(soerr);
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                last_errno = soerr;
                r = soerr ? -1 : 0;
            }
        } else if (r < 0) {
            last_errno = errno;
        }
        if (r == 0) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
            c->deadline = now_ms() + c->o.io_timeout_ms;
            if (u->tls && tls_handshake(c, u, err) < 0) {
                disconnect(c);
                return -1;
            }
            xstrlcpy(c->origin, origin, sizeof(c->origin));
            c->used = 0;
            return 0;
        }
        close(c->fd);
        c->fd = -1;
    }
    return err_set(err, ERR_TRANSIENT, "cannot connect to '%s' port %d: %s", u->host, u->port,
                   strerror(last_errno ? last_errno : ECONNREFUSED));
}

/* ---------------------------------------------------------------- raw I/O */

/* Write all of buf; 0, or -1 with err (transient). */
static int write_all(struct hclient *c, const char *buf, size_t len, struct err *err)
{
    while (len > 0) {
        c->deadline = now_ms() + c->o.io_timeout_ms;
        ssize_t w;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, buf, len > 0x40000000 ? 0x40000000 : (int)len);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                    if (!wait_ready(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
                        return err_set(err, ERR_TRANSIENT, "send timed out");
                    continue;
                }
                return err_set(err, ERR_TRANSIENT, "send failed: %s",
                               e == SSL_ERROR_SYSCALL ? strerror(errno ? errno : EPIPE)
                                                      : ssl_reason());
            }
            w = r;
        } else {
            w = send(c->fd, buf, len, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    if (errno == EAGAIN && !wait_ready(c, POLLOUT))
                        return err_set(err, ERR_TRANSIENT, "send timed out");
                    continue;
                }
                return err_set(err, ERR_TRANSIENT, "send failed: %s", strerror(errno));
            }
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Fill the read buffer with at least one more byte; 1 got some, 0 EOF, -1 err. */
static int fill(struct hclient *c, struct err *err)
{
    if (c->rpos == c->rlen)
        c->rpos = c->rlen = 0;
    if (c->rlen == sizeof(c->rbuf)) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    for (;;) {
        c->deadline = now_ms() + c->o.io_timeout_ms;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, c->rbuf + c->rlen, (int)(sizeof(c->rbuf) - c->rlen));
            if (r > 0) {
                c->rlen += (size_t)r;
                return 1;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (!wait_ready(c, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT))
                    return err_set(err, ERR_TRANSIENT, "reply timed out");
                continue;
            }
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
                return 0;
            return err_set(err, ERR_TRANSIENT, "receive failed: %s",
                           e == SSL_ERROR_SYSCALL ? strerror(errno) : ssl_reason());
        }
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, 0);
        if (r > 0) {
            c->rlen += (size_t)r;
            return 1;
        }
        if (r == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            if (!wait_ready(c, POLLIN))
                return err_set(err, ERR_TRANSIENT, "reply timed out");
            continue;
        }
        return err_set(err, ERR_TRANSIENT, "receive failed: %s", strerror(errno));
    }
}

/* One line (CRLF or LF stripped) into line; 1 got it, 0 EOF before any byte, -1 err. */
static int read_line(struct hclient *c, struct sbuf *line, size_t *budget, struct err *err)
{
    line->len = 0;
    if (line->buf)
        line->buf[0] = '\0';
    for (;;) {
        char *nl = memchr(c->rbuf + c->rpos, '\n', c->rlen - c->rpos);
        size_t n = nl ? (size_t)(nl - (c->rbuf + c->rpos)) + 1 : c->rlen - c->rpos;
        if (n > *budget)
            return err_set(err, ERR_PERMANENT, "reply headers over %d bytes", HCLIENT_HEADERS_MAX);
        *budget -= n;
        sbuf_add(line, c->rbuf + c->rpos, n);
        c->rpos += n;
        if (nl) {
            while (line->len &&
                   (line->buf[line->len - 1] == '\n' || line->buf[line->len - 1] == '\r'))
                line->buf[--line->len] = '\0';
            return 1;
        }
        int r = fill(c, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            if (line->len == 0)
                return 0;
            return err_set(err, ERR_TRANSIENT, "connection closed inside the reply headers");
        }
    }
}

/* Exactly n body bytes, kept in body up to cap (the rest is an error). */
static int read_body(struct hclient *c, unsigned long long n, struct sbuf *body, size_t cap,
                     struct err *err)
{
    while (n > 0) {
        if (c->rpos == c->rlen) {
            int r = fill(c, err);
            if (r < 0)
                return -1;
            if (r == 0)
                return err_set(err, ERR_TRANSIENT, "connection closed inside the reply body");
        }
        size_t take = c->rlen - c->rpos;
        if (take > n)
            take = (size_t)n;
        if (body->len + take > cap)
            return err_set(err, ERR_PERMANENT, "reply body over %zu bytes", cap);
        sbuf_add(body, c->rbuf + c->rpos, take);
        c->rpos += take;
        n -= take;
    }
    return 0;
}

/* ---------------------------------------------------------------- one exchange */

enum stage { ST_NONE, ST_SENT_SOME, ST_REPLY };

static int parse_ull(const char *s, int base, unsigned long long *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (!isxdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, base);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || (*end && *end != ';'))
        return -1;
    *out = v;
    return 0;
}

/* Read a reply (after the request went out, or failed to). *got_reply is set once a
 * status line arrived. */
static int read_reply(struct hclient *c, const struct hreq *req, struct hresp *resp, int *got_reply,
                      int *keep, struct err *err)
{
    struct sbuf line, body;
    sbuf_init(&line);
    sbuf_init(&body);
    size_t budget = HCLIENT_HEADERS_MAX;
    size_t cap = req->resp_max ? req->resp_max : HCLIENT_RESP_DEFAULT;
    int rc = -1;
    int status, minor;
    unsigned long long clen = 0;
    int have_len = 0, chunked = 0, close_conn = 0;
    long retry_after = -1;
    for (;;) {
        int r = read_line(c, &line, &budget, err);
        if (r < 0)
            goto out;
        if (r == 0) {
            err_set(err, ERR_TRANSIENT, "connection closed before a reply");
            goto out;
        }
        if (sscanf(line.buf, "HTTP/1.%d %3d", &minor, &status) != 2 || status < 100 ||
            status > 999) {
            err_set(err, ERR_TRANSIENT, "not an HTTP reply");
            goto out;
        }
        *got_reply = 1;
        close_conn = minor == 0;
        have_len = chunked = 0;
        for (;;) {
            if (read_line(c, &line, &budget, err) <= 0) {
                if (err && err->kind == ERR_NONE)
                    err_set(err, ERR_TRANSIENT, "connection closed inside the reply headers");
                goto out;
            }
            if (line.len == 0)
                break;
            char *colon = strchr(line.buf, ':');
            if (!colon)
                continue;
            *colon = '\0';
            const char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            if (strcasecmp(line.buf, "content-length") == 0) {
                if (parse_ull(v, 10, &clen) < 0) {
                    err_set(err, ERR_TRANSIENT, "bad Content-Length in reply");
                    goto out;
                }
                have_len = 1;
            } else if (strcasecmp(line.buf, "transfer-encoding") == 0) {
                chunked = strcasestr(v, "chunked") != NULL;
            } else if (strcasecmp(line.buf, "connection") == 0) {
                if (strcasestr(v, "close"))
                    close_conn = 1;
                else if (strcasestr(v, "keep-alive"))
                    close_conn = 0;
            } else if (strcasecmp(line.buf, "retry-after") == 0) {
                unsigned long long s;
                if (parse_ull(v, 10, &s) == 0)
                    retry_after = s > 3600 ? 3600 : (long)s;
            }
        }
        if (status >= 200 || status == 101)
            break; /* 1xx interim replies (100 Continue) are skipped */
    }
    int no_body = strcmp(req->method, "HEAD") == 0 || status == 204 || status == 304;
    if (no_body) {
        /* nothing */
    } else if (chunked) {
        for (;;) {
            unsigned long long n;
            if (read_line(c, &line, &budget, err) <= 0 || parse_ull(line.buf, 16, &n) < 0) {
                if (!err || err->kind == ERR_NONE)
                    err_set(err, ERR_TRANSIENT, "bad chunk in reply");
                goto out;
            }
            budget = HCLIENT_HEADERS_MAX;
            if (n == 0) {
                do {
                    if (read_line(c, &line, &budget, err) <= 0) {
                        if (!err || err->kind == ERR_NONE)
                            err_set(err, ERR_TRANSIENT, "bad chunk trailer in reply");
                        goto out;
                    }
                } while (line.len);
                break;
            }
            if (read_body(c, n, &body, cap, err) < 0)
                goto out;
            if (read_line(c, &line, &budget, err) <= 0) {
                if (!err || err->kind == ERR_NONE)
                    err_set(err, ERR_TRANSIENT, "bad chunk in reply");
                goto out;
            }
        }
    } else if (have_len) {
        if (read_body(c, clen, &body, cap, err) < 0)
            goto out;
    } else {
        close_conn = 1; /* delimited by close */
        for (;;) {
            if (c->rpos < c->rlen) {
                size_t take = c->rlen - c->rpos;
                if (body.len + take > cap) {
                    err_set(err, ERR_PERMANENT, "reply body over %zu bytes", cap);
                    goto out;
                }
                sbuf_add(&body, c->rbuf + c->rpos, take);
                c->rpos = c->rlen;
            }
            int r = fill(c, err);
            if (r < 0)
                goto out;
            if (r == 0)
                break;
        }
    }
    resp->status = status;
    resp->retry_after_s = retry_after;
    resp->body = sbuf_steal(&body, &resp->body_len);
    *keep = !close_conn;
    rc = 0;
out:
    sbuf_release(&line);
    sbuf_release(&body);
    return rc;
}

static int exchange(struct hclient *c, const struct hurl *u, const struct hreq *req,
                    struct hresp *resp, enum stage *stage, struct err *err)
{
    struct sbuf head;
    sbuf_init(&head);
    int rc = -1;
    *stage = ST_NONE;
    sbuf_printf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: xm-agent\r\n", req->method,
                u->target, u->hostport);
    if (req->body_len || req->send_length)
        sbuf_printf(&head, "Content-Length: %zu\r\n", req->body_len);
    for (const char *const *h = req->headers; h && *h; h++)
        sbuf_printf(&head, "%s\r\n", *h);
    sbuf_adds(&head, "\r\n");
    struct err werr = {0};
    int wrote = write_all(c, head.buf, head.len, &werr);
    const char *body = req->body;
    size_t left = req->body_len;
    while (wrote == 0 && left > 0) {
        size_t n = left < SLICE ? left : SLICE;
        if (req->pace)
            req->pace(req->pace_arg, n);
        *stage = ST_SENT_SOME;
        wrote = write_all(c, body, n, &werr);
        body += n;
        left -= n;
    }
    int got_reply = 0, keep = 0;
    if (wrote < 0) {
        /* The server may have answered (403, 413) and closed before reading it all: a
         * reply already in the socket says more than the failed send. */
        int saved = c->o.io_timeout_ms;
        c->o.io_timeout_ms = 2000;
        int r = read_reply(c, req, resp, &got_reply, &keep, NULL);
        c->o.io_timeout_ms = saved;
        if (r == 0) {
            keep = 0;
            rc = 0;
        } else {
            if (err)
                *err = werr;
        }
        if (got_reply)
            *stage = ST_REPLY;
        goto out;
    }
    *stage = ST_SENT_SOME;
    rc = read_reply(c, req, resp, &got_reply, &keep, err);
    if (got_reply)
        *stage = ST_REPLY;
out:
    if (rc < 0 || !keep)
        disconnect(c);
    else
        c->used = 1;
    sbuf_release(&head);
    return rc;
}

void hresp_release(struct hresp *r)
{
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

int hclient_do(struct hclient *c, const struct hreq *req, struct hresp *resp, struct err *err)
{
    struct hurl u;
    memset(resp, 0, sizeof(*resp));
    resp->retry_after_s = -1;
    if (hurl_parse(req->url, &u, err) < 0)
        return -1;
    int rc = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (connect_to(c, &u, err) < 0)
            goto out;
        int reused = c->used;
        enum stage st;
        struct err e = {0};
        rc = exchange(c, &u, req, resp, &st, &e);
        if (rc == 0)
            goto out;
        /* A kept-alive connection the server had already closed fails before any reply:
         * that says nothing about this request, so it gets one fresh connection. */
        if (reused && st != ST_REPLY && e.kind == ERR_TRANSIENT)
            continue;
        if (err)
            *err = e;
        goto out;
    }
out:
    hurl_release(&u);
    return rc;
}
