/*
 * workers/discovery: host records from facts, pre-flight findings, machine types, the
 * suggested blueprint and the end-of-discovery decision.
 *
 * Table-driven over tests/fixtures/facts/: each <name>.json is what
 * playbooks/discover.yml posts for one host (Ansible's facts in the shape the setup
 * module reports them, plus the probes), and <name>.expected.json says what the host
 * record must hold, which findings each cloud gives (rule -> severity, exactly) and
 * which machine type is suggested. The expectations were written from the fixtures by
 * hand, not from this code's output.
 *
 *   test_discovery FIXTURES_DIR SCHEMAS_DIR
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipv4.h"
#include "jsonschema.h"
#include "machine_types.h"
#include "normalize.h"
#include "rules.h"
#include "suggest.h"
#include "summary.h"

static const char *g_fixtures, *g_schemas_dir;
static struct jsonschema_set *g_schemas;
static json_t *g_types;

static const char *const fixtures[] = {
    "rhel7_bios_mbr_lvm_static", "rhel8_uefi_gpt_lvm_dhcp",        "centos7_bios_gpt_static",
    "ubuntu1604_bios_mbr_dhcp",  "ubuntu1804_uefi_gpt_lvm_static", "ubuntu2004_bios_mbr_dhcp",
};
static const char *const clouds[] = {"aws", "azure", "gcp"};

static json_t *load(const char *name, const char *suffix)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s%s", g_fixtures, name, suffix);
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    return j;
}

/* Every key of want is in got with a matching value; arrays match in length and element
 * by element. Fails naming the JSON pointer of the first difference. */
static void assert_subset(const json_t *want, const json_t *got, const char *where)
{
    char path[512];
    if (json_is_object(want)) {
        if (!json_is_object(got))
            fail_msg("%s: want an object", where);
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)want, k, v)
        {
            snprintf(path, sizeof(path), "%s/%s", where, k);
            if (!json_object_get(got, k))
                fail_msg("%s: missing", path);
            assert_subset(v, json_object_get(got, k), path);
        }
    } else if (json_is_array(want)) {
        if (!json_is_array(got) || json_array_size(got) != json_array_size(want)) {
            char *g = json_dumps(got, JSON_COMPACT);
            fail_msg("%s: want %zu items, got %s", where, json_array_size(want), g);
        }
        for (size_t i = 0; i < json_array_size(want); i++) {
            snprintf(path, sizeof(path), "%s/%zu", where, i);
            assert_subset(json_array_get(want, i), json_array_get(got, i), path);
        }
    } else if (!json_equal(want, got)) {
        char *w = json_dumps(want, JSON_ENCODE_ANY), *g = json_dumps(got, JSON_ENCODE_ANY);
        fail_msg("%s: want %s, got %s", where, w, g ? g : "nothing");
    }
}

static json_t *record_of(const char *fixture, const char *host)
{
    json_t *facts = load(fixture, ".json");
    struct err err = {0};
    json_t *rec = normalize_host(host, facts, &err);
    json_decref(facts);
    if (!rec)
        fail_msg("%s: %s", fixture, err.msg);
    struct jsonschema_error ve;
    if (jsonschema_validate(jsonschema_set_get(g_schemas, "host"), rec, &ve) < 0)
        fail_msg("%s: host record breaks host.json at %s: %s", fixture, ve.path, ve.message);
    return rec;
}

/* ---------------------------------------------------------------- fixtures */

static void test_fixtures(void **state)
{
    (void)state;
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        json_t *rec = record_of(fixtures[f], "src1");
        json_t *exp = load(fixtures[f], ".expected.json");
        char where[128];
        snprintf(where, sizeof(where), "%s:", fixtures[f]);
        assert_subset(json_object_get(exp, "record"), rec, where);
        for (size_t c = 0; c < 3; c++) {
            json_t *findings = rules_run("src1", clouds[c], DISCOVERY_OK, NULL, rec);
            json_t *got = json_object();
            size_t i;
            json_t *one;
            int blockers_done = 0;
            json_array_foreach(findings, i, one)
            {
                const char *rule = json_string_value(json_object_get(one, "rule"));
                const char *sev = json_string_value(json_object_get(one, "severity"));
                char name[128];
                snprintf(name, sizeof(name), "src1/%s", rule);
                assert_string_equal(json_string_value(json_object_get(one, "name")), name);
                assert_true(strlen(json_string_value(json_object_get(one, "message"))) > 20);
                /* blockers come first */
                if (strcmp(sev, "warning") == 0)
                    blockers_done = 1;
                else if (blockers_done)
                    fail_msg("%s on %s: a blocker after a warning", fixtures[f], clouds[c]);
                assert_null(json_object_get(got, rule)); /* one finding per rule */
                json_object_set_new(got, rule, json_string(sev));
            }
            const json_t *want = json_object_get(json_object_get(exp, "findings"), clouds[c]);
            if (!json_equal(want, got)) {
                char *w = json_dumps(want, JSON_SORT_KEYS), *g = json_dumps(got, JSON_SORT_KEYS),
                     *all = json_dumps(findings, JSON_INDENT(1));
                fail_msg("%s on %s: want findings %s, got %s\n%s", fixtures[f], clouds[c], w, g,
                         all);
            }
            const char *type = machine_types_fit(
                g_types, clouds[c], json_integer_value(json_object_get(rec, "vcpus")),
                json_integer_value(json_object_get(rec, "memory_mib")));
            assert_string_equal(type, json_string_value(json_object_get(
                                          json_object_get(exp, "machine_type"), clouds[c])));
            json_decref(got);
            json_decref(findings);
        }
        json_decref(exp);
        json_decref(rec);
    }
}

/* Messages say what to do, with the facts that matter in them. */
static void test_messages(void **state)
{
    (void)state;
    json_t *rec = record_of("ubuntu1604_bios_mbr_dhcp", "old1");
    json_t *f = rules_run("old1", "aws", DISCOVERY_OK, NULL, rec);
    const char *msg = json_string_value(json_object_get(json_array_get(f, 0), "message"));
    assert_non_null(strstr(msg, "4.4.0-210-generic has no ena driver"));
    assert_non_null(strstr(msg, "update the kernel"));
    assert_non_null(strstr(msg, "nvme (EBS volumes are NVMe devices on Nitro instances) is not in "
                                "the initramfs: prep adds it with initramfs-tools"));
    json_decref(f);
    json_decref(rec);

    rec = record_of("centos7_bios_gpt_static", "web3");
    f = rules_run("web3", "azure", DISCOVERY_OK, NULL, rec);
    msg = json_string_value(json_object_get(json_array_get(f, 0), "message"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(f, 0), "name")),
                        "web3/boot_path");
    assert_non_null(strstr(msg, "boot disk sda is GPT on a BIOS host"));
    msg = json_string_value(json_object_get(json_array_get(f, 1), "message"));
    assert_non_null(strstr(msg, "only 40 MiB free on /boot"));
    json_decref(f);

    /* An unsupported distribution names the supported ones. */
    json_object_set_new(json_object_get(rec, "os"), "distribution", json_string("Debian"));
    json_object_set_new(json_object_get(rec, "os"), "version", json_string("10.13"));
    json_object_set_new(json_object_get(rec, "os"), "major", json_string("10"));
    f = rules_run("web3", "gcp", DISCOVERY_OK, NULL, rec);
    msg = json_string_value(json_object_get(json_array_get(f, 0), "message"));
    assert_non_null(strstr(msg, "Debian 10.13 is not supported on gcp (supported: RHEL 7, RHEL 8, "
                                "RHEL 9, CentOS 7, "));
    assert_non_null(strstr(msg, "Ubuntu 24.04, Debian 11, Debian 12): upgrade or rebuild"));
    json_decref(f);
    /* ...and the versions prep supports beyond the matrix pass. */
    static const char *const more[][3] = {
        {"Debian", "12.11", "12"}, {"Rocky", "9.3", "9"}, {"Ubuntu", "22.04", "22"}};
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        json_object_set_new(json_object_get(rec, "os"), "distribution", json_string(more[i][0]));
        json_object_set_new(json_object_get(rec, "os"), "version", json_string(more[i][1]));
        json_object_set_new(json_object_get(rec, "os"), "major", json_string(more[i][2]));
        f = rules_run("web3", "gcp", DISCOVERY_OK, NULL, rec);
        size_t k;
        json_t *one;
        json_array_foreach(f, k, one)
        {
            assert_string_not_equal(json_string_value(json_object_get(one, "rule")),
                                    "os_supported");
        }
        json_decref(f);
    }
    json_decref(rec);
}

static void test_not_discovered(void **state)
{
    (void)state;
    const char *why = "Failed to connect to the host via ssh: ssh: connect to host 10.0.0.9 "
                      "port 22: Connection refused";
    json_t *f = rules_run("db2", "aws", DISCOVERY_UNREACHABLE, why, NULL);
    assert_int_equal(json_array_size(f), 1);
    json_t *one = json_array_get(f, 0);
    assert_string_equal(json_string_value(json_object_get(one, "name")), "db2/discovered");
    assert_string_equal(json_string_value(json_object_get(one, "severity")), "blocker");
    const char *msg = json_string_value(json_object_get(one, "message"));
    assert_non_null(strstr(msg, why));
    assert_non_null(strstr(msg, "/hosts/db2/phases/discovery"));
    int b, w;
    rules_count(f, &b, &w);
    assert_int_equal(b, 1);
    assert_int_equal(w, 0);
    json_decref(f);
}

static void test_normalize_refuses(void **state)
{
    (void)state;
    const char *bad[] = {"{}", "{\"ansible\": []}", "{\"ansible\": {\"kernel\": \"5.4\"}}",
                         "{\"os\": {\"family\": \"Debian\"}, \"disks\": []}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *facts = json_loads(bad[i], 0, NULL);
        struct err err = {0};
        assert_null(normalize_host("h", facts, &err));
        assert_int_equal(err.kind, ERR_PERMANENT);
        json_decref(facts);
    }
    /* The minimum: a distribution. Everything else unknown or empty, still a valid record. */
    json_t *facts = json_loads("{\"ansible\": {\"distribution\": \"Ubuntu\", \"devices\": "
                               "{\"sda\": {\"sectors\": \"x\"}}, \"interfaces\": 7}}",
                               0, NULL);
    struct err err = {0};
    json_t *rec = normalize_host("h", facts, &err);
    assert_non_null(rec);
    struct jsonschema_error ve;
    assert_int_equal(jsonschema_validate(jsonschema_set_get(g_schemas, "host"), rec, &ve), 0);
    assert_string_equal(json_string_value(json_object_get(rec, "boot_mode")), "unknown");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(rec, "initramfs"), "tool")), "unknown");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(rec, "free"), "root")), -1);
    assert_int_equal(json_array_size(json_object_get(rec, "disks")), 0);
    /* ...on which the rules block (no disk) rather than pass silently */
    json_t *f = rules_run("h", "aws", DISCOVERY_OK, NULL, rec);
    assert_string_equal(json_string_value(json_object_get(json_array_get(f, 0), "rule")),
                        "os_supported");
    int found = 0;
    size_t i;
    json_t *one;
    json_array_foreach(f, i, one)
    {
        found |= strcmp(json_string_value(json_object_get(one, "rule")), "disk_limits") == 0;
    }
    assert_true(found);
    json_decref(f);
    json_decref(rec);
    json_decref(facts);
}

/* ---------------------------------------------------------------- machine types */

static void test_machine_types(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof(path), "%s/machine_types.json", g_schemas_dir);
    json_t *doc = json_load_file(path, 0, NULL);
    assert_non_null(doc);
    /* The table is the document's default and must follow the document as a schema. */
    struct err err = {0};
    struct jsonschema *s = jsonschema_new(doc, &err);
    assert_non_null(s);
    struct jsonschema_error ve;
    if (jsonschema_validate(s, json_object_get(doc, "default"), &ve) < 0)
        fail_msg("machine_types.json default: %s: %s", ve.path, ve.message);
    jsonschema_free(s);
    json_decref(doc);
    /* Smallest first, so the first fit is the smallest fit; names unique per cloud. */
    for (size_t c = 0; c < 3; c++) {
        const json_t *types = json_object_get(g_types, clouds[c]);
        for (size_t i = 1; i < json_array_size(types); i++) {
            const json_t *a = json_array_get(types, i - 1), *b = json_array_get(types, i);
            assert_true(json_integer_value(json_object_get(a, "memory_mib")) <=
                        json_integer_value(json_object_get(b, "memory_mib")));
            assert_true(json_integer_value(json_object_get(a, "vcpus")) <=
                        json_integer_value(json_object_get(b, "vcpus")));
            for (size_t j = 0; j < i; j++)
                assert_string_not_equal(
                    json_string_value(json_object_get(json_array_get(types, j), "name")),
                    json_string_value(json_object_get(b, "name")));
        }
    }
    assert_string_equal(machine_types_fit(g_types, "aws", 2, 4096), "t3.medium"); /* exact */
    assert_string_equal(machine_types_fit(g_types, "aws", 2, 4097), "t3.large");
    assert_string_equal(machine_types_fit(g_types, "aws", 3, 100), "t3.xlarge");
    assert_string_equal(machine_types_fit(g_types, "azure", 1, 0), "Standard_B1ls");
    assert_string_equal(machine_types_fit(g_types, "gcp", 500, 1), "n2-highmem-80"); /* largest */
    assert_null(machine_types_fit(g_types, "ibm", 1, 1));
    assert_null(machine_types_load("/nonexistent", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/machine_types.json"));
}

/* ---------------------------------------------------------------- blueprint */

/* What xm-api's blueprint_check enforces, checked here on the suggestion. */
static void assert_blueprint_sound(const json_t *bp, const json_t *hosts, const char *cloud)
{
    struct jsonschema_error ve;
    if (jsonschema_validate(jsonschema_set_get(g_schemas, "blueprint"), bp, &ve) < 0)
        fail_msg("blueprint.json: %s: %s", ve.path, ve.message);
    const json_t *net = json_object_get(bp, "network"), *subs = json_object_get(net, "subnets");
    uint32_t nnet, snet, onet;
    int nlen, slen, olen;
    assert_int_equal(ipv4_parse_cidr(json_string_value(json_object_get(net, "cidr")), &nnet, &nlen),
                     0);
    assert_true(nlen >= 16 && (nnet & ~ipv4_mask(nlen)) == 0);
    for (size_t i = 0; i < json_array_size(subs); i++) {
        const json_t *s = json_array_get(subs, i);
        ipv4_parse_cidr(json_string_value(json_object_get(s, "cidr")), &snet, &slen);
        assert_true(slen >= nlen && (snet & ipv4_mask(nlen)) == nnet); /* inside */
        assert_int_equal(snet & ~ipv4_mask(slen), 0);
        for (size_t j = 0; j < i; j++) {
            const json_t *o = json_array_get(subs, j);
            ipv4_parse_cidr(json_string_value(json_object_get(o, "cidr")), &onet, &olen);
            int m = olen < slen ? olen : slen;
            assert_true((snet & ipv4_mask(m)) != (onet & ipv4_mask(m))); /* no overlap */
            assert_string_not_equal(json_string_value(json_object_get(s, "name")),
                                    json_string_value(json_object_get(o, "name")));
        }
    }
    const json_t *placed = json_object_get(bp, "hosts");
    assert_int_equal(json_array_size(placed), json_array_size(hosts));
    for (size_t i = 0; i < json_array_size(placed); i++) {
        const json_t *h = json_array_get(placed, i);
        assert_string_equal(json_string_value(json_object_get(h, "host")),
                            json_string_value(json_array_get(hosts, i)));
        int subnet_known = 0;
        for (size_t j = 0; j < json_array_size(subs); j++)
            subnet_known |= json_equal(json_object_get(h, "subnet"),
                                       json_object_get(json_array_get(subs, j), "name"));
        assert_true(subnet_known);
        int type_known = 0;
        const json_t *types = json_object_get(g_types, cloud);
        for (size_t j = 0; j < json_array_size(types); j++)
            type_known |= json_equal(json_object_get(h, "machine_type"),
                                     json_object_get(json_array_get(types, j), "name"));
        assert_true(type_known);
    }
}

static void test_suggest_all_fixtures(void **state)
{
    (void)state;
    json_t *hosts = json_array(), *records = json_object();
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        char name[16];
        snprintf(name, sizeof(name), "h%zu", f);
        json_array_append_new(hosts, json_string(name));
        json_object_set_new(records, name, record_of(fixtures[f], name));
    }
    json_array_append_new(hosts, json_string("lost")); /* not discovered: placed anyway */
    for (size_t c = 0; c < 3; c++) {
        json_t *bp = suggest_blueprint("Ab12CD34-0000", clouds[c], hosts, records, g_types);
        assert_blueprint_sound(bp, hosts, clouds[c]);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(bp, "network"), "name")),
            "xm-ab12cd34");
        /* The estate spans 10/8, 172.16/12 and 192.168/16: one /16 is all a network can
         * be, so it is the largest subnet's /16 (10.40.8.0/22 of h5). */
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(bp, "network"), "cidr")),
            "10.40.0.0/16");
        json_decref(bp);
    }
    json_decref(hosts);
    json_decref(records);
}

static json_t *site_record(const char *host, const char *nics, const char *listening, int vcpus,
                           int mem)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"host\": \"%s\", \"vcpus\": %d, \"memory_mib\": %d, \"nics\": %s, "
             "\"listening\": %s, \"disks\": [{\"name\": \"sda\", \"device\": \"/dev/sda\"}], "
             "\"public_addresses\": %s}",
             host, vcpus, mem, nics, listening, strstr(nics, "34.1.1.1") ? "[\"34.1.1.1\"]" : "[]");
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_suggest_one_site(void **state)
{
    (void)state;
    json_t *records = json_object();
    json_object_set_new(
        records, "web1",
        site_record("web1",
                    "[{\"name\": \"eth0\", \"addresses\": [\"10.1.1.5/24\"], \"default\": true},"
                    " {\"name\": \"eth1\", \"addresses\": [\"34.1.1.1/28\"]}]",
                    "[{\"port\": 443, \"address\": \"0.0.0.0\", \"process\": \"nginx\"},"
                    " {\"port\": 22, \"address\": \"0.0.0.0\", \"process\": \"sshd\"},"
                    " {\"port\": 5000, \"address\": \"127.0.0.1\", \"process\": \"app\"}]",
                    2, 3900));
    json_object_set_new(
        records, "db1",
        site_record("db1",
                    "[{\"name\": \"eth0\", \"addresses\": [\"10.1.2.7/24\", \"169.254.0.2/16\"],"
                    " \"default\": true}]",
                    "[{\"port\": 22, \"address\": \"10.1.2.7\", \"process\": \"sshd\"},"
                    " {\"port\": 5432, \"address\": \"[::]\", \"process\": \"postgres\"}]",
                    4, 16000));
    json_object_set_new(records, "app1",
                        site_record("app1",
                                    "[{\"name\": \"eth0\", \"addresses\": [\"10.1.1.9/24\"]}]",
                                    "[]", 1, 500));
    json_t *hosts = json_pack("[s, s, s, s]", "app1", "db1", "gone", "web1");
    json_t *bp = suggest_blueprint("m1", "aws", hosts, records, g_types);
    assert_blueprint_sound(bp, hosts, "aws");
    json_t *want = json_loads(
        "{\"network\": {\"name\": \"xm-m1\", \"cidr\": \"10.1.0.0/22\", \"subnets\": ["
        "  {\"name\": \"net-10-1-1-0-24\", \"cidr\": \"10.1.1.0/24\", \"public\": true},"
        "  {\"name\": \"net-10-1-2-0-24\", \"cidr\": \"10.1.2.0/24\", \"public\": false}]},"
        " \"hosts\": ["
        "  {\"host\": \"app1\", \"machine_type\": \"t3.nano\", \"subnet\": \"net-10-1-1-0-24\","
        "   \"public_ip\": false, \"disks\": [{\"device\": \"/dev/sda\"}]},"
        "  {\"host\": \"db1\", \"machine_type\": \"t3.xlarge\", \"subnet\": \"net-10-1-2-0-24\","
        "   \"public_ip\": false, \"disks\": [{\"device\": \"/dev/sda\"}]},"
        "  {\"host\": \"gone\", \"machine_type\": \"t3.nano\", \"subnet\": \"net-10-1-1-0-24\","
        "   \"public_ip\": false},"
        "  {\"host\": \"web1\", \"machine_type\": \"t3.medium\", \"subnet\": \"net-10-1-1-0-24\","
        "   \"public_ip\": true, \"disks\": [{\"device\": \"/dev/sda\"}]}],"
        " \"firewall\": ["
        "  {\"protocol\": \"tcp\", \"port\": 22, \"source\": \"10.1.0.0/22\","
        "   \"description\": \"sshd on web1, db1\"},"
        "  {\"protocol\": \"tcp\", \"port\": 443, \"source\": \"10.1.0.0/22\","
        "   \"description\": \"nginx on web1\"},"
        "  {\"protocol\": \"tcp\", \"port\": 5432, \"source\": \"10.1.0.0/22\","
        "   \"description\": \"postgres on db1\"}]}",
        0, NULL);
    assert_non_null(want);
    if (!json_equal(want, bp)) {
        char *g = json_dumps(bp, JSON_INDENT(1));
        fail_msg("suggested blueprint differs:\n%s", g);
    }
    json_decref(want);
    json_decref(bp);

    /* Nothing discovered: a default network, every host still placed. */
    json_t *none = json_object();
    bp = suggest_blueprint("m2", "gcp", hosts, none, g_types);
    assert_blueprint_sound(bp, hosts, "gcp");
    assert_string_equal(json_string_value(json_object_get(json_object_get(bp, "network"), "cidr")),
                        "10.0.0.0/16");
    json_decref(bp);
    json_decref(none);
    json_decref(hosts);
    json_decref(records);
}

/* ---------------------------------------------------------------- the decision, ipv4 */

static void test_summary_decide(void **state)
{
    (void)state;
    static const struct {
        const char *status;
        int auto_approve, blockers;
        const char *want;
        int network, suggest;
    } cases[] = {
        {"discovering", 0, 0, "awaiting_approval", 0, 1},
        {"discovering", 1, 0, "approved", 1, 1},
        {"discovering", 1, 2, "awaiting_approval", 0, 1},
        {"awaiting_approval", 1, 0, "approved", 1, 1}, /* a rediscovery cleared the blocker */
        {"awaiting_approval", 0, 3, "awaiting_approval", 0, 1},
        {"approved", 1, 0, NULL, 0, 0},
        {"migrating", 0, 1, NULL, 0, 0},
        {"cancelled", 1, 0, NULL, 0, 0},
        {NULL, 1, 0, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct summary_decision d;
        summary_decide(cases[i].status, cases[i].auto_approve, cases[i].blockers, &d);
        if (cases[i].want)
            assert_string_equal(d.status, cases[i].want);
        else
            assert_null(d.status);
        assert_int_equal(d.start_network, cases[i].network);
        assert_int_equal(d.suggest, cases[i].suggest);
    }
}

static void test_ipv4(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        int is_public;
    } cases[] = {{"8.8.8.8", 1},      {"52.16.20.30", 1}, {"10.0.0.1", 0},    {"172.16.0.1", 0},
                 {"172.31.255.1", 0}, {"172.32.0.1", 1},  {"192.168.1.1", 0}, {"100.64.0.1", 0},
                 {"100.128.0.1", 1},  {"127.0.0.1", 0},   {"169.254.1.1", 0}, {"224.0.0.1", 0},
                 {"203.0.113.9", 0},  {"0.1.2.3", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t a;
        assert_int_equal(ipv4_parse(cases[i].ip, &a), 0);
        if (ipv4_is_public(a) != cases[i].is_public)
            fail_msg("%s: public should be %d", cases[i].ip, cases[i].is_public);
    }
    uint32_t a;
    int len;
    const char *bad[] = {"10.0.0.1/33", "10.0.0/8", "10.0.0.1/", "10.0.0.1/8x", "", "a.b.c.d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ipv4_parse_cidr(bad[i], &a, &len), -1);
    assert_int_equal(ipv4_parse_cidr("10.1.2.3", &a, &len), 0);
    assert_int_equal(len, 32);
    char out[24];
    ipv4_format(0x0a010200u, 23, out, sizeof(out));
    assert_string_equal(out, "10.1.2.0/23");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_discovery FIXTURES_DIR SCHEMAS_DIR\n");
        return 2;
    }
    g_fixtures = argv[1];
    g_schemas_dir = argv[2];
    struct err err = {0};
    g_schemas = jsonschema_set_load_dir(g_schemas_dir, &err);
    g_types = g_schemas ? machine_types_load(g_schemas_dir, &err) : NULL;
    if (!g_types) {
        fprintf(stderr, "test_discovery: %s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_not_discovered),
        cmocka_unit_test(test_normalize_refuses),
        cmocka_unit_test(test_machine_types),
        cmocka_unit_test(test_suggest_all_fixtures),
        cmocka_unit_test(test_suggest_one_site),
        cmocka_unit_test(test_summary_decide),
        cmocka_unit_test(test_ipv4),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    jsonschema_set_free(g_schemas);
    json_decref(g_types);
    return rc;
}
