/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* File system helpers shared by the modules. */

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Reads a whole file, NUL-terminated. -EFBIG when it holds more than max_size bytes. */
int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
/* For paths a task can write: opens name relative to dir_fd (AT_FDCWD for a path whose
 * directories only the daemon controls) without following a final symlink (-ELOOP) or
 * blocking on a FIFO, and only when it is a regular file (-EBADFD otherwise). Returns the
 * fd, O_RDONLY|O_NONBLOCK. */
int open_regular_at(int dir_fd, const char *name);
/* The same, read whole (NUL-terminated); -EFBIG past max_size, checked before reading. */
int read_regular_file_at(int dir_fd, const char *name, size_t max_size, char **ret, size_t *ret_size);
/* Durable replace: temporary file in the same directory, fsync, rename, fsync dir. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);
/* The same without the fsyncs when !durable: still all or nothing (rename), and what a
 * process that dies leaves behind, but not what survives a power loss. */
int write_file_atomic_full(const char *path, const void *data, size_t size, mode_t mode, bool durable);
int mkdir_p(const char *path, mode_t mode);
/* A directory opened for readdir(), its fd O_CLOEXEC (conmon and runc must not inherit
 * it); -errno. */
int dir_open(const char *path, DIR **ret);
/* Removes a tree; never crosses into another file system (a mount point is left
 * and reported as -EBUSY). Missing path is fine. */
int rm_rf(const char *path);
int fsync_directory_of(const char *path);
/* Searches PATH unless name contains '/'. -ENOENT. */
int find_executable(const char *name, char **ret);
/* "%s/%s" joined; NULL on OOM. */
char *path_join(const char *a, const char *b);
