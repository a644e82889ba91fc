/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The manager: every task the daemon knows, the FIFO queue with the global and
 * per-environment limits, launching through a launcher (launcher.h: a local container
 * or an API pod, one handle per task), the deadline and
 * kill timers, cancellation, retention of finished tasks, adoption after a restart,
 * and the sd_notify STATUS= line. Every transition is persisted before it is
 * announced (API callback, STATUS=, later the Lagoon outbox). */

#include <ctype.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <signal.h>
#include <malloc.h>
#include <poll.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/random.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "debug-stop.h"
#include "fs-util.h"
#include "lagoon-message.h"
#include "launcher.h"
#include "launcher-kube.h"    /* constructors only: launcher_pod_start(), and a pod's marker */
#include "launcher-runtime.h" /* constructors only: launcher_runtime_start() */
#include "log.h"
#include "logtail.h"
#include "manager.h"
#include "node.h"
#include "redact.h"
#include "sha256.h"
#include "parse-util.h"
#include "task-pod.h"
#include "store.h"

#define TIMER_ACCURACY_USEC (10 * USEC_PER_MSEC)
#define MANAGER_STORE_RETRY_USEC (2 * USEC_PER_SEC)
/* How long after the last task ended the heap is trimmed (manager_schedule_trim()). */
#define MANAGER_TRIM_DELAY_USEC (5 * USEC_PER_SEC)

typedef struct ManagedTask {
        Manager *manager;
        Task *task;
        Launcher *launcher; /* the launch in flight or the running task: a local container or an API pod */
        NodeLookup *lookup; /* node mode: finding where the service runs */
        LogTail *logtail;
        char **secrets; /* the secrets in force when the task started */
        sd_event_source *deadline_source;
        sd_event_source *kill_source;
        uint64_t launch_begin_usec; /* CLOCK_MONOTONIC, for the launch latency metric */
        /* A record write failed (ENOSPC, EIO): what the retry timer still has to write. */
        bool unsaved;  /* the record as it is in memory */
        bool deferred; /* a transition, not made (nor announced) until it is on disk */
        TaskStatus deferred_to;
        char *deferred_reason;
        bool deferred_end;      /* … the task's end: its container stays until then */
        bool deferred_keep_dir; /* … and its directory is to be kept */
} ManagedTask;

/* A finished task's container being removed by a helper, off the loop. */
typedef struct Cleanup {
        Manager *manager;
        char *id;
        sd_event_source *source; /* the helper, our child */
} Cleanup;

struct Manager {
        sd_event *event;
        Config *config;
        Store *store;
        Node *node;          /* node mode, NULL otherwise */
        ManagedTask **tasks; /* ordered by seq */
        size_t n_tasks, allocated;
        uint64_t last_seq;
        unsigned n_running;
        sd_event_source *dispatch_source;
        sd_event_source *store_retry_source; /* a record write failed: writes it again */
        struct {
                manager_task_cb_t cb;
                void *userdata;
        } callbacks[4];
        bool shutting_down;
        char *last_status;
        ManagerStats stats;
        Cleanup **cleanups;
        size_t n_cleanups;
        ManagerGate gate;             /* cluster mode: MaxRunningPerEnvironment= across daemons */
        sd_event_source *trim_source; /* malloc_trim() once tasks stopped ending */
};

const double manager_launch_bucket_seconds[MANAGER_LAUNCH_BUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

static ManagedTask *managed_task_free(ManagedTask *mt) {
        if (!mt)
                return NULL;
        sd_event_source_disable_unref(mt->deadline_source);
        sd_event_source_disable_unref(mt->kill_source);
        logtail_free(mt->logtail);
        launcher_free(mt->launcher);
        node_lookup_cancel(mt->lookup);
        strv_free(mt->secrets);
        free(mt->deferred_reason);
        task_free(mt->task);
        free(mt);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(ManagedTask *, managed_task_free);

/* Takes t; NULL: a new, empty task. */
static ManagedTask *managed_task_new(Task *t) {
        ManagedTask *mt;

        if (!t && !(t = task_new()))
                return NULL;
        mt = calloc(1, sizeof(ManagedTask));
        if (!mt) {
                task_free(t);
                return NULL;
        }
        mt->task = t;
        return mt;
}

/* The kind of launcher a task's record says it was launched with (for what needs no
 * live launcher: adoption, removal). */
static const LauncherClass *task_launcher_class(const Task *t) {
        return t->pod ? &launcher_pod_class : &launcher_runtime_class;
}

static Cleanup *cleanup_free(Cleanup *c) {
        if (!c)
                return NULL;
        sd_event_source_disable_unref(c->source);
        free(c->id);
        return mfree(c);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Cleanup *, cleanup_free);

/* A helper still removing a container is let finish (bounded), so a daemon that stops
 * leaves no half-removed container behind; one it did not finish a restart finishes. */
static void manager_wait_cleanups(Manager *m) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + 10 * USEC_PER_SEC;

        for (size_t i = 0; i < m->n_cleanups; i++) {
                Cleanup *c = m->cleanups[i];
                struct pollfd p = {.fd = sd_event_source_get_child_pidfd(c->source), .events = POLLIN};
                uint64_t now = now_usec(CLOCK_MONOTONIC);

                if (p.fd >= 0 && now < deadline)
                        (void) poll(&p, 1, (int) ((deadline - now) / USEC_PER_MSEC));
                cleanup_free(c);
        }
        m->cleanups = mfree(m->cleanups);
        m->n_cleanups = 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        manager_wait_cleanups(m);
        for (size_t i = 0; i < m->n_tasks; i++)
                managed_task_free(m->tasks[i]);
        free(m->tasks);
        node_free(m->node); /* after the tasks: their pods use its clients */
        sd_event_source_disable_unref(m->dispatch_source);
        sd_event_source_disable_unref(m->store_retry_source);
        sd_event_source_disable_unref(m->trim_source);
        store_free(m->store);
        config_free(m->config);
        sd_event_unref(m->event);
        free(m->last_status);
        free(m->stats.last_reload_error);
        free(m->stats.last_reload_changes);
        free(m);
        return NULL;
}

const ManagerStats *manager_get_stats(Manager *m) {
        return &m->stats;
}

void manager_note_reload(Manager *m, int error, const char *text) {
        ManagerStats *st = &m->stats;

        st->reloads++;
        st->last_reload_usec = now_usec(CLOCK_REALTIME);
        st->last_reload_ok = error >= 0;
        if (error < 0) {
                st->reload_failures++;
                (void) free_and_strdup(&st->last_reload_error, text ?: strerror(-error));
        } else {
                st->last_reload_error = mfree(st->last_reload_error);
                (void) free_and_strdup(&st->last_reload_changes, text ?: "");
        }
}

/* The container or pod exists: the end of a launch, for the histogram. */
static void manager_launch_done(Manager *m, ManagedTask *mt) {
        uint64_t d;

        if (mt->launch_begin_usec == 0)
                return;
        d = now_usec(CLOCK_MONOTONIC) - mt->launch_begin_usec;
        mt->launch_begin_usec = 0;
        m->stats.launch_count++;
        m->stats.launch_sum_usec += d;
        for (size_t i = 0; i < MANAGER_LAUNCH_BUCKETS; i++)
                if ((double) d <= manager_launch_bucket_seconds[i] * USEC_PER_SEC) {
                        m->stats.launch_buckets[i]++;
                        break;
                }
}

static int manager_dispatch_handler(sd_event_source *s, void *userdata);

int manager_new(sd_event *e, Config *config, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof(Manager));
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(e);
        m->stats.last_reload_ok = true;
        m->stats.start_usec = now_usec(CLOCK_REALTIME);
        r = store_open(config->state_dir, &m->store);
        if (r == -EBUSY)
                return log_error_errno(r,
                                       "State directory %s is in use by another lagoon-taskd (PID %d), refusing to "
                                       "start: two daemons would supervise the same tasks.",
                                       config->state_dir, (int) store_lock_owner(config->state_dir));
        if (r < 0)
                return log_error_errno(r, "Failed to open state directory %s: %m", config->state_dir);
        r = sd_event_add_defer(e, &m->dispatch_source, manager_dispatch_handler, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(m->dispatch_source, "manager-dispatch");
        (void) sd_event_source_set_enabled(m->dispatch_source, SD_EVENT_OFF);
        m->config = config; /* owned from here on success */
        *ret = TAKE_PTR(m);
        return 0;
}

int manager_add_task_callback(Manager *m, manager_task_cb_t cb, void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(m->callbacks); i++)
                if (!m->callbacks[i].cb) {
                        m->callbacks[i].cb = cb;
                        m->callbacks[i].userdata = userdata;
                        return 0;
                }
        return -ENOSPC;
}

void manager_remove_task_callback(Manager *m, manager_task_cb_t cb, void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(m->callbacks); i++)
                if (m->callbacks[i].cb == cb && m->callbacks[i].userdata == userdata)
                        m->callbacks[i].cb = NULL;
}

static void manager_call_callbacks(Manager *m, const Task *t) {
        for (size_t i = 0; i < ELEMENTSOF(m->callbacks); i++)
                if (m->callbacks[i].cb)
                        m->callbacks[i].cb(m, t, m->callbacks[i].userdata);
}

Node *manager_get_node(Manager *m) {
        return m->node;
}

const Config *manager_get_config(Manager *m) {
        return m->config;
}

int manager_set_config(Manager *m, Config *config) {
        config_free(m->config);
        m->config = config;
        /* New limits may let queued tasks start. */
        (void) sd_event_source_set_enabled(m->dispatch_source, SD_EVENT_ONESHOT);
        return 0;
}

unsigned manager_n_running(Manager *m) {
        return m->n_running;
}

unsigned manager_n_queued(Manager *m) {
        unsigned n = 0;
        for (size_t i = 0; i < m->n_tasks; i++)
                if (task_queued(m->tasks[i]->task))
                        n++;
        return n;
}

static void manager_update_status(Manager *m) {
        _cleanup_free_ char *s = NULL;

        if (asprintf(&s, "STATUS=%s%s%u running, %u queued", m->shutting_down ? "Stopping: " : "",
                     m->stats.store_error < 0 ? "State not writable, launches stopped: "
                     : m->stats.low_space     ? "State directory low on space, launches stopped: "
                                              : "",
                     m->n_running, manager_n_queued(m)) < 0)
                return;
        if (streq_ptr(s, m->last_status))
                return;
        (void) sd_notify(false, s);
        free(m->last_status);
        m->last_status = TAKE_PTR(s);
}

static void manager_task_changed(Manager *m, ManagedTask *mt) {
        manager_update_status(m);
        manager_call_callbacks(m, mt->task);
}

static ManagedTask *manager_find(Manager *m, const char *id) {
        for (size_t i = 0; i < m->n_tasks; i++)
                if (streq(m->tasks[i]->task->id, id))
                        return m->tasks[i];
        return NULL;
}

const Task *manager_get_task(Manager *m, const char *id) {
        ManagedTask *mt = manager_find(m, id);
        return mt ? mt->task : NULL;
}

LogTail *manager_task_logtail(Manager *m, const char *id) {
        ManagedTask *mt = manager_find(m, id);
        return mt ? mt->logtail : NULL;
}

static int manager_add(Manager *m, ManagedTask *mt) {
        size_t i;

        if (m->n_tasks >= m->allocated) {
                size_t na = MAX(m->allocated * 2, (size_t) 64);
                ManagedTask **n = reallocarray(m->tasks, na, sizeof(ManagedTask *));
                if (!n)
                        return -ENOMEM;
                m->tasks = n;
                m->allocated = na;
        }
        /* Keep the array ordered by seq; new tasks append, loaded ones may come in any order. */
        for (i = m->n_tasks; i > 0 && m->tasks[i - 1]->task->seq > mt->task->seq; i--)
                m->tasks[i] = m->tasks[i - 1];
        m->tasks[i] = mt;
        m->n_tasks++;
        mt->manager = m;
        m->last_seq = MAX(m->last_seq, mt->task->seq);
        return 0;
}

/* A new task is on disk before the manager holds it; a failure to hold it takes the record back. */
static int manager_save_and_add(Manager *m, ManagedTask *mt, const char *what) {
        int r;

        r = store_save(m->store, mt->task);
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to persist %s: %m", mt->task->id, what);
        r = manager_add(m, mt);
        if (r < 0)
                (void) store_remove(m->store, mt->task->id);
        return r;
}

static void manager_drop(Manager *m, ManagedTask *mt) {
        for (size_t i = 0; i < m->n_tasks; i++)
                if (m->tasks[i] == mt) {
                        memmove(m->tasks + i, m->tasks + i + 1, (m->n_tasks - i - 1) * sizeof(ManagedTask *));
                        m->n_tasks--;
                        break;
                }
        managed_task_free(mt);
}

int manager_list_tasks(Manager *m, const Task ***ret, size_t *ret_n) {
        const Task **l = calloc(m->n_tasks + 1, sizeof(Task *));

        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_tasks; i++)
                l[i] = m->tasks[i]->task;
        *ret = l;
        *ret_n = m->n_tasks;
        return 0;
}

unsigned manager_queue_position(Manager *m, const Task *t) {
        unsigned pos = 0;

        if (!task_queued(t))
                return 0;
        for (size_t i = 0; i < m->n_tasks; i++) {
                if (task_queued(m->tasks[i]->task))
                        pos++;
                if (m->tasks[i]->task == t)
                        return pos;
        }
        return 0;
}

int manager_task_log_path(Manager *m, const char *id, char **ret) {
        return store_task_log_path(m->store, id, ret);
}

static int on_store_retry(sd_event_source *s, uint64_t usec, void *userdata);

/* Armed once per round: failures meanwhile do not push it out. */
static void manager_arm_store_retry(Manager *m) {
        int enabled = SD_EVENT_OFF, r;

        if (m->store_retry_source && sd_event_source_get_enabled(m->store_retry_source, &enabled) >= 0 &&
            enabled != SD_EVENT_OFF)
                return;
        if (m->store_retry_source)
                r = sd_event_source_set_time_relative(m->store_retry_source, MANAGER_STORE_RETRY_USEC);
        else
                r = sd_event_add_time_relative(m->event, &m->store_retry_source, CLOCK_MONOTONIC,
                                               MANAGER_STORE_RETRY_USEC, TIMER_ACCURACY_USEC, on_store_retry, m);
        if (r >= 0)
                r = sd_event_source_set_enabled(m->store_retry_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Failed to arm the state write retry: %m");
        (void) sd_event_source_set_description(m->store_retry_source, "store-retry");
}

/* A record write failed: no launch until the timer wrote every record again. */
static void manager_store_failed(Manager *m, int error) {
        m->stats.store_failures++;
        if (m->stats.store_error == 0)
                log_error_errno(error, "State directory not writable (%m): launches stop until it is.");
        m->stats.store_error = error;
        manager_update_status(m);
        manager_arm_store_retry(m);
}

/* The record as it is in memory; kept for the retry when it cannot be written. */
static int manager_save_full(Manager *m, ManagedTask *mt, bool durable) {
        int r;

        r = durable ? store_save(m->store, mt->task) : store_save_volatile(m->store, mt->task);
        if (r < 0) {
                mt->unsaved = true;
                manager_store_failed(m, r);
                return log_error_errno(r, "Task %s: failed to persist: %m", mt->task->id);
        }
        mt->unsaved = false;
        return 0;
}

static int manager_save(Manager *m, ManagedTask *mt) {
        return manager_save_full(m, mt, true);
}

/* Persists, then announces. A write that fails (ENOSPC, EIO) stops the transition: the
 * task stays as its record says, nothing is announced, launches stop, and the retry
 * timer makes the transition (other than to running: that is a launch, done again
 * from the queue) once it can be written. */
static int task_secrets(Manager *m, const Task *t, char ***ret);

static int command_digest(const char *command, char **ret) {
        char hex[2 * SHA256_DIGEST_SIZE + 1];
        char *d;

        sha256_hex(command, hex);
        d = strdup(hex);
        if (!d)
                return -ENOMEM;
        *ret = d;
        return 0;
}

/* Whether a submission's command is the task's: compared by digest once it was masked. */
static bool task_command_is(const Task *t, const char *command) {
        _cleanup_free_ char *d = NULL;

        if (!t->command_digest || !command)
                return streq_ptr(t->command, command);
        return command_digest(command, &d) >= 0 && streq(d, t->command_digest);
}

/* A task that ended needs its secrets no more: its command keeps them masked (as the API
 * shows it), its environment (Lagoon's variables) and its own secret values go, so the
 * record kept for KeepFinished= holds none of them in clear. */
static int task_forget_secrets(Manager *m, Task *t) {
        _cleanup_strv_free_ char **secrets = NULL, **forms = NULL;
        _cleanup_free_ char *masked = NULL, *digest = NULL;
        int r;

        if (t->command && !t->command_digest) {
                r = task_secrets(m, t, &secrets);
                if (r >= 0)
                        r = redact_secret_forms(secrets, &forms);
                if (r < 0)
                        return r;
                if (redact_needed(t->command, strlen(t->command), forms)) {
                        r = command_digest(t->command, &digest);
                        if (r < 0)
                                return r;
                        masked = redact(t->command, strlen(t->command), forms, NULL);
                        if (!masked)
                                return -ENOMEM;
                        /* The copy of Lagoon's message that reports are made of, too. */
                        if (json_is_object(json_get(t->lagoon, "task")) &&
                            streq_ptr(json_get_string(json_get(t->lagoon, "task"), "command"), t->command)) {
                                r = json_object_set_string(json_get(t->lagoon, "task"), "command", masked);
                                if (r < 0)
                                        return r;
                        }
                        free(t->command);
                        t->command = TAKE_PTR(masked);
                        t->command_digest = TAKE_PTR(digest);
                }
        }
        t->env = strv_free(t->env);
        t->secrets = strv_free(t->secrets);
        return 0;
}

static void on_role_binding_deleted(const char *namespace, const char *tag, int error, void *userdata) {
        Manager *m = userdata;
        ManagedTask *mt = manager_find(m, tag);

        if (error < 0 || !mt || !mt->task->rb_created || !streq_ptr(mt->task->rb_namespace, namespace))
                return; /* a failed delete is tried again at the next start */
        mt->task->rb_created = false;
        (void) manager_save(m, mt);
}

/* An ended active/standby task's RoleBinding goes, as remote-controller deletes it when
 * the pod ended, unless another task that is not over relies on the same one. */
static void manager_role_binding_release(Manager *m, ManagedTask *mt) {
        Task *t = mt->task;
        int r;

        if (!t->rb_created || !node_api(m->node))
                return;
        for (size_t i = 0; i < m->n_tasks; i++) {
                const Task *o = m->tasks[i]->task;

                if (o != t && o->rb_created && !task_status_is_final(o->status) &&
                    streq_ptr(o->rb_namespace, t->rb_namespace)) {
                        log_info("Task %s: RoleBinding %s in %s kept for task %s.", t->id,
                                 NODE_ACTIVESTANDBY_ROLE_BINDING, t->rb_namespace, o->id);
                        t->rb_created = false;
                        (void) manager_save(m, mt);
                        return;
                }
        }
        r = node_role_binding_delete(m->node, t->rb_namespace, t->id, on_role_binding_deleted, m);
        if (r < 0)
                log_warning_errno(r, "Task %s: failed to delete RoleBinding %s in %s: %m", t->id,
                                  NODE_ACTIVESTANDBY_ROLE_BINDING, t->rb_namespace);
}

static int manager_transition(Manager *m, ManagedTask *mt, TaskStatus to, const char *reason) {
        Task *t = mt->task;
        TaskStatus from = t->status;
        uint64_t started = t->started_usec, finished = t->finished_usec;
        _cleanup_free_ char *old_reason = NULL;
        int r;

        if (t->reason && !(old_reason = strdup(t->reason)))
                return log_oom();
        r = task_transition(t, to, reason, now_usec(CLOCK_REALTIME));
        if (r < 0)
                return log_error_errno(r, "Task %s: invalid transition %s → %s.", t->id,
                                       task_status_to_string(t->status), task_status_to_string(to));
        if (task_status_is_final(to) && (r = task_forget_secrets(m, t)) < 0)
                log_warning_errno(r, "Task %s: failed to mask the secrets of its record: %m", t->id);
        r = store_save(m->store, t);
        if (r < 0) {
                free(t->reason);
                t->reason = TAKE_PTR(old_reason);
                t->status = from;
                t->started_usec = started;
                t->finished_usec = finished;
                if (to != TASK_RUNNING || t->launch_step == TASK_LAUNCH_STARTED) {
                        /* (running after the start is no launch: it is made once on disk) */
                        mt->deferred = true;
                        mt->deferred_to = to;
                        if (reason != mt->deferred_reason && free_and_strdup(&mt->deferred_reason, reason) < 0)
                                mt->deferred_reason = NULL; /* then retried without one */
                }
                mt->unsaved = true;
                manager_store_failed(m, r);
                return log_error_errno(
                        r, "Task %s: failed to persist status %s, not %s: %m", t->id, task_status_to_string(to),
                        to == TASK_RUNNING && t->launch_step != TASK_LAUNCH_STARTED ? "launched (it stays queued)"
                                                                                    : "announced (retried)");
        }
        mt->unsaved = false;
        if (mt->deferred) {
                mt->deferred = false;
                if (reason != mt->deferred_reason)
                        mt->deferred_reason = mfree(mt->deferred_reason);
        }
        if (task_status_is_final(to)) {
                if (m->gate.release)
                        m->gate.release(t, m->gate.userdata);
                m->stats.finished[to]++;
                if (to == TASK_FAILED && reason &&
                    (startswith(reason, "launch-error") || startswith(reason, "service-not-found") ||
                     startswith(reason, "image-pull")))
                        m->stats.launch_failures++;
        }
        if (reason)
                log_info("Task %s: %s (%s).", t->id, task_status_to_string(to), reason);
        else
                log_info("Task %s: %s.", t->id, task_status_to_string(to));
        if (task_status_is_final(to))
                manager_role_binding_release(m, mt);
        manager_task_changed(m, mt);
        return 0;
}

static void manager_prune_finished(Manager *m) {
        size_t n_final = 0;

        for (size_t i = 0; i < m->n_tasks; i++)
                if (task_status_is_final(m->tasks[i]->task->status))
                        n_final++;
        while (n_final > m->config->keep_finished) {
                ManagedTask *oldest = NULL;
                int r;

                for (size_t i = 0; i < m->n_tasks; i++) {
                        Task *t = m->tasks[i]->task;
                        if (task_status_is_final(t->status) && (!t->lagoon || t->reported == t->status) &&
                            (!oldest || t->finished_usec < oldest->task->finished_usec))
                                oldest = m->tasks[i];
                }
                if (!oldest)
                        break;
                r = store_remove(m->store, oldest->task->id);
                if (r < 0)
                        log_warning_errno(r, "Task %s: failed to remove its record: %m", oldest->task->id);
                log_debug("Task %s: removed by retention (KeepFinished=%u).", oldest->task->id,
                          m->config->keep_finished);
                manager_drop(m, oldest);
                n_final--;
        }
}

static void manager_schedule_dispatch(Manager *m) {
        (void) sd_event_source_set_enabled(m->dispatch_source, SD_EVENT_ONESHOT);
}

/* An advanced task's result, validated: taskData from the pod annotation (API pods), or
 * the file it may leave in TASK_DATA_DIR (local containers: the stand-in for the
 * annotation). Absent is fine. */
static int read_task_data(Manager *m, Task *t, const char *annotation, char **ret_reason) {
        _cleanup_free_ char *dir = NULL, *path = NULL, *data = NULL, *value = NULL, *error = NULL;
        size_t size = 0;
        int r;

        if (annotation) {
                size = strlen(annotation);
                if (size > LAGOON_TASK_DATA_MAX)
                        return asprintf(ret_reason, "taskdata: larger than %u bytes", LAGOON_TASK_DATA_MAX) < 0
                                       ? -ENOMEM
                                       : -E2BIG;
                data = strdup(annotation);
                if (!data)
                        return -ENOMEM;
        } else {
                _cleanup_close_ int dir_fd = -EBADF;

                r = store_container_dir(m->store, t->id, &dir);
                if (r < 0)
                        return 0;
                path = path_join(dir, "taskdata");
                if (!path)
                        return -ENOMEM;
                /* The task owns this directory: read its file as hostile (no symlink, no
                 * FIFO, nothing but a regular file, bounded). */
                dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (dir_fd < 0)
                        return 0;
                r = read_regular_file_at(dir_fd, "taskData", LAGOON_TASK_DATA_MAX, &data, &size);
                if (r == -ENOENT)
                        return 0;
                if (r == -EFBIG)
                        return asprintf(ret_reason, "taskdata: larger than %u bytes", LAGOON_TASK_DATA_MAX) < 0
                                       ? -ENOMEM
                                       : -E2BIG;
                if (r == -ELOOP || r == -EBADFD)
                        return asprintf(ret_reason, "taskdata: not a regular file") < 0 ? -ENOMEM : r;
                if (r < 0)
                        return asprintf(ret_reason, "taskdata: cannot read it: %s", strerror(-r)) < 0 ? -ENOMEM : r;
        }
        r = lagoon_task_data_validate(data, size, &value, &error);
        if (r < 0) {
                log_warning("Task %s: invalid taskData: %s", t->id, strna(error));
                return asprintf(ret_reason, "taskdata: %s", error ?: strerror(-r)) < 0 ? -ENOMEM : r;
        }
        free(t->task_data);
        t->task_data = TAKE_PTR(value);
        log_info("Task %s: returned taskData (%zu bytes).", t->id, strlen(t->task_data));
        return 0;
}

/* Retention must not take a pod whose task is still being followed to its end (its
 * phase can read Succeeded before this daemon saw the container's exit). */
static bool pod_in_use(const char *namespace, const char *name, void *userdata) {
        Manager *m = userdata;

        for (size_t i = 0; i < m->n_tasks; i++) {
                const Task *t = m->tasks[i]->task;

                if ((m->tasks[i]->launcher || m->tasks[i]->deferred_end) && streq_ptr(t->pod, name) &&
                    streq_ptr(t->namespace, namespace))
                        return true;
        }
        return false;
}

static bool manager_cleaning(Manager *m, const char *id) {
        for (size_t i = 0; i < m->n_cleanups; i++)
                if (streq(m->cleanups[i]->id, id))
                        return true;
        return false;
}

static int on_cleanup_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Cleanup *c = userdata;
        Manager *m = c->manager;

        if (si->si_code != CLD_EXITED || si->si_status != 0)
                log_warning("Task %s: removing its container failed (helper %s %d), a restart tries again.", c->id,
                            si->si_code == CLD_EXITED ? "exit status" : "signal", si->si_status);
        else
                log_debug("Task %s: container removed.", c->id);
        for (size_t i = 0; i < m->n_cleanups; i++)
                if (m->cleanups[i] == c) {
                        memmove(m->cleanups + i, m->cleanups + i + 1, (m->n_cleanups - i - 1) * sizeof(Cleanup *));
                        m->n_cleanups--;
                        break;
                }
        cleanup_free(c);
        manager_schedule_dispatch(m); /* a task of the same id may wait for it */
        return 0;
}

/* runc delete, conmon's end, the unmount and the directory's removal after the final
 * state was recorded and announced: in a forked helper watched from the loop. Done
 * synchronously when the kind's removal is quick or the helper cannot be started. */
static void manager_cleanup_start(Manager *m, const LauncherClass *class, const char *id, const char *dir) {
        _cleanup_(cleanup_freep) Cleanup *c = NULL;
        _cleanup_close_ int pidfd = -EBADF;
        Cleanup **l;
        pid_t pid;
        int r;

        if (!class->remove_fork) {
                r = class->remove(m->config, id, dir);
                if (r < 0 && r != -ENOENT)
                        log_warning_errno(r, "Task %s: failed to remove its %s: %m", id, class->kind);
                return;
        }
        c = calloc(1, sizeof(Cleanup));
        l = reallocarray(m->cleanups, m->n_cleanups + 1, sizeof(Cleanup *));
        if (l)
                m->cleanups = l;
        if (!c || !l || !(c->id = strdup(id))) {
                r = -ENOMEM;
                goto sync;
        }
        c->manager = m;
        r = class->remove_fork(m->config, id, dir, &pid, &pidfd);
        if (r < 0)
                goto sync;
        r = sd_event_add_child_pidfd(m->event, &c->source, pidfd, WEXITED, on_cleanup_exit, c);
        if (r < 0) {
                (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
                (void) waitid(P_PIDFD, (id_t) pidfd, &(siginfo_t){}, WEXITED);
                goto sync;
        }
        (void) sd_event_source_set_child_pidfd_own(c->source, true);
        TAKE_FD(pidfd);
        (void) sd_event_source_set_description(c->source, "container-cleanup");
        log_debug("Task %s: removing its container (helper PID %d).", id, (int) pid);
        m->cleanups[m->n_cleanups++] = TAKE_PTR(c);
        return;
sync:
        log_warning_errno(r, "Task %s: no helper to remove its container, removing it now: %m", id);
        r = class->remove(m->config, id, dir);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Task %s: failed to remove its %s: %m", id, class->kind);
}

static void manager_task_release(Manager *m, ManagedTask *mt, bool keep_dir);

static int on_trim(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) malloc_trim(0);
        return 0;
}

/* A task's end frees its buffers and records in steps (the launcher, the log, the
 * clean-up helper, the API connections of its followers), and glibc gives back free
 * memory inside the heap only on malloc_trim(): once no task ended for a few seconds,
 * the heap is trimmed. */
static void manager_schedule_trim(Manager *m) {
        uint64_t now = 0;
        int r;

        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        if (m->trim_source) {
                (void) sd_event_source_set_time(m->trim_source, now + MANAGER_TRIM_DELAY_USEC);
                (void) sd_event_source_set_enabled(m->trim_source, SD_EVENT_ONESHOT);
                return;
        }
        r = sd_event_add_time(m->event, &m->trim_source, CLOCK_MONOTONIC, now + MANAGER_TRIM_DELAY_USEC, USEC_PER_SEC,
                              on_trim, m);
        if (r < 0) {
                log_debug_errno(r, "Failed to arm the heap trim timer, not trimming: %m");
                return;
        }
        (void) sd_event_source_set_description(m->trim_source, "manager-trim");
}

/* The task's container or pod ended (or was lost): drain its output, record the result,
 * clean up. status >= 0: the exit status; < 0: lost, with lost_reason (a task reason) or
 * the errno. */
static void
manager_task_ended(Manager *m, ManagedTask *mt, int status, const char *lost_reason, const char *task_data) {
        Task *t = mt->task;
        _cleanup_free_ char *reason = NULL, *task_data_error = NULL;
        bool keep_dir = false, was_pod = mt->launcher && launcher_class(mt->launcher) == &launcher_pod_class;
        TaskStatus to;
        int r;

        if (mt->logtail) {
                r = logtail_finish(mt->logtail);
                if (r < 0) {
                        /* Keep the CRI log so no output is lost; the operator can look. */
                        log_error_errno(r, "Task %s: failed to drain its output, keeping its container directory: %m",
                                        t->id);
                        keep_dir = true;
                }
        }
        mt->deadline_source = sd_event_source_disable_unref(mt->deadline_source);
        mt->kill_source = sd_event_source_disable_unref(mt->kill_source);

        if (status >= 0)
                t->exit_code = status;
        /* Like the pod annotation, taskData is passed on whatever the exit code; only a
         * task that would otherwise be complete fails for an invalid one. */
        if (status >= 0 && t->image && !t->cancel_requested)
                (void) read_task_data(m, t, was_pod ? task_data : NULL, &task_data_error);
        if (t->cancel_requested)
                to = TASK_CANCELLED;
        else if (t->timed_out) {
                to = TASK_FAILED;
                reason = strdup("timeout");
        } else if (status < 0) {
                to = TASK_FAILED;
                if (lost_reason)
                        reason = strdup(lost_reason);
                else if (asprintf(&reason, "launch-error: container lost (%s)", strerror(-status)) < 0)
                        reason = NULL;
        } else if (status == 0 && task_data_error) {
                to = TASK_FAILED;
                reason = TAKE_PTR(task_data_error);
        } else if (status == 0)
                to = TASK_COMPLETE;
        else {
                to = TASK_FAILED;
                if (asprintf(&reason, "exit-code %d", status) < 0)
                        reason = NULL;
        }
        if (m->n_running > 0)
                m->n_running--;
        /* Started, but its running record is not on disk yet: it ran all the same. */
        if (task_launching(t) && t->launch_step == TASK_LAUNCH_STARTED)
                (void) task_transition(t, TASK_RUNNING, NULL, now_usec(CLOCK_REALTIME));
        t->launch_step = TASK_LAUNCH_NONE;
        r = manager_transition(m, mt, to, reason);

        mt->launcher = launcher_free(mt->launcher);
        mt->logtail = logtail_free(mt->logtail);
        if (r < 0 && mt->deferred) {
                /* Not on disk yet: the container (or pod) stays, so a restart meanwhile
                 * finds the end again instead of a running task without a container. */
                mt->deferred_end = true;
                mt->deferred_keep_dir = keep_dir;
                return;
        }
        manager_task_release(m, mt, keep_dir);
        manager_prune_finished(m);
        manager_schedule_dispatch(m);
        manager_schedule_trim(m);
}

/* An ended task's container or pod, once its end is on disk: kept, removed, or handed
 * to a clean-up helper. */
static void manager_task_release(Manager *m, ManagedTask *mt, bool keep_dir) {
        _cleanup_free_ char *dir = NULL;
        Task *t = mt->task;
        bool was_pod = t->pod;
        int r;

        r = store_container_dir(m->store, t->id, &dir);
        if (r >= 0 && keep_dir) {
                /* So a restart does not remove it either. */
                _cleanup_free_ char *kept = path_join(dir, "kept");
                int fd = kept ? open(kept, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600) : -EBADF;

                if (fd < 0)
                        log_warning("Task %s: failed to mark its container directory as kept.", t->id);
                safe_close(fd);
        } else if (r >= 0)
                manager_cleanup_start(m, task_launcher_class(t), t->id, dir);
        if (was_pod)
                node_prune_task_pods(m->node, t->namespace, m->config->keep_task_pods, pod_in_use, m);
}

static void on_launcher_exit(Launcher *l, const LauncherResult *result, void *userdata) {
        ManagedTask *mt = userdata;
        _cleanup_free_ char *reason = NULL;

        if (result->launch_error) {
                log_error("Task %s: failed to start: %s", mt->task->id, result->launch_error);
                if (asprintf(&reason, "launch-error: %s", result->launch_error) < 0)
                        reason = NULL;
        }
        manager_task_ended(mt->manager, mt, result->status,
                           result->launch_error ? reason ?: "launch-error" : result->failure, result->task_data);
}

static int arm_deadline(Manager *m, ManagedTask *mt);
static uint64_t manager_stop_grace(Manager *m, const Task *t);

/* Recorded before the launcher relies on the step: a restart resumes from it. */
static void on_launcher_step(Launcher *l, TaskLaunchStep step, void *userdata) {
        ManagedTask *mt = userdata;
        Manager *m = mt->manager;
        int r;

        mt->task->launch_step = step;
        log_debug("Task %s: launch step %s.", mt->task->id, task_launch_step_to_string(step));
        /* Running once its process exists: the API, STATUS= and Lagoon say so only now. */
        if (step == TASK_LAUNCH_STARTED && mt->task->status == TASK_PENDING) {
                (void) manager_transition(m, mt, TASK_RUNNING, NULL);
                (void) arm_deadline(m, mt); /* TimeoutSec= counts from the start */
        } else
                /* A local container's "created" needs no fsync (two per launch, 6 ms median
                 * here, on the loop and the start's path): a daemon that dies leaves it in the
                 * page cache, and after a power cut, which no container survives, a restart
                 * does the same with "prepared" (conmon gone, its report says created: made
                 * again). An API pod outlives the node: its steps stay durable. */
                (void) manager_save_full(
                        m, mt, !(step == TASK_LAUNCH_CREATED && launcher_class(l) == &launcher_runtime_class));
        if (step == TASK_LAUNCH_STARTED)
                manager_launch_done(m, mt); /* the create and start happen after the launcher's start */
        /* A stop asked for while the launch was in flight reached no process. */
        if (step == TASK_LAUNCH_STARTED && mt->task->kill_usec > 0) {
                r = launcher_stop(l, manager_stop_grace(m, mt->task));
                if (r < 0 && r != -ESRCH)
                        log_warning_errno(r, "Task %s: failed to stop its %s: %m", mt->task->id,
                                          launcher_class(l)->kind);
        }
}

static LauncherCallbacks manager_launcher_callbacks(ManagedTask *mt) {
        return (LauncherCallbacks){.step = on_launcher_step, .exit = on_launcher_exit, .userdata = mt};
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ManagedTask *mt = userdata;
        int r;

        mt->kill_source = sd_event_source_disable_unref(mt->kill_source);
        if (!mt->launcher)
                return 0;
        log_notice("Task %s: %s still there %s after it was asked to stop, %s.", mt->task->id,
                   launcher_class(mt->launcher)->kind, "KillGraceSec=", mt->launcher->ops->kill_what);
        r = launcher_kill(mt->launcher);
        if (r < 0)
                log_warning_errno(r, "Task %s: failed to kill its %s: %m", mt->task->id,
                                  launcher_class(mt->launcher)->kind);
        return 0;
}

uint64_t manager_kill_at(Manager *m, const Task *t) {
        if (t->kill_usec == 0)
                return 0;
        return t->kill_at_usec > 0 ? t->kill_at_usec : t->kill_usec + m->config->kill_grace_usec;
}

static int arm_kill_timer(Manager *m, ManagedTask *mt) {
        int r;

        if (mt->kill_source) /* a cancel with a shorter grace moves it */
                return sd_event_source_set_time(mt->kill_source, manager_kill_at(m, mt->task));
        r = sd_event_add_time(m->event, &mt->kill_source, CLOCK_REALTIME, manager_kill_at(m, mt->task),
                              TIMER_ACCURACY_USEC, on_kill_timer, mt);
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to arm the kill timer: %m", mt->task->id);
        (void) sd_event_source_set_description(mt->kill_source, "task-kill");
        return 0;
}

/* What is left of the grace between the stop and the kill (a pod's grace period). */
static uint64_t manager_stop_grace(Manager *m, const Task *t) {
        uint64_t at = manager_kill_at(m, t), n = now_usec(CLOCK_REALTIME);

        return at > n ? at - n : 0;
}

/* SIGTERM now (a pod: deleted with the grace), SIGKILL after KillGraceSec=. The flags
 * saying why were persisted first. */
static int manager_stop_running(Manager *m, ManagedTask *mt) {
        int r;

        if (mt->task->kill_usec == 0)
                mt->task->kill_usec = now_usec(CLOCK_REALTIME);
        (void) manager_save(m, mt);
        if (mt->launcher) {
                r = launcher_stop(mt->launcher, manager_stop_grace(m, mt->task));
                if (r < 0)
                        log_warning_errno(r, "Task %s: failed to stop its %s: %m", mt->task->id,
                                          launcher_class(mt->launcher)->kind);
        }
        return arm_kill_timer(m, mt);
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        ManagedTask *mt = userdata;

        mt->deadline_source = sd_event_source_disable_unref(mt->deadline_source);
        if (mt->task->status != TASK_RUNNING)
                return 0;
        log_notice("Task %s: timeout after %" PRIu64 "s, stopping it.", mt->task->id,
                   mt->task->timeout_usec / USEC_PER_SEC);
        mt->task->timed_out = true;
        (void) manager_stop_running(mt->manager, mt);
        return 0;
}

static int arm_deadline(Manager *m, ManagedTask *mt) {
        Task *t = mt->task;
        int r;

        if (t->timeout_usec == USEC_INFINITY || t->timed_out || t->cancel_requested)
                return 0;
        r = sd_event_add_time(m->event, &mt->deadline_source, CLOCK_REALTIME, t->started_usec + t->timeout_usec,
                              TIMER_ACCURACY_USEC, on_deadline, mt);
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to arm the deadline: %m", t->id);
        (void) sd_event_source_set_description(mt->deadline_source, "task-deadline");
        return 0;
}

static void on_output(LogTail *lt, void *userdata) {
        ManagedTask *mt = userdata;
        manager_call_callbacks(mt->manager, mt->task);
}

static int start_logtail(Manager *m, ManagedTask *mt) {
        _cleanup_free_ char *log_path = NULL;
        int r;

        r = store_task_log_path(m->store, mt->task->id, &log_path);
        if (r < 0)
                return r;
        r = logtail_new(m->event, mt->task, launcher_log_path(mt->launcher), log_path, mt->secrets, on_output, mt,
                        &mt->logtail);
        if (r < 0)
                return r;
        logtail_set_max_bytes(mt->logtail, m->config->task_log_size_max);
        return 0;
}

static int task_environment(const Task *t, char ***ret) {
        _cleanup_strv_free_ char **env = NULL;
        char *s;
        int r;

#define PUSH(fmt, ...) \
        do { \
                if (asprintf(&s, fmt, __VA_ARGS__) < 0) \
                        return -ENOMEM; \
                r = strv_push(&env, s); \
                if (r < 0) \
                        return r; \
        } while (0)
        PUSH("TASK_DATA_ID=%s", t->id);
        PUSH("LAGOON_TASK_NAME=%s", t->name);
        PUSH("LAGOON_PROJECT=%s", t->project);
        PUSH("LAGOON_ENVIRONMENT=%s", t->environment);
        PUSH("LAGOON_GIT_BRANCH=%s", t->environment);
        PUSH("NAMESPACE=%s", t->namespace);
        if (t->image && t->pod)
                PUSH("PODNAME=%s", t->pod);
        else if (t->image) {
                PUSH("PODNAME=%s", strna(t->container_id));
                PUSH("LAGOON_TASK_DATA_FILE=%s", TASK_DATA_FILE);
        }
#undef PUSH
        /* Lagoon's own variables come last, so they win over the defaults above. */
        for (char *const *e = t->env; e && *e; e++) {
                r = strv_extend(&env, *e);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(env);
        return 0;
}

/* The secrets in force for a task: the configured ones plus its own. */
static int task_secrets(Manager *m, const Task *t, char ***ret) {
        _cleanup_strv_free_ char **l = strv_copy(m->config->secrets);
        int r;

        if (!l)
                return -ENOMEM;
        for (char *const *s = t->secrets; s && *s; s++) {
                r = strv_extend(&l, *s);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* The secret files an advanced task asked for. Returns -ENOENT with a reason when one is
 * not configured: running without it would only fail later, less clearly. */
static int task_mounts(Manager *m, const Task *t, BundleMount *mounts, size_t *ret_n, char **ret_reason) {
        size_t n = 0;

        if (t->ssh_key) {
                if (!m->config->ssh_key_file)
                        return error_message(ret_reason, -ENOENT,
                                             "launch-error: sshKey requested but SSHKeyFile= is not set");
                mounts[n++] =
                        (BundleMount){m->config->ssh_key_file, "/var/run/secrets/lagoon/ssh/ssh-privatekey", true};
        }
        if (t->deployer_token) {
                if (!m->config->deployer_token_file)
                        return error_message(ret_reason, -ENOENT,
                                             "launch-error: deployerToken requested but DeployerTokenFile= is not set");
                mounts[n++] = (BundleMount){m->config->deployer_token_file,
                                            "/var/run/secrets/kubernetes.io/serviceaccount/token", true};
                mounts[n++] =
                        (BundleMount){m->config->deployer_token_file, "/var/run/secrets/lagoon/deployer/token", true};
        }
        *ret_n = n;
        return 0;
}

static void manager_launch_failed(Manager *m, ManagedTask *mt, int r, const char *what) {
        _cleanup_free_ char *reason = NULL;

        log_error_errno(r, "Task %s: failed to %s: %m", mt->task->id, what);
        if (asprintf(&reason, "launch-error: %s", strerror(-r)) < 0)
                reason = NULL;
        (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
}

/* A local container: a [Service]/[Image] bundle (local mode) or the bundle of the
 * service's container on this node (node mode). */
static void
manager_launch_runtime(Manager *m, ManagedTask *mt, const ServiceConfig *svc, const RuntimeServiceBundle *node_bundle) {
        _cleanup_free_ char *dir = NULL, *error = NULL, *reason = NULL;
        _cleanup_strv_free_ char **env = NULL;
        BundleMount mounts[3];
        size_t n_mounts = 0;
        Task *t = mt->task;
        int r;

        if (task_mounts(m, t, mounts, &n_mounts, &reason) < 0) {
                (void) manager_transition(m, mt, TASK_FAILED, reason);
                return;
        }
        if ((r = runtime_container_id(t->id, &t->container_id)) < 0 ||
            (r = store_container_dir(m->store, t->id, &dir)) < 0 || (r = task_environment(t, &env)) < 0)
                return manager_launch_failed(m, mt, r, "prepare launch");
        mt->secrets = strv_free(mt->secrets);
        r = task_secrets(m, t, &mt->secrets);
        if (r < 0)
                return manager_launch_failed(m, mt, r, "prepare launch");

        /* The launch is recorded before the container exists: should the daemon die in
         * between, the next start resumes it and never starts the task a second time.
         * The task stays pending until its container started (on_launcher_step). */
        t->launch_step = TASK_LAUNCH_PREPARED;
        if (manager_save(m, mt) < 0) {
                /* Not on disk, so not launched: it waits in the queue. */
                t->launch_step = TASK_LAUNCH_NONE;
                return;
        }
        m->n_running++;
        manager_task_changed(m, mt);
        debug_stop_at("prepared");

        LauncherCallbacks callbacks = manager_launcher_callbacks(mt);
        RuntimeSpec spec = {
                .config = m->config,
                .service = svc,
                .task = t,
                .env = env,
                .container_dir = dir,
                .mounts = mounts,
                .n_mounts = n_mounts,
                .task_data_dir = t->image ? TASK_DATA_DIR : NULL,
                .service_bundle_dir = node_bundle ? node_bundle->bundle_dir : NULL,
                .service_rootfs = node_bundle ? node_bundle->rootfs : NULL,
                .netns_path = node_bundle ? node_bundle->netns_path : NULL,
                .netns_fd = node_bundle ? node_bundle->netns_fd : 0,
        };
        r = launcher_runtime_start(m->event, &spec, &callbacks, &mt->launcher, &error);
        if (r < 0) {
                m->n_running--;
                t->launch_step = TASK_LAUNCH_NONE;
                if (asprintf(&reason, "launch-error: %s", error ?: strerror(-r)) < 0)
                        reason = NULL;
                log_error_errno(r, "Task %s: failed to start: %s", t->id, strna(error));
                (void) launcher_runtime_class.remove(m->config, t->id, dir);
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
                return;
        }
        r = start_logtail(m, mt);
        if (r < 0)
                log_error_errno(r, "Task %s: failed to follow its output: %m", t->id);
}

/* The pod is named like the task (Lagoon's names are "lagoon-task-<random>"), else
 * derived from its id. */
static int task_pod_name(const Task *t, char **ret) {
        char *s;

        if (t->name && dns_label_is_valid(t->name))
                s = strdup(t->name);
        else {
                if (asprintf(&s, "lagoon-task-%.50s", t->id) < 0)
                        return -ENOMEM;
                for (char *c = s; *c; c++)
                        *c = strchr("abcdefghijklmnopqrstuvwxyz0123456789-", tolower((unsigned char) *c))
                                     ? (char) tolower((unsigned char) *c)
                                     : '-';
                for (size_t n = strlen(s); n > 0 && s[n - 1] == '-'; n--)
                        s[n - 1] = 0;
        }
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* An API pod: advanced tasks in node mode, and standard tasks whose service has no
 * container on this node (deployment: the service's Deployment). */
static void
manager_launch_pod(Manager *m, ManagedTask *mt, const JsonValue *deployment, const NodeAdvancedContext *ctx) {
        _cleanup_free_ char *dir = NULL, *error = NULL, *reason = NULL, *name = NULL;
        _cleanup_(json_freep) JsonValue *pod = NULL;
        _cleanup_strv_free_ char **env = NULL;
        const char *container = NULL;
        Task *t = mt->task;
        int r;

        if ((r = task_pod_name(t, &name)) < 0 || (r = free_and_strdup(&t->pod, name)) < 0 ||
            (r = store_container_dir(m->store, t->id, &dir)) < 0 || (r = task_environment(t, &env)) < 0)
                return manager_launch_failed(m, mt, r, "prepare the pod");
        mt->secrets = strv_free(mt->secrets);
        r = task_secrets(m, t, &mt->secrets);
        if (r < 0)
                return manager_launch_failed(m, mt, r, "prepare the pod");

        TaskPodParams p = {
                .name = name,
                .namespace = t->namespace,
                .task_id = t->id,
                .node_name = node_name(m->node),
                .command = t->command,
                .image = t->image,
                .ssh_key = t->ssh_key,
                .deployer_token = t->deployer_token,
                .env = env,
                .env_remove = (char *const *) (const char *const[]){"CRONJOBS", NULL},
                .env_from_secrets = ctx ? ctx->env_from_secrets : NULL,
                .env_from_config_maps = ctx ? ctx->env_from_config_maps : NULL,
                .deployer_token_secret = ctx ? ctx->deployer_token_secret : NULL,
                .bulk_volumes = ctx ? ctx->bulk_volumes : NULL,
                .dynamic_secrets = ctx ? ctx->dynamic_secrets : NULL,
                .rootless = t->rootless,
                .labels = t->pod_labels,
        };
        if (t->image) {
                r = task_pod_advanced(&p, &pod, &error);
                container = TASK_POD_CONTAINER_ADVANCED;
        } else {
                r = task_pod_standard(deployment, &p, &pod, &error);
                container = json_get_string(
                        json_array_at(json_get_path(deployment, "spec", "template", "spec", "containers", NULL), 0),
                        "name");
        }
        if (r < 0) {
                if (asprintf(&reason, "launch-error: %s", error ?: strerror(-r)) < 0)
                        reason = NULL;
                t->pod = mfree(t->pod);
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
                return;
        }

        /* Recorded with the pod's name before the pod exists: a restarted daemon sends
         * the same pod again (one name, so one pod) instead of a second one. The task
         * stays pending until the API server created its pod (on_launcher_step). */
        t->launch_step = TASK_LAUNCH_PREPARED;
        if (manager_save(m, mt) < 0) {
                /* Not on disk, so not launched: it waits in the queue. */
                t->launch_step = TASK_LAUNCH_NONE;
                t->pod = mfree(t->pod);
                return;
        }
        m->n_running++;
        manager_task_changed(m, mt);

        LauncherCallbacks callbacks = manager_launcher_callbacks(mt);
        KubePodSpec spec = {
                .namespace = t->namespace,
                .name = name,
                .container = container,
                .container_dir = dir,
        };
        r = launcher_pod_start(m->event, node_api(m->node), &spec, pod, &callbacks, &mt->launcher, &error);
        if (r < 0) {
                m->n_running--;
                t->launch_step = TASK_LAUNCH_NONE;
                if (asprintf(&reason, "launch-error: %s", error ?: strerror(-r)) < 0)
                        reason = NULL;
                log_error_errno(r, "Task %s: failed to start its pod: %s", t->id, strna(error));
                (void) launcher_pod_class.remove(m->config, t->id, dir);
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
                return;
        }
        log_info("Task %s: creating pod %s/%s.", t->id, t->namespace, name);
        r = start_logtail(m, mt);
        if (r < 0)
                log_error_errno(r, "Task %s: failed to follow its output: %m", t->id);
}

/* A lookup for mt's launch answered: false when the task was cancelled meanwhile. */
static bool lookup_done(Manager *m, ManagedTask *mt) {
        mt->lookup = node_lookup_cancel(mt->lookup);
        if (m->n_running > 0)
                m->n_running--; /* the launch counts it again */
        return mt->task->status == TASK_PENDING;
}

static void on_node_lookup(NodeLookup *l, int error, const char *reason, NodeService *svc, void *userdata) {
        ManagedTask *mt = userdata;
        Manager *m = mt->manager;

        if (!lookup_done(m, mt))
                return;
        if (error < 0) {
                log_warning("Task %s: %s", mt->task->id, strna(reason));
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "service-not-found");
        } else if (svc->bundle.bundle_dir) {
                log_info("Task %s: cloning %s's container %s of pod %s on this node.", mt->task->id, mt->task->service,
                         strna(svc->bundle.id), strna(svc->pod));
                manager_launch_runtime(m, mt, NULL, &svc->bundle);
        } else
                manager_launch_pod(m, mt, svc->deployment, NULL);
        manager_prune_finished(m);
        manager_schedule_dispatch(m);
}

static void on_advanced_context(NodeLookup *l, NodeAdvancedContext *ctx, void *userdata) {
        ManagedTask *mt = userdata;
        Manager *m = mt->manager;

        if (!lookup_done(m, mt))
                return;
        if (ctx->error) {
                _cleanup_free_ char *reason = NULL;

                log_error("Task %s: cannot build its pod: %s", mt->task->id, ctx->error);
                if (asprintf(&reason, "launch-error: %s", ctx->error) < 0)
                        reason = NULL;
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
        } else
                manager_launch_pod(m, mt, NULL, ctx);
        manager_prune_finished(m);
        manager_schedule_dispatch(m);
}

static void manager_launch_advanced_pod(Manager *m, ManagedTask *mt) {
        Task *t = mt->task;
        int r;

        r = node_lookup_advanced_context(m->node, t->namespace, t->deployer_token, t->volume_mounts,
                                         on_advanced_context, mt, &mt->lookup);
        if (r < 0)
                return manager_launch_failed(m, mt, r, "look at its namespace");
        m->n_running++;
}

static void on_role_binding(NodeLookup *l, int error, const char *error_text, void *userdata) {
        ManagedTask *mt = userdata;
        Manager *m = mt->manager;

        if (!lookup_done(m, mt))
                return;
        if (error < 0) {
                _cleanup_free_ char *reason = NULL;

                log_error("Task %s: failed to create RoleBinding %s in %s: %s", mt->task->id,
                          NODE_ACTIVESTANDBY_ROLE_BINDING, mt->task->rb_namespace, strna(error_text));
                if (asprintf(&reason, "launch-error: RoleBinding %s in %s: %s", NODE_ACTIVESTANDBY_ROLE_BINDING,
                             mt->task->rb_namespace, strna(error_text)) < 0)
                        reason = NULL;
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
        } else {
                log_info("Task %s: RoleBinding %s in %s grants %s's lagoon-deployer admin.", mt->task->id,
                         NODE_ACTIVESTANDBY_ROLE_BINDING, mt->task->rb_namespace, mt->task->rb_source);
                manager_launch_advanced_pod(m, mt);
        }
        manager_prune_finished(m);
        manager_schedule_dispatch(m);
}

static void manager_launch(Manager *m, ManagedTask *mt) {
        const ServiceConfig *svc;
        Task *t = mt->task;
        int r;

        m->stats.launches++;
        mt->launch_begin_usec = now_usec(CLOCK_MONOTONIC);

        if (t->image) {
                /* Advanced tasks talk to the Kubernetes API as their pod: real pods where there is one. */
                if (node_api(m->node) && t->rb_namespace) {
                        /* Before the pod, as remote-controller: the switch needs it from its start.
                         * Recorded first, so a daemon that dies meanwhile deletes it later. */
                        t->rb_created = true;
                        r = manager_save(m, mt);
                        if (r >= 0)
                                r = node_role_binding_create(m->node, t->rb_namespace, t->rb_source, on_role_binding,
                                                             mt, &mt->lookup);
                        if (r < 0)
                                return manager_launch_failed(m, mt, r, "create its RoleBinding");
                        m->n_running++;
                        return;
                }
                if (node_api(m->node))
                        return manager_launch_advanced_pod(m, mt);
                svc = config_find_image(m->config, t->image);
                if (!svc) {
                        (void) manager_transition(m, mt, TASK_FAILED, "image-pull: no [Image] section for it");
                        return;
                }
                return manager_launch_runtime(m, mt, svc, NULL);
        }

        svc = config_find_service(m->config, t->service);
        if (svc)
                return manager_launch_runtime(m, mt, svc, NULL);
        if (!m->node) {
                (void) manager_transition(m, mt, TASK_FAILED, "service-not-found");
                return;
        }
        /* Where the service runs is an asynchronous question; the task holds a slot meanwhile. */
        r = node_lookup_service(m->node, t->namespace, t->service, on_node_lookup, mt, &mt->lookup);
        if (r < 0)
                return manager_launch_failed(m, mt, r, "look up its service");
        m->n_running++;
}

static bool environment_has_room(Manager *m, const Task *t) {
        unsigned n = 0;

        if (m->config->max_running_per_environment == 0)
                return true;
        for (size_t i = 0; i < m->n_tasks; i++) {
                const Task *o = m->tasks[i]->task;
                /* A task whose service is being looked up holds its place too. */
                if ((o->status == TASK_RUNNING || task_launching(o) || m->tasks[i]->lookup) &&
                    streq(o->namespace, t->namespace))
                        n++;
        }
        return n < m->config->max_running_per_environment;
}

/* The cluster's count, after this daemon's own (environment_has_room()). */
static bool cluster_has_room(Manager *m, const Task *t) {
        if (!m->gate.acquire)
                return true;
        return m->gate.acquire(t, m->config->max_running_per_environment, m->gate.userdata) > 0;
}

void manager_set_gate(Manager *m, const ManagerGate *gate) {
        m->gate = gate ? *gate : (ManagerGate){};
        if (!m->gate.acquire || m->config->max_running_per_environment == 0)
                return;
        /* After a restart: the places the running tasks held are theirs again. */
        for (size_t i = 0; i < m->n_tasks; i++) {
                const Task *t = m->tasks[i]->task;
                if (t->status == TASK_RUNNING || task_launching(t))
                        (void) m->gate.acquire(t, m->config->max_running_per_environment, m->gate.userdata);
        }
}

void manager_gate_changed(Manager *m) {
        manager_schedule_dispatch(m);
}

/* Free space on the state directory's file systems (the records may have their own):
 * below MinFreeSpace= a launch could not write its record, log or container. */
static bool manager_has_space(Manager *m) {
        _cleanup_free_ char *tasks = NULL;
        uint64_t free_bytes = UINT64_MAX;
        bool low;

        if (m->config->min_free_space == 0)
                return true;
        tasks = path_join(store_state_dir(m->store), "tasks");
        for (unsigned i = 0; i < 2; i++) {
                const char *p = i == 0 ? store_state_dir(m->store) : tasks;
                struct statvfs sv;

                if (p && statvfs(p, &sv) >= 0)
                        free_bytes = MIN(free_bytes, (uint64_t) sv.f_bavail * sv.f_frsize);
        }
        m->stats.state_free_bytes = free_bytes == UINT64_MAX ? 0 : free_bytes;
        low = free_bytes < m->config->min_free_space;
        if (low != m->stats.low_space) {
                if (low)
                        log_error("State directory %s has %" PRIu64 " bytes free, less than MinFreeSpace=%" PRIu64
                                  ": launches stop until there is more.",
                                  store_state_dir(m->store), free_bytes, m->config->min_free_space);
                else
                        log_notice("State directory %s has %" PRIu64 " bytes free again: launches resume.",
                                   store_state_dir(m->store), free_bytes);
                m->stats.low_space = low;
                manager_update_status(m);
        }
        return !low;
}

int manager_wait_reason(Manager *m, const Task *t, char **ret) {
        ManagedTask *mt = manager_find(m, t->id);
        char *s = NULL;
        int r = 0;

        if (!mt || !task_queued(t)) {
                *ret = NULL;
                return 0;
        }
        /* In the order the dispatcher checks them. */
        if (m->shutting_down)
                s = strdup("the daemon is stopping");
        else if (m->stats.store_error < 0 || mt->deferred)
                s = strdup("the state directory cannot be written");
        else if (m->stats.low_space)
                r = asprintf(&s, "less free space than MinFreeSpace=%" PRIu64 " in the state directory",
                             m->config->min_free_space);
        else if (mt->lookup)
                s = strdup("looking up where its service runs");
        else if (m->n_running >= m->config->max_running)
                r = asprintf(&s, "MaxRunning=%u reached", m->config->max_running);
        else if (!environment_has_room(m, t))
                r = asprintf(&s, "MaxRunningPerEnvironment=%u reached in %s", m->config->max_running_per_environment,
                             t->namespace);
        else if (m->gate.all_held && m->config->max_running_per_environment > 0 &&
                 m->gate.all_held(t, m->gate.userdata))
                r = asprintf(&s, "MaxRunningPerEnvironment=%u reached in %s across the cluster",
                             m->config->max_running_per_environment, t->namespace);
        else if (manager_cleaning(m, t->id))
                s = strdup("an earlier task of the same id is being cleaned up");
        else
                s = strdup("about to be launched");
        if (r < 0 || !s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static bool manager_has_pending(Manager *m) {
        for (size_t i = 0; i < m->n_tasks; i++)
                if (task_queued(m->tasks[i]->task) && !m->tasks[i]->deferred)
                        return true;
        return false;
}

/* Writes what could not be written, in order, and makes (and announces) the deferred
 * transitions; the first failure waits for the next round. */
static int on_store_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        int r = 0;

        for (size_t i = 0; i < m->n_tasks && r >= 0; i++) {
                ManagedTask *mt = m->tasks[i];

                if (mt->deferred) {
                        _cleanup_free_ char *reason = TAKE_PTR(mt->deferred_reason);

                        mt->deferred = false;
                        if (!task_transition_allowed(mt->task->status, mt->deferred_to))
                                continue; /* overtaken (a cancel of a task whose failure waited) */
                        r = manager_transition(m, mt, mt->deferred_to, reason);
                        if (r >= 0 && mt->deferred_end) {
                                mt->deferred_end = false;
                                manager_task_release(m, mt, mt->deferred_keep_dir);
                        }
                } else if (mt->unsaved)
                        r = manager_save(m, mt);
        }
        if (r < 0)
                return 0; /* re-armed by the failure */
        if (m->stats.store_error < 0) {
                log_notice("State directory writable again: every record written, launches resume.");
                m->stats.store_error = 0;
                manager_update_status(m);
        }
        manager_prune_finished(m);
        manager_schedule_dispatch(m);
        return 0;
}

/* Waiting for nothing but its turn (and, for a launch, room in the limits). */
static bool in_queue(ManagedTask *mt) {
        return task_queued(mt->task) && !mt->lookup && !mt->deferred;
}

static bool launchable(Manager *m, ManagedTask *mt) {
        return in_queue(mt) && environment_has_room(m, mt->task) && !manager_cleaning(m, mt->task->id) &&
               cluster_has_room(m, mt->task);
}

static int manager_dispatch_handler(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        if (m->shutting_down)
                return 0;
        if (m->stats.store_error < 0)
                return 0; /* the retry timer dispatches again */
        if (manager_has_pending(m) && !manager_has_space(m)) {
                manager_arm_store_retry(m); /* looks again */
                return 0;
        }
        /* Oldest first; a task blocked only by its environment's limit does not
         * hold back tasks of other environments. One launch per iteration (its record is
         * fsync'd): API requests and exits pending meanwhile are served in between. */
        for (size_t i = 0; i < m->n_tasks && m->n_running < m->config->max_running && m->stats.store_error == 0; i++) {
                ManagedTask *mt = m->tasks[i];

                if (!launchable(m, mt))
                        continue;
                manager_launch(m, mt);
                if (!in_queue(mt)) /* it made progress: the next one comes next iteration */
                        manager_schedule_dispatch(m);
                break;
        }
        /* Only now: retention drops tasks from the array the loop above walks. */
        manager_prune_finished(m);
        manager_update_status(m);
        return 0;
}

static int generate_id(char **ret) {
        uint8_t b[8];
        char *s;

        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                return -errno ?: -EIO;
        if (asprintf(&s, "%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static bool namespace_allowed(char *const *globs, const char *namespace) {
        for (char *const *g = globs; g && *g; g++)
                if (fnmatch(*g, namespace, 0) == 0)
                        return true;
        return false;
}

/* What the kernel or the store could not take later fails here, with its name. */
static int check_field_limits(const TaskRequest *req, char **ret_error) {
        const struct {
                const char *name, *value;
                size_t max;
        } fields[] = {
                {"command", req->command, TASK_COMMAND_MAX},       {"name", req->name, TASK_NAME_MAX},
                {"service", req->service, TASK_LABEL_MAX},         {"project", req->project, TASK_LABEL_MAX},
                {"environment", req->environment, TASK_LABEL_MAX}, {"image", req->image, TASK_IMAGE_MAX},
        };

        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (fields[i].value && strlen(fields[i].value) > fields[i].max)
                        return error_message(ret_error, -EINVAL, "%s is too long (%zu bytes, at most %zu)",
                                             fields[i].name, strlen(fields[i].value), fields[i].max);
        for (size_t i = 0; req->env && req->env[i]; i++)
                if (strlen(req->env[i]) > TASK_ENV_ENTRY_MAX)
                        return error_message(ret_error, -EINVAL,
                                             "environment variable %.*s is too long (%zu bytes, at most %u)",
                                             (int) MIN(strcspn(req->env[i], "="), (size_t) 64), req->env[i],
                                             strlen(req->env[i]), TASK_ENV_ENTRY_MAX);
        return 0;
}

int manager_submit(Manager *m, const TaskRequest *req, const Task **ret, bool *ret_existing, char **ret_error) {
        _cleanup_(managed_task_freep) ManagedTask *mt = NULL;
        const char *service, *project, *environment;
        ManagedTask *existing;
        size_t record_size;
        Task *t;
        int r;

        if (m->shutting_down)
                return error_message(ret_error, -ESHUTDOWN, "lagoon-taskd is stopping");
        if (req->image && (req->command || req->service))
                return error_message(ret_error, -EINVAL, "a task runs either an image or a command, not both");
        if (!req->image && isempty(req->command))
                return error_message(ret_error, -EINVAL, "command is required");
        if (req->id && !task_id_is_valid(req->id))
                return error_message(ret_error, -EINVAL,
                                     "invalid task id: 1-%d characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                                     TASK_ID_MAX);
        r = check_field_limits(req, ret_error);
        if (r < 0)
                return r;
        service = req->image ? NULL : req->service ?: m->config->default_service;
        project = req->project ?: m->config->default_project;
        environment = req->environment ?: m->config->default_environment;
        if (isempty(project) || isempty(environment))
                return error_message(ret_error, -EINVAL, "project and environment must not be empty");

        if (req->id) {
                existing = manager_find(m, req->id);
                if (existing) {
                        if (!task_command_is(existing->task, req->command) ||
                            !streq_ptr(existing->task->service, service) ||
                            !streq_ptr(existing->task->image, req->image))
                                return error_message(ret_error, -EEXIST,
                                                     "task %s exists with a different command, service or image",
                                                     req->id);
                        *ret = existing->task;
                        if (ret_existing)
                                *ret_existing = true;
                        return 0;
                }
        }
        if (service && !m->node && !config_find_service(m->config, service)) {
                _cleanup_free_ char *known = NULL;

                if (config_service_names(m->config, &known) < 0)
                        return -ENOMEM;
                return error_message(ret_error, -ENOENT, "unknown service '%s' (configured: %s)", service,
                                     isempty(known) ? "none" : known);
        }
        if (req->image && !node_api(m->node) && !config_find_image(m->config, req->image))
                return error_message(ret_error, -ENOENT, "no [Image %s] section for this runner image", req->image);
        if (manager_n_queued(m) >= m->config->max_queued)
                return error_message(ret_error, -EBUSY, "queue full (%u tasks waiting, MaxQueued=%u)",
                                     manager_n_queued(m), m->config->max_queued);

        mt = managed_task_new(NULL);
        if (!mt)
                return -ENOMEM;
        t = mt->task;
        if (req->id)
                t->id = strdup(req->id);
        else {
                r = generate_id(&t->id);
                if (r < 0)
                        return r;
        }
        t->name = strdup(req->name ?: t->id);
        t->project = strdup(project);
        t->environment = strdup(environment);
        if (!t->id || !t->name || !t->project || !t->environment)
                return -ENOMEM;
        if ((service && !(t->service = strdup(service))) || (req->command && !(t->command = strdup(req->command))) ||
            (req->image && !(t->image = strdup(req->image))))
                return -ENOMEM;
        t->deployer_token = req->deployer_token;
        t->ssh_key = req->ssh_key;
        t->volume_mounts = req->volume_mounts;
        t->rootless = req->rootless;
        if (req->rb_namespace && req->rb_source &&
            (!(t->rb_namespace = strdup(req->rb_namespace)) || !(t->rb_source = strdup(req->rb_source))))
                return -ENOMEM;
        if ((req->pod_labels && !(t->pod_labels = strv_copy(req->pod_labels))) ||
            (req->env && !(t->env = strv_copy(req->env))) ||
            (req->secrets && !(t->secrets = strv_copy(req->secrets))) ||
            (req->lagoon && !(t->lagoon = json_copy(req->lagoon))))
                return -ENOMEM;
        r = task_new_remote_id(&t->remote_id);
        if (r < 0)
                return r;
        if (req->namespace) {
                t->namespace = strdup(req->namespace);
                r = t->namespace ? 0 : -ENOMEM;
        } else
                r = task_make_namespace(project, environment, NULL, m->config->namespace_prefix, &t->namespace);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_error, -EINVAL,
                                     "cannot derive a namespace from project '%s' and environment '%s'", project,
                                     environment);
        /* In node mode the namespace picks the Deployment (its service account, volumes,
         * securityContext) or the pod to clone: from the control API only where allowed. */
        if (!req->lagoon && m->node &&
            (req->image ? node_api(m->node) != NULL : !config_find_service(m->config, service)) &&
            !namespace_allowed(m->config->api_namespaces, t->namespace))
                return error_message(ret_error, -EPERM,
                                     "namespace %s is not open to tasks from the control API (APINamespaces=)",
                                     t->namespace);
        t->created_usec = now_usec(CLOCK_REALTIME);
        t->timeout_usec = req->timeout_usec > 0 ? req->timeout_usec : m->config->default_timeout_usec;
        t->seq = m->last_seq + 1;

        r = task_transition(t, TASK_PENDING, NULL, t->created_usec);
        if (r < 0)
                return r;
        r = store_record_size(t, &record_size);
        if (r < 0)
                return r;
        if (record_size > STORE_RECORD_NEW_MAX)
                return error_message(ret_error, -EINVAL, "task is too large (a record of %zu bytes, at most %u)",
                                     record_size, STORE_RECORD_NEW_MAX);
        r = manager_save_and_add(m, mt, "its record");
        if (r < 0)
                return r;
        mt = NULL;
        log_info("Task %s: accepted (%s %s, %s/%s).", t->id, t->image ? "image" : "service", t->image ?: t->service,
                 t->project, t->environment);
        manager_call_callbacks(m, t);
        manager_update_status(m);
        manager_schedule_dispatch(m);
        *ret = t;
        if (ret_existing)
                *ret_existing = false;
        return 0;
}

int manager_remove_task(Manager *m, const char *id) {
        ManagedTask *mt = manager_find(m, id);
        int r;

        if (!mt)
                return -ENOENT;
        if (!task_status_is_final(mt->task->status))
                return -EBUSY;
        /* As retention: Lagoon is told the end before the record goes. */
        if (mt->task->lagoon && mt->task->reported != mt->task->status)
                return -EAGAIN;
        r = store_remove(m->store, id);
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to remove its record: %m", id);
        log_info("Task %s: removed.", id);
        manager_drop(m, mt);
        return 0;
}

int manager_cancel(Manager *m, const char *id) {
        return manager_cancel_with_grace(m, id, UINT64_MAX);
}

int manager_cancel_with_grace(Manager *m, const char *id, uint64_t grace_usec) {
        ManagedTask *mt = manager_find(m, id);

        if (!mt)
                return -ENOENT;
        if (task_status_is_final(mt->task->status))
                return -EALREADY;
        mt->task->cancel_requested = true;
        if (mt->lookup) {
                mt->lookup = node_lookup_cancel(mt->lookup);
                if (m->n_running > 0)
                        m->n_running--;
        }
        if (mt->task->status != TASK_RUNNING && !mt->launcher) {
                (void) manager_transition(m, mt, TASK_CANCELLED, NULL);
                manager_prune_finished(m);
                return 0;
        }
        log_info("Task %s: cancelling.", id);
        if (grace_usec != UINT64_MAX) {
                uint64_t n = now_usec(CLOCK_REALTIME), at = grace_usec > UINT64_MAX - n ? UINT64_MAX : n + grace_usec;

                if (mt->task->kill_usec == 0 || at < manager_kill_at(m, mt->task))
                        mt->task->kill_at_usec = at;
        }
        mt->deadline_source = sd_event_source_disable_unref(mt->deadline_source);
        (void) manager_stop_running(m, mt);
        manager_task_changed(m, mt);
        return 0;
}

/* After a restart: re-attach to a container that was running when the daemon died. */
static void manager_adopt(Manager *m, ManagedTask *mt) {
        const LauncherClass *class = task_launcher_class(mt->task);
        _cleanup_free_ char *dir = NULL;
        int r;

        m->n_running++;
        (void) task_secrets(m, mt->task, &mt->secrets);
        r = store_container_dir(m->store, mt->task->id, &dir);
        if (r >= 0) {
                LauncherContext ctx = {.event = m->event, .config = m->config, .kube = node_api(m->node)};
                LauncherCallbacks callbacks = manager_launcher_callbacks(mt);

                r = class->adopt(&ctx, mt->task, dir, &callbacks, &mt->launcher);
        }
        if (r == -EAGAIN) {
                /* Nothing of it ever ran: back to the queue, launched again like any other. */
                m->n_running--;
                log_info("Task %s: its launch was interrupted (at step %s) before anything ran; launching it again.",
                         mt->task->id, task_launch_step_to_string(mt->task->launch_step));
                r = class->remove(m->config, mt->task->id, dir);
                if (r < 0)
                        log_warning_errno(r, "Task %s: failed to remove what its launch left: %m", mt->task->id);
                (void) task_requeue(mt->task);
                mt->task->pod = mfree(mt->task->pod); /* the next launch may find the service on this node */
                if (mt->task->cancel_requested) {
                        (void) manager_transition(m, mt, TASK_CANCELLED, NULL);
                        return;
                }
                (void) manager_save(m, mt);
                return;
        }
        if (r < 0) {
                _cleanup_free_ char *reason = NULL;

                m->n_running--;
                log_warning_errno(r, "Task %s: cannot adopt its container: %m", mt->task->id);
                if (asprintf(&reason, "launch-error: container not found after restart (%s)", strerror(-r)) < 0)
                        reason = NULL;
                if (dir && class == &launcher_runtime_class)
                        (void) class->remove(m->config, mt->task->id, dir);
                (void) manager_transition(m, mt, TASK_FAILED, reason ?: "launch-error");
                return;
        }
        log_info("Task %s: adopted running %s.", mt->task->id, class->kind);
        m->stats.adopted++;
        r = start_logtail(m, mt);
        if (r < 0)
                log_error_errno(r, "Task %s: failed to follow its output: %m", mt->task->id);
        if (mt->task->status == TASK_RUNNING)
                (void) arm_deadline(m, mt); /* else once its container started */
        if (mt->task->kill_usec > 0)
                (void) arm_kill_timer(m, mt);
}

int manager_adopt_foreign(Manager *m, const ManagerForeignTask *ft) {
        _cleanup_(managed_task_freep) ManagedTask *mt = NULL;
        ManagedTask *added;
        Task *t;
        int r;

        if (!node_api(m->node) || !ft->id || !ft->pod || !ft->namespace || !ft->project || !ft->environment ||
            (!ft->image == !ft->service))
                return -EINVAL;
        if (manager_find(m, ft->id))
                return -EEXIST;
        mt = managed_task_new(NULL);
        if (!mt)
                return -ENOMEM;
        t = mt->task;
        if (!(t->id = strdup(ft->id)) || !(t->name = strdup(ft->name ?: ft->id)) ||
            !(t->project = strdup(ft->project)) || !(t->environment = strdup(ft->environment)) ||
            !(t->namespace = strdup(ft->namespace)) || !(t->pod = strdup(ft->pod)) ||
            (ft->image && !(t->image = strdup(ft->image))) || (ft->service && !(t->service = strdup(ft->service))) ||
            (ft->lagoon && !(t->lagoon = json_copy(ft->lagoon))))
                return -ENOMEM;
        /* A record needs a command; the real one stayed with the daemon that is gone. */
        if (ft->service && asprintf(&t->command, "# started by %s, adopted as pod %s/%s", strna(ft->holder),
                                    ft->namespace, ft->pod) < 0)
                return -ENOMEM;
        if (ft->remote_id ? !(t->remote_id = strdup(ft->remote_id)) : task_new_remote_id(&t->remote_id) < 0)
                return -ENOMEM;
        t->created_usec = now_usec(CLOCK_REALTIME);
        t->timeout_usec = m->config->default_timeout_usec;
        t->seq = m->last_seq + 1;
        r = task_transition(t, TASK_PENDING, NULL, t->created_usec);
        if (r >= 0)
                r = task_transition(t, TASK_RUNNING, NULL, ft->started_usec ?: t->created_usec);
        if (r < 0)
                return r;
        t->launch_step = TASK_LAUNCH_STARTED;
        /* Lagoon heard pending and running from the daemon that started it. */
        t->reported = TASK_RUNNING;
        r = manager_save_and_add(m, mt, "its adopted record");
        if (r < 0)
                return r;
        added = TAKE_PTR(mt);
        log_info("Task %s: adopting pod %s/%s, started by %s.", t->id, t->namespace, t->pod, strna(ft->holder));
        manager_adopt(m, added);
        manager_call_callbacks(m, t);
        manager_update_status(m);
        return 0;
}

int manager_task_pod_name(const Task *t, char **ret) {
        return task_pod_name(t, ret);
}

static int load_one(Task *t, void *userdata) {
        Manager *m = userdata;
        ManagedTask *mt;
        int r;

        if (manager_find(m, t->id)) {
                task_free(t);
                return 0;
        }
        mt = managed_task_new(t);
        if (!mt)
                return -ENOMEM;
        r = manager_add(m, mt);
        if (r < 0)
                managed_task_free(mt);
        return r;
}

/* A final task whose container dir is still there: the daemon was stopped or killed
 * while it was removed. Kept ones (output not drained) stay for the operator. */
static void manager_finish_cleanup(Manager *m, ManagedTask *mt) {
        _cleanup_free_ char *dir = NULL, *kept = NULL;

        if (store_container_dir(m->store, mt->task->id, &dir) < 0 || access(dir, F_OK) < 0)
                return;
        kept = path_join(dir, "kept");
        if (!kept || access(kept, F_OK) == 0)
                return;
        log_info("Task %s: finishing the removal of its container.", mt->task->id);
        manager_cleanup_start(m, task_launcher_class(mt->task), mt->task->id, dir);
}

static void on_corrupt(const char *file_name, int error, const char *message, void *userdata) {
        log_error_errno(error, "Corrupt task record %s (%s), moved to tasks/corrupt/.", file_name, message);
}

/* A container directory whose task has no record (it was corrupt and moved aside): its
 * container or pod would run on unseen, so it is stopped and removed. A kept one has
 * ended already. */
static void manager_sweep_orphans(Manager *m) {
        _cleanup_strv_free_ char **ids = NULL;
        int r;

        r = store_list_container_dirs(m->store, &ids);
        if (r < 0) {
                log_warning_errno(r, "Failed to list container directories: %m");
                return;
        }
        for (char **id = ids; id && *id; id++) {
                _cleanup_free_ char *dir = NULL, *kept = NULL, *ns = NULL, *name = NULL;

                if (manager_find(m, *id) || store_container_dir(m->store, *id, &dir) < 0 ||
                    !(kept = path_join(dir, "kept")) || access(kept, F_OK) == 0)
                        continue;
                r = kube_pod_dir_read(dir, &ns, &name);
                if (r == -ENOENT) {
                        log_error("Task %s has a container but no record (see tasks/corrupt/): stopping and removing "
                                  "it; its output stays in logs/%s.log.",
                                  *id, *id);
                        manager_cleanup_start(m, &launcher_runtime_class, *id, dir);
                } else if (r < 0)
                        log_warning_errno(r,
                                          "Task %s has a container directory but no record, and its pod marker "
                                          "cannot be read; leaving %s alone: %m",
                                          *id, dir);
                else {
                        log_error("Task %s has a pod but no record (see tasks/corrupt/): deleting pod %s/%s.", *id, ns,
                                  name);
                        r = node_delete_orphan_pod(m->node, ns, name, dir);
                        if (r < 0)
                                log_warning_errno(r,
                                                  "Task %s: cannot delete pod %s/%s now, trying again at the next "
                                                  "start: %m",
                                                  *id, ns, name);
                }
        }
}

int manager_start(Manager *m) {
        int r;

        r = node_new(m->event, m->config, &m->node);
        if (r < 0)
                return r;

        r = store_load_all(m->store, load_one, on_corrupt, m);
        if (r < 0)
                return log_error_errno(r, "Failed to load task records: %m");

        for (size_t i = 0; i < m->n_tasks; i++) {
                ManagedTask *mt = m->tasks[i];

                switch (mt->task->status) {
                case TASK_NEW:
                        (void) manager_transition(m, mt, TASK_PENDING, NULL);
                        break;
                case TASK_PENDING:
                        if (task_launching(mt->task))
                                manager_adopt(m, mt);
                        break;
                case TASK_RUNNING:
                        manager_adopt(m, mt);
                        break;
                default:
                        if (task_status_is_final(mt->task->status)) {
                                manager_finish_cleanup(m, mt);
                                manager_role_binding_release(m, mt); /* its delete had not been answered */
                        }
                        break;
                }
        }
        manager_sweep_orphans(m);
        log_info("Loaded %zu task records: %u running, %u queued.", m->n_tasks, m->n_running, manager_n_queued(m));
        manager_prune_finished(m);
        manager_update_status(m);
        manager_schedule_dispatch(m);
        return 0;
}

void manager_begin_shutdown(Manager *m) {
        m->shutting_down = true;
        manager_update_status(m);
}

bool manager_is_shutting_down(Manager *m) {
        return m->shutting_down;
}

int manager_set_reported(Manager *m, const char *id, TaskStatus reported) {
        ManagedTask *mt = manager_find(m, id);
        int r;

        if (!mt)
                return -ENOENT;
        if (mt->task->reported == reported)
                return 0;
        mt->task->reported = reported;
        r = manager_save(m, mt);
        if (r < 0)
                return r;
        /* Not pruned here: callers run inside transitions that still use the task. */
        if (task_status_is_final(reported))
                manager_schedule_dispatch(m);
        return 0;
}
