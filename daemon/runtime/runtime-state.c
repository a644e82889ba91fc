/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Runtime state: this module owns the knowledge of where containerd's runc shim (v2) and
 * CRI-O keep a running container's OCI bundle, its root filesystem and the pid of its
 * init process, and the checks that what was found is a live container of this node.
 * Read only: nothing of the service's container is ever written. Outside data (ids from
 * the API, files of another daemon) is checked before use; no logging above debug. */

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "json.h"
#include "process-util.h"
#include "runtime-state.h"

#define STATE_FILE_MAX 4096U
#define CONFIG_FILE_MAX (4U * 1024U * 1024U)
/* The containerd shim's runtime type directory. */
#define CONTAINERD_TASK_DIR "io.containerd.runtime.v2.task"

void runtime_service_bundle_done(RuntimeServiceBundle *b) {
        if (!b)
                return;
        free(b->runtime);
        free(b->id);
        free(b->bundle_dir);
        free(b->rootfs);
        /* Only a found bundle has a netns_fd: a zeroed one's 0 is not ours to close. */
        if (b->netns_path)
                safe_close(b->netns_fd);
        free(b->netns_path);
        *b = (RuntimeServiceBundle){};
}

/* An id (or namespace) becomes one path component: no '/', no "." or "..", printable. */
static bool name_ok(const char *s) {
        if (isempty(s) || strlen(s) > 256 || streq(s, ".") || streq(s, ".."))
                return false;
        for (const char *p = s; *p; p++)
                if (*p == '/' || (unsigned char) *p <= ' ' || *p == 0x7f)
                        return false;
        return !strstr(s, "..");
}

static int read_pid(const char *path, pid_t *ret) {
        _cleanup_free_ char *s = NULL;
        char *end = NULL;
        long v;
        int r;

        r = read_full_file(path, STATE_FILE_MAX, &s, NULL);
        if (r < 0)
                return r;
        s[strcspn(s, "\n")] = 0;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end != 0 || v <= 1 || v > INT_MAX)
                return -EBADMSG;
        *ret = (pid_t) v;
        return 0;
}

static int read_root_path(const char *bundle_dir, char **ret, char **ret_error) {
        _cleanup_free_ char *path = NULL, *data = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        const char *root;
        size_t size = 0;
        char *s;
        int r;

        path = path_join(bundle_dir, "config.json");
        if (!path)
                return -ENOMEM;
        r = read_full_file(path, CONFIG_FILE_MAX, &data, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_error, r == -EFBIG ? -EBADMSG : r, "%s: %s", path, strerror(-r));
        r = json_parse(data, size, JSON_DEPTH_MAX_DEFAULT, &v, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_error, -EBADMSG, "%s: not valid JSON", path);
        root = json_string(json_get_path(v, "root", "path", NULL));
        if (isempty(root))
                return error_message(ret_error, -EBADMSG, "%s: root.path is missing", path);

        if (root[0] == '/')
                s = strdup(root);
        else {
                while (startswith(root, "./"))
                        root += 2;
                s = path_join(bundle_dir, isempty(root) ? "." : root);
        }
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int runtime_state_find(const RuntimeStateRoots *roots,
                       const char *container_id,
                       RuntimeServiceBundle *ret,
                       char **ret_error) {
        _cleanup_(runtime_service_bundle_done) RuntimeServiceBundle b = {.netns_fd = -EBADF};
        _cleanup_free_ char *pidfile = NULL, *runtime = NULL;
        _cleanup_close_ int pidfd = -EBADF;
        const char *sep, *id;
        struct stat st;
        bool containerd;
        int r;

        if (!container_id || !ret)
                return -EINVAL;

        sep = strstr(container_id, "://");
        if (!sep || sep == container_id)
                return error_message(ret_error, -EINVAL, "container id '%s' is not of the form <runtime>://<id>",
                                     container_id);
        runtime = strndup(container_id, (size_t) (sep - container_id));
        if (!runtime)
                return -ENOMEM;
        id = sep + 3;
        if (streq(runtime, "containerd"))
                containerd = true;
        else if (streq(runtime, "cri-o"))
                containerd = false;
        else
                return error_message(ret_error, -EPROTONOSUPPORT,
                                     "unsupported runtime %s:// (only containerd:// and cri-o:// containers can be "
                                     "cloned on the node)",
                                     runtime);
        if (!name_ok(id))
                return error_message(ret_error, -EINVAL, "container id '%s' is not valid", id);

        b.runtime = TAKE_PTR(runtime);
        b.id = strdup(id);
        if (!b.id)
                return -ENOMEM;

        if (containerd) {
                const char *state =
                        roots && roots->containerd_state ? roots->containerd_state : RUNTIME_STATE_CONTAINERD_DEFAULT;
                const char *ns = roots && roots->containerd_namespace ? roots->containerd_namespace
                                                                      : RUNTIME_STATE_CONTAINERD_NAMESPACE_DEFAULT;

                if (!name_ok(ns))
                        return error_message(ret_error, -EINVAL, "containerd namespace '%s' is not valid", ns);
                if (asprintf(&b.bundle_dir, "%s/" CONTAINERD_TASK_DIR "/%s/%s", state, ns, id) < 0) {
                        b.bundle_dir = NULL;
                        return -ENOMEM;
                }
                pidfile = path_join(b.bundle_dir, "init.pid");
        } else {
                const char *runroot =
                        roots && roots->crio_run_root ? roots->crio_run_root : RUNTIME_STATE_CRIO_RUN_ROOT_DEFAULT;

                if (asprintf(&b.bundle_dir, "%s/overlay-containers/%s/userdata", runroot, id) < 0) {
                        b.bundle_dir = NULL;
                        return -ENOMEM;
                }
                pidfile = path_join(b.bundle_dir, "pidfile");
        }
        if (!pidfile)
                return -ENOMEM;

        if (stat(b.bundle_dir, &st) < 0) {
                r = -errno;
                if (r != -ENOENT && r != -ENOTDIR)
                        return error_message(ret_error, r, "container %s: cannot look at %s: %s", id, b.bundle_dir,
                                             strerror(-r));
                st.st_mode = 0;
        }
        if (!S_ISDIR(st.st_mode))
                return error_message(ret_error, -ENOENT, "container %s: not on this node (no bundle in %s)", id,
                                     b.bundle_dir);

        r = read_root_path(b.bundle_dir, &b.rootfs, ret_error);
        if (r < 0)
                return r;
        if (stat(b.rootfs, &st) < 0) {
                r = -errno;
                return error_message(ret_error, r, "container %s: its root %s is not there: %s", id, b.rootfs,
                                     strerror(-r));
        }
        if (!S_ISDIR(st.st_mode))
                return error_message(ret_error, -EBADMSG, "container %s: its root %s is not a directory", id, b.rootfs);

        r = read_pid(pidfile, &b.pid);
        if (r == -ENOENT)
                return error_message(ret_error, -ESRCH, "container %s: not running (no %s)", id, pidfile);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_error, -EBADMSG, "container %s: unusable pid file %s: %s", id, pidfile,
                                     strerror(-r));

        /* The namespace is held by an fd opened while a pidfd pins the process: a path
         * like /proc/<pid>/ns/net, read later by the runtime, could name another process
         * by then (the service restarted, its PID reused). */
        pidfd = pidfd_open_pid(b.pid);
        if (pidfd < 0)
                return error_message(ret_error, -ESRCH, "container %s: its process (PID %d) is not running", id,
                                     (int) b.pid);
        if (asprintf(&b.netns_path, "/proc/%d/ns/net", (int) b.pid) < 0) {
                b.netns_path = NULL;
                return -ENOMEM;
        }
        b.netns_fd = open(b.netns_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (b.netns_fd < 0)
                return error_message(ret_error, -ESRCH, "container %s: no network namespace at %s: %s", id,
                                     b.netns_path, strerror(errno));
        if (pidfd_exited(pidfd))
                return error_message(ret_error, -ESRCH,
                                     "container %s: its process (PID %d) ended while it was looked at", id,
                                     (int) b.pid);

        *ret = b;
        b = (RuntimeServiceBundle){};
        return 0;
}
