/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The runtime launcher: runs a task as a clone of its service's OCI bundle under conmon
 * with runc/crun. It owns the per-task container directory (config.json, the overlay
 * mount rootfs/ over upper/ and work/, conmon's CRI log ctr.log, exit/ and the pid
 * files), the child processes it forks (conmon, "<runtime> start|kill|delete"), and the
 * watch on a container's end (inotify on exit/ for conmon's exit file, a pidfd on conmon
 * for conmon dying without one). conmon double-forks and outlives the daemon, so a
 * restarted daemon adopts the container from what is on disk.
 *
 * Recipe, as checked on this machine (conmon 2.1.6, runc 1.1.5): conmon gets the
 * runtime's absolute path (it execv()s it), --api-version 1, --socket-dir-path (always
 * required) with --full-attach so the attach socket lives in the bundle dir and no
 * symlink is left behind, k8s-file log, --exit-dir (the exit file is named after the
 * container id and written with a rename), and _OCI_SYNCPIPE: after "<runtime> create"
 * conmon writes {"data": <container pid>} or {"data": -1, "message": <runtime stderr>}.
 * Then the caller runs "<runtime> start <id>". conmon's failure to write
 * /proc/self/oom_score_adj (no CAP_SYS_RESOURCE here) is harmless. */

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "bundle.h"
#include "cgroup.h"
#include "fs-util.h"
#include "json.h"
#include "launcher-runtime.h"
#include "log.h"
#include "seccomp-profile.h"

/* Bound on every synchronous wait for a child (conmon's create report, runtime
 * start/kill/delete). runc create takes ~0.1 s here; 30 s only catches a hung runtime. */
#define RUNTIME_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* How long remove waits for conmon to notice its container is gone before killing it. */
#define CONMON_EXIT_WAIT_USEC (3 * USEC_PER_SEC)
#define CHILD_OUTPUT_MAX (64U * 1024U)
#define SMALL_FILE_MAX 4096U
#define HOSTNAME_MAX_LEN 63U

struct RuntimeContainer {
        sd_event *event;
        char *id;
        char *dir;
        char *exit_dir;
        char *exit_path;
        char *log_path;
        char *runtime; /* absolute path */
        char **runtime_args;

        pid_t conmon_pid;
        int conmon_pidfd;
        sd_event_source *exit_source;   /* inotify on exit_dir */
        sd_event_source *conmon_source; /* io on conmon_pidfd */
        sd_event_source *defer_source;  /* a result known before the loop runs */
        int deferred_status;

        runtime_exit_cb_t cb;
        void *userdata;
        bool finished;
};

static int pidfd_open_pid(pid_t pid) {
        int fd = (int) syscall(SYS_pidfd_open, pid, 0); /* pidfds are always close-on-exec */
        return fd < 0 ? -errno : fd;
}

static _printf_(2, 3) void set_error(char **ret_error, const char *format, ...) {
        va_list ap;

        if (!ret_error)
                return;
        free(*ret_error);
        va_start(ap, format);
        if (vasprintf(ret_error, format, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
}

int runtime_container_id(const char *task_id, char **ret) {
        char *s;

        if (!task_id || !ret)
                return -EINVAL;
        if (asprintf(&s, "lagoon-task-%s", task_id) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

const char *runtime_container_log_path(RuntimeContainer *c) {
        return c ? c->log_path : NULL;
}

/* ---- child processes ---------------------------------------------------------------- */

/* Appends to a growing buffer, keeping at most CHILD_OUTPUT_MAX bytes (the rest is read
 * and dropped, so a chatty child never blocks on a full pipe). */
static int buffer_append(char **buf, size_t *size, const char *data, size_t n) {
        char *p;

        n = MIN(n, CHILD_OUTPUT_MAX - MIN(*size, CHILD_OUTPUT_MAX));
        if (n == 0)
                return 0;
        p = realloc(*buf, *size + n + 1);
        if (!p)
                return -ENOMEM;
        memcpy(p + *size, data, n);
        *size += n;
        p[*size] = 0;
        *buf = p;
        return 0;
}

/* The fds a child gets must not sit on 0-2, or dup2() onto stdio would clobber them. */
static int fd_move_above_stdio(int fd) {
        int nfd;

        if (fd < 0 || fd > STDERR_FILENO)
                return fd;
        nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        safe_close(fd);
        return nfd < 0 ? -errno : nfd;
}

static _noreturn_ void
child_exec(const char *path, char *const *argv, char *const *envp, int null_fd, int stderr_fd, int pass_fd) {
        struct sigaction sa = {.sa_handler = SIG_DFL};
        sigset_t ss;

        /* An sd-event daemon blocks the signals it handles and may ignore SIGPIPE; both
         * survive exec and would reach the container process. */
        (void) sigemptyset(&ss);
        (void) sigprocmask(SIG_SETMASK, &ss, NULL);
        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) sigaction(sig, &sa, NULL);

        if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(null_fd, STDOUT_FILENO) < 0 || dup2(stderr_fd, STDERR_FILENO) < 0)
                _exit(127);
        if (pass_fd >= 0) {
                if (pass_fd == 3) {
                        if (fcntl(3, F_SETFD, 0) < 0)
                                _exit(127);
                } else if (dup2(pass_fd, 3) < 0)
                        _exit(127);
        }
        /* Everything is O_CLOEXEC already; this catches what a library forgot. */
        (void) close_range(pass_fd >= 0 ? 4 : 3, ~0U, 0);

        execve(path, argv, envp);
        _exit(127);
}

typedef struct Child {
        pid_t pid;  /* 0 once reaped */
        int pidfd;  /* of the forked child */
        int err_fd; /* read end of its stderr */
        int status; /* exit status, 128+N when killed by signal N */
} Child;

#define CHILD_NULL ((Child){.pid = 0, .pidfd = -EBADF, .err_fd = -EBADF, .status = -1})

static void child_done(Child *ch) {
        /* Never leave a zombie: an unreaped child is killed and reaped. */
        if (ch->pid > 0) {
                (void) kill(ch->pid, SIGKILL);
                (void) waitpid(ch->pid, NULL, 0);
                ch->pid = 0;
        }
        ch->pidfd = safe_close(ch->pidfd);
        ch->err_fd = safe_close(ch->err_fd);
}

/* Forks path with argv; stdin and stdout are /dev/null, stderr a pipe kept in ch->err_fd,
 * pass_fd (when >= 0) becomes fd 3. The environment is PATH plus extra_env only. */
static int child_spawn(const char *path, char *const *argv, char *const *extra_env, int pass_fd, Child *ret) {
        _cleanup_strv_free_ char **env = NULL;
        _cleanup_close_ int null_fd = -EBADF, err_r = -EBADF, err_w = -EBADF;
        _cleanup_free_ char *path_env = NULL;
        int pipefd[2], pidfd;
        pid_t pid;
        int r;

        if (asprintf(&path_env, "PATH=%s",
                     getenv("PATH") ?: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") < 0)
                return -ENOMEM;
        r = strv_push(&env, TAKE_PTR(path_env));
        if (r < 0)
                return r;
        for (char *const *e = extra_env; e && *e; e++) {
                r = strv_extend(&env, *e);
                if (r < 0)
                        return r;
        }

        null_fd = fd_move_above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY));
        if (null_fd < 0)
                return null_fd == -1 ? -errno : null_fd;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        err_r = pipefd[0];
        err_w = fd_move_above_stdio(pipefd[1]);
        if (err_w < 0)
                return err_w;
        if (fcntl(err_r, F_SETFL, O_NONBLOCK) < 0)
                return -errno;

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0)
                child_exec(path, argv, env, null_fd, err_w, pass_fd);

        pidfd = pidfd_open_pid(pid); /* our unreaped child: the pid cannot be reused */
        *ret = (Child){
                .pid = pid,
                .pidfd = pidfd < 0 ? -EBADF : pidfd,
                .err_fd = TAKE_FD(err_r),
                .status = -1,
        };
        if (pidfd < 0) {
                r = pidfd;
                child_done(ret);
                return r;
        }
        return 0;
}

static void drain_fd(int fd, char **buf, size_t *size) {
        char b[4096];

        for (;;) {
                ssize_t n = read(fd, b, sizeof(b));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;
                if (buffer_append(buf, size, b, (size_t) n) < 0)
                        return;
        }
}

/* Waits until the child exited and, when sync_fd >= 0, until a full line (or EOF) came
 * through sync_fd, collecting the child's stderr meanwhile. Bounded by deadline
 * (CLOCK_MONOTONIC): past it the child is killed and -ETIMEDOUT returned. */
static int child_wait(Child *ch, int sync_fd, uint64_t deadline, char **ret_stderr, char **ret_sync) {
        _cleanup_free_ char *err = NULL, *sync = NULL;
        size_t err_size = 0, sync_size = 0;
        bool sync_open = sync_fd >= 0, err_open = ch->err_fd >= 0;
        int r;

        while (ch->pid > 0 || sync_open) {
                struct pollfd p[3];
                nfds_t n = 0;
                int idx_sync = -1, idx_err = -1, idx_pid = -1;
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                int timeout_ms;

                if (now >= deadline) {
                        child_done(ch);
                        return -ETIMEDOUT;
                }
                timeout_ms = (int) MIN((deadline - now + 999) / 1000, (uint64_t) INT_MAX);

                if (sync_open) {
                        idx_sync = (int) n;
                        p[n++] = (struct pollfd){.fd = sync_fd, .events = POLLIN};
                }
                if (err_open) {
                        idx_err = (int) n;
                        p[n++] = (struct pollfd){.fd = ch->err_fd, .events = POLLIN};
                }
                if (ch->pid > 0) {
                        idx_pid = (int) n;
                        p[n++] = (struct pollfd){.fd = ch->pidfd, .events = POLLIN};
                }

                r = poll(p, n, timeout_ms);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        child_done(ch);
                        return r;
                }

                if (idx_sync >= 0 && p[idx_sync].revents) {
                        char b[4096];
                        ssize_t k = read(sync_fd, b, sizeof(b));

                        if (k < 0 && errno != EINTR && errno != EAGAIN)
                                sync_open = false;
                        else if (k == 0)
                                sync_open = false;
                        else if (k > 0) {
                                r = buffer_append(&sync, &sync_size, b, (size_t) k);
                                if (r < 0) {
                                        child_done(ch);
                                        return r;
                                }
                                /* One message per create; conmon keeps the pipe open. */
                                if (memchr(b, '\n', (size_t) k) || sync_size >= CHILD_OUTPUT_MAX)
                                        sync_open = false;
                        }
                }
                if (idx_err >= 0 && p[idx_err].revents) {
                        char b[4096];
                        ssize_t k = read(ch->err_fd, b, sizeof(b));

                        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
                                err_open = false;
                        else if (k > 0)
                                (void) buffer_append(&err, &err_size, b, (size_t) k);
                }
                if (idx_pid >= 0 && p[idx_pid].revents) {
                        int status;
                        pid_t k = waitpid(ch->pid, &status, WNOHANG);

                        if (k == ch->pid) {
                                ch->pid = 0;
                                ch->status = WIFEXITED(status)     ? WEXITSTATUS(status)
                                             : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                                                   : 255;
                        } else if (k < 0 && errno != EINTR) {
                                r = -errno;
                                child_done(ch);
                                return r;
                        }
                }
        }

        /* What the child wrote before it exited is in the pipe already. */
        if (err_open)
                drain_fd(ch->err_fd, &err, &err_size);

        if (ret_stderr)
                *ret_stderr = TAKE_PTR(err);
        if (ret_sync)
                *ret_sync = TAKE_PTR(sync);
        return 0;
}

/* runc reports errors as logrus lines (time="…" level=error msg="…"): keep the msg values.
 * Other lines (crun's plain text) are kept as they are, conmon's own debug noise dropped.
 * Returns NULL when nothing is left. */
char *runtime_error_text(const char *raw) {
        _cleanup_free_ char *out = NULL;
        size_t size = 0;

        if (!raw)
                return NULL;
        for (const char *l = raw; *l;) {
                size_t len = strcspn(l, "\n");
                _cleanup_free_ char *line = strndup(l, len);
                _cleanup_free_ char *text = NULL;
                const char *m;

                l += len;
                if (*l == '\n')
                        l++;
                if (!line)
                        return NULL;

                m = strstr(line, "msg=\"");
                if (m) {
                        size_t k = 0;

                        m += strlen("msg=\"");
                        text = malloc(strlen(m) + 1);
                        if (!text)
                                return NULL;
                        for (; *m && *m != '"'; m++) {
                                if (*m == '\\' && m[1]) {
                                        m++;
                                        text[k++] = *m == 'n' || *m == 't' ? ' ' : *m;
                                } else
                                        text[k++] = *m;
                        }
                        text[k] = 0;
                } else {
                        char *s = line + strspn(line, " \t\r");
                        size_t e = strlen(s);

                        while (e > 0 && strchr(" \t\r", s[e - 1]))
                                s[--e] = 0;
                        if (e == 0 || startswith(s, "[conmon:d]") || strstr(s, "oom_score_adj"))
                                continue;
                        text = strdup(s);
                        if (!text)
                                return NULL;
                }
                if (isempty(text))
                        continue;
                if (size > 0 && buffer_append(&out, &size, "; ", 2) < 0)
                        return NULL;
                if (buffer_append(&out, &size, text, strlen(text)) < 0)
                        return NULL;
        }
        return TAKE_PTR(out);
}

int runtime_parse_sync_message(const char *data, size_t size, int64_t *ret_pid, char **ret_error_text) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        const char *nl;
        int64_t pid;
        size_t n;
        int r;

        if (!data || !ret_pid || !ret_error_text)
                return -EINVAL;
        /* One JSON object on the first line: {"data": N[, "message": "…"]}. */
        nl = memchr(data, '\n', size);
        n = nl ? (size_t) (nl - data) : size;
        r = json_parse(data, n, 4, &v, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_is_object(v) || json_int64(json_get(v, "data"), &pid) < 0)
                return -EBADMSG;
        if (pid <= 0) {
                *ret_error_text = runtime_error_text(json_get_string(v, "message"));
                return -EIO;
        }
        *ret_pid = pid;
        return 0;
}

/* Runs "<runtime> [runtime_args] verb args…" to its end. Returns 0 on success; on a non-zero
 * exit -EIO with the runtime's error text in *ret_error. */
static int
runtime_run(const char *runtime, char *const *runtime_args, const char *verb, char *const *args, char **ret_error) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *err = NULL;
        Child ch = CHILD_NULL;
        int r;

        r = strv_extend(&argv, runtime);
        for (char *const *a = runtime_args; r >= 0 && a && *a; a++)
                r = strv_extend(&argv, *a);
        if (r >= 0)
                r = strv_extend(&argv, verb);
        for (char *const *a = args; r >= 0 && a && *a; a++)
                r = strv_extend(&argv, *a);
        if (r < 0)
                return r;

        r = child_spawn(runtime, argv, NULL, -EBADF, &ch);
        if (r < 0) {
                set_error(ret_error, "failed to run %s %s: %s", runtime, verb, strerror(-r));
                return r;
        }
        r = child_wait(&ch, -EBADF, now_usec(CLOCK_MONOTONIC) + RUNTIME_TIMEOUT_USEC, &err, NULL);
        child_done(&ch);
        if (r == -ETIMEDOUT) {
                set_error(ret_error, "%s %s did not finish within %" PRIu64 " s", runtime, verb,
                          RUNTIME_TIMEOUT_USEC / USEC_PER_SEC);
                return r;
        }
        if (r < 0)
                return r;
        if (ch.status != 0) {
                _cleanup_free_ char *text = runtime_error_text(err);

                if (ch.status == 127 && !text)
                        set_error(ret_error, "failed to execute %s", runtime);
                else
                        set_error(ret_error, "%s %s failed (exit status %d): %s", runtime, verb, ch.status,
                                  text ?: "no error output");
                return -EIO;
        }
        return 0;
}

/* ---- files in the container dir ----------------------------------------------------- */

static int read_int_file(const char *path, int64_t *ret) {
        _cleanup_free_ char *s = NULL;
        char *end = NULL;
        long long v;
        int r;

        /* Written by conmon and runc, in a directory the task cannot reach; still read
         * as a regular file only. */
        r = read_regular_file_at(AT_FDCWD, path, SMALL_FILE_MAX, &s, NULL);
        if (r < 0)
                return r;
        s[strcspn(s, "\n")] = 0;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || end == s || *end != 0)
                return -EBADMSG;
        *ret = v;
        return 0;
}

/* conmon writes the container's status as a decimal: the exit code, 128+N after signal N,
 * -1 when it could not tell. */
static int read_exit_file(const char *path, int *ret_status) {
        int64_t v;
        int r;

        r = read_int_file(path, &v);
        if (r < 0)
                return r;
        *ret_status = v >= 0 && v <= 255 ? (int) v : -EIO;
        return 0;
}

static int read_pid_file(const char *path, pid_t *ret) {
        int64_t v;
        int r;

        r = read_int_file(path, &v);
        if (r < 0)
                return r;
        if (v <= 0 || v > INT_MAX)
                return -EBADMSG;
        *ret = (pid_t) v;
        return 0;
}

/* Whether pid's command line has an argument equal to id (conmon runs with "-c <id>"). */
static bool process_has_argument(pid_t pid, const char *id) {
        _cleanup_free_ char *path = NULL, *cmdline = NULL;
        size_t size = 0;

        if (asprintf(&path, "/proc/%d/cmdline", (int) pid) < 0)
                return false;
        if (read_full_file(path, CHILD_OUTPUT_MAX, &cmdline, &size) < 0)
                return false;
        for (size_t i = 0; i < size; i += strlen(cmdline + i) + 1)
                if (streq(cmdline + i, id))
                        return true;
        return false;
}

static bool pidfd_exited(int pidfd) {
        struct pollfd p = {.fd = pidfd, .events = POLLIN};
        return poll(&p, 1, 0) > 0;
}

/* Opens a pidfd on the conmon named by <dir>/conmon.pid when it is alive and is the
 * conmon of container id. -ESRCH when not (gone, or the pid was reused). */
static int conmon_open(const char *dir, const char *id, pid_t *ret_pid, int *ret_pidfd) {
        _cleanup_free_ char *pidfile = NULL;
        _cleanup_close_ int pidfd = -EBADF;
        pid_t pid;
        int r;

        pidfile = path_join(dir, "conmon.pid");
        if (!pidfile)
                return -ENOMEM;
        r = read_pid_file(pidfile, &pid);
        if (r < 0)
                return r;
        pidfd = pidfd_open_pid(pid);
        if (pidfd < 0)
                return pidfd == -ESRCH ? -ESRCH : pidfd;
        /* Checked after the pidfd is open, so the process checked is the one we hold. */
        if (!process_has_argument(pid, id) || pidfd_exited(pidfd))
                return -ESRCH;
        *ret_pid = pid;
        *ret_pidfd = TAKE_FD(pidfd);
        return 0;
}

/* Waits up to timeout for conmon to exit, then kills it. */
static void conmon_stop(const char *dir, const char *id, uint64_t timeout) {
        _cleanup_close_ int pidfd = -EBADF;
        struct pollfd p;
        pid_t pid;

        if (conmon_open(dir, id, &pid, &pidfd) < 0)
                return;
        p = (struct pollfd){.fd = pidfd, .events = POLLIN};
        if (poll(&p, 1, (int) (timeout / USEC_PER_MSEC)) > 0)
                return;
        log_debug("Container %s: conmon (PID %d) still running, killing it.", id, (int) pid);
        (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        p = (struct pollfd){.fd = pidfd, .events = POLLIN};
        (void) poll(&p, 1, 1000);
}

/* ---- the watch on a container's end --------------------------------------------------- */

static void container_finish(RuntimeContainer *c, int status) {
        if (c->finished)
                return;
        c->finished = true;
        c->exit_source = sd_event_source_disable_unref(c->exit_source);
        c->conmon_source = sd_event_source_disable_unref(c->conmon_source);
        c->defer_source = sd_event_source_disable_unref(c->defer_source);
        c->conmon_pidfd = safe_close(c->conmon_pidfd);
        log_debug("Container %s ended with %s %d.", c->id, status >= 0 ? "status" : "error", status);
        /* Last: the callback may free c. */
        if (c->cb)
                c->cb(c, status, c->userdata);
}

static int on_deferred(sd_event_source *s, void *userdata) {
        RuntimeContainer *c = userdata;

        container_finish(c, c->deferred_status);
        return 0;
}

/* Delivers a result already known from the event loop, never from inside start/adopt. */
static int container_defer(RuntimeContainer *c, int status) {
        int r;

        if (c->defer_source)
                return 0;
        c->deferred_status = status;
        r = sd_event_add_defer(c->event, &c->defer_source, on_deferred, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->defer_source, "container-result");
        return 0;
}

static int on_exit_dir(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        RuntimeContainer *c = userdata;
        int status;

        if (c->finished || c->defer_source)
                return 0;
        if (!(ev->mask & IN_Q_OVERFLOW) && ev->len > 0 && !streq(ev->name, c->id))
                return 0; /* conmon's temporary file before the rename */
        if (read_exit_file(c->exit_path, &status) < 0)
                return 0;
        container_finish(c, status);
        return 0;
}

static int on_conmon_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        RuntimeContainer *c = userdata;
        int status, r;

        if (c->finished || c->defer_source)
                return 0;
        /* conmon writes the exit file before it exits, so it is there if it ever will be. */
        r = read_exit_file(c->exit_path, &status);
        if (r < 0) {
                log_warning("Container %s: conmon (PID %d) exited without an exit file; the container is lost.", c->id,
                            (int) c->conmon_pid);
                status = -ESRCH;
        }
        container_finish(c, status);
        return 0;
}

static int container_new(sd_event *e,
                         const Config *config,
                         const char *runtime,
                         const char *task_id,
                         const char *dir,
                         runtime_exit_cb_t cb,
                         void *userdata,
                         RuntimeContainer **ret) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        int r;

        c = calloc(1, sizeof(RuntimeContainer));
        if (!c)
                return -ENOMEM;
        c->conmon_pidfd = -EBADF;
        c->event = sd_event_ref(e);
        c->cb = cb;
        c->userdata = userdata;

        r = runtime_container_id(task_id, &c->id);
        if (r < 0)
                return r;
        c->dir = strdup(dir);
        c->exit_dir = path_join(dir, "exit");
        c->log_path = path_join(dir, "ctr.log");
        if (!c->dir || !c->exit_dir || !c->log_path)
                return -ENOMEM;
        c->exit_path = path_join(c->exit_dir, c->id);
        if (!c->exit_path)
                return -ENOMEM;

        c->runtime = strdup(runtime);
        if (!c->runtime)
                return -ENOMEM;
        if (config->runtime_args) {
                c->runtime_args = strv_copy(config->runtime_args);
                if (!c->runtime_args)
                        return -ENOMEM;
        }

        *ret = TAKE_PTR(c);
        return 0;
}

static int container_watch_exit_dir(RuntimeContainer *c) {
        int r;

        r = sd_event_add_inotify(c->event, &c->exit_source, c->exit_dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR,
                                 on_exit_dir, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->exit_source, "container-exit-file");
        return 0;
}

/* -ESRCH when conmon is not (any longer) running. */
static int container_watch_conmon(RuntimeContainer *c) {
        int r;

        r = conmon_open(c->dir, c->id, &c->conmon_pid, &c->conmon_pidfd);
        if (r < 0)
                return r;
        r = sd_event_add_io(c->event, &c->conmon_source, c->conmon_pidfd, EPOLLIN, on_conmon_exit, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->conmon_source, "container-conmon");
        return 0;
}

/* After the watches are armed: a result that is already on disk is delivered now (the
 * inotify event for it may have come before the watch), a conmon that is gone without
 * one means the container is lost. */
static int container_check_now(RuntimeContainer *c, bool conmon_watched) {
        int status;

        if (read_exit_file(c->exit_path, &status) >= 0)
                return container_defer(c, status);
        if (!conmon_watched) {
                log_warning("Container %s: conmon is gone and left no exit file; the container is lost.", c->id);
                return container_defer(c, -ESRCH);
        }
        return 0;
}

RuntimeContainer *runtime_container_free(RuntimeContainer *c) {
        if (!c)
                return NULL;
        sd_event_source_disable_unref(c->exit_source);
        sd_event_source_disable_unref(c->conmon_source);
        sd_event_source_disable_unref(c->defer_source);
        safe_close(c->conmon_pidfd);
        sd_event_unref(c->event);
        free(c->id);
        free(c->dir);
        free(c->exit_dir);
        free(c->exit_path);
        free(c->log_path);
        free(c->runtime);
        strv_free(c->runtime_args);
        return mfree(c);
}

/* ---- start ------------------------------------------------------------------------------ */

/* A NULL-terminated vector literal; -Wwrite-strings makes literals const. */
#define STRV(...) ((char *const *) (const char *const[]){__VA_ARGS__, NULL})

/* Overlay options are a comma-separated list and lowerdir a colon-separated stack. */
static bool overlay_path_ok(const char *p) {
        return !strpbrk(p, ",:\\");
}

/* lower = the service's rootfs (never written), upper/work = the task's own. */
static int mount_overlay(const char *lower, const char *dir, char **ret_error) {
        _cleanup_free_ char *upper = NULL, *work = NULL, *target = NULL, *opts = NULL;
        struct stat st;

        upper = path_join(dir, "upper");
        work = path_join(dir, "work");
        target = path_join(dir, "rootfs");
        if (!upper || !work || !target)
                return -ENOMEM;

        if (stat(lower, &st) < 0) {
                int r = -errno;
                set_error(ret_error, "service rootfs %s: %s", lower, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                set_error(ret_error, "service rootfs %s is not a directory", lower);
                return -ENOTDIR;
        }
        for (const char *const *p = (const char *const[]){lower, upper, work, NULL}; *p; p++)
                if (!overlay_path_ok(*p)) {
                        set_error(ret_error, "path %s contains ',', ':' or '\\', which overlayfs options cannot carry",
                                  *p);
                        return -EINVAL;
                }

        /* The root of the merged tree takes its owner and mode from upper/. */
        if (mkdir(upper, 0755) < 0 || chown(upper, st.st_uid, st.st_gid) < 0 || chmod(upper, st.st_mode & 07777) < 0 ||
            mkdir(work, 0700) < 0 || mkdir(target, 0755) < 0) {
                int r = -errno;
                set_error(ret_error, "preparing the task's overlay in %s: %s", dir, strerror(-r));
                return r;
        }

        if (asprintf(&opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work) < 0)
                return -ENOMEM;
        if (strlen(opts) >= 4096) { /* the kernel takes one page of mount data */
                set_error(ret_error, "overlay mount options for %s are too long", dir);
                return -ENAMETOOLONG;
        }
        if (mount("overlay", target, "overlay", 0, opts) < 0) {
                int r = -errno;
                set_error(ret_error, "mounting the overlay (%s) at %s: %s", opts, target, strerror(-r));
                return r;
        }
        return 0;
}

static int make_hostname(const Task *t, char **ret) {
        char *s;

        if (asprintf(&s, "task-%s", t->id) < 0)
                return -ENOMEM;
        if (strlen(s) > HOSTNAME_MAX_LEN)
                s[HOSTNAME_MAX_LEN] = 0;
        *ret = s;
        return 0;
}

static int make_annotations(const Task *t, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        const struct {
                const char *key, *value;
        } a[] = {
                {"lagoon.sh/taskId", t->id},       {"lagoon.sh/taskName", t->name},
                {"lagoon.sh/project", t->project}, {"lagoon.sh/environment", t->environment},
                {"lagoon.sh/service", t->service}, {"lagoon.sh/jobType", "task"},
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(a); i++) {
                char *s;

                if (!a[i].value)
                        continue;
                if (asprintf(&s, "%s=%s", a[i].key, a[i].value) < 0)
                        return -ENOMEM;
                r = strv_push(&l, s);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* Spawns conmon, which runs "<runtime> create", and waits for its report. Synchronous
 * (bounded by RUNTIME_TIMEOUT_USEC): create is quick and this keeps the start a single
 * step for the manager. conmon's first process exits right after forking the monitor;
 * it is reaped here, the monitor is reparented to init. */
static int conmon_spawn(RuntimeContainer *c, const Config *config, const char *conmon, char **ret_error) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *socket_dir = NULL, *pidfile = NULL, *conmon_pidfile = NULL, *log_arg = NULL, *err = NULL,
                            *sync = NULL, *text = NULL;
        _cleanup_close_ int sync_r = -EBADF, sync_w = -EBADF;
        Child ch = CHILD_NULL;
        int pipefd[2];
        int64_t data;
        int r;

        socket_dir = path_join(config->runtime_dir ?: "/run/lagoon-taskd", "conmon");
        pidfile = path_join(c->dir, "pidfile");
        conmon_pidfile = path_join(c->dir, "conmon.pid");
        if (!socket_dir || !pidfile || !conmon_pidfile || asprintf(&log_arg, "k8s-file:%s", c->log_path) < 0)
                return -ENOMEM;
        r = mkdir_p(socket_dir, 0700);
        if (r < 0) {
                set_error(ret_error, "creating conmon's socket directory %s: %s", socket_dir, strerror(-r));
                return r;
        }

        argv = strv_copy(STRV(conmon, "--api-version", "1", "-c", c->id, "-u", c->id, "-n", c->id, "-r", c->runtime,
                              "-b", c->dir, "-p", pidfile, "-l", log_arg, "--exit-dir", c->exit_dir, "--conmon-pidfile",
                              conmon_pidfile, "--socket-dir-path", socket_dir, "--full-attach", "--syslog"));
        if (!argv)
                return -ENOMEM;
        for (char *const *a = c->runtime_args; a && *a; a++) {
                char *s;

                if (asprintf(&s, "--runtime-arg=%s", *a) < 0)
                        return -ENOMEM;
                r = strv_push(&argv, s);
                if (r < 0)
                        return r;
        }
        for (char *const *a = config->conmon_args; a && *a; a++) {
                r = strv_extend(&argv, *a);
                if (r < 0)
                        return r;
        }

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        sync_r = pipefd[0];
        sync_w = fd_move_above_stdio(pipefd[1]);
        if (sync_w < 0)
                return sync_w;

        r = child_spawn(conmon, argv, STRV("_OCI_SYNCPIPE=3"), sync_w, &ch);
        if (r < 0) {
                set_error(ret_error, "failed to spawn %s: %s", conmon, strerror(-r));
                return r;
        }
        /* Only conmon may hold the write end, so its death shows as EOF. */
        sync_w = safe_close(sync_w);

        r = child_wait(&ch, sync_r, now_usec(CLOCK_MONOTONIC) + RUNTIME_TIMEOUT_USEC, &err, &sync);
        child_done(&ch);
        if (r == -ETIMEDOUT) {
                conmon_stop(c->dir, c->id, 0);
                set_error(ret_error, "conmon did not report the container created within %" PRIu64 " s",
                          RUNTIME_TIMEOUT_USEC / USEC_PER_SEC);
                return r;
        }
        if (r < 0)
                return r;

        if (isempty(sync)) {
                text = runtime_error_text(err);

                /* conmon's first process failed (bad arguments…), or the runtime failed
                 * without a word and conmon left without a report. */
                if (ch.status == 127 && !text)
                        set_error(ret_error, "failed to execute %s", conmon);
                else if (ch.status != 0)
                        set_error(ret_error, "%s failed (exit status %d): %s", conmon, ch.status,
                                  text ?: "no error output");
                else
                        set_error(ret_error, "%s create failed: no error output (conmon left without a report)",
                                  c->runtime);
                return -EIO;
        }

        r = runtime_parse_sync_message(sync, strlen(sync), &data, &text);
        if (r == -EIO) {
                set_error(ret_error, "%s create: %s", c->runtime,
                          text ?: "failed without error output (see conmon's messages in the system log)");
                return r;
        }
        if (r < 0) {
                set_error(ret_error, "unexpected message from conmon: %.*s", 256, sync);
                return r;
        }
        log_debug("Container %s created, init PID %" PRIi64 ".", c->id, data);
        return 0;
}

static int start_steps(sd_event *e,
                       const RuntimeSpec *spec,
                       runtime_exit_cb_t cb,
                       void *userdata,
                       RuntimeContainer **ret_c,
                       bool *made_dir,
                       char **ret_error) {
        static const ServiceConfig no_service = {.seccomp = SECCOMP_MODE_AUTO};
        const Config *config = spec->config;
        const ServiceConfig *svc = spec->service ?: &no_service;
        const Task *t = spec->task;
        const char *bundle_dir = spec->service_bundle_dir ?: svc->bundle, *service_name = svc->name ?: t->service;
        _cleanup_(json_freep) JsonValue *service_config = NULL, *task_config = NULL, *profile = NULL;
        _cleanup_free_ char *lower = NULL, *rootfs = NULL, *hostname = NULL, *cgroups_path = NULL, *text = NULL,
                            *config_path = NULL, *conmon = NULL, *runtime = NULL, *error = NULL, *parent = NULL;
        _cleanup_strv_free_ char **args = NULL, **annotations = NULL;
        RuntimeContainer *c;
        uint64_t t0, t1;
        size_t size = 0;
        bool watched;
        int r;

        if (isempty(bundle_dir)) {
                set_error(ret_error, "service %s has no bundle", strna(service_name));
                return -EINVAL;
        }
        if ((spec->service_rootfs && spec->service_rootfs[0] != '/') ||
            (spec->netns_path && spec->netns_path[0] != '/')) {
                set_error(ret_error, "service %s: rootfs and network namespace must be absolute paths",
                          strna(service_name));
                return -EINVAL;
        }
        if (!t->id || !task_id_is_valid(t->id) || (!t->command && !t->image)) {
                set_error(ret_error, "task has no valid id or no command");
                return -EINVAL;
        }

        r = find_executable(config->runtime ?: "runc", &runtime);
        if (r < 0) {
                set_error(ret_error, "runtime %s: %s", strna(config->runtime), strerror(-r));
                return r;
        }
        r = container_new(e, config, runtime, t->id, spec->container_dir, cb, userdata, ret_c);
        if (r < 0)
                return r;
        c = *ret_c;
        r = find_executable(config->conmon ?: "conmon", &conmon);
        if (r < 0) {
                set_error(ret_error, "conmon %s: %s", strna(config->conmon), strerror(-r));
                return r;
        }

        r = bundle_read_config(bundle_dir, &service_config, &error);
        if (r < 0) {
                set_error(ret_error, "service %s: %s", strna(service_name), error ?: strerror(-r));
                return r;
        }
        if (spec->service_rootfs) {
                lower = strdup(spec->service_rootfs);
                r = lower ? 0 : -ENOMEM;
        } else
                r = bundle_rootfs_path(bundle_dir, service_config, &lower);
        if (r < 0) {
                set_error(ret_error, "service %s: no usable root.path: %s", strna(service_name), strerror(-r));
                return r;
        }
        if (svc->seccomp == SECCOMP_MODE_PROFILE) {
                error = mfree(error);
                r = seccomp_profile_load(svc->seccomp_profile, &profile, &error);
                if (r < 0) {
                        set_error(ret_error, "seccomp profile of service %s: %s", strna(service_name),
                                  error ?: strerror(-r));
                        return r;
                }
        }

        /* The container dir: made here, so a failed start may remove it, and only then. */
        parent = strdup(c->dir);
        if (!parent)
                return -ENOMEM;
        if (strrchr(parent, '/') && strrchr(parent, '/') != parent) {
                *strrchr(parent, '/') = 0;
                r = mkdir_p(parent, 0700);
                if (r < 0) {
                        set_error(ret_error, "creating %s: %s", parent, strerror(-r));
                        return r;
                }
        }
        if (mkdir(c->dir, 0711) < 0) {
                r = -errno;
                set_error(ret_error,
                          r == -EEXIST ? "container directory %s exists already (left by an earlier run?)"
                                       : "creating container directory %s: %s",
                          c->dir, strerror(-r));
                return r;
        }
        *made_dir = true;
        if (mkdir(c->exit_dir, 0700) < 0) {
                r = -errno;
                set_error(ret_error, "creating %s: %s", c->exit_dir, strerror(-r));
                return r;
        }

        r = mount_overlay(lower, c->dir, ret_error);
        if (r < 0)
                return r;

        _cleanup_free_ BundleMount *mounts = NULL;
        _cleanup_free_ char *task_data_source = NULL;
        size_t n_mounts = spec->n_mounts;

        mounts = calloc(spec->n_mounts + 1, sizeof(BundleMount));
        if (!mounts)
                return -ENOMEM;
        if (spec->n_mounts > 0)
                memcpy(mounts, spec->mounts, spec->n_mounts * sizeof(BundleMount));
        if (spec->task_data_dir) {
                task_data_source = path_join(c->dir, "taskdata");
                if (!task_data_source)
                        return -ENOMEM;
                /* Any user of the image may write its result; only this container sees it. */
                if (mkdir(task_data_source, 0700) < 0 || chmod(task_data_source, 0777) < 0) {
                        r = -errno;
                        set_error(ret_error, "creating %s: %s", task_data_source, strerror(-r));
                        return r;
                }
                mounts[n_mounts++] = (BundleMount){task_data_source, spec->task_data_dir, false};
        }
        rootfs = path_join(c->dir, "rootfs");
        if (!rootfs)
                return -ENOMEM;

        if (t->command) {
                r = bundle_command_args(rootfs, t->command, &args);
                if (r < 0) {
                        set_error(ret_error, "building the task's command: %s", strerror(-r));
                        return r;
                }
        }
        r = make_hostname(t, &hostname);
        if (r < 0)
                return r;
        r = cgroup_task_path(c->id, &cgroups_path);
        if (r < 0) {
                set_error(ret_error, "reading the daemon's cgroup: %s", strerror(-r));
                return r;
        }
        r = make_annotations(t, &annotations);
        if (r < 0)
                return r;

        BundleParams p = {
                .args = args,
                .env_add = spec->env,
                .env_remove = STRV("CRONJOBS"),
                .hostname = hostname,
                .root_path = rootfs,
                .cgroups_path = cgroups_path,
                .annotations = annotations,
                .seccomp = svc->seccomp,
                .seccomp_profile = profile,
                .mounts_add = mounts,
                .n_mounts_add = n_mounts,
                .netns_path = spec->netns_path,
        };
        error = mfree(error);
        r = bundle_derive(service_config, &p, &task_config, &error);
        if (r < 0) {
                set_error(ret_error, "service %s: %s", strna(service_name), error ?: strerror(-r));
                return r;
        }
        r = json_format(task_config, false, &text, &size);
        if (r < 0)
                return r;
        config_path = path_join(c->dir, "config.json");
        if (!config_path)
                return -ENOMEM;
        r = write_file_atomic(config_path, text, size, 0600);
        if (r < 0) {
                set_error(ret_error, "writing %s: %s", config_path, strerror(-r));
                return r;
        }

        /* Armed before the container can run, so a quick exit is not missed. */
        r = container_watch_exit_dir(c);
        if (r < 0) {
                set_error(ret_error, "watching %s: %s", c->exit_dir, strerror(-r));
                return r;
        }

        t0 = now_usec(CLOCK_MONOTONIC);
        r = conmon_spawn(c, config, conmon, ret_error);
        if (r < 0)
                return r;
        t1 = now_usec(CLOCK_MONOTONIC);
        r = runtime_run(c->runtime, c->runtime_args, "start", STRV(c->id), ret_error);
        if (r < 0)
                return r;
        log_debug("Container %s: conmon + create took %" PRIu64 " ms, start %" PRIu64 " ms.", c->id,
                  (t1 - t0) / USEC_PER_MSEC, (now_usec(CLOCK_MONOTONIC) - t1) / USEC_PER_MSEC);

        r = container_watch_conmon(c);
        if (r < 0 && r != -ESRCH) {
                set_error(ret_error, "watching conmon: %s", strerror(-r));
                return r;
        }
        watched = r >= 0;
        return container_check_now(c, watched);
}

int runtime_container_start(sd_event *e,
                            const RuntimeSpec *spec,
                            runtime_exit_cb_t cb,
                            void *userdata,
                            RuntimeContainer **ret,
                            char **ret_error) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_free_ char *error = NULL;
        bool made_dir = false;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r;

        if (!e || !spec || !spec->config || !spec->task || !spec->container_dir || !ret)
                return -EINVAL;

        r = start_steps(e, spec, cb, userdata, &c, &made_dir, &error);
        if (r < 0) {
                c = runtime_container_free(c); /* no callback after a failed start */
                if (made_dir) {
                        int k = runtime_container_remove(spec->config, spec->task->id, spec->container_dir);
                        if (k < 0)
                                log_warning_errno(k, "Task %s: failed to clean up after a failed start: %m",
                                                  spec->task->id);
                }
                if (ret_error)
                        *ret_error = error ? TAKE_PTR(error) : strdup(strerror(-r));
                return r;
        }

        log_debug("Container %s started in %" PRIu64 " ms.", c->id, (now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_MSEC);
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- adopt, kill, remove ------------------------------------------------------------------ */

int runtime_container_adopt(sd_event *e,
                            const Config *config,
                            const Task *task,
                            const char *container_dir,
                            runtime_exit_cb_t cb,
                            void *userdata,
                            RuntimeContainer **ret) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_free_ char *pidfile = NULL, *runtime = NULL;
        struct stat st;
        int r;

        if (!e || !config || !task || !task->id || !container_dir || !ret)
                return -EINVAL;

        /* No conmon.pid: conmon never got as far as forking its monitor. */
        pidfile = path_join(container_dir, "conmon.pid");
        if (!pidfile)
                return -ENOMEM;
        if (stat(container_dir, &st) < 0 || stat(pidfile, &st) < 0)
                return -errno;

        /* A runtime missing now only matters for kill, which then reports it; the
         * container may well end by itself. */
        if (find_executable(config->runtime ?: "runc", &runtime) < 0) {
                runtime = strdup(config->runtime ?: "runc");
                if (!runtime)
                        return -ENOMEM;
        }
        r = container_new(e, config, runtime, task->id, container_dir, cb, userdata, &c);
        if (r < 0)
                return r;
        r = container_watch_exit_dir(c);
        if (r < 0)
                return r;
        r = container_watch_conmon(c);
        if (r < 0 && r != -ESRCH && r != -EBADMSG)
                return r;
        r = container_check_now(c, r >= 0);
        if (r < 0)
                return r;

        /* The earlier daemon may have died between create and start: the container then
         * waits in "created" forever. Finish the start; for a running or stopped
         * container the runtime refuses, which is fine. */
        if (!c->defer_source) {
                _cleanup_free_ char *error = NULL;

                if (runtime_run(c->runtime, c->runtime_args, "start", STRV(c->id), &error) >= 0)
                        log_info("Container %s: started it (its start was interrupted).", c->id);
                else
                        log_debug("Container %s: not in created state: %s", c->id, strna(error));
        }

        log_debug("Container %s adopted%s.", c->id, c->defer_source ? " (already ended)" : "");
        *ret = TAKE_PTR(c);
        return 0;
}

int runtime_container_kill(RuntimeContainer *c, int sig) {
        _cleanup_free_ char *error = NULL, *signum = NULL;
        int r;

        if (!c || sig <= 0 || sig >= _NSIG)
                return -EINVAL;
        if (c->finished)
                return -ESRCH;
        if (asprintf(&signum, "%d", sig) < 0)
                return -ENOMEM;

        r = runtime_run(c->runtime, c->runtime_args, "kill", STRV(c->id, signum), &error);
        if (r == -EIO && error && (strstr(error, "not running") || strstr(error, "does not exist")))
                return -ESRCH;
        if (r < 0) {
                log_warning("Container %s: %s", c->id, strna(error));
                return r;
        }
        return 0;
}

int runtime_container_remove(const Config *config, const char *task_id, const char *container_dir) {
        _cleanup_free_ char *id = NULL, *runtime = NULL, *rootfs = NULL, *error = NULL;
        int r, ret = 0;

        if (!config || !task_id || !container_dir)
                return -EINVAL;
        r = runtime_container_id(task_id, &id);
        if (r < 0)
                return r;

        r = find_executable(config->runtime ?: "runc", &runtime);
        if (r < 0)
                ret = log_warning_errno(r, "Container %s: runtime %s not found, cannot delete it: %m", id,
                                        strna(config->runtime));
        else {
                r = runtime_run(runtime, config->runtime_args, "delete", STRV("--force", id), &error);
                if (r < 0 && !(error && (strstr(error, "does not exist") || strstr(error, "No such file")))) {
                        log_warning("Container %s: %s", id, strna(error));
                        ret = r;
                }
        }

        /* The container is gone: conmon writes its exit file and leaves. Wait for that, so
         * nothing writes into the directory while it is removed. */
        conmon_stop(container_dir, id, CONMON_EXIT_WAIT_USEC);

        rootfs = path_join(container_dir, "rootfs");
        if (!rootfs)
                return -ENOMEM;
        for (unsigned i = 0; i < 16; i++) /* in case it was mounted more than once */
                if (umount2(rootfs, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
                        if (errno != EINVAL && errno != ENOENT && ret == 0)
                                ret = log_warning_errno(errno, "Container %s: failed to unmount %s: %m", id, rootfs);
                        break;
                }

        r = rm_rf(container_dir);
        if (r < 0) {
                log_warning_errno(r, "Container %s: failed to remove %s: %m", id, container_dir);
                if (ret == 0)
                        ret = r;
        }
        return ret;
}
