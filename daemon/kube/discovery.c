/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Discovery: which pods run a Lagoon service and which of them a task should join. This
 * module owns the reading of Kubernetes Pod and PodList objects (from the kubelet's /pods,
 * the API server's list or a watch event), the rules for a usable pod (the service's
 * label, Running, Ready, not being deleted, its container running with an id) and the
 * order in which pods are preferred. The input is outside data: every member read is
 * checked for its type, absent and null members are the same (Go writes null for nil). */

#include <stdlib.h>
#include <time.h>

#include "discovery.h"

void service_pod_done(ServicePod *p) {
        if (!p)
                return;
        free(p->namespace);
        free(p->name);
        free(p->uid);
        free(p->node_name);
        free(p->pod_ip);
        free(p->container_name);
        free(p->container_id);
        free(p->image);
        *p = (ServicePod){};
}

ServicePod *service_pods_free(ServicePod *pods, size_t n) {
        for (size_t i = 0; pods && i < n; i++)
                service_pod_done(pods + i);
        return mfree(pods);
}

static const JsonValue *get_optional(const JsonValue *obj, const char *key) {
        const JsonValue *v = json_get(obj, key);
        return v && json_type(v) != JSON_NULL ? v : NULL;
}

/* Optional member of a given type: 0 and *ret NULL when absent, -EBADMSG when of another type. */
static int get_typed(const JsonValue *obj,
                     const char *where,
                     const char *key,
                     JsonType type,
                     const JsonValue **ret,
                     char **ret_error) {
        const JsonValue *v = get_optional(obj, key);

        if (v && json_type(v) != type)
                return error_message(ret_error, -EBADMSG, "%s.%s is %s, not %s", where, key,
                                     json_type_to_string(json_type(v)), json_type_to_string(type));
        *ret = v;
        return 0;
}

static int get_string(const JsonValue *obj, const char *where, const char *key, const char **ret, char **ret_error) {
        const JsonValue *v = NULL;
        int r;

        r = get_typed(obj, where, key, JSON_STRING, &v, ret_error);
        if (r < 0)
                return r;
        *ret = v ? json_string(v) : NULL;
        return 0;
}

/* RFC 3339 as the API server writes it ("2026-11-28T06:00:00Z", maybe fractional and an
 * offset). INT64_MAX when unparsable: such a pod sorts last, it is not rejected. */
static int64_t parse_timestamp(const char *s) {
        struct tm tm = {};
        const char *p;
        int64_t t;

        if (isempty(s))
                return INT64_MAX;
        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return INT64_MAX;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++)
                        ;
        t = (int64_t) timegm(&tm);
        if (*p == 'Z' || *p == 'z')
                p++;
        else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
                int h = (p[1] - '0') * 10 + (p[2] - '0'), m = (p[4] - '0') * 10 + (p[5] - '0');
                if (h < 0 || h > 23 || m < 0 || m > 59)
                        return INT64_MAX;
                t += (*p == '+' ? -1 : 1) * (int64_t) (h * 3600 + m * 60);
                p += 6;
        } else
                return INT64_MAX;
        return *p == 0 ? t : INT64_MAX;
}

/* The pod's Ready condition: 1 True, 0 anything else or absent. */
static int pod_ready(const JsonValue *status, const char *where, char **ret_error) {
        const JsonValue *conditions = NULL;
        int r;

        r = get_typed(status, where, "conditions", JSON_ARRAY, &conditions, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_length(conditions); i++) {
                const JsonValue *c = json_array_at(conditions, i);
                const char *type = NULL, *value = NULL;

                if (!json_is_object(c))
                        return error_message(ret_error, -EBADMSG, "%s.conditions[%zu] is not an object", where, i);
                if ((r = get_string(c, where, "type", &type, ret_error)) < 0 ||
                    (r = get_string(c, where, "status", &value, ret_error)) < 0)
                        return r;
                if (streq_ptr(type, "Ready"))
                        return streq_ptr(value, "True");
        }
        return 0;
}

/* The service's container: the one named like the service, else the first. NULL when the
 * pod has none. */
static int
pick_container(const JsonValue *spec, const char *where, const char *service, const char **ret_name, char **ret_error) {
        const JsonValue *containers = NULL;
        const char *first = NULL;
        int r;

        r = get_typed(spec, where, "containers", JSON_ARRAY, &containers, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_length(containers); i++) {
                const JsonValue *c = json_array_at(containers, i);
                const char *name = NULL;

                if (!json_is_object(c))
                        return error_message(ret_error, -EBADMSG, "%s.containers[%zu] is not an object", where, i);
                r = get_string(c, where, "name", &name, ret_error);
                if (r < 0)
                        return r;
                if (!name)
                        continue;
                if (streq(name, service)) {
                        *ret_name = name;
                        return 0;
                }
                if (!first)
                        first = name;
        }
        *ret_name = first;
        return 0;
}

/* status.containerStatuses[] entry of container name: its containerID when it is running. */
static int container_running_id(const JsonValue *status,
                                const char *where,
                                const char *name,
                                const char **ret_id,
                                const char **ret_image,
                                char **ret_error) {
        const JsonValue *statuses = NULL;
        int r;

        *ret_id = *ret_image = NULL;
        r = get_typed(status, where, "containerStatuses", JSON_ARRAY, &statuses, ret_error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < json_length(statuses); i++) {
                const JsonValue *s = json_array_at(statuses, i), *state = NULL, *running = NULL;
                const char *n = NULL, *id = NULL, *image = NULL;

                if (!json_is_object(s))
                        return error_message(ret_error, -EBADMSG, "%s.containerStatuses[%zu] is not an object", where,
                                             i);
                if ((r = get_string(s, where, "name", &n, ret_error)) < 0 ||
                    (r = get_string(s, where, "containerID", &id, ret_error)) < 0 ||
                    (r = get_string(s, where, "image", &image, ret_error)) < 0 ||
                    (r = get_typed(s, where, "state", JSON_OBJECT, &state, ret_error)) < 0)
                        return r;
                if (!streq_ptr(n, name))
                        continue;
                if (state && (r = get_typed(state, where, "running", JSON_OBJECT, &running, ret_error)) < 0)
                        return r;
                if (running && !isempty(id)) {
                        *ret_id = id;
                        *ret_image = image;
                }
                return 0;
        }
        return 0;
}

static int strdup_opt(char **dst, const char *s) {
        if (!s)
                return 0;
        *dst = strdup(s);
        return *dst ? 0 : -ENOMEM;
}

int discovery_parse_pod(const JsonValue *pod,
                        const char *namespace,
                        const char *service,
                        ServicePod *ret,
                        char **ret_error) {
        const JsonValue *metadata = NULL, *labels = NULL, *spec = NULL, *status = NULL;
        const char *ns = NULL, *name = NULL, *uid = NULL, *label = NULL, *phase = NULL, *node = NULL, *ip = NULL,
                   *container = NULL, *id = NULL, *image = NULL, *start = NULL;
        _cleanup_(service_pod_done) ServicePod p = {};
        int ready, r;

        if (!service || !ret)
                return -EINVAL;
        if (!json_is_object(pod))
                return error_message(ret_error, -EBADMSG, "pod is %s, not an object",
                                     pod ? json_type_to_string(json_type(pod)) : "missing");

        if ((r = get_typed(pod, "pod", "metadata", JSON_OBJECT, &metadata, ret_error)) < 0 ||
            (r = get_typed(pod, "pod", "spec", JSON_OBJECT, &spec, ret_error)) < 0 ||
            (r = get_typed(pod, "pod", "status", JSON_OBJECT, &status, ret_error)) < 0)
                return r;
        if (!metadata || !spec || !status)
                return 0;
        if ((r = get_string(metadata, "pod.metadata", "namespace", &ns, ret_error)) < 0 ||
            (r = get_string(metadata, "pod.metadata", "name", &name, ret_error)) < 0 ||
            (r = get_string(metadata, "pod.metadata", "uid", &uid, ret_error)) < 0 ||
            (r = get_typed(metadata, "pod.metadata", "labels", JSON_OBJECT, &labels, ret_error)) < 0 ||
            (r = get_string(labels, "pod.metadata.labels", DISCOVERY_SERVICE_LABEL, &label, ret_error)) < 0 ||
            (r = get_string(spec, "pod.spec", "nodeName", &node, ret_error)) < 0 ||
            (r = get_string(status, "pod.status", "phase", &phase, ret_error)) < 0 ||
            (r = get_string(status, "pod.status", "podIP", &ip, ret_error)) < 0 ||
            (r = get_string(status, "pod.status", "startTime", &start, ret_error)) < 0)
                return r;

        if (isempty(name) || !streq_ptr(label, service) || (namespace && !streq_ptr(ns, namespace)))
                return 0;
        /* A terminating pod still says Running (and maybe Ready) until its grace period
         * ends; a task joined to it would be killed with it. */
        if (get_optional(metadata, "deletionTimestamp") || !streq_ptr(phase, "Running"))
                return 0;

        r = pick_container(spec, "pod.spec", service, &container, ret_error);
        if (r < 0)
                return r;
        if (!container)
                return 0;
        r = container_running_id(status, "pod.status", container, &id, &image, ret_error);
        if (r < 0)
                return r;
        if (!id)
                return 0;
        ready = pod_ready(status, "pod.status", ret_error);
        if (ready < 0)
                return ready;

        if ((r = strdup_opt(&p.namespace, ns)) < 0 || (r = strdup_opt(&p.name, name)) < 0 ||
            (r = strdup_opt(&p.uid, uid)) < 0 || (r = strdup_opt(&p.node_name, node)) < 0 ||
            (r = strdup_opt(&p.pod_ip, ip)) < 0 || (r = strdup_opt(&p.container_name, container)) < 0 ||
            (r = strdup_opt(&p.container_id, id)) < 0 || (r = strdup_opt(&p.image, image)) < 0)
                return r;
        p.ready = ready;
        p.start_time = parse_timestamp(start);

        *ret = p;
        p = (ServicePod){};
        return 1;
}

static int compare_pods(const void *a, const void *b) {
        const ServicePod *x = a, *y = b;
        int c;

        if (x->ready != y->ready)
                return x->ready ? -1 : 1;
        if (x->start_time != y->start_time)
                return x->start_time < y->start_time ? -1 : 1;
        c = strcmp(strempty(x->namespace), strempty(y->namespace));
        return c != 0 ? c : strcmp(strempty(x->name), strempty(y->name));
}

/* Ready first: a pod that is not ready may be starting, failing its probe or drained.
 * Then the oldest: during a rollout the new pods are the ones still warming up (and the
 * old ones about to go are excluded by their deletionTimestamp already), and a stable
 * order sends consecutive tasks of a service to the same pod, whose caches are warm. */
void discovery_sort_pods(ServicePod *pods, size_t n) {
        if (pods && n > 1)
                qsort(pods, n, sizeof(ServicePod), compare_pods);
}

int discovery_pick_local(const ServicePod *pods, size_t n, const char *node_name) {
        if (isempty(node_name))
                return -EINVAL;
        for (size_t i = 0; pods && i < n && i <= INT32_MAX; i++)
                if (pods[i].ready && streq_ptr(pods[i].node_name, node_name))
                        return (int) i;
        return -ENOENT;
}

int discovery_split_container_id(const char *container_id, char **ret_runtime, char **ret_id) {
        _cleanup_free_ char *runtime = NULL, *id = NULL;
        const char *sep;

        if (!container_id || !ret_runtime || !ret_id)
                return -EINVAL;
        sep = strstr(container_id, "://");
        if (!sep || sep == container_id || isempty(sep + 3))
                return -EINVAL;
        runtime = strndup(container_id, (size_t) (sep - container_id));
        id = strdup(sep + 3);
        if (!runtime || !id)
                return -ENOMEM;
        *ret_runtime = TAKE_PTR(runtime);
        *ret_id = TAKE_PTR(id);
        return 0;
}

static int add_pod(const JsonValue *pod,
                   const char *namespace,
                   const char *service,
                   ServicePod **pods,
                   size_t *n,
                   char **ret_error) {
        ServicePod p = {}, *a;
        int r;

        r = discovery_parse_pod(pod, namespace, service, &p, ret_error);
        if (r <= 0)
                return r;
        /* The list is of the pods a task may join now. */
        if (!p.ready) {
                service_pod_done(&p);
                return 0;
        }
        a = reallocarray(*pods, *n + 1, sizeof(ServicePod));
        if (!a) {
                service_pod_done(&p);
                return -ENOMEM;
        }
        a[(*n)++] = p;
        *pods = a;
        return 0;
}

int discovery_parse_pod_list(const char *json,
                             size_t size,
                             const char *namespace,
                             const char *service,
                             ServicePod **ret,
                             size_t *ret_n,
                             char **ret_error) {
        _cleanup_json_ JsonValue *v = NULL;
        _cleanup_free_ char *error = NULL;
        ServicePod *pods = NULL;
        const JsonValue *items;
        const char *kind;
        size_t n = 0;
        int r;

        if (!json || !service || !ret || !ret_n)
                return -EINVAL;

        r = json_parse(json, size, JSON_DEPTH_MAX_DEFAULT, &v, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_error, -EBADMSG, "pod list is not JSON: %s",
                                     error
                                             ?: r == -E2BIG ? "nested too deeply"
                                                            : "invalid");
        if (!json_is_object(v))
                return error_message(ret_error, -EBADMSG, "pod list is %s, not an object",
                                     json_type_to_string(json_type(v)));

        kind = json_get_string(v, "kind");
        if (streq_ptr(kind, "Status")) /* the API server's error answer */
                return error_message(ret_error, -EBADMSG, "not a pod list but a Status: %s",
                                     strna(json_get_string(v, "message")));
        if (streq_ptr(kind, "Pod")) {
                r = add_pod(v, namespace, service, &pods, &n, ret_error);
                if (r < 0) {
                        service_pods_free(pods, n);
                        return r;
                }
                goto done;
        }
        if (kind && !streq(kind, "PodList"))
                return error_message(ret_error, -EBADMSG, "not a pod list but a %s", kind);

        items = json_get(v, "items");
        if (!items) /* the kubelet omits kind on an empty list, the API server writes items: [] */
                return error_message(ret_error, -EBADMSG, "not a pod list: no items");
        if (json_type(items) == JSON_NULL)
                goto done;
        if (!json_is_array(items))
                return error_message(ret_error, -EBADMSG, "pod list: items is %s, not an array",
                                     json_type_to_string(json_type(items)));

        for (size_t i = 0; i < json_length(items); i++) {
                _cleanup_free_ char *e = NULL;

                r = add_pod(json_array_at(items, i), namespace, service, &pods, &n, ret_error ? &e : NULL);
                if (r < 0) {
                        service_pods_free(pods, n);
                        if (r == -ENOMEM)
                                return r;
                        return error_message(ret_error, r, "pod list: items[%zu]: %s", i, strna(e));
                }
        }

done:
        discovery_sort_pods(pods, n);
        *ret = pods;
        *ret_n = n;
        return 0;
}
