/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The manager owns all tasks: submission, the FIFO queue and concurrency limits,
 * launching, deadline and kill timers, cancellation, retention, adoption after a
 * restart, and the sd_notify STATUS line. Sources (the control API, later the
 * message bus) only call the functions below. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "macro.h"
#include "task.h"

typedef struct LogTail LogTail;

typedef struct Manager Manager;
typedef struct Node Node;

typedef struct TaskRequest {
        const char *id; /* optional: makes submission idempotent */
        const char *name;
        const char *service;     /* NULL → DefaultService= */
        const char *project;     /* NULL → DefaultProject= */
        const char *environment; /* NULL → DefaultEnvironment= */
        const char *namespace;   /* NULL → derived by Lagoon's rule (NamespacePrefix= included) */
        const char *command;     /* required */
        uint64_t timeout_usec;   /* 0 → DefaultTimeoutSec= */

        /* Advanced tasks: the runner image (an [Image REFERENCE] section) runs with its own
         * entrypoint; service and command must then be NULL. */
        const char *image;
        bool deployer_token;      /* mount DeployerTokenFile= at /var/run/secrets/lagoon/deployer/token and
                                     /var/run/secrets/kubernetes.io/serviceaccount/token */
        bool ssh_key;             /* mount SSHKeyFile= at /var/run/secrets/lagoon/ssh/ssh-privatekey */
        bool volume_mounts;       /* API pod: the namespace's "bulk" PVCs at /storage/<name> */
        bool rootless;            /* API pod: Lagoon's rootless securityContext */
        char *const *pod_labels;  /* "K=V" for the task's pod */
        const char *rb_namespace; /* active/standby: the destination namespace of the RoleBinding */
        const char *rb_source;    /* … and the namespace of the lagoon-deployer it binds */
        char *const *env;         /* extra "K=V" for the container */
        char *const *secrets;     /* extra values to mask in the task's output */
        const JsonValue *lagoon;  /* tasks from Lagoon: what reports need (kept in the record) */
} TaskRequest;

/* Where an advanced task may leave its result (base64 of JSON, at most 256 KiB), the
 * local-mode stand-in for the pod annotation lagoon.sh/taskData; its path is in the
 * task's LAGOON_TASK_DATA_FILE. Read and validated when the task ends. */
#define TASK_DATA_DIR "/run/lagoon-task"
#define TASK_DATA_FILE TASK_DATA_DIR "/taskData"

/* Called on every task change (status, new output) so followers can be woken. */
typedef void (*manager_task_cb_t)(Manager *m, const Task *t, void *userdata);

int manager_new(sd_event *e, Config *config, Manager **ret); /* takes the config */
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Loads the store, adopts running containers, re-queues pending tasks. */
int manager_start(Manager *m);
/* Up to 4 callbacks, called in the order they were added; removed by the same pair. */
int manager_add_task_callback(Manager *m, manager_task_cb_t cb, void *userdata);
void manager_remove_task_callback(Manager *m, manager_task_cb_t cb, void *userdata);

/* The Lagoon reporter records the last status it queued for a task (persisted, so a
 * restart knows what is still owed). A finished task is not removed by retention
 * before its final status was queued. */
int manager_set_reported(Manager *m, const char *id, TaskStatus reported);

/* Cluster mode: the task's claim, and MaxRunningPerEnvironment= across the daemons of a
 * target. Before a task is launched, acquire() is asked (limit: 0 when none is set): 1
 * go, 0 wait (the gate calls manager_gate_changed() when that may have changed);
 * release() when the task ended.
 * all_held() says whether a waiting task waits for the cluster's limit (wait reason).
 * Installed after manager_start(): the running tasks acquire their places again. */
typedef struct ManagerGate {
        int (*acquire)(const Task *t, unsigned limit, void *userdata);
        void (*release)(const Task *t, void *userdata);
        bool (*all_held)(const Task *t, void *userdata);
        void *userdata;
} ManagerGate;
void manager_set_gate(Manager *m, const ManagerGate *gate);
void manager_gate_changed(Manager *m);

/* Cluster mode: a task another daemon ran as an API pod and can no longer watch (its
 * node's claims expired and this daemon took the claim over). Recorded here as running
 * and adopted as after a restart: its pod watched, its log read from the start, its end
 * recorded and announced once, its pod pruned (KeepTaskPods=). The command is not
 * known (claims never carry it). -EEXIST when a task of that id is known here. */
typedef struct ManagerForeignTask {
        const char *id;
        const char *name;
        const char *project, *environment, *namespace;
        const char *service; /* standard task … */
        const char *image;   /* … or advanced (taskData is read from its pod) */
        const char *pod;     /* in namespace */
        const char *remote_id;
        const char *holder; /* the daemon that started it, for the record's command line */
        uint64_t started_usec;
        const JsonValue *lagoon; /* what reports need */
} ManagerForeignTask;
int manager_adopt_foreign(Manager *m, const ManagerForeignTask *ft);

/* The name the task's API pod has (or would have). */
int manager_task_pod_name(const Task *t, char **ret);

/* Replaces the configuration (SIGHUP); running tasks keep what they started with. */
int manager_set_config(Manager *m, Config *config);
const Config *manager_get_config(Manager *m);
/* Node mode: the Kubernetes side (NULL in local mode). */
Node *manager_get_node(Manager *m);

/* Submission. Returns 0 (new task, *ret_existing = false) or 0 with *ret_existing =
 * true when a task with req->id exists with the same command/service (nothing
 * started). Errors, with a message in *ret_error:
 *   -EINVAL  bad request (missing command, invalid id, …)
 *   -ENOENT  unknown service
 *   -EEXIST  the id exists with a different command or service
 *   -EBUSY   queue full
 *   -ESHUTDOWN  the daemon is stopping */
int manager_submit(Manager *m, const TaskRequest *req, const Task **ret, bool *ret_existing, char **ret_error);

const Task *manager_get_task(Manager *m, const char *id);
/* All tasks ordered by submission; the array is the caller's to free, the tasks not. */
int manager_list_tasks(Manager *m, const Task ***ret, size_t *ret_n);
unsigned manager_queue_position(Manager *m, const Task *t); /* 1-based, 0 when not queued */

/* -ENOENT unknown, -EALREADY already finished. A queued task is cancelled at once; a
 * running one gets SIGTERM, then SIGKILL after KillGraceSec=, and ends "cancelled". */
int manager_cancel(Manager *m, const char *id);
/* As manager_cancel(), with grace_usec instead of KillGraceSec= between SIGTERM and
 * SIGKILL (0: SIGKILL at once); a task already stopping keeps the earlier of the two. */
int manager_cancel_with_grace(Manager *m, const char *id, uint64_t grace_usec);
/* When a stopping task gets SIGKILL (CLOCK_REALTIME); 0 when it is not stopping. */
uint64_t manager_kill_at(Manager *m, const Task *t);
/* Why a queued task has not been launched yet, for an operator ("MaxRunning=4 reached");
 * *ret NULL when it is not queued. -ENOMEM. */
int manager_wait_reason(Manager *m, const Task *t, char **ret);

/* Removes a finished task's record and log now, as KeepFinished= would later. -ENOENT
 * unknown, -EBUSY not finished yet, -EAGAIN its final status is not yet queued for
 * Lagoon. The task pointer is invalid afterwards. */
int manager_remove_task(Manager *m, const char *id);

/* Path of the task's log file (may not exist yet). */
int manager_task_log_path(Manager *m, const char *id, char **ret);

/* The follower of the task's output while it runs, else NULL: log followers ask it for
 * the lines not complete yet (logtail_partial()). */
LogTail *manager_task_logtail(Manager *m, const char *id);

/* What the daemon did since it started, for GET /metrics. */
#define MANAGER_LAUNCH_BUCKETS 11
extern const double manager_launch_bucket_seconds[MANAGER_LAUNCH_BUCKETS]; /* upper bounds */
typedef struct ManagerStats {
        uint64_t launches;                               /* launches begun */
        uint64_t launch_failures;                        /* ended launch-error, service-not-found, image-pull */
        uint64_t launch_buckets[MANAGER_LAUNCH_BUCKETS]; /* launches started within each bound (not cumulative) */
        uint64_t launch_count;                           /* launches that started: the histogram's count */
        uint64_t launch_sum_usec;                        /* and its sum */
        uint64_t finished[_TASK_STATUS_MAX];             /* tasks that reached each final status */
        uint64_t adopted;                                /* running tasks adopted at start */
        uint64_t start_usec;                             /* CLOCK_REALTIME of manager_new() */
        uint64_t reloads, reload_failures;
        bool last_reload_ok;       /* true also before any reload */
        uint64_t last_reload_usec; /* CLOCK_REALTIME of the last reload, 0 = none yet */
        char *last_reload_error;   /* why the last reload was refused */
        char *last_reload_changes; /* what the last successful reload changed, "" = nothing */
        uint64_t store_failures;   /* task record writes that failed (ENOSPC, EIO, …) */
        int store_error;           /* < 0: the last write failed and not all are written again yet */
        bool low_space;            /* the state directory had less than MinFreeSpace= free at a launch */
        uint64_t state_free_bytes; /* as seen at that look */
} ManagerStats;
const ManagerStats *manager_get_stats(Manager *m);
/* main.c tells the outcome of a SIGHUP: error < 0 with a message, or the changes made. */
void manager_note_reload(Manager *m, int error, const char *text);

unsigned manager_n_running(Manager *m);
unsigned manager_n_queued(Manager *m);
/* Stop accepting tasks; running containers are left to conmon. */
void manager_begin_shutdown(Manager *m);
bool manager_is_shutting_down(Manager *m);
