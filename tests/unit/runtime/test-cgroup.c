/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* cgroup.c: reading /proc/self/cgroup and choosing task cgroup paths. */

#include <errno.h>
#include <string.h>

#include "cgroup.h"
#include "tests.h"

static char *task_path_in(const char *text, bool unified) {
        char *p = NULL;
        ASSERT_OK(cgroup_task_path_from(text, unified, "lagoon-task-x", &p));
        return p;
}

static char *task_path(const char *text) {
        return task_path_in(text, false);
}

TEST(parse) {
        _cleanup_free_ char *path = NULL;
        bool v1 = true;

        ASSERT_OK(cgroup_parse_self("0::/system.slice/lagoon-taskd.service\n", &path, &v1));
        ASSERT_STREQ(path, "/system.slice/lagoon-taskd.service");
        ASSERT(!v1);
        path = mfree(path);

        /* hybrid: v1 hierarchies plus the unified one */
        ASSERT_OK(cgroup_parse_self("12:memory:/system.slice/x.service\n1:name=systemd:/system.slice/x.service\n"
                                    "0::/system.slice/x.service\n",
                                    &path, &v1));
        ASSERT(v1);
        ASSERT_STREQ(path, "/system.slice/x.service");
        path = mfree(path);

        /* v1 only */
        ASSERT_OK(cgroup_parse_self("3:cpu,cpuacct:/\n", &path, &v1));
        ASSERT(v1);
        ASSERT(!path);

        ASSERT_EQ(cgroup_parse_self("", &path, &v1), -EBADMSG);
        ASSERT_EQ(cgroup_parse_self("0::relative\n", &path, &v1), -EBADMSG);
        ASSERT_EQ(cgroup_parse_self("\n\n", &path, &v1), -EBADMSG);
}

TEST(task_path) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL;

        /* v2: below the unit, beside (not below) the daemon's supervisor leaf */
        a = task_path("0::/system.slice/lagoon-taskd.service/supervisor\n");
        ASSERT_STREQ(a, "/system.slice/lagoon-taskd.service/lagoon-taskd/lagoon-task-x");
        b = task_path("0::/system.slice/lagoon-taskd.service\n");
        ASSERT_STREQ(b, "/system.slice/lagoon-taskd.service/lagoon-taskd/lagoon-task-x");
        c = task_path("0::/\n");
        ASSERT_STREQ(c, "/lagoon-taskd/lagoon-task-x");
        /* a cgroup merely ending in "supervisor" is not the leaf */
        d = task_path("0::/x/mysupervisor\n");
        ASSERT_STREQ(d, "/x/mysupervisor/lagoon-taskd/lagoon-task-x");
        /* v1/hybrid: relative, runc joins it to its own cgroup in each hierarchy */
        e = task_path("4:memory:/user.slice\n0::/user.slice\n");
        ASSERT_STREQ(e, "lagoon-taskd/lagoon-task-x");
}

TEST(unified_with_v1_listed) {
        _cleanup_free_ char *a = NULL, *b = NULL;

        /* systemd mounted only cgroup2, but the kernel still lists its v1 controllers */
        a = task_path_in("9:name=systemd:/\n4:memory:/\n0::/system.slice/lagoon-taskd.service/supervisor\n", true);
        ASSERT_STREQ(a, "/system.slice/lagoon-taskd.service/lagoon-taskd/lagoon-task-x");
        /* no unified path at all: v1 even if asked */
        b = task_path_in("4:memory:/x\n", true);
        ASSERT_STREQ(b, "lagoon-taskd/lagoon-task-x");
}

int main(void) {
        RUN(parse);
        RUN(task_path);
        RUN(unified_with_v1_listed);
        return 0;
}
