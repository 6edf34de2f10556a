/*
 * xmctl credentials add | list.
 *
 * A secret is read from a file or standard input, never from an argument:
 *   --secret-file FILE|-   the secret object as JSON (schemas/credential_create.json);
 *                          for gcp the service-account key file as Google issues it
 *   --user U --ssh-key-file FILE    an ssh login with a private key
 *   --user U --password-file FILE|- an ssh login with a password (one line)
 * Without any of them the secret JSON is read from standard input.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "render.h"
#include "secret.h"
#include "xmctl.h"

#define ADD_USAGE                                                                                  \
    "credentials add --name NAME --kind aws|azure|gcp|ssh\n"                                       \
    "           [--secret-file FILE|- | --user USER (--ssh-key-file FILE | --password-file "       \
    "FILE|-)]\n"                                                                                   \
    "       (secrets come from files or stdin, never from arguments)"

/* A file's text as a JSON string (the file's bytes wiped), or NULL with err. */
static json_t *file_string(const char *path, int one_line, struct err *err)
{
    char *buf = NULL;
    size_t len = 0;
    if (xmctl_read_file(path, XMCTL_MAX_FILE, &buf, &len, err) < 0)
        return NULL;
    if (one_line)
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            buf[--len] = '\0';
    json_t *s = json_stringn(buf, len);
    if (!s)
        err_set(err, ERR_PERMANENT, "'%s' is not UTF-8 text", path);
    secret_wipe(buf, len);
    free(buf);
    return s;
}

static json_t *secret_object(const char *kind, const char *secret_file, const char *user,
                             const char *key_file, const char *password_file, struct err *err)
{
    if (key_file || password_file) {
        if (strcmp(kind, "ssh") != 0 || !user || (key_file && password_file) || secret_file) {
            err_set(err, ERR_PERMANENT,
                    "--ssh-key-file or --password-file goes with --kind ssh "
                    "and --user, and not with --secret-file");
            return NULL;
        }
        json_t *v = file_string(key_file ? key_file : password_file, !key_file, err);
        if (!v)
            return NULL;
        return json_pack("{s:s, s:o}", "user", user, key_file ? "private_key" : "password", v);
    }
    if (user) {
        err_set(err, ERR_PERMANENT, "--user goes with --ssh-key-file or --password-file");
        return NULL;
    }
    const char *path = secret_file ? secret_file : "-";
    char *buf = NULL;
    size_t len = 0;
    if (xmctl_read_file(path, XMCTL_MAX_FILE, &buf, &len, err) < 0)
        return NULL;
    json_error_t jerr;
    json_t *doc = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    secret_wipe(buf, len);
    free(buf);
    const char *name = strcmp(path, "-") == 0 ? "standard input" : path;
    if (!json_is_object(doc)) {
        /* jerr.text may quote the input: say where, not what. */
        err_set(err, ERR_PERMANENT, "the secret in '%s' must be one JSON object%s", name,
                doc ? "" : " (it does not parse)");
        json_decref(doc);
        return NULL;
    }
    /* A GCP service-account key file as downloaded: wrap it the way the API wants. */
    if (strcmp(kind, "gcp") == 0 && !json_object_get(doc, "service_account") &&
        json_is_string(json_object_get(doc, "type")))
        return json_pack("{s:o}", "service_account", doc);
    return doc;
}

static int creds_add(struct xmctl *x, int argc, char **argv)
{
    static const struct option opts[] = {{"name", required_argument, NULL, 'n'},
                                         {"kind", required_argument, NULL, 'k'},
                                         {"secret-file", required_argument, NULL, 's'},
                                         {"user", required_argument, NULL, 'u'},
                                         {"ssh-key-file", required_argument, NULL, 'i'},
                                         {"password-file", required_argument, NULL, 'p'},
                                         {NULL, 0, NULL, 0}};
    const char *name = NULL, *kind = NULL, *secret_file = NULL, *user = NULL, *key = NULL,
               *password = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "n:k:s:u:i:p:", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            name = optarg;
            break;
        case 'k':
            kind = optarg;
            break;
        case 's':
            secret_file = optarg;
            break;
        case 'u':
            user = optarg;
            break;
        case 'i':
            key = optarg;
            break;
        case 'p':
            password = optarg;
            break;
        default:
            return xmctl_usage(ADD_USAGE);
        }
    }
    if (optind != argc || !name || !kind)
        return xmctl_usage(ADD_USAGE);
    struct err err = {0};
    json_t *secret = secret_object(kind, secret_file, user, key, password, &err);
    if (!secret) {
        fprintf(stderr, "xmctl: %s\n", err.msg);
        return XMCTL_USAGE;
    }
    json_t *body = json_pack("{s:s, s:s, s:o}", "name", name, "kind", kind, "secret", secret);
    json_t *out = NULL;
    int rc = xmctl_request(x, "POST", "/v1/credentials", body, 1, &out);
    json_decref(body); /* jansson frees the secret's strings without wiping them */
    if (rc == XMCTL_OK && !x->json)
        printf("credential %s stored: %s (%s), identity %s, fingerprint %s\n",
               render_str(out, "id", "?"), render_str(out, "name", "?"),
               render_str(out, "kind", "?"), render_str(out, "identity", "-"),
               render_str(out, "fingerprint", "-"));
    json_decref(out);
    return rc;
}

static int creds_list(struct xmctl *x, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return xmctl_usage("credentials list");
    json_t *out = NULL;
    int rc = xmctl_request(x, "GET", "/v1/credentials", NULL, 1, &out);
    if (rc == XMCTL_OK && !x->json) {
        printf("%-36s  %-20s %-5s  %-30s %-28s %s\n", "ID", "NAME", "KIND", "IDENTITY",
               "FINGERPRINT", "CREATED");
        size_t i;
        const json_t *c;
        json_array_foreach(json_object_get(out, "items"), i, c)
        {
            char t[32];
            printf("%-36s  %-20s %-5s  %-30s %-28s %s\n", render_str(c, "id", "?"),
                   render_str(c, "name", "?"), render_str(c, "kind", "?"),
                   render_str(c, "identity", "-"), render_str(c, "fingerprint", "-"),
                   render_time(t, sizeof(t), render_int(c, "created", 0)));
        }
    }
    json_decref(out);
    return rc;
}

int cmd_credentials(struct xmctl *x, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "add") == 0)
        return creds_add(x, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return creds_list(x, argc - 1, argv + 1);
    return xmctl_usage("credentials add|list ...");
}
