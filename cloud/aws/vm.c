#include "aws/vm.h"

#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/ebs.h"
#include "xmalloc.h"

/* ---------------------------------------------------------------- checks */

/* prefix followed by letters and digits, shorter than VM_ID_MAX: safe in any request. */
static int valid_id(const char *id, const char *prefix)
{
    size_t p = strlen(prefix);
    if (!id || strncmp(id, prefix, p) != 0)
        return 0;
    size_t n = strlen(id);
    if (n <= p || n >= VM_ID_MAX)
        return 0;
    for (const char *c = id + p; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            return 0;
    return 1;
}

static int check_id(const char *id, const char *prefix, const char *what, struct err *err)
{
    if (valid_id(id, prefix))
        return 0;
    return err_set(err, ERR_PERMANENT, "vm: '%.*s' is not %s id", VM_ID_MAX, id ? id : "", what);
}

static int check_tag(const char *v, const char *what, struct err *err)
{
    if (!v || !v[0] || strlen(v) > EBS_TAG_VALUE_MAX)
        return err_set(err, ERR_PERMANENT, "vm: the %s tag must be 1 to %d bytes", what,
                       EBS_TAG_VALUE_MAX);
    return 0;
}

static int check_tags(const struct vm_tags *t, struct err *err)
{
    if (check_tag(t->migration, "migration", err) < 0 || check_tag(t->host, "host", err) < 0 ||
        check_tag(t->name, "name", err) < 0)
        return -1;
    return 0;
}

/* AWS: 3..128 characters of letters, digits, ( ) [ ] space . / - ' @ _ */
static int valid_ami_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > 128)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("()[] ./-'@_", *s)))
            return 0;
    return 1;
}

/* /dev/ and 1..26 lowercase letters or digits ("/dev/xvda", "/dev/sda1"). */
static int valid_device(const char *s)
{
    if (strncmp(s, "/dev/", 5) != 0)
        return 0;
    size_t n = strlen(s + 5);
    if (n < 1 || n > 26)
        return 0;
    for (s += 5; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

/* The instance type as AWS spells it: "t3.micro", "m7i-flex.large". */
static int valid_instance_type(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 3 || n > 31 || !strchr(s, '.'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '-'))
            return 0;
    return 1;
}

static int one_of(const char *s, const char *a, const char *b)
{
    return s && (strcmp(s, a) == 0 || strcmp(s, b) == 0);
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

/* ---------------------------------------------------------------- EC2 XML */

static void fill_instance(xmlNode *it, struct vm_instance *v)
{
    memset(v, 0, sizeof(*v));
    aws_xml_copy(it, "instanceId", v->id, sizeof(v->id));
    aws_xml_copy(aws_xml_child(it, "instanceState"), "name", v->state, sizeof(v->state));
    aws_xml_copy(it, "instanceType", v->instance_type, sizeof(v->instance_type));
    aws_xml_copy(it, "imageId", v->image_id, sizeof(v->image_id));
    aws_xml_copy(it, "subnetId", v->subnet_id, sizeof(v->subnet_id));
    aws_xml_copy(it, "privateIpAddress", v->private_ip, sizeof(v->private_ip));
    aws_xml_copy(it, "ipAddress", v->public_ip, sizeof(v->public_ip));
    aws_xml_copy(aws_xml_child(it, "stateReason"), "message", v->reason, sizeof(v->reason));
}

static void reservation_instances(xmlNode *reservation, struct vm_instance **v, size_t *n)
{
    xmlNode *set = aws_xml_child(reservation, "instancesSet");
    for (xmlNode *it = set ? set->children : NULL; it; it = it->next) {
        if (it->type != XML_ELEMENT_NODE || strcmp((const char *)it->name, "item") != 0)
            continue;
        *v = xrealloc(*v, sizeof(**v) * (*n + 1));
        fill_instance(it, &(*v)[(*n)++]);
    }
}

/* Every instance of a DescribeInstances (reservationSet/item/instancesSet/item) or
 * RunInstances (the root is the one reservation) reply: new array, *n set. */
static struct vm_instance *instance_items(const char *xml, size_t *n)
{
    *n = 0;
    xmlDoc *doc = aws_xml_parse(xml);
    if (!doc)
        return NULL;
    struct vm_instance *v = NULL;
    xmlNode *root = xmlDocGetRootElement(doc);
    xmlNode *set = aws_xml_child(root, "reservationSet");
    if (!set)
        reservation_instances(root, &v, n);
    for (xmlNode *r = set ? set->children : NULL; r; r = r->next)
        if (r->type == XML_ELEMENT_NODE && strcmp((const char *)r->name, "item") == 0)
            reservation_instances(r, &v, n);
    xmlFreeDoc(doc);
    return v;
}

struct image_item {
    char id[VM_ID_MAX];
    char state[32];
    char reason[VM_REASON_MAX];
};

static struct image_item *image_items(const char *xml, size_t *n)
{
    *n = 0;
    xmlDoc *doc = aws_xml_parse(xml);
    if (!doc)
        return NULL;
    struct image_item *v = NULL;
    xmlNode *set = aws_xml_child(xmlDocGetRootElement(doc), "imagesSet");
    for (xmlNode *it = set ? set->children : NULL; it; it = it->next) {
        if (it->type != XML_ELEMENT_NODE || strcmp((const char *)it->name, "item") != 0)
            continue;
        v = xrealloc(v, sizeof(*v) * (*n + 1));
        struct image_item *m = &v[(*n)++];
        aws_xml_copy(it, "imageId", m->id, sizeof(m->id));
        aws_xml_copy(it, "imageState", m->state, sizeof(m->state));
        aws_xml_copy(aws_xml_child(it, "stateReason"), "message", m->reason, sizeof(m->reason));
    }
    xmlFreeDoc(doc);
    return v;
}

/* ---------------------------------------------------------------- images */

void vm_client_token(const char *migration, const char *host, char out[VM_TOKEN_SIZE])
{
    /* Each value with its NUL, so ("a", "bc") and ("ab", "c") differ. */
    static const char purpose[] = "xmigrate ec2 instance";
    static const char hex[] = "0123456789abcdef";
    const char *parts[2] = {migration ? migration : "", host ? host : ""};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    XM_ASSERT(ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    XM_ASSERT(EVP_DigestUpdate(ctx, purpose, sizeof(purpose)) == 1);
    for (int i = 0; i < 2; i++)
        XM_ASSERT(EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1) == 1);
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

static int image_state_bad(const char *state)
{
    return strcmp(state, "failed") == 0 || strcmp(state, "invalid") == 0 ||
           strcmp(state, "error") == 0 || strcmp(state, "deregistered") == 0;
}

/* The image named name owned by this account: 0 with *found (and item) set; -1 with err. */
static int find_image(struct aws *a, const char *name, struct image_item *item, int *found,
                      struct err *err)
{
    *found = 0;
    /* clang-format off */
    const char *params[] = {
        "Owner.1",          "self",
        "Filter.1.Name",    "name",
        "Filter.1.Value.1", name,
        NULL};
    /* clang-format on */
    char *xml = NULL;
    if (aws_ec2(a, "DescribeImages", params, &xml, err) < 0)
        return err_prefix(err, "vm: find image '%s'", name);
    size_t n;
    struct image_item *items = image_items(xml, &n);
    free(xml);
    for (size_t i = 0; i < n && !*found; i++) {
        if (valid_id(items[i].id, "ami-")) {
            *item = items[i];
            *found = 1;
        }
    }
    free(items);
    return 0;
}

static int tag_image(struct aws *a, const char *image_id, const struct vm_tags *t, struct err *err)
{
    /* clang-format off */
    const char *params[] = {
        "ResourceId.1", image_id,
        "Tag.1.Key",    EBS_TAG_MIGRATION,
        "Tag.1.Value",  t->migration,
        "Tag.2.Key",    EBS_TAG_HOST,
        "Tag.2.Value",  t->host,
        "Tag.3.Key",    EBS_TAG_NAME,
        "Tag.3.Value",  t->name,
        NULL};
    /* clang-format on */
    char *xml = NULL;
    if (aws_ec2(a, "CreateTags", params, &xml, err) < 0)
        return err_prefix(err, "vm: tag image '%s'", image_id);
    free(xml);
    return 0;
}

int vm_register_image(struct aws *a, const struct vm_image_spec *spec, char image_id[VM_ID_MAX],
                      struct err *err)
{
    image_id[0] = '\0';
    const char *root = spec->root_device ? spec->root_device : "/dev/xvda";
    if (check_id(spec->snapshot_id, "snap-", "a snapshot", err) < 0 ||
        check_tags(&spec->tags, err) < 0)
        return -1;
    if (!valid_ami_name(spec->name))
        return err_set(err, ERR_PERMANENT, "vm: '%.*s' is not a valid image name", 128,
                       spec->name ? spec->name : "");
    if (!one_of(spec->arch, "x86_64", "arm64"))
        return err_set(err, ERR_PERMANENT, "vm: architecture '%.32s' is not x86_64 or arm64",
                       spec->arch ? spec->arch : "");
    if (!one_of(spec->boot_mode, "legacy-bios", "uefi"))
        return err_set(err, ERR_PERMANENT, "vm: boot mode '%.32s' is not legacy-bios or uefi",
                       spec->boot_mode ? spec->boot_mode : "");
    if (!valid_device(root))
        return err_set(err, ERR_PERMANENT, "vm: '%.32s' is not a root device name", root);

    struct image_item item;
    int found;
    if (find_image(a, spec->name, &item, &found, err) < 0)
        return -1;
    if (!found) {
        /* clang-format off */
        const char *params[] = {
            "Name",                                         spec->name,
            "Architecture",                                 spec->arch,
            "BootMode",                                     spec->boot_mode,
            "VirtualizationType",                           "hvm",
            "EnaSupport",                                   "true",
            "SriovNetSupport",                              "simple",
            "RootDeviceName",                               root,
            "BlockDeviceMapping.1.DeviceName",              root,
            "BlockDeviceMapping.1.Ebs.SnapshotId",          spec->snapshot_id,
            "BlockDeviceMapping.1.Ebs.VolumeType",          "gp3",
            "BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true",
            NULL};
        /* clang-format on */
        char *xml = NULL;
        if (aws_ec2(a, "RegisterImage", params, &xml, err) < 0) {
            /* Another run may have registered the name between our look-up and now. */
            struct err again = {0};
            if (find_image(a, spec->name, &item, &found, &again) < 0 || !found)
                return err_prefix(err, "vm: register image '%s' from snapshot '%s'", spec->name,
                                  spec->snapshot_id);
        } else {
            char *id = aws_xml_text(xml, strlen(xml), "imageId");
            free(xml);
            if (!valid_id(id, "ami-")) {
                free(id);
                return err_set(err, ERR_PERMANENT,
                               "vm: RegisterImage of '%s' answered without an image id",
                               spec->name);
            }
            memset(&item, 0, sizeof(item));
            xstrlcpy(item.id, id, sizeof(item.id));
            xstrlcpy(item.state, "pending", sizeof(item.state));
            free(id);
        }
    }
    if (image_state_bad(item.state))
        return err_set(err, ERR_PERMANENT, "vm: image '%s' (%s) is in state '%s'%s%s", spec->name,
                       item.id, item.state, item.reason[0] ? ": " : "", item.reason);
    /* Tags again on a found image: an earlier run may have stopped before tagging. */
    if (tag_image(a, item.id, &spec->tags, err) < 0)
        return -1;
    xstrlcpy(image_id, item.id, VM_ID_MAX);
    return 0;
}

int vm_wait_image(struct aws *a, const char *image_id, int timeout_s, struct err *err)
{
    if (check_id(image_id, "ami-", "an image", err) < 0)
        return -1;
    const char *params[] = {"Filter.1.Name", "image-id", "Filter.1.Value.1", image_id, NULL};
    long long deadline = now_ms() + (long long)(timeout_s > 0 ? timeout_s : 0) * 1000;
    long long delay = 250;
    char last[32] = "not visible";
    for (;;) {
        char *xml = NULL;
        if (aws_ec2(a, "DescribeImages", params, &xml, err) < 0)
            return err_prefix(err, "vm: wait for image '%s'", image_id);
        size_t n;
        struct image_item *items = image_items(xml, &n);
        free(xml);
        for (size_t i = 0; i < n; i++) {
            if (strcmp(items[i].id, image_id) != 0)
                continue;
            xstrlcpy(last, items[i].state, sizeof(last));
            if (image_state_bad(items[i].state)) {
                err_set(err, ERR_PERMANENT, "vm: image '%s' is in state '%s'%s%s", image_id,
                        items[i].state, items[i].reason[0] ? ": " : "", items[i].reason);
                free(items);
                return -1;
            }
        }
        free(items);
        if (strcmp(last, "available") == 0)
            return 0;
        long long left = deadline - now_ms();
        if (left <= 0)
            return err_set(err, ERR_TRANSIENT,
                           "vm: timed out after %d s waiting for image '%s' to be available "
                           "(state '%s')",
                           timeout_s, image_id, last);
        pause_ms(delay < left ? delay : left);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

/* ---------------------------------------------------------------- instances */

/* DescribeInstances of one instance id: 0 with *found and out set; -1 with err. */
static int describe_instance(struct aws *a, const char *instance_id, struct vm_instance *out,
                             int *found, struct err *err)
{
    *found = 0;
    const char *params[] = {"Filter.1.Name", "instance-id", "Filter.1.Value.1", instance_id, NULL};
    char *xml = NULL;
    if (aws_ec2(a, "DescribeInstances", params, &xml, err) < 0)
        return err_prefix(err, "vm: describe instance '%s'", instance_id);
    size_t n;
    struct vm_instance *v = instance_items(xml, &n);
    free(xml);
    for (size_t i = 0; i < n && !*found; i++) {
        if (strcmp(v[i].id, instance_id) == 0) {
            *out = v[i];
            *found = 1;
        }
    }
    free(v);
    return 0;
}

int vm_find(struct aws *a, const char *migration, const char *host, struct vm_instance *out,
            int *found, struct err *err)
{
    *found = 0;
    if (check_tag(migration, "migration", err) < 0 || check_tag(host, "host", err) < 0)
        return -1;
    /* clang-format off */
    const char *params[] = {
        "Filter.1.Name",    "tag:" EBS_TAG_MIGRATION,
        "Filter.1.Value.1", migration,
        "Filter.2.Name",    "tag:" EBS_TAG_HOST,
        "Filter.2.Value.1", host,
        "Filter.3.Name",    "instance-state-name",
        "Filter.3.Value.1", "pending",
        "Filter.3.Value.2", "running",
        "Filter.3.Value.3", "stopping",
        "Filter.3.Value.4", "stopped",
        NULL};
    /* clang-format on */
    char *xml = NULL;
    if (aws_ec2(a, "DescribeInstances", params, &xml, err) < 0)
        return err_prefix(err, "vm: find the instance of host '%s'", host);
    size_t n;
    struct vm_instance *v = instance_items(xml, &n);
    free(xml);
    /* Running first, then pending, then the rest: the most useful one if there are
     * several (there should not be). */
    static const char *const order[] = {"running", "pending", "stopping", "stopped"};
    for (size_t o = 0; o < XM_ARRAY_LEN(order) && !*found; o++) {
        for (size_t i = 0; i < n && !*found; i++) {
            if (valid_id(v[i].id, "i-") && strcmp(v[i].state, order[o]) == 0) {
                *out = v[i];
                *found = 1;
            }
        }
    }
    free(v);
    return 0;
}

int vm_run(struct aws *a, const struct vm_run_spec *spec, struct vm_instance *out, struct err *err)
{
    if (check_id(spec->image_id, "ami-", "an image", err) < 0 ||
        check_id(spec->subnet_id, "subnet-", "a subnet", err) < 0 ||
        check_id(spec->security_group_id, "sg-", "a security group", err) < 0 ||
        check_tags(&spec->tags, err) < 0)
        return -1;
    if (!valid_instance_type(spec->instance_type))
        return err_set(err, ERR_PERMANENT, "vm: '%.32s' is not an instance type",
                       spec->instance_type ? spec->instance_type : "");
    char token[VM_TOKEN_SIZE];
    if (spec->client_token) {
        size_t n = strlen(spec->client_token);
        if (n < 1 || n > 64)
            return err_set(err, ERR_PERMANENT, "vm: a client token is 1 to 64 characters");
        for (const char *c = spec->client_token; *c; c++)
            if (*c < 0x21 || *c > 0x7e)
                return err_set(err, ERR_PERMANENT, "vm: a client token is printable ASCII");
        xstrlcpy(token, spec->client_token, sizeof(token));
    } else {
        vm_client_token(spec->tags.migration, spec->tags.host, token);
    }

    int found;
    if (vm_find(a, spec->tags.migration, spec->tags.host, out, &found, err) < 0)
        return -1;
    if (found)
        return 0;

    const struct vm_tags *t = &spec->tags;
    /* clang-format off */
    const char *params[] = {
        "ImageId",                                     spec->image_id,
        "InstanceType",                                spec->instance_type,
        "MinCount",                                    "1",
        "MaxCount",                                    "1",
        "ClientToken",                                 token,
        "NetworkInterface.1.DeviceIndex",              "0",
        "NetworkInterface.1.SubnetId",                 spec->subnet_id,
        "NetworkInterface.1.SecurityGroupId.1",        spec->security_group_id,
        "NetworkInterface.1.AssociatePublicIpAddress", spec->public_ip ? "true" : "false",
        "NetworkInterface.1.DeleteOnTermination",      "true",
        "TagSpecification.1.ResourceType",             "instance",
        "TagSpecification.1.Tag.1.Key",                EBS_TAG_MIGRATION,
        "TagSpecification.1.Tag.1.Value",              t->migration,
        "TagSpecification.1.Tag.2.Key",                EBS_TAG_HOST,
        "TagSpecification.1.Tag.2.Value",              t->host,
        "TagSpecification.1.Tag.3.Key",                EBS_TAG_NAME,
        "TagSpecification.1.Tag.3.Value",              t->name,
        "TagSpecification.2.ResourceType",             "volume",
        "TagSpecification.2.Tag.1.Key",                EBS_TAG_MIGRATION,
        "TagSpecification.2.Tag.1.Value",              t->migration,
        "TagSpecification.2.Tag.2.Key",                EBS_TAG_HOST,
        "TagSpecification.2.Tag.2.Value",              t->host,
        "TagSpecification.2.Tag.3.Key",                EBS_TAG_NAME,
        "TagSpecification.2.Tag.3.Value",              t->name,
        NULL};
    /* clang-format on */
    char *xml = NULL;
    if (aws_ec2(a, "RunInstances", params, &xml, err) < 0)
        return err_prefix(err, "vm: run '%s' from image '%s' in subnet '%s'", t->host,
                          spec->image_id, spec->subnet_id);
    size_t n;
    struct vm_instance *v = instance_items(xml, &n);
    free(xml);
    int rc = 0;
    if (n == 1 && valid_id(v[0].id, "i-"))
        *out = v[0];
    else
        rc = err_set(err, ERR_PERMANENT, "vm: RunInstances for '%s' answered with %zu instances",
                     t->host, n);
    free(v);
    return rc;
}

int vm_wait_running(struct aws *a, const char *instance_id, int timeout_s, struct vm_instance *out,
                    struct err *err)
{
    if (check_id(instance_id, "i-", "an instance", err) < 0)
        return -1;
    long long deadline = now_ms() + (long long)(timeout_s > 0 ? timeout_s : 0) * 1000;
    long long delay = 250;
    char last[32] = "not visible";
    for (;;) {
        struct vm_instance v;
        int found;
        if (describe_instance(a, instance_id, &v, &found, err) < 0)
            return err_prefix(err, "vm: wait for instance '%s'", instance_id);
        if (found) {
            xstrlcpy(last, v.state, sizeof(last));
            if (strcmp(v.state, "running") == 0) {
                *out = v;
                return 0;
            }
            /* Only pending leads to running; anything else needs someone to act. */
            if (strcmp(v.state, "pending") != 0)
                return err_set(err, ERR_PERMANENT,
                               "vm: instance '%s' is %s while waiting for it to run%s%s",
                               instance_id, v.state, v.reason[0] ? ": " : "", v.reason);
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            return err_set(err, ERR_TRANSIENT,
                           "vm: timed out after %d s waiting for instance '%s' to be running "
                           "(state '%s')",
                           timeout_s, instance_id, last);
        pause_ms(delay < left ? delay : left);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

int vm_terminate(struct aws *a, const char *instance_id, struct err *err)
{
    if (check_id(instance_id, "i-", "an instance", err) < 0)
        return -1;
    struct vm_instance v;
    int found;
    if (describe_instance(a, instance_id, &v, &found, err) < 0)
        return -1;
    if (!found || strcmp(v.state, "terminated") == 0)
        return 0;
    const char *params[] = {"InstanceId.1", instance_id, NULL};
    char *xml = NULL;
    if (aws_ec2(a, "TerminateInstances", params, &xml, err) < 0)
        return err_prefix(err, "vm: terminate instance '%s'", instance_id);
    free(xml);
    return 0;
}

/* ---------------------------------------------------------------- rollback */

/* Every id named `field` in the reply of action (with params) that starts with prefix:
 * new array, *n set. */
static char **ids_of(struct aws *a, const char *action, const char *const *params,
                     const char *field, const char *prefix, size_t *n, struct err *err)
{
    char *xml = NULL;
    *n = 0;
    if (aws_ec2(a, action, params, &xml, err) < 0)
        return NULL;
    size_t all = 0;
    char **v = aws_xml_all(xml, strlen(xml), field, &all);
    free(xml);
    char **out = xcalloc(all + 1, sizeof(*out));
    for (size_t i = 0; i < all; i++) {
        if (valid_id(v[i], prefix))
            out[(*n)++] = xstrdup(v[i]);
    }
    aws_strv_free(v, all);
    return out;
}

/* Every resource describe lists (its ids under field, starting with prefix) removed by
 * action with its id as param, counted in *count; kind ("image") names them in errors.
 * 0, or -1 with err naming which. */
static int delete_owned(struct aws *a, const char *migration, const char *const *owned,
                        const char *kind, const char *describe, const char *field,
                        const char *prefix, const char *action, const char *param, int *count,
                        struct err *err)
{
    size_t n = 0;
    char **ids = ids_of(a, describe, owned, field, prefix, &n, err);
    if (!ids)
        return err_prefix(err, "vm: list the %ss of migration '%s'", kind, migration);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *p[] = {param, ids[i], NULL};
        char *xml = NULL;
        rc = aws_ec2(a, action, p, &xml, err);
        free(xml);
        if (rc < 0)
            err_prefix(err, "vm: %s %s '%s'", action, kind, ids[i]);
        *count += rc == 0;
    }
    aws_strv_free(ids, n);
    return rc;
}

int vm_delete_migration(struct aws *a, const char *migration, int timeout_s,
                        struct vm_deleted *report, struct err *err)
{
    memset(report, 0, sizeof(*report));
    if (check_tag(migration, "migration", err) < 0)
        return -1;
    /* clang-format off */
    const char *live[] = {
        "Filter.1.Name",    "tag:" EBS_TAG_MIGRATION,
        "Filter.1.Value.1", migration,
        "Filter.2.Name",    "instance-state-name",
        "Filter.2.Value.1", "pending",
        "Filter.2.Value.2", "running",
        "Filter.2.Value.3", "stopping",
        "Filter.2.Value.4", "stopped",
        "Filter.2.Value.5", "shutting-down",
        NULL};
    const char *owned[] = {
        "Owner.1",          "self",
        "Filter.1.Name",    "tag:" EBS_TAG_MIGRATION,
        "Filter.1.Value.1", migration,
        NULL};
    /* clang-format on */
    size_t n = 0;
    char **ids = ids_of(a, "DescribeInstances", live, "instanceId", "i-", &n, err);
    if (!ids)
        return err_prefix(err, "vm: list the instances of migration '%s'", migration);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = vm_terminate(a, ids[i], err);
        report->instances += rc == 0;
    }
    aws_strv_free(ids, n);
    if (rc < 0)
        return -1;
    /* Wait until none is left: the network cannot go while an instance holds a subnet. */
    long long deadline = now_ms() + (long long)timeout_s * 1000, delay = 250;
    for (;;) {
        ids = ids_of(a, "DescribeInstances", live, "instanceId", "i-", &n, err);
        if (!ids)
            return err_prefix(err, "vm: wait for the instances of migration '%s'", migration);
        aws_strv_free(ids, n);
        if (n == 0)
            break;
        long long left = deadline - now_ms();
        if (left <= 0)
            return err_set(err, ERR_TRANSIENT,
                           "vm: %zu instance(s) of migration '%s' not terminated after %d s", n,
                           migration, timeout_s);
        pause_ms(delay < left ? delay : left);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
    if (delete_owned(a, migration, owned, "image", "DescribeImages", "imageId", "ami-",
                     "DeregisterImage", "ImageId", &report->images, err) < 0)
        return -1;
    return delete_owned(a, migration, owned, "snapshot", "DescribeSnapshots", "snapshotId", "snap-",
                        "DeleteSnapshot", "SnapshotId", &report->snapshots, err);
}
