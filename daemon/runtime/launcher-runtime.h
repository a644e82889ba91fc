/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The runtime launcher: runs a task as a clone of a service's OCI bundle under conmon
 * with runc/crun. Per task, <container_dir> (under the state dir) holds config.json,
 * rootfs/ (overlay: lower = service rootfs, upper/ and work/ = the task's),
 * ctr.log (conmon's CRI log), exit/ (conmon's exit file), conmon.pid.
 * conmon outlives the daemon; a restarted daemon adopts the container. */

#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "bundle.h"
#include "config.h"
#include "launcher.h"
#include "macro.h"
#include "task.h"

typedef struct RuntimeContainer RuntimeContainer;

/* exit_status >= 0: the container's exit status (128+N when killed by signal N).
 * exit_status < 0: negative errno; with error set the launch failed (the runtime's
 * reason, e.g. its stderr), without it the container was lost (conmon gone without an
 * exit file). Called once, from the event loop. */
typedef void (*runtime_exit_cb_t)(RuntimeContainer *c, int exit_status, const char *error, void *userdata);
/* The launch reached a step (TASK_LAUNCH_CREATED, TASK_LAUNCH_STARTED): called before
 * the launcher relies on it, so the caller records it first. From the event loop. */
typedef void (*runtime_step_cb_t)(RuntimeContainer *c, TaskLaunchStep step, void *userdata);

typedef struct RuntimeSpec {
        const Config *config;
        const ServiceConfig *service; /* may be NULL for a node clone (then: seccomp auto) */
        const Task *task;
        char *const *env;          /* extra "K=V" for the task (TASK_*, LAGOON_*) */
        const char *container_dir; /* created by the launcher */
        const BundleMount *mounts; /* extra bind mounts (secrets) */
        size_t n_mounts;
        const char *task_data_dir; /* when set: <container_dir>/taskdata (mode 0777) is bind-mounted
                                    * writable there, for an advanced task's taskData */

        /* Node clone of a Kubernetes service container (runtime_state_find() gives these):
         * the service's bundle and live rootfs instead of service->bundle, and the pod's
         * network namespace to join. Local mode leaves them NULL. */
        const char *service_bundle_dir; /* holds the service's config.json */
        const char *service_rootfs;     /* absolute; NULL: the bundle's root.path */
        const char *netns_path;         /* e.g. "/proc/<service pid>/ns/net" */
        int netns_fd;                   /* > 2: that namespace, held open by the caller; the launcher joins it
                                         * through a bind mount at <container_dir>/netns (0: use netns_path) */
} RuntimeSpec;

/* Container id for a task: "lagoon-task-<task id>". */
int runtime_container_id(const char *task_id, char **ret);

/* Prepares the bundle (process.args from task->command, or the image's own when the
 * task has no command: an advanced task; bundle_derive() does the rest, also for a
 * node clone) and spawns conmon (which runs "<runtime> create"); the rest of the launch
 * runs on the event loop: conmon's report, "<runtime> start", each step announced to
 * the step callback, a failure to the exit callback with its reason. The caller
 * recorded the launch as TASK_LAUNCH_PREPARED before. -errno and *ret_error (a
 * human-readable reason) when the preparation fails, with everything it made cleaned
 * up (no callback then). */
int runtime_container_start(sd_event *e,
                            const RuntimeSpec *spec,
                            runtime_exit_cb_t cb,
                            void *userdata,
                            RuntimeContainer **ret,
                            char **ret_error);

/* Re-attaches to a container launched by an earlier daemon, resuming its launch from
 * task->launch_step: waits for the report of a conmon still creating, starts a created
 * container. If it already exited the callback runs soon from the event loop with the
 * real exit status. -EAGAIN when nothing of the launch ever ran (conmon never spawned,
 * or the container never started and has no monitor): remove the container dir and
 * launch again; -ENOENT when container_dir holds no container. */
int runtime_container_adopt(sd_event *e,
                            const Config *config,
                            const Task *task,
                            const char *container_dir,
                            runtime_exit_cb_t cb,
                            void *userdata,
                            RuntimeContainer **ret);

void runtime_container_set_step_callback(RuntimeContainer *c, runtime_step_cb_t cb);

/* "<runtime> kill <id> SIG" as a watched child: 0 once it runs (its failure is logged), -ESRCH
 * when the container ended. */
int runtime_container_kill(RuntimeContainer *c, int sig);
const char *runtime_container_log_path(RuntimeContainer *c);

/* Stops watching; never kills. */
RuntimeContainer *runtime_container_free(RuntimeContainer *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(RuntimeContainer *, runtime_container_free);

/* After the task ended: "<runtime> delete --force", unmount rootfs, remove
 * container_dir. Idempotent; fine when parts are already gone. */
int runtime_container_remove(const Config *config, const char *task_id, const char *container_dir);
/* The same off the event loop: a forked helper (its own fds closed, so it holds neither
 * the API socket nor the state directory's lock) runs runtime_container_remove() and
 * exits 0 when all went well. Returns its pidfd (our child: watch it with
 * sd_event_add_child_pidfd()) and its PID. */
int runtime_container_remove_fork(const Config *config,
                                  const char *task_id,
                                  const char *container_dir,
                                  pid_t *ret_pid,
                                  int *ret_pidfd);

/* The launcher interface (launcher.h) over the functions above, for the manager:
 * runtime_container_start() reporting to cb; launcher_runtime_class adopts with
 * runtime_container_adopt() and removes with runtime_container_remove{,_fork}(). The ops
 * stop with SIGTERM (the grace is the manager's kill timer) and kill with SIGKILL. */
int launcher_runtime_start(sd_event *e,
                           const RuntimeSpec *spec,
                           const LauncherCallbacks *cb,
                           Launcher **ret,
                           char **ret_error);

/* Internal, exported for tests and fuzzing: parsers of what conmon and the runtime say.
 * The readable reason in a runtime's error output (runc's logrus msg="…" values, other
 * lines as they are), NULL when there is none. */
char *runtime_error_text(const char *output);
/* conmon's report on the sync pipe: 0 and the container's pid for {"data": PID}; -EIO
 * and the runtime's reason (may be NULL) for {"data": -1, "message": "…"}; -EBADMSG for
 * anything else. */
int runtime_parse_sync_message(const char *data, size_t size, int64_t *ret_pid, char **ret_error_text);
