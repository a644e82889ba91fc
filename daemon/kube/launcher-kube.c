/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The API-pod launcher (see launcher-kube.h): creates a task's pod, watches it, follows
 * its log into a CRI log file the daemon tails like conmon's, and reports the end once.
 *
 * The end is known when the watch shows the container terminated and the log stream has
 * ended after that (the kubelet closes it once the container is gone and its output is
 * flushed), or after a grace time if the stream does not end. A pod that cannot run
 * (image pull, crash loop, config errors) is deleted at once; a pod that disappears
 * without having terminated ends the task as lost. */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "debug-stop.h"
#include "fs-util.h"
#include "launcher-kube.h"
#include "log.h"
#include "parse-util.h"
#include "task-pod.h"
#include "task.h"

#define CRI_LOG_NAME "ctr.log"
#define POD_MARKER_NAME "pod"      /* which pod the directory belongs to */
#define POD_OBJECT_NAME "pod.json" /* the pod as created: a restart before the create was answered sends it again */
#define POD_OBJECT_MAX ((size_t) 4 * 1024 * 1024)
/* After the container terminated, how long to wait for the log stream to end by itself. */
#define LOG_DRAIN_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define LOG_RETRY_USEC (1 * USEC_PER_SEC)
#define CRI_LOG_TAIL_MAX ((size_t) 4 * 1024 * 1024)

struct KubePod {
        sd_event *event;
        KubeClient *kube;
        char *namespace, *name, *container, *dir, *log_path, *task_id;
        int log_fd;

        KubeCall *call; /* create / get / delete in flight */
        KubeWatch *watch;
        KubeLog *log;
        sd_event_source *retry_timer;  /* follow the log again */
        sd_event_source *drain_timer;  /* the container ended: how long the log may still take */
        sd_event_source *delete_timer; /* a pod that cannot run: delete it from the loop */
        sd_event_source *finish_source;

        bool created; /* the pod exists (created by us or found again) */
        bool seen_since_sync;
        bool started, terminated, log_done, stopping, finished;
        bool finish_after_delete; /* a pod that cannot run: report once the DELETE answered */
        int exit_code;
        char *failure;
        char *task_data;

        /* Resuming the log: lines up to last_usec are in ctr.log already; skip_at_last of
         * those carry exactly last_usec and come again from a resumed follow. */
        uint64_t last_usec;
        unsigned n_at_last, skip_at_last;

        kube_pod_exit_cb_t cb;
        kube_pod_step_cb_t step_cb;
        void *userdata;
};

static void kp_start_log(KubePod *p);
static void kp_check_done(KubePod *p);
static void read_resume_point(KubePod *p);

const char *kube_pod_log_path(KubePod *p) {
        return p->log_path;
}

void kube_pod_set_step_callback(KubePod *p, kube_pod_step_cb_t cb) {
        if (p)
                p->step_cb = cb;
}

KubePod *kube_pod_free(KubePod *p) {
        if (!p)
                return NULL;
        kube_call_cancel(p->call);
        kube_watch_free(p->watch);
        kube_log_free(p->log);
        sd_event_source_disable_unref(p->retry_timer);
        sd_event_source_disable_unref(p->drain_timer);
        sd_event_source_disable_unref(p->delete_timer);
        sd_event_source_disable_unref(p->finish_source);
        safe_close(p->log_fd);
        free(p->namespace);
        free(p->name);
        free(p->container);
        free(p->dir);
        free(p->log_path);
        free(p->task_id);
        free(p->failure);
        free(p->task_data);
        sd_event_unref(p->event);
        return mfree(p);
}

static char *pod_path(const KubePod *p) {
        _cleanup_free_ char *ns = kube_escape(p->namespace), *name = kube_escape(p->name);
        char *s = NULL;

        if (!ns || !name || asprintf(&s, "/api/v1/namespaces/%s/pods/%s", ns, name) < 0)
                return NULL;
        return s;
}

/* ---- the end ---- */

static int on_finish(sd_event_source *s, void *userdata) {
        KubePod *p = userdata;
        KubePodResult r = {
                .exit_code = p->terminated && !p->failure ? p->exit_code : -1,
                .failure = p->failure,
                .task_data = p->task_data,
        };

        p->finish_source = sd_event_source_disable_unref(p->finish_source);
        /* Nothing more to hear about this pod. */
        p->watch = kube_watch_free(p->watch);
        p->log = kube_log_free(p->log);
        p->retry_timer = sd_event_source_disable_unref(p->retry_timer);
        p->drain_timer = sd_event_source_disable_unref(p->drain_timer);
        if (p->log_fd >= 0)
                (void) fsync(p->log_fd);
        p->cb(p, &r, p->userdata);
        return 0;
}

static void kp_finish(KubePod *p, const char *failure) {
        if (p->finished)
                return;
        p->finished = true;
        if (failure && !p->failure)
                p->failure = strdup(failure);
        if (sd_event_add_defer(p->event, &p->finish_source, on_finish, p) < 0) {
                log_oom();
                return;
        }
        (void) sd_event_source_set_description(p->finish_source, "kube-pod-finish");
}

static void on_delete_done(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        KubePod *p = userdata;

        p->call = NULL;
        if (error < 0 && error != -ENOENT)
                log_warning("Pod %s/%s: delete failed: %s", p->namespace, p->name, strna(text));
        if (p->finish_after_delete)
                kp_finish(p, NULL);
}

static int kp_delete(KubePod *p, unsigned grace_sec) {
        _cleanup_free_ char *path = pod_path(p);
        char q[32];
        int r;

        if (!path)
                return -ENOMEM;
        snprintf(q, sizeof(q), "%u", grace_sec);
        r = kube_path_append_query(&path, "gracePeriodSeconds", q);
        if (r < 0)
                return r;
        kube_call_cancel(p->call);
        p->call = NULL;
        return kube_request(p->kube, "DELETE", path, NULL, NULL, on_delete_done, p, &p->call);
}

int kube_pod_stop(KubePod *p, unsigned grace_sec) {
        p->stopping = true;
        if (!p->created) {
                /* The create is still in flight: delete the pod once it exists, then end. */
                p->finish_after_delete = true;
                if (!p->call)
                        kp_finish(p, "pod-deleted: stopped before the pod was created");
                return 0;
        }
        return kp_delete(p, grace_sec);
}

/* ---- the log ---- */

static int append_line(KubePod *p, uint64_t usec, const char *text, size_t size) {
        _cleanup_free_ char *ts = NULL, *head = NULL;
        struct iovec iov[3];
        ssize_t n, total;
        int k;

        if (format_timestamp_rfc3339(usec ?: now_usec(CLOCK_REALTIME), &ts) < 0)
                return -ENOMEM;
        /* Pod logs do not say which stream a line came from. */
        k = asprintf(&head, "%s stdout F ", ts);
        if (k < 0)
                return -ENOMEM;
        iov[0] = (struct iovec){head, (size_t) k};
        iov[1] = (struct iovec){(void *) text, size};
        iov[2] = (struct iovec){(void *) "\n", 1};
        total = k + (ssize_t) size + 1;
        n = writev(p->log_fd, iov, 3);
        if (n < 0)
                return -errno;
        return n == total ? 0 : -EIO;
}

static void on_log_line(KubeLog *l, uint64_t usec, const char *text, size_t size, void *userdata) {
        KubePod *p = userdata;
        int r;

        if (usec != 0 && usec < p->last_usec)
                return;
        if (usec != 0 && usec == p->last_usec && p->skip_at_last > 0) {
                p->skip_at_last--;
                return;
        }
        r = append_line(p, usec, text, size);
        if (r < 0) {
                log_error_errno(r, "Pod %s/%s: failed to write %s: %m", p->namespace, p->name, p->log_path);
                return;
        }
        if (usec != 0) {
                if (usec == p->last_usec)
                        p->n_at_last++;
                else {
                        p->last_usec = usec;
                        p->n_at_last = 1;
                }
        }
}

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KubePod *p = userdata;

        p->retry_timer = sd_event_source_disable_unref(p->retry_timer);
        kp_start_log(p);
        return 0;
}

static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KubePod *p = userdata;

        p->drain_timer = sd_event_source_disable_unref(p->drain_timer);
        if (p->log_done)
                return 0;
        /* The stream did not end: what we have is what there is. */
        log_warning("Pod %s/%s: log stream still open %s after the container ended, closing it.", p->namespace, p->name,
                    "10s");
        p->log = kube_log_free(p->log);
        p->retry_timer = sd_event_source_disable_unref(p->retry_timer);
        p->log_done = true;
        kp_check_done(p);
        return 0;
}

static int on_delete_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        KubePod *p = userdata;
        int r;

        p->delete_timer = sd_event_source_disable_unref(p->delete_timer);
        r = kp_delete(p, 0);
        if (r < 0) {
                log_warning_errno(r, "Pod %s/%s: failed to delete: %m", p->namespace, p->name);
                kp_finish(p, NULL);
        }
        return 0;
}

static void kp_arm(KubePod *p, sd_event_source **s, uint64_t delay, sd_event_time_handler_t handler, const char *what) {
        *s = sd_event_source_disable_unref(*s);
        if (sd_event_add_time_relative(p->event, s, CLOCK_MONOTONIC, delay, 10 * USEC_PER_MSEC, handler, p) >= 0)
                (void) sd_event_source_set_description(*s, what);
}

static void on_log_end(KubeLog *l, int error, const char *text, void *userdata) {
        KubePod *p = userdata;

        p->log = kube_log_free(p->log);
        log_debug("Pod %s/%s: log stream ended (%s).", p->namespace, p->name,
                  error == 0 ? "by the server" : strna(text));
        if (p->finished)
                return;
        if (error == 0 && p->terminated) {
                p->log_done = true;
                p->drain_timer = sd_event_source_disable_unref(p->drain_timer);
                kp_check_done(p);
                return;
        }
        if (error == -EAGAIN) {
                p->started = false; /* the next pod event that says "running" follows again */
                return;
        }
        if (error < 0)
                log_debug("Pod %s/%s: log stream ended: %s", p->namespace, p->name, strna(text));
        /* Still running (kubelet closed the stream) or the connection broke: resume after
         * the last line we have; a pod that is gone is noticed by the watch. */
        p->skip_at_last = p->n_at_last;
        kp_arm(p, &p->retry_timer, error == 0 ? 0 : LOG_RETRY_USEC, on_retry_timer, "kube-pod-log-retry");
}

static void kp_start_log(KubePod *p) {
        int r;

        if (p->log || p->finished || p->log_done)
                return;
        p->skip_at_last = p->n_at_last;
        log_debug("Pod %s/%s: following the log.", p->namespace, p->name);
        r = kube_log_follow(p->kube, p->namespace, p->name, p->container, p->last_usec, on_log_line, on_log_end, p,
                            &p->log);
        if (r < 0) {
                log_warning_errno(r, "Pod %s/%s: failed to follow the log, retrying: %m", p->namespace, p->name);
                kp_arm(p, &p->retry_timer, LOG_RETRY_USEC, on_retry_timer, "kube-pod-log-retry");
        }
}

/* ---- the pod ---- */

static void kp_check_done(KubePod *p) {
        if (p->finished || !p->terminated)
                return;
        if (p->log_done || !p->started) {
                kp_finish(p, NULL);
                return;
        }
        if (!p->log && !p->retry_timer)
                kp_arm(p, &p->retry_timer, 0, on_retry_timer, "kube-pod-log-retry");
        if (!p->drain_timer)
                kp_arm(p, &p->drain_timer, LOG_DRAIN_TIMEOUT_USEC, on_drain_timer, "kube-pod-log-drain");
}

static void kp_pod_gone(KubePod *p) {
        if (p->finished)
                return;
        if (p->terminated) {
                kp_finish(p, NULL);
                return;
        }
        kp_finish(p, p->stopping ? "pod-deleted: deleted by lagoon-taskd"
                                 : "pod-deleted: the pod was deleted before the task ended");
}

static void kp_handle_pod(KubePod *p, const JsonValue *pod) {
        TaskPodState s = {};
        int r;

        r = task_pod_state(pod, p->container, &s);
        if (r < 0) {
                log_debug("Pod %s/%s: unreadable pod object, ignoring.", p->namespace, p->name);
                return;
        }
        if (s.task_data && !streq_ptr(s.task_data, p->task_data)) {
                free(p->task_data);
                p->task_data = TAKE_PTR(s.task_data);
        }
        /* An evicted pod's container was killed too: the eviction is the reason, not 137. */
        if (s.failure && (!s.terminated || startswith(s.failure, "evicted:")) && !p->finished) {
                log_info("Pod %s/%s: %s", p->namespace, p->name, s.failure);
                free(p->failure);
                p->failure = TAKE_PTR(s.failure);
                p->watch = kube_watch_free(p->watch);
                p->finish_after_delete = true;
                /* Requests cannot start from inside the watch's transfer: from the loop. */
                kp_arm(p, &p->delete_timer, 0, on_delete_timer, "kube-pod-delete");
                task_pod_state_done(&s);
                return;
        }
        if (s.started && !p->started) {
                p->started = true;
                /* From the loop, not from inside the watch's transfer. */
                kp_arm(p, &p->retry_timer, 0, on_retry_timer, "kube-pod-log-retry");
        }
        if (s.terminated && !p->terminated) {
                p->terminated = true;
                p->exit_code = s.exit_code;
                kp_check_done(p);
        }
        task_pod_state_done(&s);
}

static void
on_watch(KubeWatch *w, KubeWatchEventType type, JsonValue *object, int error, const char *text, void *userdata) {
        KubePod *p = userdata;

        switch (type) {
        case KUBE_WATCH_ADDED:
        case KUBE_WATCH_MODIFIED:
                if (!streq_ptr(json_get_string(json_get(object, "metadata"), "name"), p->name))
                        return;
                p->seen_since_sync = true;
                kp_handle_pod(p, object);
                break;
        case KUBE_WATCH_DELETED:
                if (!streq_ptr(json_get_string(json_get(object, "metadata"), "name"), p->name))
                        return;
                kp_handle_pod(p, object);
                kp_pod_gone(p);
                break;
        case KUBE_WATCH_SYNCED:
                if (!p->seen_since_sync)
                        kp_pod_gone(p);
                p->seen_since_sync = false;
                break;
        case KUBE_WATCH_ERROR:
                log_warning("Pod %s/%s: watching failed, retrying: %s", p->namespace, p->name, strna(text));
                break;
        default:
                break;
        }
}

static int kp_watch(KubePod *p) {
        _cleanup_free_ char *ns = kube_escape(p->namespace), *collection = NULL, *field = NULL;

        if (!ns || asprintf(&collection, "/api/v1/namespaces/%s/pods", ns) < 0 ||
            asprintf(&field, "metadata.name=%s", p->name) < 0)
                return -ENOMEM;
        p->seen_since_sync = false;
        return kube_watch_new(p->kube, collection, NULL, field, on_watch, p, &p->watch);
}

static void kp_created(KubePod *p) {
        int r;

        p->created = true;
        debug_stop_at("pod-created"); /* the pod exists, the record does not say so yet */
        if (p->stopping) {
                if (kp_delete(p, 0) < 0)
                        kp_finish(p, "pod-deleted: stopped before the pod was created");
                return;
        }
        /* The manager records it (the task runs) before the pod is relied on; a stop it
         * asks for from there is a DELETE whose end the watch sees. */
        if (p->step_cb)
                p->step_cb(p, TASK_LAUNCH_STARTED, p->userdata);
        debug_stop_at("pod-started");
        r = kp_watch(p);
        if (r < 0) {
                log_error_errno(r, "Pod %s/%s: failed to watch: %m", p->namespace, p->name);
                (void) kp_delete(p, 0);
                kp_finish(p, "launch-error: cannot watch the task pod");
        }
}

static void on_get_existing(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        KubePod *p = userdata;
        _cleanup_free_ char *reason = NULL;
        const char *owner;

        p->call = NULL;
        if (error < 0) {
                if (asprintf(&reason, "launch-error: %s", strna(text)) < 0)
                        reason = NULL;
                kp_finish(p, reason ?: "launch-error");
                return;
        }
        owner = json_get_string(json_get_path(body, "metadata", "annotations", NULL), TASK_POD_ANNOTATION_TASK_ID);
        if (!streq_ptr(owner, p->task_id)) {
                if (asprintf(&reason, "launch-error: a pod named %s exists already in %s", p->name, p->namespace) < 0)
                        reason = NULL;
                kp_finish(p, reason ?: "launch-error");
                return;
        }
        log_info("Pod %s/%s: exists already for this task, taking it over.", p->namespace, p->name);
        kp_created(p);
}

static void on_create_done(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        KubePod *p = userdata;
        _cleanup_free_ char *reason = NULL, *path = NULL;
        int r;

        p->call = NULL;
        if (error == -EEXIST) {
                /* Created by an earlier daemon that died before it could record more. */
                path = pod_path(p);
                r = path ? kube_request(p->kube, "GET", path, NULL, NULL, on_get_existing, p, &p->call) : -ENOMEM;
                if (r >= 0)
                        return;
                text = "cannot look at the existing pod";
        } else if (error >= 0) {
                log_info("Pod %s/%s: created.", p->namespace, p->name);
                kp_created(p);
                return;
        }
        if (asprintf(&reason, "launch-error: creating pod %s/%s: %s", p->namespace, p->name, strna(text)) < 0)
                reason = NULL;
        kp_finish(p, reason ?: "launch-error");
}

static int kp_create(KubePod *p, const char *body) {
        _cleanup_free_ char *ns = kube_escape(p->namespace), *path = NULL;

        if (!ns || asprintf(&path, "/api/v1/namespaces/%s/pods", ns) < 0)
                return -ENOMEM;
        return kube_request(p->kube, "POST", path, NULL, body, on_create_done, p, &p->call);
}

static int kp_new(sd_event *e,
                  KubeClient *k,
                  const KubePodSpec *spec,
                  const char *task_id,
                  kube_pod_exit_cb_t cb,
                  void *userdata,
                  KubePod **ret) {
        _cleanup_(kube_pod_freep) KubePod *p = NULL;
        int r;

        p = calloc(1, sizeof(KubePod));
        if (!p)
                return -ENOMEM;
        p->log_fd = -EBADF;
        p->event = sd_event_ref(e);
        p->kube = k;
        p->exit_code = -1;
        p->cb = cb;
        p->userdata = userdata;
        if (!(p->namespace = strdup(spec->namespace)) || !(p->name = strdup(spec->name)) ||
            (spec->container && !(p->container = strdup(spec->container))) || !(p->dir = strdup(spec->container_dir)) ||
            !(p->log_path = path_join(spec->container_dir, CRI_LOG_NAME)) ||
            (task_id && !(p->task_id = strdup(task_id))))
                return -ENOMEM;
        r = mkdir_p(p->dir, 0700);
        if (r < 0)
                return r;
        p->log_fd = open(p->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (p->log_fd < 0)
                return -errno;
        *ret = TAKE_PTR(p);
        return 0;
}

/* "<namespace>\n<name>\n": both DNS names, so the marker needs no escaping. */
static int write_pod_marker(KubePod *p) {
        _cleanup_free_ char *path = path_join(p->dir, POD_MARKER_NAME), *text = NULL;
        int n;

        if (!path || (n = asprintf(&text, "%s\n%s\n", p->namespace, p->name)) < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, (size_t) n, 0600);
}

int kube_pod_dir_read(const char *container_dir, char **ret_namespace, char **ret_name) {
        _cleanup_free_ char *path = path_join(container_dir, POD_MARKER_NAME), *text = NULL, *ns = NULL, *name = NULL;
        char *nl, *end;
        int r;

        if (!path)
                return -ENOMEM;
        r = read_regular_file_at(AT_FDCWD, path, 1024, &text, NULL);
        if (r < 0)
                return r;
        nl = strchr(text, '\n');
        end = nl ? strchr(nl + 1, '\n') : NULL;
        if (!end || end[1] != 0)
                return -EBADMSG;
        *nl = *end = 0;
        if (!dns_label_is_valid(text) || !dns_label_is_valid(nl + 1))
                return -EBADMSG;
        if (!(ns = strdup(text)) || !(name = strdup(nl + 1)))
                return -ENOMEM;
        *ret_namespace = TAKE_PTR(ns);
        *ret_name = TAKE_PTR(name);
        return 0;
}

int kube_pod_start(sd_event *e,
                   KubeClient *k,
                   const KubePodSpec *spec,
                   const JsonValue *pod,
                   kube_pod_exit_cb_t cb,
                   void *userdata,
                   KubePod **ret,
                   char **ret_error) {
        _cleanup_(kube_pod_freep) KubePod *p = NULL;
        _cleanup_free_ char *body = NULL, *obj = NULL;
        const char *task_id =
                json_get_string(json_get_path(pod, "metadata", "annotations", NULL), TASK_POD_ANNOTATION_TASK_ID);
        int r;

        r = kp_new(e, k, spec, task_id, cb, userdata, &p);
        if (r < 0)
                return error_message(ret_error, r, "preparing %s: %s", spec->container_dir, strerror(-r));
        r = write_pod_marker(p);
        if (r < 0)
                return error_message(ret_error, r, "preparing %s: %s", spec->container_dir, strerror(-r));
        r = json_format(pod, false, &body, NULL);
        if (r < 0)
                return r;
        /* Before the create: a restart that finds the launch recorded but not its answer
         * sends the same pod again (kube_pod_resume()); its name makes that one pod. */
        obj = path_join(p->dir, POD_OBJECT_NAME);
        if (!obj)
                return -ENOMEM;
        r = write_file_atomic(obj, body, strlen(body), 0600);
        if (r < 0)
                return error_message(ret_error, r, "preparing %s: %s", spec->container_dir, strerror(-r));
        debug_stop_at("pod-prepared");
        r = kp_create(p, body);
        if (r < 0)
                return error_message(ret_error, r, "creating the pod: %s", strerror(-r));
        *ret = TAKE_PTR(p);
        return 0;
}

int kube_pod_resume(sd_event *e,
                    KubeClient *k,
                    const KubePodSpec *spec,
                    const char *task_id,
                    kube_pod_exit_cb_t cb,
                    void *userdata,
                    KubePod **ret) {
        _cleanup_(kube_pod_freep) KubePod *p = NULL;
        _cleanup_free_ char *obj = NULL, *body = NULL;
        int r;

        if (!task_id)
                return -EINVAL;
        obj = path_join(spec->container_dir, POD_OBJECT_NAME);
        if (!obj)
                return -ENOMEM;
        r = read_regular_file_at(AT_FDCWD, obj, POD_OBJECT_MAX, &body, NULL);
        if (r == -ENOENT)
                return -EAGAIN; /* never sent */
        if (r < 0)
                return r;
        r = kp_new(e, k, spec, task_id, cb, userdata, &p);
        if (r < 0)
                return r;
        read_resume_point(p);
        log_debug("Pod %s/%s: its create was not answered before the restart, sending it again.", p->namespace,
                  p->name);
        r = kp_create(p, body);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

/* The last timestamp in ctr.log and how many lines carry it. */
static void read_resume_point(KubePod *p) {
        _cleanup_free_ char *data = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        size_t size;
        off_t off;
        ssize_t n;

        fd = open(p->log_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return;
        off = st.st_size > (off_t) CRI_LOG_TAIL_MAX ? st.st_size - (off_t) CRI_LOG_TAIL_MAX : 0;
        size = (size_t) (st.st_size - off);
        data = malloc(size + 1);
        if (!data)
                return;
        n = pread(fd, data, size, off);
        if (n <= 0)
                return;
        data[n] = 0;
        for (char *l = data, *next; l && *l; l = next) {
                uint64_t usec;
                char *sp;

                next = strchr(l, '\n');
                if (next)
                        *next++ = 0;
                else
                        break; /* a line being written when we died: the follow repeats it */
                sp = strchr(l, ' ');
                if (!sp || kube_parse_timestamp(l, sp - l, &usec) < 0)
                        continue;
                if (usec == p->last_usec)
                        p->n_at_last++;
                else if (usec > p->last_usec) {
                        p->last_usec = usec;
                        p->n_at_last = 1;
                }
        }
}

int kube_pod_adopt(sd_event *e,
                   KubeClient *k,
                   const KubePodSpec *spec,
                   kube_pod_exit_cb_t cb,
                   void *userdata,
                   KubePod **ret) {
        _cleanup_(kube_pod_freep) KubePod *p = NULL;
        int r;

        r = kp_new(e, k, spec, NULL, cb, userdata, &p);
        if (r < 0)
                return r;
        read_resume_point(p);
        p->created = true;
        r = kp_watch(p);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

/* ---- the launcher interface (launcher.h) ---- */

typedef struct PodLauncher {
        Launcher launcher; /* first: the manager's handle */
        KubePod *pod;
} PodLauncher;

static void pl_on_exit(KubePod *p, const KubePodResult *result, void *userdata) {
        PodLauncher *pl = userdata;
        LauncherResult r = {
                .status = result->exit_code >= 0 ? result->exit_code : -EIO,
                .failure = result->failure,
                .task_data = result->task_data,
        };

        pl->launcher.cb.exit(&pl->launcher, &r, pl->launcher.cb.userdata);
}

static void pl_on_step(KubePod *p, TaskLaunchStep step, void *userdata) {
        PodLauncher *pl = userdata;

        if (pl->launcher.cb.step)
                pl->launcher.cb.step(&pl->launcher, step, pl->launcher.cb.userdata);
}

static int pl_stop(Launcher *l, uint64_t grace_usec) {
        /* The kubelet sends SIGTERM, then SIGKILL after the grace period. */
        return kube_pod_stop(((PodLauncher *) l)->pod, (unsigned) MIN(grace_usec / USEC_PER_SEC, (uint64_t) UINT_MAX));
}

static int pl_kill(Launcher *l) {
        return kube_pod_stop(((PodLauncher *) l)->pod, 0);
}

static const char *pl_log_path(Launcher *l) {
        return kube_pod_log_path(((PodLauncher *) l)->pod);
}

static void pl_free(Launcher *l) {
        PodLauncher *pl = (PodLauncher *) l;

        kube_pod_free(pl->pod);
        free(pl);
}

static const LauncherOps pod_launcher_ops = {
        .class = &launcher_pod_class,
        .kill_what = "deleting its pod at once",
        .stop = pl_stop,
        .kill = pl_kill,
        .log_path = pl_log_path,
        .free = pl_free,
};

static PodLauncher *pl_new(const LauncherCallbacks *cb) {
        PodLauncher *pl = calloc(1, sizeof(PodLauncher));

        if (!pl)
                return NULL;
        pl->launcher.ops = &pod_launcher_ops;
        pl->launcher.cb = *cb;
        return pl;
}

int launcher_pod_start(sd_event *e,
                       KubeClient *k,
                       const KubePodSpec *spec,
                       const JsonValue *pod,
                       const LauncherCallbacks *cb,
                       Launcher **ret,
                       char **ret_error) {
        PodLauncher *pl;
        int r;

        if (!cb || !cb->exit || !ret)
                return -EINVAL;
        pl = pl_new(cb);
        if (!pl)
                return -ENOMEM;
        r = kube_pod_start(e, k, spec, pod, pl_on_exit, pl, &pl->pod, ret_error);
        if (r < 0) {
                free(pl);
                return r;
        }
        kube_pod_set_step_callback(pl->pod, pl_on_step);
        *ret = &pl->launcher;
        return 0;
}

static int pl_adopt(const LauncherContext *ctx,
                    const Task *task,
                    const char *container_dir,
                    const LauncherCallbacks *cb,
                    Launcher **ret) {
        PodLauncher *pl;
        int r;

        if (!ctx || !task || !task->pod || !cb || !cb->exit || !ret)
                return -EINVAL;
        if (!ctx->kube)
                return -EOPNOTSUPP; /* node mode was switched off */
        KubePodSpec spec = {
                .namespace = task->namespace,
                .name = task->pod,
                .container = task->image ? TASK_POD_CONTAINER_ADVANCED : NULL,
                .container_dir = container_dir,
        };
        pl = pl_new(cb);
        if (!pl)
                return -ENOMEM;
        /* Recorded as prepared: the create may not have reached the API server, or its
         * answer not the earlier daemon. */
        if (task->status == TASK_PENDING && task->launch_step == TASK_LAUNCH_PREPARED)
                r = kube_pod_resume(ctx->event, ctx->kube, &spec, task->id, pl_on_exit, pl, &pl->pod);
        else
                r = kube_pod_adopt(ctx->event, ctx->kube, &spec, pl_on_exit, pl, &pl->pod);
        if (r < 0) {
                free(pl);
                return r;
        }
        kube_pod_set_step_callback(pl->pod, pl_on_step);
        *ret = &pl->launcher;
        return 0;
}

/* The pod itself stays for KeepTaskPods= (the manager prunes the namespace's task pods). */
static int pl_remove(const Config *config, const char *task_id, const char *container_dir) {
        return rm_rf(container_dir);
}

const LauncherClass launcher_pod_class = {
        .kind = "pod",
        .adopt = pl_adopt,
        .remove = pl_remove,
};
