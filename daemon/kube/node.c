/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Node mode (see node.h): the kubelet and API server clients, where a service runs, and
 * retention of task pods. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery.h"
#include "fs-util.h"
#include "http.h"
#include "kubeconfig.h"
#include "log.h"
#include "node.h"
#include "parse-util.h"
#include "task-pod.h"

#define PENDING_MAX 64

/* A fire-and-forget request (retention), owned here so a stopping daemon frees it. */
typedef struct PendingOp {
        Node *node;
        KubeCall *call;
        char *namespace;
        unsigned keep;
        node_pod_in_use_t in_use;
        void *userdata;
        char *remove_dir;       /* an orphan's container directory, removed once its pod is deleted */
        node_done_cb_t done_cb; /* a RoleBinding's delete: told the outcome */
        char *tag;
} PendingOp;

struct Node {
        sd_event *event;
        HttpClient *http;
        KubeClient *kubelet;
        KubeClient *api;
        char *node_name;
        RuntimeStateRoots roots;
        char *containerd_state, *containerd_namespace, *crio_run_root;
        PendingOp *pending[PENDING_MAX];
};

enum {
        CTX_ENV_SECRET,
        CTX_PLATFORM_SECRET,
        CTX_ENV_CONFIG_MAP,
        CTX_SERVICE_ACCOUNT,
        CTX_VOLUMES,         /* the namespace's PVCs (volumeMounts) */
        CTX_DYNAMIC_SECRETS, /* secrets labelled lagoon.sh/dynamic-secret */
        _CTX_MAX,
};

struct NodeLookup {
        Node *node;
        char *namespace, *service;
        KubeCall *call;
        sd_event_source *defer;
        node_lookup_cb_t cb;
        void *userdata;

        /* advanced-task context: the GETs in flight, the answers */
        KubeCall *ctx_calls[_CTX_MAX];
        JsonValue *ctx_answers[_CTX_MAX];
        unsigned ctx_pending;
        char *ctx_error; /* a list the pod cannot do without failed */
        node_context_cb_t ctx_cb;

        node_locate_cb_t locate_cb; /* cluster routing */
        node_rb_cb_t rb_cb;         /* active/standby RoleBinding create */
};

void node_service_done(NodeService *s) {
        runtime_service_bundle_done(&s->bundle);
        s->pod = mfree(s->pod);
        s->deployment = json_free(s->deployment);
}

static void pending_free(PendingOp *op) {
        if (!op)
                return;
        for (size_t i = 0; i < PENDING_MAX; i++)
                if (op->node->pending[i] == op)
                        op->node->pending[i] = NULL;
        kube_call_cancel(op->call);
        free(op->namespace);
        free(op->remove_dir);
        free(op->tag);
        free(op);
}

Node *node_free(Node *n) {
        if (!n)
                return NULL;
        for (size_t i = 0; i < PENDING_MAX; i++)
                pending_free(n->pending[i]);
        kube_client_free(n->kubelet);
        kube_client_free(n->api);
        http_client_free(n->http);
        free(n->node_name);
        free(n->containerd_state);
        free(n->containerd_namespace);
        free(n->crio_run_root);
        sd_event_unref(n->event);
        return mfree(n);
}

static int api_credentials(const Config *c, KubeCredentials **ret) {
        _cleanup_(kube_credentials_freep) KubeCredentials *cred = NULL;
        _cleanup_free_ char *error = NULL, *data_dir = NULL;
        int r;

        if (c->kubeconfig) {
                data_dir = path_join(c->runtime_dir, "kubeconfig-data");
                if (!data_dir)
                        return log_oom();
                r = kube_credentials_from_kubeconfig(c->kubeconfig, c->kube_context, data_dir, &cred, &error);
                if (r < 0)
                        return log_error_errno(r, "[Kubernetes] Kubeconfig=: %s", strna(error));
        } else if (c->kube_in_cluster) {
                r = kube_credentials_in_cluster(NULL, &cred, &error);
                if (r < 0)
                        return log_error_errno(r, "[Kubernetes] InCluster=yes: %s", strna(error));
        } else if (c->kube_server) {
                cred = kube_credentials_new();
                if (!cred || !(cred->server = strdup(c->kube_server)) ||
                    (c->kube_ca_file && !(cred->ca_file = strdup(c->kube_ca_file))) ||
                    (c->kube_token_file && !(cred->token_file = strdup(c->kube_token_file))) ||
                    (c->kube_cert_file && !(cred->client_cert_file = strdup(c->kube_cert_file))) ||
                    (c->kube_key_file && !(cred->client_key_file = strdup(c->kube_key_file))))
                        return log_oom();
                /* kube.c joins paths to the server URL */
                size_t l = strlen(cred->server);
                while (l > 0 && cred->server[l - 1] == '/')
                        cred->server[--l] = 0;
        }
        *ret = TAKE_PTR(cred);
        return 0;
}

int node_new(sd_event *e, const Config *c, Node **ret) {
        _cleanup_(node_freep) Node *n = NULL;
        _cleanup_(kube_credentials_freep) KubeCredentials *api = NULL, *kubelet = NULL;
        int r;

        if (!config_kube_enabled(c)) {
                *ret = NULL;
                return 0;
        }
        n = calloc(1, sizeof(Node));
        if (!n)
                return log_oom();
        n->event = sd_event_ref(e);
        if (!(n->node_name = strdup(c->node_name)) || !(n->containerd_state = strdup(c->containerd_state)) ||
            !(n->containerd_namespace = strdup(c->containerd_namespace)) ||
            !(n->crio_run_root = strdup(c->crio_run_root)))
                return log_oom();
        n->roots = (RuntimeStateRoots){n->containerd_state, n->containerd_namespace, n->crio_run_root};

        r = http_client_new(e, &n->http);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP client: %m");

        if (c->kubelet_url) {
                kubelet = kube_credentials_new();
                if (!kubelet || !(kubelet->server = strdup(c->kubelet_url)) ||
                    (c->kubelet_ca_file && !(kubelet->ca_file = strdup(c->kubelet_ca_file))) ||
                    (c->kubelet_token_file && !(kubelet->token_file = strdup(c->kubelet_token_file))) ||
                    (c->kubelet_cert_file && !(kubelet->client_cert_file = strdup(c->kubelet_cert_file))) ||
                    (c->kubelet_key_file && !(kubelet->client_key_file = strdup(c->kubelet_key_file))))
                        return log_oom();
                size_t l = strlen(kubelet->server);
                while (l > 0 && kubelet->server[l - 1] == '/')
                        kubelet->server[--l] = 0;
                r = kube_client_new(e, n->http, kubelet, &n->kubelet);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the kubelet client: %m");
        }
        r = api_credentials(c, &api);
        if (r < 0)
                return r;
        if (api) {
                r = kube_client_new(e, n->http, api, &n->api);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the Kubernetes API client: %m");
        }
        log_info("Node mode: node %s, services from %s%s%s.", n->node_name, n->kubelet ? "the kubelet" : "",
                 n->kubelet && n->api ? " and " : "", n->api ? "the API server" : "");
        *ret = TAKE_PTR(n);
        return 0;
}

KubeClient *node_api(Node *n) {
        return n ? n->api : NULL;
}

const char *node_name(Node *n) {
        return n ? n->node_name : NULL;
}

/* ---- lookup ---- */

NodeLookup *node_lookup_cancel(NodeLookup *l) {
        if (!l)
                return NULL;
        kube_call_cancel(l->call);
        for (size_t i = 0; i < _CTX_MAX; i++) {
                kube_call_cancel(l->ctx_calls[i]);
                json_free(l->ctx_answers[i]);
        }
        free(l->ctx_error);
        sd_event_source_disable_unref(l->defer);
        free(l->namespace);
        free(l->service);
        return mfree(l);
}

/* Ends the lookup; the callback may free it (node_lookup_cancel) or not: either way it is
 * done here. */
static void lookup_done(NodeLookup *l, int error, const char *reason, NodeService *svc) {
        NodeService empty = {};

        l->call = NULL;
        l->cb(l, error, reason, svc ?: &empty, l->userdata);
        node_service_done(&empty);
}

static void lookup_fail(NodeLookup *l, int error, const char *fmt, ...) _printf_(3, 4);
static void lookup_fail(NodeLookup *l, int error, const char *fmt, ...) {
        _cleanup_free_ char *reason = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&reason, fmt, ap) < 0)
                reason = NULL;
        va_end(ap);
        lookup_done(l, error, reason ?: "launch-error", NULL);
}

static void on_deployment(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        NodeLookup *l = userdata;
        NodeService svc = {};

        l->call = NULL;
        if (error == -ENOENT) {
                lookup_fail(l, -ENOENT, "service-not-found: no running pod of %s on node %s and no deployment %s in %s",
                            l->service, l->node->node_name, l->service, l->namespace);
                return;
        }
        if (error < 0) {
                lookup_fail(l, error, "launch-error: getting deployment %s/%s: %s", l->namespace, l->service,
                            strna(text));
                return;
        }
        svc.deployment = kube_call_take_body(call);
        lookup_done(l, 0, NULL, &svc);
        node_service_done(&svc);
}

static void lookup_deployment(NodeLookup *l) {
        _cleanup_free_ char *ns = NULL, *name = NULL, *path = NULL;
        int r;

        if (!l->node->api) {
                lookup_fail(l, -ENOENT, "service-not-found: no running pod of %s in %s on node %s", l->service,
                            l->namespace, l->node->node_name);
                return;
        }
        ns = kube_escape(l->namespace);
        name = kube_escape(l->service);
        if (!ns || !name || asprintf(&path, "/apis/apps/v1/namespaces/%s/deployments/%s", ns, name) < 0) {
                lookup_fail(l, -ENOMEM, "launch-error: out of memory");
                return;
        }
        r = kube_request(l->node->api, "GET", path, NULL, NULL, on_deployment, l, &l->call);
        if (r < 0)
                lookup_fail(l, r, "launch-error: getting deployment %s/%s: %s", l->namespace, l->service, strerror(-r));
}

/* The service's running pods of a PodList's items, sorted (discovery_sort_pods). */
static int parse_service_pods(NodeLookup *l, const JsonValue *items, ServicePod **ret, size_t *ret_n) {
        ServicePod *pods;
        size_t n = 0;

        pods = calloc(json_length(items) + 1, sizeof(ServicePod));
        if (!pods)
                return -ENOMEM;
        for (size_t k = 0; k < json_length(items); k++) {
                _cleanup_free_ char *perr = NULL;
                int r = discovery_parse_pod(json_array_at(items, k), l->namespace, l->service, pods + n, &perr);

                if (r > 0)
                        n++;
                else if (r < 0)
                        log_debug("Pods of %s/%s: skipping one: %s", l->namespace, l->service, strna(perr));
        }
        discovery_sort_pods(pods, n);
        *ret = pods;
        *ret_n = n;
        return 0;
}

static void on_pods(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        NodeLookup *l = userdata;
        ServicePod *pods = NULL;
        const JsonValue *items = json_get(body, "items");
        size_t n = 0;
        int r, i;

        l->call = NULL;
        if (error < 0) {
                /* Not fatal: the service may still run as an API pod. */
                log_warning("Task lookup of %s/%s: listing this node's pods failed: %s", l->namespace, l->service,
                            strna(text));
                lookup_deployment(l);
                return;
        }
        if (!json_is_array(items)) {
                log_warning("Task lookup of %s/%s: the pod list has no items, ignoring it.", l->namespace, l->service);
                lookup_deployment(l);
                return;
        }
        if (parse_service_pods(l, items, &pods, &n) < 0) {
                lookup_fail(l, -ENOMEM, "launch-error: out of memory");
                return;
        }
        i = discovery_pick_local(pods, n, l->node->node_name);
        if (i >= 0) {
                _cleanup_free_ char *rerr = NULL;
                NodeService svc = {};

                r = runtime_state_find(&l->node->roots, pods[i].container_id, &svc.bundle, &rerr);
                if (r >= 0) {
                        svc.pod = TAKE_PTR(pods[i].name);
                        service_pods_free(pods, n);
                        lookup_done(l, 0, NULL, &svc);
                        node_service_done(&svc);
                        return;
                }
                log_warning("Task lookup of %s/%s: pod %s is on this node but cannot be cloned: %s", l->namespace,
                            l->service, strna(pods[i].name), strna(rerr));
        }
        service_pods_free(pods, n);
        lookup_deployment(l);
}

static int on_lookup_defer(sd_event_source *s, void *userdata) {
        NodeLookup *l = userdata;
        _cleanup_free_ char *path = NULL, *selector = NULL, *field = NULL, *ns = NULL;
        int r;

        l->defer = sd_event_source_disable_unref(l->defer);
        /* The name goes into API paths and selectors: "." would list every Deployment. */
        if (!dns_label_is_valid(l->service)) {
                lookup_fail(l, -ENOENT, "service-not-found: \"%s\" is not a DNS label", l->service);
                return 0;
        }
        if (l->node->kubelet) {
                r = kube_request(l->node->kubelet, "GET", "/pods", NULL, NULL, on_pods, l, &l->call);
                if (r >= 0)
                        return 0;
                log_warning_errno(r, "Task lookup: cannot ask the kubelet: %m");
        } else if (l->node->api) {
                ns = kube_escape(l->namespace);
                if (!ns || asprintf(&path, "/api/v1/namespaces/%s/pods", ns) < 0 ||
                    asprintf(&selector, "%s=%s", DISCOVERY_SERVICE_LABEL, l->service) < 0 ||
                    asprintf(&field, "spec.nodeName=%s", l->node->node_name) < 0 ||
                    kube_path_append_query(&path, "labelSelector", selector) < 0 ||
                    kube_path_append_query(&path, "fieldSelector", field) < 0) {
                        lookup_fail(l, -ENOMEM, "launch-error: out of memory");
                        return 0;
                }
                r = kube_request(l->node->api, "GET", path, NULL, NULL, on_pods, l, &l->call);
                if (r >= 0)
                        return 0;
                log_warning_errno(r, "Task lookup: cannot list pods: %m");
        }
        lookup_deployment(l);
        return 0;
}

int node_lookup_service(Node *n,
                        const char *namespace,
                        const char *service,
                        node_lookup_cb_t cb,
                        void *userdata,
                        NodeLookup **ret) {
        _cleanup_(node_lookup_cancelp) NodeLookup *l = NULL;
        int r;

        l = calloc(1, sizeof(NodeLookup));
        if (!l)
                return -ENOMEM;
        l->node = n;
        l->cb = cb;
        l->userdata = userdata;
        if (!(l->namespace = strdup(namespace)) || !(l->service = strdup(service)))
                return -ENOMEM;
        /* Callbacks come from the loop, never from inside this call. */
        r = sd_event_add_defer(n->event, &l->defer, on_lookup_defer, l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(l->defer, "node-lookup");
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- cluster routing ---- */

static void on_locate_pods(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        NodeLookup *l = userdata;
        const JsonValue *items = json_get(body, "items");
        ServicePod *pods = NULL;
        const char *where = NULL;
        size_t n = 0;
        int i;

        l->call = NULL;
        if (error < 0) {
                l->locate_cb(l, error, NULL, l->userdata);
                return;
        }
        if (parse_service_pods(l, items, &pods, &n) < 0) {
                l->locate_cb(l, -ENOMEM, NULL, l->userdata);
                return;
        }
        /* This node when it runs the service too, else the node of the first Ready pod. */
        i = discovery_pick_local(pods, n, l->node->node_name);
        if (i >= 0)
                where = pods[i].node_name;
        else if (n > 0 && pods[0].ready)
                where = pods[0].node_name;
        l->locate_cb(l, 0, where, l->userdata);
        service_pods_free(pods, n);
}

int node_locate_service(Node *n,
                        const char *namespace,
                        const char *service,
                        node_locate_cb_t cb,
                        void *userdata,
                        NodeLookup **ret) {
        _cleanup_(node_lookup_cancelp) NodeLookup *l = NULL;
        _cleanup_free_ char *ns = NULL, *path = NULL, *selector = NULL;
        int r;

        if (!n || !n->api)
                return -EOPNOTSUPP;
        l = calloc(1, sizeof(NodeLookup));
        if (!l)
                return -ENOMEM;
        l->node = n;
        l->locate_cb = cb;
        l->userdata = userdata;
        if (!(l->namespace = strdup(namespace)) || !(l->service = strdup(service)))
                return -ENOMEM;
        ns = kube_escape(namespace);
        if (!ns || asprintf(&path, "/api/v1/namespaces/%s/pods", ns) < 0 ||
            asprintf(&selector, "%s=%s", DISCOVERY_SERVICE_LABEL, service) < 0 ||
            kube_path_append_query(&path, "labelSelector", selector) < 0)
                return -ENOMEM;
        r = kube_request(n->api, "GET", path, NULL, NULL, on_locate_pods, l, &l->call);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- advanced tasks ---- */

void node_advanced_context_done(NodeAdvancedContext *c) {
        c->env_from_secrets = strv_free(c->env_from_secrets);
        c->env_from_config_maps = strv_free(c->env_from_config_maps);
        c->deployer_token_secret = mfree(c->deployer_token_secret);
        c->bulk_volumes = strv_free(c->bulk_volumes);
        c->dynamic_secrets = strv_free(c->dynamic_secrets);
        c->error = mfree(c->error);
}

/* The names in a list answer whose item passes keep (NULL: all), in the list's order. */
static int list_names(const JsonValue *list, bool (*keep)(const JsonValue *item), char ***ret) {
        const JsonValue *items = json_get(list, "items");
        _cleanup_strv_free_ char **names = NULL;
        int r;

        for (size_t i = 0; i < json_length(items); i++) {
                const JsonValue *item = json_array_at(items, i);
                const char *name = json_get_string(json_get(item, "metadata"), "name");

                if (!name || (keep && !keep(item)))
                        continue;
                r = strv_extend(&names, name);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(names);
        return 0;
}

/* remote-controller mounts a claim for volumeMounts when its storage class is "bulk"
 * (Lagoon's persistent storage of an environment's files). */
static bool pvc_is_bulk(const JsonValue *pvc) {
        return streq_ptr(json_get_string(json_get(pvc, "spec"), "storageClassName"), "bulk");
}

static void context_done(NodeLookup *l) {
        NodeAdvancedContext ctx = {};
        const JsonValue *secrets = json_get(l->ctx_answers[CTX_SERVICE_ACCOUNT], "secrets");

        /* remote-controller's order: the platform variables first, the environment's win. */
        if (l->ctx_answers[CTX_ENV_SECRET]) {
                if (l->ctx_answers[CTX_PLATFORM_SECRET])
                        (void) strv_extend(&ctx.env_from_secrets, "lagoon-platform-env");
                (void) strv_extend(&ctx.env_from_secrets, "lagoon-env");
        } else if (l->ctx_answers[CTX_ENV_CONFIG_MAP])
                (void) strv_extend(&ctx.env_from_config_maps, "lagoon-env");
        for (size_t i = 0; i < json_length(secrets); i++) {
                const char *name = json_get_string(json_array_at(secrets, i), "name");
                if (name && startswith(name, "lagoon-deployer-token")) {
                        ctx.deployer_token_secret = strdup(name);
                        break;
                }
        }
        if ((l->ctx_answers[CTX_VOLUMES] &&
             list_names(l->ctx_answers[CTX_VOLUMES], pvc_is_bulk, &ctx.bulk_volumes) < 0) ||
            (l->ctx_answers[CTX_DYNAMIC_SECRETS] &&
             list_names(l->ctx_answers[CTX_DYNAMIC_SECRETS], NULL, &ctx.dynamic_secrets) < 0))
                ctx.error = strdup("out of memory");
        /* The callback may free the lookup: the context owns its copy. */
        if (l->ctx_error && !ctx.error)
                ctx.error = TAKE_PTR(l->ctx_error);
        l->ctx_cb(l, &ctx, l->userdata);
        node_advanced_context_done(&ctx);
}

static void on_context_get(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        NodeLookup *l = userdata;

        for (size_t i = 0; i < _CTX_MAX; i++)
                if (l->ctx_calls[i] == call) {
                        l->ctx_calls[i] = NULL;
                        if (error >= 0)
                                l->ctx_answers[i] = kube_call_take_body(call);
                        else if (i == CTX_VOLUMES || i == CTX_DYNAMIC_SECRETS) {
                                /* remote-controller does not create the pod without them either. */
                                if (!l->ctx_error)
                                        l->ctx_error = strdup(strna(text));
                        } else if (error != -ENOENT)
                                /* Not fatal: the task runs without it, as remote-controller's would. */
                                log_warning("Advanced task in %s: %s", l->namespace, strna(text));
                }
        if (--l->ctx_pending == 0)
                context_done(l);
}

int node_lookup_advanced_context(Node *n,
                                 const char *namespace,
                                 bool deployer_token,
                                 bool volume_mounts,
                                 node_context_cb_t cb,
                                 void *userdata,
                                 NodeLookup **ret) {
        static const char *const paths[_CTX_MAX] = {
                [CTX_ENV_SECRET] = "secrets/lagoon-env",
                [CTX_PLATFORM_SECRET] = "secrets/lagoon-platform-env",
                [CTX_ENV_CONFIG_MAP] = "configmaps/lagoon-env",
                [CTX_SERVICE_ACCOUNT] = "serviceaccounts/lagoon-deployer",
                [CTX_VOLUMES] = "persistentvolumeclaims",
                /* an existence selector: remote-controller keeps the secrets carrying the label */
                [CTX_DYNAMIC_SECRETS] = "secrets?labelSelector=lagoon.sh%2Fdynamic-secret",
        };
        _cleanup_(node_lookup_cancelp) NodeLookup *l = NULL;
        _cleanup_free_ char *ns = NULL;
        int r;

        if (!n->api)
                return -EOPNOTSUPP;
        l = calloc(1, sizeof(NodeLookup));
        ns = kube_escape(namespace);
        if (!l || !ns || !(l->namespace = strdup(namespace)))
                return -ENOMEM;
        l->node = n;
        l->ctx_cb = cb;
        l->userdata = userdata;
        for (size_t i = 0; i < _CTX_MAX; i++) {
                _cleanup_free_ char *path = NULL;

                if ((i == CTX_SERVICE_ACCOUNT && !deployer_token) || (i == CTX_VOLUMES && !volume_mounts))
                        continue;
                if (asprintf(&path, "/api/v1/namespaces/%s/%s", ns, paths[i]) < 0)
                        return -ENOMEM;
                r = kube_request(n->api, "GET", path, NULL, NULL, on_context_get, l, &l->ctx_calls[i]);
                if (r < 0)
                        return r;
                l->ctx_pending++;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- active/standby ---- */

static PendingOp *pending_new(Node *n, const char *namespace, unsigned keep);
static int pending_send(PendingOp *op, const char *method, const char *path, kube_done_cb_t cb);

static char *role_binding_path(const char *namespace, bool with_name) {
        _cleanup_free_ char *ns = kube_escape(namespace);
        char *s = NULL;

        if (!ns || asprintf(&s, "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/rolebindings%s", ns,
                            with_name ? "/" NODE_ACTIVESTANDBY_ROLE_BINDING : "") < 0)
                return NULL;
        return s;
}

static void on_rb_created(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        NodeLookup *l = userdata;

        l->call = NULL;
        /* One left by an earlier task (or its daemon) grants the same: as remote-controller,
         * which creates it only when a get finds none. */
        if (error == -EEXIST || status == 409)
                error = 0;
        l->rb_cb(l, error < 0 ? error : 0, error < 0 ? text : NULL, l->userdata);
}

int node_role_binding_create(Node *n,
                             const char *destination,
                             const char *source,
                             node_rb_cb_t cb,
                             void *userdata,
                             NodeLookup **ret) {
        _cleanup_(node_lookup_cancelp) NodeLookup *l = NULL;
        _cleanup_(json_freep) JsonValue *rb = json_new_object(), *subjects = json_new_array(),
                                        *subject = json_new_object();
        _cleanup_free_ char *path = NULL, *text = NULL;
        JsonValue *md = NULL, *ref = NULL;
        int r;

        if (!n || !n->api)
                return -EOPNOTSUPP;
        l = calloc(1, sizeof(NodeLookup));
        path = role_binding_path(destination, false);
        if (!l || !path || !rb || !subjects || !subject || !(l->namespace = strdup(destination)))
                return -ENOMEM;
        l->node = n;
        l->rb_cb = cb;
        l->userdata = userdata;
        if ((r = json_object_set_string(rb, "apiVersion", "rbac.authorization.k8s.io/v1")) < 0 ||
            (r = json_object_set_string(rb, "kind", "RoleBinding")) < 0 ||
            (r = json_object_ensure_object(rb, "metadata", &md)) < 0 ||
            (r = json_object_set_string(md, "name", NODE_ACTIVESTANDBY_ROLE_BINDING)) < 0 ||
            (r = json_object_set_string(md, "namespace", destination)) < 0 ||
            (r = json_object_ensure_object(rb, "roleRef", &ref)) < 0 ||
            (r = json_object_set_string(ref, "apiGroup", "rbac.authorization.k8s.io")) < 0 ||
            (r = json_object_set_string(ref, "kind", "ClusterRole")) < 0 ||
            (r = json_object_set_string(ref, "name", "admin")) < 0 ||
            (r = json_object_set_string(subject, "kind", "ServiceAccount")) < 0 ||
            (r = json_object_set_string(subject, "name", "lagoon-deployer")) < 0 ||
            (r = json_object_set_string(subject, "namespace", source)) < 0 ||
            (r = json_array_append(subjects, TAKE_PTR(subject))) < 0 ||
            (r = json_object_set(rb, "subjects", TAKE_PTR(subjects))) < 0)
                return r;
        r = json_format(rb, false, &text, NULL);
        if (r < 0)
                return r;
        r = kube_request(n->api, "POST", path, NULL, text, on_rb_created, l, &l->call);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

static void on_rb_deleted(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        PendingOp *op = userdata;

        op->call = NULL;
        if (error == -ENOENT || status == 404)
                error = 0; /* gone already: what was wanted */
        if (error < 0)
                log_warning("Deleting RoleBinding %s in %s failed: %s", NODE_ACTIVESTANDBY_ROLE_BINDING,
                            strna(op->namespace), strna(text));
        else
                log_info("RoleBinding %s in %s removed.", NODE_ACTIVESTANDBY_ROLE_BINDING, strna(op->namespace));
        if (op->done_cb)
                op->done_cb(op->namespace, op->tag, error, op->userdata);
        pending_free(op);
}

int node_role_binding_delete(Node *n, const char *namespace, const char *tag, node_done_cb_t cb, void *userdata) {
        _cleanup_free_ char *path = NULL;
        PendingOp *op;

        if (!n || !n->api)
                return -EOPNOTSUPP;
        path = role_binding_path(namespace, true);
        if (!path)
                return -ENOMEM;
        op = pending_new(n, namespace, 0);
        if (!op)
                return -EBUSY;
        op->done_cb = cb;
        op->userdata = userdata;
        if (tag && !(op->tag = strdup(tag))) {
                pending_free(op);
                return -ENOMEM;
        }
        return pending_send(op, "DELETE", path, on_rb_deleted);
}

/* ---- retention ---- */

static int compare_created_desc(const void *a, const void *b) {
        const JsonValue *const *x = a, *const *y = b;
        const char *cx = json_get_string(json_get(*x, "metadata"), "creationTimestamp");
        const char *cy = json_get_string(json_get(*y, "metadata"), "creationTimestamp");

        /* RFC 3339 in UTC sorts as text; the name breaks ties (same second). */
        int c = strcmp(strempty(cy), strempty(cx));
        if (c != 0)
                return c;
        return strcmp(strempty(json_get_string(json_get(*y, "metadata"), "name")),
                      strempty(json_get_string(json_get(*x, "metadata"), "name")));
}

static PendingOp *pending_new(Node *n, const char *namespace, unsigned keep) {
        for (size_t i = 0; i < PENDING_MAX; i++)
                if (!n->pending[i]) {
                        PendingOp *op = calloc(1, sizeof(PendingOp));
                        if (!op || (namespace && !(op->namespace = strdup(namespace)))) {
                                free(op);
                                return NULL;
                        }
                        op->node = n;
                        op->keep = keep;
                        n->pending[i] = op;
                        return op;
                }
        return NULL; /* busy: retention catches up after the next task */
}

/* Sends op's request; op is freed when it cannot be sent. */
static int pending_send(PendingOp *op, const char *method, const char *path, kube_done_cb_t cb) {
        int r = kube_request(op->node->api, method, path, NULL, NULL, cb, op, &op->call);

        if (r < 0)
                pending_free(op);
        return r;
}

static void on_pod_deleted(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        PendingOp *op = userdata;

        op->call = NULL;
        if (error < 0 && error != -ENOENT)
                log_warning("Deleting %s task pod in %s failed: %s", op->remove_dir ? "an orphaned" : "an old",
                            strna(op->namespace), strna(text));
        else if (op->remove_dir) {
                int r = rm_rf(op->remove_dir);
                if (r < 0)
                        log_warning_errno(r, "Failed to remove %s: %m", op->remove_dir);
        }
        pending_free(op);
}

static int delete_pod(Node *n, const char *namespace, const char *name, const char *remove_dir) {
        _cleanup_free_ char *ns = kube_escape(namespace), *nm = kube_escape(name), *path = NULL;
        PendingOp *op;

        if (!ns || !nm || asprintf(&path, "/api/v1/namespaces/%s/pods/%s", ns, nm) < 0)
                return -ENOMEM;
        op = pending_new(n, namespace, 0);
        if (!op)
                return -EBUSY;
        if (remove_dir && !(op->remove_dir = strdup(remove_dir))) {
                pending_free(op);
                return -ENOMEM;
        }
        return pending_send(op, "DELETE", path, on_pod_deleted);
}

int node_delete_orphan_pod(Node *n, const char *namespace, const char *name, const char *dir) {
        if (!n->api)
                return -EOPNOTSUPP;
        return delete_pod(n, namespace, name, dir);
}

static void on_prune_list(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        PendingOp *op = userdata;
        Node *n = op->node;
        _cleanup_free_ const JsonValue **finished = NULL;
        const JsonValue *items = json_get(body, "items");
        size_t count = 0;

        op->call = NULL;
        if (error < 0) {
                log_warning("Listing task pods in %s for retention failed: %s", strna(op->namespace), strna(text));
                goto out;
        }
        finished = calloc(json_length(items) + 1, sizeof(JsonValue *));
        if (!finished)
                goto out;
        for (size_t i = 0; i < json_length(items); i++) {
                const JsonValue *pod = json_array_at(items, i);
                const char *phase = json_get_string(json_get(pod, "status"), "phase");

                if (streq_ptr(phase, "Succeeded") || streq_ptr(phase, "Failed"))
                        finished[count++] = pod;
        }
        qsort(finished, count, sizeof(JsonValue *), compare_created_desc);
        for (size_t i = op->keep; i < count; i++) {
                const char *name = json_get_string(json_get(finished[i], "metadata"), "name");
                if (!name || (op->in_use && op->in_use(op->namespace, name, op->userdata)))
                        continue;
                log_debug("Pod %s/%s: removed by retention (KeepTaskPods=%u).", op->namespace, name, op->keep);
                (void) delete_pod(n, op->namespace, name, NULL);
        }
out:
        pending_free(op);
}

void node_prune_task_pods(Node *n, const char *namespace, unsigned keep, node_pod_in_use_t in_use, void *userdata) {
        _cleanup_free_ char *ns = NULL, *path = NULL, *selector = NULL;
        PendingOp *op;

        if (!n || !n->api)
                return;
        ns = kube_escape(namespace);
        if (!ns || asprintf(&path, "/api/v1/namespaces/%s/pods", ns) < 0 ||
            asprintf(&selector, "%s=%s,%s=%s,%s=task", TASK_POD_LABEL_MANAGED_BY, TASK_POD_MANAGED_BY,
                     TASK_POD_LABEL_NODE, n->node_name, TASK_POD_LABEL_JOB_TYPE) < 0 ||
            kube_path_append_query(&path, "labelSelector", selector) < 0)
                return (void) log_oom();
        op = pending_new(n, namespace, keep);
        if (!op)
                return;
        op->in_use = in_use;
        op->userdata = userdata;
        (void) pending_send(op, "GET", path, on_prune_list);
}
