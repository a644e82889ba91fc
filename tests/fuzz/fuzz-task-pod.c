/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Fuzzes the readers of Kubernetes objects in task-pod.c: any JSON as a Deployment (the
 * standard task pod is built from it) and as a Pod (its state read back) must give a
 * result or a clean error, never a crash. */

#include <stdint.h>

#include "task-pod.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const env[] = {"TASK_DATA_ID=1", "SERVICE_NAME=cli", NULL};
static const char *const env_remove[] = {"CRONJOBS", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_freep) JsonValue *v = NULL, *pod = NULL;
        _cleanup_free_ char *error = NULL, *text = NULL;
        TaskPodState s = {};
        TaskPodParams p = {
                .name = "lagoon-task-x",
                .namespace = "ns",
                .task_id = "1",
                .node_name = "node",
                .command = "true",
                .env = (char *const *) env,
                .env_remove = (char *const *) env_remove,
        };

        if (size > 1024 * 1024)
                return 0;
        if (json_parse((const char *) data, size, JSON_DEPTH_MAX_DEFAULT, &v, NULL) < 0)
                return 0;

        if (task_pod_standard(v, &p, &pod, &error) >= 0) {
                if (json_format(pod, false, &text, NULL) < 0)
                        __builtin_trap();
        } else if (!error)
                __builtin_trap();
        if (task_pod_state(v, NULL, &s) >= 0) {
                if (s.terminated && (s.exit_code < 0 || s.exit_code > 255))
                        __builtin_trap();
                task_pod_state_done(&s);
        }
        return 0;
}
