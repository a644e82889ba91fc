/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Kubernetes API client, on the event loop through http.c (no threads, no
 * blocking). Three kinds of operations:
 *
 *  * kube_request(): one REST call with the body parsed as JSON; transient failures
 *    (connection errors, 429 honouring Retry-After, 5xx) retried with exponential
 *    backoff; Kubernetes Status errors turned into -errno plus a readable text.
 *  * kube_watch_new(): LIST then WATCH a collection, for ever: every object is delivered
 *    as ADDED after each (re)list, followed by SYNCED; then ADDED/MODIFIED/DELETED as
 *    they happen. Bookmarks and resourceVersion are handled inside; a "410 Gone"
 *    relists; a normal end of the stream re-watches from the last resourceVersion.
 *  * kube_log_follow(): a container's log as it is written, line by line with the
 *    kubelet's timestamps.
 *
 * Credentials (kubeconfig.h) are copied; a token file is re-read for every request,
 * as service-account tokens rotate. TLS verification is always on. Library-like: no
 * logging above debug; errors are -errno plus text for the caller to log.
 *
 * Callbacks always run from the event loop, never from inside the function that
 * started the operation. From inside any callback the caller may start new
 * operations and free or cancel any operation, including the one calling back. */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "http.h"
#include "json.h"
#include "kubeconfig.h"
#include "macro.h"

typedef struct KubeClient KubeClient;
typedef struct KubeCall KubeCall;
typedef struct KubeWatch KubeWatch;
typedef struct KubeLog KubeLog;

/* Defaults, changeable with kube_client_set_limits(). */
#define KUBE_REQUEST_TIMEOUT_USEC (30 * USEC_PER_SEC) /* one attempt of a request */
#define KUBE_RETRY_ATTEMPTS_MAX 8U                    /* attempts of one request, incl. the first */
#define KUBE_RETRY_DEADLINE_USEC (120 * USEC_PER_SEC) /* no retry starts later than this after the first */
#define KUBE_BACKOFF_MIN_USEC (200 * USEC_PER_MSEC)   /* first retry delay, doubled each time ... */
#define KUBE_BACKOFF_MAX_USEC (5 * USEC_PER_SEC)      /* ... up to this (Retry-After may ask for more, ≤ 60 s) */
#define KUBE_AUTH_RETRY_USEC (30 * USEC_PER_SEC)      /* watches retry 401/403 this slowly */
#define KUBE_WATCH_TIMEOUT_SEC 290U                   /* timeoutSeconds of one WATCH request */
#define KUBE_LOG_LINE_MAX ((size_t) 1024U * 1024U)    /* longer log lines are delivered in pieces */

int kube_client_new(sd_event *e,
                    HttpClient *http /* borrowed, must outlive the client */,
                    const KubeCredentials *cred /* copied */,
                    KubeClient **ret);
/* Cancels pending requests without calling back. Watches and log follows must be freed
 * before the client. */
KubeClient *kube_client_free(KubeClient *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeClient *, kube_client_free);

typedef struct KubeLimits {
        uint64_t request_timeout_usec; /* each 0 = keep the current value */
        unsigned retry_attempts_max;
        uint64_t retry_deadline_usec;
        uint64_t backoff_min_usec;
        uint64_t backoff_max_usec;
        uint64_t auth_retry_usec;
        unsigned watch_timeout_sec;
} KubeLimits;
void kube_client_set_limits(KubeClient *k, const KubeLimits *limits);
const KubeCredentials *kube_client_credentials(KubeClient *k);

/* ---- requests ---- */

/* The end of a request. error:
 *   0            2xx; body is the parsed JSON answer (NULL if the answer was empty)
 *   -ENOENT      404, -EEXIST 409, -EINVAL 400/422, -ESTALE 410, -EBUSY 429 after the
 *                retries, -EREMOTEIO other 4xx/5xx (5xx after the retries): body is the
 *                Status object when the server sent one, error_text says what failed
 *   -EACCES      401 (credentials rejected), -EPERM 403 (a missing permission): never
 *                retried; error_text like `forbidden: cannot create pods in namespace
 *                "ns" (Kubernetes: <Status.message>)`
 *   -EBADMSG     a 2xx answer that is not JSON
 *   other < 0    no HTTP answer after the retries (http.h: -ECONNREFUSED, -ETIMEDOUT,
 *                -EHOSTUNREACH; -EPROTO TLS/certificate failures are not retried), or
 *                the token file could not be read
 * status is the HTTP status (0 when none). body is borrowed: it is freed after the
 * callback returns unless the callback takes it with kube_call_take_body(). */
typedef void (*kube_done_cb_t)(KubeCall *call,
                               int error,
                               long status,
                               JsonValue *body,
                               const char *error_text,
                               void *userdata);

/* method "GET", "POST", "PUT", "PATCH", "DELETE"; path_and_query like
 * "/api/v1/namespaces/ns/pods?labelSelector=a%3Db" (build it with kube_path_append_query());
 * content_type NULL = application/json (PATCH usually wants
 * "application/merge-patch+json" or "application/strategic-merge-patch+json"); body
 * may be NULL. *ret (may be NULL) is valid until the callback ran or kube_call_cancel(). */
int kube_request(KubeClient *k,
                 const char *method,
                 const char *path_and_query,
                 const char *content_type,
                 const char *body,
                 kube_done_cb_t cb,
                 void *userdata,
                 KubeCall **ret);
/* Aborts a pending request (also between retries); no callback. Returns NULL. */
KubeCall *kube_call_cancel(KubeCall *call);
/* Inside the done callback: takes ownership of the body. */
JsonValue *kube_call_take_body(KubeCall *call);

/* Percent-encodes everything but RFC 3986 unreserved characters, for query values and
 * path segments (label selectors contain '=', ',' and '!'). NULL on OOM. */
char *kube_escape(const char *s);
/* Appends "?key=<escaped value>" or "&key=<escaped value>" to *path (nothing when
 * value is NULL). 0 or -ENOMEM. */
int kube_path_append_query(char **path, const char *key, const char *value);

/* ---- watches ---- */

typedef enum KubeWatchEventType {
        KUBE_WATCH_ADDED,
        KUBE_WATCH_MODIFIED,
        KUBE_WATCH_DELETED,
        KUBE_WATCH_SYNCED,   /* after each (re)list: every existing object was just delivered */
        KUBE_WATCH_ERROR,    /* the watch could not (re)list: error/error_text say why; it retries by itself */
        KUBE_WATCH_BOOKMARK, /* only from kube_watch_event_parse(); never delivered */
        _KUBE_WATCH_EVENT_MAX,
} KubeWatchEventType;

const char *kube_watch_event_type_to_string(KubeWatchEventType t);

/* object (borrowed, NULL for SYNCED and ERROR) is the object as the API server sent it.
 * A consumer keeps its own view: after SYNCED, objects of its view not delivered since
 * the preceding (re)list are gone. ERROR events come for a failed LIST (after the
 * request's own retries) and for 401/403 (-EACCES/-EPERM with the permission named;
 * retried every KUBE_AUTH_RETRY_USEC); interrupted watch streams are resumed silently. */
typedef void (*kube_watch_cb_t)(KubeWatch *w,
                                KubeWatchEventType type,
                                JsonValue *object,
                                int error,
                                const char *error_text,
                                void *userdata);

/* collection_path e.g. "/api/v1/namespaces/ns/pods" (no query); selectors may be NULL
 * and are escaped here. The LIST starts from the event loop. */
int kube_watch_new(KubeClient *k,
                   const char *collection_path,
                   const char *label_selector,
                   const char *field_selector,
                   kube_watch_cb_t cb,
                   void *userdata,
                   KubeWatch **ret);
KubeWatch *kube_watch_free(KubeWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeWatch *, kube_watch_free);
/* The resourceVersion the next WATCH starts from (NULL before the first LIST). */
const char *kube_watch_resource_version(KubeWatch *w);

/* One event of a watch stream, as parsed from a JSON value of the stream
 * {"type": ..., "object": {...}}. All pointers borrow from the value. For an ERROR
 * event, status_code is the Status object's code (410 = resourceVersion too old) and
 * message its message. Returns -EBADMSG when the value is not a watch event. The watch
 * uses this for every value of the stream; exposed for the fuzzer and tests. */
typedef struct KubeWatchEvent {
        KubeWatchEventType type; /* ADDED, MODIFIED, DELETED, BOOKMARK or ERROR */
        JsonValue *object;
        const char *resource_version; /* object.metadata.resourceVersion, may be NULL */
        int64_t status_code;          /* ERROR only, 0 if absent */
        const char *message;          /* ERROR only, may be NULL */
} KubeWatchEvent;
int kube_watch_event_parse(JsonValue *v, KubeWatchEvent *ret);

/* ---- log follow ---- */

/* One log line, without its newline and without the timestamp the kubelet put in
 * front of it (timestamp_usec: CLOCK_REALTIME µs, 0 when the line had none). Lines
 * longer than KUBE_LOG_LINE_MAX come in pieces with the same timestamp. text is
 * NUL-terminated (it may contain NULs itself: use size). */
typedef void (*kube_log_line_cb_t)(KubeLog *l, uint64_t timestamp_usec, const char *text, size_t size, void *userdata);

/* The end of the stream, once:
 *   0        the server ended the stream: the container has terminated, or the
 *            kubelet closed the stream (log rotation, kubelet restart). Check the pod;
 *            if the container still runs, follow again with since_usec = the last
 *            timestamp seen.
 *   -EAGAIN  400 "container ... is waiting to start" / "PodInitializing" /
 *            "ContainerCreating": not started yet, nothing lost; follow again in a
 *            second or on the next pod event.
 *   -ENOENT  the pod or container does not exist; -EACCES/-EPERM as kube_request()
 *            (text names the missing permission, e.g. get pods/log).
 *   other    connection lost (http.h errors): follow again with since_usec.
 * error_text is NULL for 0. */
typedef void (*kube_log_end_cb_t)(KubeLog *l, int error, const char *error_text, void *userdata);

/* GET /api/v1/namespaces/<ns>/pods/<pod>/log?container=<c>&follow=true&timestamps=true
 * [&sinceTime=<since, RFC 3339, whole seconds>]. since_usec 0 = from the start. Lines
 * stamped before since_usec are dropped here, so a resumed follow does not repeat
 * them (lines stamped within the same microsecond as since_usec are delivered again). No
 * overall timeout; TCP keepalive notices a dead peer. container may be NULL (a pod with
 * one container). */
int kube_log_follow(KubeClient *k,
                    const char *namespace,
                    const char *pod,
                    const char *container,
                    uint64_t since_usec,
                    kube_log_line_cb_t line_cb,
                    kube_log_end_cb_t end_cb,
                    void *userdata,
                    KubeLog **ret);
KubeLog *kube_log_free(KubeLog *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(KubeLog *, kube_log_free);

/* A MicroTime (Lease acquireTime/renewTime): RFC 3339 in UTC with exactly six fraction
 * digits, from CLOCK_REALTIME µs. -EINVAL for a time gmtime() cannot take. */
#define KUBE_MICROTIME_MAX 32
int kube_format_microtime(uint64_t usec, char ret[static KUBE_MICROTIME_MAX]);

/* Parses an RFC 3339 timestamp with optional fraction and Z or ±hh:mm, as the kubelet
 * writes them ("2024-05-01T10:00:00.123456789Z"), to CLOCK_REALTIME µs. -EINVAL. */
int kube_parse_timestamp(const char *s, size_t len, uint64_t *ret);
