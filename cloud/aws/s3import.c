/*
 * s3import.c: ImportImage of a host's disk images in S3, then the AMI tagged for rollback
 * (see s3import.h).
 */
#include "aws/s3import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/ebs.h"
#include "aws/s3image.h"
#include "aws/vmimport.h"
#include "xmalloc.h"

#define BOOT_DISK_TAG "boot" /* the task's disk tag: one task per host */

int s3import_is_ref(const char *ref)
{
    return ref && strncmp(ref, S3IMPORT_SCHEME, strlen(S3IMPORT_SCHEME)) == 0;
}

/* "s3://bucket/key" into bucket (64 bytes) and *key (borrowed from ref). */
static int split(const char *ref, char bucket[64], const char **key, struct err *err)
{
    const char *b = s3import_is_ref(ref) ? ref + strlen(S3IMPORT_SCHEME) : NULL;
    const char *slash = b ? strchr(b, '/') : NULL;
    if (!slash || slash == b || slash - b >= 64 || !slash[1])
        return err_set(err, ERR_PERMANENT, "s3 import: '%.200s' is not s3://bucket/key",
                       ref ? ref : "");
    snprintf(bucket, 64, "%.*s", (int)(slash - b), b);
    *key = slash + 1;
    return 0;
}

/* CreateTags on the AMI and every snapshot behind it. */
static int tag_ami(struct aws *ec2, const char *ami, const struct s3import_spec *s, struct err *err)
{
    const char *q[] = {"ImageId.1", ami, NULL};
    char *xml = NULL;
    if (aws_ec2(ec2, "DescribeImages", q, &xml, err) < 0)
        return err_prefix(err, "s3 import: describe image '%s'", ami);
    size_t n = 0;
    char **snaps = aws_xml_all(xml, strlen(xml), "snapshotId", &n);
    free(xml);
    if (n > VMIMPORT_DATA_MAX + 1)
        n = VMIMPORT_DATA_MAX + 1;
    const char *p[2 * (VMIMPORT_DATA_MAX + 2) + 14];
    char names[VMIMPORT_DATA_MAX + 1][24];
    size_t k = 0;
    p[k++] = "ResourceId.1";
    p[k++] = ami;
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "ResourceId.%zu", i + 2);
        p[k++] = names[i];
        p[k++] = snaps[i];
    }
    const char *tags[] = {"Tag.1.Key", EBS_TAG_MIGRATION, "Tag.1.Value", s->migration,
                          "Tag.2.Key", EBS_TAG_HOST,      "Tag.2.Value", s->host,
                          "Tag.3.Key", EBS_TAG_NAME,      "Tag.3.Value", s->name};
    for (size_t i = 0; i < XM_ARRAY_LEN(tags); i++)
        p[k++] = tags[i];
    p[k] = NULL;
    int rc = aws_ec2(ec2, "CreateTags", p, &xml, err);
    aws_strv_free(snaps, n);
    if (rc < 0)
        return err_prefix(err, "s3 import: tag image '%s'", ami);
    free(xml);
    return 0;
}

int s3import_ami(struct aws *ec2, struct aws *imp, const struct s3import_spec *s,
                 char ami[VM_ID_MAX], struct err *err)
{
    ami[0] = '\0';
    char bucket[64], other[64];
    const char *key = NULL, *dkey = NULL;
    if (split(s->boot, bucket, &key, err) < 0)
        return -1;
    const char *format = s3image_format_of(key);
    if (!format)
        return err_set(err, ERR_PERMANENT,
                       "s3 import: '%.200s' is not a raw or vmdk image xmigrate wrote", s->boot);
    if (s->n_data > VMIMPORT_DATA_MAX)
        return err_set(err, ERR_PERMANENT, "s3 import: host '%s' has %zu data disks, at most %d",
                       s->host, s->n_data, VMIMPORT_DATA_MAX);
    const char *keys[VMIMPORT_DATA_MAX];
    for (size_t i = 0; i < s->n_data; i++) {
        if (split(s->data[i], other, &dkey, err) < 0)
            return -1;
        if (strcmp(other, bucket) != 0 || s3image_format_of(dkey) != format)
            return err_set(err, ERR_PERMANENT,
                           "s3 import: data disk '%.200s' is not a %s image in bucket '%s' like "
                           "the boot disk",
                           s->data[i], format, bucket);
        keys[i] = dkey;
    }
    struct vmimport_spec vs = {
        .bucket = bucket,
        .key = key,
        .format = format,
        .boot_mode = s->boot_mode,
        .arch = s->arch,
        .tags = {.migration = s->migration, .host = s->host, .disk = BOOT_DISK_TAG},
        .data_keys = keys,
        .n_data_keys = s->n_data};
    struct vmimport_task task;
    if (vmimport_start_image(imp, &vs, &task, err) < 0)
        return -1;
    if (!vmimport_task_done(&task)) {
        struct vmimport_wait_opts wo = {.timeout_s = s->timeout_s, .poll_ms = s->poll_ms};
        if (vmimport_wait(imp, VMIMPORT_IMAGE, task.id, &wo, &task, err) < 0)
            return err_prefix(err, "host '%s'", s->host);
    }
    if (tag_ami(ec2, task.image_id, s, err) < 0)
        return -1;
    xstrlcpy(ami, task.image_id, VM_ID_MAX);
    return 0;
}
