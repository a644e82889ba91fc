/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Node mode: the daemon's view of Kubernetes. It owns the clients for the local kubelet
 * and the API server (from [Kubernetes]) and answers where a task's service runs: a
 * Running and Ready pod of the service on this node whose container is in this node's
 * containerd/CRI-O state is cloned locally (runtime launcher); otherwise the service's
 * Deployment is fetched for an API pod (launcher-kube). It also prunes old task pods. */

#include <systemd/sd-event.h>

#include "config.h"
#include "json.h"
#include "kube.h"
#include "macro.h"
#include "runtime-state.h"

typedef struct Node Node;
typedef struct NodeLookup NodeLookup;

typedef struct NodeService {
        RuntimeServiceBundle bundle; /* bundle.bundle_dir set: clone this container locally */
        char *pod;                   /* that container's pod */
        JsonValue *deployment;       /* otherwise: the service's Deployment, for an API pod */
} NodeService;

void node_service_done(NodeService *s);

/* error < 0: reason is the task's failure reason ("service-not-found: …", "launch-error:
 * …"). Else svc is the answer; the callee may take its members (set them NULL). Called once,
 * from the event loop. */
typedef void (*node_lookup_cb_t)(NodeLookup *l, int error, const char *reason, NodeService *svc, void *userdata);

/* NULL *ret (and 0) when node mode is off. Logs what is wrong with the credentials. */
int node_new(sd_event *e, const Config *c, Node **ret);
Node *node_free(Node *n);
DEFINE_TRIVIAL_CLEANUP_FUNC(Node *, node_free);

int node_lookup_service(Node *n,
                        const char *namespace,
                        const char *service,
                        node_lookup_cb_t cb,
                        void *userdata,
                        NodeLookup **ret);
NodeLookup *node_lookup_cancel(NodeLookup *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(NodeLookup *, node_lookup_cancel);

/* What an advanced task's pod takes from its namespace, as remote-controller does: the
 * lagoon-env secret (with lagoon-platform-env) or else the lagoon-env config map as envFrom,
 * with deployerToken a legacy lagoon-deployer-token-* secret of the lagoon-deployer
 * service account, with volumeMounts the PVCs of storage class "bulk", and the secrets
 * labelled lagoon.sh/dynamic-secret. Missing objects are not errors; a failed list of
 * PVCs or dynamic secrets is (error set: the pod would lack what it needs). */
typedef struct NodeAdvancedContext {
        char **env_from_secrets;
        char **env_from_config_maps;
        char *deployer_token_secret;
        char **bulk_volumes;
        char **dynamic_secrets;
        char *error; /* the API's answer when a list failed: the task cannot run */
} NodeAdvancedContext;

void node_advanced_context_done(NodeAdvancedContext *c);

typedef void (*node_context_cb_t)(NodeLookup *l, NodeAdvancedContext *ctx, void *userdata);

int node_lookup_advanced_context(Node *n,
                                 const char *namespace,
                                 bool deployer_token,
                                 bool volume_mounts,
                                 node_context_cb_t cb,
                                 void *userdata,
                                 NodeLookup **ret);

/* Active/standby, as remote-controller's createActiveStandbyRole/deleteActiveStandbyRole:
 * RoleBinding "lagoon-deployer-activestandby" in the destination namespace, binding
 * ClusterRole admin to the source namespace's lagoon-deployer service account, so the
 * switch (run in the source) may act on production. Create: 409 AlreadyExists counts as
 * done. Delete: 404 counts as done; cb (may be NULL) gets the namespace, the tag given,
 * and 0 or the error, from the event loop. */
#define NODE_ACTIVESTANDBY_ROLE_BINDING "lagoon-deployer-activestandby"
typedef void (*node_rb_cb_t)(NodeLookup *l, int error, const char *error_text, void *userdata);
typedef void (*node_done_cb_t)(const char *namespace, const char *tag, int error, void *userdata);
int node_role_binding_create(Node *n,
                             const char *destination,
                             const char *source,
                             node_rb_cb_t cb,
                             void *userdata,
                             NodeLookup **ret);
int node_role_binding_delete(Node *n, const char *namespace, const char *tag, node_done_cb_t cb, void *userdata);

/* Cluster mode: which node should run a standard task of this service? The API
 * server's list of the service's pods: this node when one of them runs here, else the
 * node of the first Ready one (oldest first), NULL when none runs (an API pod, from any
 * node). error < 0: the list failed. Called once, from the event loop. */
typedef void (*node_locate_cb_t)(NodeLookup *l, int error, const char *node_name, void *userdata);
int node_locate_service(Node *n,
                        const char *namespace,
                        const char *service,
                        node_locate_cb_t cb,
                        void *userdata,
                        NodeLookup **ret);

/* The API server's client, NULL when none is configured (kubelet only). */
KubeClient *node_api(Node *n);
const char *node_name(Node *n);

/* Deletes all but the newest `keep` finished task pods of this node in namespace, never
 * one for which in_use() says its task is still followed. */
typedef bool (*node_pod_in_use_t)(const char *namespace, const char *name, void *userdata);
void node_prune_task_pods(Node *n, const char *namespace, unsigned keep, node_pod_in_use_t in_use, void *userdata);

/* The pod of a task whose record is lost: deletes it, then removes dir, the task's
 * container directory (a failed delete keeps dir, so the next start tries again).
 * -EOPNOTSUPP without an API server, -EBUSY when too many requests are in flight. */
int node_delete_orphan_pod(Node *n, const char *namespace, const char *name, const char *dir);
