/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* claim.c's pure parts: the Lease name a task id maps to (a valid name for every id
 * the daemon accepts, distinct for ids that differ only in case or punctuation), and the
 * settings it refuses. The claim protocol itself runs against the Kubernetes API test
 * peer in tests/integration/test_cluster.py. */

#include <string.h>

#include "claim.h"
#include "tests.h"

static bool is_lease_name(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
                return false;
        return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static char *name_of(const char *id) {
        char *n = NULL;

        ASSERT_OK(claim_lease_name(id, &n));
        ASSERT(is_lease_name(n));
        return n;
}

TEST(lease_names) {
        _cleanup_free_ char *a = name_of("1234"), *b = name_of("lagoon-task-7m5zypx"), *c = name_of("Task_1"),
                            *d = name_of("task-1"), *e = name_of("TASK_1"), *f = name_of("..x.."), *g = name_of("_"),
                            *h = name_of("-");
        char long_id[300];
        char *n = NULL;

        /* Lowercase DNS labels are kept as they are: an operator finds the claim by id. */
        ASSERT_STREQ(a, "lagoon-task-1234");
        ASSERT_STREQ(b, "lagoon-task-lagoon-task-7m5zypx");
        /* Everything else gets the exact id's hash: no two ids share a claim. */
        ASSERT(strncmp(c, "lagoon-task-task-1-", strlen("lagoon-task-task-1-")) == 0);
        ASSERT(strcmp(c, d) != 0 && strcmp(c, e) != 0 && strcmp(d, e) != 0);
        ASSERT(strcmp(f, g) != 0 && strcmp(g, h) != 0);
        /* Ids longer than a label still make a valid name. */
        memset(long_id, 'a', sizeof(long_id) - 1);
        long_id[sizeof(long_id) - 1] = 0;
        free(name_of(long_id));
        ASSERT(claim_lease_name("", &n) == -EINVAL);
        ASSERT(claim_lease_name(NULL, &n) == -EINVAL);
}

TEST(settings) {
        ClaimSet *s = NULL;
        const ClaimSettings no_namespace = {.holder = "node-1", .duration_usec = 60 * USEC_PER_SEC};
        const ClaimSettings short_lease = {.namespace = "ns", .holder = "node-1", .duration_usec = 1};

        ASSERT(claim_set_new(NULL, NULL, &no_namespace, NULL, NULL, NULL, &s) == -EINVAL);
        ASSERT(claim_set_new(NULL, (KubeClient *) 1, &no_namespace, NULL, NULL, NULL, &s) == -EINVAL);
        ASSERT(claim_set_new(NULL, (KubeClient *) 1, &short_lease, NULL, NULL, NULL, &s) == -EINVAL);
        ASSERT(!s);
        ASSERT_STREQ(claim_state_to_string(CLAIM_THEIRS), "theirs");
        ASSERT(!claim_state_to_string(_CLAIM_STATE_MAX));
}

int main(void) {
        RUN(lease_names);
        RUN(settings);
        return 0;
}
