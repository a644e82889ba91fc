/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Finding a running CRI container's OCI bundle on this node, from the container id the
 * kubelet reports ("containerd://<id>", "cri-o://<id>"), in the container runtime's own
 * state directories. See DESIGN.md "Launching directly through the container runtime". */

#include <sys/types.h>

#define RUNTIME_STATE_CONTAINERD_DEFAULT "/run/containerd"
#define RUNTIME_STATE_CONTAINERD_NAMESPACE_DEFAULT "k8s.io"
#define RUNTIME_STATE_CRIO_RUN_ROOT_DEFAULT "/run/containers/storage"

typedef struct RuntimeStateRoots {
        const char *containerd_state;     /* containerd's state dir; NULL → /run/containerd */
        const char *containerd_namespace; /* NULL → k8s.io (where the CRI plugin puts pods) */
        const char *crio_run_root;        /* CRI-O's storage run root; NULL → /run/containers/storage */
} RuntimeStateRoots;

typedef struct RuntimeServiceBundle {
        char *runtime;    /* "containerd" or "cri-o" */
        char *id;         /* the bare container id */
        char *bundle_dir; /* holds the service's config.json */
        char *rootfs;     /* absolute: the service's live root (a mount) */
        pid_t pid;        /* the container's init process */
        char *netns_path; /* "/proc/<pid>/ns/net", for messages: the runtime gets netns_fd's namespace */
        int netns_fd;     /* that namespace, opened while the process was pinned by a pidfd */
} RuntimeServiceBundle;

void runtime_service_bundle_done(RuntimeServiceBundle *b);

/* containerd: <state>/io.containerd.runtime.v2.task/<ns>/<id>/{config.json,rootfs,init.pid};
 * CRI-O: <runroot>/overlay-containers/<id>/userdata/{config.json,pidfile}, rootfs from
 * config.json's root.path. The container's process must be alive with a network
 * namespace, which is opened (netns_fd) while a pidfd pins the process. Errors, with a
 * sentence in *ret_error (when non-NULL):
 * -EINVAL malformed container id or id with '/' or "..";
 * -EPROTONOSUPPORT a runtime other than containerd or cri-o ("unsupported runtime docker://");
 * -ENOENT no bundle: the container is not on this node ("container abc: not on this node
 *  (no bundle in …)");
 * -EBADMSG config.json or the pid file unusable;
 * -ESRCH the container's process is gone; -ENOMEM. */
int runtime_state_find(const RuntimeStateRoots *roots,
                       const char *container_id,
                       RuntimeServiceBundle *ret,
                       char **ret_error);
