/*
 * vmimport: the alternative AWS import path (DESIGN.md section 4, step 2 "Option"), for
 * images the cloud should adapt: a disk image already in S3 (raw, stream-optimized VMDK,
 * VHD or VHDX) becomes an AMI through VM Import/Export's ImportImage, or an EBS snapshot
 * through ImportSnapshot. Both start an asynchronous task that AWS runs for minutes to
 * hours; DescribeImportImageTasks / DescribeImportSnapshotTasks show how far it got.
 *
 * The task. Status "active" with a StatusMessage naming the step (pending, validating,
 * validated, converting, updating, booting, preparing ami for an image; pending, ...,
 * downloading/converting for a snapshot) and a Progress percent; then "completed" (the
 * image id, and the snapshot id of each disk, are set). A task that fails goes to
 * "deleting" then "deleted" with a StatusMessage saying why ("ClientError: Disk validation
 * failed [...]"); a cancelled one does the same. A snapshot task may also say "error".
 * AWS lists tasks for 7 days after they end.
 *
 * The vmimport role. VM Import reads the object and writes the snapshot as the IAM
 * service role "vmimport" (or the one named in spec.role_name), which the account owner
 * creates once. We do not look it up through IAM: that would need iam:GetRole, which
 * nothing else here needs, and a role that exists can still lack the permissions or the
 * trust policy, which only the import itself finds out. The import call is the check:
 * when AWS answers ImportImage / ImportSnapshot with InvalidParameter "The service role
 * ... does not exist or does not have sufficient permissions", vmimport_start_image() /
 * _snapshot() fail with the permanent error "the vmimport service role is missing or
 * lacks permissions: see VMIMPORT_ROLE_DOC (...AWS's reply...)".
 *
 * Idempotency. Every task is tagged (TagSpecification, resource type import-image-task or
 * import-snapshot-task) with EBS_TAG_MIGRATION, EBS_TAG_HOST, EBS_TAG_DISK and a Name. A
 * start first asks vmimport_find(): a task of this disk that is active or completed is
 * the answer and nothing new starts. Otherwise it sends a client token derived from the
 * kind and the three tag values (vmimport_client_token()), so that AWS answers a repeated
 * call with the task the first call started, even one that tags cannot find (yet). AWS
 * documents only the task-state filter for these Describe calls, so the tags are matched
 * here, on every page of the listing. A failed task is not found, but its token still
 * names it: re-running the same start answers that failed task (and vmimport_wait() its
 * error again); a new attempt after fixing the cause needs a new token (spec.client_token).
 *
 * Errors: aws_ec2()'s (transient for throttling, 5xx and the network; permanent for what
 * AWS refuses, "AWS rejected the credentials (AuthFailure)" for bad keys), prefixed with
 * what was being done and the subject. A failed task is a permanent error carrying AWS's
 * status and message; a wait that runs out of time is transient and names the last status
 * seen. Bad arguments are permanent and nothing is sent. No message carries a credential.
 *
 * Ownership: every pointer argument is borrowed for the call; results go to caller
 * storage (struct vmimport_task: plain data). Every function that takes a struct aws
 * blocks on the network; none logs.
 */
#ifndef XM_VMIMPORT_H
#define XM_VMIMPORT_H

#include "aws/aws.h"
#include "aws/ebs.h"
#include "err.h"

#define VMIMPORT_ID_MAX 64       /* a task, image or snapshot id and its NUL */
#define VMIMPORT_TOKEN_SIZE 65   /* a client token (64 hex digits) and its NUL */
#define VMIMPORT_STATUS_MAX 32   /* a Status and its NUL */
#define VMIMPORT_MESSAGE_MAX 256 /* a StatusMessage, cut to fit */
#define VMIMPORT_DESCRIPTION_MAX 255
#define VMIMPORT_PAGES_MAX 100 /* Describe pages read by one vmimport_find() */
#define VMIMPORT_ROLE_DOC                                                                          \
    "https://docs.aws.amazon.com/vm-import/latest/userguide/required-permissions.html"

enum vmimport_kind {
    VMIMPORT_IMAGE,    /* ImportImage: an AMI; AWS adapts the OS (drivers, boot loader) */
    VMIMPORT_SNAPSHOT, /* ImportSnapshot: an EBS snapshot of the disk as it is */
};

/* "image" or "snapshot". */
const char *vmimport_kind_str(enum vmimport_kind kind);

/* What to import. Borrowed strings. */
struct vmimport_spec {
    const char *bucket;       /* the S3 bucket, in the client's region */
    const char *key;          /* the object: 1..1024 bytes, no control characters */
    const char *format;       /* "raw", "vmdk" (stream-optimized), "vhd" or "vhdx" */
    const char *description;  /* NULL: "xmigrate <host> <disk>"; at most 255 bytes */
    const char *boot_mode;    /* image only: "legacy-bios", "uefi", or NULL: AWS detects */
    const char *arch;         /* image only: "x86_64", "arm64", or NULL: AWS detects */
    const char *role_name;    /* NULL: the default "vmimport" (not sent) */
    const char *client_token; /* NULL: vmimport_client_token(kind, &tags) */
    struct ebs_tags tags;     /* migration, host, disk: each 1..256 bytes */
    /* image only: more disks of the same machine, in the same bucket and format, sent as
     * DiskContainer.2.. after the boot disk (key); at most VMIMPORT_DATA_MAX */
    const char *const *data_keys;
    size_t n_data_keys;
};
#define VMIMPORT_DATA_MAX 16

/* A task as the last Describe (or Import) reply showed it; "" for what it lacked. */
struct vmimport_task {
    enum vmimport_kind kind;
    char id[VMIMPORT_ID_MAX];           /* import-ami-... or import-snap-... */
    char status[VMIMPORT_STATUS_MAX];   /* active, completed, deleting, deleted, error */
    char message[VMIMPORT_MESSAGE_MAX]; /* StatusMessage: the step, or why it failed */
    int progress;                       /* percent 0..100; -1 when AWS gave none */
    char image_id[VMIMPORT_ID_MAX];     /* image, once completed: ami-... */
    char snapshot_id[VMIMPORT_ID_MAX];  /* once completed: the (boot) disk's snap-... */
};

/* 1 when the task has failed or been cancelled: status deleting, deleted or error, or a
 * StatusMessage starting with "ClientError". */
int vmimport_task_failed(const struct vmimport_task *t);

/* 1 when the task completed with its result id (image_id for an image, snapshot_id for a
 * snapshot). */
int vmimport_task_done(const struct vmimport_task *t);

/* The client token of one disk of one migration for kind: 64 lowercase hex digits of
 * SHA-256 over the kind and the three tag values. */
void vmimport_client_token(enum vmimport_kind kind, const struct ebs_tags *tags,
                           char out[VMIMPORT_TOKEN_SIZE]);

/*
 * This disk's task of kind, by its tags, among the tasks AWS lists as active or completed
 * (DescribeImport*Tasks with the task-state filter, every page up to VMIMPORT_PAGES_MAX).
 * A completed one wins over an active one. 0 with *found set (and out filled when found);
 * -1 with err. Blocks.
 */
int vmimport_find(struct aws *a, enum vmimport_kind kind, const struct ebs_tags *tags,
                  struct vmimport_task *out, int *found, struct err *err);

/*
 * Start (or attach to) the import of s3://bucket/key as described above: vmimport_find(),
 * else ImportImage with one disk container, Platform Linux (no LicenseType: for Linux
 * AWS then keeps the source's licensing, BYOL), the boot mode and architecture when given,
 * tagged and with the client token. 0 with out
 * filled (as AWS answered: usually active/pending; it may already have failed when the
 * token names a failed task, which vmimport_wait() reports); -1 with err (the role error
 * above among them). Blocks.
 */
int vmimport_start_image(struct aws *a, const struct vmimport_spec *spec, struct vmimport_task *out,
                         struct err *err);

/* The same with ImportSnapshot (boot_mode and arch must be NULL). */
int vmimport_start_snapshot(struct aws *a, const struct vmimport_spec *spec,
                            struct vmimport_task *out, struct err *err);

/*
 * One DescribeImport*Tasks of task_id. 0 with *found set (out filled when found: AWS
 * answers a task it does not know, or not yet, with InvalidConversionTaskId, which is
 * "not found" here); -1 with err. Blocks.
 */
int vmimport_describe(struct aws *a, enum vmimport_kind kind, const char *task_id,
                      struct vmimport_task *out, int *found, struct err *err);

/* Told of each change of progress or step while waiting, in order, and once more with
 * (100, "completed") at the end. status is borrowed for the call. */
typedef void (*vmimport_progress_fn)(void *arg, int percent, const char *status);

struct vmimport_wait_opts {
    int timeout_s;                 /* give up after this long (transient error) */
    long poll_ms;                  /* first pause between polls; 0: 5000 */
    long poll_max_ms;              /* the pause doubles up to this; 0: 30000 */
    vmimport_progress_fn progress; /* may be NULL */
    void *arg;
};

/*
 * Poll task_id until it completes: 0 with out filled (image_id / snapshot_id set). A
 * failed task is a permanent error "... failed (<status>): <AWS's StatusMessage>"; a
 * completed one without its result id is permanent too. Still running (or not visible)
 * after timeout_s: a transient error naming the last status, step and percent. Blocks up
 * to timeout_s plus one call.
 */
int vmimport_wait(struct aws *a, enum vmimport_kind kind, const char *task_id,
                  const struct vmimport_wait_opts *opts, struct vmimport_task *out,
                  struct err *err);

/*
 * Cancel task_id (rollback) with CancelImportTask and reason (NULL: "xmigrate rollback").
 * A task that is not active any more (completed, failed, cancelled) or unknown is left as
 * it is: 0. An image that completed is not deregistered here. 0, or -1 with err. Blocks.
 */
int vmimport_cancel(struct aws *a, enum vmimport_kind kind, const char *task_id, const char *reason,
                    struct err *err);

#endif
