#include "rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define GIB (1024LL * 1024 * 1024)
#define MIB (1024LL * 1024)

/* ---------------------------------------------------------------- data */

/* Operating systems prep can make bootable in every cloud: the matrix (RHEL 7/8,
 * CentOS 7, Ubuntu 16.04/18.04/20.04) and what else playbooks/prep/plan.yml accepts.
 * Matched on Ansible's distribution and its major version, or its full version where
 * given. */
static const struct os_support {
    const char *distribution, *major, *version, *label;
} supported_os[] = {
    {"RedHat", "7", NULL, "RHEL 7"},           {"RedHat", "8", NULL, "RHEL 8"},
    {"RedHat", "9", NULL, "RHEL 9"},           {"CentOS", "7", NULL, "CentOS 7"},
    {"CentOS", "8", NULL, "CentOS 8"},         {"CentOS", "9", NULL, "CentOS Stream 9"},
    {"Rocky", "8", NULL, "Rocky 8"},           {"Rocky", "9", NULL, "Rocky 9"},
    {"AlmaLinux", "8", NULL, "AlmaLinux 8"},   {"AlmaLinux", "9", NULL, "AlmaLinux 9"},
    {"Ubuntu", NULL, "16.04", "Ubuntu 16.04"}, {"Ubuntu", NULL, "18.04", "Ubuntu 18.04"},
    {"Ubuntu", NULL, "20.04", "Ubuntu 20.04"}, {"Ubuntu", NULL, "22.04", "Ubuntu 22.04"},
    {"Ubuntu", NULL, "24.04", "Ubuntu 24.04"}, {"Debian", "11", NULL, "Debian 11"},
    {"Debian", "12", NULL, "Debian 12"},
};

/* Architectures each cloud's import path takes. */
static const struct arch_support {
    const char *cloud, *arch;
} supported_arch[] = {{"aws", "x86_64"}, {"azure", "x86_64"}, {"gcp", "x86_64"}};

enum verdict_sev { SEV_NONE, SEV_WARNING, SEV_BLOCKER };

/* Boot mode x partition table of the boot disk, per import path ("*" matches any).
 * The first matching row decides; no row means accepted. A message follows "boot disk
 * <name> ". */
static const struct boot_path {
    const char *cloud, *mode, *table;
    enum verdict_sev sev;
    const char *message;
} boot_paths[] = {
    {"*", "*", "none", SEV_BLOCKER,
     "has no partition table (a filesystem on the whole disk): the host starts "
     "from a kernel given to it from outside, which no cloud does; move the system to a "
     "partitioned disk with a boot loader first"},
    {"azure", "bios", "gpt", SEV_BLOCKER,
     "is GPT on a BIOS host: Azure boots BIOS (Generation 1) VMs from MBR disks "
     "only; convert the disk to MBR (it is under 2 TiB) or switch the host to UEFI"},
    {"azure", "uefi", "*", SEV_WARNING,
     "boots with UEFI: the VM will be Generation 2; pick a machine type that "
     "supports Generation 2 (current D, E and B sizes do)"},
    {"*", "*", "unknown", SEV_WARNING,
     "has a partition table that could not be read (is blkid installed?): check that it is "
     "MBR or GPT before approving"},
    {"*", "unknown", "*", SEV_WARNING,
     "boots with BIOS or UEFI, which could not be told: prep assumes BIOS"},
};

/* Disk limits of the VM types xmigrate creates. */
static const struct disk_limits {
    const char *cloud;
    int max_disks;
    long long max_disk_gib, max_boot_gib;
} disk_limits[] = {
    /* Nitro: 28 attachments, one taken by the network interface. */
    {"aws", 27, 16384, 16384},
    /* 64 data disks on the largest sizes, plus the OS disk (at most 4 TiB). */
    {"azure", 65, 32767, 4095},
    {"gcp", 128, 65536, 65536},
};
#define MBR_MAX_BYTES (2048LL * GIB) /* 2^32 sectors of 512 bytes */

/* Drivers the target's virtual hardware needs in the initramfs to find its boot disk
 * and network. An optional one is needed only on some machine types. */
static const struct driver_need {
    const char *cloud, *driver;
    int required;
    const char *why;
} drivers[] = {
    {"aws", "nvme", 1, "EBS volumes are NVMe devices on Nitro instances"},
    {"aws", "ena", 1, "the Nitro network adapter"},
    {"azure", "hv_vmbus", 1, "the Hyper-V bus"},
    {"azure", "hv_storvsc", 1, "Hyper-V storage"},
    {"azure", "hv_netvsc", 1, "Hyper-V networking"},
    {"gcp", "virtio_scsi", 1, "persistent disks"},
    {"gcp", "virtio_net", 1, "networking"},
    {"gcp", "gve", 0, "gVNIC, which only some machine types require"},
    {"gcp", "nvme", 0, "NVMe persistent disks of the newest machine types"},
};

/* Agents that belong to one cloud and get in the way in another. */
static const struct agent_owner {
    const char *agent, *cloud, *label;
} agents[] = {
    {"amazon-ssm-agent", "aws", "AWS Systems Manager agent"},
    {"walinuxagent", "azure", "Azure Linux agent"},
    {"waagent", "azure", "Azure Linux agent"},
    {"google-guest-agent", "gcp", "Google guest agent"},
    {"google-compute-engine", "gcp", "Google compute engine tools"},
};

/* Free space prep needs: packages and agents on /, a new initramfs on /boot. */
static const struct space_floor {
    const char *what;
    long long block, warn;
} space_floors[] = {
    {"root", 512 * MIB, 1 * GIB},
    {"boot", 64 * MIB, 150 * MIB},
};

/* ---------------------------------------------------------------- verdicts */

struct verdict {
    enum verdict_sev sev;
    char msg[1536];
};

/* Raise the verdict to at least sev and append a sentence to its message. */
__attribute__((format(printf, 3, 4))) static void add(struct verdict *v, enum verdict_sev sev,
                                                      const char *fmt, ...)
{
    size_t n = strlen(v->msg);
    if (n && n + 2 < sizeof(v->msg)) {
        memcpy(v->msg + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg + n, sizeof(v->msg) - n, fmt, ap);
    va_end(ap);
    if (sev > v->sev)
        v->sev = sev;
}

struct ctx {
    const char *host, *cloud, *outcome, *reason;
    const json_t *rec; /* NULL unless discovered */
};

static const char *s_of(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long i_of(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static int matches(const char *pattern, const char *value)
{
    return strcmp(pattern, "*") == 0 || strcmp(pattern, value) == 0;
}

/* The disk holding / or /boot, else the first disk. Borrowed or NULL. */
static const json_t *boot_disk(const json_t *rec)
{
    const json_t *disks = json_object_get(rec, "disks");
    size_t i;
    const json_t *d;
    json_array_foreach(disks, i, d)
    {
        if (json_is_true(json_object_get(d, "boot")))
            return d;
    }
    return json_array_get(disks, 0);
}

static int has_string(const json_t *arr, const char *s)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0)
            return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the checks */

static void check_discovered(const struct ctx *c, struct verdict *v)
{
    if (strcmp(c->outcome, DISCOVERY_OK) == 0)
        return;
    add(v, SEV_BLOCKER,
        "the host was not discovered (%s: %s): fix the cause, then run discovery again for this "
        "host (POST /v1/migrations/{id}/hosts/%s/phases/discovery)",
        c->outcome, c->reason && *c->reason ? c->reason : "no reason given", c->host);
}

static void check_os(const struct ctx *c, struct verdict *v)
{
    const json_t *os = json_object_get(c->rec, "os");
    const char *dist = s_of(os, "distribution"), *major = s_of(os, "major"),
               *version = s_of(os, "version");
    char list[512] = "";
    for (size_t i = 0; i < sizeof(supported_os) / sizeof(supported_os[0]); i++) {
        const struct os_support *s = &supported_os[i];
        if (strcmp(s->distribution, dist) == 0 &&
            (s->version ? strcmp(s->version, version) == 0 : strcmp(s->major, major) == 0))
            return;
        size_t n = strlen(list);
        snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", s->label);
    }
    add(v, SEV_BLOCKER,
        "%s %s is not supported on %s (supported: %s): upgrade or rebuild the host on a "
        "supported version, or override if you prepare it yourself",
        dist, version, c->cloud, list);
}

static void check_arch(const struct ctx *c, struct verdict *v)
{
    const char *arch = s_of(json_object_get(c->rec, "os"), "arch");
    for (size_t i = 0; i < sizeof(supported_arch) / sizeof(supported_arch[0]); i++)
        if (strcmp(supported_arch[i].cloud, c->cloud) == 0 &&
            strcmp(supported_arch[i].arch, arch) == 0)
            return;
    add(v, SEV_BLOCKER, "architecture '%s' cannot be imported into %s (x86_64 only)", arch,
        c->cloud);
}

static void check_boot_path(const struct ctx *c, struct verdict *v)
{
    const json_t *d = boot_disk(c->rec);
    if (!d)
        return; /* check_disks reports a host without disks */
    const char *mode = s_of(c->rec, "boot_mode"), *table = s_of(d, "table");
    for (size_t i = 0; i < sizeof(boot_paths) / sizeof(boot_paths[0]); i++) {
        const struct boot_path *p = &boot_paths[i];
        if (matches(p->cloud, c->cloud) && matches(p->mode, mode) && matches(p->table, table)) {
            add(v, p->sev, "boot disk %s %s", s_of(d, "name"), p->message);
            return;
        }
    }
}

static void check_disks(const struct ctx *c, struct verdict *v)
{
    const json_t *disks = json_object_get(c->rec, "disks");
    if (json_array_size(disks) == 0) {
        add(v, SEV_BLOCKER,
            "no disk was found: check that the SSH user can read the block "
            "devices (root or sudo) and run discovery again");
        return;
    }
    const struct disk_limits *l = NULL;
    for (size_t i = 0; i < sizeof(disk_limits) / sizeof(disk_limits[0]); i++)
        if (strcmp(disk_limits[i].cloud, c->cloud) == 0)
            l = &disk_limits[i];
    if (!l)
        return;
    if ((int)json_array_size(disks) > l->max_disks)
        add(v, SEV_BLOCKER, "%zu disks: a %s VM takes at most %d; skip some in the blueprint",
            json_array_size(disks), c->cloud, l->max_disks);
    size_t i;
    const json_t *d;
    json_array_foreach(disks, i, d)
    {
        long long size = i_of(d, "size");
        int boot = json_is_true(json_object_get(d, "boot"));
        long long max = (boot ? l->max_boot_gib : l->max_disk_gib) * GIB;
        if (size > max)
            add(v, SEV_BLOCKER, "disk %s is %lld GiB: %s takes at most %lld GiB for a%s disk",
                s_of(d, "name"), size / GIB, c->cloud, max / GIB, boot ? " boot" : "");
        if (strcmp(s_of(d, "table"), "mbr") == 0 && size > MBR_MAX_BYTES)
            add(v, SEV_BLOCKER,
                "disk %s is MBR and over 2 TiB: the space past 2 TiB cannot be addressed; "
                "convert it to GPT",
                s_of(d, "name"));
    }
}

static void check_free_space(const struct ctx *c, struct verdict *v)
{
    const json_t *f = json_object_get(c->rec, "free");
    for (size_t i = 0; i < sizeof(space_floors) / sizeof(space_floors[0]); i++) {
        const struct space_floor *s = &space_floors[i];
        long long free = i_of(f, s->what);
        const char *where = strcmp(s->what, "root") == 0 ? "/" : "/boot";
        if (free < 0)
            add(v, SEV_WARNING, "free space on %s is unknown: make sure %lld MiB are free", where,
                s->warn / MIB);
        else if (free < s->block)
            add(v, SEV_BLOCKER, "only %lld MiB free on %s: prep needs %lld MiB; free some space",
                free / MIB, where, s->warn / MIB);
        else if (free < s->warn)
            add(v, SEV_WARNING, "only %lld MiB free on %s: prep may run short (wants %lld MiB)",
                free / MIB, where, s->warn / MIB);
    }
}

static void check_lvm_span(const struct ctx *c, struct verdict *v)
{
    size_t i;
    const json_t *g;
    json_array_foreach(json_object_get(json_object_get(c->rec, "lvm"), "vgs"), i, g)
    {
        const json_t *on = json_object_get(g, "disks");
        if (json_array_size(on) < 2)
            continue;
        char list[512] = "";
        size_t j;
        const json_t *d;
        json_array_foreach(on, j, d)
        {
            size_t n = strlen(list);
            snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", json_string_value(d));
        }
        add(v, SEV_WARNING,
            "volume group %s spans disks %s: all of them are copied and must stay together; "
            "do not skip any of them in the blueprint",
            s_of(g, "name"), list);
    }
}

static void check_fstab(const struct ctx *c, struct verdict *v)
{
    size_t i;
    const json_t *e;
    json_array_foreach(json_object_get(c->rec, "fstab_by_device"), i, e)
    {
        add(v, SEV_WARNING,
            "/etc/fstab mounts %s by its device name %s, which changes in the cloud: prep "
            "rewrites it to UUID=",
            s_of(e, "mount"), s_of(e, "device"));
    }
}

static void check_addressing(const struct ctx *c, struct verdict *v)
{
    size_t i;
    const json_t *n;
    json_array_foreach(json_object_get(c->rec, "nics"), i, n)
    {
        const char *how = s_of(n, "addressing");
        const char *first = json_string_value(json_array_get(json_object_get(n, "addresses"), 0));
        if (strcmp(how, "static") == 0)
            add(v, SEV_WARNING,
                "%s has the static address %s: prep switches it to DHCP, and the cloud gives "
                "the VM an address of its blueprint subnet",
                s_of(n, "name"), first ? first : "?");
        else if (strcmp(how, "unknown") == 0)
            add(v, SEV_WARNING,
                "could not tell whether %s is static or DHCP: prep switches it to DHCP",
                s_of(n, "name"));
    }
}

static void check_drivers(const struct ctx *c, struct verdict *v)
{
    const json_t *ir = json_object_get(c->rec, "initramfs");
    const char *tool = s_of(ir, "tool");
    for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++) {
        const struct driver_need *d = &drivers[i];
        if (strcmp(d->cloud, c->cloud) != 0 ||
            has_string(json_object_get(ir, "builtin"), d->driver) ||
            has_string(json_object_get(ir, "drivers"), d->driver))
            continue;
        int available = has_string(json_object_get(ir, "available"), d->driver);
        if (!available)
            add(v, d->required ? SEV_BLOCKER : SEV_WARNING,
                "kernel %s has no %s driver (%s), so prep cannot add it: %s",
                s_of(json_object_get(c->rec, "os"), "kernel"), d->driver, d->why,
                d->required ? "update the kernel, then run discovery again"
                            : "choose a machine type that does not need it");
        else if (strcmp(tool, "unknown") == 0)
            add(v, d->required ? SEV_BLOCKER : SEV_WARNING,
                "%s (%s) is not in the initramfs and neither dracut nor initramfs-tools was "
                "found to add it: add it to the initramfs yourself",
                d->driver, d->why);
        else
            add(v, SEV_WARNING, "%s (%s) is not in the initramfs: prep adds it with %s", d->driver,
                d->why, tool);
    }
}

static void check_selinux(const struct ctx *c, struct verdict *v)
{
    if (strcmp(s_of(c->rec, "selinux"), "enforcing") == 0)
        add(v, SEV_WARNING,
            "SELinux is enforcing: prep schedules a relabel, so the first boot "
            "in the cloud takes longer");
}

static void check_agents(const struct ctx *c, struct verdict *v)
{
    for (size_t i = 0; i < sizeof(agents) / sizeof(agents[0]); i++)
        if (strcmp(agents[i].cloud, c->cloud) != 0 &&
            has_string(json_object_get(c->rec, "cloud_agents"), agents[i].agent))
            add(v, SEV_WARNING,
                "%s (%s) is installed: it belongs to %s and gets in the way on %s; remove or "
                "disable it before cutover",
                agents[i].agent, agents[i].label, agents[i].cloud, c->cloud);
}

/* ---------------------------------------------------------------- the table */

static const struct rule {
    const char *id;
    int needs_record; /* skipped for a host that was not discovered */
    void (*check)(const struct ctx *c, struct verdict *v);
} rules[] = {
    {"discovered", 0, check_discovered},        /* facts arrived */
    {"os_supported", 1, check_os},              /* distribution and version */
    {"architecture", 1, check_arch},            /* CPU architecture */
    {"boot_path", 1, check_boot_path},          /* boot mode x partition table */
    {"disk_limits", 1, check_disks},            /* disk count and sizes */
    {"free_space", 1, check_free_space},        /* room for prep on / and /boot */
    {"lvm_spanning", 1, check_lvm_span},        /* a volume group over several disks */
    {"fstab_device_names", 1, check_fstab},     /* /dev/sdX in /etc/fstab */
    {"static_addressing", 1, check_addressing}, /* static becomes DHCP */
    {"initramfs_drivers", 1, check_drivers},    /* target drivers in the initramfs */
    {"selinux", 1, check_selinux},              /* relabel on first boot */
    {"foreign_agents", 1, check_agents},        /* another cloud's agents */
};

json_t *rules_run(const char *host, const char *cloud, const char *outcome, const char *reason,
                  const json_t *record)
{
    struct ctx c = {host, cloud, outcome, reason, record};
    json_t *blockers = json_array(), *warnings = json_array();
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        if (rules[i].needs_record && !record)
            continue;
        struct verdict v = {SEV_NONE, ""};
        rules[i].check(&c, &v);
        if (v.sev == SEV_NONE)
            continue;
        char name[200];
        snprintf(name, sizeof(name), "%s/%s", host, rules[i].id);
        json_array_append_new(v.sev == SEV_BLOCKER ? blockers : warnings,
                              json_pack("{s:s, s:s, s:s, s:s}", "name", name, "rule", rules[i].id,
                                        "severity", v.sev == SEV_BLOCKER ? "blocker" : "warning",
                                        "message", v.msg));
    }
    json_array_extend(blockers, warnings);
    json_decref(warnings);
    return blockers;
}

json_t *rules_driver_names(void)
{
    json_t *out = json_array();
    for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
        if (!has_string(out, drivers[i].driver))
            json_array_append_new(out, json_string(drivers[i].driver));
    return out;
}

void rules_count(const json_t *findings, int *blockers, int *warnings)
{
    *blockers = *warnings = 0;
    size_t i;
    const json_t *f;
    json_array_foreach(findings, i, f)
    {
        if (strcmp(s_of(f, "severity"), "blocker") == 0)
            (*blockers)++;
        else
            (*warnings)++;
    }
}
