/*
 * vm: the last step of an AWS import (DESIGN.md section 4, step 3): an AMI registered
 * from the disk's completed EBS snapshot, then one EC2 instance from it in the
 * blueprint's subnet and security group, polled until it runs.
 *
 * The image. RegisterImage with VirtualizationType hvm, EnaSupport true, SriovNetSupport
 * simple, the architecture and boot mode discovery found ("x86_64" or "arm64";
 * "legacy-bios" or "uefi"), and one block device mapping: the root device (/dev/xvda
 * unless told) on the snapshot, gp3, deleted with the instance. It is tagged (keys from
 * aws/ebs.h: EBS_TAG_MIGRATION, EBS_TAG_HOST, Name) by CreateTags after registration.
 *
 * The instance. RunInstances of one instance with one network interface (device 0) in
 * the subnet with the security group, a public address exactly when asked (never left
 * to the subnet's default), tagged at launch (instance and volume) with
 * EBS_TAG_MIGRATION, EBS_TAG_HOST and Name.
 *
 * Idempotency: AMI names are unique per account and region, so vm_register_image() first
 * looks for an image of this name owned by this account and returns it. vm_run() first
 * looks for an instance with this migration's and host's tags that is pending, running,
 * stopping or stopped and returns it; only then does it launch, with a client token
 * (vm_client_token()) so that AWS answers a repeated RunInstances with the instance the
 * first call launched. A terminated instance is never found by tags, but its token still
 * names it for a while: a re-launch after a rollback needs a new token.
 *
 * Waiting: DescribeInstances / DescribeImages with an id filter (an id AWS does not show
 * yet is "not visible", not an error: those calls are eventually consistent), backoff
 * from 0.25 s doubling to 5 s. A deadline passed is a transient error saying what was
 * waited for; a state that will not change into the one waited for is permanent.
 *
 * Errors: aws_ec2()'s, prefixed with the action and the subject; bad arguments (an id
 * that is not one, an unknown architecture or boot mode, a bad AMI name) are permanent
 * and nothing is sent. No message carries a credential.
 *
 * Ownership: every pointer argument is borrowed for the call; results go to caller
 * storage. Every function that takes a struct aws blocks on the network; none logs.
 */
#ifndef XM_VM_H
#define XM_VM_H

#include "aws/aws.h"
#include "err.h"

#define VM_ID_MAX 64      /* an AWS resource id and its NUL */
#define VM_IP_MAX 46      /* an address as text and its NUL */
#define VM_TOKEN_SIZE 65  /* a client token (64 characters) and its NUL */
#define VM_REASON_MAX 256 /* a state reason, cut to fit */

/* What every image and instance of an import is tagged with. Borrowed strings, each 1..256
 * bytes. name is the Name tag (what the console shows). */
struct vm_tags {
    const char *migration;
    const char *host;
    const char *name;
};

struct vm_image_spec {
    const char *snapshot_id; /* completed snapshot of the root disk */
    const char *name;        /* AMI name: 3..128 of A-Z a-z 0-9 ( ) [ ] space . / - ' @ _ */
    const char *arch;        /* "x86_64" or "arm64" */
    const char *boot_mode;   /* "legacy-bios" or "uefi" */
    const char *root_device; /* NULL: "/dev/xvda" */
    struct vm_tags tags;
};

struct vm_run_spec {
    const char *image_id;
    const char *instance_type; /* "t3.micro", ... */
    const char *subnet_id;
    const char *security_group_id;
    int public_ip;            /* 1: AssociatePublicIpAddress, 0: none */
    const char *client_token; /* NULL: vm_client_token(tags.migration, tags.host) */
    struct vm_tags tags;
};

/* An instance as DescribeInstances shows it (caller storage; "" for what it lacks). */
struct vm_instance {
    char id[VM_ID_MAX];
    char state[32]; /* pending, running, stopping, stopped, shutting-down, terminated */
    char instance_type[32];
    char image_id[VM_ID_MAX];
    char subnet_id[VM_ID_MAX];
    char private_ip[VM_IP_MAX];
    char public_ip[VM_IP_MAX];
    char reason[VM_REASON_MAX]; /* stateReason message, when there is one */
};

/* The RunInstances client token of one host of one migration: 64 lowercase hex digits
 * of SHA-256 over both. */
void vm_client_token(const char *migration, const char *host, char out[VM_TOKEN_SIZE]);

/*
 * The AMI named spec->name owned by this account if there is one (it is not
 * re-registered; a "failed" or "invalid" one is a permanent error naming it), else
 * RegisterImage as described above; either way CreateTags. 0 with image_id set; -1 with
 * err. The image may still be "pending": vm_wait_image() before vm_run(). Blocks.
 */
int vm_register_image(struct aws *a, const struct vm_image_spec *spec, char image_id[VM_ID_MAX],
                      struct err *err);

/* Poll DescribeImages until the image is "available" (0). "failed", "invalid",
 * "deregistered": permanent error with the state reason. Timeout: transient. Blocks. */
int vm_wait_image(struct aws *a, const char *image_id, int timeout_s, struct err *err);

/*
 * The instance tagged with this migration and host (pending, running, stopping or
 * stopped). 0 with *found set and out filled when found; -1 with err. Blocks.
 */
int vm_find(struct aws *a, const char *migration, const char *host, struct vm_instance *out,
            int *found, struct err *err);

/*
 * vm_find(), else RunInstances as described above. 0 with out filled (as launched or
 * as found: the state may still be "pending"); -1 with err. Blocks.
 */
int vm_run(struct aws *a, const struct vm_run_spec *spec, struct vm_instance *out, struct err *err);

/*
 * Poll DescribeInstances until the instance is "running" (0, out filled: addresses,
 * subnet, type). shutting-down, terminated, stopping or stopped on the way: permanent
 * error with the state and AWS's state reason. Not running after timeout_s: transient
 * error naming the instance and the last state seen. Blocks up to timeout_s.
 */
int vm_wait_running(struct aws *a, const char *instance_id, int timeout_s, struct vm_instance *out,
                    struct err *err);

/* TerminateInstances (rollback). An instance that does not exist or is already
 * terminated is success. 0, or -1 with err. Does not wait. Blocks. */
int vm_terminate(struct aws *a, const char *instance_id, struct err *err);

/* What vm_delete_migration removed. */
struct vm_deleted {
    int instances, images, snapshots;
};

/*
 * Rollback of what the import made for a migration, found by its tag: every instance
 * terminated (waiting up to timeout_s until none is left: the network cannot be deleted
 * while one holds a subnet), then every image it owns deregistered and every snapshot
 * deleted. Safe to repeat: what is gone is not found again.
 */
int vm_delete_migration(struct aws *a, const char *migration, int timeout_s,
                        struct vm_deleted *report, struct err *err);

#endif
