/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Lease plumbing shared by the claims and the slots (see lease.h). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease.h"

int lease_scope_init(LeaseScope *s,
                     KubeClient *api,
                     const char *namespace,
                     const char *holder,
                     const char *target,
                     uint64_t duration_usec) {
        if (!api || isempty(namespace) || isempty(holder) || duration_usec < USEC_PER_SEC)
                return -EINVAL;
        *s = (LeaseScope){.api = api, .duration_usec = duration_usec};
        s->namespace = strdup(namespace);
        s->holder = strdup(holder);
        s->target = target ? strdup(target) : NULL;
        if (!s->namespace || !s->holder || (target && !s->target)) {
                lease_scope_done(s);
                return -ENOMEM;
        }
        return 0;
}

void lease_scope_done(LeaseScope *s) {
        free(s->namespace);
        free(s->holder);
        free(s->target);
        *s = (LeaseScope){};
}

char *lease_path(const LeaseScope *s, const char *name) {
        _cleanup_free_ char *ns = kube_escape(s->namespace), *nm = name ? kube_escape(name) : NULL;
        char *p = NULL;

        if (!ns || (name && !nm))
                return NULL;
        if (asprintf(&p, "/apis/coordination.k8s.io/v1/namespaces/%s/leases%s%s", ns, nm ? "/" : "", strempty(nm)) < 0)
                return NULL;
        return p;
}

int lease_set_common(JsonValue *lease, const LeaseScope *s, const char *name, bool acquire, JsonValue **ret_spec) {
        JsonValue *md, *labels, *spec;
        char now[KUBE_MICROTIME_MAX];
        int r;

        r = kube_format_microtime(now_usec(CLOCK_REALTIME), now);
        if (r < 0)
                return r;
        if ((r = json_object_set_string(lease, "apiVersion", "coordination.k8s.io/v1")) < 0 ||
            (r = json_object_set_string(lease, "kind", "Lease")) < 0 ||
            (r = json_object_ensure_object(lease, "metadata", &md)) < 0 ||
            (r = json_object_set_string(md, "name", name)) < 0 ||
            (r = json_object_ensure_object(md, "labels", &labels)) < 0 ||
            (r = json_object_set_string(labels, "app.kubernetes.io/managed-by", "lagoon-taskd")) < 0 ||
            (r = json_object_ensure_object(lease, "spec", &spec)) < 0)
                return r;
        if (acquire && ((r = json_object_set_string(spec, "holderIdentity", s->holder)) < 0 ||
                        (r = json_object_set_string(spec, "acquireTime", now)) < 0))
                return r;
        if ((r = json_object_set_int64(spec, "leaseDurationSeconds",
                                       (int64_t) MAX(s->duration_usec / USEC_PER_SEC, 1U))) < 0 ||
            (r = json_object_set_string(spec, "renewTime", now)) < 0)
                return r;
        if (ret_spec)
                *ret_spec = spec;
        return 0;
}

bool lease_expired(const LeaseScope *s, const JsonValue *lease, unsigned factor) {
        const JsonValue *spec = json_get(lease, "spec");
        const char *renew = json_get_string(spec, "renewTime") ?: json_get_string(spec, "acquireTime");
        int64_t duration = 0;
        uint64_t t;

        if (!renew || kube_parse_timestamp(renew, strlen(renew), &t) < 0)
                return true;
        if (json_int64(json_get(spec, "leaseDurationSeconds"), &duration) < 0 || duration <= 0)
                duration = (int64_t) (s->duration_usec / USEC_PER_SEC);
        return t + (uint64_t) factor * (uint64_t) duration * USEC_PER_SEC < now_usec(CLOCK_REALTIME);
}

int lease_delete_options(const JsonValue *lease, JsonValue **ret) {
        _cleanup_json_ JsonValue *opts = json_new_object();
        JsonValue *pre;
        int r;

        if (!opts)
                return -ENOMEM;
        if ((r = json_object_set_string(opts, "kind", "DeleteOptions")) < 0 ||
            (r = json_object_set_string(opts, "apiVersion", "v1")) < 0 ||
            (r = json_object_ensure_object(opts, "preconditions", &pre)) < 0 ||
            (r = json_object_set_string(pre, "uid", json_get_string(json_get(lease, "metadata"), "uid"))) < 0)
                return r;
        *ret = TAKE_PTR(opts);
        return 0;
}
