/*
 * harness: what the integration tests and benchmarks need around the code under test:
 * a real redis-server on a free loopback port in a temporary directory (AOF on), worker
 * processes started with an argument vector and extra environment, and waiting for a
 * condition with a deadline (never a fixed sleep).
 *
 * Test-only code: failures here abort the test with a message (they are setup errors).
 */
#ifndef XM_HARNESS_H
#define XM_HARNESS_H

#include <sys/types.h>

struct redisContext;
struct redisReply;

struct redis_srv {
    pid_t pid;
    int port;
    char dir[256];
};

/* Start redis-server (AOF on, fsync always) on a free port in a new temp dir. */
void rs_start(struct redis_srv *s);
/* Start it again on the same port and directory (after rs_stop), replaying the AOF. */
void rs_restart(struct redis_srv *s);
/* Stop it with sig (SIGKILL for a crash, SIGTERM for a clean shutdown) and reap it. */
void rs_stop(struct redis_srv *s, int sig);
/* Stop it and remove its directory. */
void rs_destroy(struct redis_srv *s);
/* A new connection (redisFree it). */
struct redisContext *rs_connect(const struct redis_srv *s);

/* Run a command (printf-style, hiredis format); aborts on a transport error. */
struct redisReply *rs_cmd(struct redisContext *c, const char *fmt, ...);
long long rs_int(struct redisContext *c, const char *fmt, ...);
/* String reply as a new string ("" for nil). */
char *rs_str(struct redisContext *c, const char *fmt, ...);

/*
 * Start a worker binary with argv (argv[0] is the path) and the environment of this
 * process plus XM_REDIS_PORT and each "NAME=value" in env (NULL-terminated, may be
 * NULL). Its stderr goes to <srv dir>/<log_name>.log.
 */
pid_t spawn_worker(const struct redis_srv *s, const char *log_name, char *const argv[],
                   char *const env[]);
/* Send sig and wait for the process; returns its wait status. */
int stop_process(pid_t pid, int sig);
/* Wait up to timeout_ms for the process to exit; -1 on timeout, else its wait status. */
int wait_process(pid_t pid, int timeout_ms);

/* Poll cond(arg) every few ms until it returns non-zero or timeout_ms passes. */
int wait_until(int (*cond)(void *arg), void *arg, int timeout_ms);

/* Enqueue a job of phase for migration/host with payload (JSON text). */
void enqueue_job(struct redisContext *c, const char *phase, const char *migration, const char *host,
                 const char *disk, const char *payload);

long long mono_ms(void);

/*
 * A helper program (a fake cloud, the fault proxy: tests/fakes/) that prints one JSON line
 * {"port": N, ...} on stdout once it listens: started with argv (argv[0] is run through
 * PATH, e.g. "python3"), its stderr appended to log_path. Fills endpoint
 * "http://127.0.0.1:N".
 */
struct helper_proc {
    pid_t pid;
    int port;
    char endpoint[64];
};
void helper_proc_start(struct helper_proc *h, char *const argv[], const char *log_path);
/* SIGTERM it and reap it. */
void helper_proc_stop(struct helper_proc *h);

/* A moto_server (AWS emulator) on a free loopback port, started by tests/support/moto.py.
 * With sigcheck, SigV4 is verified and the keys are a real IAM user's. */
struct moto {
    pid_t pid;
    int port;
    char endpoint[64];
    char access_key[64];
    char secret_key[128];
};
void moto_start(struct moto *m, int sigcheck, const char *log_path);
/* The same, listening on addr (e.g. the host side of a test network namespace). */
void moto_start_on(struct moto *m, int sigcheck, const char *log_path, const char *addr);
void moto_stop(struct moto *m);
/* POST /moto-api/reset: forget every resource. */
void moto_reset(const struct moto *m);

#endif
