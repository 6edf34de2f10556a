/*
 * s3import: the AMI of a host from its disk images in S3 (what s3image.h joins), through
 * VM Import's ImportImage (aws/vmimport.h): the boot disk first, the data disks after it,
 * one task per host. The migration option that leads here is "aws_import": "raw" or
 * "vmdk" (the default "ebs" registers the AMI from EBS snapshots instead, aws/vm.h).
 *
 * Two clients, because VM Import may live elsewhere than the rest of EC2 (tests: a fake
 * beside moto_server): `imp` sends ImportImage / DescribeImportImageTasks, `ec2` reads and
 * tags the AMI. The task is tagged with the migration, the host and disk "boot" and found
 * again on a re-run (vmimport_find, then the client token), so running this twice starts
 * one import. The AMI VM Import makes, and the snapshots behind it, are then tagged like
 * the EBS path's (EBS_TAG_MIGRATION, EBS_TAG_HOST, Name), so rollback
 * (vm_delete_migration) finds and removes them.
 *
 * Blocks for as long as the import takes (up to spec->timeout_s: a transient error after
 * it, and a re-run attaches to the same task). Nothing logs; pointers are borrowed.
 */
#ifndef XM_S3IMPORT_H
#define XM_S3IMPORT_H

#include <stddef.h>

#include "aws/aws.h"
#include "aws/vm.h"
#include "err.h"

#define S3IMPORT_SCHEME "s3://"

struct s3import_spec {
    const char *migration, *host;
    const char *boot;        /* "s3://bucket/key" of the boot disk's image */
    const char *const *data; /* the data disks' images, same bucket and format */
    size_t n_data;
    const char *arch;      /* "x86_64", "arm64", or NULL */
    const char *boot_mode; /* "legacy-bios", "uefi", or NULL */
    const char *name;      /* the Name tag */
    int timeout_s;         /* how long to wait for the task */
    long poll_ms;          /* first pause between looks (doubles up to 30 s) */
};

/* 1 when ref is an image in S3 ("s3://..."), which s3import_ami takes. */
int s3import_is_ref(const char *ref);

/*
 * Import (or find again) the host's image and tag the AMI and its snapshots: 0 with ami
 * set to an image that may still be "pending" (vm_wait_image next); -1 with err (a bad
 * reference, a format other than raw or vmdk, disks in different buckets or formats:
 * permanent; a failed task: permanent with AWS's reason; a wait that ran out: transient).
 */
int s3import_ami(struct aws *ec2, struct aws *imp, const struct s3import_spec *spec,
                 char ami[VM_ID_MAX], struct err *err);

#endif
