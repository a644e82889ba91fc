/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Discovery of a service's running containers from what the kubelet (/pods) or the API
 * server (GET /api/v1/namespaces/<ns>/pods?labelSelector=…, or a watch) says: pure JSON
 * work, no I/O. A service's pods are those with label lagoon.sh/service=<service>. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

#define DISCOVERY_SERVICE_LABEL "lagoon.sh/service"

typedef struct ServicePod {
        char *namespace;
        char *name;
        char *uid;
        char *node_name;      /* spec.nodeName */
        char *pod_ip;         /* status.podIP, NULL when not reported */
        char *container_name; /* the service's container in the pod */
        char *container_id;   /* as reported, e.g. "containerd://abc…", "cri-o://…" */
        char *image;          /* that container's status.image, NULL when not reported */
        bool ready;           /* condition Ready is True */
        int64_t start_time;   /* status.startTime, seconds since the epoch; INT64_MAX when not reported */
} ServicePod;

void service_pod_done(ServicePod *p);
/* Frees n pods and the array; returns NULL. */
ServicePod *service_pods_free(ServicePod *pods, size_t n);

/* One Pod object (an item of a PodList, or the "object" of a watch event). Returns 1 and
 * fills *ret when it is a pod of that service in that namespace (namespace NULL: any)
 * that runs: phase Running, not being deleted (metadata.deletionTimestamp), and its
 * service container (the container named like the service, else the first) is running
 * with a containerID; ret->ready tells whether its Ready condition is True. Returns 0
 * when it is not such a pod (*ret untouched), -EBADMSG with *ret_error (when non-NULL)
 * when a member it reads has the wrong type, -ENOMEM. */
int discovery_parse_pod(const JsonValue *pod,
                        const char *namespace,
                        const char *service,
                        ServicePod *ret,
                        char **ret_error);

/* A PodList (or a single Pod) as JSON text: the service's running and Ready pods, sorted
 * (see discovery_sort_pods). No match is not an error: 0 pods (*ret may be NULL).
 * -EBADMSG with *ret_error on text that is not JSON, not a PodList/Pod (a Status object:
 * its message), or items of the wrong type; -ENOMEM. */
int discovery_parse_pod_list(const char *json,
                             size_t size,
                             const char *namespace,
                             const char *service,
                             ServicePod **ret,
                             size_t *ret_n,
                             char **ret_error);

/* Sorts: ready first, then the oldest startTime, then by namespace/name (stable answer). */
void discovery_sort_pods(ServicePod *pods, size_t n);

/* The first pod (in the given order) that is ready and runs on node_name: its index, or
 * -ENOENT when none does (the service runs elsewhere or not at all). */
int discovery_pick_local(const ServicePod *pods, size_t n, const char *node_name);

/* Splits a containerID "<runtime>://<id>": both parts non-empty. -EINVAL otherwise. */
int discovery_split_container_id(const char *container_id, char **ret_runtime, char **ret_id);
