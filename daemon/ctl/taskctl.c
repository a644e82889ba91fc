/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lagoon-taskctl: the command-line client of lagoon-taskd's control API (include/api.h).
 * It owns the command line (verbs and options), the presentation of tasks (table,
 * key: value lines, or the API's JSON as is), following a task's log across
 * reconnects, and the mapping of a task's end to an exit status. Verbs return an exit
 * status (>= 0); helpers return 0 or -errno after printing their message. */

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "ctl-format.h"
#include "ctl-http.h"
#include "ctl-journal.h"
#include "json.h"
#include "macro.h"
#include "parse-util.h"
#include "task.h"

#define SOCKET_PATH_DEFAULT "/run/lagoon-taskd/api.sock"
#define SOCKET_GROUP_DEFAULT "lagoon-task"

/* Exit statuses of our own; a task's exit code is passed through otherwise. */
#define EXIT_API_ERROR CTL_EXIT_API_ERROR
#define EXIT_USAGE 2

/* After a connection drops while following, how long to keep trying (daemon restart). */
#define RECONNECT_LIMIT_USEC (60 * USEC_PER_SEC)
#define POLL_MIN_USEC (100 * USEC_PER_MSEC)
#define POLL_MAX_USEC (1 * USEC_PER_SEC)

typedef enum LsFormat { LS_TABLE, LS_WIDE, LS_JSON, LS_ID } LsFormat;

static const char *arg_socket = NULL;
static const char *arg_verb = NULL; /* as typed: an alias's --help names the alias */
static bool arg_json = false;
/* The verbs' own options (see the verbs' option tables). */
static const char *arg_id = NULL, *arg_name = NULL, *arg_service = NULL, *arg_project = NULL, *arg_environment = NULL,
                  *arg_timeout = NULL, *arg_file = NULL, *arg_status = NULL;
static const char *arg_time = NULL, *arg_tail = NULL, *arg_since = NULL, *arg_stream = NULL;
static bool arg_timestamps = false;
static uint64_t arg_timeout_usec = UINT64_MAX;
static bool arg_wait = false, arg_argv = false, arg_no_trunc = false, arg_follow = false, arg_no_wait = false;
static LsFormat arg_format = LS_TABLE;

/* Prepared before SIGINT is armed: a signal handler may only write(2) and _exit(2). */
static char interrupt_message[TASK_ID_MAX * 3 + 256];
static size_t interrupt_message_len = 0;

static _printf_(1, 2) void ctl_error(const char *format, ...) {
        va_list ap;

        fprintf(stderr, "%s: ", program_invocation_short_name);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static int oom(void) {
        ctl_error("out of memory");
        return -ENOMEM;
}

/* For small sets of errno values. */
#define IN_SET(x, ...) \
        ({ \
                const int _set_[] = {__VA_ARGS__}; \
                bool _found_ = false; \
                for (size_t _i_ = 0; _i_ < ELEMENTSOF(_set_); _i_++) \
                        if (_set_[_i_] == (x)) \
                                _found_ = true; \
                _found_; \
        })

static _printf_(1, 2) int usage_error(const char *format, ...) {
        va_list ap;

        fprintf(stderr, "%s: ", program_invocation_short_name);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fprintf(stderr, "\nTry '%s --help' for more information.\n", program_invocation_short_name);
        return EXIT_USAGE;
}

static void help(void) {
        printf("%1$s [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "Submit, list, follow and cancel tasks of lagoon-taskd, the Lagoon task runner of\n"
               "this node, through its control API.\n"
               "\n"
               "Commands:\n"
               "  run [OPTIONS] [--] COMMAND...  Submit a task running COMMAND (words joined by\n"
               "                                 spaces into one shell command); prints its id\n"
               "  run [OPTIONS] --file=FILE      The same with the script in FILE (- for stdin)\n"
               "  ls [OPTIONS]                   List tasks (also: list)\n"
               "  show ID                        Show a task (also: inspect)\n"
               "  logs [-f] [-n N] ID            Print a task's output; -f follows it until the\n"
               "                                 task ends\n"
               "  cancel [--no-wait] [-t D] ID   Cancel a queued or running task and wait until it\n"
               "                                 has ended (also: stop)\n"
               "  rm ID...                       Remove finished tasks (record and log)\n"
               "  prune                          Remove every finished task\n"
               "  wait [--timeout=D] ID...       Wait for tasks to end; exit with their status\n"
               "  health                         Show whether the daemon is healthy\n"
               "\n"
               "'%1$s COMMAND --help' shows the options of one command.\n"
               "\n"
               "Options:\n"
               "     --socket=PATH         Control socket (default: $LAGOON_TASKD_SOCKET, else\n"
               "                           " SOCKET_PATH_DEFAULT ")\n"
               "     --json                Print the API's JSON instead of text\n"
               "  -h --help                Show this help\n"
               "     --version             Show the version\n"
               "\n"
               "Options of run:\n"
               "     --id=ID               Task id; submitting an id again does not run it twice\n"
               "     --name=NAME           Task name (default: the id)\n"
               "     --service=SERVICE     Service whose container the task runs in\n"
               "     --project=PROJECT     Lagoon project\n"
               "     --environment=ENV     Lagoon environment\n"
               "     --timeout=DURATION    Time limit, e.g. 90, 30min, 2h, infinity (0: none)\n"
               "  -w --wait                Follow the output, then exit with the task's status\n"
               "                           (with --json: silently, then print the task)\n"
               "     --argv                Run the words of COMMAND as they are (each quoted),\n"
               "                           not as shell syntax\n"
               "     --file=FILE           The command is FILE's contents (- for stdin)\n"
               "Options of ls:\n"
               "     --status=STATUS,...   Only tasks in these states (pending, running, ...)\n"
               "     --project=PROJECT     Only the tasks of this Lagoon project\n"
               "  -q --quiet               Print only the ids (= --format=id)\n"
               "  -o --format=FORMAT       table, wide (adds NAME, PROJECT/ENVIRONMENT, CREATED),\n"
               "                           json or id\n"
               "     --no-trunc            Do not shorten the ID, NAME and COMMAND columns\n"
               "Options of cancel:\n"
               "     --no-wait             Return once SIGTERM was sent\n"
               "  -t --time=DURATION       SIGKILL after DURATION instead of KillGraceSec=\n"
               "Options of logs:\n"
               "  -f --follow              Keep printing output until the task ends\n"
               "  -n --tail=N              Begin with the last N lines\n"
               "     --since=WHEN          Only lines from WHEN on (10m, '2h ago', RFC 3339 time)\n"
               "  -t --timestamps          Begin each line with its time (RFC 3339)\n"
               "     --stdout, --stderr    Only the lines of this stream (these three read journald)\n"
               "\n"
               "Exit status of run --wait and wait:\n"
               "  N    the task ran and its command exited with N (0: complete)\n"
               "  124  the task hit its timeout\n"
               "  125  the task failed without an exit code (service not found, launch error)\n"
               "  130  the task was cancelled; also Ctrl-C during run --wait (the task keeps\n"
               "       running)\n"
               "Otherwise: 0 success, 1 lagoon-taskd could not be reached or refused the\n"
               "request, 2 usage error.\n",
               program_invocation_short_name);
}

static int loop_write(int fd, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t k = write(fd, p, size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                size -= (size_t) k;
        }
        return 0;
}

static void print_body(const CtlResponse *resp) {
        fwrite(resp->body, 1, resp->size, stdout);
        if (resp->size == 0 || resp->body[resp->size - 1] != '\n')
                fputc('\n', stdout);
}

/* The group that may use the socket: the socket's own (SocketGroup=, or the unit's
 * SocketGroup=), which need not be the packaged default. */
static const char *socket_group(const char *path) {
        struct stat st;
        struct group *g;

        if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode) || st.st_gid == 0 || !(g = getgrgid(st.st_gid)))
                return SOCKET_GROUP_DEFAULT;
        return g->gr_name;
}

static int report_transport_error(CtlHttp *h, int r) {
        if (ctl_http_connect_failed(h)) {
                if (IN_SET(-r, EACCES, EPERM))
                        ctl_error("cannot connect to lagoon-taskd at %s: permission denied: you must be root or in "
                                  "group %s",
                                  ctl_http_socket_path(h), socket_group(ctl_http_socket_path(h)));
                else
                        ctl_error("cannot connect to lagoon-taskd at %s: %s — is lagoon-taskd.socket running?",
                                  ctl_http_socket_path(h), strerror(-r));
        } else if (r == -EFBIG)
                ctl_error("the answer of lagoon-taskd is too large");
        else if (r == -ENOMEM)
                ctl_error("out of memory");
        else
                ctl_error("request to lagoon-taskd at %s failed: %s", ctl_http_socket_path(h), ctl_http_error(h));
        return r;
}

static int report_api_error(const CtlResponse *resp) {
        _cleanup_json_ JsonValue *v = NULL;
        const char *message = NULL;
        char code[64] = "";

        if (json_parse(resp->body, resp->size, JSON_DEPTH_MAX_DEFAULT, &v, NULL) >= 0 && json_is_object(v)) {
                JsonValue *c = json_get(v, "error");
                int64_t i;

                message = json_get_string(v, "message");
                if (json_is_string(c))
                        snprintf(code, sizeof(code), "%s", json_string(c));
                else if (json_int64(c, &i) >= 0)
                        snprintf(code, sizeof(code), "%" PRIi64, i);
        }

        /* The daemon's own 403 message names the group it really checks (SocketGroup=). */
        if (resp->status == 403 && !message) {
                ctl_error("permission denied: you must be root or in group " SOCKET_GROUP_DEFAULT);
                return -EACCES;
        }

        fprintf(stderr, "%s: ", program_invocation_short_name);
        if (message) {
                ctl_print_clean(stderr, message, SIZE_MAX, '?');
                if (code[0]) {
                        fputs(" (", stderr);
                        ctl_print_clean(stderr, code, SIZE_MAX, '?');
                        fputc(')', stderr);
                }
        } else {
                /* Not the API's error form: show the status and the start of the body. */
                fprintf(stderr, "lagoon-taskd answered HTTP %ld", resp->status);
                if (resp->size > 0) {
                        fputs(": ", stderr);
                        ctl_print_clean(stderr, resp->body, 200, ' ');
                }
        }
        fputc('\n', stderr);

        switch (resp->status) {
        case 403:
                return -EACCES;
        case 404:
                return -ENOENT;
        case 409:
                return -EALREADY;
        case 503:
                return -EAGAIN;
        default:
                return -EREMOTEIO;
        }
}

/* A request whose non-2xx answer is an error: both kinds are reported here. */
static int api_call(CtlHttp *h, const char *method, const char *path, const char *body, CtlResponse *ret) {
        CtlResponse resp = {};
        int r;

        r = ctl_http_request(h, method, path, body, /* stream= */ false, NULL, NULL, &resp);
        if (r < 0)
                return report_transport_error(h, r);
        if (resp.status < 200 || resp.status >= 300) {
                r = report_api_error(&resp);
                ctl_response_done(&resp);
                return r;
        }
        *ret = resp;
        return 0;
}

static int parse_response_json(const CtlResponse *resp, JsonType type, JsonValue **ret) {
        _cleanup_free_ char *msg = NULL;
        JsonValue *v = NULL;
        int r;

        r = json_parse(resp->body, resp->size, JSON_DEPTH_MAX_DEFAULT, &v, &msg);
        if (r < 0) {
                /* yajl's messages span lines. */
                for (char *p = msg; p && *p; p++)
                        if (*p == '\n')
                                *p = ' ';
                ctl_error("invalid answer from lagoon-taskd: %s", msg ?: strerror(-r));
                return r;
        }
        if (json_type(v) != type) {
                ctl_error("invalid answer from lagoon-taskd: expected a JSON %s, got %s", json_type_to_string(type),
                          json_type_to_string(json_type(v)));
                json_free(v);
                return -EBADMSG;
        }
        *ret = v;
        return 0;
}

static int task_path(const char *id, const char *suffix, char **ret) {
        /* Ids are [A-Za-z0-9_.-] (checked by the caller), so they need no escaping. */
        return asprintf(ret, "/v1/tasks/%s%s", id, suffix) < 0 ? -ENOMEM : 0;
}

static int get_task(CtlHttp *h, const char *id, CtlResponse *ret_resp, JsonValue **ret_task) {
        _cleanup_free_ char *path = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        CtlResponse resp = {};
        int r;

        if (task_path(id, "", &path) < 0)
                return oom();
        r = api_call(h, "GET", path, NULL, &resp);
        if (r < 0)
                return r;
        r = parse_response_json(&resp, JSON_OBJECT, &v);
        if (r < 0) {
                ctl_response_done(&resp);
                return r;
        }
        *ret_resp = resp;
        *ret_task = TAKE_PTR(v);
        return 0;
}

static bool task_is_final(const JsonValue *task) {
        TaskStatus s = task_status_from_string(json_get_string(task, "status"));
        return s >= 0 && task_status_is_final(s);
}

/* The exit status of run --wait and wait for a task that ended; see help(). */
static int exit_status_of(const JsonValue *task) {
        _cleanup_free_ char *note = NULL;
        int r;

        r = ctl_task_exit_status(task, &note);
        if (r < 0)
                return oom(), EXIT_API_ERROR;
        if (note)
                ctl_error("%s", note);
        return r;
}

typedef struct Follow {
        int fd;             /* where output goes; -EBADF: discarded (wait) */
        uint64_t delivered; /* bytes of the log already written, over all connections */
        uint64_t offset;    /* position in the current stream */
        int write_error;
} Follow;

static int follow_sink(const void *data, size_t size, void *userdata) {
        Follow *f = userdata;
        uint64_t end = f->offset + size;
        int r;

        /* After a reconnect the log starts again from its first byte: it is append-only,
         * so skipping what was already written continues exactly where we were. */
        if (end > f->delivered) {
                size_t skip = f->delivered > f->offset ? (size_t) (f->delivered - f->offset) : 0;

                if (f->fd >= 0) {
                        r = loop_write(f->fd, (const char *) data + skip, size - skip);
                        if (r < 0) {
                                f->write_error = r;
                                return r;
                        }
                }
                f->delivered = end;
        }
        f->offset = end;
        return 0;
}

static void sleep_usec(uint64_t usec) {
        struct timespec ts = {
                .tv_sec = (time_t) (usec / USEC_PER_SEC),
                .tv_nsec = (long) ((usec % USEC_PER_SEC) * NSEC_PER_USEC),
        };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Appends "&key=value" (the first one with '?'), value percent-encoded. */
static int append_query(char **path, const char *key, const char *value) {
        _cleanup_free_ char *enc = malloc(strlen(value) * 3 + 1), *joined = NULL;
        char *p = enc;

        if (!enc)
                return -ENOMEM;
        for (const unsigned char *c = (const unsigned char *) value; *c; c++)
                if (isalnum(*c) || strchr("-._~", *c))
                        *p++ = (char) *c;
                else
                        p += sprintf(p, "%%%02X", *c);
        *p = 0;
        if (asprintf(&joined, "%s%c%s=%s", *path, strchr(*path, '?') ? '&' : '?', key, enc) < 0)
                return -ENOMEM;
        free(*path);
        *path = TAKE_PTR(joined);
        return 0;
}

/* Streams the task's log to fd until the task has ended, then returns the final task.
 * A stream that ends early (daemon restarting, or a follower the daemon let go) is
 * resumed; lost connections are retried for RECONNECT_LIMIT_USEC once the daemon has
 * answered at all, so a restart of lagoon-taskd does not end a wait. */
static int follow_task(CtlHttp *h, const char *id, int fd, CtlResponse *ret_resp, JsonValue **ret_task) {
        Follow f = {
                .fd = fd,
        };
        uint64_t pause = POLL_MIN_USEC, retry_until = 0;
        /* Where in the task log the output shown starts: with --tail, the daemon says. */
        uint64_t base = arg_tail ? UINT64_MAX : 0;
        bool warned = false;
        int r;

        for (;;) {
                _cleanup_json_ JsonValue *task = NULL;
                _cleanup_free_ char *logs_path = NULL, *offset = NULL;
                CtlResponse resp = {};
                bool transient = false;

                if (base != UINT64_MAX && asprintf(&offset, "%" PRIu64, base) < 0)
                        return oom();
                if (task_path(id, "/logs?follow=1", &logs_path) < 0 ||
                    (base == UINT64_MAX && append_query(&logs_path, "tail", arg_tail) < 0) ||
                    (base != UINT64_MAX && base > 0 && append_query(&logs_path, "offset", offset) < 0))
                        return oom();
                f.offset = 0;
                r = ctl_http_request(h, "GET", logs_path, NULL, /* stream= */ true, follow_sink, &f, &resp);
                if (base == UINT64_MAX)
                        base = ctl_http_log_offset(h);
                if (f.write_error < 0) {
                        if (f.write_error != -EPIPE)
                                ctl_error("cannot write output: %s", strerror(-f.write_error));
                        return f.write_error;
                }
                if (r < 0) {
                        if (!ctl_http_ever_answered(h) || IN_SET(-r, ENOMEM, EFBIG))
                                return report_transport_error(h, r);
                        transient = true;
                } else if (resp.status == 503) {
                        /* Stopping: a restarted daemon will serve us again. */
                        transient = true;
                        ctl_response_done(&resp);
                } else if (resp.status < 200 || resp.status >= 300) {
                        r = report_api_error(&resp);
                        ctl_response_done(&resp);
                        return r;
                }

                if (!transient) {
                        _cleanup_free_ char *path = NULL;

                        if (task_path(id, "", &path) < 0)
                                return oom();
                        r = ctl_http_request(h, "GET", path, NULL, false, NULL, NULL, &resp);
                        if (r < 0 || resp.status == 503) {
                                transient = true;
                                ctl_response_done(&resp);
                        } else if (resp.status < 200 || resp.status >= 300) {
                                r = report_api_error(&resp);
                                ctl_response_done(&resp);
                                return r;
                        } else {
                                r = parse_response_json(&resp, JSON_OBJECT, &task);
                                if (r < 0) {
                                        ctl_response_done(&resp);
                                        return r;
                                }
                                if (task_status_from_string(json_get_string(task, "status")) < 0) {
                                        ctl_error("invalid answer from lagoon-taskd: task %s has no known status", id);
                                        ctl_response_done(&resp);
                                        return -EBADMSG;
                                }
                                if (task_is_final(task)) {
                                        if (warned)
                                                ctl_error("connection to lagoon-taskd restored");
                                        *ret_resp = resp;
                                        *ret_task = TAKE_PTR(task);
                                        return 0;
                                }
                                ctl_response_done(&resp);
                        }
                }

                if (transient) {
                        uint64_t n = now_usec(CLOCK_MONOTONIC);

                        if (retry_until == 0)
                                retry_until = n + RECONNECT_LIMIT_USEC;
                        else if (n > retry_until) {
                                if (r >= 0)
                                        ctl_error("lagoon-taskd is stopping and did not come back");
                                else
                                        (void) report_transport_error(h, r);
                                return r < 0 ? r : -EAGAIN;
                        }
                        if (!warned) {
                                ctl_error("lost connection to lagoon-taskd, retrying...");
                                warned = true;
                        }
                } else {
                        retry_until = 0;
                        if (warned) {
                                ctl_error("connection to lagoon-taskd restored");
                                warned = false;
                        }
                }

                /* The stream ended but the task did not (yet): back off a little. */
                sleep_usec(pause);
                pause = MIN(pause * 2, POLL_MAX_USEC);
        }
}

static void on_sigint(int sig) {
        ssize_t k = write(STDERR_FILENO, interrupt_message, interrupt_message_len);
        (void) k;
        _exit(CTL_EXIT_TASK_CANCELLED);
}

static void arm_interrupt(const char *id) {
        struct sigaction sa = {
                .sa_handler = on_sigint,
        };
        int n;

        n = snprintf(interrupt_message, sizeof(interrupt_message),
                     "\n%1$s: task %2$s keeps running; follow it with '%1$s logs -f %2$s', stop it with '%1$s "
                     "cancel %2$s'\n",
                     program_invocation_short_name, id);
        if (n < 0)
                return;
        interrupt_message_len = MIN((size_t) n, sizeof(interrupt_message) - 1);
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, &sa, NULL);
}

static int check_task_id(const char *verb, const char *id) {
        if (!task_id_is_valid(id))
                return usage_error("%s: invalid task id '%s' (expected 1-%d characters of [A-Za-z0-9_.-], not starting "
                                   "with '.' or '-')",
                                   verb, id, TASK_ID_MAX);
        return 0;
}

enum {
        ARG_SOCKET = 0x100,
        ARG_JSON,
        ARG_VERSION,
        ARG_ID,
        ARG_NAME,
        ARG_SERVICE,
        ARG_PROJECT,
        ARG_ENVIRONMENT,
        ARG_TIMEOUT,
        ARG_NO_TRUNC,
        ARG_STATUS,
        ARG_ARGV,
        ARG_FILE,
        ARG_NO_WAIT,
        ARG_SINCE,
        ARG_STDOUT,
        ARG_STDERR,
};

/* clang-format off */
#define COMMON_OPTIONS                                          \
        { "socket", required_argument, NULL, ARG_SOCKET },      \
        { "help",   no_argument,       NULL, 'h'        },      \
        { "json",   no_argument,       NULL, ARG_JSON   }
/* clang-format on */

static void verb_help(const char *verb);

/* Options every verb accepts, so "lagoon-taskctl ls --json" works like "--json ls".
 * Returns 1 if handled, 0 to exit successfully (help), a usage exit status if bad. */
static int handle_common_option(int c, const char *verb, bool json_allowed) {
        switch (c) {
        case ARG_SOCKET:
                arg_socket = optarg;
                return 1;
        case ARG_JSON:
                if (!json_allowed)
                        return -usage_error("%s: --json is not supported", verb);
                arg_json = true;
                return 1;
        case 'h':
                if (verb)
                        verb_help(arg_verb ?: verb);
                else
                        help();
                return 0;
        default:
                return -EXIT_USAGE;
        }
}

static int open_api(CtlHttp **ret) {
        const char *path = arg_socket ?: getenv("LAGOON_TASKD_SOCKET");
        int r;

        if (isempty(path))
                path = SOCKET_PATH_DEFAULT;
        r = ctl_http_new(path, ret);
        if (r == -ENAMETOOLONG)
                ctl_error("socket path too long: %s", path);
        else if (r < 0)
                ctl_error("cannot set up the HTTP client: %s", strerror(-r));
        return r;
}

/* --argv: each word in single quotes (a ' as '\''), so sh -c runs exactly these words. */
static int quote_words(char *const *words, char **ret) {
        size_t n = 1;
        char *s, *p;

        for (char *const *w = words; *w; w++)
                n += strlen(*w) * 4 + 3;
        s = p = malloc(n);
        if (!s)
                return -ENOMEM;
        for (char *const *w = words; *w; w++) {
                if (w != words)
                        *p++ = ' ';
                *p++ = '\'';
                for (const char *c = *w; *c; c++)
                        if (*c == '\'')
                                p = stpcpy(p, "'\\''");
                        else
                                *p++ = *c;
                *p++ = '\'';
        }
        *p = 0;
        *ret = s;
        return 0;
}

/* --file: the script, whole; "-" is standard input. At most max bytes + 1 are read, so
 * the caller can tell a script that is too large. Returns 0 or a usage exit status. */
static int read_script(const char *path, size_t max, char **ret) {
        _cleanup_free_ char *buf = malloc(max + 2);
        _cleanup_close_ int fd = -EBADF;
        int in = STDIN_FILENO;
        size_t n = 0;

        if (!buf)
                return oom(), EXIT_API_ERROR;
        if (!streq(path, "-")) {
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        return usage_error("run: --file: cannot open '%s': %s", path, strerror(errno));
                in = fd;
        }
        while (n <= max) {
                ssize_t k = read(in, buf + n, max + 1 - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return usage_error("run: --file: cannot read '%s': %s", path, strerror(errno));
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        if (memchr(buf, 0, n))
                return usage_error("run: --file: '%s' holds a NUL byte: not a script", path);
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

static int join_words(char *const *words, char **ret) {
        size_t n = 0;
        char *s, *p;

        for (char *const *w = words; *w; w++)
                n += strlen(*w) + 1;
        s = p = malloc(n + 1);
        if (!s)
                return -ENOMEM;
        *p = 0;
        for (char *const *w = words; *w; w++)
                p = stpcpy(stpcpy(p, w == words ? "" : " "), *w);
        *ret = s;
        return 0;
}

static int parse_run_option(int c) {
        switch (c) {
        case ARG_ID:
                arg_id = optarg;
                break;
        case ARG_NAME:
                arg_name = optarg;
                break;
        case ARG_SERVICE:
                arg_service = optarg;
                break;
        case ARG_PROJECT:
                arg_project = optarg;
                break;
        case ARG_ENVIRONMENT:
                arg_environment = optarg;
                break;
        case ARG_TIMEOUT:
                /* Checked here with the daemon's parser, so a bad value is a usage error in
                 * the command line's terms; sent as written all the same. */
                if (parse_duration(optarg, &arg_timeout_usec) < 0)
                        return usage_error("run: --timeout: invalid duration '%s' (seconds, or e.g. 30min, 2h, "
                                           "infinity; 0: none)",
                                           optarg);
                arg_timeout = optarg;
                break;
        case 'w':
                arg_wait = true;
                break;
        case ARG_ARGV:
                arg_argv = true;
                break;
        case ARG_FILE:
                arg_file = optarg;
                break;
        }
        return 0;
}

/* Seconds from one RFC 3339 member of a to one of b; -1 when either is missing. */
static double seconds_between(const JsonValue *a, const char *from, const JsonValue *b, const char *to) {
        const char *x = json_get_string(a, from), *y = json_get_string(b, to);
        uint64_t ux, uy;

        if (!x || !y || parse_timestamp_rfc3339(x, &ux) < 0 || parse_timestamp_rfc3339(y, &uy) < 0 || uy < ux)
                return -1;
        return (double) (uy - ux) / USEC_PER_SEC;
}

/* run --wait on a terminal: what the task waits for, on stderr, while the follow
 * request waits (its tick), asked on a connection of its own. */
typedef struct Progress {
        CtlHttp *http;
        const char *id;
        char *said; /* what was said last, so each state is said once */
} Progress;

static void progress_done(Progress *p) {
        p->http = ctl_http_free(p->http);
        p->said = mfree(p->said);
}

static int progress_tick(void *userdata) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *task = NULL;
        _cleanup_free_ char *path = NULL, *key = NULL, *line = NULL;
        Progress *p = userdata;
        const char *status, *step, *why;
        uint64_t pos = 0;
        double d;

        /* Progress is a courtesy: a failed look is not worth a word. */
        if (task_path(p->id, "", &path) < 0 ||
            ctl_http_request(p->http, "GET", path, NULL, /* stream= */ false, NULL, NULL, &resp) < 0 ||
            resp.status != 200 || json_parse(resp.body, resp.size, JSON_DEPTH_MAX_DEFAULT, &task, NULL) < 0 ||
            !json_is_object(task))
                return 0;
        status = json_get_string(task, "status");
        step = json_get_string(task, "launchStep");
        why = json_get_string(task, "waitReason");
        (void) json_uint64(json_get(task, "queuePosition"), &pos);

        if (streq_ptr(status, "pending") && pos > 0) {
                if (asprintf(&key, "queued #%" PRIu64 ": %s", pos, why ?: "waiting for a slot") < 0)
                        return 0;
                line = strdup(key);
        } else if (streq_ptr(status, "pending") && step) {
                if (asprintf(&key, "starting (%s)", step) < 0)
                        return 0;
                line = strdup(key);
        } else if (streq_ptr(status, "running") && json_get_string(task, "stoppingAt")) {
                key = strdup("stopping");
                d = seconds_between(task, "stoppingAt", task, "killAt");
                if (d >= 0 &&
                    asprintf(&line, "stopping: SIGTERM sent, SIGKILL %.0fs later if it is still running", d) < 0)
                        line = NULL;
        } else
                return 0;
        if (!key || streq_ptr(key, p->said))
                return 0;
        fprintf(stderr, "%s: task %s ", program_invocation_short_name, p->id);
        ctl_print_clean(stderr, line ?: key, 200, '?');
        fputc('\n', stderr);
        free(p->said);
        p->said = TAKE_PTR(key);
        return 0;
}

static int verb_run(CtlHttp *h, char **args, int n_args) {
        _cleanup_(progress_done) Progress progress = {};
        _cleanup_json_ JsonValue *req = NULL, *task = NULL, *final = NULL;
        _cleanup_(ctl_response_done) CtlResponse resp = {}, final_resp = {};
        _cleanup_free_ char *command = NULL, *body = NULL;
        const char *new_id;
        int r;

        if (arg_file) {
                if (n_args > 0)
                        return usage_error("run: --file and a COMMAND on the line: give one of them");
                if (arg_argv)
                        return usage_error("run: --argv quotes the words of COMMAND; it does not go with --file");
                r = read_script(arg_file, TASK_COMMAND_MAX, &command);
                if (r != 0)
                        return r;
        } else if (n_args == 0)
                return usage_error("run: missing command (lagoon-taskctl run [OPTIONS] -- COMMAND...)");
        if (arg_id && check_task_id("run", arg_id) != 0)
                return EXIT_USAGE;
        {
                const struct {
                        const char *option, *value;
                } given[] = {{"--name", arg_name},
                             {"--service", arg_service},
                             {"--project", arg_project},
                             {"--environment", arg_environment}};

                for (size_t i = 0; i < ELEMENTSOF(given); i++) {
                        if (!given[i].value)
                                continue;
                        if (isempty(given[i].value))
                                return usage_error("run: %s: empty value", given[i].option);
                        if (!utf8_is_valid(given[i].value))
                                return usage_error("run: %s: not valid UTF-8", given[i].option);
                }
        }
        if (!command && (arg_argv ? quote_words(args, &command) : join_words(args, &command)) < 0)
                return ctl_error("out of memory"), EXIT_API_ERROR;
        if (command[strspn(command, " \t\n\r\v\f")] == 0)
                return usage_error("run: empty command");
        if (!utf8_is_valid(command))
                return usage_error("run: the command is not valid UTF-8 (tasks take UTF-8 text; convert it, e.g. "
                                   "with iconv)");
        if (strlen(command) > TASK_COMMAND_MAX)
                return usage_error("run: the command is %zu bytes, more than a task takes (%u: one argument of "
                                   "execve)",
                                   strlen(command), TASK_COMMAND_MAX);

        req = json_new_object();
        if (!req)
                return ctl_error("out of memory"), EXIT_API_ERROR;
        /* The timeout goes as written: the API parses durations itself (one parser). */
        if (json_object_set_string(req, "command", command) < 0 ||
            (arg_id && json_object_set_string(req, "id", arg_id) < 0) ||
            (arg_name && json_object_set_string(req, "name", arg_name) < 0) ||
            (arg_service && json_object_set_string(req, "service", arg_service) < 0) ||
            (arg_project && json_object_set_string(req, "project", arg_project) < 0) ||
            (arg_environment && json_object_set_string(req, "environment", arg_environment) < 0) ||
            (arg_timeout && json_object_set_string(req, "timeout", arg_timeout) < 0) ||
            json_format(req, false, &body, NULL) < 0)
                return ctl_error("out of memory"), EXIT_API_ERROR;

        if (api_call(h, "POST", "/v1/tasks", body, &resp) < 0)
                return EXIT_API_ERROR;
        if (parse_response_json(&resp, JSON_OBJECT, &task) < 0)
                return EXIT_API_ERROR;
        new_id = json_get_string(task, "id");
        if (!new_id || !task_id_is_valid(new_id)) {
                ctl_error("invalid answer from lagoon-taskd: the task has no valid id");
                return EXIT_API_ERROR;
        }
        if (resp.status == 200)
                ctl_error("task %s exists already; it was not submitted again", new_id);

        if (!arg_wait) {
                if (arg_json)
                        print_body(&resp);
                else
                        puts(new_id);
                return 0;
        }

        arm_interrupt(new_id);
        progress.id = new_id;
        if (isatty(STDERR_FILENO) && ctl_http_new(ctl_http_socket_path(h), &progress.http) >= 0)
                ctl_http_set_tick(h, progress_tick, &progress);
        r = follow_task(h, new_id, arg_json ? -EBADF : STDOUT_FILENO, &final_resp, &final);
        if (r < 0)
                return EXIT_API_ERROR;
        if (arg_json)
                print_body(&final_resp);
        return exit_status_of(final);
}

static size_t terminal_columns(void) {
        struct winsize ws = {};

        if (!isatty(STDOUT_FILENO))
                return 0;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || ws.ws_col == 0)
                return 80;
        return ws.ws_col;
}

static int parse_ls_option(int c) {
        switch (c) {
        case ARG_NO_TRUNC:
                arg_no_trunc = true;
                break;
        case ARG_STATUS:
                /* Checked here too, so a typo is a usage error in CLI terms. */
                for (const char *p = optarg;;) {
                        size_t k = strcspn(p, ",");
                        _cleanup_free_ char *word = strndup(p, k);

                        if (!word)
                                return oom(), EXIT_API_ERROR;
                        if (task_status_from_string(word) < 0)
                                return usage_error("ls: --status: unknown status '%s' (new, pending, running, "
                                                   "complete, failed, cancelled)",
                                                   word);
                        if (!p[k])
                                break;
                        p += k + 1;
                }
                arg_status = optarg;
                break;
        case ARG_PROJECT:
                arg_project = optarg;
                break;
        case 'q':
                arg_format = LS_ID;
                break;
        case 'o':
                if (streq(optarg, "table"))
                        arg_format = LS_TABLE;
                else if (streq(optarg, "wide"))
                        arg_format = LS_WIDE;
                else if (streq(optarg, "json"))
                        arg_format = LS_JSON;
                else if (streq(optarg, "id"))
                        arg_format = LS_ID;
                else
                        return usage_error("ls: --format: unknown format '%s' (table, wide, json, id)", optarg);
                break;
        }
        return 0;
}

static int verb_ls(CtlHttp *h, char **args, int n_args) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *v = NULL;
        _cleanup_free_ char *path = strdup("/v1/tasks");
        LsFormat format = arg_json ? LS_JSON : arg_format;
        int r;

        if (!path)
                return oom(), EXIT_API_ERROR;
        if (arg_status && append_query(&path, "status", arg_status) < 0)
                return oom(), EXIT_API_ERROR;
        if (arg_project && append_query(&path, "project", arg_project) < 0)
                return oom(), EXIT_API_ERROR;

        if (api_call(h, "GET", path, NULL, &resp) < 0)
                return EXIT_API_ERROR;
        if (format == LS_JSON) {
                print_body(&resp);
                return 0;
        }
        if (parse_response_json(&resp, JSON_OBJECT, &v) < 0)
                return EXIT_API_ERROR;
        if (format == LS_ID) {
                const JsonValue *tasks = json_get(v, "tasks");

                if (!json_is_array(tasks))
                        return ctl_error("invalid answer from lagoon-taskd: no \"tasks\" array"), EXIT_API_ERROR;
                for (size_t i = 0; i < json_length(tasks); i++) {
                        const char *tid = json_get_string(json_array_at(tasks, i), "id");

                        if (tid && task_id_is_valid(tid))
                                puts(tid);
                }
                return 0;
        }
        r = ctl_print_task_table(stdout, v, arg_no_trunc ? SIZE_MAX : terminal_columns(), format == LS_WIDE,
                                 now_usec(CLOCK_REALTIME));
        if (r == -EBADMSG)
                return ctl_error("invalid answer from lagoon-taskd: no \"tasks\" array"), EXIT_API_ERROR;
        if (r < 0)
                return oom(), EXIT_API_ERROR;
        return 0;
}

static int verb_show(CtlHttp *h, char **args, int n_args) {
        const char *id = args[0];
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *task = NULL;

        if (get_task(h, id, &resp, &task) < 0)
                return EXIT_API_ERROR;
        if (arg_json) {
                print_body(&resp);
                return 0;
        }

        ctl_print_task_fields(stdout, task);
        return 0;
}

static int logs_sink(const void *data, size_t size, void *userdata) {
        return loop_write(STDOUT_FILENO, data, size);
}

static int parse_logs_option(int c) {
        switch (c) {
        case 'f':
                arg_follow = true;
                break;
        case 'n':
                if (parse_uint64(optarg, NULL) < 0)
                        return usage_error("logs: --tail: invalid number of lines '%s'", optarg);
                arg_tail = optarg;
                break;
        case ARG_SINCE: {
                uint64_t usec;

                if (ctl_journal_parse_since(optarg, now_usec(CLOCK_REALTIME), &usec) < 0)
                        return usage_error("logs: --since: invalid time '%s' (e.g. 10m, '2h ago', "
                                           "2026-01-31T12:00:00Z, '2026-01-31 12:00:00')",
                                           optarg);
                arg_since = optarg;
                break;
        }
        case 't':
                arg_timestamps = true;
                break;
        case ARG_STDOUT:
        case ARG_STDERR:
                if (arg_stream)
                        return usage_error("logs: --stdout and --stderr: give one of them");
                arg_stream = c == ARG_STDOUT ? "stdout" : "stderr";
                break;
        }
        return 0;
}

/* ctl_journal_print()'s question while following: has the task ended? */
static int logs_task_final(void *userdata) {
        CtlHttp *h = userdata;
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *task = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        if (task_path(arg_id, "", &path) < 0)
                return oom();
        r = ctl_http_request(h, "GET", path, NULL, false, NULL, NULL, &resp);
        if (r < 0 || resp.status == 503)
                return 0; /* a restarting daemon: ask again on the next round */
        if (resp.status < 200 || resp.status >= 300)
                return report_api_error(&resp);
        r = parse_response_json(&resp, JSON_OBJECT, &task);
        if (r < 0)
                return r;
        return task_is_final(task);
}

/* --since, --timestamps, --stdout, --stderr: the lines as journald holds them. */
static int logs_from_journal(CtlHttp *h, const char *id) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_free_ char *path = NULL;
        CtlJournalQuery q = {
                .task_id = id,
                .stream = arg_stream,
                .tail = UINT64_MAX,
                .timestamps = arg_timestamps,
                .userdata = h,
        };
        int r;

        /* Both checked when parsed. */
        if (arg_since)
                (void) ctl_journal_parse_since(arg_since, now_usec(CLOCK_REALTIME), &q.since_usec);
        if (arg_tail)
                (void) parse_uint64(arg_tail, &q.tail);
        if (arg_follow)
                q.is_final = logs_task_final;

        /* Asked first, so an unknown task is said as such, not shown as empty. */
        if (task_path(id, "", &path) < 0)
                return ctl_error("out of memory"), EXIT_API_ERROR;
        r = ctl_http_request(h, "GET", path, NULL, false, NULL, NULL, &resp);
        if (r < 0)
                return report_transport_error(h, r), EXIT_API_ERROR;
        if (resp.status < 200 || resp.status >= 300)
                return report_api_error(&resp), EXIT_API_ERROR;

        arg_id = id;
        return ctl_journal_print(&q) < 0 ? EXIT_API_ERROR : 0;
}

static int verb_logs(CtlHttp *h, char **args, int n_args) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *task = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        int r;

        if (arg_since || arg_timestamps || arg_stream)
                return logs_from_journal(h, id);
        if (arg_follow)
                return follow_task(h, id, STDOUT_FILENO, &resp, &task) < 0 ? EXIT_API_ERROR : 0;

        if (task_path(id, "/logs", &path) < 0 || (arg_tail && append_query(&path, "tail", arg_tail) < 0))
                return ctl_error("out of memory"), EXIT_API_ERROR;
        r = ctl_http_request(h, "GET", path, NULL, /* stream= */ false, logs_sink, NULL, &resp);
        if (r == -EPIPE)
                return EXIT_API_ERROR;
        if (r < 0)
                return report_transport_error(h, r), EXIT_API_ERROR;
        if (resp.status < 200 || resp.status >= 300)
                return report_api_error(&resp), EXIT_API_ERROR;
        return 0;
}

static int parse_cancel_option(int c) {
        uint64_t usec;

        switch (c) {
        case ARG_NO_WAIT:
                arg_no_wait = true;
                break;
        case 't':
                if (parse_duration(optarg, &usec) < 0 || usec == USEC_INFINITY)
                        return usage_error("%s: --time: invalid duration '%s' (seconds, or e.g. 30s, 2min; 0: SIGKILL "
                                           "at once)",
                                           arg_verb, optarg);
                arg_time = optarg;
                break;
        }
        return 0;
}

/* What a cancel did, for stderr, from the task as the cancel left it and as it ended. */
static void cancel_note(const char *id, const JsonValue *stopping, const JsonValue *final) {
        const JsonValue *t = final ?: stopping;
        const char *status = json_get_string(t, "status");
        int64_t code = -1;
        double d;

        (void) json_int64(json_get(t, "exitCode"), &code);
        if (task_is_final(stopping)) {
                if (streq_ptr(status, "cancelled"))
                        ctl_error("task %s cancelled before it started", id);
                else
                        ctl_error("task %s had already ended (%s)", id, strna(status));
                return;
        }
        if (!final) {
                d = seconds_between(stopping, "stoppingAt", stopping, "killAt");
                if (d >= 0)
                        ctl_error("task %s: SIGTERM sent, SIGKILL in %.0fs if it is still running", id, d);
                else /* its launch was in flight: stopped as soon as it has started */
                        ctl_error("task %s: cancelling", id);
                return;
        }
        d = seconds_between(stopping, "stoppingAt", final, "finishedAt");
        if (!streq_ptr(status, "cancelled"))
                ctl_error("task %s ended (%s) before it was stopped", id, strna(status));
        else if (code == 128 + SIGKILL)
                ctl_error("task %s killed (SIGKILL) after %.1fs: it did not stop on SIGTERM", id, MAX(d, 0.0));
        else if (d < 0)
                ctl_error("task %s cancelled", id);
        else
                ctl_error("task %s stopped after %.1fs", id, d);
}

/* Like podman stop: SIGTERM, then wait until the task has ended (SIGKILL after the grace
 * period), and a task that had already ended is no error. */
static int verb_cancel(CtlHttp *h, char **args, int n_args) {
        _cleanup_(ctl_response_done) CtlResponse resp = {}, final_resp = {};
        _cleanup_json_ JsonValue *task = NULL, *final = NULL;
        _cleanup_free_ char *path = NULL;
        const char *id = args[0];
        int r;

        if (task_path(id, "/cancel", &path) < 0 || (arg_time && append_query(&path, "time", arg_time) < 0))
                return oom(), EXIT_API_ERROR;
        r = ctl_http_request(h, "POST", path, NULL, /* stream= */ false, NULL, NULL, &resp);
        if (r < 0)
                return report_transport_error(h, r), EXIT_API_ERROR;
        if (resp.status == 409) {
                /* Ended already (conflict): say how, as podman stop does for a stopped container. */
                ctl_response_done(&resp);
                if (get_task(h, id, &resp, &task) < 0)
                        return EXIT_API_ERROR;
                cancel_note(id, task, NULL);
        } else if (resp.status < 200 || resp.status >= 300)
                return report_api_error(&resp), EXIT_API_ERROR;
        else if (parse_response_json(&resp, JSON_OBJECT, &task) < 0)
                return EXIT_API_ERROR;
        else if (task_is_final(task) || arg_no_wait)
                cancel_note(id, task, NULL);
        else {
                if (follow_task(h, id, -EBADF, &final_resp, &final) < 0)
                        return EXIT_API_ERROR;
                cancel_note(id, task, final);
        }
        if (arg_json)
                print_body(final ? &final_resp : &resp);
        else
                puts(id);
        return 0;
}

/* DELETE one task; prints its id, or with --json the task as it was. */
static int remove_task(CtlHttp *h, const char *id) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_free_ char *path = NULL;
        int r;

        if (task_path(id, "", &path) < 0)
                return oom();
        r = api_call(h, "DELETE", path, NULL, &resp);
        if (r < 0)
                return r;
        if (arg_json)
                print_body(&resp);
        else
                puts(id);
        return 0;
}

static int verb_rm(CtlHttp *h, char **args, int n_args) {
        int ret = 0;

        /* Like rm(1): the others are still removed when one fails. */
        for (int i = 0; i < n_args; i++)
                if (remove_task(h, args[i]) < 0)
                        ret = EXIT_API_ERROR;
        return ret;
}

static int verb_prune(CtlHttp *h, char **args, int n_args) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *v = NULL;
        JsonValue *tasks;
        int ret = 0;

        if (api_call(h, "GET", "/v1/tasks", NULL, &resp) < 0 || parse_response_json(&resp, JSON_OBJECT, &v) < 0)
                return EXIT_API_ERROR;
        tasks = json_get(v, "tasks");
        if (!json_is_array(tasks))
                return ctl_error("invalid answer from lagoon-taskd: no \"tasks\" array"), EXIT_API_ERROR;
        for (size_t i = 0; i < json_length(tasks); i++) {
                const JsonValue *t = json_array_at(tasks, i);
                const char *tid = json_get_string(t, "id");

                if (!task_is_final(t) || !tid || !task_id_is_valid(tid))
                        continue;
                if (remove_task(h, tid) < 0)
                        ret = EXIT_API_ERROR;
        }
        return ret;
}

static char wait_timeout_message[256];
static size_t wait_timeout_message_len = 0;

static void on_wait_timeout(int sig) {
        ssize_t k = write(STDERR_FILENO, wait_timeout_message, wait_timeout_message_len);
        (void) k;
        _exit(EXIT_API_ERROR);
}

/* --timeout: a timer whose handler says so and exits, wherever the waiting is. */
static int arm_wait_timeout(const char *text, uint64_t usec) {
        struct sigaction sa = {
                .sa_handler = on_wait_timeout,
        };
        struct itimerval it = {
                .it_value.tv_sec = (time_t) (usec / USEC_PER_SEC),
                .it_value.tv_usec = (suseconds_t) (usec % USEC_PER_SEC),
        };
        int n;

        n = snprintf(wait_timeout_message, sizeof(wait_timeout_message),
                     "%s: wait: timed out after %s, not every task has ended\n", program_invocation_short_name, text);
        wait_timeout_message_len = n < 0 ? 0 : MIN((size_t) n, sizeof(wait_timeout_message) - 1);
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGALRM, &sa, NULL) < 0 || setitimer(ITIMER_REAL, &it, NULL) < 0)
                return -errno;
        return 0;
}

static int parse_wait_option(int c) {
        if (c == ARG_TIMEOUT) {
                if (parse_duration(optarg, &arg_timeout_usec) < 0 || arg_timeout_usec == 0)
                        return usage_error("wait: --timeout: invalid duration '%s'", optarg);
                arg_timeout = optarg;
        }
        return 0;
}

static int verb_wait(CtlHttp *h, char **args, int n_args) {
        int ret = -1;

        if (arg_timeout_usec != UINT64_MAX && arm_wait_timeout(arg_timeout, arg_timeout_usec) < 0)
                return ctl_error("wait: cannot arm the timeout: %s", strerror(errno)), EXIT_API_ERROR;

        /* In the order given: the total wait is the longest task's either way. */
        for (int i = 0; i < n_args; i++) {
                _cleanup_(ctl_response_done) CtlResponse resp = {};
                _cleanup_json_ JsonValue *task = NULL;
                int status;

                /* Following the log without showing it wakes us exactly when the task ends. */
                if (follow_task(h, args[i], -EBADF, &resp, &task) < 0)
                        return EXIT_API_ERROR;
                status = exit_status_of(task);
                if (arg_json)
                        print_body(&resp);
                else if (n_args > 1)
                        printf("%s %d\n", args[i], status);
                fflush(stdout);
                if (ret < 0 || (ret == 0 && status != 0))
                        ret = status;
        }
        return ret;
}

static int verb_health(CtlHttp *h, char **args, int n_args) {
        _cleanup_(ctl_response_done) CtlResponse resp = {};
        _cleanup_json_ JsonValue *v = NULL;
        int r;

        r = ctl_http_request(h, "GET", "/v1/health", NULL, /* stream= */ false, NULL, NULL, &resp);
        if (r < 0)
                return report_transport_error(h, r), EXIT_API_ERROR;

        /* 503 while stopping still carries the health object, not an error object. */
        if (!IN_SET((int) resp.status, 200, 503) ||
            json_parse(resp.body, resp.size, JSON_DEPTH_MAX_DEFAULT, &v, NULL) < 0 || !json_is_object(v) ||
            json_get(v, "error"))
                return report_api_error(&resp), EXIT_API_ERROR;

        if (arg_json)
                print_body(&resp);
        else
                ctl_print_task_fields(stdout, v);
        return resp.status == 200 ? 0 : EXIT_API_ERROR;
}

/* A verb: its own options (on top of the common ones, parsed by run_verb() wherever they
 * stand, except for run, where COMMAND's words begin at the first non-option), its
 * positional arguments, and the function that does it with the API opened. */
typedef struct Verb {
        const char *name, *alias;
        const char *short_options;    /* the verb's own */
        const struct option *options; /* the verb's own, {}-terminated, or NULL */
        int (*parse)(int c);          /* one of them: 0, or the exit status */
        int min_args, max_args;       /* max_args -1: any number */
        bool ids;                     /* the arguments are task ids, checked before anything is sent */
        bool no_json;
        bool stop_at_args;
        int (*run)(CtlHttp *h, char **args, int n_args);
        const char *args, *help; /* for the verb's --help */
} Verb;

/* Each verb's --help: its arguments after the name (the alias's own name is shown),
 * what it does, its own options. */
#define ARGS_RUN "[OPTIONS] [--] COMMAND... | [OPTIONS] --file=FILE"
#define HELP_RUN \
        "Submit a task running COMMAND (words joined by spaces into one shell command) and\n" \
        "print its id.\n\n" \
        "     --id=ID               Task id; submitting an id again does not run it twice\n" \
        "     --name=NAME           Task name (default: the id)\n" \
        "     --service=SERVICE     Service whose container the task runs in\n" \
        "     --project=PROJECT     Lagoon project\n" \
        "     --environment=ENV     Lagoon environment\n" \
        "     --timeout=DURATION    Time limit, e.g. 90, 30min, 2h, infinity (0: none)\n" \
        "  -w --wait                Follow the output, then exit with the task's status\n" \
        "                           (with --json: silently, then print the task)\n" \
        "     --argv                Run the words of COMMAND as they are (each quoted for the\n" \
        "                           shell): run --argv -- printf '%s\\n' \"it's\"\n" \
        "     --file=FILE           The command is FILE's contents, a script (- for stdin)\n"
#define HELP_LS \
        "List tasks, oldest first (ls and list are the same). STATUS says why a task failed\n" \
        "(timeout, launch-error, killed (SIGKILL), ...) and \"stopping\" once SIGTERM was sent.\n\n" \
        "     --status=STATUS,...   Only tasks in these states (new, pending, running,\n" \
        "                           complete, failed, cancelled)\n" \
        "     --project=PROJECT     Only the tasks of this Lagoon project\n" \
        "  -q --quiet               Print only the ids (= --format=id)\n" \
        "  -o --format=FORMAT       table, wide (adds NAME, PROJECT/ENVIRONMENT, CREATED),\n" \
        "                           json or id\n" \
        "     --no-trunc            Do not shorten the ID, NAME and COMMAND columns\n"
#define HELP_SHOW "Show a task as \"key: value\" lines (show and inspect are the same).\n"
#define HELP_LOGS \
        "Print a task's output.\n\n" \
        "  -f --follow              Keep printing output until the task ends\n" \
        "  -n --tail=N              Begin with the last N lines\n" \
        "     --since=WHEN          Only lines from WHEN on: a duration before now (10m,\n" \
        "                           '2h ago') or a time (RFC 3339, 'YYYY-MM-DD HH:MM:SS')\n" \
        "  -t --timestamps          Begin each line with its time (RFC 3339, UTC)\n" \
        "     --stdout, --stderr    Only the lines of this stream\n" \
        "With --since, --timestamps, --stdout or --stderr the lines are read from journald,\n" \
        "which needs root or group systemd-journal.\n"
#define HELP_CANCEL \
        "Cancel a queued task at once, a running one with SIGTERM, then SIGKILL after\n" \
        "KillGraceSec= (cancel and stop are the same), and wait until it has ended. Prints\n" \
        "the id, and on stderr what was done. A task that had already ended is no error.\n\n" \
        "     --no-wait             Return once SIGTERM was sent\n" \
        "  -t --time=DURATION       SIGKILL after DURATION (e.g. 5, 30s; 0: at once) instead\n" \
        "                           of KillGraceSec=\n"
#define HELP_WAIT \
        "Wait for the tasks to end; exit with the status of the first one (in the order given)\n" \
        "that did not end with 0, else 0 (see lagoon-taskctl --help). With several ids, print\n" \
        "\"ID STATUS\" as each ends.\n\n" \
        "     --timeout=DURATION    Give up after DURATION (e.g. 90, 5min) with exit status 1\n"
#define HELP_RM \
        "Remove finished tasks: their records and logs, now rather than when KeepFinished=\n" \
        "would. Prints each id removed; a task that has not finished is refused (cancel it first).\n"
#define HELP_PRUNE "Remove every finished task (as rm). Prints each id removed.\n"
#define HELP_HEALTH \
        "Show the daemon's state: status, version, running and queued tasks, whether\n" \
        "journald is reachable, the last reload's result. Exits 1 while the daemon is stopping.\n"

static const struct option run_options[] = {
        {"id", required_argument, NULL, ARG_ID},
        {"name", required_argument, NULL, ARG_NAME},
        {"service", required_argument, NULL, ARG_SERVICE},
        {"project", required_argument, NULL, ARG_PROJECT},
        {"environment", required_argument, NULL, ARG_ENVIRONMENT},
        {"timeout", required_argument, NULL, ARG_TIMEOUT},
        {"wait", no_argument, NULL, 'w'},
        {"argv", no_argument, NULL, ARG_ARGV},
        {"file", required_argument, NULL, ARG_FILE},
        {},
};
static const struct option ls_options[] = {
        {"no-trunc", no_argument, NULL, ARG_NO_TRUNC},     {"status", required_argument, NULL, ARG_STATUS},
        {"project", required_argument, NULL, ARG_PROJECT}, {"quiet", no_argument, NULL, 'q'},
        {"format", required_argument, NULL, 'o'},          {},
};
static const struct option logs_options[] = {
        {"follow", no_argument, NULL, 'f'},
        {"tail", required_argument, NULL, 'n'},
        {"since", required_argument, NULL, ARG_SINCE},
        {"timestamps", no_argument, NULL, 't'},
        {"stdout", no_argument, NULL, ARG_STDOUT},
        {"stderr", no_argument, NULL, ARG_STDERR},
        {},
};
static const struct option cancel_options[] = {
        {"no-wait", no_argument, NULL, ARG_NO_WAIT},
        {"time", required_argument, NULL, 't'},
        {},
};
static const struct option wait_options[] = {
        {"timeout", required_argument, NULL, ARG_TIMEOUT},
        {},
};

static const Verb verbs[] = {
        {"run", .short_options = "w", .options = run_options, .parse = parse_run_option, .max_args = -1,
         .stop_at_args = true, .run = verb_run, .args = ARGS_RUN, .help = HELP_RUN},
        {"ls", "list", .short_options = "qo:", .options = ls_options, .parse = parse_ls_option, .run = verb_ls,
         .args = "[OPTIONS]", .help = HELP_LS},
        {"logs", .short_options = "fn:t", .options = logs_options, .parse = parse_logs_option, .min_args = 1,
         .max_args = 1, .ids = true, .no_json = true, .run = verb_logs,
         .args = "[-f] [-n N] [--since=WHEN] [-t] [--stdout|--stderr] ID", .help = HELP_LOGS},
        {"show", "inspect", .min_args = 1, .max_args = 1, .ids = true, .run = verb_show, .args = "ID",
         .help = HELP_SHOW},
        {"cancel", "stop", .short_options = "t:", .options = cancel_options, .parse = parse_cancel_option,
         .min_args = 1, .max_args = 1, .ids = true, .run = verb_cancel, .args = "[--no-wait] [--time=DURATION] ID",
         .help = HELP_CANCEL},
        {"wait", .options = wait_options, .parse = parse_wait_option, .min_args = 1, .max_args = -1, .ids = true,
         .run = verb_wait, .args = "[--timeout=DURATION] ID...", .help = HELP_WAIT},
        {"rm", .min_args = 1, .max_args = -1, .ids = true, .run = verb_rm, .args = "ID...", .help = HELP_RM},
        {"prune", .run = verb_prune, .args = "", .help = HELP_PRUNE},
        {"health", .run = verb_health, .args = "", .help = HELP_HEALTH},
};

static const Verb *find_verb(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(name, verbs[i].name) || streq_ptr(name, verbs[i].alias))
                        return &verbs[i];
        return NULL;
}

static void verb_help(const char *verb) {
        const Verb *v = find_verb(verb);

        if (v)
                printf("%s %s%s%s\n\n%s\n", program_invocation_short_name, verb, isempty(v->args) ? "" : " ", v->args,
                       v->help);
        printf("Common options:\n"
               "     --socket=PATH         Control socket (default: $LAGOON_TASKD_SOCKET, else\n"
               "                           " SOCKET_PATH_DEFAULT ")\n"
               "%s"
               "  -h --help                Show this help\n",
               v && v->no_json ? "" : "     --json                Print the API's JSON instead of text\n");
}

static int run_verb(const Verb *v, int argc, char *argv[]) {
        static const struct option common[] = {
                COMMON_OPTIONS,
        };
        _cleanup_(ctl_http_freep) CtlHttp *h = NULL;
        struct option options[ELEMENTSOF(common) + 16] = {};
        char short_options[16];
        size_t n = 0;
        int c, r;

        memcpy(options, common, sizeof(common));
        for (const struct option *o = v->options; o && o->name; o++) {
                assert(ELEMENTSOF(common) + n < ELEMENTSOF(options) - 1);
                options[ELEMENTSOF(common) + n++] = *o;
        }
        /* Without "+", options may follow the task id ("show ID --json"), as in kubectl. */
        snprintf(short_options, sizeof(short_options), "%sh%s", v->stop_at_args ? "+" : "", v->short_options ?: "");

        while ((c = getopt_long(argc, argv, short_options, options, NULL)) >= 0) {
                if (IN_SET(c, ARG_SOCKET, ARG_JSON, 'h', '?')) {
                        r = handle_common_option(c, v->name, !v->no_json);
                        if (r <= 0)
                                return -r;
                        continue;
                }
                r = v->parse(c);
                if (r != 0)
                        return r;
        }

        n = (size_t) (argc - optind);
        if ((int) n < v->min_args)
                return usage_error("%s: missing task id", arg_verb);
        if (v->max_args >= 0 && (int) n > v->max_args)
                return usage_error("%s: unexpected argument '%s'", arg_verb, argv[optind + v->max_args]);
        for (int i = optind; v->ids && i < argc; i++)
                if (check_task_id(arg_verb, argv[i]) != 0)
                        return EXIT_USAGE;

        if (open_api(&h) < 0)
                return EXIT_API_ERROR;
        return v->run(h, argv + optind, (int) n);
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                COMMON_OPTIONS,
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        _cleanup_free_ char *verb_argv0 = NULL;
        const Verb *v;
        const char *verb;
        int c, r;

        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
                switch (c) {
                case ARG_VERSION:
                        printf("%s %s\n", program_invocation_short_name, PACKAGE_VERSION);
                        return 0;
                default:
                        r = handle_common_option(c, NULL, true);
                        if (r <= 0)
                                return -r;
                }

        if (optind >= argc)
                return usage_error("missing command");
        verb = argv[optind];
        if (streq(verb, "help")) {
                help();
                return 0;
        }

        v = find_verb(verb);
        if (!v)
                return usage_error("unknown command '%s'", verb);

        /* getopt's own messages then read "lagoon-taskctl run: unrecognized option". */
        if (asprintf(&verb_argv0, "%s %s", program_invocation_short_name, verb) < 0)
                return ctl_error("out of memory"), EXIT_API_ERROR;
        argv[optind] = verb_argv0;
        arg_verb = verb;

        if (curl_global_init(CURL_GLOBAL_NOTHING) != CURLE_OK) {
                ctl_error("cannot initialize libcurl");
                return EXIT_API_ERROR;
        }
        argc -= optind;
        argv += optind;
        optind = 0; /* GNU getopt: start over on the verb's arguments */
        r = run_verb(v, argc, argv);
        fflush(stdout);
        curl_global_cleanup();
        return r;
}
