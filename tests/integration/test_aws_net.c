/*
 * cloud/aws/ec2net.c against moto_server with SigV4 checking on: the network phase run
 * twice creates nothing twice; the public subnet routes 0.0.0.0/0 to the internet
 * gateway and the private one keeps the main table; every resource carries our tags;
 * delete refuses while an instance lives, then removes one migration's network in
 * dependency order without touching another migration's or anything untagged, and runs
 * twice; errors name what failed and never carry the secret; the instance-type
 * suggestion returns a type that DescribeInstanceTypes says has the resources.
 *
 * Each test uses its own migration ids: moto cannot be reset between tests here, since
 * a reset would also forget the IAM user whose key signs the calls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws/aws.h"
#include "aws/ec2net.h"
#include "harness.h"
#include "xmalloc.h"

static struct moto moto;
static char log_path[256];

static int setup(void **state)
{
    (void)state;
    snprintf(log_path, sizeof(log_path), "/tmp/xm-moto-net-%d.log", (int)getpid());
    moto_start(&moto, 1, log_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    moto_stop(&moto);
    unlink(log_path);
    return 0;
}

static struct aws *client(const char *secret)
{
    struct aws_config cfg = {.access_key = moto.access_key,
                             .secret_key = secret ? secret : moto.secret_key,
                             .region = "us-east-1",
                             .endpoint = moto.endpoint,
                             .max_attempts = 2,
                             .backoff_base_ms = 10};
    struct err err = {0};
    struct aws *a = aws_new(&cfg, &err);
    assert_non_null(a);
    return a;
}

/* No error text may carry the secret. */
static void assert_clean(const struct err *err)
{
    assert_null(strstr(err->msg, moto.secret_key));
}

/* ---------------------------------------------------------------- reading EC2 */

/* An EC2 call the test itself makes (not the code under test): must succeed. */
static char *ec2(struct aws *a, const char *action, const char *const *params)
{
    struct err err = {0};
    char *xml = NULL;
    if (aws_ec2(a, action, params, &xml, &err) < 0)
        fail_msg("%s: %s", action, err.msg);
    return xml;
}

/* XPath over an EC2 reply, prefix e: for the reply's namespace (AWS ends it with '/',
 * moto does not); the result as a number (count(...)) or string (string(...)). */
static xmlXPathObject *xpath(const char *xml, const char *expr, xmlDoc **doc)
{
    *doc = xmlReadMemory(xml, (int)strlen(xml), NULL, NULL, XML_PARSE_NONET);
    assert_non_null(*doc);
    xmlNode *root = xmlDocGetRootElement(*doc);
    assert_true(root && root->ns && root->ns->href);
    xmlXPathContext *ctx = xmlXPathNewContext(*doc);
    xmlXPathRegisterNs(ctx, (const xmlChar *)"e", root->ns->href);
    xmlXPathObject *o = xmlXPathEvalExpression((const xmlChar *)expr, ctx);
    xmlXPathFreeContext(ctx);
    assert_non_null(o);
    return o;
}

static int xcount(const char *xml, const char *expr)
{
    xmlDoc *doc;
    xmlXPathObject *o = xpath(xml, expr, &doc);
    int n = (int)xmlXPathCastToNumber(o);
    xmlXPathFreeObject(o);
    xmlFreeDoc(doc);
    return n;
}

/* New string. */
static char *xstr(const char *xml, const char *expr)
{
    xmlDoc *doc;
    xmlXPathObject *o = xpath(xml, expr, &doc);
    xmlChar *s = xmlXPathCastToString(o);
    char *out = xstrdup((const char *)s);
    xmlFree(s);
    xmlXPathFreeObject(o);
    xmlFreeDoc(doc);
    return out;
}

struct kind {
    const char *describe, *item; /* item: XPath of one resource in the reply */
};

static const struct kind kinds[] = {
    {"DescribeVpcs", "//e:vpcSet/e:item"},
    {"DescribeSubnets", "//e:subnetSet/e:item"},
    {"DescribeInternetGateways", "//e:internetGatewaySet/e:item"},
    {"DescribeRouteTables", "//e:routeTableSet/e:item"},
    {"DescribeSecurityGroups", "//e:securityGroupInfo/e:item"},
};

/* How many resources of kind k carry xmigrate:migration=migration. */
static int count_tagged(struct aws *a, const struct kind *k, const char *migration)
{
    const char *params[] = {"Filter.1.Name", "tag:xmigrate:migration", "Filter.1.Value.1",
                            migration, NULL};
    char *xml = ec2(a, k->describe, params);
    char expr[128];
    snprintf(expr, sizeof(expr), "count(%s)", k->item);
    int n = xcount(xml, expr);
    free(xml);
    return n;
}

static int count_all_tagged(struct aws *a, const char *migration)
{
    int n = 0;
    for (size_t i = 0; i < XM_ARRAY_LEN(kinds); i++)
        n += count_tagged(a, &kinds[i], migration);
    return n;
}

/* The resource id carries our three tags with these values. */
static void assert_tags(struct aws *a, const char *id, const char *migration, const char *name)
{
    const char *params[] = {"Filter.1.Name", "resource-id", "Filter.1.Value.1", id, NULL};
    char *xml = ec2(a, "DescribeTags", params);
    char expr[256], display[256];
    snprintf(display, sizeof(display), "xmigrate-%s-%s", migration, name);
    const char *want[][2] = {
        {"xmigrate:migration", migration}, {"xmigrate:name", name}, {"Name", display}};
    for (size_t i = 0; i < XM_ARRAY_LEN(want); i++) {
        snprintf(expr, sizeof(expr), "string(//e:tagSet/e:item[e:key='%s']/e:value)", want[i][0]);
        char *v = xstr(xml, expr);
        if (strcmp(v, want[i][1]) != 0)
            fail_msg("%s: tag %s is '%s', want '%s'", id, want[i][0], v, want[i][1]);
        free(v);
    }
    free(xml);
}

/* ---------------------------------------------------------------- the blueprint */

static const struct ec2net_subnet two_subnets[] = {
    {.name = "web", .cidr = "10.20.1.0/24", .is_public = 1, .zone = "us-east-1a"},
    {.name = "db", .cidr = "10.20.2.0/24"},
};

static const struct ec2net_rule rules[] = {
    {.protocol = "tcp", .port = 22, .source = "10.0.0.0/8", .description = "ssh <office> ü"},
    {.protocol = "tcp", .port = 8000, .port_to = 8100, .source = "0.0.0.0/0", .description = "app"},
    {.protocol = "udp", .port = 53, .source = "10.20.0.0/16"},
    {.protocol = "icmp", .port = 0, .source = "10.0.0.0/8"},
    {.protocol = "tcp", .port = 22, .source = "10.0.0.0/8"},      /* the same as the first */
    {.protocol = "tcp", .port = 443, .source = "192.168.7.9/16"}, /* EC2 keeps 192.168.0.0 */
};
#define DISTINCT_RULES 5

static struct ec2net_spec spec_for(const char *migration)
{
    struct ec2net_spec s = {.migration = migration,
                            .name = "prod",
                            .cidr = "10.20.0.0/16",
                            .subnets = two_subnets,
                            .n_subnets = 2,
                            .rules = rules,
                            .n_rules = XM_ARRAY_LEN(rules)};
    return s;
}

static void ensure_ok(struct aws *a, const struct ec2net_spec *s, struct ec2net_result *r)
{
    struct err err = {0};
    if (ec2net_ensure(a, s, r, &err) < 0)
        fail_msg("ensure %s: %s", s->migration, err.msg);
}

static void delete_ok(struct aws *a, const char *migration, struct ec2net_deleted *d)
{
    struct err err = {0};
    if (ec2net_delete(a, migration, d, &err) < 0)
        fail_msg("delete %s: %s", migration, err.msg);
}

/* ---------------------------------------------------------------- tests */

static void test_ensure_twice_creates_once(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct ec2net_spec s = spec_for("mig-a");
    struct ec2net_result r1, r2;
    ensure_ok(a, &s, &r1);
    /* vpc, 2 subnets, igw + attach, rtb + route + 1 association, sg + 5 rules */
    assert_int_equal(r1.changes, 1 + 2 + 2 + 3 + 1 + DISTINCT_RULES);
    assert_int_equal(strncmp(r1.vpc_id, "vpc-", 4), 0);
    assert_int_equal(strncmp(r1.igw_id, "igw-", 4), 0);
    assert_int_equal(strncmp(r1.route_table_id, "rtb-", 4), 0);
    assert_int_equal(strncmp(r1.sg_id, "sg-", 3), 0);
    assert_int_equal(r1.n_subnets, 2);
    assert_string_equal(r1.subnets[0].name, "web");
    assert_string_equal(r1.subnets[1].name, "db");
    assert_int_equal(strncmp(r1.subnets[0].id, "subnet-", 7), 0);

    ensure_ok(a, &s, &r2);
    assert_int_equal(r2.changes, 0);
    assert_string_equal(r1.vpc_id, r2.vpc_id);
    assert_string_equal(r1.igw_id, r2.igw_id);
    assert_string_equal(r1.route_table_id, r2.route_table_id);
    assert_string_equal(r1.sg_id, r2.sg_id);
    assert_string_equal(r1.subnets[0].id, r2.subnets[0].id);
    assert_string_equal(r1.subnets[1].id, r2.subnets[1].id);

    /* One of each, by tag. */
    assert_int_equal(count_tagged(a, &kinds[0], "mig-a"), 1);
    assert_int_equal(count_tagged(a, &kinds[1], "mig-a"), 2);
    assert_int_equal(count_tagged(a, &kinds[2], "mig-a"), 1);
    assert_int_equal(count_tagged(a, &kinds[3], "mig-a"), 1);
    assert_int_equal(count_tagged(a, &kinds[4], "mig-a"), 1);

    /* Rules: each once, icmp as all types, the source normalized, egress untouched. */
    const char *sgp[] = {"GroupId.1", r1.sg_id, NULL};
    char *xml = ec2(a, "DescribeSecurityGroups", sgp);
    assert_int_equal(xcount(xml, "count(//e:ipPermissions/e:item/e:ipRanges/e:item)"),
                     DISTINCT_RULES);
    assert_int_equal(xcount(xml, "count(//e:ipPermissions/e:item[e:ipProtocol='tcp' and "
                                 "e:fromPort=8000 and e:toPort=8100])"),
                     1);
    assert_int_equal(xcount(xml, "count(//e:ipPermissions/e:item[e:ipProtocol='icmp' and "
                                 "e:fromPort=-1 and e:toPort=-1])"),
                     1);
    assert_int_equal(xcount(xml, "count(//e:ipPermissions//e:cidrIp[.='192.168.0.0/16'])"), 1);
    char *desc = xstr(xml, "string(//e:ipPermissions/e:item[e:fromPort=22]/e:ipRanges/e:item/"
                           "e:description)");
    assert_string_equal(desc, "ssh _office_ __"); /* EC2's alphabet only */
    free(desc);
    assert_int_equal(xcount(xml, "count(//e:ipPermissionsEgress/e:item)"), 1);
    char *name = xstr(xml, "string(//e:securityGroupInfo/e:item/e:groupName)");
    assert_string_equal(name, "xmigrate-mig-a");
    free(name);
    free(xml);

    /* The public subnet's table: ours, 0.0.0.0/0 -> our igw. */
    const char *pub[] = {"Filter.1.Name", "association.subnet-id", "Filter.1.Value.1",
                         r1.subnets[0].id, NULL};
    xml = ec2(a, "DescribeRouteTables", pub);
    assert_int_equal(xcount(xml, "count(//e:routeTableSet/e:item)"), 1);
    char *rtb = xstr(xml, "string(//e:routeTableSet/e:item/e:routeTableId)");
    assert_string_equal(rtb, r1.route_table_id);
    free(rtb);
    char *gw = xstr(xml, "string(//e:routeSet/e:item[e:destinationCidrBlock='0.0.0.0/0']/"
                         "e:gatewayId)");
    assert_string_equal(gw, r1.igw_id);
    free(gw);
    free(xml);
    /* The private one has no explicit table: it keeps the main one, which has no way out. */
    const char *priv[] = {"Filter.1.Name", "association.subnet-id", "Filter.1.Value.1",
                          r1.subnets[1].id, NULL};
    xml = ec2(a, "DescribeRouteTables", priv);
    assert_int_equal(xcount(xml, "count(//e:routeTableSet/e:item)"), 0);
    free(xml);
    const char *mainp[] = {"Filter.1.Name",    "vpc-id",        "Filter.1.Value.1",
                           r1.vpc_id,          "Filter.2.Name", "association.main",
                           "Filter.2.Value.1", "true",          NULL};
    xml = ec2(a, "DescribeRouteTables", mainp);
    assert_int_equal(xcount(xml, "count(//e:routeTableSet/e:item)"), 1);
    assert_int_equal(xcount(xml, "count(//e:routeSet/e:item[e:destinationCidrBlock="
                                 "'0.0.0.0/0'])"),
                     0);
    free(xml);

    /* The gateway is attached to our VPC; DNS is on. */
    const char *igwp[] = {"InternetGatewayId.1", r1.igw_id, NULL};
    xml = ec2(a, "DescribeInternetGateways", igwp);
    char *att = xstr(xml, "string(//e:attachmentSet/e:item/e:vpcId)");
    assert_string_equal(att, r1.vpc_id);
    free(att);
    free(xml);
    const char *dns[] = {"VpcId", r1.vpc_id, "Attribute", "enableDnsHostnames", NULL};
    xml = ec2(a, "DescribeVpcAttribute", dns);
    char *on = xstr(xml, "string(//e:enableDnsHostnames/e:value)");
    assert_string_equal(on, "true");
    free(on);
    free(xml);
    const char *az[] = {"SubnetId.1", r1.subnets[0].id, NULL};
    xml = ec2(a, "DescribeSubnets", az);
    char *zone = xstr(xml, "string(//e:subnetSet/e:item/e:availabilityZone)");
    assert_string_equal(zone, "us-east-1a");
    free(zone);
    free(xml);

    /* Tags on every resource. */
    assert_tags(a, r1.vpc_id, "mig-a", "prod");
    assert_tags(a, r1.subnets[0].id, "mig-a", "web");
    assert_tags(a, r1.subnets[1].id, "mig-a", "db");
    assert_tags(a, r1.igw_id, "mig-a", "prod");
    assert_tags(a, r1.route_table_id, "mig-a", "prod-public");
    assert_tags(a, r1.sg_id, "mig-a", "prod");

    delete_ok(a, "mig-a", NULL);
    aws_free(a);
}

/* A subnet made private gives the public table back; made public again, it gets it. */
static void test_public_flag_converges(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct ec2net_subnet subnets[] = {
        {.name = "web", .cidr = "10.20.1.0/24", .is_public = 1},
        {.name = "db", .cidr = "10.20.2.0/24"},
    };
    struct ec2net_spec s = spec_for("mig-b");
    s.subnets = subnets;
    s.n_rules = 0;
    struct ec2net_result r;
    ensure_ok(a, &s, &r);
    const char *q[] = {"Filter.1.Name", "association.subnet-id", "Filter.1.Value.1",
                       r.subnets[0].id, NULL};
    char *xml = ec2(a, "DescribeRouteTables", q);
    assert_int_equal(xcount(xml, "count(//e:routeTableSet/e:item)"), 1);
    free(xml);

    subnets[0].is_public = 0;
    ensure_ok(a, &s, &r);
    assert_int_equal(r.changes, 1); /* the disassociation */
    assert_string_equal(r.route_table_id, "");
    xml = ec2(a, "DescribeRouteTables", q);
    assert_int_equal(xcount(xml, "count(//e:routeTableSet/e:item)"), 0);
    free(xml);

    subnets[1].is_public = 1; /* now db, not web */
    ensure_ok(a, &s, &r);
    assert_int_equal(r.changes, 1); /* igw, table and route were there: one association */
    const char *q2[] = {"Filter.1.Name", "association.subnet-id", "Filter.1.Value.1",
                        r.subnets[1].id, NULL};
    xml = ec2(a, "DescribeRouteTables", q2);
    assert_int_equal(xcount(xml, "count(//e:routeTableSet/e:item)"), 1);
    free(xml);
    assert_int_equal(count_tagged(a, &kinds[3], "mig-b"), 1);
    assert_int_equal(count_tagged(a, &kinds[2], "mig-b"), 1);
    delete_ok(a, "mig-b", NULL);
    aws_free(a);
}

static void test_delete(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct ec2net_spec s1 = spec_for("mig-d1"), s2 = spec_for("mig-d2");
    struct ec2net_result r1, r2, again;
    ensure_ok(a, &s1, &r1);
    ensure_ok(a, &s2, &r2); /* the same names and CIDRs, another migration */
    assert_string_not_equal(r1.vpc_id, r2.vpc_id);

    /* Untagged, and tagged with a migration whose id starts like ours: never touched. */
    const char *plain[] = {"CidrBlock", "10.20.0.0/16", NULL};
    char *xml = ec2(a, "CreateVpc", plain);
    char *stranger = xstr(xml, "string(//e:vpc/e:vpcId)");
    free(xml);
    const char *alike[] = {"CidrBlock",
                           "10.20.0.0/16",
                           "TagSpecification.1.ResourceType",
                           "vpc",
                           "TagSpecification.1.Tag.1.Key",
                           "xmigrate:migration",
                           "TagSpecification.1.Tag.1.Value",
                           "mig-d10",
                           NULL};
    xml = ec2(a, "CreateVpc", alike);
    char *cousin = xstr(xml, "string(//e:vpc/e:vpcId)");
    free(xml);

    /* A live instance of the migration: refused, nothing deleted. */
    const char *run[] = {"ImageId",
                         "ami-12345678",
                         "MinCount",
                         "1",
                         "MaxCount",
                         "1",
                         "InstanceType",
                         "t3.micro",
                         "SubnetId",
                         r1.subnets[0].id,
                         "TagSpecification.1.ResourceType",
                         "instance",
                         "TagSpecification.1.Tag.1.Key",
                         "xmigrate:migration",
                         "TagSpecification.1.Tag.1.Value",
                         "mig-d1",
                         "TagSpecification.1.Tag.2.Key",
                         "xmigrate:host",
                         "TagSpecification.1.Tag.2.Value",
                         "web1",
                         NULL};
    xml = ec2(a, "RunInstances", run);
    char *instance = xstr(xml, "string(//e:instancesSet/e:item/e:instanceId)");
    free(xml);
    struct err err = {0};
    struct ec2net_deleted d;
    assert_int_equal(ec2net_delete(a, "mig-d1", &d, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "migration 'mig-d1' still has 1 instance ("));
    assert_non_null(strstr(err.msg, instance));
    assert_int_equal(d.vpcs + d.subnets + d.route_tables + d.internet_gateways, 0);
    assert_int_equal(count_all_tagged(a, "mig-d1"), 6);

    const char *term[] = {"InstanceId.1", instance, NULL};
    free(ec2(a, "TerminateInstances", term));
    delete_ok(a, "mig-d1", &d);
    assert_int_equal(d.associations, 1);
    assert_int_equal(d.route_tables, 1);
    assert_int_equal(d.internet_gateways, 1);
    assert_int_equal(d.security_groups, 1);
    assert_int_equal(d.subnets, 2);
    assert_int_equal(d.vpcs, 1);
    assert_int_equal(count_all_tagged(a, "mig-d1"), 0);

    /* Twice is fine and deletes nothing. */
    delete_ok(a, "mig-d1", &d);
    assert_int_equal(d.associations + d.route_tables + d.internet_gateways + d.security_groups +
                         d.subnets + d.vpcs,
                     0);

    /* The other migration is whole: its network is as it was. */
    assert_int_equal(count_all_tagged(a, "mig-d2"), 6);
    ensure_ok(a, &s2, &again);
    assert_int_equal(again.changes, 0);
    assert_string_equal(again.vpc_id, r2.vpc_id);
    assert_string_equal(again.subnets[0].id, r2.subnets[0].id);
    assert_string_equal(again.route_table_id, r2.route_table_id);
    const char *sgp[] = {"GroupId.1", r2.sg_id, NULL};
    xml = ec2(a, "DescribeSecurityGroups", sgp);
    assert_int_equal(xcount(xml, "count(//e:ipPermissions/e:item/e:ipRanges/e:item)"),
                     DISTINCT_RULES);
    free(xml);
    /* ... and so are the VPCs that are not ours. */
    const char *both[] = {"VpcId.1", stranger, "VpcId.2", cousin, NULL};
    xml = ec2(a, "DescribeVpcs", both);
    assert_int_equal(xcount(xml, "count(//e:vpcSet/e:item)"), 2);
    free(xml);

    delete_ok(a, "mig-d2", &d);
    assert_int_equal(d.vpcs, 1);
    assert_int_equal(count_all_tagged(a, "mig-d2"), 0);
    const char *v1[] = {"VpcId", stranger, NULL}, *v2[] = {"VpcId", cousin, NULL};
    free(ec2(a, "DeleteVpc", v1));
    free(ec2(a, "DeleteVpc", v2));
    free(stranger);
    free(cousin);
    free(instance);
    aws_free(a);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    const char *wrong = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGSECRET";
    struct aws *a = client(wrong);
    struct ec2net_spec s = spec_for("mig-w");
    struct ec2net_result r;
    struct err err = {0};
    assert_int_equal(ec2net_ensure(a, &s, &r, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "AWS rejected the credentials (AuthFailure)"));
    assert_non_null(strstr(err.msg, "ec2 DescribeVpcs 'prod' (10.20.0.0/16)"));
    assert_null(strstr(err.msg, "WRONGSECRET"));
    assert_int_equal(aws_last_attempts(a), 1);

    err_clear(&err);
    assert_int_equal(ec2net_delete(a, "mig-w", NULL, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "AWS rejected the credentials (AuthFailure)"));
    assert_null(strstr(err.msg, "WRONGSECRET"));

    char type[64];
    err_clear(&err);
    assert_int_equal(ec2net_suggest_type(a, 2, 4096, NULL, type, sizeof(type), &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "AWS rejected the credentials (AuthFailure)"));
    assert_null(strstr(err.msg, "WRONGSECRET"));
    aws_free(a);

    /* Nothing was created on the way. */
    a = client(NULL);
    assert_int_equal(count_all_tagged(a, "mig-w"), 0);
    aws_free(a);
}

/* Permanent input errors, before any call; each names what is wrong. */
static void expect_bad(struct aws *a, const struct ec2net_spec *s, const char *want)
{
    struct ec2net_result r;
    struct err err = {0};
    assert_int_equal(ec2net_ensure(a, s, &r, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    if (!strstr(err.msg, want))
        fail_msg("error '%s' does not say '%s'", err.msg, want);
    assert_clean(&err);
}

static void test_bad_input(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct ec2net_subnet sub[2] = {{.name = "web", .cidr = "10.20.1.0/24"},
                                   {.name = "db", .cidr = "10.20.2.0/24"}};
    struct ec2net_rule rule = {.protocol = "tcp", .port = 22, .source = "10.0.0.0/8"};
    struct ec2net_spec s = {.migration = "mig-v",
                            .name = "prod",
                            .cidr = "10.20.0.0/16",
                            .subnets = sub,
                            .n_subnets = 2,
                            .rules = &rule,
                            .n_rules = 1};

    s.migration = "mig v*";
    expect_bad(a, &s, "migration id 'mig v*'");
    s.migration = "mig-v";
    s.cidr = "10.20.0.0/8";
    expect_bad(a, &s, "network 'prod': 10.20.0.0/8: EC2 takes /16 to /28");
    s.cidr = "10.20.0.1/16";
    expect_bad(a, &s, "network 'prod': 10.20.0.1/16 has host bits set");
    s.cidr = "10.020.0.0/16";
    expect_bad(a, &s, "'10.020.0.0/16' is not an IPv4 CIDR");
    s.cidr = "10.20.0.0/16";
    sub[1].cidr = "10.21.2.0/24";
    expect_bad(a, &s, "subnet 'db': 10.21.2.0/24 is outside network 'prod' (10.20.0.0/16)");
    sub[1].cidr = "10.20.1.128/25";
    expect_bad(a, &s, "subnet 'db' (10.20.1.128/25) overlaps subnet 'web' (10.20.1.0/24)");
    sub[1].cidr = "10.20.2.0/24";
    sub[1].name = "web";
    expect_bad(a, &s, "subnet 'web' appears twice");
    sub[1].name = "DB";
    expect_bad(a, &s, "subnet 2 name 'DB'");
    sub[1].name = "db";
    sub[1].zone = "us east";
    expect_bad(a, &s, "subnet 'db': availability zone 'us east'");
    sub[1].zone = NULL;
    rule.port_to = 21;
    expect_bad(a, &s, "firewall rule 1: ports 22..21");
    rule.port_to = 0;
    rule.protocol = "sctp";
    expect_bad(a, &s, "firewall rule 1: protocol 'sctp'");
    rule.protocol = "tcp";
    rule.source = "everywhere";
    expect_bad(a, &s, "firewall rule 1: source 'everywhere'");
    rule.source = "10.0.0.0/8";
    s.n_subnets = 0;
    expect_bad(a, &s, "network 'prod': 0 subnets");

    struct err err = {0};
    assert_int_equal(ec2net_delete(a, "", NULL, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "migration id ''"));
    assert_int_equal(count_all_tagged(a, "mig-v"), 0);
    aws_free(a);
}

/* EC2's own refusals come back naming the step and the subject, with EC2's code. */
static void test_ec2_errors_name_what_failed(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    struct ec2net_subnet sub = {.name = "web", .cidr = "10.40.1.0/24", .is_public = 1};
    struct ec2net_spec s = {.migration = "mig-e",
                            .name = "edge",
                            .cidr = "10.40.0.0/16",
                            .subnets = &sub,
                            .n_subnets = 1};
    struct ec2net_result r;
    ensure_ok(a, &s, &r);

    /* Renamed in the blueprint: the old subnet still holds the block. */
    struct err err = {0};
    sub.name = "app";
    assert_int_equal(ec2net_ensure(a, &s, &r, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    if (!strstr(err.msg, "ec2 CreateSubnet 'app' (10.40.1.0/24): InvalidSubnet.Conflict: "))
        fail_msg("unexpected: %s", err.msg);
    assert_clean(&err);

    /* A CIDR cannot change under an existing subnet. */
    sub.name = "web";
    sub.cidr = "10.40.3.0/24";
    assert_int_equal(ec2net_ensure(a, &s, &r, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "subnet 'web' of migration 'mig-e' exists as subnet-"));
    assert_non_null(strstr(err.msg, "with CIDR '10.40.1.0/24', the blueprint says 10.40.3.0/24"));

    /* An availability zone EC2 does not have. */
    struct ec2net_subnet two[] = {{.name = "web", .cidr = "10.40.1.0/24", .is_public = 1},
                                  {.name = "far", .cidr = "10.40.9.0/24", .zone = "us-east-1z"}};
    s.subnets = two;
    s.n_subnets = 2;
    assert_int_equal(ec2net_ensure(a, &s, &r, &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    if (!strstr(err.msg, "ec2 CreateSubnet 'far' (10.40.9.0/24): InvalidParameterValue: "))
        fail_msg("unexpected: %s", err.msg);
    assert_true(r.subnets[0].id[0] != '\0'); /* it got that far */

    struct ec2net_deleted d;
    delete_ok(a, "mig-e", &d);
    assert_int_equal(d.subnets, 1);
    assert_int_equal(count_all_tagged(a, "mig-e"), 0);
    aws_free(a);
}

/* What DescribeInstanceTypes says about one type. */
static void check_type(struct aws *a, const char *type, const char *arch, int vcpus, long long mib)
{
    const char *q[] = {"InstanceType.1", type, NULL};
    char *xml = ec2(a, "DescribeInstanceTypes", q);
    char expr[256];
    assert_int_equal(xcount(xml, "count(//e:instanceTypeSet/e:item)"), 1);
    assert_true(xcount(xml, "number(//e:vCpuInfo/e:defaultVCpus)") >= vcpus);
    assert_true(xcount(xml, "number(//e:memoryInfo/e:sizeInMiB)") >= mib);
    /* Smallest: no more memory than asked where a type of exactly that size exists. */
    assert_int_equal(xcount(xml, "number(//e:memoryInfo/e:sizeInMiB)"), mib);
    char *cur = xstr(xml, "string(//e:currentGeneration)");
    assert_string_equal(cur, "true");
    free(cur);
    snprintf(expr, sizeof(expr), "count(//e:supportedArchitectures/e:item[.='%s'])", arch);
    assert_int_equal(xcount(xml, expr), 1);
    free(xml);
}

static void test_suggest_type(void **state)
{
    (void)state;
    struct aws *a = client(NULL);
    char type[64];
    struct err err = {0};
    assert_int_equal(ec2net_suggest_type(a, 2, 4096, NULL, type, sizeof(type), &err), 0);
    check_type(a, type, "x86_64", 2, 4096);
    char again[64];
    assert_int_equal(ec2net_suggest_type(a, 2, 4096, "amd64", again, sizeof(again), &err), 0);
    assert_string_equal(type, again); /* deterministic */

    assert_int_equal(ec2net_suggest_type(a, 1, 512, "x86_64", type, sizeof(type), &err), 0);
    check_type(a, type, "x86_64", 1, 512);

    assert_int_equal(ec2net_suggest_type(a, 2, 4096, "aarch64", type, sizeof(type), &err), 0);
    check_type(a, type, "arm64", 2, 4096);

    assert_int_equal(ec2net_suggest_type(a, 1024, 1, NULL, type, sizeof(type), &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_non_null(strstr(err.msg, "no current-generation x86_64 instance type"));
    assert_int_equal(ec2net_suggest_type(a, 2, 4096, "sparc", type, sizeof(type), &err), -1);
    assert_non_null(strstr(err.msg, "architecture 'sparc'"));
    assert_int_equal(ec2net_suggest_type(a, 0, 4096, NULL, type, sizeof(type), &err), -1);
    assert_int_equal(err.kind, ERR_PERMANENT);
    assert_int_equal(ec2net_suggest_type(a, 2, 4096, NULL, type, 3, &err), -1);
    assert_non_null(strstr(err.msg, "does not fit 3 bytes"));
    aws_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ensure_twice_creates_once),
        cmocka_unit_test(test_public_flag_converges),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_ec2_errors_name_what_failed),
        cmocka_unit_test(test_suggest_type),
    };
    return cmocka_run_group_tests_name("integration.aws_net", tests, setup, teardown);
}
