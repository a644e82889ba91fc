/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Kubernetes objects of the API-pod path, as pure JSON work: the pod a task runs in
 * when it cannot be cloned on this node (DESIGN.md "The API-server launcher", modelled on
 * remote-controller), and what a pod's status says about the task. No I/O, no logging. */

#include <stdbool.h>
#include <stdint.h>

#include "json.h"

/* Labels and annotations every task pod carries. remote-controller's two labels, so
 * Lagoon's tooling recognises the pod, plus ours, so a restarted daemon finds its pods
 * again and leaves everybody else's alone. */
#define TASK_POD_LABEL_JOB_TYPE "lagoon.sh/jobType"
#define TASK_POD_LABEL_TASK_NAME "lagoon.sh/taskName"
#define TASK_POD_LABEL_MANAGED_BY "app.kubernetes.io/managed-by"
#define TASK_POD_MANAGED_BY "lagoon-taskd"
#define TASK_POD_LABEL_NODE "taskd.lagoon.sh/node"
#define TASK_POD_ANNOTATION_TASK_ID "taskd.lagoon.sh/task-id"
#define TASK_POD_ANNOTATION_TASK_DATA "lagoon.sh/taskData"
#define TASK_POD_CONTAINER_ADVANCED "lagoon-task"

typedef struct TaskPodParams {
        const char *name; /* pod name (the task's name, e.g. lagoon-task-abc123) */
        const char *namespace;
        const char *task_id;   /* recorded in an annotation */
        const char *node_name; /* the daemon's node: a label value */

        /* Standard task: the service Deployment's template is copied and its containers run
         * "/sbin/tini -- /lagoon/entrypoints.sh /bin/sh -c COMMAND". */
        const char *command;

        /* Advanced task: a single container "lagoon-task" running the runner image. */
        const char *image;
        const char *image_pull_policy;     /* NULL → "Always", like remote-controller */
        bool ssh_key;                      /* the lagoon-sshkey secret at /var/run/secrets/lagoon/ssh */
        bool deployer_token;               /* serviceAccountName lagoon-deployer (token projected) */
        const char *deployer_token_secret; /* a legacy lagoon-deployer-token-* secret, mounted at
                                              /var/run/secrets/lagoon/deployer; NULL when none */
        char *const *env_from_secrets;     /* envFrom secretRef names (lagoon-platform-env, lagoon-env) */
        char *const *env_from_config_maps; /* envFrom configMapRef names (the lagoon-env fallback) */
        char *const *bulk_volumes;         /* PVC names, mounted read-write at /storage/<name> */
        char *const *dynamic_secrets;      /* secret names, mounted read-only (0444) at
                                              /var/run/secrets/lagoon/dynamic/<name> */
        bool rootless;                     /* pod securityContext runAsUser 10000, runAsGroup 0,
                                              fsGroup 10001 (Lagoon's rootless workloads) */
        char *const *labels;               /* "K=V" added to the pod's labels (both kinds of pod),
                                              e.g. organization.lagoon.sh/id */

        /* "K=V": appended to the containers' env (standard: after the Deployment's, a key
         * already there is replaced; advanced: the whole env, in order). */
        char *const *env;
        char *const *env_remove; /* keys dropped from the Deployment's env, e.g. CRONJOBS */
} TaskPodParams;

/* The pod for a standard task: apiVersion/kind, metadata {name, namespace, labels,
 * annotations} (none of the template's labels: the pod must not be mistaken for the
 * service by its Service or by discovery), spec = a copy of the Deployment's
 * spec.template.spec with restartPolicy Never and, in every container, the command set,
 * env edited as above and the probes removed (a task is not a server). -EINVAL with a
 * reason ("deployment: spec.template.spec.containers is missing") when the Deployment is
 * not usable. */
int task_pod_standard(const JsonValue *deployment, const TaskPodParams *p, JsonValue **ret, char **ret_error);

/* The pod for an advanced task (see TaskPodParams), enableServiceLinks false. */
int task_pod_advanced(const TaskPodParams *p, JsonValue **ret, char **ret_error);

typedef enum TaskPodPhase {
        TASK_POD_PENDING,
        TASK_POD_RUNNING,
        TASK_POD_SUCCEEDED,
        TASK_POD_FAILED,
        TASK_POD_UNKNOWN,
} TaskPodPhase;

typedef struct TaskPodState {
        TaskPodPhase phase;
        bool started;    /* the task's container is or was running: its log can be read */
        bool terminated; /* the container ended: exit_code is valid */
        int exit_code;
        bool deleting;   /* metadata.deletionTimestamp is set */
        char *failure;   /* why the task cannot run or ended abnormally, a task reason:
                            "image-pull: ErrImagePull: …", "crash-loop: …", "evicted: …",
                            "pod-failed: …"; NULL when none */
        char *task_data; /* the lagoon.sh/taskData annotation as it is, NULL when absent */
        char *resource_version;
} TaskPodState;

void task_pod_state_done(TaskPodState *s);

/* Reads a Pod object: phase, the state of `container` (NULL: the first container), the
 * reasons above, the annotation. -EBADMSG when it is not a Pod. */
int task_pod_state(const JsonValue *pod, const char *container, TaskPodState *ret);
