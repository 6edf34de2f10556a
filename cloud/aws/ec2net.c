#include "aws/ec2net.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws.h"
#include "xmalloc.h"

#define MIGRATION_MAX 128   /* job.json ident maxLength */
#define DESCRIPTION_MAX 200 /* blueprint.json firewall description maxLength */
#define ZONE_MAX 32
#define TYPE_PAGES_MAX 100 /* DescribeInstanceTypes pages of 100: AWS has under 1000 */

/* ---------------------------------------------------------------- parameters */

/* EC2 Query parameters: name, value, ..., NULL (what aws_ec2() takes); all owned. */
struct plist {
    char **v;
    size_t n;
};

static void pl_add(struct plist *p, const char *name, const char *value)
{
    p->v = xrealloc(p->v, sizeof(*p->v) * (p->n + 3));
    p->v[p->n++] = xstrdup(name);
    p->v[p->n++] = xstrdup(value);
    p->v[p->n] = NULL;
}

/* Add a parameter whose name is formatted ("Filter.2.Value.1"). */
static void pl_addf(struct plist *p, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void pl_addf(struct plist *p, const char *value, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    XM_ASSERT(n > 0 && (size_t)n < sizeof(name));
    pl_add(p, name, value);
}

static void pl_release(struct plist *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
    p->v = NULL;
    p->n = 0;
}

/* Filter.<i>.Name=name, Filter.<i>.Value.1=value. */
static void pl_filter(struct plist *p, int i, const char *name, const char *value)
{
    pl_addf(p, name, "Filter.%d.Name", i);
    pl_addf(p, value, "Filter.%d.Value.1", i);
}

/* The two filters every lookup starts with: ours, and (when name) which one. Returns the
 * next free filter number. */
static int pl_owner(struct plist *p, const char *migration, const char *name)
{
    pl_filter(p, 1, "tag:" EC2NET_TAG_MIGRATION, migration);
    if (!name)
        return 2;
    pl_filter(p, 2, "tag:" EC2NET_TAG_NAME, name);
    return 3;
}

/* Tags at creation: the resource never exists without them. */
static void pl_tags(struct plist *p, const char *type, const char *migration, const char *name)
{
    char *display = xasprintf("xmigrate-%s-%s", migration, name);
    pl_add(p, "TagSpecification.1.ResourceType", type);
    pl_add(p, "TagSpecification.1.Tag.1.Key", EC2NET_TAG_MIGRATION);
    pl_add(p, "TagSpecification.1.Tag.1.Value", migration);
    pl_add(p, "TagSpecification.1.Tag.2.Key", EC2NET_TAG_NAME);
    pl_add(p, "TagSpecification.1.Tag.2.Value", name);
    pl_add(p, "TagSpecification.1.Tag.3.Key", "Name");
    pl_add(p, "TagSpecification.1.Tag.3.Value", display);
    free(display);
}

/* ---------------------------------------------------------------- XML replies */

static xmlDoc *xml_read(const char *xml, size_t len)
{
    if (!len || len > INT32_MAX)
        return NULL;
    return xmlReadMemory(xml, (int)len, NULL, NULL,
                         XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                             XML_PARSE_NOWARNING);
}

/* First element child of n with that local name (namespaces ignored), or NULL. */
static xmlNode *child(xmlNode *n, const char *name)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0)
            return c;
    return NULL;
}

static xmlNode *next_item(xmlNode *n)
{
    for (n = n ? n->next : NULL; n; n = n->next)
        if (n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, "item") == 0)
            return n;
    return NULL;
}

/* First <item> of a <...Set> (NULL set: none). */
static xmlNode *first_item(xmlNode *set)
{
    return child(set, "item");
}

/* Text of n's child `name` into out; 0, or -1 (out "") when absent or too long. */
static int text(xmlNode *n, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    xmlNode *c = child(n, name);
    if (!c)
        return -1;
    xmlChar *t = xmlNodeGetContent(c);
    int rc = t && strlen((const char *)t) < size ? 0 : -1;
    if (rc == 0)
        xstrlcpy(out, (const char *)t, size);
    xmlFree(t);
    return rc;
}

/* Does the item's tagSet hold key=value? */
static int has_tag(xmlNode *item, const char *key, const char *value)
{
    for (xmlNode *t = first_item(child(item, "tagSet")); t; t = next_item(t)) {
        char k[128], v[260];
        if (text(t, "key", k, sizeof(k)) == 0 && text(t, "value", v, sizeof(v)) == 0 &&
            strcmp(k, key) == 0 && strcmp(v, value) == 0)
            return 1;
    }
    return 0;
}

/* Ours: tagged with the migration and, when name is given, that name. */
static int is_ours(xmlNode *item, const char *migration, const char *name)
{
    return has_tag(item, EC2NET_TAG_MIGRATION, migration) &&
           (!name || has_tag(item, EC2NET_TAG_NAME, name));
}

/* An EC2 id: prefix then lowercase hex, short enough for EC2NET_ID_MAX. */
static int valid_id(const char *id, const char *prefix)
{
    size_t p = strlen(prefix), n = strlen(id);
    if (n <= p || n >= EC2NET_ID_MAX || strncmp(id, prefix, p) != 0)
        return 0;
    for (const char *c = id + p; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return 1;
}

/* The child `field` of n as an id with prefix; 0, or -1 when absent or malformed. */
static int id_of(xmlNode *n, const char *field, const char *prefix, char out[EC2NET_ID_MAX])
{
    if (text(n, field, out, EC2NET_ID_MAX) < 0 || !valid_id(out, prefix)) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- calling EC2 */

/* aws_ec2() says "ec2 <Action>: ec2 POST /: <Code>: <message> (...)"; keep from <Code>. */
static const char *aws_detail(const char *msg, const char *action)
{
    char head[96];
    snprintf(head, sizeof(head), "ec2 %s: ", action);
    if (strncmp(msg, head, strlen(head)) == 0)
        msg += strlen(head);
    static const char *const noise[] = {"ec2 POST /: ", "ec2 POST: "};
    for (size_t i = 0; i < XM_ARRAY_LEN(noise); i++)
        if (strncmp(msg, noise[i], strlen(noise[i])) == 0)
            return msg + strlen(noise[i]);
    return msg;
}

/*
 * One EC2 action with p's parameters. what names the subject in errors ("'web'
 * (10.0.1.0/24)"), or NULL. With doc, *doc is the parsed reply (new: xmlFreeDoc). On -1
 * aws_last_code() still tells the AWS error code, for callers that tolerate some.
 */
static int ec2_call(struct aws *a, const char *action, const char *what, const struct plist *p,
                    xmlDoc **doc, struct err *err)
{
    char *xml = NULL;
    struct err e = {0};
    const char *sp = what ? " " : "", *w = what ? what : "";
    if (doc)
        *doc = NULL;
    if (aws_ec2(a, action, (const char *const *)p->v, &xml, &e) < 0)
        return err_set(err, e.kind, "ec2 %s%s%s: %s", action, sp, w, aws_detail(e.msg, action));
    int rc = 0;
    if (doc) {
        *doc = xml_read(xml, strlen(xml));
        if (!*doc)
            rc = err_set(err, ERR_TRANSIENT, "ec2 %s%s%s: the reply is not XML", action, sp, w);
    }
    free(xml);
    return rc;
}

static int code_is(const struct aws *a, const char *code)
{
    return strcmp(aws_last_code(a), code) == 0;
}

/* "Invalid<Thing>ID.NotFound", "InvalidGroup.NotFound", ...: already gone. */
static int code_not_found(const struct aws *a)
{
    const char *c = aws_last_code(a);
    size_t n = strlen(c);
    return n > 9 && strcmp(c + n - 9, ".NotFound") == 0;
}

static int bad_reply(struct err *err, const char *action, const char *what)
{
    return err_set(err, ERR_TRANSIENT, "ec2 %s %s: unexpected reply (no valid id)", action, what);
}

/* ---------------------------------------------------------------- validation */

/* job.json definitions.ident; also keeps tag filter values free of the '*' and '?'
 * wildcards, so "mig-1" never matches "mig-10". */
static int check_migration(const char *m, struct err *err)
{
    size_t n = m ? strlen(m) : 0;
    int ok = n > 0 && n <= MIGRATION_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (m[i] >= 'A' && m[i] <= 'Z') || (m[i] >= 'a' && m[i] <= 'z') ||
             (m[i] >= '0' && m[i] <= '9') || strchr("._:-", m[i]);
    if (!ok)
        return err_set(err, ERR_PERMANENT,
                       "ec2net: migration id '%.140s' is not 1..%d of [A-Za-z0-9._:-]",
                       m ? m : "(none)", MIGRATION_MAX);
    return 0;
}

/* blueprint.json definitions.name */
static int valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > EC2NET_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

static int valid_zone(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > ZONE_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

struct cidr {
    uint32_t addr;
    int len;
};

/* Decimal 0..max without sign or leading zero; advances *s. */
static int parse_num(const char **s, long max, long *out)
{
    const char *p = *s;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
        return -1;
    long v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');
        if (v > max)
            return -1;
    }
    *s = p;
    *out = v;
    return 0;
}

/* Strict a.b.c.d/n (blueprint.json definitions.cidr). */
static int parse_cidr(const char *s, struct cidr *c)
{
    if (!s)
        return -1;
    uint32_t addr = 0;
    long v;
    for (int i = 0; i < 4; i++) {
        if (parse_num(&s, 255, &v) < 0 || *s++ != (i < 3 ? '.' : '/'))
            return -1;
        addr = addr << 8 | (uint32_t)v;
    }
    if (parse_num(&s, 32, &v) < 0 || *s)
        return -1;
    c->addr = addr;
    c->len = (int)v;
    return 0;
}

static uint32_t mask_of(int len)
{
    return len == 0 ? 0 : 0xffffffffu << (32 - len);
}

static void cidr_str(const struct cidr *c, char out[20])
{
    snprintf(out, 20, "%u.%u.%u.%u/%d", c->addr >> 24, c->addr >> 16 & 255, c->addr >> 8 & 255,
             c->addr & 255, c->len);
}

/* a inside b (or equal) */
static int cidr_within(const struct cidr *a, const struct cidr *b)
{
    return a->len >= b->len && (a->addr & mask_of(b->len)) == b->addr;
}

/* A VPC or subnet block: /16../28 (EC2's limits) and no host bits (EC2 refuses them). */
static int check_block(const char *what, const char *name, const char *s, struct cidr *c,
                       struct err *err)
{
    if (parse_cidr(s, c) < 0)
        return err_set(err, ERR_PERMANENT, "%s '%s': '%s' is not an IPv4 CIDR", what, name,
                       s ? s : "(none)");
    if (c->len < 16 || c->len > 28)
        return err_set(err, ERR_PERMANENT, "%s '%s': %s: EC2 takes /16 to /28", what, name, s);
    if (c->addr & ~mask_of(c->len))
        return err_set(err, ERR_PERMANENT, "%s '%s': %s has host bits set", what, name, s);
    return 0;
}

/* A firewall rule as EC2 stores it: the key ensure compares. */
struct perm {
    char proto[8];
    int from, to;
    char cidr[20];
};

static const char *const protocols[] = {"tcp", "udp", "icmp"};

static int rule_to_perm(const struct ec2net_rule *r, size_t i, struct perm *p, struct err *err)
{
    size_t k = 0;
    while (k < XM_ARRAY_LEN(protocols) && !(r->protocol && strcmp(r->protocol, protocols[k]) == 0))
        k++;
    if (k == XM_ARRAY_LEN(protocols))
        return err_set(err, ERR_PERMANENT,
                       "firewall rule %zu: protocol '%s' is not tcp, udp or icmp", i + 1,
                       r->protocol ? r->protocol : "(none)");
    xstrlcpy(p->proto, protocols[k], sizeof(p->proto));
    if (strcmp(p->proto, "icmp") == 0) {
        p->from = p->to = -1;
    } else {
        if (r->port < 0 || r->port > 65535 || r->port_to < 0 || r->port_to > 65535 ||
            (r->port_to && r->port_to < r->port))
            return err_set(err, ERR_PERMANENT,
                           "firewall rule %zu: ports %d..%d are not a range within 0..65535", i + 1,
                           r->port, r->port_to);
        p->from = r->port;
        p->to = r->port_to ? r->port_to : r->port;
    }
    struct cidr c;
    if (parse_cidr(r->source, &c) < 0)
        return err_set(err, ERR_PERMANENT, "firewall rule %zu: source '%s' is not an IPv4 CIDR",
                       i + 1, r->source ? r->source : "(none)");
    c.addr &= mask_of(c.len); /* 10.1.2.3/16 means 10.1.0.0/16, and EC2 stores it so */
    cidr_str(&c, p->cidr);
    if (r->description && strlen(r->description) > DESCRIPTION_MAX)
        return err_set(err, ERR_PERMANENT, "firewall rule %zu: description over %d bytes", i + 1,
                       DESCRIPTION_MAX);
    return 0;
}

static int perm_equal(const struct perm *a, const struct perm *b)
{
    return strcmp(a->proto, b->proto) == 0 && a->from == b->from && a->to == b->to &&
           strcmp(a->cidr, b->cidr) == 0;
}

static void perm_str(const struct perm *p, char *out, size_t size)
{
    if (p->from < 0)
        snprintf(out, size, "%s from %s", p->proto, p->cidr);
    else if (p->from == p->to)
        snprintf(out, size, "%s %d from %s", p->proto, p->from, p->cidr);
    else
        snprintf(out, size, "%s %d-%d from %s", p->proto, p->from, p->to, p->cidr);
}

/* EC2 accepts a-zA-Z0-9, space and ._-:/()#,@[]+=&;{}!$* in rule descriptions. */
static char *description_clean(const char *s)
{
    char *out = xstrdup(s ? s : "");
    for (char *c = out; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              (*c && strchr(" ._-:/()#,@[]+=&;{}!$*", *c))))
            *c = '_';
    return out;
}

static int check_spec(const struct ec2net_spec *s, struct perm *perms, struct err *err)
{
    if (check_migration(s->migration, err) < 0)
        return -1;
    if (!valid_name(s->name))
        return err_set(err, ERR_PERMANENT, "ec2net: network name '%.80s' is not a blueprint name",
                       s->name ? s->name : "(none)");
    struct cidr net;
    if (check_block("network", s->name, s->cidr, &net, err) < 0)
        return -1;
    if (s->n_subnets < 1 || s->n_subnets > EC2NET_MAX_SUBNETS || !s->subnets)
        return err_set(err, ERR_PERMANENT, "network '%s': %zu subnets (1..%d)", s->name,
                       s->n_subnets, EC2NET_MAX_SUBNETS);
    struct cidr blocks[EC2NET_MAX_SUBNETS];
    for (size_t i = 0; i < s->n_subnets; i++) {
        const struct ec2net_subnet *sn = &s->subnets[i];
        if (!valid_name(sn->name))
            return err_set(err, ERR_PERMANENT,
                           "network '%s': subnet %zu name '%.80s' is not a blueprint name", s->name,
                           i + 1, sn->name ? sn->name : "(none)");
        if (check_block("subnet", sn->name, sn->cidr, &blocks[i], err) < 0)
            return -1;
        if (!cidr_within(&blocks[i], &net))
            return err_set(err, ERR_PERMANENT, "subnet '%s': %s is outside network '%s' (%s)",
                           sn->name, sn->cidr, s->name, s->cidr);
        if (sn->zone && !valid_zone(sn->zone))
            return err_set(err, ERR_PERMANENT,
                           "subnet '%s': availability zone '%.40s' is not a zone name", sn->name,
                           sn->zone);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s->subnets[j].name, sn->name) == 0)
                return err_set(err, ERR_PERMANENT, "network '%s': subnet '%s' appears twice",
                               s->name, sn->name);
            if (cidr_within(&blocks[i], &blocks[j]) || cidr_within(&blocks[j], &blocks[i]))
                return err_set(err, ERR_PERMANENT, "subnet '%s' (%s) overlaps subnet '%s' (%s)",
                               sn->name, sn->cidr, s->subnets[j].name, s->subnets[j].cidr);
        }
    }
    if (s->n_rules > EC2NET_MAX_RULES || (s->n_rules && !s->rules))
        return err_set(err, ERR_PERMANENT, "network '%s': %zu firewall rules (at most %d)", s->name,
                       s->n_rules, EC2NET_MAX_RULES);
    for (size_t i = 0; i < s->n_rules; i++)
        if (rule_to_perm(&s->rules[i], i, &perms[i], err) < 0)
            return -1;
    return 0;
}

/* ---------------------------------------------------------------- lookups */

/*
 * Describe<Thing>s filtered to ours (migration, name when not NULL, vpc when not NULL),
 * and pick the item whose id (child id_field, prefix) is smallest among those whose tags
 * really say ours. 0 with *doc (new) and *item (in *doc, or NULL when none) and id; -1
 * with err.
 */
static int lookup(struct aws *a, const char *action, const char *set, const char *id_field,
                  const char *prefix, const char *migration, const char *name, const char *vpc,
                  const char *what, xmlDoc **doc, xmlNode **item, char id[EC2NET_ID_MAX],
                  struct err *err)
{
    struct plist p = {0};
    int f = pl_owner(&p, migration, name);
    if (vpc)
        pl_filter(&p, f, "vpc-id", vpc);
    int rc = ec2_call(a, action, what, &p, doc, err);
    pl_release(&p);
    *item = NULL;
    id[0] = '\0';
    if (rc < 0)
        return -1;
    char cand[EC2NET_ID_MAX];
    for (xmlNode *it = first_item(child(xmlDocGetRootElement(*doc), set)); it; it = next_item(it)) {
        if (!is_ours(it, migration, name) || id_of(it, id_field, prefix, cand) < 0)
            continue;
        if (vpc) {
            char v[EC2NET_ID_MAX];
            if (text(it, "vpcId", v, sizeof(v)) < 0 || strcmp(v, vpc) != 0)
                continue;
        }
        if (!*item || strcmp(cand, id) < 0) {
            *item = it;
            xstrlcpy(id, cand, EC2NET_ID_MAX);
        }
    }
    return 0;
}

/* Create<Thing>: 0 with the new id (reply child path "node/field" or "field"). */
static int create(struct aws *a, const char *action, const char *what, const struct plist *p,
                  const char *node, const char *field, const char *prefix, char id[EC2NET_ID_MAX],
                  struct err *err)
{
    xmlDoc *doc;
    if (ec2_call(a, action, what, p, &doc, err) < 0)
        return -1;
    xmlNode *n = xmlDocGetRootElement(doc);
    if (node)
        n = child(n, node);
    int rc = id_of(n, field, prefix, id) < 0 ? bad_reply(err, action, what) : 0;
    xmlFreeDoc(doc);
    return rc;
}

/* ---------------------------------------------------------------- ensure */

struct ensure {
    struct aws *a;
    const struct ec2net_spec *s;
    struct ec2net_result *out;
    char what[200]; /* the subject of the step, for errors */
};

static int ensure_vpc(struct ensure *e, struct err *err)
{
    const struct ec2net_spec *s = e->s;
    snprintf(e->what, sizeof(e->what), "'%s' (%s)", s->name, s->cidr);
    xmlDoc *doc;
    xmlNode *it;
    if (lookup(e->a, "DescribeVpcs", "vpcSet", "vpcId", "vpc-", s->migration, s->name, NULL,
               e->what, &doc, &it, e->out->vpc_id, err) < 0)
        return -1;
    int rc = 0;
    if (it) {
        char cidr[32];
        text(it, "cidrBlock", cidr, sizeof(cidr));
        if (strcmp(cidr, s->cidr) != 0)
            rc = err_set(err, ERR_PERMANENT,
                         "network '%s' of migration '%s' exists as %s with CIDR '%s', the "
                         "blueprint says %s: a CIDR cannot change",
                         s->name, s->migration, e->out->vpc_id, cidr, s->cidr);
    } else {
        struct plist p = {0};
        pl_add(&p, "CidrBlock", s->cidr);
        pl_tags(&p, "vpc", s->migration, s->name);
        rc = create(e->a, "CreateVpc", e->what, &p, "vpc", "vpcId", "vpc-", e->out->vpc_id, err);
        pl_release(&p);
        e->out->changes += rc == 0;
    }
    xmlFreeDoc(doc);
    if (rc < 0)
        return -1;
    /* Cheap and idempotent: also repairs a run that died between CreateVpc and here. */
    static const char *const attrs[] = {"EnableDnsSupport.Value", "EnableDnsHostnames.Value"};
    for (size_t i = 0; i < XM_ARRAY_LEN(attrs); i++) {
        struct plist p = {0};
        pl_add(&p, "VpcId", e->out->vpc_id);
        pl_add(&p, attrs[i], "true");
        snprintf(e->what, sizeof(e->what), "'%s' (%s)", s->name, e->out->vpc_id);
        rc = ec2_call(e->a, "ModifyVpcAttribute", e->what, &p, NULL, err);
        pl_release(&p);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Find subnet name in the VPC: 0 with id ("" when none); the CIDR must match. */
static int find_subnet(struct ensure *e, const struct ec2net_subnet *sn, char id[EC2NET_ID_MAX],
                       struct err *err)
{
    xmlDoc *doc;
    xmlNode *it;
    if (lookup(e->a, "DescribeSubnets", "subnetSet", "subnetId", "subnet-", e->s->migration,
               sn->name, e->out->vpc_id, e->what, &doc, &it, id, err) < 0)
        return -1;
    int rc = 0;
    char cidr[32] = "";
    if (it)
        text(it, "cidrBlock", cidr, sizeof(cidr));
    if (it && strcmp(cidr, sn->cidr) != 0)
        rc = err_set(err, ERR_PERMANENT,
                     "subnet '%s' of migration '%s' exists as %s with CIDR '%s', the blueprint "
                     "says %s: a CIDR cannot change",
                     sn->name, e->s->migration, id, cidr, sn->cidr);
    xmlFreeDoc(doc);
    return rc;
}

static int ensure_subnet(struct ensure *e, size_t i, struct err *err)
{
    const struct ec2net_subnet *sn = &e->s->subnets[i];
    char *id = e->out->subnets[i].id;
    xstrlcpy(e->out->subnets[i].name, sn->name, sizeof(e->out->subnets[i].name));
    snprintf(e->what, sizeof(e->what), "'%s' (%s)", sn->name, sn->cidr);
    if (find_subnet(e, sn, id, err) < 0)
        return -1;
    if (id[0])
        return 0;
    struct plist p = {0};
    pl_add(&p, "VpcId", e->out->vpc_id);
    pl_add(&p, "CidrBlock", sn->cidr);
    if (sn->zone)
        pl_add(&p, "AvailabilityZone", sn->zone);
    pl_tags(&p, "subnet", e->s->migration, sn->name);
    int rc = create(e->a, "CreateSubnet", e->what, &p, "subnet", "subnetId", "subnet-", id, err);
    pl_release(&p);
    if (rc < 0 && code_is(e->a, "InvalidSubnet.Conflict")) {
        /* Another worker made it just now? Then it is ours and tagged; else the error. */
        struct err again = {0};
        if (find_subnet(e, sn, id, &again) == 0 && id[0])
            return 0;
    }
    e->out->changes += rc == 0;
    return rc;
}

static int ensure_igw(struct ensure *e, struct err *err)
{
    const struct ec2net_spec *s = e->s;
    char *igw = e->out->igw_id;
    snprintf(e->what, sizeof(e->what), "'%s'", s->name);
    xmlDoc *doc;
    xmlNode *it;
    if (lookup(e->a, "DescribeInternetGateways", "internetGatewaySet", "internetGatewayId", "igw-",
               s->migration, s->name, NULL, e->what, &doc, &it, igw, err) < 0)
        return -1;
    int attached = 0, rc = 0;
    for (xmlNode *at = first_item(child(it, "attachmentSet")); at; at = next_item(at)) {
        char vpc[EC2NET_ID_MAX];
        if (text(at, "vpcId", vpc, sizeof(vpc)) < 0)
            continue;
        if (strcmp(vpc, e->out->vpc_id) == 0)
            attached = 1;
        else
            rc = err_set(
                err, ERR_PERMANENT,
                "internet gateway %s of migration '%s' is attached to %s, not to network '%s' (%s)",
                igw, s->migration, vpc, s->name, e->out->vpc_id);
    }
    xmlFreeDoc(doc);
    if (rc < 0)
        return -1;
    if (!it) {
        struct plist p = {0};
        pl_tags(&p, "internet-gateway", s->migration, s->name);
        rc = create(e->a, "CreateInternetGateway", e->what, &p, "internetGateway",
                    "internetGatewayId", "igw-", igw, err);
        pl_release(&p);
        if (rc < 0)
            return -1;
        e->out->changes++;
    }
    if (attached)
        return 0;
    struct plist p = {0};
    pl_add(&p, "InternetGatewayId", igw);
    pl_add(&p, "VpcId", e->out->vpc_id);
    snprintf(e->what, sizeof(e->what), "%s to '%s' (%s)", igw, s->name, e->out->vpc_id);
    rc = ec2_call(e->a, "AttachInternetGateway", e->what, &p, NULL, err);
    pl_release(&p);
    if (rc < 0 && !code_is(e->a, "Resource.AlreadyAssociated")) /* a racing worker did it */
        return -1;
    e->out->changes += rc == 0;
    return 0;
}

static const struct ec2net_subnet *spec_subnet_of(const struct ensure *e, const char *id,
                                                  size_t *index)
{
    for (size_t i = 0; i < e->s->n_subnets; i++)
        if (strcmp(e->out->subnets[i].id, id) == 0) {
            *index = i;
            return &e->s->subnets[i];
        }
    return NULL;
}

/* The public route table: 0.0.0.0/0 -> IGW, associated with exactly the public subnets
 * of the spec (a subnet that turned private is given back to the main table). */
static int ensure_routes(struct ensure *e, int any_public, struct err *err)
{
    const struct ec2net_spec *s = e->s;
    char *rtb = e->out->route_table_id;
    char *rt_name = xasprintf("%s-public", s->name);
    xmlDoc *doc = NULL;
    xmlNode *it;
    struct plist p = {0};
    int rc = -1;
    snprintf(e->what, sizeof(e->what), "'%s'", rt_name);
    if (lookup(e->a, "DescribeRouteTables", "routeTableSet", "routeTableId", "rtb-", s->migration,
               rt_name, e->out->vpc_id, e->what, &doc, &it, rtb, err) < 0)
        goto out;
    if (!it && !any_public) {
        rc = 0;
        goto out;
    }
    if (!it) {
        pl_add(&p, "VpcId", e->out->vpc_id);
        pl_tags(&p, "route-table", s->migration, rt_name);
        if (create(e->a, "CreateRouteTable", e->what, &p, "routeTable", "routeTableId", "rtb-", rtb,
                   err) < 0)
            goto out;
        pl_release(&p);
        e->out->changes++;
    }

    /* Private subnets first: never leave one with a way out it should not have. */
    int assoc[EC2NET_MAX_SUBNETS] = {0};
    for (xmlNode *as = first_item(child(it, "associationSet")); as; as = next_item(as)) {
        char sub[EC2NET_ID_MAX], aid[EC2NET_ID_MAX];
        size_t i;
        if (text(as, "subnetId", sub, sizeof(sub)) < 0)
            continue;
        const struct ec2net_subnet *sn = spec_subnet_of(e, sub, &i);
        if (!sn)
            continue;
        if (sn->is_public) {
            assoc[i] = 1;
            continue;
        }
        if (id_of(as, "routeTableAssociationId", "rtbassoc-", aid) < 0)
            continue;
        pl_add(&p, "AssociationId", aid);
        snprintf(e->what, sizeof(e->what), "'%s' (%s) from %s", sn->name, sub, rtb);
        int r = ec2_call(e->a, "DisassociateRouteTable", e->what, &p, NULL, err);
        pl_release(&p);
        if (r < 0 && !code_not_found(e->a))
            goto out;
        e->out->changes += r == 0;
    }
    if (!any_public) {
        /* The table stays (ec2net_delete removes it); it reaches no subnet now. */
        rtb[0] = '\0';
        rc = 0;
        goto out;
    }

    int routed = 0;
    char gw[EC2NET_ID_MAX] = "";
    for (xmlNode *r = first_item(child(it, "routeSet")); r; r = next_item(r)) {
        char dest[32];
        if (text(r, "destinationCidrBlock", dest, sizeof(dest)) == 0 &&
            strcmp(dest, "0.0.0.0/0") == 0) {
            routed = 1;
            text(r, "gatewayId", gw, sizeof(gw));
        }
    }
    if (!routed || strcmp(gw, e->out->igw_id) != 0) {
        /* A route to an old gateway (a blackhole) is pointed at ours. */
        const char *action = routed ? "ReplaceRoute" : "CreateRoute";
        pl_add(&p, "RouteTableId", rtb);
        pl_add(&p, "DestinationCidrBlock", "0.0.0.0/0");
        pl_add(&p, "GatewayId", e->out->igw_id);
        snprintf(e->what, sizeof(e->what), "0.0.0.0/0 via %s in %s", e->out->igw_id, rtb);
        int r = ec2_call(e->a, action, e->what, &p, NULL, err);
        pl_release(&p);
        if (r < 0 && !code_is(e->a, "RouteAlreadyExists"))
            goto out;
        e->out->changes += r == 0;
    }

    for (size_t i = 0; i < s->n_subnets; i++) {
        if (!s->subnets[i].is_public || assoc[i])
            continue;
        pl_add(&p, "RouteTableId", rtb);
        pl_add(&p, "SubnetId", e->out->subnets[i].id);
        snprintf(e->what, sizeof(e->what), "%s with subnet '%s' (%s)", rtb, s->subnets[i].name,
                 e->out->subnets[i].id);
        int r = ec2_call(e->a, "AssociateRouteTable", e->what, &p, NULL, err);
        pl_release(&p);
        if (r < 0)
            goto out;
        e->out->changes++;
    }
    rc = 0;
out:
    pl_release(&p);
    xmlFreeDoc(doc);
    free(rt_name);
    return rc;
}

/* The rules EC2 has on the group (ingress, IPv4 ranges), as perms; new array. */
static struct perm *present_perms(xmlNode *group, size_t *n)
{
    struct perm *v = NULL;
    *n = 0;
    for (xmlNode *ip = first_item(child(group, "ipPermissions")); ip; ip = next_item(ip)) {
        struct perm p = {.from = -1, .to = -1};
        char num[16];
        if (text(ip, "ipProtocol", p.proto, sizeof(p.proto)) < 0)
            continue;
        static const char *const numbers[][2] = {{"6", "tcp"}, {"17", "udp"}, {"1", "icmp"}};
        for (size_t k = 0; k < XM_ARRAY_LEN(numbers); k++)
            if (strcmp(p.proto, numbers[k][0]) == 0)
                xstrlcpy(p.proto, numbers[k][1], sizeof(p.proto));
        if (text(ip, "fromPort", num, sizeof(num)) == 0)
            p.from = (int)strtol(num, NULL, 10);
        if (text(ip, "toPort", num, sizeof(num)) == 0)
            p.to = (int)strtol(num, NULL, 10);
        for (xmlNode *r = first_item(child(ip, "ipRanges")); r; r = next_item(r)) {
            if (text(r, "cidrIp", p.cidr, sizeof(p.cidr)) < 0)
                continue;
            v = xrealloc(v, sizeof(*v) * (*n + 1));
            v[(*n)++] = p;
        }
    }
    return v;
}

/* IpPermissions.<k>.* for rule i. */
static void pl_perm(struct plist *p, int k, const struct perm *pm, const struct ec2net_rule *r)
{
    char num[16];
    pl_addf(p, pm->proto, "IpPermissions.%d.IpProtocol", k);
    snprintf(num, sizeof(num), "%d", pm->from);
    pl_addf(p, num, "IpPermissions.%d.FromPort", k);
    snprintf(num, sizeof(num), "%d", pm->to);
    pl_addf(p, num, "IpPermissions.%d.ToPort", k);
    pl_addf(p, pm->cidr, "IpPermissions.%d.IpRanges.1.CidrIp", k);
    if (r->description && r->description[0]) {
        char *d = description_clean(r->description);
        pl_addf(p, d, "IpPermissions.%d.IpRanges.1.Description", k);
        free(d);
    }
}

static int find_sg(struct ensure *e, xmlDoc **doc, xmlNode **it, struct err *err)
{
    return lookup(e->a, "DescribeSecurityGroups", "securityGroupInfo", "groupId", "sg-",
                  e->s->migration, e->s->name, e->out->vpc_id, e->what, doc, it, e->out->sg_id,
                  err);
}

static int ensure_sg(struct ensure *e, const struct perm *perms, struct err *err)
{
    const struct ec2net_spec *s = e->s;
    char *sg = e->out->sg_id;
    char *group_name = xasprintf("xmigrate-%s", s->migration);
    xmlDoc *doc = NULL;
    xmlNode *it;
    struct plist p = {0};
    struct perm *have = NULL;
    size_t n_have = 0;
    int rc = -1;
    snprintf(e->what, sizeof(e->what), "'%s'", group_name);
    if (find_sg(e, &doc, &it, err) < 0)
        goto out;
    if (!it) {
        pl_add(&p, "GroupName", group_name);
        char *desc = xasprintf("xmigrate migration %s network %s", s->migration, s->name);
        pl_add(&p, "GroupDescription", desc);
        free(desc);
        pl_add(&p, "VpcId", e->out->vpc_id);
        pl_tags(&p, "security-group", s->migration, s->name);
        struct err cerr = {0};
        int r = create(e->a, "CreateSecurityGroup", e->what, &p, NULL, "groupId", "sg-", sg, &cerr);
        pl_release(&p);
        if (r == 0) {
            e->out->changes++;
        } else {
            /* Raced with another worker? Then it is there now, tagged ours. A group of that
             * name without our tags is someone else's: the error stands. */
            if (code_is(e->a, "InvalidGroup.Duplicate")) {
                xmlFreeDoc(doc);
                if (find_sg(e, &doc, &it, err) < 0)
                    goto out;
            }
            if (!it) {
                if (err)
                    *err = cerr;
                goto out;
            }
        }
    }

    if (it)
        have = present_perms(it, &n_have);
    /* The rules still missing (each once), authorized in one call. */
    size_t missing[EC2NET_MAX_RULES], n_missing = 0;
    for (size_t i = 0; i < s->n_rules; i++) {
        int known = 0;
        for (size_t j = 0; j < n_have && !known; j++)
            known = perm_equal(&perms[i], &have[j]);
        for (size_t j = 0; j < n_missing && !known; j++)
            known = perm_equal(&perms[i], &perms[missing[j]]);
        if (!known)
            missing[n_missing++] = i;
    }
    if (n_missing == 0) {
        rc = 0;
        goto out;
    }
    pl_add(&p, "GroupId", sg);
    for (size_t k = 0; k < n_missing; k++)
        pl_perm(&p, (int)k + 1, &perms[missing[k]], &s->rules[missing[k]]);
    snprintf(e->what, sizeof(e->what), "'%s' (%s): %zu rules", group_name, sg, n_missing);
    if (ec2_call(e->a, "AuthorizeSecurityGroupIngress", e->what, &p, NULL, err) == 0) {
        e->out->changes += (int)n_missing;
        rc = 0;
        goto out;
    }
    if (!code_is(e->a, "InvalidPermission.Duplicate"))
        goto out;
    /* Some were added meanwhile (EC2 then adds none of the batch): one at a time. */
    pl_release(&p);
    for (size_t k = 0; k < n_missing; k++) {
        const struct perm *pm = &perms[missing[k]];
        char rule[80];
        perm_str(pm, rule, sizeof(rule));
        pl_add(&p, "GroupId", sg);
        pl_perm(&p, 1, pm, &s->rules[missing[k]]);
        snprintf(e->what, sizeof(e->what), "'%s' (%s) rule %zu (%s)", group_name, sg,
                 missing[k] + 1, rule);
        int r = ec2_call(e->a, "AuthorizeSecurityGroupIngress", e->what, &p, NULL, err);
        pl_release(&p);
        if (r < 0 && !code_is(e->a, "InvalidPermission.Duplicate"))
            goto out;
        e->out->changes += r == 0;
    }
    rc = 0;
out:
    pl_release(&p);
    free(have);
    xmlFreeDoc(doc);
    free(group_name);
    return rc;
}

int ec2net_ensure(struct aws *a, const struct ec2net_spec *spec, struct ec2net_result *out,
                  struct err *err)
{
    memset(out, 0, sizeof(*out));
    struct perm *perms = xcalloc(
        spec->n_rules > 0 && spec->n_rules <= EC2NET_MAX_RULES ? spec->n_rules : 1, sizeof(*perms));
    struct ensure e = {.a = a, .s = spec, .out = out};
    int rc = -1;
    if (check_spec(spec, perms, err) < 0)
        goto out;
    out->n_subnets = spec->n_subnets;
    int any_public = 0;
    for (size_t i = 0; i < spec->n_subnets; i++)
        any_public |= spec->subnets[i].is_public;
    if (ensure_vpc(&e, err) < 0)
        goto out;
    for (size_t i = 0; i < spec->n_subnets; i++)
        if (ensure_subnet(&e, i, err) < 0)
            goto out;
    if (any_public && ensure_igw(&e, err) < 0)
        goto out;
    if (ensure_routes(&e, any_public, err) < 0)
        goto out;
    if (ensure_sg(&e, perms, err) < 0)
        goto out;
    rc = 0;
out:
    free(perms);
    return rc;
}

/* ---------------------------------------------------------------- delete */

/* Value of tag key on an item into out ("" when absent). */
static void tag_value(xmlNode *item, const char *key, char *out, size_t size)
{
    out[0] = '\0';
    for (xmlNode *t = first_item(child(item, "tagSet")); t; t = next_item(t)) {
        char k[128];
        if (text(t, "key", k, sizeof(k)) == 0 && strcmp(k, key) == 0) {
            text(t, "value", out, size);
            return;
        }
    }
}

/* Describe<Things> tagged with the migration: new doc (items still to be is_ours()'d). */
static int describe_ours(struct aws *a, const char *action, const char *migration, xmlDoc **doc,
                         struct err *err)
{
    struct plist p = {0};
    pl_owner(&p, migration, NULL);
    char what[160];
    snprintf(what, sizeof(what), "(migration '%s')", migration);
    int rc = ec2_call(a, action, what, &p, doc, err);
    pl_release(&p);
    return rc;
}

/*
 * One delete call. Gone already: fine. A DependencyViolation is transient: EC2 releases
 * the network interfaces of terminated instances some minutes late, and if something
 * untagged keeps the resource busy, the retries end in the dead-letter stream with it.
 */
static int delete_id(struct aws *a, const char *action, const char *param, const char *id,
                     const char *what, int *count, struct err *err)
{
    struct plist p = {0};
    pl_add(&p, param, id);
    int rc = ec2_call(a, action, what, &p, NULL, err);
    pl_release(&p);
    if (rc == 0) {
        (*count)++;
        return 0;
    }
    if (code_not_found(a))
        return 0;
    if (code_is(a, "DependencyViolation") && err)
        err->kind = ERR_TRANSIENT;
    return -1;
}

static int refuse_instances(struct aws *a, const char *migration, struct err *err)
{
    static const char *const live[] = {"pending", "running", "shutting-down", "stopping",
                                       "stopped"};
    struct plist p = {0};
    int f = pl_owner(&p, migration, NULL);
    pl_addf(&p, "instance-state-name", "Filter.%d.Name", f);
    for (size_t k = 0; k < XM_ARRAY_LEN(live); k++)
        pl_addf(&p, live[k], "Filter.%d.Value.%zu", f, k + 1);
    char what[160];
    snprintf(what, sizeof(what), "(migration '%s')", migration);
    xmlDoc *doc;
    int rc = ec2_call(a, "DescribeInstances", what, &p, &doc, err);
    pl_release(&p);
    if (rc < 0)
        return -1;
    int n = 0, leaving = 0;
    char ids[160] = "";
    for (xmlNode *r = first_item(child(xmlDocGetRootElement(doc), "reservationSet")); r;
         r = next_item(r)) {
        for (xmlNode *it = first_item(child(r, "instancesSet")); it; it = next_item(it)) {
            char id[EC2NET_ID_MAX], state[32];
            if (!is_ours(it, migration, NULL) || id_of(it, "instanceId", "i-", id) < 0 ||
                text(child(it, "instanceState"), "name", state, sizeof(state)) < 0 ||
                strcmp(state, "terminated") == 0)
                continue;
            n++;
            leaving += strcmp(state, "shutting-down") == 0;
            size_t used = strlen(ids);
            if (used + strlen(id) + 8 < sizeof(ids))
                snprintf(ids + used, sizeof(ids) - used, "%s%s", used ? ", " : "", id);
            else if (!strstr(ids, ", ..."))
                snprintf(ids + used, sizeof(ids) - used, ", ...");
        }
    }
    xmlFreeDoc(doc);
    if (n == 0)
        return 0;
    if (n == leaving)
        return err_set(err, ERR_TRANSIENT,
                       "migration '%s' has %d instance%s still shutting down (%s): its network can "
                       "go once terminated",
                       migration, n, n == 1 ? "" : "s", ids);
    return err_set(
        err, ERR_PERMANENT,
        "migration '%s' still has %d instance%s (%s): terminate them before deleting its network",
        migration, n, n == 1 ? "" : "s", ids);
}

static int delete_route_tables(struct aws *a, const char *m, struct ec2net_deleted *rep,
                               struct err *err)
{
    xmlDoc *doc;
    if (describe_ours(a, "DescribeRouteTables", m, &doc, err) < 0)
        return -1;
    int rc = 0;
    for (xmlNode *it = first_item(child(xmlDocGetRootElement(doc), "routeTableSet")); it && rc == 0;
         it = next_item(it)) {
        char rtb[EC2NET_ID_MAX], name[80], what[256];
        if (!is_ours(it, m, NULL) || id_of(it, "routeTableId", "rtb-", rtb) < 0)
            continue;
        tag_value(it, EC2NET_TAG_NAME, name, sizeof(name));
        int main_table = 0;
        for (xmlNode *as = first_item(child(it, "associationSet")); as && rc == 0;
             as = next_item(as)) {
            char is_main[8], aid[EC2NET_ID_MAX];
            if (text(as, "main", is_main, sizeof(is_main)) == 0 && strcmp(is_main, "true") == 0) {
                main_table = 1;
                continue;
            }
            if (id_of(as, "routeTableAssociationId", "rtbassoc-", aid) < 0)
                continue;
            snprintf(what, sizeof(what), "%s of %s ('%s')", aid, rtb, name);
            rc = delete_id(a, "DisassociateRouteTable", "AssociationId", aid, what,
                           &rep->associations, err);
        }
        if (rc == 0 && !main_table) { /* a main table goes with its VPC */
            snprintf(what, sizeof(what), "%s ('%s')", rtb, name);
            rc = delete_id(a, "DeleteRouteTable", "RouteTableId", rtb, what, &rep->route_tables,
                           err);
        }
    }
    xmlFreeDoc(doc);
    return rc;
}

static int delete_igws(struct aws *a, const char *m, struct ec2net_deleted *rep, struct err *err)
{
    xmlDoc *doc;
    if (describe_ours(a, "DescribeInternetGateways", m, &doc, err) < 0)
        return -1;
    int rc = 0;
    for (xmlNode *it = first_item(child(xmlDocGetRootElement(doc), "internetGatewaySet"));
         it && rc == 0; it = next_item(it)) {
        char igw[EC2NET_ID_MAX], name[80], what[256];
        if (!is_ours(it, m, NULL) || id_of(it, "internetGatewayId", "igw-", igw) < 0)
            continue;
        tag_value(it, EC2NET_TAG_NAME, name, sizeof(name));
        for (xmlNode *at = first_item(child(it, "attachmentSet")); at && rc == 0;
             at = next_item(at)) {
            char vpc[EC2NET_ID_MAX];
            if (id_of(at, "vpcId", "vpc-", vpc) < 0)
                continue;
            struct plist p = {0};
            pl_add(&p, "InternetGatewayId", igw);
            pl_add(&p, "VpcId", vpc);
            snprintf(what, sizeof(what), "%s ('%s') from %s", igw, name, vpc);
            rc = ec2_call(a, "DetachInternetGateway", what, &p, NULL, err);
            pl_release(&p);
            if (rc < 0 && (code_is(a, "Gateway.NotAttached") || code_not_found(a)))
                rc = 0;
            else if (rc < 0 && code_is(a, "DependencyViolation") && err)
                err->kind = ERR_TRANSIENT; /* mapped public addresses still going */
        }
        if (rc == 0) {
            snprintf(what, sizeof(what), "%s ('%s')", igw, name);
            rc = delete_id(a, "DeleteInternetGateway", "InternetGatewayId", igw, what,
                           &rep->internet_gateways, err);
        }
    }
    xmlFreeDoc(doc);
    return rc;
}

/* Security groups, subnets, VPCs: nothing to undo first but what went before. */
struct kind {
    const char *describe, *set, *id_field, *prefix, *remove, *param;
};

static const struct kind kinds[] = {
    {"DescribeSecurityGroups", "securityGroupInfo", "groupId", "sg-", "DeleteSecurityGroup",
     "GroupId"},
    {"DescribeSubnets", "subnetSet", "subnetId", "subnet-", "DeleteSubnet", "SubnetId"},
    {"DescribeVpcs", "vpcSet", "vpcId", "vpc-", "DeleteVpc", "VpcId"},
};

static int delete_kind(struct aws *a, const char *m, const struct kind *k, int *count,
                       struct err *err)
{
    xmlDoc *doc;
    if (describe_ours(a, k->describe, m, &doc, err) < 0)
        return -1;
    int rc = 0;
    for (xmlNode *it = first_item(child(xmlDocGetRootElement(doc), k->set)); it && rc == 0;
         it = next_item(it)) {
        char id[EC2NET_ID_MAX], name[80], group[16], what[256];
        if (!is_ours(it, m, NULL) || id_of(it, k->id_field, k->prefix, id) < 0)
            continue;
        if (text(it, "groupName", group, sizeof(group)) == 0 && strcmp(group, "default") == 0)
            continue; /* EC2's own; goes with the VPC */
        tag_value(it, EC2NET_TAG_NAME, name, sizeof(name));
        snprintf(what, sizeof(what), "%s ('%s')", id, name);
        rc = delete_id(a, k->remove, k->param, id, what, count, err);
    }
    xmlFreeDoc(doc);
    return rc;
}

int ec2net_delete(struct aws *a, const char *migration, struct ec2net_deleted *report,
                  struct err *err)
{
    struct ec2net_deleted local;
    struct ec2net_deleted *rep = report ? report : &local;
    memset(rep, 0, sizeof(*rep));
    if (check_migration(migration, err) < 0)
        return -1;
    if (refuse_instances(a, migration, err) < 0 ||
        delete_route_tables(a, migration, rep, err) < 0 ||
        delete_igws(a, migration, rep, err) < 0 ||
        delete_kind(a, migration, &kinds[0], &rep->security_groups, err) < 0 ||
        delete_kind(a, migration, &kinds[1], &rep->subnets, err) < 0 ||
        delete_kind(a, migration, &kinds[2], &rep->vpcs, err) < 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- instance types */

/* Does <set><item>value</item>...</set> below n hold value? */
static int set_has(xmlNode *n, const char *set, const char *value)
{
    for (xmlNode *it = first_item(child(n, set)); it; it = next_item(it)) {
        xmlChar *t = xmlNodeGetContent(it);
        int hit = t && strcmp((const char *)t, value) == 0;
        xmlFree(t);
        if (hit)
            return 1;
    }
    return 0;
}

static long long number(xmlNode *n, const char *name)
{
    char buf[32], *end;
    if (text(n, name, buf, sizeof(buf)) < 0 || !buf[0])
        return -1;
    long long v = strtoll(buf, &end, 10);
    return *end || v < 0 ? -1 : v;
}

struct candidate {
    char name[64];
    long long vcpus, mib;
};

/* Least memory, then least vCPUs, then name. */
static int smaller(const struct candidate *a, const struct candidate *b)
{
    if (a->mib != b->mib)
        return a->mib < b->mib;
    if (a->vcpus != b->vcpus)
        return a->vcpus < b->vcpus;
    return strcmp(a->name, b->name) < 0;
}

static void consider(xmlNode *it, const char *arch, int vcpus, long long mib,
                     struct candidate *best)
{
    struct candidate c;
    char flag[8];
    if (text(it, "instanceType", c.name, sizeof(c.name)) < 0 || !c.name[0])
        return;
    if (text(it, "currentGeneration", flag, sizeof(flag)) < 0 || strcmp(flag, "true") != 0)
        return;
    if (text(it, "bareMetal", flag, sizeof(flag)) == 0 && strcmp(flag, "true") == 0)
        return;
    if (!set_has(child(it, "processorInfo"), "supportedArchitectures", arch) ||
        !set_has(it, "supportedUsageClasses", "on-demand") ||
        !set_has(it, "supportedRootDeviceTypes", "ebs"))
        return;
    c.vcpus = number(child(it, "vCpuInfo"), "defaultVCpus");
    c.mib = number(child(it, "memoryInfo"), "sizeInMiB");
    if (c.vcpus < vcpus || c.mib < mib)
        return;
    if (!best->name[0] || smaller(&c, best))
        *best = c;
}

int ec2net_suggest_type(struct aws *a, int vcpus, long long memory_mib, const char *arch, char *out,
                        size_t size, struct err *err)
{
    if (out && size)
        out[0] = '\0';
    if (!out || size == 0)
        return err_set(err, ERR_PERMANENT, "ec2net: no room for the instance type");
    if (vcpus < 1 || vcpus > 1024 || memory_mib < 1 || memory_mib > 33554432)
        return err_set(
            err, ERR_PERMANENT,
            "ec2net: %d vCPUs and %lld MiB is not a machine size (1..1024 vCPUs, 1..33554432 MiB)",
            vcpus, memory_mib);
    if (!arch || !arch[0] || strcmp(arch, "amd64") == 0)
        arch = "x86_64";
    else if (strcmp(arch, "aarch64") == 0)
        arch = "arm64";
    if (strcmp(arch, "x86_64") != 0 && strcmp(arch, "arm64") != 0)
        return err_set(err, ERR_PERMANENT, "ec2net: architecture '%.40s' is not x86_64 or arm64",
                       arch);
    char what[120], token[4096] = "";
    snprintf(what, sizeof(what), "(%d vCPUs, %lld MiB, %s)", vcpus, memory_mib, arch);
    struct candidate best = {.name = ""};
    int page = 0;
    do {
        if (++page > TYPE_PAGES_MAX)
            return err_set(err, ERR_PERMANENT, "ec2 DescribeInstanceTypes %s: over %d pages", what,
                           TYPE_PAGES_MAX);
        struct plist p = {0};
        pl_filter(&p, 1, "current-generation", "true");
        pl_filter(&p, 2, "processor-info.supported-architecture", arch);
        pl_add(&p, "MaxResults", "100");
        if (token[0])
            pl_add(&p, "NextToken", token);
        xmlDoc *doc;
        int rc = ec2_call(a, "DescribeInstanceTypes", what, &p, &doc, err);
        pl_release(&p);
        if (rc < 0)
            return -1;
        xmlNode *root = xmlDocGetRootElement(doc);
        for (xmlNode *it = first_item(child(root, "instanceTypeSet")); it; it = next_item(it))
            consider(it, arch, vcpus, memory_mib, &best);
        char next[sizeof(token)] = "";
        int long_token =
            child(root, "nextToken") && text(root, "nextToken", next, sizeof(next)) < 0;
        xmlFreeDoc(doc);
        if (long_token)
            return err_set(err, ERR_PERMANENT,
                           "ec2 DescribeInstanceTypes %s: NextToken over %zu bytes", what,
                           sizeof(token) - 1);
        xstrlcpy(token, next, sizeof(token));
    } while (token[0]);
    if (!best.name[0])
        return err_set(err, ERR_PERMANENT,
                       "no current-generation %s instance type (on-demand, EBS root) has %d vCPUs "
                       "and %lld MiB or more",
                       arch, vcpus, memory_mib);
    if (strlen(best.name) >= size)
        return err_set(err, ERR_PERMANENT, "ec2net: instance type '%s' does not fit %zu bytes",
                       best.name, size);
    xstrlcpy(out, best.name, size);
    return 0;
}
