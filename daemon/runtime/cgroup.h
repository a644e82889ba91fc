/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's place in the cgroup tree. Under systemd with Delegate=yes on cgroup v2,
 * the unit's cgroup is ours, but "no internal processes" forbids processes in a cgroup
 * whose children have controllers enabled: the daemon (and the conmon processes it
 * forks) move into the leaf <unit>/supervisor, and task containers get cgroups at
 * <unit>/lagoon-taskd/<container id>. On cgroup v1 and hybrid hosts nothing moves: runc
 * joins relative paths to its own cgroup in each hierarchy. Which layout is in force is
 * what /sys/fs/cgroup is (cgroup2 or not), as systemd decides it. */

#include <stdbool.h>

#define CGROUP_SUPERVISOR "supervisor"

/* Parses /proc/self/cgroup text: *ret_path = the unified ("0::") path, *ret_v1 = whether
 * any v1 hierarchy is listed. -EBADMSG when neither is found. */
int cgroup_parse_self(const char *text, char **ret_path, bool *ret_v1);

/* Moves the calling process into <own cgroup>/supervisor when it runs as a systemd
 * service (INVOCATION_ID set) on a cgroup v2-only host and owns its cgroup. Returns 1
 * when moved (or already there), 0 when not applicable, -errno on failure. */
int cgroup_enter_supervisor(void);

/* The linux.cgroupsPath for a task container: "lagoon-taskd/<id>" (relative, cgroup v1 and
 * hybrid) or "<own cgroup without /supervisor>/lagoon-taskd/<id>" (cgroup v2). */
int cgroup_task_path(const char *container_id, char **ret);
/* The same from given /proc/self/cgroup text and whether /sys/fs/cgroup is cgroup2 only
 * (then v1 hierarchies listed in the text are ignored: the kernel lists them anyway). */
int cgroup_task_path_from(const char *proc_self_cgroup, bool unified, const char *container_id, char **ret);
