/*
 * keys: every Redis key, stream, group and field name xmigrate uses.
 *
 * This header is the only place a key name is spelled; schemas/README.md mirrors it for
 * operators (keep the two in step). Everything lives under the "xm:" prefix so one
 * Redis can be inspected with `redis-cli --scan --pattern 'xm:*'`.
 */
#ifndef XM_KEYS_H
#define XM_KEYS_H

#define XM_PREFIX "xm:"

/* Streams. Jobs of one phase: xm:q:<phase>, read through the consumer group below. */
#define XM_QUEUE_FMT "xm:q:%s"
#define XM_GROUP "workers"
#define XM_EVENTS "xm:events" /* every state change and progress tick, MAXLEN ~ capped */
#define XM_DEAD "xm:dead"     /* jobs that failed for good */

/* Sorted set of jobs waiting for a retry, score = due time in ms: xm:delayed:<phase>. */
#define XM_DELAYED_FMT "xm:delayed:%s"

/* Completed job ids (string with TTL): a second completion of the same job is a no-op. */
#define XM_DONE_FMT "xm:done:%s"

/* Fan-in group: set of member job ids still running; the member that empties it
 * enqueues the next phase. xm:fanin:<group id>. */
#define XM_FANIN_FMT "xm:fanin:%s"
/* A group made by a job that was itself a member of a group: "<group> <member>", so
 * the job that empties the inner group continues the outer member. */
#define XM_FANIN_UP_FMT "xm:fanin:%s:up"

/* A waiting job's last job.waiting event (string, TTL 600 s): xm:waiting:<job id>. */
#define XM_WAIT_NOTE_FMT "xm:waiting:%s"

/* Live workers: xm:worker:<consumer>, JSON, expires unless refreshed by the heartbeat. */
#define XM_WORKER_FMT "xm:worker:%s"

/* State hashes. */
#define XM_MIG_FMT "xm:mig:%s"
#define XM_M_AWS_IMPORT "aws_import" /* migration field: ebs (default), raw or vmdk */
#define XM_MIG_HOSTS_FMT "xm:mig:%s:hosts"
#define XM_HOST_FMT "xm:host:%s:%s"
#define XM_DISK_FMT "xm:disk:%s:%s:%s"

/* Index of migrations: sorted set, score = creation time (ms), member = id. */
#define XM_MIGS "xm:migs"
/* Discovered facts of one host (JSON text, as posted by the discovery callback). */
#define XM_FACTS_FMT "xm:facts:%s:%s"
/* The host record discovery normalised from those facts (JSON, schemas/host.json). */
#define XM_HOST_RECORD_FMT "xm:host:%s:%s:record"
/* Disks of one host: set of disk ids (each has its xm:disk hash). */
#define XM_HOST_DISKS_FMT "xm:host:%s:%s:disks"
/* Hosts of a migration holding a clone slot (set; see workers/clone/clone.c). */
#define XM_MIG_CLONING_FMT "xm:mig:%s:cloning"
/* Cloud resources a migration created (set of "<kind>:<id>"), listed on cancel. */
#define XM_MIG_RESOURCES_FMT "xm:mig:%s:resources"
/* The last prep run of one host (hash: job, dry_run, finished, distribution, backup,
 * changed, findings, diffs; the last three JSON), written by xm-prep; a real run also
 * replaces the "prep-*" entries of the host's findings (XM_H_FINDINGS). */
#define XM_PREP_FMT "xm:prep:%s:%s"

/* Credentials: xm:cred:<id> hash (name, kind, fingerprint, created, sealed secret);
 * xm:creds sorted set by creation time; xm:cred:<id>:users set of migration ids. */
#define XM_CRED_FMT "xm:cred:%s"
#define XM_CREDS "xm:creds"
#define XM_CRED_USERS_FMT "xm:cred:%s:users"

/* API tokens: only their SHA-256 is kept. xm:token:<sha256 hex> hash (name, created);
 * xm:tokens set of the hashes. */
#define XM_TOKEN_FMT "xm:token:%s"
#define XM_TOKENS "xm:tokens"

/* The host field of a migration-level job (discovery fan-in, network): never a valid
 * host name, which must start with a letter or digit. */
#define XM_HOST_NONE "-"

/* Job envelope fields (flat, readable in XRANGE). */
#define XM_F_JOB "job" /* job id: stays the same across retries and takeovers */
#define XM_F_MIGRATION "migration"
#define XM_F_HOST "host"
#define XM_F_DISK "disk"
#define XM_F_PHASE "phase"
#define XM_F_ATTEMPT "attempt"   /* 1 on first delivery; +1 per retry */
#define XM_F_GROUP "group"       /* fan-in group id, empty when none */
#define XM_F_MEMBER "member"     /* id it counts as in its group, when not its own job id */
#define XM_F_ENQUEUED "enqueued" /* microseconds since the epoch when the job was added */
#define XM_F_PAYLOAD "payload"   /* JSON object, phase-specific */

/* Event fields (besides the envelope fields above). */
#define XM_F_TYPE "type"     /* see enum event_type in queue/event.h */
#define XM_F_TS "ts"         /* microseconds since the epoch */
#define XM_F_PICKED "picked" /* when the worker took the job (microseconds) */
#define XM_F_NEXT "next"     /* phase handed off to, if any */
#define XM_F_MSG "msg"
#define XM_F_WORKER "worker"
#define XM_F_ERROR "error"
#define XM_F_KIND "kind" /* transient or permanent */

/* Host and disk hash fields. */
#define XM_H_PHASE "phase"
#define XM_H_STATUS "status"
#define XM_H_ERROR "error"
#define XM_H_ATTEMPT "attempt"
#define XM_H_UPDATED "updated"
#define XM_H_FAILED_JOB "failed_job" /* the job that failed for good (JSON), for retry */
#define XM_H_WAITING "waiting"       /* why its queued job waits (a limit reached), else empty */
/* Written by discovery. */
#define XM_H_DISCOVERY "discovery"             /* discovered, unreachable or failed */
#define XM_H_DISCOVERY_ERROR "discovery_error" /* why not discovered (Ansible's message) */
#define XM_H_FINDINGS "findings"               /* JSON array of pre-flight findings */
#define XM_H_SUMMARY "summary" /* JSON: os, kernel, boot mode, vCPUs, memory, disks */

#endif
