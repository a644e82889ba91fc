/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Persistence of task records under <state_dir>/tasks/<id>.json. Every save is
 * atomic and durable: write a temporary file, fsync, rename over, fsync the
 * directory. A record that cannot be read or parsed is moved to
 * <state_dir>/tasks/corrupt/ and reported to the caller, never fatal. */

#include <sys/types.h>

#include "macro.h"
#include "task.h"

typedef struct Store Store;

/* Takes an exclusive flock on <state_dir>/lock for the Store's lifetime: -EBUSY when
 * another process holds it (store_lock_owner() then gives its PID, 0 if unknown). */
int store_open(const char *state_dir, Store **ret);
pid_t store_lock_owner(const char *state_dir);
Store *store_free(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_free);

/* One limit for writing and reading a record (its JSON and newline): store_save() refuses
 * a larger one with -EFBIG rather than write what store_load_all() would move aside. */
#define STORE_RECORD_MAX (1024U * 1024U)
/* A new task's record at most: the rest is room for what it gains while it runs (taskData
 * up to 256 KiB, reasons, ids), checked at submission with store_record_size(). */
#define STORE_RECORD_NEW_MAX (STORE_RECORD_MAX - 384U * 1024U)

int store_save(Store *s, const Task *t);
/* store_save() without the fsyncs: for a record whose loss in a power cut changes nothing
 * (a restart after one does the same with the record before it). A process's death
 * cannot lose it either way. */
int store_save_volatile(Store *s, const Task *t);
int store_record_size(const Task *t, size_t *ret);
int store_remove(Store *s, const char *id);

/* Calls cb for each valid record (ownership of the Task passes to cb), and
 * corrupt_cb (may be NULL) for each record moved aside, with the error. */
typedef int (*store_load_cb_t)(Task *t, void *userdata);
typedef void (*store_corrupt_cb_t)(const char *file_name, int error, const char *message, void *userdata);
int store_load_all(Store *s, store_load_cb_t cb, store_corrupt_cb_t corrupt_cb, void *userdata);

/* Paths of per-task files kept under the state dir. */
int store_task_log_path(Store *s, const char *id, char **ret); /* <state>/logs/<id>.log */
int store_container_dir(Store *s, const char *id, char **ret); /* <state>/containers/<id> */
/* The task ids that have a directory under <state>/containers/ (names that are no task id
 * are skipped), as a NULL-terminated strv; *ret is NULL when there are none. */
int store_list_container_dirs(Store *s, char ***ret);
const char *store_state_dir(Store *s);
