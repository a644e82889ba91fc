/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Derivation of a task's OCI config.json from the service's (pure JSON work, plus
 * a look into the service rootfs for the Lagoon entrypoint). See DESIGN.md
 * "Launching directly through the container runtime". */

#include <stdbool.h>

#include "config.h"
#include "json.h"

typedef struct BundleMount {
        const char *source;      /* absolute host path */
        const char *destination; /* absolute path in the container */
        bool read_only;
} BundleMount;

typedef struct BundleParams {
        char *const *args;        /* new process.args (at least one); NULL keeps the image's own */
        char *const *env_add;     /* "K=V", appended; an existing K is replaced in place (later duplicates dropped) */
        char *const *env_remove;  /* keys removed from process.env, e.g. "CRONJOBS" */
        const char *hostname;     /* new hostname; NULL keeps the service's */
        const char *root_path;    /* absolute path of the task's root (the overlay mount) */
        const char *cgroups_path; /* linux.cgroupsPath for the task; NULL removes the service's (runtime default) */
        char *const *annotations; /* "key=value" pairs added to annotations (replacing the same key) */
        SeccompMode seccomp;
        const JsonValue *seccomp_profile; /* OCI linux.seccomp object for SECCOMP_MODE_PROFILE */
        bool seccomp_bpf;                 /* crun: also the profile's program (SECCOMP_BPF_ANNOTATION) */
        const BundleMount *mounts_add;    /* bind mounts appended to mounts (rbind, nosuid, nodev) */
        size_t n_mounts_add;
        const char *netns_path; /* when set, the network namespace is joined: {"type":"network","path":…}
                                 * (a node clone joins its pod's), whatever the service's said */
} BundleParams;

/* Returns a new config.json tree: a copy of the service's with process.args/env,
 * hostname, root {path, readonly:false}, linux.cgroupsPath, annotations (merged)
 * replaced as above, process.terminal false, process.consoleSize removed,
 * process.noNewPrivileges true, and linux.seccomp chosen by mode (AUTO: the service's
 * own if present, else the default profile; DEFAULT; UNCONFINED: removed; PROFILE: a
 * copy of seccomp_profile); with seccomp_bpf, also the chosen profile compiled to BPF in
 * the annotation run.oci.seccomp_bpf_data (see seccomp_bpf_compile()), linux.seccomp
 * kept (crun reads flags and listenerPath there, and a crun without the annotation still
 * confines the task), or only linux.seccomp when the profile is not translatable (an
 * annotation of that name from the service or the task is never kept). For a
 * clone of a CRI (Kubernetes) container also: with a hostname the uts namespace is
 * private (a CRI container shares its sandbox's by path, or the host's); with netns_path
 * the network namespace is that one and the net.* sysctls (the namespace owner's
 * business) are dropped, as are the ipc sysctls when the ipc namespace is joined by
 * path; the kubelet's termination-message file (/dev/termination-log, or any mount of
 * <kubelet>/pods/<uid>/containers/<name>/<file>) is not mounted; the runtime's
 * io.kubernetes.* and io.container.manager annotations are dropped. Everything else
 * (mounts, other namespaces, user, capabilities, resources…) is kept. -EINVAL with
 * *ret_error set (when ret_error is non-NULL) when the service config is not a usable
 * OCI config ("config.json: process.env[3] is not a string") or a parameter is invalid;
 * -ENOMEM. Never crashes on any JSON shape. */
int bundle_derive(const JsonValue *service_config, const BundleParams *p, JsonValue **ret, char **ret_error);

/* The service's rootfs as an absolute path (root.path, relative to bundle_dir, which
 * itself may be relative to the working directory). -EINVAL when root.path is missing. */
int bundle_rootfs_path(const char *bundle_dir, const JsonValue *service_config, char **ret);

/* Where the daemon's Init= is bind-mounted in a task container that gets it (/dev is a
 * tmpfs in OCI configs, so the runtime can create the mount point there). */
#define BUNDLE_INIT_PATH "/dev/init"

/* process.args for a shell command: Lagoon's
 * "/sbin/tini -- /lagoon/entrypoints.sh /bin/sh -c CMD" when the rootfs has both as
 * executable regular files, else "/bin/sh -c CMD", with "INIT --" before it when init
 * (a path in the container) is given and the rootfs has /bin/sh: a shell as PID 1
 * ignores SIGTERM, so a cancel would always wait for KillGraceSec=. Paths are resolved
 * with the rootfs as "/" (openat2 RESOLVE_IN_ROOT, or an lstat walk on old kernels): no
 * symlink leads out of it. Returns 1 when init is used, 0 when not; -ENOENT etc. when rootfs cannot be opened. */
int bundle_command_args(const char *rootfs, const char *command, const char *init, char ***ret);

/* Reads (at most 4 MiB) and parses <bundle_dir>/config.json; messages name the path. */
int bundle_read_config(const char *bundle_dir, JsonValue **ret, char **ret_error);
