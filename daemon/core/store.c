/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Task records on disk: <state>/tasks/<id>.json, replaced atomically and durably
 * (write_file_atomic) before a transition is announced anywhere. Unreadable or
 * invalid records are moved to <state>/tasks/corrupt/ so the daemon keeps going and
 * an operator can look at them. */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs-util.h"
#include "json.h"
#include "log.h"
#include "store.h"

struct Store {
        char *state_dir;
        char *tasks_dir;
        char *corrupt_dir;
        char *logs_dir;
        char *containers_dir;
        int lock_fd; /* <state>/lock, flock'ed exclusively while the store is open */
};

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        free(s->state_dir);
        free(s->tasks_dir);
        free(s->corrupt_dir);
        free(s->logs_dir);
        free(s->containers_dir);
        safe_close(s->lock_fd);
        free(s);
        return NULL;
}

#define LOCK_WAIT_MS 5000U
#define LOCK_RETRY_MS 50U

/* One daemon per state directory: two would adopt and supervise the same tasks. The
 * lock goes with the process (O_CLOEXEC, so conmon never inherits it); the file holds
 * the owner's PID for the refusal message. */
static int store_lock(Store *s) {
        _cleanup_free_ char *path = path_join(s->state_dir, "lock");
        char buf[32];
        int fd, n;

        if (!path)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        for (unsigned waited_ms = 0;; waited_ms += LOCK_RETRY_MS) {
                pid_t owner;

                if (flock(fd, LOCK_EX | LOCK_NB) >= 0)
                        break;
                if (errno != EWOULDBLOCK) {
                        int r = -errno;
                        safe_close(fd);
                        return r;
                }
                /* Held, but its daemon is gone: a child it forked still has the fd until
                 * its exec or close (a restart right after a crash). That goes soon. */
                owner = store_lock_owner(s->state_dir);
                if (owner <= 0 || (kill(owner, 0) >= 0 || errno != ESRCH) || waited_ms >= LOCK_WAIT_MS) {
                        safe_close(fd);
                        return -EBUSY;
                }
                if (waited_ms == 0)
                        log_notice("State directory %s: its lock is still held though its daemon (PID %d) is gone; "
                                   "waiting up to %u s for that daemon's children to let go.",
                                   s->state_dir, (int) owner, LOCK_WAIT_MS / 1000);
                (void) usleep(LOCK_RETRY_MS * 1000);
        }
        n = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t) n, 0) != n) {
                int r = -errno;
                safe_close(fd);
                return r;
        }
        s->lock_fd = fd;
        return 0;
}

pid_t store_lock_owner(const char *state_dir) {
        _cleanup_free_ char *path = path_join(state_dir, "lock");
        _cleanup_close_ int fd = -EBADF;
        char buf[32] = "";
        ssize_t k;
        int pid;

        if (!path)
                return 0;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return 0;
        k = read(fd, buf, sizeof(buf) - 1);
        if (k <= 0 || sscanf(buf, "%d", &pid) != 1 || pid <= 0)
                return 0;
        return pid;
}

int store_open(const char *state_dir, Store **ret) {
        _cleanup_(store_freep) Store *s = NULL;
        int r;

        s = calloc(1, sizeof(Store));
        if (!s)
                return -ENOMEM;
        s->lock_fd = -EBADF;
        s->state_dir = strdup(state_dir);
        s->tasks_dir = path_join(state_dir, "tasks");
        s->corrupt_dir = path_join(state_dir, "tasks/corrupt");
        s->logs_dir = path_join(state_dir, "logs");
        s->containers_dir = path_join(state_dir, "containers");
        if (!s->state_dir || !s->tasks_dir || !s->corrupt_dir || !s->logs_dir || !s->containers_dir)
                return -ENOMEM;

        const char *dirs[] = {s->tasks_dir, s->corrupt_dir, s->logs_dir, s->containers_dir};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                r = mkdir_p(dirs[i], 0700);
                if (r < 0)
                        return r;
        }
        r = store_lock(s);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

static int record_path(Store *s, const char *id, char **ret) {
        if (!task_id_is_valid(id))
                return -EINVAL;
        return asprintf(ret, "%s/%s.json", s->tasks_dir, id) < 0 ? -ENOMEM : 0;
}

/* The record's text, newline-terminated (json_format's NUL becomes the newline). */
static int record_text(const Task *t, char **ret, size_t *ret_size) {
        _cleanup_json_ JsonValue *v = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        r = task_to_record(t, &v);
        if (r < 0)
                return r;
        r = json_format(v, false, &text, &len);
        if (r < 0)
                return r;
        text[len] = '\n';
        *ret = TAKE_PTR(text);
        *ret_size = len + 1;
        return 0;
}

static int store_save_full(Store *s, const Task *t, bool durable) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        size_t size;
        int r;

        r = record_path(s, t->id, &path);
        if (r < 0)
                return r;
        r = record_text(t, &text, &size);
        if (r < 0)
                return r;
        if (size > STORE_RECORD_MAX)
                return -EFBIG;
        return write_file_atomic_full(path, text, size, 0600, durable);
}

int store_save(Store *s, const Task *t) {
        return store_save_full(s, t, true);
}

int store_save_volatile(Store *s, const Task *t) {
        return store_save_full(s, t, false);
}

int store_record_size(const Task *t, size_t *ret) {
        _cleanup_free_ char *text = NULL;

        return record_text(t, &text, ret);
}

int store_remove(Store *s, const char *id) {
        _cleanup_free_ char *path = NULL, *log = NULL, *cursor = NULL;
        int r;

        r = record_path(s, id, &path);
        if (r < 0)
                return r;
        r = store_task_log_path(s, id, &log);
        if (r < 0)
                return r;
        if (asprintf(&cursor, "%s.cursor", log) < 0)
                return -ENOMEM;
        (void) unlink(log);
        (void) unlink(cursor);
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return fsync_directory_of(path);
}

static void
move_aside(Store *s, const char *name, int error, const char *message, store_corrupt_cb_t corrupt_cb, void *userdata) {
        _cleanup_free_ char *from = path_join(s->tasks_dir, name), *to = path_join(s->corrupt_dir, name);

        if (from && to && rename(from, to) < 0)
                log_debug_errno(errno, "Failed to move %s aside: %m", from);
        if (corrupt_cb)
                corrupt_cb(name, error, message, userdata);
}

int store_load_all(Store *s, store_load_cb_t cb, store_corrupt_cb_t corrupt_cb, void *userdata) {
        DIR *d = NULL;
        struct dirent *de;
        int r;

        r = dir_open(s->tasks_dir, &d);
        if (r < 0)
                return r;

        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL, *text = NULL, *error = NULL, *id = NULL;
                _cleanup_json_ JsonValue *v = NULL;
                _cleanup_(task_freep) Task *t = NULL;
                const char *dot;
                size_t size;
                int q;

                if (de->d_name[0] == '.')
                        continue;
                if (de->d_type == DT_DIR)
                        continue;
                dot = strrchr(de->d_name, '.');
                if (!dot || !streq(dot, ".json")) {
                        /* A leftover temporary file from a crash mid-write: the rename
                         * never happened, so the old record is still intact. */
                        if (strstr(de->d_name, ".json.tmp."))
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                        continue;
                }
                id = strndup(de->d_name, (size_t) (dot - de->d_name));
                path = path_join(s->tasks_dir, de->d_name);
                if (!id || !path) {
                        r = -ENOMEM;
                        break;
                }
                q = read_full_file(path, STORE_RECORD_MAX, &text, &size);
                if (q < 0) {
                        move_aside(s, de->d_name, q, "cannot read record", corrupt_cb, userdata);
                        continue;
                }
                q = json_parse(text, size, 16, &v, &error);
                if (q < 0) {
                        move_aside(s, de->d_name, q, error ?: "invalid JSON", corrupt_cb, userdata);
                        continue;
                }
                q = task_from_json(v, &t);
                if (q < 0) {
                        move_aside(s, de->d_name, q, "not a valid task record", corrupt_cb, userdata);
                        continue;
                }
                if (!streq(t->id, id)) {
                        move_aside(s, de->d_name, -EBADMSG, "task id does not match file name", corrupt_cb, userdata);
                        continue;
                }
                q = cb(TAKE_PTR(t), userdata);
                if (q < 0) {
                        r = q;
                        break;
                }
        }
        closedir(d);
        return r;
}

int store_task_log_path(Store *s, const char *id, char **ret) {
        if (!task_id_is_valid(id))
                return -EINVAL;
        return asprintf(ret, "%s/%s.log", s->logs_dir, id) < 0 ? -ENOMEM : 0;
}

int store_container_dir(Store *s, const char *id, char **ret) {
        if (!task_id_is_valid(id))
                return -EINVAL;
        *ret = path_join(s->containers_dir, id);
        return *ret ? 0 : -ENOMEM;
}

int store_list_container_dirs(Store *s, char ***ret) {
        _cleanup_strv_free_ char **ids = NULL;
        struct dirent *de;
        DIR *d = NULL;
        int r;

        r = dir_open(s->containers_dir, &d);
        if (r < 0)
                return r;
        while ((de = readdir(d)))
                if (de->d_type == DT_DIR && task_id_is_valid(de->d_name) && (r = strv_extend(&ids, de->d_name)) < 0)
                        break;
        closedir(d);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ids);
        return 0;
}

const char *store_state_dir(Store *s) {
        return s->state_dir;
}
