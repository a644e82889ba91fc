/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* User and group lookups for the control API's access check. The reentrant NSS calls
 * answer ERANGE when the caller's buffer is too small for the entry (large groups):
 * one loop grows it for every lookup. */

#include <grp.h>
#include <pwd.h>

#include "macro.h"
#include "user-util.h"

/* The buffer doubles while it is at most this: entries up to 2 MiB fit. */
#define NSS_BUFFER_MAX ((size_t) 1024U * 1024U)

typedef int (*nss_call_t)(const void *key, void *entry, char *buf, size_t size, void **result);

/* Runs call with a buffer that grows until the entry fits; *ret_buf owns the entry's
 * strings. 1 found, 0 no such entry, -errno. */
static int nss_lookup(nss_call_t call, const void *key, void *entry, char **ret_buf) {
        _cleanup_free_ char *buf = NULL;
        void *result = NULL;
        size_t size = 4096;
        int r;

        for (;;) {
                free(buf);
                buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                r = call(key, entry, buf, size, &result);
                if (r != ERANGE)
                        break;
                if (size > NSS_BUFFER_MAX)
                        return -ERANGE;
                size *= 2;
        }
        if (r > 0)
                return -r;
        if (!result)
                return 0;
        *ret_buf = TAKE_PTR(buf);
        return 1;
}

static int call_getgrnam(const void *key, void *entry, char *buf, size_t size, void **result) {
        return getgrnam_r(key, entry, buf, size, (struct group **) result);
}

static int call_getpwuid(const void *key, void *entry, char *buf, size_t size, void **result) {
        return getpwuid_r(*(const uid_t *) key, entry, buf, size, (struct passwd **) result);
}

int group_lookup_gid(const char *name, gid_t *ret) {
        _cleanup_free_ char *buf = NULL;
        struct group gr;
        int r;

        if (isempty(name))
                return -ENOENT;
        r = nss_lookup(call_getgrnam, name, &gr, &buf);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        *ret = gr.gr_gid;
        return 0;
}

int user_in_group(uid_t uid, gid_t gid) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        struct passwd pw;
        int r, n = 64;

        r = nss_lookup(call_getpwuid, &uid, &pw, &buf);
        if (r <= 0)
                return r; /* no account: only its process credentials count */
        if (pw.pw_gid == gid)
                return 1;

        for (;;) {
                int m = n;

                free(groups);
                groups = calloc(n, sizeof(gid_t));
                if (!groups)
                        return -ENOMEM;
                if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &m) >= 0) {
                        n = m;
                        break;
                }
                if (m <= n || m > 65536)
                        return -ERANGE;
                n = m;
        }
        for (int i = 0; i < n; i++)
                if (groups[i] == gid)
                        return 1;
        return 0;
}
