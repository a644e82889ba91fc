/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Fuzzes discovery's readers of Kubernetes pods: any bytes as a PodList (kubelet /pods or
 * the API server's list) and, when they are JSON, as a single Pod of a watch event. Each
 * gives pods with the fields a caller relies on, or an error with a message. */

#include <stdint.h>

#include "discovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_pods(const ServicePod *pods, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (!pods[i].name || !pods[i].container_name || !pods[i].container_id || !pods[i].ready)
                        __builtin_trap();
                /* Sorted: oldest first among ready pods. */
                if (i > 0 && pods[i - 1].start_time > pods[i].start_time)
                        __builtin_trap();
        }
        (void) discovery_pick_local(pods, n, "node-1");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_freep) JsonValue *v = NULL;
        _cleanup_free_ char *error = NULL;
        ServicePod *pods = NULL;
        size_t n = 0;
        int r;

        if (size > 1024 * 1024)
                return 0;

        for (unsigned pass = 0; pass < 2; pass++) {
                r = discovery_parse_pod_list((const char *) data, size, pass == 0 ? "ns" : NULL, "cli", &pods, &n,
                                             &error);
                if (r >= 0) {
                        check_pods(pods, n);
                        pods = service_pods_free(pods, n);
                } else if (r != -ENOMEM && (r != -EBADMSG || !error))
                        __builtin_trap();
                error = mfree(error);
        }

        if (json_parse((const char *) data, size, JSON_DEPTH_MAX_DEFAULT, &v, NULL) >= 0) {
                ServicePod p = {};
                const JsonValue *object = json_get(v, "object");

                r = discovery_parse_pod(object ?: v, NULL, "cli", &p, &error);
                if (r > 0 && (!p.name || !p.container_id))
                        __builtin_trap();
                if (r < 0 && r != -ENOMEM && !error)
                        __builtin_trap();
                service_pod_done(&p);
        }

        if (size > 0 && size < 256 && !memchr(data, 0, size)) {
                _cleanup_free_ char *s = strndup((const char *) data, size), *rt = NULL, *id = NULL;

                if (s && discovery_split_container_id(s, &rt, &id) >= 0 && (isempty(rt) || isempty(id)))
                        __builtin_trap();
        }
        return 0;
}
