#include "ansible.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "xmalloc.h"

extern char **environ;

static int all_of(const char *s, const char *extra, size_t min, size_t max)
{
    size_t n = 0;
    for (; s && s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(extra, c)))
            return 0;
    }
    return s && n >= min && n <= max;
}

int ansible_valid_host(const char *s)
{
    return all_of(s, ".-", 1, 253) && s[0] != '-' && s[0] != '.' && !strstr(s, "..");
}

int ansible_valid_user(const char *s)
{
    return all_of(s, "_-", 1, 32) && ((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_');
}

int ansible_valid_device(const char *s)
{
    return s && strncmp(s, "/dev/", 5) == 0 && s[5] >= 'a' && s[5] <= 'z' &&
           all_of(s + 5, "/_-", 1, 63) && !strstr(s, "..");
}

/* Write text to dir/name with mode 0600 (created exclusively). */
static int write_private(const char *dir, const char *name, const char *text, char *path,
                         size_t size, struct err *err)
{
    snprintf(path, size, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(err, ERR_TRANSIENT, "cannot write '%s': %s", path, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0) {
            close(fd);
            return err_set(err, ERR_TRANSIENT, "cannot write '%s': %s", path, strerror(errno));
        }
        off += (size_t)w;
    }
    close(fd);
    return 0;
}

/* Overwrite, then remove, every file of dir, then dir. */
static void shred_dir(const char *dir, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        struct stat st;
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0 && fstat(fd, &st) == 0) {
            char zero[4096] = {0};
            for (off_t o = 0; o < st.st_size; o += (off_t)sizeof(zero))
                if (write(fd, zero, sizeof(zero)) < 0)
                    break;
        }
        if (fd >= 0)
            close(fd);
        unlink(path);
    }
    rmdir(dir);
}

/* Pull "rc" and "msg"/"stderr" out of a "... => {json}" failure line. */
static void parse_failure(const char *line, struct ansible_result *res)
{
    const char *brace = strchr(line, '{');
    json_t *j = brace ? json_loads(brace, 0, NULL) : NULL;
    if (!j)
        return;
    json_t *rc = json_object_get(j, "rc");
    if (json_is_integer(rc))
        res->task_rc = (int)json_integer_value(rc);
    const char *m = json_string_value(json_object_get(j, "stderr"));
    if (!m || !*m)
        m = json_string_value(json_object_get(j, "msg"));
    if (m && *m)
        xstrlcpy(res->message, m, sizeof(res->message));
    json_decref(j);
}

int ansible_run(const char *playbook, const struct ansible_target *t, const json_t *vars,
                const char *log_ctx, struct ansible_result *res, struct err *err)
{
    memset(res, 0, sizeof(*res));
    res->task_rc = -1;
    if (!all_of(t->name, "-", 1, 63) || !ansible_valid_host(t->address) ||
        !ansible_valid_user(t->user) || t->port < 1 || t->port > 65535)
        return err_set(err, ERR_PERMANENT,
                       "host '%s': name, address, port or user does not match its pattern",
                       t->name ? t->name : "?");
    if (!t->private_key && !t->password)
        return err_set(err, ERR_PERMANENT, "host '%s': no SSH key or password", t->name);

    char dir[] = "/tmp/xm-ansible-XXXXXX";
    if (!mkdtemp(dir))
        return err_set(err, ERR_TRANSIENT, "mkdtemp: %s", strerror(errno));
    /* "cm": the SSH connection the playbook's tasks share (ControlMaster below). */
    const char *names[] = {"inventory", "key", "vars.json", "known_hosts", "cm"};
    int rc = -1;
    char inv[600], key[600] = "", vfile[600], known[600];
    char *inventory = NULL, *vtext = NULL;
    json_t *all = json_deep_copy(vars);
    snprintf(known, sizeof(known), "%s/known_hosts", dir);

    if (t->private_key) {
        size_t n = strlen(t->private_key);
        /* OpenSSH wants the key to end with a newline. */
        char *pem =
            xasprintf("%s%s", t->private_key, n && t->private_key[n - 1] == '\n' ? "" : "\n");
        int w = write_private(dir, "key", pem, key, sizeof(key), err);
        free(pem);
        if (w < 0)
            goto out;
    }
    /* Connection secrets go in the vars file with everything else: never argv. */
    if (t->password)
        json_object_set_new(all, "ansible_password", json_string(t->password));
    if (t->become_password)
        json_object_set_new(all, "ansible_become_password", json_string(t->become_password));
    inventory = xasprintf("%s ansible_host=%s ansible_port=%d ansible_user=%s%s%s "
                          "ansible_python_interpreter=auto_silent\n",
                          t->name, t->address, t->port, t->user,
                          key[0] ? " ansible_ssh_private_key_file=" : "", key);
    vtext = json_dumps(all, JSON_COMPACT);
    if (write_private(dir, "inventory", inventory, inv, sizeof(inv), err) < 0 ||
        write_private(dir, "vars.json", vtext, vfile, sizeof(vfile), err) < 0)
        goto out;

    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) < 0) {
        err_set(err, ERR_TRANSIENT, "pipe: %s", strerror(errno));
        goto out;
    }
    char vars_arg[620];
    snprintf(vars_arg, sizeof(vars_arg), "@%s", vfile);
    /* One SSH connection for the whole run (every task otherwise opens several: a prep
     * run took minutes in handshakes), its socket in our private folder; the master
     * leaves 5 s after the run's last use. */
    char ssh_args[1000];
    snprintf(ssh_args, sizeof(ssh_args),
             "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=%s "
             "-o ConnectTimeout=20 -o ServerAliveInterval=15 -o BatchMode=%s "
             "-o ControlMaster=auto -o ControlPersist=5s -o ControlPath=%s/cm",
             known, t->password ? "no" : "yes", dir);
    pid_t pid = fork();
    if (pid < 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        err_set(err, ERR_TRANSIENT, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        dup2(out_pipe[1], STDOUT_FILENO);
        dup2(out_pipe[1], STDERR_FILENO);
        setenv("ANSIBLE_SSH_ARGS", ssh_args, 1);
        setenv("ANSIBLE_HOST_KEY_CHECKING", "True", 1);
        setenv("ANSIBLE_RETRY_FILES_ENABLED", "False", 1);
        setenv("ANSIBLE_NOCOLOR", "1", 1);
        setenv("ANSIBLE_LOCAL_TEMP", dir, 1);
        setenv("PYTHONUNBUFFERED", "1", 1);
        char *argv[] = {"ansible-playbook", "-i", inv, "-e", vars_arg, (char *)playbook, NULL};
        execvp("ansible-playbook", argv);
        fprintf(stderr, "cannot run ansible-playbook: %s\n", strerror(errno));
        _exit(127);
    }
    close(out_pipe[1]);
    FILE *f = fdopen(out_pipe[0], "r");
    char line[8192];
    while (f && fgets(line, sizeof(line), f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (!n)
            continue;
        if (strstr(line, "UNREACHABLE!"))
            res->unreachable = 1;
        /* Ansible's reason, for the host record: a task's "fatal: [h]: FAILED! => {..}",
         * or, for a loop, each failed item's "failed: [h] (item=..) => {..}". */
        if (strstr(line, "FAILED! =>") || strstr(line, "UNREACHABLE! =>") ||
            (strncmp(line, "failed: [", 9) == 0 && strstr(line, "=> {")))
            parse_failure(line, res);
        char q[8300];
        log_info("ansible", "%s line=%s", log_ctx, log_quote(q, sizeof(q), line));
    }
    if (f)
        fclose(f);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    res->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (res->exit_code == 0) {
        rc = 0;
    } else if (res->exit_code == 127) {
        err_set(err, ERR_PERMANENT, "ansible-playbook is not installed");
    } else if (res->unreachable || res->exit_code == 4) {
        err_set(err, ERR_TRANSIENT, "host '%s' unreachable over SSH", t->name);
    } else {
        err_set(err, ERR_PERMANENT, "playbook %s failed on '%s' (exit %d)%s%s", playbook, t->name,
                res->exit_code, res->message[0] ? ": " : "", res->message);
    }
out:
    shred_dir(dir, names, sizeof(names) / sizeof(names[0]));
    free(inventory);
    if (vtext) {
        memset(vtext, 0, strlen(vtext));
        free(vtext);
    }
    json_decref(all);
    return rc;
}
