/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The API-pod launcher: runs a task as a pod created through the API server, for
 * advanced tasks and for standard tasks whose service has no container on this node.
 * It plays conmon's part for such a task: it follows the pod's log from the first
 * moment and writes every line, in CRI log format, to <container_dir>/ctr.log, which the
 * daemon tails exactly like a local container's log (journald, task log, redaction,
 * cursor); it watches the pod and reports the end once, with the exit code from the
 * container status, or a failure reason (image pull, crash loop, eviction, external
 * deletion), and the lagoon.sh/taskData annotation. After a restart it finds the pod
 * again by name and resumes the log with sinceTime, skipping lines ctr.log already has. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "json.h"
#include "kube.h"
#include "launcher.h"
#include "task.h"
#include "macro.h"

typedef struct KubePod KubePod;

typedef struct KubePodResult {
        int exit_code;         /* >= 0 when the container ended; -1 when it never ran or was lost */
        const char *failure;   /* task failure reason when the pod could not run or was lost, else NULL */
        const char *task_data; /* the lagoon.sh/taskData annotation, unvalidated; NULL when absent */
} KubePodResult;

/* Called once from the event loop when the task ended (or cannot run). */
typedef void (*kube_pod_exit_cb_t)(KubePod *p, const KubePodResult *result, void *userdata);
/* The launch reached a step: TASK_LAUNCH_STARTED once the pod exists (the API server
 * created it, or it was found with this task's id). Called before the pod is relied on,
 * so the caller records it first. From the event loop. */
typedef void (*kube_pod_step_cb_t)(KubePod *p, TaskLaunchStep step, void *userdata);

typedef struct KubePodSpec {
        const char *namespace;
        const char *name;          /* pod name */
        const char *container;     /* the task's container in it */
        const char *container_dir; /* created by the launcher; ctr.log goes there */
} KubePodSpec;

/* Creates the pod (pod: the object from task-pod.c) and starts watching it. The pod object
 * is kept in <container_dir>/pod.json before the create is sent, for kube_pod_resume().
 * A pod of the same name that exists already is taken over when it carries the same task
 * id annotation (a restart between create and record), else the task fails. The caller
 * recorded the launch as TASK_LAUNCH_PREPARED before. -errno and *ret_error on failure. */
int kube_pod_start(sd_event *e,
                   KubeClient *k,
                   const KubePodSpec *spec,
                   const JsonValue *pod,
                   kube_pod_exit_cb_t cb,
                   void *userdata,
                   KubePod **ret,
                   char **ret_error);

/* The pod a container directory belongs to, from the marker kube_pod_start() leaves
 * there (so a task whose record is lost does not leave its pod running): -ENOENT when
 * the directory is not a pod's, -EBADMSG when the marker is not a namespace and name. */
int kube_pod_dir_read(const char *container_dir, char **ret_namespace, char **ret_name);

/* A launch an earlier daemon recorded as prepared but whose create it did not see
 * answered: sends the pod of <container_dir>/pod.json again; the API server either
 * creates it or answers 409 for the pod the earlier create made, which is then taken
 * over (task id annotation), so the task gets one pod. -EAGAIN when there is no
 * pod.json (the create was never sent: launch it again). */
int kube_pod_resume(sd_event *e,
                    KubeClient *k,
                    const KubePodSpec *spec,
                    const char *task_id,
                    kube_pod_exit_cb_t cb,
                    void *userdata,
                    KubePod **ret);

/* Resumes a pod started by an earlier daemon: the log continues after the last line in
 * ctr.log. A pod that is gone ends the task as failed ("pod-lost: …"). */
int kube_pod_adopt(sd_event *e,
                   KubeClient *k,
                   const KubePodSpec *spec,
                   kube_pod_exit_cb_t cb,
                   void *userdata,
                   KubePod **ret);

/* Cancel and deadline: deletes the pod (grace period grace_sec); the exit callback follows. */
int kube_pod_stop(KubePod *p, unsigned grace_sec);
void kube_pod_set_step_callback(KubePod *p, kube_pod_step_cb_t cb);
const char *kube_pod_log_path(KubePod *p);

/* Stops watching; never deletes the pod. */
KubePod *kube_pod_free(KubePod *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubePod *, kube_pod_free);

/* The launcher interface (launcher.h) over the functions above, for the manager:
 * kube_pod_start() reporting to cb (exit status -EIO when the container never ended);
 * launcher_pod_class adopts with kube_pod_adopt() (the pod task->pod in task->namespace),
 * or kube_pod_resume() when the record says prepared, and removes the container
 * directory. The ops stop with a DELETE of the pod with the
 * grace period, and kill with a DELETE without one. */
int launcher_pod_start(sd_event *e,
                       KubeClient *k,
                       const KubePodSpec *spec,
                       const JsonValue *pod,
                       const LauncherCallbacks *cb,
                       Launcher **ret,
                       char **ret_error);
