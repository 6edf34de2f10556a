#include "normalize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipv4.h"
#include "xmalloc.h"

#define MAX_DISKS 64
#define MAX_ITEMS 128

/* ---------------------------------------------------------------- reading facts */

/* A number Ansible may give as integer, real or string ("512", "19.50"); -1 if none. */
static long long num(const json_t *v)
{
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    if (json_is_string(v)) {
        char *end;
        double d = strtod(json_string_value(v), &end);
        if (end != json_string_value(v))
            return (long long)d;
    }
    return -1;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : NULL;
}

/* Copy a string fact into rec[key] when present, cut to max bytes. */
static void copy_str(json_t *rec, const char *key, const char *v, size_t max)
{
    if (v)
        json_object_set_new(rec, key, json_stringn(v, strnlen(v, max)));
}

/* Ansible reports LVM sizes in GiB ("19.50"). */
static long long gib_bytes(const json_t *v)
{
    if (!json_is_string(v) && !json_is_number(v))
        return 0;
    double g = json_is_string(v) ? strtod(json_string_value(v), NULL) : json_number_value(v);
    return g > 0 ? (long long)(g * 1073741824.0) : 0;
}

static int valid_name(const char *s)
{
    if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
        return 0;
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_' ||
              s[n] == '-'))
            return 0;
    return n <= 63;
}

/* Block devices that are not disks of the server: loops, RAM disks, CD drives, device
 * mapper and md nodes (their disks are listed themselves). */
static int is_disk(const char *name, const json_t *dev)
{
    static const char *const skip[] = {"loop", "ram", "zram", "sr",   "fd",
                                       "dm-",  "md",  "nbd",  "drbd", "rbd"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strncmp(name, skip[i], strlen(skip[i])) == 0)
            return 0;
    return valid_name(name) && num(json_object_get(dev, "sectors")) > 0;
}

/* The lines of probe name (an array of strings), or NULL when the probe is missing. */
static const json_t *probe(const json_t *facts, const char *name)
{
    const json_t *p = json_object_get(json_object_get(facts, "probes"), name);
    return json_is_array(p) ? p : NULL;
}

/* ---------------------------------------------------------------- disks and LVM */

static const char *table_of(const json_t *tables, const char *disk)
{
    if (!tables)
        return "unknown";
    size_t i;
    const json_t *l;
    size_t n = strlen(disk);
    json_array_foreach(tables, i, l)
    {
        const char *s = json_string_value(l);
        if (!s || strncmp(s, disk, n) != 0 || (s[n] != ' ' && s[n] != '\0'))
            continue;
        const char *t = s + n;
        while (*t == ' ')
            t++;
        if (strcmp(t, "gpt") == 0)
            return "gpt";
        if (strcmp(t, "dos") == 0 || strcmp(t, "mbr") == 0)
            return "mbr";
        return *t ? "unknown" : "none";
    }
    return "unknown";
}

/* The mount whose device is dev (or whose UUID is uuid). Borrowed, or NULL. */
static const json_t *mount_of(const json_t *mounts, const char *dev, const char *uuid)
{
    size_t i;
    const json_t *m;
    json_array_foreach(mounts, i, m)
    {
        const char *d = str(m, "device"), *u = str(m, "uuid");
        if ((d && dev && strcmp(d, dev) == 0) ||
            (u && uuid && strcmp(u, "N/A") != 0 && strcmp(u, uuid) == 0))
            return m;
    }
    return NULL;
}

/* "/dev/mapper/vg--a-lv" or "/dev/vg/lv" -> vg and lv names. 0, or -1 if not an LV
 * path. Device mapper doubles a '-' inside a name and joins the two with one '-'. */
static int lv_path(const char *dev, char *vg, char *lv, size_t size)
{
    if (strncmp(dev, "/dev/mapper/", 12) == 0) {
        const char *s = dev + 12;
        size_t o = 0;
        for (; *s; s++) {
            if (s[0] == '-' && s[1] == '-') {
                s++;
            } else if (s[0] == '-') {
                break;
            }
            if (o + 1 < size)
                vg[o++] = *s;
        }
        vg[o] = '\0';
        if (*s != '-')
            return -1;
        o = 0;
        for (s++; *s; s++) {
            if (s[0] == '-' && s[1] == '-')
                s++;
            if (o + 1 < size)
                lv[o++] = *s;
        }
        lv[o] = '\0';
        return vg[0] && lv[0] ? 0 : -1;
    }
    const char *a = dev + 5, *slash = strncmp(dev, "/dev/", 5) == 0 ? strchr(a, '/') : NULL;
    if (!slash || strchr(slash + 1, '/') || (size_t)(slash - a) >= size)
        return -1;
    memcpy(vg, a, (size_t)(slash - a));
    vg[slash - a] = '\0';
    snprintf(lv, size, "%s", slash + 1);
    return vg[0] && lv[0] ? 0 : -1;
}

/* The disk (name) a block device path is on: the disk itself or one of its
 * partitions. Borrowed from disks, or NULL. */
static const char *disk_of(const json_t *disks, const char *dev)
{
    size_t i, j;
    const json_t *d, *p;
    json_array_foreach(disks, i, d)
    {
        if (strcmp(str(d, "device"), dev) == 0)
            return str(d, "name");
        json_array_foreach(json_object_get(d, "partitions"), j, p)
        {
            if (strcmp(str(p, "device"), dev) == 0)
                return str(d, "name");
        }
    }
    return NULL;
}

static void add_unique(json_t *arr, const char *s)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0)
            return;
    }
    json_array_append_new(arr, json_string(s));
}

static json_t *partitions(const json_t *dev, const json_t *a)
{
    json_t *out = json_array();
    long long disk_ss = num(json_object_get(dev, "sectorsize"));
    const char *pname;
    const json_t *p;
    const json_t *pvs = json_object_get(json_object_get(a, "lvm"), "pvs");
    json_object_foreach((json_t *)json_object_get(dev, "partitions"), pname, p)
    {
        if (json_array_size(out) >= MAX_ITEMS || strlen(pname) > 60)
            break;
        char path[80];
        snprintf(path, sizeof(path), "/dev/%s", pname);
        long long ss = num(json_object_get(p, "sectorsize"));
        long long sectors = num(json_object_get(p, "sectors"));
        json_t *o = json_pack("{s:s, s:s, s:I}", "name", pname, "device", path, "size",
                              (json_int_t)(sectors > 0 ? sectors * (ss > 0        ? ss
                                                                    : disk_ss > 0 ? disk_ss
                                                                                  : 512)
                                                       : 0));
        long long start = num(json_object_get(p, "start"));
        if (start >= 0)
            json_object_set_new(o, "start", json_integer(start));
        const char *uuid = str(p, "uuid");
        if (uuid && strcmp(uuid, "N/A") != 0)
            copy_str(o, "uuid", uuid, 64);
        const json_t *m = mount_of(json_object_get(a, "mounts"), path, uuid);
        if (m) {
            copy_str(o, "fstype", str(m, "fstype"), 32);
            copy_str(o, "mount", str(m, "mount"), 4096);
        }
        copy_str(o, "vg", str(json_object_get(pvs, path), "vg"), 128);
        if (json_object_get(o, "vg") && !json_object_get(o, "fstype"))
            json_object_set_new(o, "fstype", json_string("LVM2_member"));
        json_array_append_new(out, o);
    }
    return out;
}

static json_t *disks(const json_t *facts, const json_t *a)
{
    json_t *out = json_array();
    const json_t *tables = probe(facts, "partition_tables");
    const char *name;
    const json_t *dev;
    /* jansson keeps insertion order; sort by name so records compare stably. */
    const char **names = NULL;
    size_t n = 0;
    json_object_foreach((json_t *)json_object_get(a, "devices"), name, dev)
    {
        if (!is_disk(name, dev) || n == MAX_DISKS)
            continue;
        names = xrealloc(names, sizeof(*names) * (n + 1));
        names[n++] = name;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        dev = json_object_get(json_object_get(a, "devices"), names[i]);
        char path[80];
        snprintf(path, sizeof(path), "/dev/%s", names[i]);
        long long ss = num(json_object_get(dev, "sectorsize"));
        long long size = num(json_object_get(dev, "sectors")) * (ss > 0 ? ss : 512);
        json_t *d = json_pack("{s:s, s:s, s:I, s:s, s:o}", "name", names[i], "device", path, "size",
                              (json_int_t)size, "table", table_of(tables, names[i]), "partitions",
                              partitions(dev, a));
        copy_str(d, "model", str(dev, "model"), 128);
        json_array_append_new(out, d);
    }
    free(names);
    return out;
}

static json_t *lvm(const json_t *a, json_t *disk_list)
{
    const json_t *l = json_object_get(a, "lvm");
    json_t *vgs = json_array(), *lvs = json_array();
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)json_object_get(l, "vgs"), name, v)
    {
        if (json_array_size(vgs) >= 64)
            break;
        json_t *pvs = json_array(), *on = json_array();
        const char *pv;
        const json_t *pvv;
        json_object_foreach((json_t *)json_object_get(l, "pvs"), pv, pvv)
        {
            if (!str(pvv, "vg") || strcmp(str(pvv, "vg"), name) != 0)
                continue;
            json_array_append_new(pvs, json_string(pv));
            const char *disk = disk_of(disk_list, pv);
            if (disk)
                add_unique(on, disk);
        }
        json_array_append_new(vgs,
                              json_pack("{s:s, s:I, s:I, s:o, s:o}", "name", name, "size",
                                        (json_int_t)gib_bytes(json_object_get(v, "size_g")), "free",
                                        (json_int_t)gib_bytes(json_object_get(v, "free_g")), "pvs",
                                        pvs, "disks", on));
    }
    json_object_foreach((json_t *)json_object_get(l, "lvs"), name, v)
    {
        if (json_array_size(lvs) >= 256 || !str(v, "vg"))
            continue;
        json_t *o = json_pack("{s:s, s:s, s:I}", "name", name, "vg", str(v, "vg"), "size",
                              (json_int_t)gib_bytes(json_object_get(v, "size_g")));
        size_t i;
        const json_t *m;
        json_array_foreach(json_object_get(a, "mounts"), i, m)
        {
            char vg[128], lv[128];
            const char *dev = str(m, "device");
            if (dev && lv_path(dev, vg, lv, sizeof(vg)) == 0 && strcmp(vg, str(v, "vg")) == 0 &&
                strcmp(lv, name) == 0) {
                copy_str(o, "mount", str(m, "mount"), 4096);
                copy_str(o, "fstype", str(m, "fstype"), 32);
                break;
            }
        }
        json_array_append_new(lvs, o);
    }
    return json_pack("{s:o, s:o}", "vgs", vgs, "lvs", lvs);
}

/* Mark the disks holding / or /boot (directly, or through an LV's volume group). */
static void mark_boot(json_t *disk_list, const json_t *lv_data, const json_t *mounts)
{
    size_t i, j;
    const json_t *m;
    json_array_foreach(mounts, i, m)
    {
        const char *mp = str(m, "mount"), *dev = str(m, "device");
        if (!mp || !dev || (strcmp(mp, "/") != 0 && strcmp(mp, "/boot") != 0))
            continue;
        const char *disk = disk_of(disk_list, dev);
        char vg[128], lv[128];
        json_t *d;
        json_array_foreach(disk_list, j, d)
        {
            if (disk && strcmp(str(d, "name"), disk) == 0)
                json_object_set_new(d, "boot", json_true());
        }
        if (disk || lv_path(dev, vg, lv, sizeof(vg)) < 0)
            continue;
        const json_t *g;
        json_array_foreach(json_object_get(lv_data, "vgs"), j, g)
        {
            if (strcmp(str(g, "name"), vg) != 0)
                continue;
            size_t k, x;
            const json_t *on;
            json_array_foreach(json_object_get(g, "disks"), k, on)
            {
                json_array_foreach(disk_list, x, d)
                {
                    if (strcmp(str(d, "name"), json_string_value(on)) == 0)
                        json_object_set_new(d, "boot", json_true());
                }
            }
        }
    }
}

static json_t *mounts(const json_t *a, json_t *free_space)
{
    json_t *out = json_array();
    size_t i;
    const json_t *m;
    long long root = -1, boot = -1;
    json_array_foreach(json_object_get(a, "mounts"), i, m)
    {
        const char *mp = str(m, "mount"), *dev = str(m, "device");
        if (!mp || !dev || json_array_size(out) >= MAX_ITEMS)
            continue;
        long long size = num(json_object_get(m, "size_total"));
        long long avail = num(json_object_get(m, "size_available"));
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I}", "mount", mp, "device", dev, "fstype",
                              str(m, "fstype") ? str(m, "fstype") : "unknown", "size",
                              (json_int_t)(size > 0 ? size : 0), "free",
                              (json_int_t)(avail > 0 ? avail : 0));
        const char *uuid = str(m, "uuid");
        if (uuid && strcmp(uuid, "N/A") != 0)
            copy_str(o, "uuid", uuid, 64);
        json_array_append_new(out, o);
        if (strcmp(mp, "/") == 0 && root < 0)
            root = avail;
        if (strcmp(mp, "/boot") == 0 && boot < 0)
            boot = avail;
    }
    json_object_set_new(free_space, "root", json_integer(root));
    json_object_set_new(free_space, "boot", json_integer(boot >= 0 ? boot : root));
    return out;
}

/* ---------------------------------------------------------------- network */

/* Interfaces made by container and VM software on the host: not part of what moves. */
static int is_virtual_bridge(const char *name)
{
    static const char *const prefixes[] = {"docker", "br-",  "virbr", "cni",   "flannel",
                                           "cali",   "veth", "lxcbr", "lxdbr", "podman",
                                           "tun",    "tap",  "vnet",  "kube",  "weave"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* "static", "dhcp" or "unknown" from the `ip -o -4 addr show` lines of iface. */
static const char *addressing(const json_t *lines, const char *iface)
{
    if (!lines)
        return "unknown";
    size_t i;
    const json_t *l;
    int seen = 0;
    json_array_foreach(lines, i, l)
    {
        const char *s = json_string_value(l);
        const char *colon = s ? strchr(s, ':') : NULL;
        if (!colon)
            continue;
        const char *name = colon + 1;
        while (*name == ' ' || *name == '\t')
            name++;
        size_t n = strcspn(name, " \t@");
        if (n != strlen(iface) || strncmp(name, iface, n) != 0)
            continue;
        seen = 1;
        if (strstr(s, " dynamic "))
            return "dhcp";
    }
    return seen ? "static" : "unknown";
}

static void add_address(json_t *addrs, json_t *pub, const char *ip, const json_t *prefix)
{
    uint32_t a;
    if (!ip || ipv4_parse(ip, &a) < 0 || json_array_size(addrs) >= 64)
        return;
    long long p = num(prefix);
    char buf[24];
    ipv4_format(a, p >= 0 && p <= 32 ? (int)p : 32, buf, sizeof(buf));
    json_array_append_new(addrs, json_string(buf));
    if (ipv4_is_public(a) && json_array_size(pub) < 64) {
        ipv4_format(a, -1, buf, sizeof(buf));
        add_unique(pub, buf);
    }
}

static json_t *nics(const json_t *facts, const json_t *a, json_t *pub)
{
    json_t *out = json_array();
    const json_t *lines = probe(facts, "ip_addr");
    const char *def = str(json_object_get(a, "default_ipv4"), "interface");
    size_t i;
    const json_t *n;
    json_array_foreach(json_object_get(a, "interfaces"), i, n)
    {
        const char *name = json_string_value(n);
        if (!name || strcmp(name, "lo") == 0 || strlen(name) > 60 || is_virtual_bridge(name) ||
            json_array_size(out) >= 64)
            continue;
        /* The setup module stores an interface under its name with '-' and ':' as '_'. */
        char key[64];
        snprintf(key, sizeof(key), "%s", name);
        for (char *c = key; *c; c++)
            if (*c == '-' || *c == ':')
                *c = '_';
        const json_t *f = json_object_get(a, key);
        if (!f || (str(f, "type") && strcmp(str(f, "type"), "loopback") == 0))
            continue;
        json_t *addrs = json_array();
        const json_t *v4 = json_object_get(f, "ipv4");
        add_address(addrs, pub, str(v4, "address"), json_object_get(v4, "prefix"));
        size_t j;
        const json_t *s;
        json_array_foreach(json_object_get(f, "ipv4_secondaries"), j, s)
        {
            add_address(addrs, pub, str(s, "address"), json_object_get(s, "prefix"));
        }
        const char *how = json_array_size(addrs) ? addressing(lines, name) : "none";
        json_t *o =
            json_pack("{s:s, s:o, s:s}", "name", name, "addresses", addrs, "addressing", how);
        copy_str(o, "mac", str(f, "macaddress"), 64);
        if (def && strcmp(def, name) == 0)
            json_object_set_new(o, "default", json_true());
        json_array_append_new(out, o);
    }
    return out;
}

/* ---------------------------------------------------------------- probes */

/* "kernel/drivers/nvme/host/nvme.ko.xz" -> "nvme"; "hv-vmbus.ko" -> "hv_vmbus". */
static int module_name(const char *s, char *out, size_t size)
{
    const char *base = strrchr(s, '/');
    base = base ? base + 1 : s;
    const char *ko = strstr(base, ".ko");
    size_t n = ko ? (size_t)(ko - base) : 0;
    if (n == 0 || n >= size)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = base[i] == '-' ? '_' : base[i];
    out[n] = '\0';
    return valid_name(out) ? 0 : -1;
}

static json_t *initramfs(const json_t *facts)
{
    const json_t *lines = probe(facts, "initramfs");
    json_t *drivers = json_array(), *builtin = json_array(), *avail = json_array();
    const char *tool = "unknown";
    size_t i;
    const json_t *l;
    json_array_foreach(lines, i, l)
    {
        const char *s = json_string_value(l);
        char name[64];
        if (!s)
            continue;
        if (strcmp(s, "tool=dracut") == 0)
            tool = "dracut";
        else if (strcmp(s, "tool=initramfs-tools") == 0)
            tool = "initramfs-tools";
        else if (module_name(s, name, sizeof(name)) == 0 && json_array_size(drivers) < 4096)
            add_unique(drivers, name);
    }
    json_array_foreach(probe(facts, "drivers"), i, l)
    {
        const char *s = json_string_value(l);
        char name[64];
        const char *sp = s ? strchr(s, ' ') : NULL;
        if (!sp || (size_t)(sp - s) >= sizeof(name))
            continue;
        memcpy(name, s, (size_t)(sp - s));
        name[sp - s] = '\0';
        if (!valid_name(name))
            continue;
        if (strcmp(sp + 1, "builtin") == 0 && json_array_size(builtin) < 64)
            add_unique(builtin, name);
        else if (strcmp(sp + 1, "module") == 0 && json_array_size(avail) < 64)
            add_unique(avail, name);
    }
    return json_pack("{s:s, s:o, s:o, s:o}", "tool", tool, "drivers", drivers, "builtin", builtin,
                     "available", avail);
}

/* Entries of /etc/fstab that name a disk by kernel device name. */
static json_t *fstab_by_device(const json_t *facts)
{
    static const char *const kernel_names[] = {"/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd",
                                               "/dev/nvme"};
    json_t *out = json_array();
    size_t i;
    const json_t *l;
    json_array_foreach(probe(facts, "fstab"), i, l)
    {
        const char *s = json_string_value(l);
        char dev[256], mp[1024];
        if (!s || json_array_size(out) >= MAX_ITEMS)
            continue;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '#' || sscanf(s, "%255s %1023s", dev, mp) != 2)
            continue;
        for (size_t k = 0; k < sizeof(kernel_names) / sizeof(kernel_names[0]); k++)
            if (strncmp(dev, kernel_names[k], strlen(kernel_names[k])) == 0) {
                json_array_append_new(out, json_pack("{s:s, s:s}", "device", dev, "mount", mp));
                break;
            }
    }
    return out;
}

static json_t *agents(const json_t *facts)
{
    json_t *out = json_array();
    size_t i;
    const json_t *l;
    json_array_foreach(probe(facts, "cloud_agents"), i, l)
    {
        const char *s = json_string_value(l);
        int ok = s && *s && strlen(s) < 64;
        for (size_t k = 0; ok && s[k]; k++)
            ok = (s[k] >= 'a' && s[k] <= 'z') || (s[k] >= '0' && s[k] <= '9') || s[k] == '-' ||
                 s[k] == '_' || s[k] == '.';
        if (ok && json_array_size(out) < 32)
            add_unique(out, s);
    }
    return out;
}

/* `ss -tlnp` lines -> [{port, address, process}], one per address and port. */
static json_t *listening(const json_t *facts)
{
    json_t *out = json_array();
    size_t i;
    const json_t *l;
    json_array_foreach(probe(facts, "listening"), i, l)
    {
        const char *s = json_string_value(l);
        char state[32], q1[32], q2[32], local[128];
        if (!s || sscanf(s, "%31s %31s %31s %127s", state, q1, q2, local) != 4 ||
            strcmp(state, "LISTEN") != 0 || json_array_size(out) >= 512)
            continue;
        char *colon = strrchr(local, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535)
            continue;
        const char *addr = local;
        if (strcmp(addr, "*") == 0)
            addr = "0.0.0.0";
        int dup = 0;
        size_t j;
        const json_t *o;
        json_array_foreach(out, j, o)
        {
            dup |= num(json_object_get(o, "port")) == port && strcmp(str(o, "address"), addr) == 0;
        }
        if (dup)
            continue;
        json_t *o2 = json_pack("{s:i, s:s}", "port", (int)port, "address", addr);
        const char *u = strstr(s, "((\"");
        if (u) {
            u += 3;
            size_t n = strcspn(u, "\"");
            if (n && n < 64)
                json_object_set_new(o2, "process", json_stringn(u, n));
        }
        json_array_append_new(out, o2);
    }
    return out;
}

static const char *selinux(const json_t *a)
{
    const json_t *s = json_object_get(a, "selinux");
    const char *status = str(s, "status"), *mode = str(s, "mode");
    if (status && strcmp(status, "disabled") == 0)
        return "disabled";
    if (status && strcmp(status, "enabled") == 0 && mode)
        return strcmp(mode, "enforcing") == 0 ? "enforcing" : "permissive";
    return "absent";
}

/* ---------------------------------------------------------------- the record */

json_t *normalize_host(const char *host, const json_t *facts, struct err *err)
{
    const json_t *a = json_object_get(facts, "ansible");
    if (!json_is_object(a)) {
        err_set(err, ERR_PERMANENT, "the facts have no 'ansible' object");
        return NULL;
    }
    if (!str(a, "distribution")) {
        err_set(err, ERR_PERMANENT, "the facts do not say the distribution");
        return NULL;
    }
    json_t *rec = json_object();
    json_object_set_new(rec, "host", json_string(host));
    copy_str(rec, "hostname", str(a, "hostname"), 253);
    copy_str(rec, "fqdn", str(a, "fqdn"), 253);
    json_t *os = json_object();
    static const struct {
        const char *field, *fact;
        size_t max;
    } os_fields[] = {{"distribution", "distribution", 64},
                     {"version", "distribution_version", 32},
                     {"major", "distribution_major_version", 16},
                     {"family", "os_family", 32},
                     {"kernel", "kernel", 128},
                     {"arch", "architecture", 32}};
    for (size_t i = 0; i < sizeof(os_fields) / sizeof(os_fields[0]); i++) {
        const char *v = str(a, os_fields[i].fact);
        json_object_set_new(os, os_fields[i].field,
                            json_stringn(v ? v : "", v ? strnlen(v, os_fields[i].max) : 0));
    }
    json_object_set_new(rec, "os", os);
    const char *boot =
        json_string_value(json_object_get(json_object_get(facts, "probes"), "boot_mode"));
    json_object_set_new(rec, "boot_mode",
                        json_string(boot && (strcmp(boot, "uefi") == 0 || strcmp(boot, "bios") == 0)
                                        ? boot
                                        : "unknown"));
    long long vcpus = num(json_object_get(a, "processor_vcpus"));
    long long mem = num(json_object_get(a, "memtotal_mb"));
    json_object_set_new(rec, "vcpus", json_integer(vcpus > 0 ? vcpus : 0));
    json_object_set_new(rec, "memory_mib", json_integer(mem > 0 ? mem : 0));

    json_t *disk_list = disks(facts, a);
    json_t *lv = lvm(a, disk_list);
    mark_boot(disk_list, lv, json_object_get(a, "mounts"));
    json_object_set_new(rec, "disks", disk_list);
    json_object_set_new(rec, "lvm", lv);
    json_t *free_space = json_object();
    json_object_set_new(rec, "mounts", mounts(a, free_space));
    json_object_set_new(rec, "free", free_space);

    json_t *pub = json_array();
    json_object_set_new(rec, "nics", nics(facts, a, pub));
    const json_t *d4 = json_object_get(a, "default_ipv4");
    if (str(d4, "interface")) {
        json_t *dr = json_pack("{s:s}", "interface", str(d4, "interface"));
        uint32_t gw;
        if (str(d4, "gateway") && ipv4_parse(str(d4, "gateway"), &gw) == 0)
            json_object_set_new(dr, "gateway", json_string(str(d4, "gateway")));
        json_object_set_new(rec, "default_route", dr);
    }
    json_t *dns = json_array();
    size_t i;
    const json_t *ns;
    json_array_foreach(json_object_get(json_object_get(a, "dns"), "nameservers"), i, ns)
    {
        if (json_is_string(ns) && json_array_size(dns) < 16 && json_string_length(ns) < 64)
            json_array_append_new(dns, json_string(json_string_value(ns)));
    }
    json_object_set_new(rec, "dns", dns);
    json_object_set_new(rec, "fstab_by_device", fstab_by_device(facts));
    json_object_set_new(rec, "initramfs", initramfs(facts));
    json_object_set_new(rec, "cloud_agents", agents(facts));
    json_object_set_new(rec, "selinux", json_string(selinux(a)));
    json_object_set_new(rec, "listening", listening(facts));
    json_object_set_new(rec, "public_addresses", pub);
    return rec;
}
