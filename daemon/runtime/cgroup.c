/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The daemon's own cgroup and where task containers' cgroups go (see cgroup.h). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "cgroup.h"
#include "fs-util.h"
#include "macro.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define PROC_CGROUP_MAX (64 * 1024)

int cgroup_parse_self(const char *text, char **ret_path, bool *ret_v1) {
        _cleanup_free_ char *copy = strdup(text ?: ""), *path = NULL;
        bool v1 = false;

        if (!copy)
                return -ENOMEM;
        for (char *l = copy, *next; l && *l; l = next) {
                next = strchr(l, '\n');
                if (next)
                        *next++ = 0;
                if (startswith(l, "0::")) {
                        if (l[3] != '/')
                                return -EBADMSG;
                        free(path);
                        path = strdup(l + 3);
                        if (!path)
                                return -ENOMEM;
                } else if (*l)
                        v1 = true;
        }
        if (!path && !v1)
                return -EBADMSG;
        *ret_path = TAKE_PTR(path);
        *ret_v1 = v1;
        return 0;
}

/* What is mounted decides, not /proc/self/cgroup: a kernel with v1 controllers lists
 * them there even when systemd mounted only cgroup2 (systemd's cg_all_unified()). */
static bool cgroup_unified(void) {
        struct statfs fs;

        return statfs(CGROUP_ROOT, &fs) >= 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

static int read_self(char **ret_path, bool *ret_v1) {
        _cleanup_free_ char *data = NULL;
        int r;

        r = read_full_file("/proc/self/cgroup", PROC_CGROUP_MAX, &data, NULL);
        if (r < 0)
                return r;
        r = cgroup_parse_self(data, ret_path, ret_v1);
        if (r >= 0 && *ret_path && cgroup_unified())
                *ret_v1 = false;
        return r;
}

/* "/a/b/supervisor" → "/a/b"; anything else unchanged. */
static void strip_supervisor(char *path) {
        size_t n = strlen(path), k = strlen("/" CGROUP_SUPERVISOR);

        if (n >= k && streq(path + n - k, "/" CGROUP_SUPERVISOR))
                path[n - k == 0 ? 1 : n - k] = 0;
}

int cgroup_enter_supervisor(void) {
        _cleanup_free_ char *own = NULL, *dir = NULL, *procs = NULL;
        _cleanup_close_ int fd = -EBADF;
        bool v1;
        int r;

        if (!getenv("INVOCATION_ID"))
                return 0; /* not started by systemd: leave the caller's cgroup alone */
        r = read_self(&own, &v1);
        if (r < 0)
                return r;
        if (v1 || !own)
                return 0;
        if (endswith(own, "/" CGROUP_SUPERVISOR))
                return 1;

        if (asprintf(&dir, "%s%s/%s", CGROUP_ROOT, streq(own, "/") ? "" : own, CGROUP_SUPERVISOR) < 0)
                return -ENOMEM;
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return errno == EACCES || errno == EROFS || errno == EPERM ? 0 : -errno; /* not delegated */
        procs = path_join(dir, "cgroup.procs");
        if (!procs)
                return -ENOMEM;
        fd = open(procs, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (write(fd, "0", 1) != 1)
                return errno > 0 ? -errno : -EIO;
        return 1;
}

int cgroup_task_path_from(const char *proc_self_cgroup, bool unified, const char *container_id, char **ret) {
        _cleanup_free_ char *own = NULL;
        bool v1;
        char *s;
        int r;

        r = cgroup_parse_self(proc_self_cgroup, &own, &v1);
        if (r < 0)
                return r;
        if (unified && own)
                v1 = false;
        if (v1 || !own)
                r = asprintf(&s, "lagoon-taskd/%s", container_id);
        else {
                strip_supervisor(own);
                r = asprintf(&s, "%s%slagoon-taskd/%s", own, endswith(own, "/") ? "" : "/", container_id);
        }
        if (r < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int cgroup_task_path(const char *container_id, char **ret) {
        _cleanup_free_ char *data = NULL;
        int r;

        r = read_full_file("/proc/self/cgroup", PROC_CGROUP_MAX, &data, NULL);
        if (r < 0)
                return r;
        return cgroup_task_path_from(data, cgroup_unified(), container_id, ret);
}
