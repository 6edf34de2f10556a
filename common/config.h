/*
 * config: every XM_* environment variable, declared once in one table.
 *
 * Each entry has a type, a default, bounds and a one-line help. config_load() parses
 * the environment once at start-up into the global `xm_config`; a value that does not
 * parse or is out of bounds fails the load with a message naming the variable, and the
 * process stops (the caller logs and exits; this module never does). Secrets are
 * marked so config_dump() shows them as "<redacted>".
 *
 * After config_load() returns 0, `xm_config` is read-only for the life of the process.
 * Strings in it are owned by this module (config_release() frees them).
 */
#ifndef XM_CONFIG_H
#define XM_CONFIG_H

#include "err.h"

struct config {
    /* Redis */
    char *redis_host;
    long long redis_port;
    char *redis_socket; /* Unix socket path; empty means TCP */
    long long redis_timeout_ms;
    /* logging */
    char *log_level;
    /* worker runtime */
    char *consumer; /* consumer name; empty means "<hostname>-<pid>" */
    long long max_attempts;
    long long retry_base_ms;
    long long retry_max_ms;
    long long visibility_timeout_ms;
    long long block_ms;
    long long batch;
    long long heartbeat_ms;
    long long events_maxlen;
    long long dead_maxlen;
    long long done_ttl_s;
    /* xm-api */
    char *api_addr;
    long long api_port;
    long long api_threads;
    long long api_max_body;
    long long api_max_headers;
    long long api_timeout_s;
    long long api_max_sse;
    long long api_sse_poll_ms;
    long long api_token_cache_ms;
    char *schemas_dir;
    /* clouds */
    char *aws_endpoint;         /* one base URL for every AWS service (tests: moto); empty: AWS */
    char *azure_login_endpoint; /* Entra ID; empty: the real one */
    char *azure_arm_endpoint;   /* Resource Manager; empty: the real one */
    char *azure_blob_endpoint;  /* blob service incl. account; empty: <account>.blob... */
    char *gcp_token_endpoint;   /* OAuth2 token URL; empty: the key's token_uri */
    char *gcp_storage_endpoint; /* Cloud Storage; empty: the real one */
    char *gcp_compute_endpoint; /* Compute Engine; empty: the real one */
    char *tls_ca_file;
    char *aws_bucket; /* chunk bucket; empty: one derived from the access key and region */
    char *aws_ec2import_endpoint; /* ImportImage & co. (tests: a fake); empty: EC2's endpoint */
    long long aws_import_poll_ms; /* first pause between DescribeImportImageTasks */
    /* Ansible phases */
    char *playbooks_dir;
    long long convert_shard_mb; /* disk MiB per convert shard */
    char *agent_path;           /* the static xm-agent binary copied to sources */
    char *agent_api_url;        /* how a source server reaches xm-api */
    /* how workers reach xm-api (discovery callback), and how long discovery waits for
     * a host's facts to arrive there */
    char *api_url;
    long long discovery_wait_s;
    long long agent_parallel;
    long long agent_limit_mbps;
    long long max_cloning; /* hosts of one migration cloning at once, unless it says */
    /* secrets */
    char *master_key;
    char *bootstrap_token;
};

extern struct config xm_config;

/* Parse the environment into xm_config. 0, or -1 with a permanent err naming the variable. */
int config_load(struct err *err);

/* Parse from a lookup function instead of getenv (tests). */
int config_load_from(const char *(*lookup)(const char *name), struct err *err);

void config_release(void);

/* One "XM_NAME=value" per line, secrets redacted; new string, caller frees. */
char *config_dump(void);

/* Parse a whole base-10 integer within [min, max]; -1 on junk, overflow or bounds. */
int config_parse_ll(const char *s, long long min, long long max, long long *out);

#endif
