/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The daemon configuration: reading /etc/lagoon-taskd/taskd.conf and its
 * taskd.conf.d/NAME.conf drop-ins (INI in systemd style: sections, "Key=value",
 * '#'/';' comments, backslash continuation), validating every value, applying the
 * documented defaults and deriving the rest (ListenSocket=). Problems are logged as
 * "FILE:LINE: message" and parsing goes on, so one run reports all of them; the load
 * then fails with -EINVAL. The key table below is the single source of the keys and
 * their defaults. */

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "config.h"
#include "fs-util.h"
#include "log.h"
#include "sha1.h"
#include "macro.h"
#include "parse-util.h"

#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_LINE_MAX (64 * 1024)
#define SERVICE_NAME_MAX 255
#define LABEL_MAX 255

#define log_syntax(file, line, fmt, ...) log_error("%s:%u: " fmt, (file), (line), ##__VA_ARGS__)
#define log_syntax_errno(file, line, error, fmt, ...) \
        log_error_errno((error), "%s:%u: " fmt, (file), (line), ##__VA_ARGS__)

typedef enum Section {
        SECTION_NONE, /* before the first section header */
        SECTION_DAEMON,
        SECTION_RUNTIME,
        SECTION_TASKS,
        SECTION_LAGOON,
        SECTION_KUBERNETES,
        SECTION_SERVICE, /* [Service NAME] and [Image REFERENCE] share their keys */
        SECTION_IMAGE,
        SECTION_INVALID, /* after a bad header: its keys are skipped, the header was reported */
} Section;

static const char *const section_names[] = {
        [SECTION_DAEMON] = "Daemon", [SECTION_RUNTIME] = "Runtime",       [SECTION_TASKS] = "Tasks",
        [SECTION_LAGOON] = "Lagoon", [SECTION_KUBERNETES] = "Kubernetes", [SECTION_SERVICE] = "Service",
        [SECTION_IMAGE] = "Image",
};

/* A value parser: 0 on success, -EINVAL after logging the problem, -ENOMEM. */
typedef int (*ConfigParser)(const char *file, unsigned line, const char *key, const char *value, void *data);

typedef struct ConfigItem {
        Section section;
        const char *key;
        ConfigParser parse;
        size_t offset;             /* into Config, or into ServiceConfig for [Service] and [Image] */
        const char *default_value; /* applied by config_new() and by an empty assignment */
        bool list;                 /* appends; the parser handles the empty (reset) assignment */
} ConfigItem;

typedef struct ParseState {
        Section section;
        size_t service; /* index into Config.services (or .images) while in [Service NAME] ([Image REF]) */
} ParseState;

static bool valid_service_name(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > SERVICE_NAME_MAX)
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

static bool has_control_chars(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < ' ' || *s == 0x7f)
                        return true;
        return false;
}

/* Collapses repeated slashes and drops a trailing one, so "/run//x/" joins cleanly later. */
static void path_normalize(char *p) {
        char *w = p;

        for (const char *r = p; *r; r++)
                if (!(*r == '/' && w > p && w[-1] == '/'))
                        *w++ = *r;
        if (w > p + 1 && w[-1] == '/')
                w--;
        *w = '\0';
}

static int config_parse_path(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char **p = data;
        _cleanup_free_ char *v = NULL;

        if (value[0] != '/' || has_control_chars(value) || strlen(value) >= PATH_MAX) {
                log_syntax(file, line, "%s= needs an absolute path, got '%s'.", key, value);
                return -EINVAL;
        }

        v = strdup(value);
        if (!v)
                return -ENOMEM;
        path_normalize(v);

        free(*p);
        *p = TAKE_PTR(v);
        return 0;
}

/* A path, or "no" for none (the empty value restores the default, as everywhere). */
static int config_parse_optional_path(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char **p = data;

        if (streq(value, "no")) {
                *p = mfree(*p);
                return 0;
        }
        return config_parse_path(file, line, key, value, data);
}

static int config_parse_socket_path(const char *file, unsigned line, const char *key, const char *value, void *data) {
        struct sockaddr_un sa;

        if (value[0] == '/' && strlen(value) >= sizeof(sa.sun_path)) {
                log_syntax(file, line, "%s= path is too long for a unix socket (at most %zu bytes): '%s'.", key,
                           sizeof(sa.sun_path) - 1, value);
                return -EINVAL;
        }
        return config_parse_path(file, line, key, value, data);
}

static int config_parse_group(const char *file, unsigned line, const char *key, const char *value, void *data) {
        size_t n = strlen(value);

        /* A portable user/group name (or a numeric GID): what useradd and sysusers accept. */
        if (n > 32 || value[0] == '-' ||
            strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n) {
                log_syntax(file, line, "%s= is not a valid group name: '%s'.", key, value);
                return -EINVAL;
        }
        return free_and_strdup(data, value);
}

static int config_parse_log_level(const char *file, unsigned line, const char *key, const char *value, void *data) {
        int *level = data;
        int l;

        l = log_level_from_string(value);
        if (l < 0) {
                log_syntax(file, line,
                           "%s= needs a syslog level (emerg, alert, crit, err, warning, notice, info, debug), "
                           "got '%s'.",
                           key, value);
                return -EINVAL;
        }

        *level = l;
        return 0;
}

static int config_parse_command(const char *file, unsigned line, const char *key, const char *value, void *data) {
        if (strpbrk(value, " \t") || has_control_chars(value)) {
                log_syntax(file, line, "%s= takes one program name or path (arguments go in %sArguments=), got '%s'.",
                           key, key, value);
                return -EINVAL;
        }
        /* A name is looked up in PATH; anything with a slash must not depend on the cwd. */
        if (strchr(value, '/') && value[0] != '/') {
                log_syntax(file, line, "%s= needs a program name or an absolute path, got '%s'.", key, value);
                return -EINVAL;
        }
        return free_and_strdup(data, value);
}

static int config_parse_words(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char ***l = data;
        _cleanup_strv_free_ char **words = NULL;
        int r;

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }

        r = split_words(value, &words);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_syntax(file, line, "%s= has an unterminated quote or a trailing backslash: %s", key, value);
                return -EINVAL;
        }

        for (char **w = words; *w; w++) {
                r = strv_extend(l, *w);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int
parse_unsigned_min(const char *file, unsigned line, const char *key, const char *value, void *data, unsigned min) {
        unsigned *u = data, v;
        int r;

        r = parse_unsigned(value, &v);
        if (r == -ERANGE) {
                log_syntax(file, line, "%s= value is too large: '%s'.", key, value);
                return -EINVAL;
        }
        if (r < 0) {
                log_syntax(file, line, "%s= needs a non-negative integer, got '%s'.", key, value);
                return -EINVAL;
        }
        if (v < min) {
                log_syntax(file, line, "%s= must be at least %u, got '%s'.", key, min, value);
                return -EINVAL;
        }

        *u = v;
        return 0;
}

static int config_parse_bool(const char *file, unsigned line, const char *key, const char *value, void *data) {
        bool *b = data;
        int r;

        r = parse_boolean(value);
        if (r < 0) {
                log_syntax(file, line, "%s= needs yes or no, got '%s'.", key, value);
                return -EINVAL;
        }
        *b = r;
        return 0;
}

static int config_parse_unsigned(const char *file, unsigned line, const char *key, const char *value, void *data) {
        return parse_unsigned_min(file, line, key, value, data, 0);
}

static int
config_parse_unsigned_positive(const char *file, unsigned line, const char *key, const char *value, void *data) {
        return parse_unsigned_min(file, line, key, value, data, 1);
}

static int parse_duration_logged(const char *file, unsigned line, const char *key, const char *value, uint64_t *ret) {
        int r;

        r = parse_duration(value, ret);
        if (r == -ERANGE) {
                log_syntax(file, line, "%s= duration is too large: '%s'.", key, value);
                return -EINVAL;
        }
        if (r < 0) {
                log_syntax(file, line, "%s= needs a time span such as 90, 30s, 5min, 1h 30min, got '%s'.", key, value);
                return -EINVAL;
        }
        return 0;
}

static int config_parse_timeout(const char *file, unsigned line, const char *key, const char *value, void *data) {
        uint64_t *usec = data, v;
        int r;

        r = parse_duration_logged(file, line, key, value, &v);
        if (r < 0)
                return r;

        /* As systemd's TimeoutSec=: 0 turns the timeout off. */
        *usec = v == 0 ? USEC_INFINITY : v;
        return 0;
}

static int
config_parse_finite_duration(const char *file, unsigned line, const char *key, const char *value, void *data) {
        uint64_t *usec = data, v;
        int r;

        r = parse_duration_logged(file, line, key, value, &v);
        if (r < 0)
                return r;
        if (v == USEC_INFINITY) {
                /* A task that ignores SIGTERM must still end eventually. */
                log_syntax(file, line, "%s= must be finite.", key);
                return -EINVAL;
        }

        *usec = v;
        return 0;
}

static int config_parse_service_name(const char *file, unsigned line, const char *key, const char *value, void *data) {
        if (!valid_service_name(value)) {
                log_syntax(file, line, "%s= needs a service name of [A-Za-z0-9_.-] characters, got '%s'.", key, value);
                return -EINVAL;
        }
        return free_and_strdup(data, value);
}

static int config_parse_label(const char *file, unsigned line, const char *key, const char *value, void *data) {
        if (has_control_chars(value) || strlen(value) > LABEL_MAX) {
                log_syntax(file, line, "%s= must be at most %d printable characters.", key, LABEL_MAX);
                return -EINVAL;
        }
        return free_and_strdup(data, value);
}

/* remote-controller's --random-prefix: the first 8 hex digits of sha1(controller namespace). */
static int namespace_random_prefix(const char *controller_namespace, char **ret) {
        uint8_t md[SHA1_DIGEST_SIZE];

        sha1(controller_namespace, strlen(controller_namespace), md);
        if (asprintf(ret, "%02x%02x%02x%02x", md[0], md[1], md[2], md[3]) < 0)
                return -ENOMEM;
        return 0;
}

/* A namespace name or part of one: what remote-controller puts in front of the names. */
static int
config_parse_namespace_prefix(const char *file, unsigned line, const char *key, const char *value, void *data) {
        size_t n = strlen(value);

        if (n == 0 || n > 63 || value[0] == '-' || value[n - 1] == '-' ||
            strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789-") != n) {
                log_syntax(file, line, "%s= must be a DNS label (a-z, 0-9, '-', at most 63 characters).", key);
                return -EINVAL;
        }
        return free_and_strdup(data, value);
}

static int config_parse_secret(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char ***l = data;

        /* Secret= and SecretFile= feed one list, so an empty assignment of either resets it. */
        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }
        if (strv_contains(*l, value))
                return 0;
        return strv_extend(l, value);
}

/* Reads a regular file of at most max bytes. Opening non-blocking and checking the type
 * first keeps a FIFO or a device named in the configuration from hanging the daemon. */
static int read_regular_file(const char *path, size_t max, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t n = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        /* The size may change under us: read until EOF, one byte past max at most. */
        buf = malloc(max + 2);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k = read(fd, buf + n, max + 1 - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > max)
                        return -EFBIG;
        }
        buf[n] = '\0';

        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = n;
        return 0;
}

/* Reads the file a setting names (SecretFile=, BrokerPasswordFile=, …): an absolute
 * path to a regular file of at most 1 MiB. -EINVAL after logging, -ENOMEM. */
static int
read_setting_file(const char *file, unsigned line, const char *key, const char *value, char **ret, size_t *ret_size) {
        int r;

        if (value[0] != '/') {
                log_syntax(file, line, "%s= needs an absolute path, got '%s'.", key, value);
                return -EINVAL;
        }
        r = read_regular_file(value, CONFIG_FILE_MAX, ret, ret_size);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                log_syntax_errno(file, line, r, "Failed to read %s=%s: %s", key, value,
                                 r == -EFBIG    ? "larger than 1 MiB"
                                 : r == -EBADFD ? "not a regular file"
                                                : strerror(-r));
                return -EINVAL;
        }
        return 0;
}

static int config_parse_secret_file(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char ***l = data;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        int r;

        if (isempty(value)) {
                *l = strv_free(*l);
                return 0;
        }
        r = read_setting_file(file, line, key, value, &text, &size);
        if (r < 0)
                return r;

        /* One secret per line. Surrounding whitespace is dropped: redacting a slightly
         * shorter string is safe, missing a line that ends in "\r" would not be. */
        for (char *p = text, *end = text + size; p < end;) {
                char *eol = memchr(p, '\n', (size_t) (end - p)), *s, *e;

                if (!eol)
                        eol = end;
                *eol = '\0';
                s = p + strspn(p, " \t\r");
                for (e = eol; e > s && strchr(" \t\r", e[-1]); e--)
                        ;
                *e = '\0';
                p = eol + 1;

                if (*s == '\0' || strv_contains(*l, s))
                        continue;
                r = strv_extend(l, s);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int config_parse_seccomp(const char *file, unsigned line, const char *key, const char *value, void *data) {
        ServiceConfig *s = data;
        _cleanup_free_ char *profile = NULL;
        SeccompMode mode;

        if (streq(value, "auto"))
                mode = SECCOMP_MODE_AUTO;
        else if (streq(value, "default"))
                mode = SECCOMP_MODE_DEFAULT;
        else if (streq(value, "unconfined"))
                mode = SECCOMP_MODE_UNCONFINED;
        else if (value[0] == '/' && !has_control_chars(value) && strlen(value) < PATH_MAX) {
                mode = SECCOMP_MODE_PROFILE;
                profile = strdup(value);
                if (!profile)
                        return -ENOMEM;
                path_normalize(profile);
        } else {
                log_syntax(file, line, "%s= needs auto, default, unconfined or an absolute path, got '%s'.", key,
                           value);
                return -EINVAL;
        }

        s->seccomp = mode;
        free(s->seccomp_profile);
        s->seccomp_profile = TAKE_PTR(profile);
        return 0;
}

static int parse_url_schemes(const char *file,
                             unsigned line,
                             const char *key,
                             const char *value,
                             char **p,
                             const char *const *schemes,
                             const char *expected) {
        bool ok = false;

        for (size_t i = 0; schemes[i]; i++)
                if (startswith(value, schemes[i]) && value[strlen(schemes[i])] != '\0')
                        ok = true;
        if (!ok || has_control_chars(value) || strpbrk(value, " \t")) {
                log_syntax(file, line, "%s= needs %s URL.", key, expected);
                return -EINVAL;
        }
        /* Not echoed: a URL may carry a password. */
        return free_and_strdup(p, value);
}

static int config_parse_amqp_url(const char *file, unsigned line, const char *key, const char *value, void *data) {
        static const char *const schemes[] = {"amqp://", "amqps://", NULL};
        return parse_url_schemes(file, line, key, value, data, schemes, "an amqp:// or amqps://");
}

/* For servers the daemon sends a token to: plain http only to this host. */
static int config_parse_token_url(const char *file, unsigned line, const char *key, const char *value, void *data) {
        static const char *const schemes[] = {"https://", "http://", NULL};

        if (startswith(value, "http://") && !url_host_is_loopback(value)) {
                log_syntax(file, line, "%s= carries a token: it needs https://, or http:// to a loopback address.",
                           key);
                return -EINVAL;
        }
        return parse_url_schemes(file, line, key, value, data, schemes, "an https://");
}

static int config_parse_word(const char *file, unsigned line, const char *key, const char *value, void *data) {
        if (has_control_chars(value) || strpbrk(value, " \t") || strlen(value) > LABEL_MAX) {
                log_syntax(file, line, "%s= needs one word of at most %d printable characters, got '%s'.", key,
                           LABEL_MAX, value);
                return -EINVAL;
        }
        return free_and_strdup(data, value);
}

/* A Lagoon feature flag's value, as remote-controller's --lagoon-feature-flag-* options
 * take them; empty leaves it unset. */
static int config_parse_feature_flag(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char **s = data;

        if (isempty(value)) {
                *s = mfree(*s);
                return 0;
        }
        if (!streq(value, "enabled") && !streq(value, "disabled")) {
                log_syntax(file, line, "%s= takes enabled or disabled, got '%s'.", key, value);
                return -EINVAL;
        }
        return free_and_strdup(s, value);
}

static int config_parse_size(const char *file, unsigned line, const char *key, const char *value, void *data) {
        uint64_t *size = data, factor = 1, v;
        unsigned n;
        size_t len = strlen(value);
        _cleanup_free_ char *digits = NULL;

        if (len > 0 && strchr("KMG", value[len - 1])) {
                factor = value[len - 1] == 'K' ? 1024 : value[len - 1] == 'M' ? 1024 * 1024 : 1024 * 1024 * 1024;
                len--;
        }
        digits = strndup(value, len);
        if (!digits)
                return -ENOMEM;
        if (parse_unsigned(digits, &n) < 0 || n == 0) {
                log_syntax(file, line,
                           "%s= needs a positive size in bytes, with an optional K, M or G suffix, got '%s'.", key,
                           value);
                return -EINVAL;
        }
        v = (uint64_t) n * factor;
        if (v < 4096) {
                log_syntax(file, line, "%s= must be at least 4096 bytes, got '%s'.", key, value);
                return -EINVAL;
        }
        *size = v;
        return 0;
}

/* A size, or 0 for none. */
static int config_parse_size_or_zero(const char *file, unsigned line, const char *key, const char *value, void *data) {
        if (streq(value, "0")) {
                *(uint64_t *) data = 0;
                return 0;
        }
        return config_parse_size(file, line, key, value, data);
}

/* A file holding one credential (password, token, key): read now, trailing whitespace
 * dropped; the value joins the secrets in config_finalize(). */
static int
config_parse_credential_file(const char *file, unsigned line, const char *key, const char *value, void *data) {
        char **p = data;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        int r;

        r = read_setting_file(file, line, key, value, &text, &size);
        if (r < 0)
                return r;
        while (size > 0 && strchr(" \t\r\n", text[size - 1]))
                text[--size] = '\0';
        if (size == 0 || memchr(text, '\0', size)) {
                log_syntax(file, line, "%s=%s is empty or contains a NUL byte.", key, value);
                return -EINVAL;
        }
        free(*p);
        *p = TAKE_PTR(text);
        return 0;
}

static const ConfigItem config_items[] = {
        {SECTION_DAEMON, "StateDirectory", config_parse_path, offsetof(Config, state_dir), "/var/lib/lagoon-taskd"},
        {SECTION_DAEMON, "RuntimeDirectory", config_parse_path, offsetof(Config, runtime_dir), "/run/lagoon-taskd"},
        /* NULL: derived from RuntimeDirectory= in config_finalize() */
        {SECTION_DAEMON, "ListenSocket", config_parse_socket_path, offsetof(Config, listen_socket), NULL},
        {SECTION_DAEMON, "SocketGroup", config_parse_group, offsetof(Config, socket_group), "lagoon-task"},
        {SECTION_DAEMON, "LogLevel", config_parse_log_level, offsetof(Config, log_level), "info"},

        /* NULL: crun or runc, chosen in config_finalize() */
        {SECTION_RUNTIME, "Runtime", config_parse_command, offsetof(Config, runtime), NULL},
        {SECTION_RUNTIME, "RuntimeArguments", config_parse_words, offsetof(Config, runtime_args), NULL, true},
        {SECTION_RUNTIME, "Conmon", config_parse_command, offsetof(Config, conmon), "conmon"},
        {SECTION_RUNTIME, "ConmonArguments", config_parse_words, offsetof(Config, conmon_args), NULL, true},
        {SECTION_RUNTIME, "Init", config_parse_optional_path, offsetof(Config, init), "/usr/bin/catatonit"},

        {SECTION_TASKS, "MaxRunning", config_parse_unsigned_positive, offsetof(Config, max_running), "4"},
        {SECTION_TASKS, "MaxRunningPerEnvironment", config_parse_unsigned,
         offsetof(Config, max_running_per_environment), "0"},
        {SECTION_TASKS, "MaxQueued", config_parse_unsigned_positive, offsetof(Config, max_queued), "1000"},
        {SECTION_TASKS, "DefaultTimeoutSec", config_parse_timeout, offsetof(Config, default_timeout_usec), "6h"},
        {SECTION_TASKS, "KillGraceSec", config_parse_finite_duration, offsetof(Config, kill_grace_usec), "10s"},
        {SECTION_TASKS, "KeepFinished", config_parse_unsigned, offsetof(Config, keep_finished), "100"},
        {SECTION_TASKS, "TaskLogSizeMax", config_parse_size, offsetof(Config, task_log_size_max), "32M"},
        {SECTION_TASKS, "MinFreeSpace", config_parse_size_or_zero, offsetof(Config, min_free_space), "64M"},
        {SECTION_TASKS, "DefaultService", config_parse_service_name, offsetof(Config, default_service), "cli"},
        {SECTION_TASKS, "DefaultProject", config_parse_label, offsetof(Config, default_project), "local"},
        {SECTION_TASKS, "DefaultEnvironment", config_parse_label, offsetof(Config, default_environment), "local"},
        {SECTION_TASKS, "Secret", config_parse_secret, offsetof(Config, secrets), NULL, true},
        {SECTION_TASKS, "SecretFile", config_parse_secret_file, offsetof(Config, secrets), NULL, true},

        {SECTION_LAGOON, "TargetName", config_parse_word, offsetof(Config, target_name), NULL},
        {SECTION_LAGOON, "BrokerURL", config_parse_amqp_url, offsetof(Config, broker_url), NULL},
        {SECTION_LAGOON, "BrokerUser", config_parse_word, offsetof(Config, broker_user), NULL},
        {SECTION_LAGOON, "BrokerPasswordFile", config_parse_credential_file, offsetof(Config, broker_password), NULL},
        {SECTION_LAGOON, "BrokerCAFile", config_parse_path, offsetof(Config, broker_ca_file), NULL},
        {SECTION_LAGOON, "BrokerCertFile", config_parse_path, offsetof(Config, broker_cert_file), NULL},
        {SECTION_LAGOON, "BrokerKeyFile", config_parse_path, offsetof(Config, broker_key_file), NULL},
        {SECTION_LAGOON, "BrokerHeartbeatSec", config_parse_unsigned_positive, offsetof(Config, broker_heartbeat_sec),
         "30"},
        {SECTION_LAGOON, "BrokerPrefetch", config_parse_unsigned_positive, offsetof(Config, broker_prefetch), "4"},
        {SECTION_LAGOON, "APIURL", config_parse_token_url, offsetof(Config, api_url), NULL},
        {SECTION_LAGOON, "APITokenFile", config_parse_credential_file, offsetof(Config, api_token), NULL},
        {SECTION_LAGOON, "JWTSecretFile", config_parse_credential_file, offsetof(Config, jwt_secret), NULL},
        {SECTION_LAGOON, "JWTAudience", config_parse_word, offsetof(Config, jwt_audience), "api.dev"},
        {SECTION_LAGOON, "APICAFile", config_parse_path, offsetof(Config, api_ca_file), NULL},
        {SECTION_LAGOON, "LogUpdateIntervalSec", config_parse_finite_duration, offsetof(Config, log_interval_usec),
         "5s"},
        {SECTION_LAGOON, "LogSizeMax", config_parse_size, offsetof(Config, log_size_max), "8M"},
        {SECTION_LAGOON, "FinalStatusDelaySec", config_parse_finite_duration, offsetof(Config, final_delay_usec), "2s"},
        {SECTION_LAGOON, "BrokerMessageSizeMax", config_parse_size, offsetof(Config, message_size_max), "16M"},
        {SECTION_LAGOON, "SecretVariables", config_parse_words, offsetof(Config, secret_variables), NULL, true},
        {SECTION_LAGOON, "APIHost", config_parse_word, offsetof(Config, lagoon_api_host), NULL},
        {SECTION_LAGOON, "SSHHost", config_parse_word, offsetof(Config, lagoon_ssh_host), NULL},
        {SECTION_LAGOON, "SSHPort", config_parse_word, offsetof(Config, lagoon_ssh_port), NULL},
        {SECTION_LAGOON, "TokenHost", config_parse_word, offsetof(Config, lagoon_token_host), NULL},
        {SECTION_LAGOON, "TokenPort", config_parse_word, offsetof(Config, lagoon_token_port), NULL},
        {SECTION_LAGOON, "HTTPProxy", config_parse_word, offsetof(Config, http_proxy), NULL},
        {SECTION_LAGOON, "ForceRootlessWorkload", config_parse_feature_flag, offsetof(Config, rootless_force), NULL},
        {SECTION_LAGOON, "DefaultRootlessWorkload", config_parse_feature_flag, offsetof(Config, rootless_default),
         NULL},
        {SECTION_LAGOON, "HTTPSProxy", config_parse_word, offsetof(Config, https_proxy), NULL},
        {SECTION_LAGOON, "NoProxy", config_parse_word, offsetof(Config, no_proxy), NULL},
        {SECTION_LAGOON, "SSHKeyFile", config_parse_path, offsetof(Config, ssh_key_file), NULL},
        {SECTION_LAGOON, "DeployerTokenFile", config_parse_path, offsetof(Config, deployer_token_file), NULL},
        {SECTION_LAGOON, "NamespacePrefix", config_parse_namespace_prefix, offsetof(Config, namespace_prefix), NULL},
        {SECTION_LAGOON, "RandomNamespacePrefix", config_parse_bool, offsetof(Config, random_namespace_prefix), "no"},
        {SECTION_LAGOON, "ControllerNamespace", config_parse_namespace_prefix, offsetof(Config, controller_namespace),
         NULL},
        {SECTION_LAGOON, "RemoteControllerTarget", config_parse_word, offsetof(Config, rc_target), NULL},

        {SECTION_KUBERNETES, "NodeName", config_parse_word, offsetof(Config, node_name), NULL},
        {SECTION_KUBERNETES, "Kubeconfig", config_parse_path, offsetof(Config, kubeconfig), NULL},
        {SECTION_KUBERNETES, "Context", config_parse_word, offsetof(Config, kube_context), NULL},
        {SECTION_KUBERNETES, "Server", config_parse_token_url, offsetof(Config, kube_server), NULL},
        {SECTION_KUBERNETES, "CAFile", config_parse_path, offsetof(Config, kube_ca_file), NULL},
        {SECTION_KUBERNETES, "TokenFile", config_parse_path, offsetof(Config, kube_token_file), NULL},
        {SECTION_KUBERNETES, "ClientCertFile", config_parse_path, offsetof(Config, kube_cert_file), NULL},
        {SECTION_KUBERNETES, "ClientKeyFile", config_parse_path, offsetof(Config, kube_key_file), NULL},
        {SECTION_KUBERNETES, "InCluster", config_parse_bool, offsetof(Config, kube_in_cluster), "no"},
        {SECTION_KUBERNETES, "KubeletURL", config_parse_token_url, offsetof(Config, kubelet_url), NULL},
        {SECTION_KUBERNETES, "KubeletCAFile", config_parse_path, offsetof(Config, kubelet_ca_file), NULL},
        {SECTION_KUBERNETES, "KubeletTokenFile", config_parse_path, offsetof(Config, kubelet_token_file), NULL},
        {SECTION_KUBERNETES, "KubeletCertFile", config_parse_path, offsetof(Config, kubelet_cert_file), NULL},
        {SECTION_KUBERNETES, "KubeletKeyFile", config_parse_path, offsetof(Config, kubelet_key_file), NULL},
        {SECTION_KUBERNETES, "ContainerdState", config_parse_path, offsetof(Config, containerd_state),
         "/run/containerd"},
        {SECTION_KUBERNETES, "ContainerdNamespace", config_parse_word, offsetof(Config, containerd_namespace),
         "k8s.io"},
        {SECTION_KUBERNETES, "CRIORunRoot", config_parse_path, offsetof(Config, crio_run_root),
         "/run/containers/storage"},
        {SECTION_KUBERNETES, "KeepTaskPods", config_parse_unsigned, offsetof(Config, keep_task_pods), "1"},
        {SECTION_KUBERNETES, "APINamespaces", config_parse_words, offsetof(Config, api_namespaces), NULL, true},
        {SECTION_KUBERNETES, "ClaimNamespace", config_parse_namespace_prefix, offsetof(Config, claim_namespace), NULL},
        {SECTION_KUBERNETES, "ClaimDurationSec", config_parse_finite_duration, offsetof(Config, claim_duration_usec),
         "60s"},
        {SECTION_KUBERNETES, "ClaimRetentionSec", config_parse_finite_duration, offsetof(Config, claim_retention_usec),
         "1h"},

        {SECTION_SERVICE, "Bundle", config_parse_path, offsetof(ServiceConfig, bundle), NULL},
        /* offset 0: the parser sets both seccomp and seccomp_profile */
        {SECTION_SERVICE, "Seccomp", config_parse_seccomp, 0, "auto"},
};

static const ConfigItem *config_item_find(Section section, const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(config_items); i++)
                if (config_items[i].section == section && streq(config_items[i].key, key))
                        return config_items + i;
        return NULL;
}

/* Levenshtein distance, case-insensitive, capped: only "close" matters. */
static size_t edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), prev[65], cur[65];

        if (la > 64 || lb > 64)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                prev[j] = j;
        for (size_t i = 1; i <= la; i++) {
                cur[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t sub =
                                prev[j - 1] + (tolower((unsigned char) a[i - 1]) != tolower((unsigned char) b[j - 1]));
                        cur[j] = MIN(MIN(prev[j] + 1, cur[j - 1] + 1), sub);
                }
                memcpy(prev, cur, sizeof(size_t) * (lb + 1));
        }
        return prev[lb];
}

/* The key of the section closest to an unknown one, for "did you mean"; NULL if none is close. */
static const char *config_item_suggest(Section section, const char *key) {
        const char *best = NULL;
        size_t best_d = 3; /* at most two edits */

        for (size_t i = 0; i < ELEMENTSOF(config_items); i++) {
                size_t d;

                if (config_items[i].section != section)
                        continue;
                d = edit_distance(config_items[i].key, key);
                if (d < best_d) {
                        best_d = d;
                        best = config_items[i].key;
                }
        }
        return best;
}

static int config_item_apply(const ConfigItem *item, void *base, const char *file, unsigned line, const char *value) {
        void *data = (uint8_t *) base + item->offset;

        /* systemd convention: an empty assignment restores the default. */
        if (!item->list && isempty(value)) {
                if (!item->default_value) {
                        char **s = data;
                        *s = mfree(*s);
                        return 0;
                }
                value = item->default_value;
        }

        return item->parse(file, line, item->key, value, data);
}

static void service_config_done(ServiceConfig *s) {
        free(s->name);
        free(s->bundle);
        free(s->seccomp_profile);
        free(s->section_file);
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;

        free(c->state_dir);
        free(c->runtime_dir);
        free(c->listen_socket);
        free(c->socket_group);
        free(c->runtime);
        strv_free(c->runtime_args);
        strv_free(c->api_namespaces);
        free(c->conmon);
        free(c->init);
        strv_free(c->conmon_args);
        free(c->default_service);
        free(c->default_project);
        free(c->default_environment);
        strv_free(c->secrets);
        strv_free(c->assignments);

        for (size_t i = 0; i < c->n_services; i++)
                service_config_done(c->services + i);
        free(c->services);
        for (size_t i = 0; i < c->n_images; i++)
                service_config_done(c->images + i);
        free(c->images);

        free(c->target_name);
        free(c->broker_url);
        free(c->broker_user);
        free(c->broker_password);
        free(c->broker_ca_file);
        free(c->broker_cert_file);
        free(c->broker_key_file);
        free(c->api_url);
        free(c->api_token);
        free(c->jwt_secret);
        free(c->jwt_audience);
        free(c->api_ca_file);
        strv_free(c->secret_variables);
        free(c->lagoon_api_host);
        free(c->lagoon_ssh_host);
        free(c->lagoon_ssh_port);
        free(c->lagoon_token_host);
        free(c->namespace_prefix);
        free(c->rc_target);
        free(c->controller_namespace);
        free(c->lagoon_token_port);
        free(c->http_proxy);
        free(c->rootless_force);
        free(c->rootless_default);
        free(c->https_proxy);
        free(c->no_proxy);
        free(c->ssh_key_file);
        free(c->deployer_token_file);

        free(c->node_name);
        free(c->kubeconfig);
        free(c->kube_context);
        free(c->kube_server);
        free(c->kube_ca_file);
        free(c->kube_token_file);
        free(c->kube_cert_file);
        free(c->kube_key_file);
        free(c->kubelet_url);
        free(c->kubelet_ca_file);
        free(c->kubelet_token_file);
        free(c->kubelet_cert_file);
        free(c->kubelet_key_file);
        free(c->claim_namespace);
        free(c->containerd_state);
        free(c->containerd_namespace);
        free(c->crio_run_root);

        return mfree(c);
}

Config *config_new(void) {
        _cleanup_(config_freep) Config *c = NULL;

        c = calloc(1, sizeof(Config));
        if (!c)
                return NULL;

        for (size_t i = 0; i < ELEMENTSOF(config_items); i++) {
                const ConfigItem *item = config_items + i;

                if (item->section == SECTION_SERVICE || item->list || !item->default_value)
                        continue;
                if (config_item_apply(item, c, "(defaults)", 0, item->default_value) < 0)
                        return NULL; /* only OOM: the defaults are valid */
        }
        static const char *const secret_globs[] = {"*PASSWORD*", "*SECRET*", "*TOKEN*", "*_KEY"};
        for (size_t i = 0; i < ELEMENTSOF(secret_globs); i++)
                if (strv_extend(&c->secret_variables, secret_globs[i]) < 0)
                        return NULL;

        return TAKE_PTR(c);
}

static const ServiceConfig *find_section(const ServiceConfig *a, size_t n, const char *name) {
        if (!name)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (streq(a[i].name, name))
                        return a + i;
        return NULL;
}

bool config_kube_enabled(const Config *c) {
        return c && (c->kubelet_url || c->kubeconfig || c->kube_server || c->kube_in_cluster);
}

const ServiceConfig *config_find_service(const Config *c, const char *name) {
        return c ? find_section(c->services, c->n_services, name) : NULL;
}

int config_service_names(const Config *c, char **ret) {
        _cleanup_free_ char *s = NULL;
        size_t n = 1;
        char *p;

        for (size_t i = 0; i < c->n_services; i++)
                n += strlen(c->services[i].name) + 2;
        s = p = malloc(n);
        if (!s)
                return -ENOMEM;
        *p = 0;
        for (size_t i = 0; i < c->n_services; i++)
                p = stpcpy(stpcpy(p, i > 0 ? ", " : ""), c->services[i].name);
        *ret = TAKE_PTR(s);
        return 0;
}

const ServiceConfig *config_find_image(const Config *c, const char *reference) {
        return c ? find_section(c->images, c->n_images, reference) : NULL;
}

/* Finds or appends the service (or image); a repeated section (also from a drop-in)
 * merges into it. */
static int config_get_service(ServiceConfig **array,
                              size_t *n_array,
                              const char *name,
                              const char *file,
                              unsigned line,
                              size_t *ret) {
        _cleanup_free_ char *n = NULL, *f = NULL;
        ServiceConfig *services;

        for (size_t i = 0; i < *n_array; i++)
                if (streq((*array)[i].name, name)) {
                        *ret = i;
                        return 0;
                }

        n = strdup(name);
        f = strdup(file);
        if (!n || !f)
                return -ENOMEM;

        services = reallocarray(*array, *n_array + 1, sizeof(ServiceConfig));
        if (!services)
                return -ENOMEM;
        *array = services;

        services[*n_array] = (ServiceConfig){
                .name = TAKE_PTR(n),
                .seccomp = SECCOMP_MODE_AUTO,
                .section_file = TAKE_PTR(f),
                .section_line = line,
        };
        *ret = (*n_array)++;
        return 0;
}

static bool valid_image_reference(const char *s) {
        size_t n = strlen(s);

        return n > 0 && n <= SERVICE_NAME_MAX &&
               strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-:/@") == n;
}

static int parse_section_header(Config *c, const char *file, unsigned line, ParseState *st, char *l) {
        size_t n = strlen(l);
        const char *name;
        int r;

        st->section = SECTION_INVALID;

        if (n < 2 || l[n - 1] != ']') {
                log_syntax(file, line, "Invalid section header, expected [Section].");
                return -EINVAL;
        }
        l[n - 1] = '\0';
        l++;

        for (Section s = SECTION_DAEMON; s < SECTION_SERVICE; s++)
                if (streq(l, section_names[s])) {
                        st->section = s;
                        return 0;
                }

        name = startswith(l, "Service");
        if (!name)
                name = startswith(l, "Image");
        if (name && (*name == '\0' || strchr(" \t", *name))) {
                bool image = l[0] == 'I';
                char *e;

                name += strspn(name, " \t");
                e = (char *) name + strlen(name);
                while (e > name && strchr(" \t", e[-1]))
                        *--e = '\0';

                if (!image && !valid_service_name(name)) {
                        log_syntax(file, line,
                                   "Section [Service NAME] needs a NAME of 1-%d characters [A-Za-z0-9_.-], got '%s'.",
                                   SERVICE_NAME_MAX, name);
                        return -EINVAL;
                }
                if (image && !valid_image_reference(name)) {
                        log_syntax(file, line,
                                   "Section [Image REFERENCE] needs an image reference of 1-%d characters "
                                   "[A-Za-z0-9_.-:/@], got '%s'.",
                                   SERVICE_NAME_MAX, name);
                        return -EINVAL;
                }

                r = image ? config_get_service(&c->images, &c->n_images, name, file, line, &st->service)
                          : config_get_service(&c->services, &c->n_services, name, file, line, &st->service);
                if (r < 0)
                        return r;
                st->section = image ? SECTION_IMAGE : SECTION_SERVICE;
                return 0;
        }

        log_syntax(file, line, "Unknown section [%s].", l);
        return -EINVAL;
}

static char *strstrip(char *s) {
        char *e;

        s += strspn(s, " \t\r\n");
        e = s + strlen(s);
        while (e > s && strchr(" \t\r\n", e[-1]))
                e--;
        *e = '\0';
        return s;
}

/* Keeps Config.assignments in step with what config_item_apply() did: an assignment
 * replaces the key's earlier one, a list's appends, and an empty one of either drops what
 * was there (default, or empty list). */
static int record_assignment(Config *c, const ParseState *st, const ConfigItem *item, const char *value) {
        _cleanup_free_ char *prefix = NULL;
        char *entry;
        size_t n = 0;

        if (asprintf(&prefix, "[%s%s%s] %s=", section_names[st->section], st->section >= SECTION_SERVICE ? " " : "",
                     st->section == SECTION_SERVICE ? c->services[st->service].name
                     : st->section == SECTION_IMAGE ? c->images[st->service].name
                                                    : "",
                     item->key) < 0)
                return -ENOMEM;
        if (!item->list || isempty(value))
                for (char **a = c->assignments; a && *a; a++) {
                        if (startswith(*a, prefix))
                                free(*a);
                        else
                                c->assignments[n++] = *a;
                }
        else
                n = strv_length(c->assignments);
        if (c->assignments)
                c->assignments[n] = NULL;
        if (isempty(value))
                return 0;
        if (asprintf(&entry, "%s%s", prefix, value) < 0)
                return -ENOMEM;
        return strv_push(&c->assignments, entry);
}

/* The values of these are not to be logged: Secret= is one, BrokerURL= may hold a password. */
static bool assignment_is_secret(const char *a) {
        const char *k = strchr(a, ' ');
        return k && (startswith(k + 1, "Secret=") || startswith(k + 1, "BrokerURL="));
}

/* The values of one key ("[Section] Key=") in l, joined by spaces; NULL when it has none. */
static int assignment_values(char *const *l, const char *prefix, char **ret) {
        _cleanup_free_ char *joined = NULL;

        for (char *const *a = l; a && *a; a++) {
                const char *v = startswith(*a, prefix);
                char *j;

                if (!v)
                        continue;
                if (asprintf(&j, "%s%s%s", strempty(joined), joined ? " " : "", v) < 0)
                        return -ENOMEM;
                free(joined);
                joined = j;
        }
        *ret = TAKE_PTR(joined);
        return 0;
}

static int add_change(char ***l, const char *prefix, const char *a, const char *b, bool secret) {
        char *line;
        int n;

        if (secret)
                n = asprintf(&line, "%s %s (values not shown)", prefix, !a ? "set" : !b ? "unset" : "changed");
        else if (!a)
                n = asprintf(&line, "%s%s (was the default)", prefix, b);
        else if (!b)
                n = asprintf(&line, "%s back to the default (was %s)", prefix, a);
        else
                n = asprintf(&line, "%s%s → %s", prefix, a, b);
        if (n < 0)
                return -ENOMEM;
        return strv_push(l, line);
}

int config_changes(const Config *old, const Config *new, char ***ret) {
        _cleanup_strv_free_ char **l = NULL, **seen = NULL;
        static const struct {
                size_t offset;
                const char *what;
        } contents[] = {
                {offsetof(Config, broker_password), "BrokerPasswordFile='s contents"},
                {offsetof(Config, api_token), "APITokenFile='s contents"},
                {offsetof(Config, jwt_secret), "JWTSecretFile='s contents"},
        };
        int r;

        /* Each key of either side once, in the new order first, then what only the old one had. */
        for (unsigned side = 0; side < 2; side++)
                for (char *const *a = side == 0 ? new->assignments : old->assignments; a &&*a; a++) {
                        _cleanup_free_ char *prefix = NULL, *x = NULL, *y = NULL;
                        const char *eq = strchr(*a, '=');

                        prefix = strndup(*a, eq ? (size_t) (eq - *a) + 1 : strlen(*a));
                        if (!prefix)
                                return -ENOMEM;
                        if (strv_contains(seen, prefix))
                                continue;
                        if (assignment_values(old->assignments, prefix, &x) < 0 ||
                            assignment_values(new->assignments, prefix, &y) < 0)
                                return -ENOMEM;
                        if (!streq_ptr(x, y) && (r = add_change(&l, prefix, x, y, assignment_is_secret(*a))) < 0)
                                return r;
                        if (strv_push(&seen, TAKE_PTR(prefix)) < 0)
                                return -ENOMEM;
                }

        /* What files hold (SecretFile=, the credential files) is not in the assignments. */
        for (size_t i = 0; i < ELEMENTSOF(contents); i++) {
                const char *a = *(char *const *) ((const uint8_t *) old + contents[i].offset),
                           *b = *(char *const *) ((const uint8_t *) new + contents[i].offset);
                char *line;

                if (streq_ptr(a, b))
                        continue;
                if (asprintf(&line, "%s changed (not shown)", contents[i].what) < 0 || strv_push(&l, line) < 0)
                        return -ENOMEM;
        }
        {
                size_t na = strv_length(old->secrets), nb = strv_length(new->secrets);
                bool same = na == nb;

                for (size_t i = 0; same && i < na; i++)
                        same = strv_contains(new->secrets, old->secrets[i]);
                if (!same) {
                        char *line;

                        if (asprintf(&line, "the secrets to mask changed: %zu now, %zu before (not shown)", nb, na) <
                                    0 ||
                            strv_push(&l, line) < 0)
                                return -ENOMEM;
                }
        }

        if (!l && !(l = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret = TAKE_PTR(l);
        return 0;
}

static int parse_line(Config *c, const char *file, unsigned line, ParseState *st, char *l) {
        const ConfigItem *item;
        char *eq, *key, *value;
        void *base;
        int r;

        l = strstrip(l);
        if (*l == '\0')
                return 0;

        if (*l == '[')
                return parse_section_header(c, file, line, st, l);

        if (st->section == SECTION_INVALID)
                return 0; /* reported with the header */

        /* The line itself is not echoed: it may hold a secret. */
        eq = strchr(l, '=');
        if (!eq) {
                log_syntax(file, line, "Missing '=' in assignment.");
                return -EINVAL;
        }
        *eq = '\0';
        key = strstrip(l);
        value = strstrip(eq + 1);

        if (*key == '\0') {
                log_syntax(file, line, "Missing key name before '='.");
                return -EINVAL;
        }
        if (st->section == SECTION_NONE) {
                log_syntax(file, line, "Assignment %s= outside of any section.", key);
                return -EINVAL;
        }

        item = config_item_find(st->section == SECTION_IMAGE ? SECTION_SERVICE : st->section, key);
        if (!item) {
                const char *hint =
                        config_item_suggest(st->section == SECTION_IMAGE ? SECTION_SERVICE : st->section, key);

                /* Any problem refuses the whole configuration: nothing is "ignored". */
                log_syntax(file, line, "Unknown key %s= in section [%s%s%s]%s%s%s", key, section_names[st->section],
                           st->section >= SECTION_SERVICE ? " " : "",
                           st->section == SECTION_SERVICE ? c->services[st->service].name
                           : st->section == SECTION_IMAGE ? c->images[st->service].name
                                                          : "",
                           hint ? "; did you mean " : ".", strempty(hint), hint ? "=?" : "");
                return -EINVAL;
        }

        base = st->section == SECTION_SERVICE ? (void *) (c->services + st->service)
               : st->section == SECTION_IMAGE ? (void *) (c->images + st->service)
                                              : (void *) c;
        r = config_item_apply(item, base, file, line, value);
        if (r < 0)
                return r;
        return record_assignment(c, st, item, value);
}

int config_parse_string(Config *c, const char *file_name, const char *text, size_t size) {
        _cleanup_free_ char *cont = NULL; /* the logical line being assembled */
        size_t cont_len = 0;
        unsigned line = 0, cont_line = 0, n_problems = 0;
        ParseState st = {.section = SECTION_NONE};
        int r;

        if (!c)
                return -EINVAL;
        file_name = file_name ?: "(string)";
        if (!text) {
                text = "";
                size = 0;
        }

        if (size > CONFIG_FILE_MAX) {
                log_error("%s: File is larger than 1 MiB.", file_name);
                return -EINVAL;
        }

        for (const char *p = text, *end = text + size; p < end;) {
                const char *l = p, *eol = memchr(p, '\n', (size_t) (end - p));
                size_t len = eol ? (size_t) (eol - p) : (size_t) (end - p), ws, bs;
                char *t;

                p = eol ? eol + 1 : end;
                line++;

                if (len > 0 && l[len - 1] == '\r')
                        len--;

                if (len > CONFIG_LINE_MAX) {
                        log_syntax(file_name, line, "Line is longer than 64 KiB.");
                        n_problems++;
                        cont = mfree(cont);
                        continue;
                }
                if (memchr(l, '\0', len)) {
                        log_syntax(file_name, line, "Line contains a NUL byte.");
                        n_problems++;
                        cont = mfree(cont);
                        continue;
                }

                /* Comments are skipped even in the middle of a continued line, as systemd does. */
                ws = 0;
                while (ws < len && strchr(" \t", l[ws]))
                        ws++;
                if (ws < len && (l[ws] == '#' || l[ws] == ';'))
                        continue;

                if (!cont) {
                        cont_line = line;
                        cont_len = 0;
                }
                if (cont_len + len > CONFIG_LINE_MAX) {
                        log_syntax(file_name, cont_line, "Continued line is longer than 64 KiB.");
                        n_problems++;
                        cont = mfree(cont);
                        continue;
                }
                t = realloc(cont, cont_len + len + 1);
                if (!t)
                        return log_oom();
                cont = t;
                memcpy(cont + cont_len, l, len);
                cont_len += len;
                cont[cont_len] = '\0';

                /* An odd number of trailing backslashes continues the line; that backslash
                 * becomes a space. */
                for (bs = 0; bs < len && l[len - 1 - bs] == '\\'; bs++)
                        ;
                if (bs % 2 == 1) {
                        cont[cont_len - 1] = ' ';
                        continue;
                }

                r = parse_line(c, file_name, cont_line, &st, cont);
                cont = mfree(cont);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        n_problems++;
        }

        /* A continuation on the last line ends with the file. */
        if (cont) {
                r = parse_line(c, file_name, cont_line, &st, cont);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        n_problems++;
        }

        return n_problems > 0 ? -EINVAL : 0;
}

static int hex_value(char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
}

/* The password of a URL's user:password@, percent-decoded as the AMQP client reads it;
 * *ret NULL when there is none. */
static int url_userinfo_password(const char *url, char **ret) {
        const char *a = strstr(url, "://"), *at, *colon;
        char *p, *o;
        size_t n;

        *ret = NULL;
        if (!a)
                return 0;
        a += 3;
        n = strcspn(a, "/?#");
        at = memrchr(a, '@', n);
        colon = at ? memchr(a, ':', at - a) : NULL;
        if (!colon || colon + 1 == at)
                return 0;
        p = o = strndup(colon + 1, at - colon - 1);
        if (!p)
                return -ENOMEM;
        for (const char *i = p; *i; i++) {
                int hi, lo;
                if (i[0] == '%' && (hi = hex_value(i[1])) >= 0 && (lo = hex_value(i[2])) >= 0) {
                        *o++ = (char) (hi << 4 | lo);
                        i += 2;
                } else
                        *o++ = *i;
        }
        *o = 0;
        *ret = p;
        return 0;
}

/* Whether unified_path is a cgroup2 mount with controllers: a hybrid host that crun 1.8
 * refuses ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"). A
 * hybrid host with an empty cgroup2 hierarchy (systemd's) is fine for crun. */
static bool cgroup_hybrid_with_controllers(const char *unified_path) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        struct statfs sfs;

        if (!unified_path || statfs(unified_path, &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC)
                return false;
        path = path_join(unified_path, "cgroup.controllers");
        if (!path || read_full_file(path, 4096, &text, NULL) < 0)
                return false;
        return !isempty(text + strspn(text, " \n"));
}

/* crun starts a task's container in well under runc's time (bench/run: create, start and
 * delete are C, not a Go runtime each); runc stays the fallback. */
const char *config_default_runtime(const char *unified_path, const char **ret_reason) {
        _cleanup_free_ char *crun = NULL;
        const char *reason, *pick = "runc";

        if (find_executable("crun", &crun) < 0)
                reason = "Runtime= not set and crun not installed";
        else if (cgroup_hybrid_with_controllers(unified_path))
                reason = "Runtime= not set; crun is installed but refuses this cgroups v1/v2 hybrid host";
        else {
                pick = "crun";
                reason = "Runtime= not set; crun preferred when installed";
        }
        if (ret_reason)
                *ret_reason = reason;
        return pick;
}

int config_finalize(Config *c) {
        int ret = 0;

        if (!c)
                return -EINVAL;

        if (!c->runtime) {
                c->runtime = strdup(config_default_runtime(CONFIG_CGROUP_UNIFIED, &c->runtime_default_reason));
                if (!c->runtime)
                        return log_oom();
        }

        if (!c->listen_socket) {
                struct sockaddr_un sa;
                _cleanup_free_ char *p = NULL;

                p = path_join(c->runtime_dir, "api.sock");
                if (!p)
                        return log_oom();
                if (strlen(p) >= sizeof(sa.sun_path)) {
                        log_error("RuntimeDirectory=%s is too long for the API socket path %s; set ListenSocket=.",
                                  c->runtime_dir, p);
                        ret = -EINVAL;
                } else
                        c->listen_socket = TAKE_PTR(p);
        }

        for (size_t i = 0; i < c->n_services; i++) {
                const ServiceConfig *s = c->services + i;

                if (!s->bundle) {
                        log_syntax(strna(s->section_file), s->section_line, "[Service %s] has no Bundle=.", s->name);
                        ret = -EINVAL;
                }
        }
        for (size_t i = 0; i < c->n_images; i++) {
                const ServiceConfig *s = c->images + i;

                if (!s->bundle) {
                        log_syntax(strna(s->section_file), s->section_line, "[Image %s] has no Bundle=.", s->name);
                        ret = -EINVAL;
                }
        }

        if ((c->broker_url || c->api_url) && !c->target_name) {
                log_error("[Lagoon] BrokerURL= and APIURL= need TargetName= (the deploy target's name).");
                ret = -EINVAL;
        }
        if (c->rc_target && !c->broker_url) {
                log_error("[Lagoon] RemoteControllerTarget= needs BrokerURL= (messages are handed on through the "
                          "broker).");
                ret = -EINVAL;
        }
        if (c->rc_target && streq_ptr(c->rc_target, c->target_name)) {
                log_error(
                        "[Lagoon] RemoteControllerTarget= must differ from TargetName= (remote-controller runs under a "
                        "second target name).");
                ret = -EINVAL;
        }
        if (c->random_namespace_prefix) {
                char *p = NULL;

                if (!c->controller_namespace) {
                        log_error("[Lagoon] RandomNamespacePrefix=yes needs ControllerNamespace=.");
                        ret = -EINVAL;
                } else if (namespace_random_prefix(c->controller_namespace, &p) < 0)
                        return log_oom();
                else {
                        free(c->namespace_prefix);
                        c->namespace_prefix = p;
                }
        }
        if (c->api_url && !c->api_token && !c->jwt_secret) {
                log_error("[Lagoon] APIURL= needs APITokenFile= or JWTSecretFile=.");
                ret = -EINVAL;
        }

        int n_api = !!c->kubeconfig + !!c->kube_server + !!c->kube_in_cluster;
        if (n_api > 1) {
                log_error("[Kubernetes] Kubeconfig=, Server= and InCluster=yes exclude each other.");
                ret = -EINVAL;
        }
        if (!c->kube_server && (c->kube_ca_file || c->kube_token_file || c->kube_cert_file || c->kube_key_file)) {
                log_error("[Kubernetes] CAFile=, TokenFile=, ClientCertFile= and ClientKeyFile= go with Server=.");
                ret = -EINVAL;
        }
        if (!!c->kube_cert_file != !!c->kube_key_file || !!c->kubelet_cert_file != !!c->kubelet_key_file) {
                log_error("[Kubernetes] a client certificate needs its key and the other way round.");
                ret = -EINVAL;
        }
        if (c->claim_namespace && !c->kubeconfig && !c->kube_server && !c->kube_in_cluster) {
                log_error("[Kubernetes] ClaimNamespace= needs the API server (Kubeconfig=, Server= or InCluster=).");
                ret = -EINVAL;
        }
        if (c->claim_duration_usec < 3 * USEC_PER_SEC) {
                log_error("[Kubernetes] ClaimDurationSec= must be at least 3s (claims are renewed every third of it).");
                ret = -EINVAL;
        }
        if (c->kube_context && !c->kubeconfig) {
                log_error("[Kubernetes] Context= needs Kubeconfig=.");
                ret = -EINVAL;
        }
        if (config_kube_enabled(c) && !c->node_name) {
                char host[HOST_NAME_MAX + 1] = {};

                /* The kubelet registers the node under the host name (lower-cased) by default. */
                if (gethostname(host, sizeof(host) - 1) < 0)
                        return log_error_errno(errno, "Failed to get the host name for NodeName=: %m");
                for (char *h = host; *h; h++)
                        *h = (char) tolower((unsigned char) *h);
                c->node_name = strdup(host);
                if (!c->node_name)
                        return log_oom();
        }

        /* Credentials never show in task output either. */
        _cleanup_free_ char *url_password = NULL;
        if (c->broker_url && url_userinfo_password(c->broker_url, &url_password) < 0)
                return log_oom();
        const char *credentials[] = {c->broker_password, c->api_token, c->jwt_secret, url_password};
        for (size_t i = 0; i < ELEMENTSOF(credentials); i++)
                if (credentials[i] && !strv_contains(c->secrets, credentials[i]) &&
                    strv_extend(&c->secrets, credentials[i]) < 0)
                        return log_oom();
        /* Files an advanced task gets mounted (it can print them), and the cluster tokens:
         * their contents as they are now (a file that cannot be read is reported where it
         * is used). */
        const char *files[] = {c->ssh_key_file, c->deployer_token_file, c->kube_token_file, c->kubelet_token_file};
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *data = NULL;
                size_t n = 0;

                if (!files[i] || read_full_file(files[i], 64 * 1024, &data, &n) < 0)
                        continue;
                while (n > 0 && strchr(" \t\r\n", data[n - 1]))
                        data[--n] = 0;
                if (n > 0 && strlen(data) == n && !strv_contains(c->secrets, data) &&
                    strv_extend(&c->secrets, data) < 0)
                        return log_oom();
        }

        return ret;
}

/* 0, -EINVAL after logging a problem in the file, -ENOENT (not logged), -ENOMEM. */
static int config_load_file(Config *c, const char *path) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        int r;

        r = read_regular_file(path, CONFIG_FILE_MAX, &text, &size);
        if (r == -ENOENT || r == -ENOMEM)
                return r;
        if (r == -EFBIG) {
                log_error("%s: File is larger than 1 MiB.", path);
                return -EINVAL;
        }
        if (r == -EBADFD) {
                log_error("%s: Not a regular file.", path);
                return -EINVAL;
        }
        if (r < 0) {
                log_error_errno(r, "%s: Failed to read configuration file: %m", path);
                return -EINVAL;
        }

        log_debug("Reading configuration file %s.", path);
        return config_parse_string(c, path, text, size);
}

static int strcmp_ptr(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The names of the "<dir>/NAME.conf" regular files (symlinks to them too), sorted. Hidden files
 * are skipped as systemd does. A missing directory gives an empty list. */
static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

static int list_dropins(const char *dir, char ***ret) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_(closedirp) DIR *d = NULL;

        d = opendir(dir); /* glibc opens it O_CLOEXEC */
        if (!d) {
                if (errno == ENOENT) {
                        *ret = NULL;
                        return 0;
                }
                return -errno;
        }

        for (;;) {
                struct dirent *de;
                struct stat st;
                size_t n;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return -errno;
                        break;
                }

                n = strlen(de->d_name);
                if (de->d_name[0] == '.' || n <= strlen(".conf") || !streq(de->d_name + n - strlen(".conf"), ".conf"))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode))
                        continue; /* dangling symlink, directory, device… */

                if (strv_extend(&names, de->d_name) < 0)
                        return -ENOMEM;
        }

        if (names)
                qsort(names, strv_length(names), sizeof(char *), strcmp_ptr);
        *ret = TAKE_PTR(names);
        return 0;
}

int config_load(const char *path, Config **ret) {
        _cleanup_(config_freep) Config *c = NULL;
        _cleanup_free_ char *dropin_dir = NULL;
        _cleanup_strv_free_ char **dropins = NULL;
        const char *p = path ?: CONFIG_PATH_DEFAULT;
        bool failed = false;
        int r;

        if (!ret)
                return -EINVAL;

        c = config_new();
        if (!c)
                return log_oom();

        r = config_load_file(c, p);
        if (r == -ENOENT) {
                if (path)
                        return log_error_errno(r, "Failed to open configuration file %s: %m", p);
                log_debug("No configuration file %s, using defaults.", p);
        } else if (r == -ENOMEM)
                return log_oom();
        else if (r < 0)
                failed = true;

        if (asprintf(&dropin_dir, "%s.d", p) < 0) {
                dropin_dir = NULL;
                return log_oom();
        }

        r = list_dropins(dropin_dir, &dropins);
        if (r == -ENOMEM)
                return log_oom();
        if (r < 0) {
                log_error_errno(r, "%s: Failed to list drop-in directory: %m", dropin_dir);
                failed = true;
        }

        for (char **name = dropins; name && *name; name++) {
                _cleanup_free_ char *f = NULL;

                f = path_join(dropin_dir, *name);
                if (!f)
                        return log_oom();

                r = config_load_file(c, f);
                if (r == -ENOMEM)
                        return log_oom();
                if (r == -ENOENT)
                        continue; /* removed since the listing */
                if (r < 0)
                        failed = true;
        }

        r = config_finalize(c);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                failed = true;

        if (failed)
                return -EINVAL;

        *ret = TAKE_PTR(c);
        return 0;
}
