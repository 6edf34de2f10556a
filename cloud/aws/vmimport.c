#include "aws/vmimport.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xmalloc.h"

/* What differs between the two kinds of task, indexed by enum vmimport_kind. */
static const struct {
    const char *name;
    const char *a_name; /* with its article, for messages */
    const char *import_action;
    const char *describe_action;
    const char *task_set; /* the Describe reply's list */
    const char *id_prefix;
    const char *resource_type; /* of the TagSpecification */
} kinds[] = {
    {"image", "an image", "ImportImage", "DescribeImportImageTasks", "importImageTaskSet",
     "import-ami-", "import-image-task"},
    {"snapshot", "a snapshot", "ImportSnapshot", "DescribeImportSnapshotTasks",
     "importSnapshotTaskSet", "import-snap-", "import-snapshot-task"},
};

static int valid_kind(enum vmimport_kind kind)
{
    return kind == VMIMPORT_IMAGE || kind == VMIMPORT_SNAPSHOT;
}

const char *vmimport_kind_str(enum vmimport_kind kind)
{
    return valid_kind(kind) ? kinds[kind].name : "unknown";
}

/* ---------------------------------------------------------------- checks */

/* prefix followed by letters and digits, shorter than VMIMPORT_ID_MAX: safe anywhere. */
static int valid_id(const char *id, const char *prefix)
{
    size_t p = strlen(prefix);
    if (!id || strncmp(id, prefix, p) != 0)
        return 0;
    size_t n = strlen(id);
    if (n <= p || n >= VMIMPORT_ID_MAX)
        return 0;
    for (const char *c = id + p; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            return 0;
    return 1;
}

static int check_task_id(enum vmimport_kind kind, const char *id, struct err *err)
{
    if (!valid_kind(kind))
        return err_set(err, ERR_PERMANENT, "vmimport: unknown task kind %d", (int)kind);
    if (!valid_id(id, kinds[kind].id_prefix))
        return err_set(err, ERR_PERMANENT, "vmimport: '%.*s' is not the id of %s import task",
                       VMIMPORT_ID_MAX, id ? id : "", kinds[kind].a_name);
    return 0;
}

static int check_tag(const char *v, const char *what, struct err *err)
{
    if (!v || !v[0] || strlen(v) > EBS_TAG_VALUE_MAX)
        return err_set(err, ERR_PERMANENT, "vmimport: the %s tag must be 1 to %d bytes", what,
                       EBS_TAG_VALUE_MAX);
    return 0;
}

static int check_tags(const struct ebs_tags *t, struct err *err)
{
    if (check_tag(t->migration, "migration", err) < 0 || check_tag(t->host, "host", err) < 0 ||
        check_tag(t->disk, "disk", err) < 0)
        return -1;
    return 0;
}

/* S3's rules: 3..63 of [a-z0-9.-], a letter or digit at both ends, no "..". */
static int valid_bucket(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > 63 || strstr(s, ".."))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && ((i == 0 || i == n - 1) || (c != '.' && c != '-')))
            return 0;
    }
    return 1;
}

/* 1..1024 bytes without control characters (they travel in a form body and in XML). */
static int valid_key(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 1024)
        return 0;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return 0;
    return 1;
}

/* The DiskContainer Format for our name of it, or NULL. OVA is not offered: xmigrate
 * writes single disks. */
static const char *format_param(const char *f)
{
    static const char *const names[][2] = {
        {"raw", "RAW"}, {"vmdk", "VMDK"}, {"vhd", "VHD"}, {"vhdx", "VHDX"}};
    for (size_t i = 0; f && i < XM_ARRAY_LEN(names); i++)
        if (strcmp(f, names[i][0]) == 0)
            return names[i][1];
    return NULL;
}

static int one_of(const char *s, const char *a, const char *b)
{
    return s && (strcmp(s, a) == 0 || strcmp(s, b) == 0);
}

/* IAM role names: 1..64 of letters, digits and + = , . @ _ - */
static int valid_role(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("+=,.@_-", *s)))
            return 0;
    return 1;
}

static int valid_token(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return 0;
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return 0;
    return 1;
}

static int check_spec(enum vmimport_kind kind, const struct vmimport_spec *s, struct err *err)
{
    if (check_tags(&s->tags, err) < 0)
        return -1;
    if (!valid_bucket(s->bucket))
        return err_set(err, ERR_PERMANENT, "vmimport: '%.64s' is not a valid bucket name",
                       s->bucket ? s->bucket : "");
    if (!valid_key(s->key))
        return err_set(err, ERR_PERMANENT,
                       "vmimport: an object key is 1 to 1024 bytes without control characters");
    if (!format_param(s->format))
        return err_set(err, ERR_PERMANENT, "vmimport: format '%.16s' is not raw, vmdk, vhd or vhdx",
                       s->format ? s->format : "");
    if (s->description && strlen(s->description) > VMIMPORT_DESCRIPTION_MAX)
        return err_set(err, ERR_PERMANENT, "vmimport: a description is at most %d bytes",
                       VMIMPORT_DESCRIPTION_MAX);
    if (s->role_name && !valid_role(s->role_name))
        return err_set(err, ERR_PERMANENT, "vmimport: '%.64s' is not an IAM role name",
                       s->role_name);
    if (s->client_token && !valid_token(s->client_token))
        return err_set(err, ERR_PERMANENT,
                       "vmimport: a client token is 1 to 64 printable ASCII characters");
    if (s->n_data_keys > VMIMPORT_DATA_MAX || (kind == VMIMPORT_SNAPSHOT && s->n_data_keys))
        return err_set(err, ERR_PERMANENT,
                       "vmimport: at most %d data disks, and only for an image import",
                       VMIMPORT_DATA_MAX);
    for (size_t i = 0; i < s->n_data_keys; i++)
        if (!valid_key(s->data_keys[i]))
            return err_set(err, ERR_PERMANENT,
                           "vmimport: data disk %zu: an object key is 1 to 1024 bytes without "
                           "control characters",
                           i + 1);
    if (kind == VMIMPORT_SNAPSHOT && (s->boot_mode || s->arch))
        return err_set(err, ERR_PERMANENT,
                       "vmimport: a snapshot import takes no boot mode or architecture");
    if (s->boot_mode && !one_of(s->boot_mode, "legacy-bios", "uefi"))
        return err_set(err, ERR_PERMANENT, "vmimport: boot mode '%.32s' is not legacy-bios or uefi",
                       s->boot_mode);
    if (s->arch && !one_of(s->arch, "x86_64", "arm64"))
        return err_set(err, ERR_PERMANENT, "vmimport: architecture '%.32s' is not x86_64 or arm64",
                       s->arch);
    return 0;
}

/* ---------------------------------------------------------------- tasks */

int vmimport_task_failed(const struct vmimport_task *t)
{
    return strcmp(t->status, "deleting") == 0 || strcmp(t->status, "deleted") == 0 ||
           strcmp(t->status, "error") == 0 || strncmp(t->message, "ClientError", 11) == 0;
}

int vmimport_task_done(const struct vmimport_task *t)
{
    if (strcmp(t->status, "completed") != 0 || vmimport_task_failed(t))
        return 0;
    if (t->kind == VMIMPORT_IMAGE)
        return valid_id(t->image_id, "ami-");
    return valid_id(t->snapshot_id, "snap-");
}

static int task_active(const struct vmimport_task *t)
{
    return strcmp(t->status, "active") == 0 && !vmimport_task_failed(t);
}

void vmimport_client_token(enum vmimport_kind kind, const struct ebs_tags *tags,
                           char out[VMIMPORT_TOKEN_SIZE])
{
    /* Each value with its NUL, so ("a", "bc") and ("ab", "c") differ. */
    static const char purpose[] = "xmigrate vm import";
    static const char hex[] = "0123456789abcdef";
    const char *parts[4] = {vmimport_kind_str(kind), tags->migration, tags->host, tags->disk};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    XM_ASSERT(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    XM_ASSERT(EVP_DigestUpdate(ctx, purpose, sizeof(purpose)) == 1);
    for (int i = 0; i < 4; i++) {
        const char *p = parts[i] ? parts[i] : "";
        XM_ASSERT(EVP_DigestUpdate(ctx, p, strlen(p) + 1) == 1);
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    XM_ASSERT(EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

/* ---------------------------------------------------------------- EC2 XML */

static int is_element(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* Status, message and progress of n (an image task, or a snapshot task's detail). */
static void fill_state(xmlNode *n, struct vmimport_task *t)
{
    aws_xml_copy(n, "status", t->status, sizeof(t->status));
    aws_xml_copy(n, "statusMessage", t->message, sizeof(t->message));
    char pct[16];
    aws_xml_copy(n, "progress", pct, sizeof(pct));
    char *end = NULL;
    errno = 0;
    long p = strtol(pct, &end, 10);
    t->progress = (pct[0] && end && *end == '\0' && errno == 0 && p >= 0 && p <= 100) ? (int)p : -1;
}

/* An ImportImage reply's root, an ImportImageTask item, an ImportSnapshot reply's root or
 * an ImportSnapshotTask item into *t. */
static void fill_task(xmlNode *n, enum vmimport_kind kind, struct vmimport_task *t)
{
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->progress = -1;
    aws_xml_copy(n, "importTaskId", t->id, sizeof(t->id));
    if (kind == VMIMPORT_IMAGE) {
        fill_state(n, t);
        aws_xml_copy(n, "imageId", t->image_id, sizeof(t->image_id));
        xmlNode *set = aws_xml_child(n, "snapshotDetailSet");
        for (xmlNode *it = set ? set->children : NULL; it; it = it->next) {
            if (is_element(it, "item")) {
                aws_xml_copy(it, "snapshotId", t->snapshot_id, sizeof(t->snapshot_id));
                break; /* the first disk is the boot disk */
            }
        }
    } else {
        xmlNode *detail = aws_xml_child(n, "snapshotTaskDetail");
        if (detail) {
            fill_state(detail, t);
            aws_xml_copy(detail, "snapshotId", t->snapshot_id, sizeof(t->snapshot_id));
        }
    }
}

/* 1 when n's tagSet holds all three of this disk's tags. */
static int has_tags(xmlNode *n, const struct ebs_tags *tags)
{
    const char *keys[3] = {EBS_TAG_MIGRATION, EBS_TAG_HOST, EBS_TAG_DISK};
    const char *want[3] = {tags->migration, tags->host, tags->disk};
    int seen[3] = {0, 0, 0};
    xmlNode *set = aws_xml_child(n, "tagSet");
    for (xmlNode *it = set ? set->children : NULL; it; it = it->next) {
        if (!is_element(it, "item"))
            continue;
        char key[128], value[EBS_TAG_VALUE_MAX + 1];
        aws_xml_copy(it, "key", key, sizeof(key));
        aws_xml_copy(it, "value", value, sizeof(value));
        for (int i = 0; i < 3; i++)
            if (strcmp(key, keys[i]) == 0 && strcmp(value, want[i]) == 0)
                seen[i] = 1;
    }
    return seen[0] && seen[1] && seen[2];
}

/*
 * The tasks of a Describe reply (only those with tags' values when tags is not NULL): new
 * array, *n set; *next_token (may be NULL) gets the reply's nextToken (new, or NULL).
 */
static struct vmimport_task *describe_items(const char *xml, enum vmimport_kind kind,
                                            const struct ebs_tags *tags, size_t *n,
                                            char **next_token)
{
    *n = 0;
    if (next_token)
        *next_token = NULL;
    xmlDoc *doc = aws_xml_parse(xml);
    if (!doc)
        return NULL;
    struct vmimport_task *v = NULL;
    xmlNode *root = xmlDocGetRootElement(doc);
    xmlNode *set = aws_xml_child(root, kinds[kind].task_set);
    for (xmlNode *it = set ? set->children : NULL; it; it = it->next) {
        if (!is_element(it, "item") || (tags && !has_tags(it, tags)))
            continue;
        v = xrealloc(v, sizeof(*v) * (*n + 1));
        fill_task(it, kind, &v[(*n)++]);
    }
    if (next_token) {
        char tok[1024];
        aws_xml_copy(root, "nextToken", tok, sizeof(tok));
        if (tok[0])
            *next_token = xstrdup(tok);
    }
    xmlFreeDoc(doc);
    return v;
}

/* ---------------------------------------------------------------- time */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---------------------------------------------------------------- find and start */

int vmimport_find(struct aws *a, enum vmimport_kind kind, const struct ebs_tags *tags,
                  struct vmimport_task *out, int *found, struct err *err)
{
    *found = 0;
    if (!valid_kind(kind))
        return err_set(err, ERR_PERMANENT, "vmimport: unknown task kind %d", (int)kind);
    if (check_tags(tags, err) < 0)
        return -1;
    char *next = NULL;
    int best = 0; /* 0: none, 1: an active one, 2: a completed one */
    for (int page = 0; page < VMIMPORT_PAGES_MAX && best < 2; page++) {
        /* clang-format off */
        const char *params[] = {
            "Filters.1.Name",    "task-state",
            "Filters.1.Value.1", "active",
            "Filters.1.Value.2", "completed",
            next ? "NextToken" : NULL, next,
            NULL};
        /* clang-format on */
        char *xml = NULL;
        if (aws_ec2(a, kinds[kind].describe_action, params, &xml, err) < 0) {
            free(next);
            return err_prefix(err, "vmimport: find the %s import of disk '%s' of host '%s'",
                              kinds[kind].name, tags->disk, tags->host);
        }
        free(next);
        size_t n;
        struct vmimport_task *v = describe_items(xml, kind, tags, &n, &next);
        free(xml);
        for (size_t i = 0; i < n && best < 2; i++) {
            if (!valid_id(v[i].id, kinds[kind].id_prefix))
                continue;
            if (vmimport_task_done(&v[i])) {
                *out = v[i];
                best = 2;
            } else if (best == 0 && task_active(&v[i])) {
                *out = v[i];
                best = 1;
            }
        }
        free(v);
        if (!next)
            break;
    }
    free(next);
    *found = best > 0;
    return 0;
}

/* Append name=value to a NULL-terminated parameter list of capacity cap. */
static void put(const char **p, size_t *n, size_t cap, const char *name, const char *value)
{
    XM_ASSERT(*n + 3 <= cap);
    p[(*n)++] = name;
    p[(*n)++] = value;
    p[*n] = NULL;
}

/* err holds aws_ec2()'s failure of an Import call: the clear role error when AWS said the
 * service role is missing or short of permissions, else the error with what was done. */
static int start_failed(struct aws *a, enum vmimport_kind kind, const struct vmimport_spec *s,
                        struct err *err)
{
    if (strcmp(aws_last_code(a), "InvalidParameter") == 0 && strstr(err->msg, "service role")) {
        char said[ERR_MSG_MAX];
        xstrlcpy(said, err->msg, sizeof(said));
        return err_set(err, ERR_PERMANENT,
                       "vmimport: the %s service role is missing or lacks permissions: see %s "
                       "(%s)",
                       s->role_name ? s->role_name : "vmimport", VMIMPORT_ROLE_DOC, said);
    }
    return err_prefix(err, "vmimport: start the %s import of 's3://%s/%.200s'", kinds[kind].name,
                      s->bucket, s->key);
}

static int start(struct aws *a, enum vmimport_kind kind, const struct vmimport_spec *s,
                 struct vmimport_task *out, struct err *err)
{
    struct err local = {0};
    if (!err)
        err = &local;
    if (check_spec(kind, s, err) < 0)
        return -1;
    char token[VMIMPORT_TOKEN_SIZE];
    if (s->client_token)
        xstrlcpy(token, s->client_token, sizeof(token));
    else
        vmimport_client_token(kind, &s->tags, token);
    /* The Name tag and the default description: "xmigrate <host> <disk>", cut to fit. */
    char name[VMIMPORT_DESCRIPTION_MAX + 1];
    snprintf(name, sizeof(name), "xmigrate %s %s", s->tags.host, s->tags.disk);
    const char *desc = s->description ? s->description : name;

    int found;
    if (vmimport_find(a, kind, &s->tags, out, &found, err) < 0)
        return -1;
    if (found)
        return 0;

    const char *fmt = format_param(s->format);
    const char *p[64 + 6 * VMIMPORT_DATA_MAX];
    char names[VMIMPORT_DATA_MAX][3][48]; /* the data disks' parameter names */
    size_t n = 0;
    p[0] = NULL;
    const size_t cap = XM_ARRAY_LEN(p);
    if (kind == VMIMPORT_IMAGE) {
        put(p, &n, cap, "DiskContainer.1.Format", fmt);
        put(p, &n, cap, "DiskContainer.1.UserBucket.S3Bucket", s->bucket);
        put(p, &n, cap, "DiskContainer.1.UserBucket.S3Key", s->key);
        put(p, &n, cap, "DiskContainer.1.Description", desc);
        for (size_t i = 0; i < s->n_data_keys; i++) {
            snprintf(names[i][0], sizeof(names[i][0]), "DiskContainer.%zu.Format", i + 2);
            snprintf(names[i][1], sizeof(names[i][1]), "DiskContainer.%zu.UserBucket.S3Bucket",
                     i + 2);
            snprintf(names[i][2], sizeof(names[i][2]), "DiskContainer.%zu.UserBucket.S3Key", i + 2);
            put(p, &n, cap, names[i][0], fmt);
            put(p, &n, cap, names[i][1], s->bucket);
            put(p, &n, cap, names[i][2], s->data_keys[i]);
        }
        put(p, &n, cap, "Platform", "Linux");
        if (s->boot_mode)
            put(p, &n, cap, "BootMode", s->boot_mode);
        if (s->arch)
            put(p, &n, cap, "Architecture", s->arch);
    } else {
        put(p, &n, cap, "DiskContainer.Format", fmt);
        put(p, &n, cap, "DiskContainer.UserBucket.S3Bucket", s->bucket);
        put(p, &n, cap, "DiskContainer.UserBucket.S3Key", s->key);
        put(p, &n, cap, "DiskContainer.Description", desc);
    }
    put(p, &n, cap, "Description", desc);
    put(p, &n, cap, "ClientToken", token);
    if (s->role_name)
        put(p, &n, cap, "RoleName", s->role_name);
    put(p, &n, cap, "TagSpecification.1.ResourceType", kinds[kind].resource_type);
    put(p, &n, cap, "TagSpecification.1.Tag.1.Key", EBS_TAG_MIGRATION);
    put(p, &n, cap, "TagSpecification.1.Tag.1.Value", s->tags.migration);
    put(p, &n, cap, "TagSpecification.1.Tag.2.Key", EBS_TAG_HOST);
    put(p, &n, cap, "TagSpecification.1.Tag.2.Value", s->tags.host);
    put(p, &n, cap, "TagSpecification.1.Tag.3.Key", EBS_TAG_DISK);
    put(p, &n, cap, "TagSpecification.1.Tag.3.Value", s->tags.disk);
    put(p, &n, cap, "TagSpecification.1.Tag.4.Key", EBS_TAG_NAME);
    put(p, &n, cap, "TagSpecification.1.Tag.4.Value", name);

    char *xml = NULL;
    if (aws_ec2(a, kinds[kind].import_action, p, &xml, err) < 0)
        return start_failed(a, kind, s, err);
    xmlDoc *doc = aws_xml_parse(xml);
    free(xml);
    if (doc)
        fill_task(xmlDocGetRootElement(doc), kind, out);
    xmlFreeDoc(doc);
    if (!doc || !valid_id(out->id, kinds[kind].id_prefix))
        return err_set(err, ERR_PERMANENT,
                       "vmimport: %s of 's3://%s/%.200s' answered without a "
                       "task id",
                       kinds[kind].import_action, s->bucket, s->key);
    return 0;
}

int vmimport_start_image(struct aws *a, const struct vmimport_spec *spec, struct vmimport_task *out,
                         struct err *err)
{
    return start(a, VMIMPORT_IMAGE, spec, out, err);
}

int vmimport_start_snapshot(struct aws *a, const struct vmimport_spec *spec,
                            struct vmimport_task *out, struct err *err)
{
    return start(a, VMIMPORT_SNAPSHOT, spec, out, err);
}

/* ---------------------------------------------------------------- describe and wait */

int vmimport_describe(struct aws *a, enum vmimport_kind kind, const char *task_id,
                      struct vmimport_task *out, int *found, struct err *err)
{
    *found = 0;
    if (check_task_id(kind, task_id, err) < 0)
        return -1;
    const char *params[] = {"ImportTaskId.1", task_id, NULL};
    char *xml = NULL;
    if (aws_ec2(a, kinds[kind].describe_action, params, &xml, err) < 0) {
        /* An id AWS does not know (yet: EC2 is eventually consistent), whichever of the
         * two codes it picks; the id itself was checked above. */
        if (strncmp(aws_last_code(a), "InvalidConversionTaskId", 23) == 0) {
            err_clear(err);
            return 0;
        }
        return err_prefix(err, "vmimport: describe %s import task '%s'", kinds[kind].name, task_id);
    }
    size_t n;
    struct vmimport_task *v = describe_items(xml, kind, NULL, &n, NULL);
    free(xml);
    for (size_t i = 0; i < n && !*found; i++) {
        if (strcmp(v[i].id, task_id) == 0) {
            *out = v[i];
            *found = 1;
        }
    }
    free(v);
    return 0;
}

int vmimport_wait(struct aws *a, enum vmimport_kind kind, const char *task_id,
                  const struct vmimport_wait_opts *opts, struct vmimport_task *out, struct err *err)
{
    static const struct vmimport_wait_opts none = {0};
    if (!opts)
        opts = &none;
    if (check_task_id(kind, task_id, err) < 0)
        return -1;
    const char *what = kinds[kind].name;
    int timeout_s = opts->timeout_s > 0 ? opts->timeout_s : 0;
    long long deadline = now_ms() + (long long)timeout_s * 1000;
    long long delay = opts->poll_ms > 0 ? opts->poll_ms : 5000;
    long long max_delay = opts->poll_max_ms > 0 ? opts->poll_max_ms : 30000;
    if (max_delay < delay)
        max_delay = delay;
    struct vmimport_task last;
    memset(&last, 0, sizeof(last));
    int seen = 0;
    for (;;) {
        struct vmimport_task t;
        int found;
        if (vmimport_describe(a, kind, task_id, &t, &found, err) < 0)
            return -1;
        if (found) {
            if (vmimport_task_failed(&t))
                return err_set(err, ERR_PERMANENT, "vmimport: %s import task '%s' failed (%s): %s",
                               what, task_id, t.status,
                               t.message[0] ? t.message : "no reason given");
            if (strcmp(t.status, "completed") == 0) {
                if (!vmimport_task_done(&t))
                    return err_set(err, ERR_PERMANENT,
                                   "vmimport: %s import task '%s' completed without %s id", what,
                                   task_id, kinds[kind].a_name);
                if (opts->progress)
                    opts->progress(opts->arg, 100, "completed");
                *out = t;
                return 0;
            }
            if (opts->progress &&
                (!seen || t.progress != last.progress || strcmp(t.message, last.message) != 0))
                opts->progress(opts->arg, t.progress, t.message);
            last = t;
            seen = 1;
        }
        long long left = deadline - now_ms();
        if (left <= 0) {
            if (!seen)
                return err_set(err, ERR_TRANSIENT,
                               "vmimport: timed out after %d s waiting for %s import task '%s' "
                               "(not visible yet)",
                               timeout_s, what, task_id);
            return err_set(err, ERR_TRANSIENT,
                           "vmimport: timed out after %d s waiting for %s import task '%s' "
                           "(status '%s', step '%s', %d%%)",
                           timeout_s, what, task_id, last.status, last.message,
                           last.progress < 0 ? 0 : last.progress);
        }
        pause_ms(delay < left ? delay : left);
        delay = delay * 2 > max_delay ? max_delay : delay * 2;
    }
}

int vmimport_cancel(struct aws *a, enum vmimport_kind kind, const char *task_id, const char *reason,
                    struct err *err)
{
    struct vmimport_task t;
    int found;
    if (vmimport_describe(a, kind, task_id, &t, &found, err) < 0)
        return -1;
    if (!found || !task_active(&t))
        return 0;
    const char *params[] = {"ImportTaskId", task_id, "CancelReason",
                            reason ? reason : "xmigrate rollback", NULL};
    char *xml = NULL;
    if (aws_ec2(a, "CancelImportTask", params, &xml, err) < 0) {
        /* It ended (or vanished) between the look and the cancel. */
        const char *code = aws_last_code(a);
        if (strcmp(code, "IncorrectState") == 0 ||
            strncmp(code, "InvalidConversionTaskId", 23) == 0) {
            err_clear(err);
            return 0;
        }
        return err_prefix(err, "vmimport: cancel %s import task '%s'", kinds[kind].name, task_id);
    }
    free(xml);
    return 0;
}
