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
#include "debug-stop.h"
#include "fs-util.h"
#include "json.h"
#include "launcher-runtime.h"
#include "log.h"
#include "process-util.h"
#include "seccomp-profile.h"

/* Bound on every synchronous wait for a child (conmon's create report, runtime
 * start/kill/delete). runc create takes ~0.1 s here; 30 s only catches a hung runtime. */
#define RUNTIME_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* How long remove waits for conmon to notice its container is gone before killing it. */
#define CONMON_EXIT_WAIT_USEC (3 * USEC_PER_SEC)
#define CHILD_OUTPUT_MAX (64U * 1024U)
#define SMALL_FILE_MAX 4096U
#define HOSTNAME_MAX_LEN 63U
#define NETNS_NAME "netns" /* <container dir>/netns: the held network namespace of a node clone */

/* A NULL-terminated vector literal; -Wwrite-strings makes literals const. */
#define STRV(...) ((char *const *) (const char *const[]){__VA_ARGS__, NULL})

struct RuntimeContainer {
        sd_event *event;
        char *id;
        char *dir;
        char *exit_dir;
        char *exit_path;
        char *log_path;
        char *sync_path;  /* conmon's report on create: a file, so it outlives the daemon */
        char *err_path;   /* conmon's stderr, also a file */
        char *spawn_path; /* the PID of conmon's first process, written before its exec */
        char *runtime;    /* absolute path */
        char **runtime_args;

        /* The launch, one event source per step (README, "Launch"). */
        TaskLaunchStep step;
        uint64_t launch_begin_usec;     /* CLOCK_MONOTONIC; 0 when adopted: for the steps' debug timings */
        bool adopting;                  /* resumed by a restarted daemon: a refused start is fine */
        sd_event_source *spawn_source;  /* conmon's first process (our child) */
        sd_event_source *sync_source;   /* inotify on sync_path */
        sd_event_source *start_source;  /* "<runtime> start" (our child) */
        sd_event_source *resume_source; /* a restart's next step, from the loop */
        sd_event_source *timeout_source;
        sd_event_source *kill_source; /* "<runtime> kill" (our child): a later kill replaces it */
        int kill_err_fd;
        int kill_signal;
        int start_err_fd;
        bool exit_pending; /* the exit file came before start was reaped */
        int pending_status;

        pid_t conmon_pid;
        int conmon_pidfd;
        sd_event_source *exit_source;   /* inotify on exit_dir */
        sd_event_source *conmon_source; /* io on conmon_pidfd */
        sd_event_source *defer_source;  /* a result known before the loop runs */
        int deferred_status;
        char *deferred_error;

        runtime_exit_cb_t cb;
        runtime_step_cb_t step_cb;
        void *userdata;
        bool finished;
};

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

/* How a child is set up besides argv and environment. */
typedef struct ChildSetup {
        int pass_fd;          /* becomes fd 3 when >= 0 */
        int stderr_fd;        /* its stderr when >= 0; else a pipe the caller reads */
        const char *pid_file; /* the child writes its PID there (O_EXCL) before exec */
        bool stdout_to_stderr;
        bool new_session; /* setsid(): no signal to the daemon's process group reaches it */
} ChildSetup;

#define CHILD_SETUP_NULL ((ChildSetup){.pass_fd = -EBADF, .stderr_fd = -EBADF})

/* An sd-event daemon blocks the signals it handles and may ignore SIGPIPE; both survive
 * fork and exec. A child resets them before it runs anything else. */
static void child_reset_signals(void) {
        struct sigaction sa = {.sa_handler = SIG_DFL};
        sigset_t ss;

        (void) sigemptyset(&ss);
        (void) sigprocmask(SIG_SETMASK, &ss, NULL);
        for (int sig = 1; sig < _NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) sigaction(sig, &sa, NULL);
}

static _noreturn_ void child_exec(const char *path,
                                  char *const *argv,
                                  char *const *envp,
                                  int null_fd,
                                  int stderr_fd,
                                  const ChildSetup *setup) {
        int pass_fd = setup->pass_fd;

        /* They would reach the container process. */
        child_reset_signals();

        if (setup->new_session && setsid() < 0)
                _exit(127);
        if (setup->pid_file) {
                char buf[32];
                int fd = open(setup->pid_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                int n = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());

                if (fd < 0 || write(fd, buf, (size_t) n) != n)
                        _exit(127);
                (void) close(fd);
        }
        if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(setup->stdout_to_stderr ? stderr_fd : null_fd, STDOUT_FILENO) < 0 ||
            dup2(stderr_fd, STDERR_FILENO) < 0)
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
        pid_t pid;  /* 0 once reaped (or handed to an event source) */
        int pidfd;  /* of the forked child */
        int err_fd; /* read end of its stderr, unless it was given one */
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

/* Forks path with argv; stdin and stdout are /dev/null, stderr setup->stderr_fd or a pipe
 * kept in ch->err_fd. The environment is PATH plus extra_env only. */
static int
child_spawn(const char *path, char *const *argv, char *const *extra_env, const ChildSetup *setup, Child *ret) {
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
        if (setup->stderr_fd >= 0) {
                err_w = fd_move_above_stdio(fcntl(setup->stderr_fd, F_DUPFD_CLOEXEC, 3));
                if (err_w < 0)
                        return err_w == -1 ? -errno : err_w;
        } else {
                if (pipe2(pipefd, O_CLOEXEC) < 0)
                        return -errno;
                err_r = pipefd[0];
                err_w = fd_move_above_stdio(pipefd[1]);
                if (err_w < 0)
                        return err_w;
                if (fcntl(err_r, F_SETFL, O_NONBLOCK) < 0)
                        return -errno;
        }

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0)
                child_exec(path, argv, env, null_fd, err_w, setup);

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

static int child_status(const siginfo_t *si) {
        return si->si_code == CLD_EXITED ? si->si_status : 128 + si->si_status;
}

/* Hands the child to an event source, which reaps it (and kills it when dropped first). */
static int child_watch(RuntimeContainer *c,
                       Child *ch,
                       sd_event_child_handler_t handler,
                       const char *description,
                       sd_event_source **ret) {
        int r;

        r = sd_event_add_child_pidfd(c->event, ret, ch->pidfd, WEXITED, handler, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_child_pidfd_own(*ret, true);
        (void) sd_event_source_set_child_process_own(*ret, true);
        (void) sd_event_source_set_description(*ret, description);
        ch->pidfd = -EBADF;
        ch->pid = 0;
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

/* A watched child's stderr once it exited (the pipe holds all it wrote), closed, as
 * runtime_error_text() gives it; NULL when it said nothing. */
static char *child_error_text(int *fd) {
        _cleanup_free_ char *err = NULL;
        size_t size = 0;

        if (*fd >= 0)
                drain_fd(*fd, &err, &size);
        *fd = safe_close(*fd);
        return runtime_error_text(err);
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

/* "<runtime> [runtime_args] verb args…": a command line of the OCI runtime. */
static int
runtime_argv(const char *runtime, char *const *runtime_args, const char *verb, char *const *args, char ***ret) {
        _cleanup_strv_free_ char **argv = NULL;
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
        *ret = TAKE_PTR(argv);
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

        r = runtime_argv(runtime, runtime_args, verb, args, &argv);
        if (r < 0)
                return r;

        r = child_spawn(runtime, argv, NULL, &CHILD_SETUP_NULL, &ch);
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

static void container_drop_sources(RuntimeContainer *c) {
        c->exit_source = sd_event_source_disable_unref(c->exit_source);
        c->conmon_source = sd_event_source_disable_unref(c->conmon_source);
        c->defer_source = sd_event_source_disable_unref(c->defer_source);
        /* Children still running are killed and reaped with their sources. */
        c->spawn_source = sd_event_source_disable_unref(c->spawn_source);
        c->sync_source = sd_event_source_disable_unref(c->sync_source);
        c->start_source = sd_event_source_disable_unref(c->start_source);
        c->resume_source = sd_event_source_disable_unref(c->resume_source);
        c->timeout_source = sd_event_source_disable_unref(c->timeout_source);
        c->kill_source = sd_event_source_disable_unref(c->kill_source);
        c->kill_err_fd = safe_close(c->kill_err_fd);
        c->start_err_fd = safe_close(c->start_err_fd);
        c->conmon_pidfd = safe_close(c->conmon_pidfd);
}

/* status >= 0: the container's exit status; < 0: lost, or (error set) the launch failed. */
/* bench/run reads these debug lines ("<what> at X ms of its launch") for its breakdown. */
static void launch_log_time(RuntimeContainer *c, const char *what) {
        if (c->launch_begin_usec > 0)
                log_debug("Container %s: %s at %.1f ms of its launch.", c->id, what,
                          (double) (now_usec(CLOCK_MONOTONIC) - c->launch_begin_usec) / USEC_PER_MSEC);
}

static void container_finish(RuntimeContainer *c, int status, const char *error) {
        if (c->finished)
                return;
        c->finished = true;
        launch_log_time(c, "ended");
        container_drop_sources(c);
        log_debug("Container %s ended with %s %d%s%s.", c->id, status >= 0 ? "status" : "error", status,
                  error ? ": " : "", strempty(error));
        /* Last: the callback may free c. */
        if (c->cb)
                c->cb(c, status, error, c->userdata);
}

static _printf_(3, 4) void launch_fail(RuntimeContainer *c, int r, const char *format, ...) {
        _cleanup_free_ char *error = NULL;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&error, format, ap) < 0)
                error = NULL;
        va_end(ap);
        container_finish(c, r, error ?: strerror(-r));
}

static int on_deferred(sd_event_source *s, void *userdata) {
        RuntimeContainer *c = userdata;
        _cleanup_free_ char *error = TAKE_PTR(c->deferred_error);

        container_finish(c, c->deferred_status, error);
        return 0;
}

/* Delivers a result already known from the event loop, never from inside start/adopt. */
static int container_defer(RuntimeContainer *c, int status, const char *error) {
        int r;

        if (c->defer_source)
                return 0;
        c->deferred_status = status;
        if (error && !(c->deferred_error = strdup(error)))
                return -ENOMEM;
        r = sd_event_add_defer(c->event, &c->defer_source, on_deferred, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->defer_source, "container-result");
        return 0;
}

static void container_ended(RuntimeContainer *c, int status) {
        /* A quick container may end before "<runtime> start" is reaped: its step first. */
        if (c->start_source) {
                c->exit_pending = true;
                c->pending_status = status;
                return;
        }
        container_finish(c, status, NULL);
}

static int on_exit_dir(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        RuntimeContainer *c = userdata;
        int status;

        if (c->finished || c->defer_source || c->exit_pending)
                return 0;
        if (!(ev->mask & IN_Q_OVERFLOW) && ev->len > 0 && !streq(ev->name, c->id))
                return 0; /* conmon's temporary file before the rename */
        if (read_exit_file(c->exit_path, &status) < 0)
                return 0;
        container_ended(c, status);
        return 0;
}

/* conmon's stderr, for a failure without a report. */
static char *conmon_error_text(RuntimeContainer *c) {
        _cleanup_free_ char *err = NULL;

        if (read_full_file(c->err_path, CHILD_OUTPUT_MAX, &err, NULL) < 0)
                return NULL;
        return runtime_error_text(err);
}

static void launch_advance(RuntimeContainer *c);

static int on_conmon_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        RuntimeContainer *c = userdata;
        int status, r;

        if (c->finished || c->defer_source || c->exit_pending)
                return 0;
        c->conmon_source = sd_event_source_disable_unref(c->conmon_source);
        if (c->step == TASK_LAUNCH_PREPARED)
                return launch_advance(c), 0; /* a report it left, or none */
        /* conmon writes the exit file before it exits, so it is there if it ever will be. */
        r = read_exit_file(c->exit_path, &status);
        if (r < 0) {
                log_warning("Container %s: conmon (PID %d) exited without an exit file; the container is lost.", c->id,
                            (int) c->conmon_pid);
                status = -ESRCH;
        }
        container_ended(c, status);
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
        c->start_err_fd = -EBADF;
        c->kill_err_fd = -EBADF;
        c->event = sd_event_ref(e);
        c->cb = cb;
        c->userdata = userdata;

        r = runtime_container_id(task_id, &c->id);
        if (r < 0)
                return r;
        c->dir = strdup(dir);
        c->exit_dir = path_join(dir, "exit");
        c->log_path = path_join(dir, "ctr.log");
        c->sync_path = path_join(dir, "sync");
        c->err_path = path_join(dir, "conmon.err");
        c->spawn_path = path_join(dir, "conmon-spawn.pid");
        if (!c->dir || !c->exit_dir || !c->log_path || !c->sync_path || !c->err_path || !c->spawn_path)
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

/* -ESRCH when conmon is not (any longer) running, -ENOENT when it never said its PID. */
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
                return container_defer(c, status, NULL);
        if (!conmon_watched) {
                log_warning("Container %s: conmon is gone and left no exit file; the container is lost.", c->id);
                return container_defer(c, -ESRCH, NULL);
        }
        return 0;
}

RuntimeContainer *runtime_container_free(RuntimeContainer *c) {
        if (!c)
                return NULL;
        container_drop_sources(c);
        sd_event_unref(c->event);
        free(c->id);
        free(c->dir);
        free(c->exit_dir);
        free(c->exit_path);
        free(c->log_path);
        free(c->sync_path);
        free(c->err_path);
        free(c->spawn_path);
        free(c->runtime);
        free(c->deferred_error);
        strv_free(c->runtime_args);
        return mfree(c);
}

void runtime_container_set_step_callback(RuntimeContainer *c, runtime_step_cb_t cb) {
        if (c)
                c->step_cb = cb;
}

/* ---- the launch, step by step on the event loop ------------------------------------------ */

/* conmon's report in the sync file: 1 and *ret_error NULL when the container was created,
 * 1 and *ret_error set when the create failed, 0 when there is no (whole) report yet. */
static int launch_read_sync(RuntimeContainer *c, char **ret_error) {
        _cleanup_free_ char *s = NULL, *text = NULL;
        size_t size = 0;
        int64_t pid;
        int r;

        *ret_error = NULL;
        r = read_full_file(c->sync_path, CHILD_OUTPUT_MAX, &s, &size);
        if (r < 0 || !memchr(s, '\n', size))
                return 0; /* conmon writes one line at once */
        r = runtime_parse_sync_message(s, size, &pid, &text);
        if (r == -ENOMEM)
                return r;
        if (r == -EIO) {
                if (asprintf(ret_error, "%s create: %s", c->runtime,
                             text ?: "failed without error output (see conmon's messages in the system log)") < 0)
                        return -ENOMEM;
                return 1;
        }
        if (r < 0) {
                if (asprintf(ret_error, "unexpected message from conmon: %.*s", 256, s) < 0)
                        return -ENOMEM;
                return 1;
        }
        log_debug("Container %s created, init PID %" PRIi64 ".", c->id, pid);
        return 1;
}

static void launch_step(RuntimeContainer *c, TaskLaunchStep step, const char *debug_point) {
        c->step = step;
        launch_log_time(c, debug_point);
        /* The manager records the step before anything relies on it. */
        if (c->step_cb)
                c->step_cb(c, step, c->userdata);
        debug_stop_at(debug_point);
}

static int on_start_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        RuntimeContainer *c = userdata;
        _cleanup_free_ char *text = NULL;
        int status = child_status(si);

        c->start_source = sd_event_source_disable_unref(c->start_source);
        text = child_error_text(&c->start_err_fd);
        if (status != 0) {
                if (!c->adopting && !c->exit_pending)
                        return launch_fail(c, -EIO, "%s start failed (exit status %d): %s", c->runtime, status,
                                           text ?: "no error output"),
                               0;
                /* Resumed: the earlier daemon's start may well have run; its end is watched. */
                log_debug("Container %s: not in created state: %s", c->id, strna(text));
        } else if (c->adopting)
                log_info("Container %s: started it (its start was interrupted).", c->id);
        c->timeout_source = sd_event_source_disable_unref(c->timeout_source);
        launch_step(c, TASK_LAUNCH_STARTED, "started");
        if (c->exit_pending)
                container_finish(c, c->pending_status, NULL);
        return 0;
}

static void launch_start(RuntimeContainer *c) {
        _cleanup_strv_free_ char **argv = NULL;
        Child ch = CHILD_NULL;
        int r;

        r = runtime_argv(c->runtime, c->runtime_args, "start", STRV(c->id), &argv);
        if (r >= 0)
                r = child_spawn(c->runtime, argv, NULL, &CHILD_SETUP_NULL, &ch);
        if (r >= 0) {
                c->start_err_fd = TAKE_FD(ch.err_fd);
                r = child_watch(c, &ch, on_start_exit, "container-start", &c->start_source);
        }
        child_done(&ch);
        if (r < 0)
                launch_fail(c, r, "failed to run %s start: %s", c->runtime, strerror(-r));
}

/* After conmon's first process or the monitor moved: created, failed, or still waiting. */
static void launch_advance(RuntimeContainer *c) {
        _cleanup_free_ char *error = NULL, *text = NULL;
        int r;

        if (c->finished || c->step != TASK_LAUNCH_PREPARED)
                return;
        r = launch_read_sync(c, &error);
        if (r < 0)
                return launch_fail(c, r, "reading conmon's report: %s", strerror(-r));
        if (r > 0 && error)
                return launch_fail(c, -EIO, "%s", error);
        if (r > 0) {
                if (c->spawn_source)
                        return; /* conmon.pid comes with the first process's exit */
                c->sync_source = sd_event_source_disable_unref(c->sync_source);
                if (!c->conmon_source)
                        return launch_fail(c, -ESRCH, "conmon exited right after creating the container");
                launch_step(c, TASK_LAUNCH_CREATED, "created");
                return launch_start(c);
        }
        if (c->spawn_source || c->conmon_source)
                return; /* the report is still to come */
        text = conmon_error_text(c);
        launch_fail(c, -EIO, "%s create failed: %s", c->runtime, text ?: "conmon left without a report");
}

static int on_sync(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        launch_advance(userdata);
        return 0;
}

/* conmon's first process forked the monitor (and wrote its PID) or failed. */
static void launch_spawned(RuntimeContainer *c, int status) {
        _cleanup_free_ char *text = NULL;
        int r;

        if (status != 0) {
                text = conmon_error_text(c);
                if (status == 127 && !text)
                        return launch_fail(c, -EIO, "failed to execute conmon");
                return launch_fail(c, -EIO, "conmon failed (exit status %d): %s", status, text ?: "no error output");
        }
        r = container_watch_conmon(c);
        if (r < 0 && r != -ESRCH && r != -ENOENT)
                return launch_fail(c, r, "watching conmon: %s", strerror(-r));
        launch_advance(c);
}

static int on_spawn_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        RuntimeContainer *c = userdata;

        c->spawn_source = sd_event_source_disable_unref(c->spawn_source);
        launch_spawned(c, child_status(si));
        return 0;
}

/* A restarted daemon found conmon's first process still running: not its child. */
static int on_foreign_spawn_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        RuntimeContainer *c = userdata;

        c->spawn_source = sd_event_source_disable_unref(c->spawn_source);
        /* Its status is not ours to read; conmon.pid says whether it got as far. */
        launch_spawned(c, 0);
        return 0;
}

static int on_launch_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        RuntimeContainer *c = userdata;

        c->timeout_source = sd_event_source_disable_unref(c->timeout_source);
        if (c->step >= TASK_LAUNCH_STARTED)
                return 0;
        launch_fail(c, -ETIMEDOUT, "the container was not %s within %" PRIu64 " s",
                    c->step == TASK_LAUNCH_PREPARED ? "created" : "started", RUNTIME_TIMEOUT_USEC / USEC_PER_SEC);
        return 0;
}

static int launch_arm(RuntimeContainer *c) {
        int r;

        r = sd_event_add_time_relative(c->event, &c->timeout_source, CLOCK_MONOTONIC, RUNTIME_TIMEOUT_USEC,
                                       100 * USEC_PER_MSEC, on_launch_timeout, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->timeout_source, "container-launch-timeout");
        if (c->step == TASK_LAUNCH_PREPARED) {
                r = sd_event_add_inotify(c->event, &c->sync_source, c->sync_path, IN_MODIFY | IN_CLOSE_WRITE, on_sync,
                                         c);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(c->sync_source, "container-sync");
        }
        return 0;
}

static int on_resume(sd_event_source *s, void *userdata) {
        RuntimeContainer *c = userdata;

        c->resume_source = sd_event_source_disable_unref(c->resume_source);
        if (c->step == TASK_LAUNCH_PREPARED)
                launch_advance(c);
        else if (c->step == TASK_LAUNCH_CREATED)
                launch_start(c);
        return 0;
}

static int launch_resume_soon(RuntimeContainer *c) {
        int r;

        r = sd_event_add_defer(c->event, &c->resume_source, on_resume, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(c->resume_source, "container-resume");
        return 0;
}

/* ---- start ------------------------------------------------------------------------------ */

/* Overlay options are a comma-separated list and lowerdir a colon-separated stack. */
static bool overlay_path_ok(const char *p) {
        return !strpbrk(p, ",:\\");
}

/* lower = the service's rootfs (never written), upper/work = the task's own. */
/* The network namespace the caller holds, bind-mounted at <dir>/netns as `ip netns add`
 * does: the container joins it by that path, which names this namespace for as long as
 * the task needs it (a created container resumed after a restart too), whatever becomes
 * of the PID it was found by. */
static int mount_netns(int netns_fd, const char *dir, char **ret_path, char **ret_error) {
        _cleanup_free_ char *target = path_join(dir, NETNS_NAME);
        _cleanup_close_ int fd = -EBADF;
        char source[64];

        if (!target)
                return -ENOMEM;
        fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                int r = -errno;
                set_error(ret_error, "creating %s: %s", target, strerror(-r));
                return r;
        }
        snprintf(source, sizeof(source), "/proc/self/fd/%d", netns_fd);
        if (mount(source, target, NULL, MS_BIND, NULL) < 0) {
                int r = -errno;
                set_error(ret_error, "holding the service's network namespace at %s: %s", target, strerror(-r));
                return r;
        }
        *ret_path = TAKE_PTR(target);
        return 0;
}

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

/* Spawns conmon, which runs "<runtime> create" and reports on the sync fd; the report is
 * watched from the loop. Nothing of conmon is tied to the daemon: its report and stderr go
 * to files and it has its own session. With pipes, a daemon killed during the create
 * took conmon with it (conmon 2.1.6 dies of SIGPIPE writing its report to a pipe nobody
 * reads), leaving a created container that nobody watched and that a restart started
 * into the void. */
static int conmon_spawn(RuntimeContainer *c, const Config *config, const char *conmon, char **ret_error) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *socket_dir = NULL, *pidfile = NULL, *conmon_pidfile = NULL, *log_arg = NULL;
        _cleanup_close_ int sync_fd = -EBADF, err_fd = -EBADF;
        Child ch = CHILD_NULL;
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

        sync_fd = fd_move_above_stdio(open(c->sync_path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600));
        if (sync_fd < 0)
                r = sync_fd == -1 ? -errno : sync_fd;
        else {
                err_fd = open(c->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
                r = err_fd < 0 ? -errno : 0;
        }
        if (r < 0) {
                set_error(ret_error, "creating conmon's report files in %s: %s", c->dir, strerror(-r));
                return r;
        }
        /* Armed before conmon runs, so no report is missed. */
        r = launch_arm(c);
        if (r < 0) {
                set_error(ret_error, "watching %s: %s", c->sync_path, strerror(-r));
                return r;
        }

        ChildSetup setup = {
                .pass_fd = sync_fd,
                .stderr_fd = err_fd,
                .pid_file = c->spawn_path, /* a restart looks for it before conmon.pid exists */
                .new_session = true,
        };
        r = child_spawn(conmon, argv, STRV("_OCI_SYNCPIPE=3"), &setup, &ch);
        if (r >= 0)
                r = child_watch(c, &ch, on_spawn_exit, "conmon-spawn", &c->spawn_source);
        child_done(&ch);
        if (r < 0) {
                set_error(ret_error, "failed to spawn %s: %s", conmon, strerror(-r));
                return r;
        }
        debug_stop_at("spawned");
        return 0;
}

/* What a launch needs that is not in the service's bundle; the reason when it is wrong. */
static int start_check(const RuntimeSpec *spec, const char *bundle_dir, const char *service_name, char **ret_error) {
        const Task *t = spec->task;

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
        return 0;
}

/* The container dir and its exit/: made here, so a failed start may remove it, and only then. */
static int container_dir_make(RuntimeContainer *c, bool *made_dir, char **ret_error) {
        _cleanup_free_ char *parent = NULL;
        int r;

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
        return 0;
}

/* Not fsync'd: a launch that dies before conmon was spawned is prepared again from
 * scratch by the restart, and a container does not outlive a power loss either. */
static int write_config_file(const char *path, const char *text, size_t size) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

        if (fd < 0)
                return -errno;
        for (size_t done = 0; done < size;) {
                ssize_t n = write(fd, text + done, size - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                done += (size_t) n;
        }
        return 0;
}

/* The task's config.json, derived from the service's (see bundle_derive()). */
static int bundle_make(RuntimeContainer *c,
                       const RuntimeSpec *spec,
                       const ServiceConfig *svc,
                       const char *service_name,
                       const JsonValue *service_config,
                       const JsonValue *profile,
                       char **ret_error) {
        const Task *t = spec->task;
        _cleanup_(json_freep) JsonValue *task_config = NULL;
        _cleanup_free_ char *rootfs = NULL, *hostname = NULL, *cgroups_path = NULL, *text = NULL, *config_path = NULL,
                            *error = NULL, *task_data_source = NULL;
        _cleanup_strv_free_ char **args = NULL, **annotations = NULL;
        _cleanup_free_ BundleMount *mounts = NULL;
        size_t n_mounts = spec->n_mounts, size = 0;
        int r;

        mounts = calloc(spec->n_mounts + 2, sizeof(BundleMount));
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
                /* Without the init on this host (Init= not installed), tasks run as before. */
                const char *init = spec->config->init;
                bool have_init = init && access(init, X_OK) == 0;

                r = bundle_command_args(rootfs, t->command, have_init ? BUNDLE_INIT_PATH : NULL, &args);
                if (r < 0) {
                        set_error(ret_error, "building the task's command: %s", strerror(-r));
                        return r;
                }
                if (r > 0)
                        mounts[n_mounts++] = (BundleMount){init, BUNDLE_INIT_PATH, true};
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
                /* crun loads a program handed to it instead of compiling the profile in
                 * every create; runc has no such input. */
                .seccomp_bpf = streq(basename(c->runtime), "crun"),
                .mounts_add = mounts,
                .n_mounts_add = n_mounts,
                .netns_path = spec->netns_path,
        };
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
        r = write_config_file(config_path, text, size);
        if (r < 0) {
                set_error(ret_error, "writing %s: %s", config_path, strerror(-r));
                return r;
        }
        return 0;
}

/* What the service gives a task: its config.json, the rootfs the overlay's lower layer
 * is, and its seccomp profile when Seccomp= names one. */
static int service_read(const RuntimeSpec *spec,
                        const ServiceConfig *svc,
                        const char *bundle_dir,
                        const char *service_name,
                        JsonValue **ret_config,
                        char **ret_lower,
                        JsonValue **ret_profile,
                        char **ret_error) {
        _cleanup_(json_freep) JsonValue *config = NULL, *profile = NULL;
        _cleanup_free_ char *lower = NULL, *error = NULL;
        int r;

        r = bundle_read_config(bundle_dir, &config, &error);
        if (r < 0) {
                set_error(ret_error, "service %s: %s", strna(service_name), error ?: strerror(-r));
                return r;
        }
        if (spec->service_rootfs) {
                lower = strdup(spec->service_rootfs);
                r = lower ? 0 : -ENOMEM;
        } else
                r = bundle_rootfs_path(bundle_dir, config, &lower);
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
        *ret_config = TAKE_PTR(config);
        *ret_lower = TAKE_PTR(lower);
        *ret_profile = TAKE_PTR(profile);
        return 0;
}

/* The synchronous part of a launch (all of it file system work): the container dir, the
 * overlay, config.json, then conmon spawned. The rest follows from the loop. */
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
        _cleanup_(json_freep) JsonValue *service_config = NULL, *profile = NULL;
        _cleanup_free_ char *lower = NULL, *conmon = NULL, *runtime = NULL, *netns = NULL;
        RuntimeSpec held;
        RuntimeContainer *c;
        int r;

        r = start_check(spec, bundle_dir, service_name, ret_error);
        if (r < 0)
                return r;
        r = find_executable(config->runtime ?: "runc", &runtime);
        if (r < 0) {
                set_error(ret_error, "runtime %s: %s", strna(config->runtime), strerror(-r));
                return r;
        }
        r = container_new(e, config, runtime, t->id, spec->container_dir, cb, userdata, ret_c);
        if (r < 0)
                return r;
        c = *ret_c;
        c->step = TASK_LAUNCH_PREPARED;
        r = find_executable(config->conmon ?: "conmon", &conmon);
        if (r < 0) {
                set_error(ret_error, "conmon %s: %s", strna(config->conmon), strerror(-r));
                return r;
        }

        r = service_read(spec, svc, bundle_dir, service_name, &service_config, &lower, &profile, ret_error);
        if (r < 0)
                return r;

        r = container_dir_make(c, made_dir, ret_error);
        if (r < 0)
                return r;
        r = mount_overlay(lower, c->dir, ret_error);
        if (r < 0)
                return r;
        if (spec->netns_fd > STDERR_FILENO) {
                r = mount_netns(spec->netns_fd, c->dir, &netns, ret_error);
                if (r < 0)
                        return r;
                held = *spec;
                held.netns_path = netns;
                spec = &held;
        }
        r = bundle_make(c, spec, svc, service_name, service_config, profile, ret_error);
        if (r < 0)
                return r;

        /* Armed before the container can run, so a quick exit is not missed. */
        r = container_watch_exit_dir(c);
        if (r < 0) {
                set_error(ret_error, "watching %s: %s", c->exit_dir, strerror(-r));
                return r;
        }
        return conmon_spawn(c, config, conmon, ret_error);
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
                c = runtime_container_free(c); /* no callback after a failed start; kills conmon */
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

        c->launch_begin_usec = t0;
        launch_log_time(c, "conmon spawned");
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- adopt, kill, remove ------------------------------------------------------------------ */

/* Whether the runtime knows the container and it is still "created" (never started): 1,
 * 0 when it is in another state, -ENOENT when it does not know it. Synchronous: only a
 * restart asks, once per interrupted launch. */
static int runtime_is_created(RuntimeContainer *c) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *out = NULL;
        ChildSetup setup = CHILD_SETUP_NULL;
        Child ch = CHILD_NULL;
        int r;

        r = runtime_argv(c->runtime, c->runtime_args, "state", STRV(c->id), &argv);
        if (r < 0)
                return r;
        setup.stdout_to_stderr = true; /* the state JSON and any error, in one pipe */
        r = child_spawn(c->runtime, argv, NULL, &setup, &ch);
        if (r < 0)
                return r;
        r = child_wait(&ch, -EBADF, now_usec(CLOCK_MONOTONIC) + RUNTIME_TIMEOUT_USEC, &out, NULL);
        child_done(&ch);
        if (r < 0)
                return r;
        if (ch.status != 0) /* runc: "container does not exist"; crun: "…/status: No such file or directory" */
                return out && (strstr(out, "not exist") || strstr(out, "No such file")) ? -ENOENT : -EIO;
        return out && strstr(out, "\"status\": \"created\"");
}

/* Restart, recorded step "prepared": conmon may never have been spawned, may still be
 * starting, may be creating, or may have reported. -EAGAIN: nothing of it ever ran. */
static int adopt_prepared(RuntimeContainer *c) {
        _cleanup_free_ char *error = NULL;
        _cleanup_close_ int pidfd = -EBADF;
        pid_t pid;
        int r;

        if (access(c->spawn_path, F_OK) < 0)
                return -EAGAIN; /* conmon was never spawned */
        r = container_watch_conmon(c);
        if (r == -ENOENT) {
                /* Its first process has not forked the monitor yet, or died before. */
                if (read_pid_file(c->spawn_path, &pid) < 0 || (pidfd = pidfd_open_pid(pid)) < 0 || pidfd_exited(pidfd))
                        return -EAGAIN;
                r = sd_event_add_io(c->event, &c->spawn_source, pidfd, EPOLLIN, on_foreign_spawn_exit, c);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_io_fd_own(c->spawn_source, true);
                TAKE_FD(pidfd);
                return launch_arm(c);
        }
        if (r == -ESRCH) {
                int status_code;

                /* The step after this one may not have reached the disk (ENOSPC): an
                 * exit file says the container ran. */
                if (read_exit_file(c->exit_path, &status_code) >= 0)
                        return container_defer(c, status_code, NULL);
                /* conmon is gone: a report it left decides. */
                r = launch_read_sync(c, &error);
                if (r < 0)
                        return r;
                if (r > 0 && error)
                        return container_defer(c, -EIO, error);
                /* Created without a monitor (or never): it never ran; delete and do it again. */
                return -EAGAIN;
        }
        if (r < 0)
                return r;
        /* Created and started too, perhaps, when those steps could not be recorded. */
        c->adopting = true;
        r = launch_arm(c);
        if (r < 0)
                return r;
        return launch_resume_soon(c);
}

/* Restart, recorded step "created" (or a record from before steps): start it unless it ran. */
static int adopt_created(RuntimeContainer *c) {
        int status_code, r;

        r = container_watch_conmon(c);
        if (r < 0 && r != -ESRCH && r != -ENOENT && r != -EBADMSG)
                return r;
        if (read_exit_file(c->exit_path, &status_code) >= 0)
                return container_defer(c, status_code, NULL);
        if (r < 0) {
                /* No monitor and no exit file: a container that never started may be made
                 * again; one that ran is lost. */
                r = runtime_is_created(c);
                if (r == -ENOENT || r > 0)
                        return -EAGAIN;
                log_warning("Container %s: conmon is gone and left no exit file; the container is lost.", c->id);
                return container_defer(c, -ESRCH, NULL);
        }
        c->adopting = true;
        r = launch_arm(c);
        if (r < 0)
                return r;
        return launch_resume_soon(c);
}

int runtime_container_adopt(sd_event *e,
                            const Config *config,
                            const Task *task,
                            const char *container_dir,
                            runtime_exit_cb_t cb,
                            void *userdata,
                            RuntimeContainer **ret) {
        _cleanup_(runtime_container_freep) RuntimeContainer *c = NULL;
        _cleanup_free_ char *runtime = NULL;
        TaskLaunchStep step;
        struct stat st;
        int r;

        if (!e || !config || !task || !task->id || !container_dir || !ret)
                return -EINVAL;
        step = task->launch_step;

        if (stat(container_dir, &st) < 0)
                return step == TASK_LAUNCH_PREPARED ? -EAGAIN : -errno;

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
        c->step = step == TASK_LAUNCH_NONE ? TASK_LAUNCH_CREATED : step;
        r = container_watch_exit_dir(c);
        if (r < 0)
                return step == TASK_LAUNCH_PREPARED ? -EAGAIN : r;

        switch (c->step) {
        case TASK_LAUNCH_PREPARED:
                r = adopt_prepared(c);
                break;
        case TASK_LAUNCH_CREATED:
                /* A record from before launch steps has no conmon.pid when conmon never
                 * got as far as forking its monitor: nothing to adopt. */
                if (step == TASK_LAUNCH_NONE && access(c->dir, F_OK) == 0) {
                        _cleanup_free_ char *pidfile = path_join(c->dir, "conmon.pid");
                        if (!pidfile)
                                return -ENOMEM;
                        if (access(pidfile, F_OK) < 0)
                                return -ENOENT;
                }
                r = adopt_created(c);
                break;
        default:
                r = container_watch_conmon(c);
                if (r < 0 && r != -ESRCH && r != -EBADMSG && r != -ENOENT)
                        return r;
                r = container_check_now(c, r >= 0);
        }
        if (r < 0)
                return r;

        log_debug("Container %s adopted at step %s%s.", c->id, task_launch_step_to_string(c->step),
                  c->defer_source ? " (already ended)" : "");
        *ret = TAKE_PTR(c);
        return 0;
}

static int on_kill_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        RuntimeContainer *c = userdata;
        _cleanup_free_ char *text = NULL;
        int status = child_status(si);

        c->kill_source = sd_event_source_disable_unref(c->kill_source);
        text = child_error_text(&c->kill_err_fd);
        if (status == 0)
                return 0;
        /* It ended meanwhile (crun: "kill container: No such process"): its end is watched. */
        if (text && (strstr(text, "not running") || strstr(text, "does not exist") || strstr(text, "No such process")))
                log_debug("Container %s: %s", c->id, text);
        else
                log_warning("Container %s: %s kill %d failed (exit status %d): %s", c->id, c->runtime, c->kill_signal,
                            status, text ?: "no error output");
        return 0;
}

/* Run as a watched child, not waited for: runc takes 10-20 ms for a kill, which the loop
 * (every other launch, the API, the watchdog) must not spend waiting. */
int runtime_container_kill(RuntimeContainer *c, int sig) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *signum = NULL;
        Child ch = CHILD_NULL;
        int r;

        if (!c || sig <= 0 || sig >= _NSIG)
                return -EINVAL;
        if (c->finished)
                return -ESRCH;
        if (asprintf(&signum, "%d", sig) < 0)
                return -ENOMEM;

        r = runtime_argv(c->runtime, c->runtime_args, "kill", STRV(c->id, signum), &argv);
        if (r < 0)
                return r;
        r = child_spawn(c->runtime, argv, NULL, &CHILD_SETUP_NULL, &ch);
        if (r < 0)
                return log_warning_errno(r, "Container %s: failed to run %s kill: %m", c->id, c->runtime);
        /* A kill still in flight is overtaken (SIGKILL after SIGTERM): dropping its source
         * kills that "<runtime> kill", which only sends a signal. */
        c->kill_source = sd_event_source_disable_unref(c->kill_source);
        c->kill_err_fd = safe_close(c->kill_err_fd);
        c->kill_err_fd = TAKE_FD(ch.err_fd);
        c->kill_signal = sig;
        r = child_watch(c, &ch, on_kill_exit, "container-kill", &c->kill_source);
        child_done(&ch);
        if (r < 0)
                return log_warning_errno(r, "Container %s: failed to watch %s kill: %m", c->id, c->runtime);
        return 0;
}

int runtime_container_remove(const Config *config, const char *task_id, const char *container_dir) {
        _cleanup_free_ char *id = NULL, *runtime = NULL, *error = NULL;
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

        for (const char *const *m = (const char *const[]){"rootfs", NETNS_NAME, NULL}; *m; m++) {
                _cleanup_free_ char *path = path_join(container_dir, *m);

                if (!path)
                        return -ENOMEM;
                for (unsigned i = 0; i < 16; i++) /* in case it was mounted more than once */
                        if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
                                if (errno != EINVAL && errno != ENOENT && ret == 0)
                                        ret = log_warning_errno(errno, "Container %s: failed to unmount %s: %m", id,
                                                                path);
                                break;
                        }
        }

        r = rm_rf(container_dir);
        if (r < 0) {
                log_warning_errno(r, "Container %s: failed to remove %s: %m", id, container_dir);
                if (ret == 0)
                        ret = r;
        }
        return ret;
}

int runtime_container_remove_fork(const Config *config,
                                  const char *task_id,
                                  const char *container_dir,
                                  pid_t *ret_pid,
                                  int *ret_pidfd) {
        int pidfd;
        pid_t pid;

        if (!config || !task_id || !container_dir || !ret_pid || !ret_pidfd)
                return -EINVAL;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                /* Its fds (the lock, the sockets) must not outlive the daemon here: closed
                 * first. The daemon's blocked and ignored signals would make it
                 * unkillable by SIGTERM. */
                (void) close_range(3, ~0U, 0);
                child_reset_signals();
                debug_stop_at("cleanup");
                _exit(runtime_container_remove(config, task_id, container_dir) < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
        }
        pidfd = pidfd_open_pid(pid); /* our unreaped child: the pid cannot be reused */
        if (pidfd < 0) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                return pidfd;
        }
        *ret_pid = pid;
        *ret_pidfd = pidfd;
        return 0;
}

/* ---- the launcher interface (launcher.h) ------------------------------------------------- */

typedef struct RuntimeLauncher {
        Launcher launcher; /* first: the manager's handle */
        RuntimeContainer *container;
} RuntimeLauncher;

static void rl_on_exit(RuntimeContainer *c, int exit_status, const char *error, void *userdata) {
        RuntimeLauncher *rl = userdata;
        LauncherResult result = {
                .status = exit_status,
                .launch_error = error,
        };

        rl->launcher.cb.exit(&rl->launcher, &result, rl->launcher.cb.userdata);
}

static void rl_on_step(RuntimeContainer *c, TaskLaunchStep step, void *userdata) {
        RuntimeLauncher *rl = userdata;

        if (rl->launcher.cb.step)
                rl->launcher.cb.step(&rl->launcher, step, rl->launcher.cb.userdata);
}

static int rl_stop(Launcher *l, uint64_t grace_usec) {
        return runtime_container_kill(((RuntimeLauncher *) l)->container, SIGTERM);
}

static int rl_kill(Launcher *l) {
        return runtime_container_kill(((RuntimeLauncher *) l)->container, SIGKILL);
}

static const char *rl_log_path(Launcher *l) {
        return runtime_container_log_path(((RuntimeLauncher *) l)->container);
}

static void rl_free(Launcher *l) {
        RuntimeLauncher *rl = (RuntimeLauncher *) l;

        runtime_container_free(rl->container);
        free(rl);
}

static const LauncherOps runtime_launcher_ops = {
        .class = &launcher_runtime_class,
        .kill_what = "sending SIGKILL",
        .stop = rl_stop,
        .kill = rl_kill,
        .log_path = rl_log_path,
        .free = rl_free,
};

static RuntimeLauncher *rl_new(const LauncherCallbacks *cb) {
        RuntimeLauncher *rl = calloc(1, sizeof(RuntimeLauncher));

        if (!rl)
                return NULL;
        rl->launcher.ops = &runtime_launcher_ops;
        rl->launcher.cb = *cb;
        return rl;
}

int launcher_runtime_start(sd_event *e,
                           const RuntimeSpec *spec,
                           const LauncherCallbacks *cb,
                           Launcher **ret,
                           char **ret_error) {
        RuntimeLauncher *rl;
        int r;

        if (!cb || !cb->exit || !ret)
                return -EINVAL;
        rl = rl_new(cb);
        if (!rl)
                return -ENOMEM;
        r = runtime_container_start(e, spec, rl_on_exit, rl, &rl->container, ret_error);
        if (r < 0) {
                free(rl);
                return r;
        }
        runtime_container_set_step_callback(rl->container, rl_on_step);
        *ret = &rl->launcher;
        return 0;
}

static int rl_adopt(const LauncherContext *ctx,
                    const Task *task,
                    const char *container_dir,
                    const LauncherCallbacks *cb,
                    Launcher **ret) {
        RuntimeLauncher *rl;
        int r;

        if (!ctx || !cb || !cb->exit || !ret)
                return -EINVAL;
        rl = rl_new(cb);
        if (!rl)
                return -ENOMEM;
        r = runtime_container_adopt(ctx->event, ctx->config, task, container_dir, rl_on_exit, rl, &rl->container);
        if (r < 0) {
                free(rl);
                return r;
        }
        runtime_container_set_step_callback(rl->container, rl_on_step);
        *ret = &rl->launcher;
        return 0;
}

const LauncherClass launcher_runtime_class = {
        .kind = "container",
        .adopt = rl_adopt,
        .remove = runtime_container_remove,
        .remove_fork = runtime_container_remove_fork,
};
