/*
 * xmctl: the command table, global options and exit codes (xmctl.h has the contract).
 *
 * --json and --api URL are global and may stand anywhere on the line (before "--"):
 * they are taken out of argv before the command parses its own options.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmctl.h"

static const struct command {
    const char *name;
    int (*run)(struct xmctl *x, int argc, char **argv);
    int needs_token;
    const char *synopsis, *help;
} commands[] = {
    {"login", cmd_login, 0, "login [--token-file FILE|-]", "check a token and keep it"},
    {"logout", cmd_logout, 0, "logout", "forget the kept token"},
    {"credentials", cmd_credentials, 1, "credentials add --name N --kind K [...]",
     "store a credential; the secret from a file or stdin"},
    {"credentials", cmd_credentials, 1, "credentials list", "every credential, never a secret"},
    {"migrate", cmd_migrate, 1, "migrate create -f FILE|-", "start a migration (YAML or JSON)"},
    {"approve", cmd_approve, 1, "approve MIGRATION [--override FINDING]...",
     "approve the blueprint, accepting those blockers"},
    {"status", cmd_status, 1, "status [MIGRATION]", "one migration, or the list"},
    {"watch", cmd_watch, 1, "watch MIGRATION [--interval S] [--give-up-after S]",
     "follow it until it ends"},
    {"cutover", cmd_cutover, 1, "cutover MIGRATION [HOST]... [--freeze]",
     "final copy of hosts awaiting cutover (all by default)"},
    {"retry", cmd_retry, 1, "retry MIGRATION [HOST]...", "retry failed hosts (all by default)"},
    {"cancel", cmd_cancel, 1, "cancel MIGRATION", "no new phase starts"},
    {"rollback", cmd_rollback, 1, "rollback MIGRATION", "delete what it created in the cloud"},
};

static int usage_all(FILE *f, int rc)
{
    fprintf(f, "usage: xmctl [--json] [--api URL] COMMAND ...\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-52s %s\n", commands[i].synopsis, commands[i].help);
    fprintf(f,
            "\nThe API is --api, else XMCTL_API, else the login file, else %s;\n"
            "the token is XMCTL_TOKEN, else the login file (xmctl login).\n"
            "Exit codes: 0 ok, 1 the API refused (4xx), 2 usage or bad input,\n"
            "3 API unreachable or failing (5xx), 4 migration failed or partially\n"
            "failed (watch), 5 migration cancelled (watch).\n",
            XMCTL_DEFAULT_API);
    return rc;
}

/* Take --json and --api out of argv (up to "--"); argc is updated. */
static int take_globals(int *argc, char **argv, int *json, const char **api)
{
    int out = 1, i = 1;
    for (; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            break;
        if (strcmp(a, "--json") == 0) {
            *json = 1;
        } else if (strcmp(a, "--api") == 0) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "xmctl: --api needs a URL\n");
                return -1;
            }
            *api = argv[++i];
        } else if (strncmp(a, "--api=", 6) == 0) {
            *api = a + 6;
        } else {
            argv[out++] = argv[i];
        }
    }
    for (; i < *argc; i++)
        argv[out++] = argv[i];
    argv[out] = NULL;
    *argc = out;
    return 0;
}

int main(int argc, char **argv)
{
    struct xmctl x = {0};
    struct err err = {0};
    const char *api = NULL;
    if (take_globals(&argc, argv, &x.json, &api) < 0)
        return XMCTL_USAGE;
    if (argc < 2)
        return usage_all(stderr, XMCTL_USAGE);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0)
        return usage_all(stdout, XMCTL_OK);
    const struct command *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]) && !cmd; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "xmctl: unknown command '%s'\n", argv[1]);
        return usage_all(stderr, XMCTL_USAGE);
    }
    if (xmctl_config_load(&x, api, &err) < 0) {
        fprintf(stderr, "xmctl: %s\n", err.msg);
        xmctl_release(&x);
        return XMCTL_USAGE;
    }
    int rc;
    if (cmd->needs_token && !x.token) {
        fprintf(stderr, "xmctl: no API token: run 'xmctl login' or set XMCTL_TOKEN\n");
        rc = XMCTL_USAGE;
    } else {
        rc = cmd->run(&x, argc - 1, argv + 1);
    }
    fflush(stdout);
    xmctl_release(&x);
    return rc;
}
