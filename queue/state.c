#include "state.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "keys.h"
#include "secret.h"
#include "xmalloc.h"

static int copy_field(const redisReply *h, const char *name, char *out, size_t size)
{
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (strcmp(h->element[i]->str, name) == 0) {
            if (h->element[i + 1]->len >= size)
                return -1;
            memcpy(out, h->element[i + 1]->str, h->element[i + 1]->len + 1);
            return 0;
        }
    out[0] = '\0';
    return 0;
}

static const char *field(const redisReply *h, const char *name)
{
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (strcmp(h->element[i]->str, name) == 0)
            return h->element[i + 1]->str;
    return NULL;
}

int state_load_migration(struct redisContext *c, const char *id, struct mig_info *out,
                         struct err *err)
{
    memset(out, 0, sizeof(*out));
    char key[256], hosts[256];
    snprintf(key, sizeof(key), XM_MIG_FMT, id);
    snprintf(hosts, sizeof(hosts), XM_MIG_HOSTS_FMT, id);
    redisReply *h = conn_cmd(c, err, 2, (const char *[]){"HGETALL", key});
    if (!h)
        return err_prefix(err, "migration '%s'", id);
    redisReply *names = conn_cmd(c, err, 3, (const char *[]){"SORT", hosts, "ALPHA"});
    if (!names) {
        freeReplyObject(h);
        return err_prefix(err, "migration '%s'", id);
    }
    int rc = -1;
    if (h->elements == 0) {
        err_set(err, ERR_PERMANENT, "migration '%s' does not exist", id);
        goto out;
    }
    if (strlen(id) >= sizeof(out->id) ||
        copy_field(h, "cloud", out->cloud, sizeof(out->cloud)) < 0 ||
        copy_field(h, "region", out->region, sizeof(out->region)) < 0 ||
        copy_field(h, "credential", out->credential, sizeof(out->credential)) < 0 ||
        copy_field(h, "status", out->status, sizeof(out->status)) < 0) {
        err_set(err, ERR_PERMANENT, "migration '%s': a field is over its length", id);
        goto out;
    }
    memcpy(out->id, id, strlen(id) + 1);
    const char *bp = field(h, "blueprint");
    if (bp) {
        json_error_t jerr;
        out->blueprint = json_loads(bp, JSON_REJECT_DUPLICATES, &jerr);
        if (!out->blueprint) {
            err_set(err, ERR_PERMANENT, "migration '%s': stored blueprint is not JSON (%s)", id,
                    jerr.text);
            goto out;
        }
    }
    const char *net = field(h, "network");
    if (net && !(out->network = json_loads(net, JSON_REJECT_DUPLICATES, NULL))) {
        err_set(err, ERR_PERMANENT, "migration '%s': stored network record is not JSON", id);
        goto out;
    }
    out->hosts = json_array();
    for (size_t i = 0; i < names->elements; i++)
        json_array_append_new(out->hosts, json_string(names->element[i]->str));
    rc = 0;
out:
    freeReplyObject(h);
    freeReplyObject(names);
    if (rc < 0)
        mig_info_release(out);
    return rc;
}

void mig_info_release(struct mig_info *m)
{
    json_decref(m->blueprint);
    json_decref(m->hosts);
    json_decref(m->network);
    m->network = NULL;
    m->blueprint = NULL;
    m->hosts = NULL;
}

int state_open_credential(struct redisContext *c, const char *cred_id, const unsigned char key[32],
                          json_t **secret, char kind[16], struct err *err)
{
    *secret = NULL;
    char k[200];
    snprintf(k, sizeof(k), XM_CRED_FMT, cred_id);
    redisReply *h = conn_cmd(c, err, 4, (const char *[]){"HMGET", k, "kind", "sealed"});
    if (!h)
        return err_prefix(err, "credential '%s'", cred_id);
    int rc = -1;
    unsigned char *plain = NULL;
    size_t len = 0;
    if (h->elements != 2 || h->element[0]->type != REDIS_REPLY_STRING ||
        h->element[1]->type != REDIS_REPLY_STRING) {
        err_set(err, ERR_PERMANENT, "credential '%s' does not exist", cred_id);
        goto out;
    }
    if (h->element[0]->len >= 16) {
        err_set(err, ERR_PERMANENT, "credential '%s': unknown kind", cred_id);
        goto out;
    }
    memcpy(kind, h->element[0]->str, h->element[0]->len + 1);
    if (secret_open(key, cred_id, h->element[1]->str, &plain, &len, err) < 0)
        goto out;
    json_error_t jerr;
    *secret = json_loadb((const char *)plain, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*secret || !json_is_object(*secret)) {
        json_decref(*secret);
        *secret = NULL;
        err_set(err, ERR_PERMANENT, "credential '%s': opened, but not a JSON object", cred_id);
        goto out;
    }
    rc = 0;
out:
    if (plain) {
        secret_wipe(plain, len);
        free(plain);
    }
    freeReplyObject(h);
    return rc;
}

int state_add_resource(struct redisContext *c, const char *mig, const char *resource,
                       struct err *err)
{
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_RESOURCES_FMT, mig);
    redisReply *r = conn_cmd(c, err, 3, (const char *[]){"SADD", key, resource});
    if (!r)
        return -1;
    freeReplyObject(r);
    return 0;
}

int state_set_migration_field(struct redisContext *c, const char *mig, const char *fieldname,
                              const char *value, struct err *err)
{
    char key[256];
    snprintf(key, sizeof(key), XM_MIG_FMT, mig);
    redisReply *r = conn_cmd(c, err, 4, (const char *[]){"HSET", key, fieldname, value});
    if (!r)
        return -1;
    freeReplyObject(r);
    return 0;
}
