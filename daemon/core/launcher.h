/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The launcher interface: what the manager does with a task's launch, whichever launcher
 * runs it (launcher-runtime.c: a local container under conmon; launcher-kube.c: an API
 * pod), so the manager holds one handle per task and knows neither launcher's types.
 *
 * A launcher is made by its kind's constructors (launcher_runtime_start() and
 * launcher_pod_start() with their kind's spec; adopt() of the kind after a restart),
 * tells the manager each step of its launch and its end through LauncherCallbacks,
 * and is driven through its ops. What is left on disk once a task ended is removed
 * through the kind (LauncherClass), which needs no live launcher: a restart finds only
 * the record and the directory. Header only: the dispatch is one indirection. */

#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "task.h"

typedef struct Launcher Launcher;
typedef struct KubeClient KubeClient; /* kube.h; not needed by the runtime launcher */

/* The end of a task's launch, once. */
typedef struct LauncherResult {
        int status;               /* >= 0: the exit status (128+N when killed by signal N);
                                   * < 0: -errno, it never ran or was lost */
        const char *launch_error; /* the launch failed: why (human-readable, the runtime's words);
                                   * the task fails "launch-error: <this>" */
        const char *failure;      /* else a task failure reason as it is ("pod-deleted: …", "image-pull: …") */
        const char *task_data;    /* an API pod's lagoon.sh/taskData annotation, unvalidated, or NULL */
} LauncherResult;

typedef struct LauncherCallbacks {
        /* The launch reached a step (TASK_LAUNCH_CREATED, TASK_LAUNCH_STARTED): called before
         * the launcher relies on it, so the manager records it first. From the event loop. */
        void (*step)(Launcher *l, TaskLaunchStep step, void *userdata);
        /* Once, from the event loop. The launcher may be freed from here. */
        void (*exit)(Launcher *l, const LauncherResult *result, void *userdata);
        void *userdata;
} LauncherCallbacks;

/* What a launcher may use after a restart (adopt). */
typedef struct LauncherContext {
        sd_event *event;
        const Config *config;
        KubeClient *kube; /* the API server's client, NULL without node mode */
} LauncherContext;

/* A kind of launcher: what needs no live launcher. */
typedef struct LauncherClass {
        const char *kind; /* "container", "pod": for messages */
        /* Re-attaches to the launch of task (launch_step, pod, …) made by an earlier daemon
         * in container_dir, resuming it from its recorded step. -EAGAIN when nothing of it
         * ever ran (remove() what is left and queue the task again); -ENOENT when
         * container_dir holds nothing of it; -EOPNOTSUPP when the kind cannot run here now. */
        int (*adopt)(const LauncherContext *ctx,
                     const Task *task,
                     const char *container_dir,
                     const LauncherCallbacks *cb,
                     Launcher **ret);
        /* After the task ended: what its launch left (the container, mounts, container_dir),
         * removed. Idempotent; fine when parts are gone. Synchronous. */
        int (*remove)(const Config *config, const char *task_id, const char *container_dir);
        /* The same off the event loop, when it may take long: a forked helper that exits 0
         * when all went well; its pidfd (our child) and PID. NULL: remove() is quick. */
        int (*remove_fork)(const Config *config,
                           const char *task_id,
                           const char *container_dir,
                           pid_t *ret_pid,
                           int *ret_pidfd);
} LauncherClass;

extern const LauncherClass launcher_runtime_class; /* launcher-runtime.c */
extern const LauncherClass launcher_pod_class;     /* launcher-kube.c */

typedef struct LauncherOps {
        const LauncherClass *class;
        const char *kill_what; /* what kill() does, for the manager's notice */
        /* Asks the task to end: SIGTERM to a container (the manager's kill timer sends
         * kill() after the grace), DELETE of a pod with grace_usec as its grace period. The
         * exit callback follows. */
        int (*stop)(Launcher *l, uint64_t grace_usec);
        /* Ends it now: SIGKILL, or DELETE with no grace. -ESRCH when it ended already. */
        int (*kill)(Launcher *l);
        /* The CRI log file the manager tails (conmon's, or the one the pod's log is copied to). */
        const char *(*log_path)(Launcher *l);
        /* Stops watching; never kills nor deletes. */
        void (*free)(Launcher *l);
} LauncherOps;

/* Implementations embed this first in their own struct. */
struct Launcher {
        const LauncherOps *ops;
        LauncherCallbacks cb;
};

static inline const LauncherClass *launcher_class(const Launcher *l) {
        return l->ops->class;
}

static inline int launcher_stop(Launcher *l, uint64_t grace_usec) {
        return l->ops->stop(l, grace_usec);
}

static inline int launcher_kill(Launcher *l) {
        return l->ops->kill(l);
}

static inline const char *launcher_log_path(Launcher *l) {
        return l->ops->log_path(l);
}

static inline Launcher *launcher_free(Launcher *l) {
        if (l)
                l->ops->free(l);
        return NULL;
}
