#include "config.h"

#ifndef XM_PLAYBOOKS_DEFAULT
#define XM_PLAYBOOKS_DEFAULT "/usr/share/xmigrate/playbooks"
#endif
#ifndef XM_AGENT_DEFAULT
#define XM_AGENT_DEFAULT "/usr/lib/xmigrate/xm-agent"
#endif
#ifndef XM_SCHEMAS_DEFAULT
#define XM_SCHEMAS_DEFAULT "/usr/share/xmigrate/schemas"
#endif

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "xmalloc.h"

struct config xm_config;

enum config_type { CFG_INT, CFG_STR };

struct config_var {
    const char *name;
    enum config_type type;
    size_t offset;
    const char *def; /* default, as it would be written in the environment */
    long long min, max;
    int secret;
    int (*check)(const char *value); /* extra check for strings; 0 ok */
    const char *help;
};

static int check_level(const char *v)
{
    enum log_level saved = log_min_level;
    int rc = log_set_level(v);
    log_min_level = saved;
    return rc;
}

#define OFF(f) offsetof(struct config, f)
#define INT(n, f, d, lo, hi, h)                                                                    \
    {                                                                                              \
        n, CFG_INT, OFF(f), d, lo, hi, 0, NULL, h                                                  \
    }
#define STR(n, f, d, chk, h)                                                                       \
    {                                                                                              \
        n, CFG_STR, OFF(f), d, 0, 0, 0, chk, h                                                     \
    }
#define SECRET(n, f, h)                                                                            \
    {                                                                                              \
        n, CFG_STR, OFF(f), "", 0, 0, 1, NULL, h                                                   \
    }

static const struct config_var vars[] = {
    STR("XM_REDIS_HOST", redis_host, "127.0.0.1", NULL, "redis host"),
    INT("XM_REDIS_PORT", redis_port, "6379", 1, 65535, "redis port"),
    STR("XM_REDIS_SOCKET", redis_socket, "", NULL, "redis unix socket (overrides host/port)"),
    INT("XM_REDIS_TIMEOUT_MS", redis_timeout_ms, "5000", 100, 600000,
        "connect and command timeout"),
    STR("XM_LOG_LEVEL", log_level, "info", check_level, "debug, info, warn or error"),
    STR("XM_CONSUMER", consumer, "", NULL, "consumer name; default <hostname>-<pid>"),
    INT("XM_MAX_ATTEMPTS", max_attempts, "5", 1, 100, "attempts before a job is dead"),
    INT("XM_RETRY_BASE_MS", retry_base_ms, "1000", 1, 3600000, "first retry delay"),
    INT("XM_RETRY_MAX_MS", retry_max_ms, "300000", 1, 86400000, "retry delay cap"),
    INT("XM_VISIBILITY_TIMEOUT_MS", visibility_timeout_ms, "60000", 100, 86400000,
        "idle time after which another worker takes a job over"),
    INT("XM_BLOCK_MS", block_ms, "1000", 1, 60000, "XREADGROUP BLOCK time"),
    INT("XM_BATCH", batch, "16", 1, 1000, "entries read per XREADGROUP"),
    INT("XM_HEARTBEAT_MS", heartbeat_ms, "5000", 50, 600000,
        "worker heartbeat and job lease refresh period"),
    INT("XM_EVENTS_MAXLEN", events_maxlen, "100000", 100, 100000000, "xm:events cap"),
    INT("XM_DEAD_MAXLEN", dead_maxlen, "100000", 100, 100000000, "xm:dead cap"),
    INT("XM_DONE_TTL_S", done_ttl_s, "604800", 60, 31536000,
        "how long a completed job id is remembered (duplicate suppression)"),
    STR("XM_API_ADDR", api_addr, "127.0.0.1", NULL, "xm-api listen address"),
    INT("XM_API_PORT", api_port, "8080", 1, 65535, "xm-api listen port"),
    INT("XM_API_THREADS", api_threads, "2", 1, 64, "xm-api event loop threads"),
    INT("XM_API_MAX_BODY", api_max_body, "1048576", 1024, 67108864,
        "largest request body in bytes (larger: 413)"),
    INT("XM_API_MAX_HEADERS", api_max_headers, "16384", 1024, 1048576,
        "largest request header block in bytes"),
    INT("XM_API_TIMEOUT_S", api_timeout_s, "30", 1, 3600, "idle connection timeout"),
    INT("XM_API_MAX_SSE", api_max_sse, "256", 1, 100000, "event streams open at once"),
    INT("XM_API_SSE_POLL_MS", api_sse_poll_ms, "200", 10, 10000,
        "how often an event stream looks for new events"),
    INT("XM_API_TOKEN_CACHE_MS", api_token_cache_ms, "2000", 0, 600000,
        "how long a verified API token is trusted before Redis is asked again"),
    STR("XM_SCHEMAS_DIR", schemas_dir, XM_SCHEMAS_DEFAULT, NULL, "folder of JSON Schemas"),
    STR("XM_AWS_ENDPOINT", aws_endpoint, "", NULL,
        "base URL for every AWS service (an emulator); empty: AWS itself"),
    STR("XM_AWS_EC2IMPORT_ENDPOINT", aws_ec2import_endpoint, "", NULL,
        "base URL for VM Import/Export calls (a fake, as moto lacks them); empty: "
        "XM_AWS_ENDPOINT's EC2"),
    INT("XM_AWS_IMPORT_POLL_MS", aws_import_poll_ms, "5000", 10, 600000,
        "first pause between looks at a VM Import task (it doubles up to 30 s)"),
    STR("XM_AWS_BUCKET", aws_bucket, "", NULL,
        "S3 bucket for disk chunks; empty: xmigrate-<hash of key and region>"),
    STR("XM_AZURE_LOGIN_ENDPOINT", azure_login_endpoint, "", NULL,
        "Entra ID base URL (a fake); empty: https://login.microsoftonline.com"),
    STR("XM_AZURE_ARM_ENDPOINT", azure_arm_endpoint, "", NULL,
        "Resource Manager base URL (a fake); empty: https://management.azure.com"),
    STR("XM_AZURE_BLOB_ENDPOINT", azure_blob_endpoint, "", NULL,
        "Blob service base URL including the account (Azurite: http://H:P/devstoreaccount1);"
        " empty: https://<account>.blob.core.windows.net"),
    STR("XM_GCP_TOKEN_ENDPOINT", gcp_token_endpoint, "", NULL,
        "OAuth2 token URL (a fake); empty: the key file's token_uri"),
    STR("XM_GCP_STORAGE_ENDPOINT", gcp_storage_endpoint, "", NULL,
        "Cloud Storage base URL (a fake); empty: https://storage.googleapis.com"),
    STR("XM_GCP_COMPUTE_ENDPOINT", gcp_compute_endpoint, "", NULL,
        "Compute Engine base URL (a fake); empty: https://compute.googleapis.com"),
    STR("XM_TLS_CA_FILE", tls_ca_file, "", NULL, "CA bundle for cloud endpoints; empty: system"),
    STR("XM_PLAYBOOKS_DIR", playbooks_dir, XM_PLAYBOOKS_DEFAULT, NULL, "folder of playbooks"),
    STR("XM_AGENT_PATH", agent_path, XM_AGENT_DEFAULT, NULL,
        "the static xm-agent binary copied to source servers"),
    STR("XM_AGENT_API_URL", agent_api_url, "", NULL,
        "xm-api's URL as source servers reach it (clone phase)"),
    STR("XM_API_URL", api_url, "http://127.0.0.1:8080", NULL,
        "xm-api's URL as the workers reach it (discovery posts the facts there)"),
    INT("XM_DISCOVERY_WAIT_S", discovery_wait_s, "60", 1, 3600,
        "how long discovery waits for a host's facts to reach xm-api after its playbook"),
    INT("XM_CONVERT_SHARD_MB", convert_shard_mb, "64", 1, 1048576,
        "disk bytes per convert shard in MiB (rounded to whole clone chunks)"),
    INT("XM_AGENT_PARALLEL", agent_parallel, "4", 1, 64, "uploads in flight per disk"),
    INT("XM_AGENT_LIMIT_MBPS", agent_limit_mbps, "0", 0, 100000,
        "bandwidth cap per disk copy in Mbit/s (0: none)"),
    INT("XM_MAX_CLONING", max_cloning, "4", 1, 1000,
        "hosts of one migration copying their disks at once, when the migration does not "
        "say (max_cloning)"),
    SECRET("XM_MASTER_KEY", master_key, "AES-256-GCM key for secrets at rest (64 hex digits)"),
    SECRET("XM_BOOTSTRAP_TOKEN", bootstrap_token,
           "API token stored at start-up when no token exists yet"),
};

static void set_str(const struct config_var *v, const char *value)
{
    char **slot = (char **)((char *)&xm_config + v->offset);
    free(*slot);
    *slot = xstrdup(value);
}

int config_parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    /* strtoll skips leading white space and takes a '+': a config value must not. */
    if (!s || !((*s >= '0' && *s <= '9') || (*s == '-' && s[1] >= '0' && s[1] <= '9')))
        return -1;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static const char *env_lookup(const char *name)
{
    return getenv(name);
}

int config_load(struct err *err)
{
    return config_load_from(env_lookup, err);
}

int config_load_from(const char *(*lookup)(const char *name), struct err *err)
{
    config_release();
    for (size_t i = 0; i < XM_ARRAY_LEN(vars); i++) {
        const struct config_var *v = &vars[i];
        const char *value = lookup(v->name);
        int from_env = value != NULL;
        if (!value)
            value = v->def;
        if (v->type == CFG_INT) {
            long long *slot = (long long *)((char *)&xm_config + v->offset);
            if (config_parse_ll(value, v->min, v->max, slot) < 0)
                return err_set(err, ERR_PERMANENT,
                               "%s: '%s' is not a whole number from %lld to %lld", v->name,
                               from_env ? value : v->def, v->min, v->max);
        } else {
            if (v->check && v->check(value) < 0)
                return err_set(err, ERR_PERMANENT, "%s: '%s' is not valid (%s)", v->name, value,
                               v->help);
            set_str(v, value);
        }
    }
    return 0;
}

void config_release(void)
{
    for (size_t i = 0; i < XM_ARRAY_LEN(vars); i++) {
        if (vars[i].type == CFG_STR) {
            char **slot = (char **)((char *)&xm_config + vars[i].offset);
            free(*slot);
            *slot = NULL;
        }
    }
}

char *config_dump(void)
{
    char *out = xstrdup("");
    for (size_t i = 0; i < XM_ARRAY_LEN(vars); i++) {
        const struct config_var *v = &vars[i];
        char *line;
        if (v->type == CFG_INT) {
            long long *slot = (long long *)((char *)&xm_config + v->offset);
            line = xasprintf("%s%s=%lld\n", out, v->name, *slot);
        } else {
            char **slot = (char **)((char *)&xm_config + v->offset);
            const char *val = *slot ? *slot : "";
            if (v->secret && *val)
                val = "<redacted>";
            line = xasprintf("%s%s=%s\n", out, v->name, val);
        }
        free(out);
        out = line;
    }
    return out;
}
