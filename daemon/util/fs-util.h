/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* File system helpers shared by the modules. */

#include <stddef.h>
#include <sys/types.h>

/* Reads a whole file, NUL-terminated. -EFBIG when it holds more than max_size bytes. */
int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
/* Durable replace: temporary file in the same directory, fsync, rename, fsync dir. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);
int mkdir_p(const char *path, mode_t mode);
/* Removes a tree; never crosses into another file system (a mount point is left
 * and reported as -EBUSY). Missing path is fine. */
int rm_rf(const char *path);
int fsync_directory_of(const char *path);
/* Searches PATH unless name contains '/'. -ENOENT. */
int find_executable(const char *name, char **ret);
/* "%s/%s" joined; NULL on OOM. */
char *path_join(const char *a, const char *b);
