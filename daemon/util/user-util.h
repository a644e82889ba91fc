/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* User and group database lookups (NSS), with the buffer grown as the entry needs. */

#include <sys/types.h>

/* The gid of a group by name. -ENOENT when there is none (or name is empty). */
int group_lookup_gid(const char *name, gid_t *ret);
/* Whether the account of uid lists gid, as primary or supplementary group: 1 yes, 0 no
 * (also when uid has no account), or -errno. */
int user_in_group(uid_t uid, gid_t gid);
