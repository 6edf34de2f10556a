#include "machine_types.h"

#include <stdio.h>

json_t *machine_types_load(const char *schemas_dir, struct err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/machine_types.json", schemas_dir);
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        err_set(err, ERR_PERMANENT, "cannot read '%s': %s (line %d)", path, jerr.text, jerr.line);
        return NULL;
    }
    json_t *table = json_incref(json_object_get(doc, "default"));
    json_decref(doc);
    const char *clouds[] = {"aws", "azure", "gcp"};
    for (size_t i = 0; table && i < sizeof(clouds) / sizeof(clouds[0]); i++)
        if (json_array_size(json_object_get(table, clouds[i])) == 0) {
            json_decref(table);
            table = NULL;
        }
    if (!table)
        err_set(err, ERR_PERMANENT, "'%s' has no machine types for every cloud", path);
    return table;
}

const char *machine_types_fit(const json_t *table, const char *cloud, long long vcpus,
                              long long memory_mib)
{
    const json_t *types = json_object_get(table, cloud);
    const char *last = NULL;
    size_t i;
    const json_t *t;
    json_array_foreach(types, i, t)
    {
        last = json_string_value(json_object_get(t, "name"));
        if (json_integer_value(json_object_get(t, "vcpus")) >= vcpus &&
            json_integer_value(json_object_get(t, "memory_mib")) >= memory_mib)
            return last;
    }
    return last;
}
