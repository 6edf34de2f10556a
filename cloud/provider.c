#include "provider.h"

#include <stdio.h>
#include <string.h>

#include "xmalloc.h"

extern const struct provider_ops aws_provider;
extern const struct provider_ops azure_provider;
extern const struct provider_ops gcp_provider;

static const struct provider_ops *const providers[] = {
    &aws_provider,
    &azure_provider,
    &gcp_provider,
};

const struct provider_ops *provider_find(const char *cloud)
{
    for (size_t i = 0; i < XM_ARRAY_LEN(providers); i++)
        if (strcmp(providers[i]->cloud, cloud) == 0)
            return providers[i];
    return NULL;
}

static int copy(char *dst, size_t size, const json_t *v, const char *what, struct err *err)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= size)
        return err_set(err, ERR_PERMANENT, "blueprint: %s is missing or too long", what);
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

int provider_net_spec(const json_t *bp, const char *migration, struct net_spec *out,
                      struct err *err)
{
    memset(out, 0, sizeof(*out));
    const json_t *net = json_object_get(bp, "network");
    if (strlen(migration) >= sizeof(out->migration))
        return err_set(err, ERR_PERMANENT, "migration id too long");
    memcpy(out->migration, migration, strlen(migration) + 1);
    if (copy(out->name, sizeof(out->name), json_object_get(net, "name"), "/network/name", err) <
            0 ||
        copy(out->cidr, sizeof(out->cidr), json_object_get(net, "cidr"), "/network/cidr", err) < 0)
        return -1;
    const json_t *subnets = json_object_get(net, "subnets");
    if (json_array_size(subnets) > PROVIDER_MAX_SUBNETS)
        return err_set(err, ERR_PERMANENT, "blueprint: more than %d subnets", PROVIDER_MAX_SUBNETS);
    size_t i;
    const json_t *s;
    json_array_foreach(subnets, i, s)
    {
        struct net_subnet *d = &out->subnets[out->n_subnets++];
        char what[64];
        snprintf(what, sizeof(what), "/network/subnets/%zu", i);
        if (copy(d->name, sizeof(d->name), json_object_get(s, "name"), what, err) < 0 ||
            copy(d->cidr, sizeof(d->cidr), json_object_get(s, "cidr"), what, err) < 0)
            return -1;
        d->public = json_is_true(json_object_get(s, "public"));
    }
    const json_t *rules = json_object_get(bp, "firewall");
    if (json_array_size(rules) > PROVIDER_MAX_RULES)
        return err_set(err, ERR_PERMANENT, "blueprint: more than %d firewall rules",
                       PROVIDER_MAX_RULES);
    json_array_foreach(rules, i, s)
    {
        struct net_rule *r = &out->rules[out->n_rules++];
        char what[64];
        snprintf(what, sizeof(what), "/firewall/%zu", i);
        if (copy(r->protocol, sizeof(r->protocol), json_object_get(s, "protocol"), what, err) < 0 ||
            copy(r->source, sizeof(r->source), json_object_get(s, "source"), what, err) < 0)
            return -1;
        r->port = (int)json_integer_value(json_object_get(s, "port"));
        const json_t *to = json_object_get(s, "port_to");
        r->port_to = to ? (int)json_integer_value(to) : r->port;
        const char *d = json_string_value(json_object_get(s, "description"));
        xstrlcpy(r->description, d ? d : "", sizeof(r->description));
    }
    return 0;
}
