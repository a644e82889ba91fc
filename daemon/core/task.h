/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The task record and its state machine (pure: no I/O, no logging above debug).
 *
 *   new → pending → running → complete | failed | cancelled
 *   new/pending → failed | cancelled (never started)
 *
 * A task's id is its identity (Lagoon's task id, or one the client chose, or one the
 * daemon generated). Its JSON form is what the store persists and the API returns. */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"
#include "macro.h"

typedef enum TaskStatus {
        TASK_NEW,
        TASK_PENDING,
        TASK_RUNNING,
        TASK_COMPLETE,
        TASK_FAILED,
        TASK_CANCELLED,
        _TASK_STATUS_MAX,
        _TASK_STATUS_INVALID = -EINVAL,
} TaskStatus;

#define TASK_ID_MAX 128
/* Per-field limits at submission. The command is one argument of sh -c: the kernel takes
 * at most MAX_ARG_STRLEN (128 KiB with its NUL) per argument, less room kept here; an
 * environment entry is one string of the same kind. */
#define TASK_COMMAND_MAX (127U * 1024U)
#define TASK_ENV_ENTRY_MAX TASK_COMMAND_MAX
#define TASK_NAME_MAX 1024U
#define TASK_LABEL_MAX 255U /* service, project, environment, as in the configuration */
#define TASK_IMAGE_MAX 1024U

/* How far a launch got, recorded before the launcher relies on the step's effect, so a
 * restarted daemon resumes from it (README, "Launch"). The task stays pending until the
 * runtime started its container: "running" means its process exists. */
typedef enum TaskLaunchStep {
        TASK_LAUNCH_NONE,     /* not launched, or a record from before steps were recorded */
        TASK_LAUNCH_PREPARED, /* slot taken; the container dir and conmon may exist */
        TASK_LAUNCH_CREATED,  /* conmon reported the container created; start may have run */
        TASK_LAUNCH_STARTED,  /* the runtime started it: it runs (or ran) */
        _TASK_LAUNCH_STEP_MAX,
        _TASK_LAUNCH_STEP_INVALID = -EINVAL,
} TaskLaunchStep;

const char *task_launch_step_to_string(TaskLaunchStep s);
TaskLaunchStep task_launch_step_from_string(const char *s);

typedef struct Task {
        char *id;   /* [A-Za-z0-9_.-]{1,128}, not starting with '.' */
        char *name; /* Lagoon task name, e.g. "lagoon-task-abc123"; defaults to id */
        char *project;
        char *environment;
        char *namespace; /* <project>-<environment> by Lagoon's rules */
        char *service;
        char *command;        /* the shell command */
        char *command_digest; /* record only: SHA-256 (hex) of the command before its secrets were
                                 masked, once the task ended (a resubmission is compared with it) */

        TaskStatus status;
        char *reason;  /* for failed: "exit-code N", "timeout", "service-not-found", "launch-error: …" */
        int exit_code; /* -1 until known */
        bool cancel_requested;
        bool timed_out;

        uint64_t seq;           /* submission order, FIFO */
        uint64_t created_usec;  /* CLOCK_REALTIME */
        uint64_t started_usec;  /* 0 = not yet */
        uint64_t finished_usec; /* 0 = not yet */
        uint64_t timeout_usec;  /* from start; USEC_INFINITY = none */
        uint64_t kill_usec;     /* CLOCK_REALTIME when SIGTERM was sent, 0 = not yet */
        uint64_t kill_at_usec;  /* when SIGKILL follows, if a cancel gave its own grace; 0 = KillGraceSec= */

        TaskLaunchStep launch_step; /* while launching or running (record only) */
        char *container_id;         /* runtime container id while launched */
        char *pod;                  /* API-pod tasks: the pod's name (in namespace) */

        /* Advanced tasks: a runner image run with its own entrypoint instead of
         * service + command (both NULL then). */
        char *image;
        bool deployer_token; /* mount DeployerTokenFile= */
        bool ssh_key;        /* mount SSHKeyFile= */
        bool volume_mounts;  /* API pod: mount the namespace's "bulk" PVCs at /storage/<name> */
        bool rootless;       /* API pod: Lagoon's rootless securityContext */
        char **pod_labels;   /* "K=V" for the task's pod (organization.lagoon.sh/id, …); record only */
        char **env;          /* extra "K=V" for the container (Lagoon's variables); record only */
        char **secrets;      /* extra values to mask (JSON_PAYLOAD, secret variables); record only */
        /* Active/standby (API pod): RoleBinding lagoon-deployer-activestandby in rb_namespace
         * for rb_source's lagoon-deployer; rb_created from before its create is sent until its
         * delete answered, so a restart deletes it too. */
        char *rb_namespace;
        char *rb_source;
        bool rb_created;

        /* Tasks from Lagoon's message bus. */
        JsonValue *lagoon;   /* LagoonMessage.info (what reports need); NULL for control-API tasks */
        char *remote_id;     /* UUID reported as remoteId */
        char *task_data;     /* validated taskData, reported as advancedData */
        TaskStatus reported; /* last status queued for Lagoon; TASK_NEW = none yet */
} Task;

Task *task_new(void);
Task *task_free(Task *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Task *, task_free);

const char *task_status_to_string(TaskStatus s); /* "new", "pending", … */
TaskStatus task_status_from_string(const char *s);
static inline bool task_status_is_final(TaskStatus s) {
        return s == TASK_COMPLETE || s == TASK_FAILED || s == TASK_CANCELLED;
}

bool task_id_is_valid(const char *id);
/* Lagoon's namespace rule (remote-controller's GenerateNamespaceName, Lagoon commons'
 * truncateEnvironmentName): the environment name lower-cased with non-[a-z0-9-] → '-', cut
 * to 53 - len(project) characters plus '-' and 4 hex digits of its sha1 when longer than
 * 58 - len(project); put into pattern (NULL: "${project}-${environment}"), made safe,
 * prefixed with "<prefix>-" when prefix is set; over 63 characters, cut to 58 plus '-' and
 * 4 hex digits of the sha1 of the whole name. */
int task_make_namespace(const char *project,
                        const char *environment,
                        const char *pattern,
                        const char *prefix,
                        char **ret);

#define IN_SET_STATUS(x, ...) \
        ({ \
                const TaskStatus _set_[] = {__VA_ARGS__}; \
                bool _found_ = false; \
                for (size_t _i_ = 0; _i_ < ELEMENTSOF(_set_); _i_++) \
                        if (_set_[_i_] == (x)) \
                                _found_ = true; \
                _found_; \
        })

/* Whether the state machine allows from → to. */
bool task_transition_allowed(TaskStatus from, TaskStatus to);
/* Moves t to status `to` with an optional reason; sets started/finished timestamps
 * (now_usec, CLOCK_REALTIME). -EINVAL if not allowed (t unchanged). */
int task_transition(Task *t, TaskStatus to, const char *reason, uint64_t now);
/* A running task whose launch never got as far as running anything goes back to the
 * queue (a restart found nothing of its container): pending, launch step and start time
 * cleared. -EINVAL when not running. */
int task_requeue(Task *t);
/* Pending, with a launch in flight (a slot taken, launchStep recorded). */
bool task_launching(const Task *t);
/* Pending, waiting in the queue for a slot (no launch in flight). */
bool task_queued(const Task *t);

/* JSON form. queue_position > 0 is included as "queuePosition" (pending tasks). */
int task_to_json(const Task *t, unsigned queue_position, JsonValue **ret);
/* The record the store persists: the API form plus internal members (seq, exact
 * timestamps, cancel/timeout flags, container id). */
int task_to_record(const Task *t, JsonValue **ret);
/* Inverse, for the store: -EBADMSG when a required field is missing or of the wrong type. */
int task_from_json(const JsonValue *v, Task **ret);

/* A random version 4 UUID: the remoteId Lagoon is told for a task. */
int task_new_remote_id(char **ret);

/* "2026-11-28T10:00:00.123456Z"-style UTC timestamp for usec (CLOCK_REALTIME). */
int format_timestamp_rfc3339(uint64_t usec, char **ret);
int parse_timestamp_rfc3339(const char *s, uint64_t *ret_usec);
