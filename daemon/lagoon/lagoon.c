/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Lagoon integration: Lagoon's task messages in (AMQP consumer → manager), every
 * result out (manager → outbox → broker and API). Owns the AMQP client, the outbox and
 * its two senders, the periodic log updates and the catch-up after a restart. */

#include <ctype.h>
#include <inttypes.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "amqp-client.h"
#include "claim.h"
#include "slot.h"
#include "fs-util.h"
#include "http.h"
#include "lagoon-api.h"
#include "lagoon-message.h"
#include "lagoon-report.h"
#include "lagoon.h"
#include "list.h"
#include "log.h"
#include "node.h"
#include "outbox.h"
#include "task-pod.h"

#define EXCHANGE_TASKS "lagoon-tasks"
#define EXCHANGE_LOGS "lagoon-logs"
#define ROUTING_KEY_STATUS "controller"
#define BUS_WINDOW 64U /* publishes awaiting a confirm */
#define RETRY_MIN_USEC (1 * USEC_PER_SEC)
#define RETRY_MAX_USEC (60 * USEC_PER_SEC)

typedef struct HeldDelivery {
        uint64_t tag;
        LagoonQueue queue;
        bool routed; /* from this node's own queue: handed here by another daemon */
        char *body;
        size_t size;
        AmqpProperties *props; /* as delivered, for a forward */
} HeldDelivery;

typedef struct Publish {
        uint64_t tag;
        uint64_t seq;
} Publish;

/* A message handed on unchanged (body and properties) to another node's queue or to
 * remote-controller's: acknowledged once the broker confirmed the copy; refused or
 * returned (no queue took it), it is held and handled again. */
typedef struct Forward {
        uint64_t publish_tag;
        char *routing_key;
        bool returned;
        HeldDelivery delivery;
} Forward;

#define HANDLE_FORWARD 2 /* handle_message(): publish it with the routing key named, then ack */

/* Cluster mode: where a standard task's service runs, asked of the API server before
 * the task is claimed; kept until its held message is handled again. */
typedef struct Route {
        char *task_id;
        NodeLookup *lookup; /* in flight */
        bool done;
        char *node; /* NULL: here (or nowhere: an API pod) */
        Lagoon *lagoon;
} Route;

/* When the broker last confirmed a status of a task, kept FinalStatusDelaySec= long: its
 * final status waits that long after it. */
typedef struct Confirmed {
        char *task_id;
        uint64_t usec; /* CLOCK_MONOTONIC */
} Confirmed;

/* A publish the broker nacked (a queue full with overflow reject-publish, an internal
 * error): sent again after a backoff, not at once and forever. */
typedef struct Nacked {
        uint64_t seq;
        uint64_t not_before; /* CLOCK_MONOTONIC */
        uint64_t delay;
} Nacked;

typedef struct LogState {
        char *task_id;
        uint64_t size;                         /* task log size (capped) when last queued */
        uint64_t sent;                         /* log bytes (capped) queued for it so far in this run */
        unsigned queue_position, queue_length; /* last told as "queued", 0 = not */
} LogState;

struct Lagoon {
        sd_event *event;
        Manager *manager;
        Outbox *outbox;
        char *target;

        AmqpClient *amqp;
        char *queue_jobs, *queue_misc, *key_jobs, *key_misc;
        char *queue_node_jobs, *queue_node_misc; /* cluster mode: messages handed to this node */
        char *rc_key_misc;   /* RemoteControllerTarget=: <rc>:misc, where the non-task misc messages go */
        bool forward_warned; /* a forward failed: said once, until one is confirmed */
        Forward *forwards;
        size_t n_forwards;
        Route **routes;
        size_t n_routes;
        Publish *publishes; /* awaiting confirms, in publish order */
        size_t n_publishes;
        HeldDelivery *held; /* deliveries waiting for room in the queue (MaxQueued=) or a claim */
        size_t n_held;
        sd_event_source *bus_flush_source;
        sd_event_source *held_timer;
        bool bus_connected, bus_warned;
        uint64_t bus_disconnects;
        /* What the broker takes: BrokerMessageSizeMax=, lowered to the max_message_size a
         * refusal names. After a refusal (a channel closed 406) one entry is in flight at a
         * time until one is confirmed, so a refusal names its entry: refused twice, it is
         * dropped. */
        uint64_t bus_size_max;
        Confirmed *confirmed;
        size_t n_confirmed;
        Nacked *nacked;
        size_t n_nacked;
        uint64_t bus_start_usec; /* CLOCK_MONOTONIC: the statuses of a run before it count as confirmed then */
        sd_event_source *hold_timer;
        bool bus_probe;
        uint64_t bus_refused_seq;
        unsigned bus_refusals;

        HttpClient *http;
        LagoonApi *api;
        sd_event_source *api_timer;
        uint64_t api_backoff_usec;
        bool api_warned;

        LogState *logs;
        size_t n_logs;
        sd_event_source *log_timer;

        ClaimSet *claims;           /* cluster mode: ClaimNamespace= */
        struct Adoption *adoptions; /* dead nodes' tasks whose pods are looked for */
        SlotSet *slots;             /* cluster mode with MaxRunningPerEnvironment= */
};

static const Config *config(Lagoon *l) {
        return manager_get_config(l->manager);
}

static void bus_schedule_flush(Lagoon *l);
static void bus_shrink(Lagoon *l, uint64_t seq);
static void api_schedule(Lagoon *l, uint64_t delay_usec);
static int held_timer_arm(Lagoon *l, uint64_t delay_usec);

static void held_delivery_done(HeldDelivery *h) {
        h->body = mfree(h->body);
        h->props = amqp_properties_free(h->props);
}

/* Takes over *h (also on failure: then the delivery stays unacknowledged until the
 * connection goes, and the broker delivers it again). */
static int hold(Lagoon *l, HeldDelivery *h, uint64_t delay_usec) {
        HeldDelivery *n = reallocarray(l->held, l->n_held + 1, sizeof(HeldDelivery));

        if (!n) {
                held_delivery_done(h);
                return -ENOMEM;
        }
        l->held = n;
        n[l->n_held++] = *h;
        *h = (HeldDelivery){};
        return held_timer_arm(l, delay_usec);
}

static void forwards_clear(Lagoon *l) {
        for (size_t i = 0; i < l->n_forwards; i++) {
                free(l->forwards[i].routing_key);
                held_delivery_done(&l->forwards[i].delivery);
        }
        l->n_forwards = 0;
}

/* ---- outgoing: building reports into the outbox ---- */

static void job_from_task(Lagoon *l, const Task *t, TaskStatus status, LagoonJob *ret) {
        const JsonValue *task = json_get(t->lagoon, "task");
        const char *job_name = json_get_string(task, "taskName") ?: json_get_string(task, "name") ?: t->name;

        *ret = (LagoonJob){
                .info = t->lagoon,
                .namespace = t->namespace,
                .job_name = job_name ?: t->id,
                .remote_id = t->remote_id,
                .cluster = l->target,
                .status = status,
        };
        if (status == TASK_RUNNING)
                ret->start_usec = t->started_usec;
        if (task_status_is_final(status)) {
                /* A task that never ran reports start = end, as Lagoon expects both. */
                ret->end_usec = t->finished_usec ?: now_usec(CLOCK_REALTIME);
                ret->start_usec = t->started_usec ?: ret->end_usec;
                ret->advanced_data = t->task_data;
        }
}

static int queue_bus(Lagoon *l,
                     const char *task_id,
                     const char *kind,
                     const char *exchange,
                     const char *routing_key,
                     char *body,
                     size_t size,
                     bool coalesce) {
        _cleanup_free_ char *b = body;
        int r;

        if (!l->amqp)
                return 0;
        if (size > l->bus_size_max) {
                log_error("Task %s: its %s message is %zu bytes, over the %" PRIu64
                          " bytes the broker takes (BrokerMessageSizeMax=, or its max_message_size); not sent.",
                          task_id, kind, size, l->bus_size_max);
                return 0;
        }
        r = outbox_append(l->outbox, OUTBOX_BUS, task_id, kind, exchange, routing_key, b, size, coalesce, NULL);
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to queue a %s message for Lagoon: %m", task_id, kind);
        bus_schedule_flush(l);
        return 0;
}

static int queue_logs(Lagoon *l, const char *task_id, const LagoonJob *job, const char *log, size_t log_size) {
        char *body = NULL;
        size_t size = 0;
        int r;

        if (!l->amqp)
                return 0;
        r = lagoon_report_logs(job, log, log_size, &body, &size);
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to build its log message: %m", task_id);
        return queue_bus(l, task_id, "logs", EXCHANGE_LOGS, "", body, size, true);
}

/* Logs go only to the bus: without one, the log file is not read at all. */
static int queue_task_logs(Lagoon *l, const Task *t, const LagoonJob *job) {
        _cleanup_free_ char *path = NULL, *log = NULL;
        size_t log_size = 0;
        int r;

        uint64_t cap = config(l)->log_size_max;

        if (!l->amqp)
                return 0;
        r = manager_task_log_path(l->manager, t->id, &path);
        if (r < 0)
                return r;
        for (unsigned attempt = 0;; attempt++) {
                char *body = NULL;
                size_t size = 0;

                log = mfree(log);
                r = lagoon_report_read_log(path, cap, &log, &log_size);
                if (r < 0)
                        return log_error_errno(r, "Task %s: failed to read its log %s: %m", t->id, path);
                /* Why it failed, below its output, where Lagoon's UI shows it. */
                if (task_status_is_final(job->status)) {
                        r = lagoon_report_append_result(&log, &log_size, job->status, t->reason);
                        if (r < 0)
                                return log_oom();
                }
                r = lagoon_report_logs(job, log, log_size, &body, &size);
                if (r < 0)
                        return log_error_errno(r, "Task %s: failed to build its log message: %m", t->id);
                /* The cap is on the log's bytes; JSON escaping (control characters are 6
                 * bytes, invalid UTF-8 3) can grow the message past what the broker takes:
                 * cut the log in that ratio, with room to spare, and encode it again. */
                if (size <= l->bus_size_max || attempt >= 3 || cap <= 4096)
                        return queue_bus(l, t->id, "logs", EXCHANGE_LOGS, "", body, size, true);
                free(body);
                cap = MAX((uint64_t) ((long double) MIN(cap, log_size) * l->bus_size_max / size * 0.9L), 4096U);
                log_debug("Task %s: its log message is %zu bytes encoded, over %" PRIu64 "; cutting the log to %" PRIu64
                          " bytes.",
                          t->id, size, l->bus_size_max, cap);
        }
}

/* Status message, status event, and the API update for one status of one job. */
static int queue_status(Lagoon *l, const char *task_id, const LagoonJob *job) {
        char *body = NULL;
        size_t size = 0;
        int r;

        if (l->amqp) {
                r = lagoon_report_status(job, &body, &size);
                if (r < 0)
                        return log_error_errno(r, "Task %s: failed to build its status message: %m", task_id);
                /* "final": held back in the outbox until its earlier statuses were confirmed and
                 * FinalStatusDelaySec= passed (see bus_held()). */
                r = queue_bus(l, task_id, task_status_is_final(job->status) ? "final" : "status", EXCHANGE_TASKS,
                              ROUTING_KEY_STATUS, body, size, false);
                if (r < 0)
                        return r;
        }
        if (l->amqp && !job->not_found) { /* remote-controller sends no event for it either */
                r = lagoon_report_event(job, &body, &size);
                if (r < 0)
                        return log_error_errno(r, "Task %s: failed to build its status event: %m", task_id);
                r = queue_bus(l, task_id, "event", EXCHANGE_LOGS, "", body, size, false);
                if (r < 0)
                        return r;
        }
        if (l->api) {
                _cleanup_free_ char *b = NULL;

                r = lagoon_report_update_task(job, &b, &size);
                if (r == -EINVAL)
                        log_warning("Task %s: its id is not a number, so Lagoon's API cannot be told about it.",
                                    task_id);
                else if (r < 0)
                        return log_error_errno(r, "Task %s: failed to build its API update: %m", task_id);
                else {
                        r = outbox_append(l->outbox, OUTBOX_API, task_id,
                                          task_status_is_final(job->status) ? "final" : "update", NULL, NULL, b, size,
                                          false, NULL);
                        if (r < 0)
                                return log_error_errno(r, "Task %s: failed to queue an API update: %m", task_id);
                        api_schedule(l, 0);
                }
        }
        return 0;
}

static int status_rank(TaskStatus s) {
        return s == TASK_NEW ? 0 : s == TASK_PENDING ? 1 : s == TASK_RUNNING ? 2 : 3;
}

/* Queues every status Lagoon has not been told yet, in order, then records it. */
static int report_task(Lagoon *l, const Task *t) {
        TaskStatus steps[] = {TASK_PENDING, TASK_RUNNING, t->status};
        int r;

        if (!t->lagoon || t->status == t->reported || t->status == TASK_NEW)
                return 0;
        if (task_status_is_final(t->status) && claim_taken(l->claims, t->id)) {
                /* Taken for dead while this daemon was away: the survivor reported it. */
                log_warning("Task %s: %s, but another daemon took its claim over and reported it lost; not reported "
                            "again.",
                            t->id, task_status_to_string(t->status));
                return manager_set_reported(l->manager, t->id, t->status);
        }
        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                TaskStatus s = steps[i];
                LagoonJob job;

                if (status_rank(s) <= status_rank(t->reported) || status_rank(s) > status_rank(t->status))
                        continue;
                if (i == ELEMENTSOF(steps) - 1 && !task_status_is_final(s))
                        continue; /* pending or running: already the step above */
                if (s == TASK_RUNNING && t->started_usec == 0)
                        continue; /* cancelled or failed while queued */
                job_from_task(l, t, s, &job);
                if (task_status_is_final(s)) {
                        /* The whole log first, so Lagoon has it when it sees the result. */
                        r = queue_task_logs(l, t, &job);
                        if (r < 0)
                                return r;
                }
                r = queue_status(l, t->id, &job);
                if (r < 0)
                        return r;
        }
        return manager_set_reported(l->manager, t->id, t->status);
}

/* A task that never became one (bad message, unknown service): failed, start = end = now,
 * with the reason as its log. */
static int report_failure_of(Lagoon *l,
                             const char *task_id,
                             const JsonValue *info,
                             const char *namespace,
                             TaskStatus status,
                             const char *reason) {
        _cleanup_free_ char *remote_id = NULL, *log = NULL;
        const JsonValue *task = json_get(info, "task");
        uint64_t now = now_usec(CLOCK_REALTIME);
        int r;

        if (!task_id || !info)
                return 0;
        r = task_new_remote_id(&remote_id);
        if (r < 0)
                return r;

        LagoonJob job = {
                .info = info,
                .namespace = namespace,
                .job_name = json_get_string(task, "taskName") ?: json_get_string(task, "name") ?: task_id,
                .remote_id = remote_id,
                .cluster = l->target,
                .status = status,
                .start_usec = now,
                .end_usec = now,
        };
        if (reason) {
                if (asprintf(&log, "lagoon-taskd: task %s %s: %s\n", task_id, lagoon_job_status(status), reason) < 0)
                        return -ENOMEM;
                r = queue_logs(l, task_id, &job, log, strlen(log));
                if (r < 0)
                        return r;
        }
        return queue_status(l, task_id, &job);
}

static int report_failure(Lagoon *l, const LagoonMessage *msg, TaskStatus status, const char *reason) {
        return report_failure_of(l, msg->task_id, msg->info, msg->namespace, status, reason);
}

/* The answer to a cancel of a task this daemon does not have (never here, removed, or
 * another daemon's): remote-controller's, cancelled with start = end = now and without a
 * remoteId, so Lagoon keeps the one it has (its S3 log is <taskId>-<remoteId>). */
static int report_cancel_unknown(Lagoon *l, const LagoonMessage *msg) {
        const JsonValue *task = json_get(msg->info, "task");
        uint64_t now = now_usec(CLOCK_REALTIME);
        LagoonJob job = {
                .info = msg->info,
                .namespace = msg->namespace,
                .job_name = json_get_string(task, "taskName") ?: json_get_string(task, "name") ?: msg->task_id,
                .status = TASK_CANCELLED,
                .start_usec = now,
                .end_usec = now,
                .not_found = true,
        };

        return queue_status(l, msg->task_id, &job);
}

/* The answer to a cancel of a task that ended here: its final status again, as recorded
 * (its remoteId, times and result). Lagoon asks to cancel a task it still shows running
 * when the final status has not reached it yet or lost a race; the truth settles it,
 * where "cancelled" would hide a result and a start = end = now its duration. */
static int report_cancel_finished(Lagoon *l, const Task *t) {
        LagoonJob job;

        if (!t->lagoon)
                return 0;
        job_from_task(l, t, t->status, &job);
        return queue_status(l, t->id, &job);
}

/* What a claim carries for a survivor to report the task if this node dies: the names
 * and ids Lagoon's status message needs, none of the message's secrets or command; once
 * the task is stored (t), its remoteId, its runner image and the name its pod has if it
 * runs as one, so a survivor can adopt that pod. */
static int claim_report(const LagoonMessage *msg, const Task *t, char **ret) {
        static const char *const task_keys[] = {"id", "name", "taskName", "service"};
        _cleanup_json_ JsonValue *o = json_new_object();
        JsonValue *task, *sec;
        int r;

        if (!o)
                return -ENOMEM;
        if ((r = json_object_set_string(o, "namespace", msg->namespace)) < 0 ||
            (r = json_object_set_string(o, "key", json_get_string(msg->info, "key"))) < 0 ||
            (r = json_object_ensure_object(o, "task", &task)) < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(task_keys); i++) {
                const JsonValue *v = json_get(json_get(msg->info, "task"), task_keys[i]);
                if (v && (r = json_object_set(task, task_keys[i], json_copy(v))) < 0)
                        return r;
        }
        for (size_t i = 0; i < 2; i++) {
                const char *name = i == 0 ? "project" : "environment";
                const JsonValue *from = json_get(msg->info, name);

                if ((r = json_object_ensure_object(o, name, &sec)) < 0)
                        return r;
                if (json_get(from, "id") && (r = json_object_set(sec, "id", json_copy(json_get(from, "id")))) < 0)
                        return r;
                if (json_get(from, "name") && (r = json_object_set(sec, "name", json_copy(json_get(from, "name")))) < 0)
                        return r;
        }
        if (t) {
                _cleanup_free_ char *pod = NULL;

                r = manager_task_pod_name(t, &pod);
                if (r < 0)
                        return r;
                if ((r = json_object_set_string(o, "remoteId", t->remote_id)) < 0 ||
                    (r = json_object_set_string(o, "pod", pod)) < 0 ||
                    (t->image && (r = json_object_set_string(o, "image", t->image)) < 0))
                        return r;
        }
        return json_format(o, false, ret, NULL);
}

/* A dead node's task whose claim this daemon took over, and what its claim says. */
typedef struct Adoption {
        Lagoon *lagoon;
        char *task_id, *holder;
        JsonValue *info; /* the claim's report */
        KubeCall *call;  /* the GET of its pod */
        sd_event_source *retry;
        struct Adoption *prev, *next;
} Adoption;

static Adoption *adoption_free(Adoption *a) {
        if (!a)
                return NULL;
        if (a->lagoon)
                LIST_REMOVE(a->lagoon->adoptions, a);
        kube_call_cancel(a->call);
        sd_event_source_disable_unref(a->retry);
        json_free(a->info);
        free(a->task_id);
        free(a->holder);
        return mfree(a);
}

/* Lagoon hears it failed (a local clone of that node, a task that never got a pod, a
 * claim without a report to adopt it with); the claim ends. */
static void adoption_lost(Adoption *a) {
        Lagoon *l = a->lagoon;
        _cleanup_free_ char *reason = NULL;
        int r;

        if (asprintf(&reason, "node-lost: node %s stopped renewing its claim", strna(a->holder)) < 0)
                return (void) log_oom();
        log_warning("Task %s: lost with node %s; reported failed.", a->task_id, strna(a->holder));
        r = report_failure_of(l, a->task_id, a->info, json_get_string(a->info, "namespace"), TASK_FAILED, reason);
        if (r < 0)
                log_error_errno(r, "Task %s: failed to queue its node-lost report: %m", a->task_id);
        bus_schedule_flush(l);
        (void) claim_finish(l->claims, a->task_id);
        adoption_free(a);
}

static int adoption_start(Adoption *a);

static int on_adoption_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Adoption *a = userdata;

        if (adoption_start(a) < 0)
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* The pod is there and is the task's: this daemon runs the rest of it. */
static void adoption_take(Adoption *a, const JsonValue *pod) {
        Lagoon *l = a->lagoon;
        const JsonValue *info = a->info, *task = json_get(info, "task");
        const char *start = json_get_string(json_get(pod, "status"), "startTime");
        uint64_t started = 0;
        int r;

        if (start)
                (void) kube_parse_timestamp(start, strlen(start), &started);
        ManagerForeignTask ft = {
                .id = a->task_id,
                .name = json_get_string(task, "taskName") ?: json_get_string(task, "name"),
                .project = json_get_string(json_get(info, "project"), "name"),
                .environment = json_get_string(json_get(info, "environment"), "name"),
                .namespace = json_get_string(info, "namespace"),
                .image = json_get_string(info, "image"),
                .pod = json_get_string(info, "pod"),
                .remote_id = json_get_string(info, "remoteId"),
                .holder = a->holder,
                .started_usec = started,
                .lagoon = info,
        };
        if (!ft.image)
                ft.service = json_get_string(task, "service") ?: "cli";
        r = manager_adopt_foreign(l->manager, &ft);
        if (r == -EEXIST) {
                /* Known here already (it came back to this daemon): it reports it. */
                adoption_free(a);
                return;
        }
        if (r < 0) {
                log_error_errno(r, "Task %s: cannot adopt pod %s/%s of node %s: %m", a->task_id, ft.namespace, ft.pod,
                                strna(a->holder));
                return adoption_lost(a);
        }
        adoption_free(a); /* its claim is renewed and finished with the task */
}

static void on_adoption_pod(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Adoption *a = userdata;
        const char *owner;

        a->call = NULL;
        if (error == -ENOENT)
                return adoption_lost(a); /* a local clone, or its pod was never created */
        if (error < 0) {
                log_warning_errno(error, "Task %s: cannot look for its pod, trying again: %s", a->task_id,
                                  text ?: strerror(-error));
                (void) sd_event_source_set_time_relative(a->retry, USEC_PER_SEC);
                (void) sd_event_source_set_enabled(a->retry, SD_EVENT_ONESHOT);
                return;
        }
        owner = json_get_string(json_get_path(body, "metadata", "annotations", NULL), TASK_POD_ANNOTATION_TASK_ID);
        if (!streq_ptr(owner, a->task_id))
                return adoption_lost(a); /* a pod of that name, but not this task's */
        adoption_take(a, body);
}

static int adoption_start(Adoption *a) {
        _cleanup_free_ char *ns = kube_escape(json_get_string(a->info, "namespace")),
                            *name = kube_escape(json_get_string(a->info, "pod")), *path = NULL;
        Node *node = manager_get_node(a->lagoon->manager);

        if (!ns || !name || asprintf(&path, "/api/v1/namespaces/%s/pods/%s", ns, name) < 0)
                return -ENOMEM;
        return kube_request(node_api(node), "GET", path, NULL, NULL, on_adoption_pod, a, &a->call);
}

/* A dead node's task, taken over from its claim: its API pod, if it has one, is adopted
 * (watched and reported by this daemon); anything else is reported lost. */
static void on_claim_lost(ClaimSet *s, const char *task_id, const char *holder, const char *report, void *userdata) {
        Lagoon *l = userdata;
        _cleanup_(json_freep) JsonValue *info = NULL;
        Adoption *a;
        int r;

        if (!report || json_parse(report, strlen(report), JSON_DEPTH_MAX_DEFAULT, &info, NULL) < 0 ||
            !json_is_object(info)) {
                log_error("Task %s: lost with node %s, but its claim says nothing to report it with.", task_id,
                          strna(holder));
                (void) claim_finish(l->claims, task_id);
                return;
        }
        if (manager_get_task(l->manager, task_id)) {
                /* Handed back here meanwhile (a redelivery): this daemon has it already. */
                return;
        }
        a = calloc(1, sizeof(Adoption));
        if (!a)
                return (void) log_oom();
        a->lagoon = l;
        LIST_PREPEND(l->adoptions, a);
        a->info = TAKE_PTR(info);
        if (!(a->task_id = strdup(task_id)) || free_and_strdup(&a->holder, holder) < 0) {
                log_oom();
                return (void) adoption_free(a);
        }
        r = sd_event_add_time_relative(l->event, &a->retry, CLOCK_MONOTONIC, USEC_PER_SEC, 100 * USEC_PER_MSEC,
                                       on_adoption_retry, a);
        if (r < 0) {
                log_error_errno(r, "Task %s: cannot adopt it: %m", task_id);
                return adoption_lost(a);
        }
        (void) sd_event_source_set_description(a->retry, "lagoon-adoption");
        (void) sd_event_source_set_enabled(a->retry, SD_EVENT_OFF);
        if (!json_get_string(a->info, "pod") || !json_get_string(a->info, "namespace"))
                return adoption_lost(a); /* accepted before claims named the pod */
        r = adoption_start(a);
        if (r < 0)
                (void) sd_event_source_set_enabled(a->retry, SD_EVENT_ONESHOT);
}

static void on_task_changed(Manager *m, const Task *t, void *userdata) {
        Lagoon *l = userdata;

        (void) report_task(l, t);
        if (l->claims && task_status_is_final(t->status))
                (void) claim_finish(l->claims, t->id);
}

/* ---- periodic log updates of running tasks ---- */

static LogState *log_state(Lagoon *l, const char *task_id, bool create) {
        LogState *n;

        for (size_t i = 0; i < l->n_logs; i++)
                if (streq(l->logs[i].task_id, task_id))
                        return l->logs + i;
        if (!create)
                return NULL;
        n = reallocarray(l->logs, l->n_logs + 1, sizeof(LogState));
        if (!n)
                return NULL;
        l->logs = n;
        n[l->n_logs] = (LogState){.task_id = strdup(task_id)};
        if (!n[l->n_logs].task_id)
                return NULL;
        return l->logs + l->n_logs++;
}

/* A Lagoon task still waiting for room under MaxRunning=/MaxRunningPerEnvironment= a
 * tick after Lagoon heard "pending": Lagoon's "queued", with its place in the queue as
 * its log, as remote-controller's task QoS tells it, again whenever the place or the
 * queue's length changed. */
static void report_queued(Lagoon *l, const Task *t) {
        unsigned position = manager_queue_position(l->manager, t), length = manager_n_queued(l->manager);
        _cleanup_free_ char *log = NULL;
        LogState *ls;
        LagoonJob job;

        if (position == 0 || t->reported != TASK_PENDING)
                return; /* launching, or "pending" not told yet */
        ls = log_state(l, t->id, true);
        if (!ls || (ls->queue_position == position && ls->queue_length == length))
                return;
        job_from_task(l, t, TASK_PENDING, &job);
        job.queued = true;
        if (lagoon_report_queued_log(position, length, &log) < 0 || queue_status(l, t->id, &job) < 0 ||
            queue_logs(l, t->id, &job, log, strlen(log)) < 0)
                return (void) log_oom();
        log_debug("Task %s: queued in position %u/%u, told Lagoon.", t->id, position, length);
        ls->queue_position = position;
        ls->queue_length = length;
}

static int on_log_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Lagoon *l = userdata;
        _cleanup_free_ const Task **tasks = NULL;
        size_t n = 0, w = 0;
        int r;

        r = manager_list_tasks(l->manager, &tasks, &n);
        if (r >= 0)
                for (size_t i = 0; i < n; i++) {
                        const Task *t = tasks[i];
                        _cleanup_free_ char *path = NULL;
                        struct stat st;
                        uint64_t size;
                        LogState *ls;
                        LagoonJob job;

                        /* Not while its claim is being read back after a restart, nor once
                         * another daemon took it over: the new holder reports it. */
                        if (l->claims) {
                                int k = claim_ready(l->claims, t->id);
                                if (k == 0 || k == -EPERM)
                                        continue;
                        }
                        if (t->lagoon && t->status == TASK_PENDING) {
                                report_queued(l, t);
                                continue;
                        }
                        if (!t->lagoon || t->status != TASK_RUNNING)
                                continue;
                        if (manager_task_log_path(l->manager, t->id, &path) < 0 || stat(path, &st) < 0)
                                continue;
                        size = MIN((uint64_t) st.st_size, config(l)->log_size_max);
                        ls = log_state(l, t->id, true);
                        if (!ls || !lagoon_log_due(ls->sent, ls->size, size))
                                continue;
                        job_from_task(l, t, TASK_RUNNING, &job);
                        /* The log may grow meanwhile: then a later tick sends it again. */
                        if (queue_task_logs(l, t, &job) >= 0) {
                                ls->size = size;
                                ls->sent += size;
                        }
                }
        /* Forget tasks that are no longer running. */
        for (size_t i = 0; i < l->n_logs; i++) {
                const Task *t = manager_get_task(l->manager, l->logs[i].task_id);

                if (t && (t->status == TASK_RUNNING || t->status == TASK_PENDING))
                        l->logs[w++] = l->logs[i];
                else
                        free(l->logs[i].task_id);
        }
        l->n_logs = w;

        (void) sd_event_source_set_time(s, usec + config(l)->log_interval_usec);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
}

/* ---- the bus sender ---- */

static bool task_in(const char *const *ids, size_t n, const char *task_id) {
        for (size_t i = 0; i < n; i++)
                if (streq(ids[i], task_id))
                        return true;
        return false;
}

/* actions-handler applies statuses with two workers in parallel and updateTask is
 * last-writer-wins: a final status published right behind the task's running one can be
 * applied first, and the task stays RUNNING in Lagoon. So a final status waits in the
 * outbox until every earlier status of its task was confirmed by the broker (it is in
 * Lagoon's queue, ahead of the final) and FinalStatusDelaySec= passed since the last of
 * its statuses was confirmed, for a worker to apply that one (remote-controller sleeps
 * 2 s before a final message for the same reason). Later messages of the task wait
 * behind it. *ret_wake: when to look again. */
static bool
bus_held(Lagoon *l, const OutboxEntry *e, const char *const *earlier, size_t n_earlier, uint64_t *ret_wake) {
        uint64_t since = l->bus_start_usec, now = now_usec(CLOCK_MONOTONIC);

        if (!streq(e->kind, "final"))
                return false;
        if (task_in(earlier, n_earlier, e->task_id))
                return true; /* looked at again on its confirm */
        for (size_t i = 0; i < l->n_confirmed; i++)
                if (streq(l->confirmed[i].task_id, e->task_id))
                        since = MAX(since, l->confirmed[i].usec);
        if (now >= since + config(l)->final_delay_usec)
                return false;
        *ret_wake = MIN(*ret_wake, since + config(l)->final_delay_usec);
        return true;
}

static void bus_confirmed(Lagoon *l, const OutboxEntry *e) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        bool status = e && (streq(e->kind, "status") || streq(e->kind, "final"));
        size_t w = 0;

        /* Only the recent ones matter; a task's newer status replaces its older one. */
        for (size_t i = 0; i < l->n_confirmed; i++)
                if (l->confirmed[i].usec + config(l)->final_delay_usec > now &&
                    !(status && streq(l->confirmed[i].task_id, e->task_id)))
                        l->confirmed[w++] = l->confirmed[i];
                else
                        free(l->confirmed[i].task_id);
        l->n_confirmed = w;
        if (!status)
                return;
        Confirmed *n = reallocarray(l->confirmed, l->n_confirmed + 1, sizeof(Confirmed));
        if (!n)
                return (void) log_oom();
        l->confirmed = n;
        n[l->n_confirmed] = (Confirmed){.task_id = strdup(e->task_id), .usec = now};
        if (n[l->n_confirmed].task_id)
                l->n_confirmed++;
}

static Nacked *bus_nacked(Lagoon *l, uint64_t seq) {
        for (size_t i = 0; i < l->n_nacked; i++)
                if (l->nacked[i].seq == seq)
                        return l->nacked + i;
        return NULL;
}

static bool bus_nack_wait(Lagoon *l, uint64_t seq, uint64_t *wake) {
        Nacked *n = bus_nacked(l, seq);

        if (!n || n->not_before <= now_usec(CLOCK_MONOTONIC))
                return false;
        *wake = MIN(*wake, n->not_before);
        return true;
}

/* Backoff for a nacked entry: 1 s, doubling to 60 s; said once per entry. */
static void bus_nack(Lagoon *l, OutboxEntry *e) {
        Nacked *n = bus_nacked(l, e->seq);

        if (!n) {
                n = reallocarray(l->nacked, l->n_nacked + 1, sizeof(Nacked));
                if (!n)
                        return (void) log_oom();
                l->nacked = n;
                n = l->nacked + l->n_nacked++;
                *n = (Nacked){.seq = e->seq, .delay = RETRY_MIN_USEC};
                log_warning("The broker refused message %" PRIu64 " (task %s, %s): sending it again with backoff, "
                            "up to every %u s.",
                            e->seq, e->task_id, e->kind, (unsigned) (RETRY_MAX_USEC / USEC_PER_SEC));
        } else {
                n->delay = MIN(n->delay * 2, RETRY_MAX_USEC);
                log_debug("The broker refused message %" PRIu64 " again; retrying in %" PRIu64 " s.", e->seq,
                          n->delay / USEC_PER_SEC);
        }
        n->not_before = now_usec(CLOCK_MONOTONIC) + n->delay;
}

/* Forgets the backoff of entries confirmed or gone. */
static void bus_nacks_prune(Lagoon *l) {
        size_t w = 0;

        for (size_t i = 0; i < l->n_nacked; i++)
                if (outbox_find(l->outbox, l->nacked[i].seq))
                        l->nacked[w++] = l->nacked[i];
        l->n_nacked = w;
}

static int on_hold_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        bus_schedule_flush(userdata);
        return 0;
}

/* Cluster mode, an outbox entry of a task this daemon stored: 1 wait (its claim is being
 * read back after a restart), -EPERM drop it (another daemon took the claim over while
 * this one was away, and reports the task), 0 send it. */
static int outbox_claim_check(Lagoon *l, const OutboxEntry *e) {
        int r;

        if (!l->claims)
                return 0;
        r = claim_ready(l->claims, e->task_id);
        if (r != 0 && r != -EPERM)
                return 0;
        /* Only for tasks stored here: the answer to a cancel of another daemon's task is sent. */
        if (!manager_get_task(l->manager, e->task_id))
                return 0;
        return r == 0 ? 1 : -EPERM;
}

static bool outbox_drop_taken(Lagoon *l, const OutboxEntry *e) {
        uint64_t seq = e->seq;
        int r;

        log_info("Task %s: its claim was taken over while this daemon was away; its unsent %s message is dropped.",
                 e->task_id, e->kind);
        r = outbox_remove(l->outbox, seq);
        if (r < 0 && r != -ENOENT) {
                log_warning_errno(r, "Failed to remove outbox entry %" PRIu64 ": %m", seq);
                return false;
        }
        return true;
}

static int bus_flush(sd_event_source *s, void *userdata) {
        Lagoon *l = userdata;
        /* The tasks of the status messages looked at so far (in flight, or waiting), and of
         * the final statuses held back. */
        _cleanup_free_ const char **earlier = NULL, **held = NULL;
        size_t n_earlier = 0, n_held = 0;
        uint64_t wake = UINT64_MAX;

        if (!l->amqp || !amqp_client_is_connected(l->amqp))
                return 0;
        for (size_t i = 0; l->n_publishes < (l->bus_probe ? 1U : BUS_WINDOW); i++) {
                OutboxEntry *e = outbox_get(l->outbox, OUTBOX_BUS, i);
                _cleanup_free_ char *message_id = NULL;
                const char **ids;
                bool is_status;
                Publish *p;
                uint64_t tag;
                int r;

                if (!e)
                        break;
                ids = reallocarray(earlier, n_earlier + 1, sizeof(char *));
                if (!ids)
                        return log_oom();
                earlier = ids;
                is_status = streq(e->kind, "status") || streq(e->kind, "final");
                if (e->in_flight) {
                        if (is_status)
                                earlier[n_earlier++] = e->task_id;
                        continue;
                }
                if (task_in(held, n_held, e->task_id))
                        continue; /* behind its task's final status */
                r = outbox_claim_check(l, e);
                if (r == -EPERM) {
                        if (!outbox_drop_taken(l, e))
                                break;
                        i--; /* the next entry is at i now */
                        continue;
                }
                if (r > 0) {
                        /* Looked at again once its claim was read (on_claim_changed()). */
                        ids = reallocarray(held, n_held + 1, sizeof(char *));
                        if (!ids)
                                return log_oom();
                        held = ids;
                        held[n_held++] = e->task_id;
                        continue;
                }
                if (bus_nack_wait(l, e->seq, &wake)) {
                        if (is_status)
                                earlier[n_earlier++] = e->task_id;
                        continue;
                }
                if (bus_held(l, e, earlier, n_earlier, &wake)) {
                        ids = reallocarray(held, n_held + 1, sizeof(char *));
                        if (!ids)
                                return log_oom();
                        held = ids;
                        held[n_held++] = e->task_id;
                        earlier[n_earlier++] = e->task_id;
                        continue;
                }
                if (e->body_size > l->bus_size_max) {
                        uint64_t seq = e->seq;

                        bus_shrink(l, seq);
                        e = outbox_get(l->outbox, OUTBOX_BUS, i);
                        if (e && e->seq == seq && e->body_size > l->bus_size_max)
                                break; /* its removal failed (I/O error): the next flush tries again */
                        i--;           /* the next entry is at i now, or this one re-encoded */
                        continue;
                }
                if (asprintf(&message_id, "%s-%" PRIu64, e->task_id, e->seq) < 0)
                        return log_oom();
                p = reallocarray(l->publishes, l->n_publishes + 1, sizeof(Publish));
                if (!p)
                        return log_oom();
                l->publishes = p;
                r = amqp_client_publish(l->amqp, e->exchange, e->routing_key, e->body, e->body_size, true, message_id,
                                        &tag);
                if (r < 0) {
                        log_debug_errno(r, "Publishing outbox entry %" PRIu64 " failed, retrying later: %m", e->seq);
                        break;
                }
                e->in_flight = true;
                l->publishes[l->n_publishes++] = (Publish){tag, e->seq};
                if (is_status)
                        earlier[n_earlier++] = e->task_id;
        }
        if (wake != UINT64_MAX && l->hold_timer) {
                (void) sd_event_source_set_time(l->hold_timer, wake);
                (void) sd_event_source_set_enabled(l->hold_timer, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* An entry over what the broker takes (queued before the limit was lowered, or under
 * another configuration): a log is encoded again from the task's log file, to fit;
 * anything else, or a log of a task no longer known, is dropped. */
static void bus_shrink(Lagoon *l, uint64_t seq) {
        OutboxEntry *e = outbox_find(l->outbox, seq);
        const Task *t;
        size_t size;
        int r;

        if (!e)
                return;
        size = e->body_size;
        t = manager_get_task(l->manager, e->task_id);
        if (streq(e->kind, "logs") && t && t->lagoon &&
            (t->status == TASK_RUNNING || task_status_is_final(t->status))) {
                LagoonJob job;

                job_from_task(l, t, t->status, &job);
                (void) queue_task_logs(l, t, &job); /* replaces it when it is the task's newest log */
                e = outbox_find(l->outbox, seq);
                if (!e || e->body_size <= l->bus_size_max) {
                        log_notice("Task %s: its log message of %zu bytes is over the %" PRIu64
                                   " bytes the broker takes; encoded again with less of the log.",
                                   t->id, size, l->bus_size_max);
                        return;
                }
        }
        log_error("Task %s: dropping its %s message of %zu bytes, over the %" PRIu64 " bytes the broker takes.",
                  e->task_id, e->kind, size, l->bus_size_max);
        r = outbox_remove(l->outbox, seq);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Failed to remove outbox entry %" PRIu64 ": %m", seq);
}

/* The broker closed the channel with 406 PRECONDITION_FAILED: for a publish, RabbitMQ's
 * "message size N is larger than configured max size M" (max_message_size). Lowers the
 * limit to M when the reason names it, so the entry is encoded again smaller (or
 * dropped); an entry refused twice while alone in flight is dropped whatever the reason
 * said, so a refused message never blocks the outbox. */
static void bus_refused(Lagoon *l, const char *reason) {
        const char *m = strstr(reason, "max size ");
        uint64_t max = 0;

        if (m) {
                char *end;

                errno = 0;
                max = strtoull(m + strlen("max size "), &end, 10);
                if (errno != 0 || end == m + strlen("max size "))
                        max = 0;
        }
        if (max >= 1024 && max < l->bus_size_max) {
                log_warning("The broker refused a message as too large (%s); messages over %" PRIu64
                            " bytes are encoded again with less of the log, or dropped.",
                            reason, max);
                l->bus_size_max = max;
        }
        if (l->bus_probe && l->n_publishes == 1) {
                uint64_t seq = l->publishes[0].seq;
                OutboxEntry *e = outbox_find(l->outbox, seq);

                l->bus_refusals = l->bus_refused_seq == seq ? l->bus_refusals + 1 : 1;
                l->bus_refused_seq = seq;
                if (e && l->bus_refusals >= 2 && e->body_size <= l->bus_size_max) {
                        int r;

                        log_error("The broker refused message %" PRIu64 " (task %s, %s, %zu bytes) %u times (%s); "
                                  "dropping it.",
                                  seq, e->task_id, e->kind, e->body_size, l->bus_refusals, reason);
                        r = outbox_remove(l->outbox, seq);
                        if (r < 0 && r != -ENOENT)
                                log_warning_errno(r, "Failed to remove outbox entry %" PRIu64 ": %m", seq);
                        l->bus_refusals = 0;
                }
        }
        l->bus_probe = true;
}

static void bus_schedule_flush(Lagoon *l) {
        if (l->bus_flush_source)
                (void) sd_event_source_set_enabled(l->bus_flush_source, SD_EVENT_ONESHOT);
}

static void on_amqp_confirm(AmqpClient *c, uint64_t tag, bool ack, void *userdata) {
        Lagoon *l = userdata;
        size_t i;

        for (i = 0; i < l->n_forwards; i++)
                if (l->forwards[i].publish_tag == tag) {
                        Forward f = l->forwards[i];

                        memmove(l->forwards + i, l->forwards + i + 1, (l->n_forwards - i - 1) * sizeof(Forward));
                        l->n_forwards--;
                        if (ack && !f.returned) {
                                if (l->forward_warned)
                                        log_info("The broker takes the messages handed on again (routing key %s).",
                                                 f.routing_key);
                                l->forward_warned = false;
                                (void) amqp_client_ack(c, f.delivery.tag);
                                held_delivery_done(&f.delivery);
                        } else {
                                /* Kept unacknowledged and handled (and handed on) again in a
                                 * second: a requeue would come straight back, in a loop. */
                                log_full(l->forward_warned ? LOG_DEBUG : LOG_WARNING,
                                         "The broker %s the message handed on with routing key %s; trying again "
                                         "every second, the message stays unacknowledged.",
                                         f.returned ? "found no queue for" : "refused", f.routing_key);
                                l->forward_warned = true;
                                (void) hold(l, &f.delivery, USEC_PER_SEC);
                        }
                        free(f.routing_key);
                        return;
                }

        for (i = 0; i < l->n_publishes; i++)
                if (l->publishes[i].tag == tag)
                        break;
        if (i >= l->n_publishes)
                return;

        uint64_t seq = l->publishes[i].seq;
        memmove(l->publishes + i, l->publishes + i + 1, (l->n_publishes - i - 1) * sizeof(Publish));
        l->n_publishes--;

        if (ack) {
                int r;

                l->bus_probe = false; /* the broker takes messages again */
                l->bus_refusals = 0;
                bus_confirmed(l, outbox_find(l->outbox, seq));
                r = outbox_remove(l->outbox, seq);
                if (r < 0 && r != -ENOENT)
                        log_warning_errno(r, "Failed to remove delivered outbox entry %" PRIu64 ": %m", seq);
                if (l->n_nacked > 0)
                        bus_nacks_prune(l);
        } else {
                OutboxEntry *e = outbox_find(l->outbox, seq);

                if (e) {
                        e->in_flight = false;
                        bus_nack(l, e);
                }
        }
        bus_schedule_flush(l);
}

/* A forward no queue took (mandatory): the broker returns it before its confirm, which
 * then does not count. Returns name no publish; identical bodies to the same key are
 * interchangeable, so the oldest such forward not yet returned is the one. */
static void on_amqp_return(AmqpClient *c,
                           const char *exchange,
                           const char *routing_key,
                           const void *body,
                           size_t size,
                           void *userdata) {
        Lagoon *l = userdata;

        for (size_t i = 0; i < l->n_forwards; i++) {
                Forward *f = l->forwards + i;

                if (!f->returned && streq(f->routing_key, routing_key) && f->delivery.size == size &&
                    (size == 0 || memcmp(f->delivery.body, body, size) == 0)) {
                        f->returned = true;
                        return;
                }
        }
        log_debug("A message returned by the broker (routing key %s) matches nothing handed on; ignored.", routing_key);
}

/* ---- incoming: Lagoon's task messages ---- */

static int push_env(char ***env, const char *key, const char *value) {
        char *s;

        if (!value)
                return 0;
        if (asprintf(&s, "%s=%s", key, value) < 0)
                return -ENOMEM;
        return strv_push(env, s);
}

/* The variables remote-controller gives Lagoon tasks (the manager adds TASK_DATA_ID,
 * NAMESPACE, PODNAME, LAGOON_PROJECT, LAGOON_GIT_BRANCH). TASK_SSH_HOST/PORT are the
 * token service's, as there: Lagoon's task scripts fetch an API token with them. */
static int task_env(Lagoon *l, const LagoonMessage *msg, char ***ret) {
        const Config *c = config(l);
        _cleanup_strv_free_ char **env = NULL;
        char id[32];
        int r = 0;

        if ((r = push_env(&env, "TASK_API_HOST", c->lagoon_api_host)) < 0 ||
            (r = push_env(&env, "TASK_SSH_HOST", c->lagoon_token_host)) < 0 ||
            (r = push_env(&env, "TASK_SSH_PORT", c->lagoon_token_port)) < 0 ||
            (r = push_env(&env, "LAGOON_CONFIG_API_HOST", c->lagoon_api_host)) < 0 ||
            (r = push_env(&env, "LAGOON_CONFIG_SSH_HOST", c->lagoon_ssh_host)) < 0 ||
            (r = push_env(&env, "LAGOON_CONFIG_SSH_PORT", c->lagoon_ssh_port)) < 0 ||
            (r = push_env(&env, "LAGOON_CONFIG_TOKEN_HOST", c->lagoon_token_host)) < 0 ||
            (r = push_env(&env, "LAGOON_CONFIG_TOKEN_PORT", c->lagoon_token_port)) < 0)
                return r;
        if (msg->kind == LAGOON_MESSAGE_STANDARD) {
                if (msg->has_project_id) {
                        snprintf(id, sizeof(id), "%" PRIi64, msg->project_id);
                        if ((r = push_env(&env, "LAGOON_PROJECT_ID", id)) < 0)
                                return r;
                }
                if (msg->has_environment_id) {
                        snprintf(id, sizeof(id), "%" PRIi64, msg->environment_id);
                        if ((r = push_env(&env, "LAGOON_ENVIRONMENT_ID", id)) < 0)
                                return r;
                }
                /* remote-controller gives the proxy to standard tasks only. */
                if ((r = push_env(&env, "HTTP_PROXY", c->http_proxy)) < 0 ||
                    (r = push_env(&env, "http_proxy", c->http_proxy)) < 0 ||
                    (r = push_env(&env, "HTTPS_PROXY", c->https_proxy)) < 0 ||
                    (r = push_env(&env, "https_proxy", c->https_proxy)) < 0 ||
                    (r = push_env(&env, "NO_PROXY", c->no_proxy)) < 0 ||
                    (r = push_env(&env, "no_proxy", c->no_proxy)) < 0)
                        return r;
        } else if ((r = push_env(&env, "JSON_PAYLOAD", msg->json_payload)) < 0)
                return r;
        if ((r = push_env(&env, "LAGOON_PROJECT_VARIABLES", msg->project_variables_raw)) < 0 ||
            (r = push_env(&env, "LAGOON_ENVIRONMENT_VARIABLES", msg->environment_variables_raw)) < 0)
                return r;
        *ret = TAKE_PTR(env);
        return 0;
}

/* Lagoon's rootless-workload flag: ForceRootlessWorkload=, else the task's variable
 * (environment over project), else DefaultRootlessWorkload=. */
static bool task_rootless(Lagoon *l, const LagoonMessage *msg) {
        const Config *c = config(l);
        const char *v = c->rootless_force ?: lagoon_message_variable(msg, "LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD")
                                                                 ?: c->rootless_default;
        return streq_ptr(v, "enabled");
}

/* The labels remote-controller puts on task pods: the project's organization. A value
 * that is no label value is left out (the pod would be refused). */
static int task_pod_labels(const LagoonMessage *msg, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        char *s;
        int r;

        if (msg->has_organization_id) {
                if (asprintf(&s, "organization.lagoon.sh/id=%" PRIi64, msg->organization_id) < 0)
                        return -ENOMEM;
                r = strv_push(&l, s);
                if (r < 0)
                        return r;
        }
        if (msg->organization_name && strlen(msg->organization_name) <= 63 &&
            strspn(msg->organization_name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") ==
                    strlen(msg->organization_name) &&
            isalnum((unsigned char) msg->organization_name[0]) &&
            isalnum((unsigned char) msg->organization_name[strlen(msg->organization_name) - 1])) {
                if (asprintf(&s, "organization.lagoon.sh/name=%s", msg->organization_name) < 0)
                        return -ENOMEM;
                r = strv_push(&l, s);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

static int find_delivery_queue(Lagoon *l, const char *queue, LagoonQueue *ret, bool *ret_routed) {
        *ret_routed = streq_ptr(queue, l->queue_node_jobs) || streq_ptr(queue, l->queue_node_misc);
        if (streq(queue, l->queue_jobs) || streq_ptr(queue, l->queue_node_jobs))
                *ret = LAGOON_QUEUE_JOBS;
        else if (streq(queue, l->queue_misc) || streq_ptr(queue, l->queue_node_misc))
                *ret = LAGOON_QUEUE_MISC;
        else
                return -ENOENT;
        return 0;
}

static Route *route_free(Route *rt) {
        if (!rt)
                return NULL;
        node_lookup_cancel(rt->lookup);
        free(rt->task_id);
        free(rt->node);
        return mfree(rt);
}

static void routes_clear(Lagoon *l) {
        for (size_t i = 0; i < l->n_routes; i++)
                route_free(l->routes[i]);
        l->routes = mfree(l->routes);
        l->n_routes = 0;
}

static void on_located(NodeLookup *lookup, int error, const char *node, void *userdata) {
        Route *rt = userdata;

        rt->lookup = node_lookup_cancel(rt->lookup);
        rt->done = true;
        if (error < 0)
                log_warning_errno(error, "Task %s: cannot tell which node runs its service (%m); running it here.",
                                  rt->task_id);
        else if (node && free_and_strdup(&rt->node, node) < 0)
                log_oom();
        (void) held_timer_arm(rt->lagoon, 0);
}

/* Cluster mode, a standard task from the shared queue: 0 run it here, HANDLE_FORWARD to
 * the jobs queue of the node that runs its service (*ret_forward: its routing key),
 * -EAGAIN while the API server is asked. */
static int route_for(Lagoon *l, const LagoonMessage *msg, char **ret_forward) {
        Node *node = manager_get_node(l->manager);
        Route *rt = NULL;
        size_t i;
        int r;

        for (i = 0; i < l->n_routes; i++)
                if (streq(l->routes[i]->task_id, msg->task_id)) {
                        rt = l->routes[i];
                        break;
                }
        if (!rt) {
                Route **n = reallocarray(l->routes, l->n_routes + 1, sizeof(Route *));
                if (!n)
                        return -ENOMEM;
                l->routes = n;
                rt = calloc(1, sizeof(Route));
                if (!rt || !(rt->task_id = strdup(msg->task_id))) {
                        route_free(rt);
                        return -ENOMEM;
                }
                rt->lagoon = l;
                r = node_locate_service(node, msg->namespace, msg->service, on_located, rt, &rt->lookup);
                if (r < 0) {
                        route_free(rt);
                        return r == -EOPNOTSUPP ? 0 : r;
                }
                l->routes[l->n_routes++] = rt;
                return -EAGAIN;
        }
        if (!rt->done)
                return -EAGAIN;

        /* Used once: the message is handled (or handed on) now. */
        r = 0;
        if (rt->node && !streq(rt->node, node_name(node))) {
                log_info("Task %s: its service %s runs on %s; handed to that node.", msg->task_id, msg->service,
                         rt->node);
                r = asprintf(ret_forward, "%s:node:%s:jobs", l->target, rt->node) < 0 ? -ENOMEM : HANDLE_FORWARD;
        }
        memmove(l->routes + i, l->routes + i + 1, (l->n_routes - i - 1) * sizeof(Route *));
        l->n_routes--;
        route_free(rt);
        return r;
}

/* Cluster mode: may this daemon store the task? 1 yes (the claim is ours), 0 no (another
 * daemon accepted it: drop the message), -EAGAIN not yet (the claim is being made, or
 * another daemon claimed it without storing it yet, or the API server failed: hold the
 * message and ask again). */
static int claim_for(Lagoon *l, const LagoonMessage *msg) {
        _cleanup_free_ char *report = NULL;
        const char *holder = NULL, *task_id = msg->task_id;
        int r;

        if (!l->claims || manager_get_task(l->manager, task_id))
                return 1;
        r = claim_report(msg, NULL, &report);
        if (r < 0)
                return r;
        r = claim_check(l->claims, task_id, report, &holder);
        if (r == CLAIM_OURS)
                return 1;
        if (r == CLAIM_THEIRS) {
                log_info("Task %s: claimed by %s; acknowledged and left to it.", task_id, strna(holder));
                return 0;
        }
        return -EAGAIN;
}

/* A cancel for a task this daemon does not know, in cluster mode: 1 answer it here (no
 * claim: nobody runs it), HANDLE_FORWARD to the claim's holder (*ret_forward: the routing
 * key of its misc queue), 0 drop it (the task ended on its holder, which reports it),
 * -EAGAIN ask again. */
static int cancel_elsewhere(Lagoon *l, const char *task_id, char **ret_forward) {
        const char *holder = NULL;
        bool done = false;
        int r;

        r = claim_lookup(l->claims, task_id, &holder, &done);
        if (r == CLAIM_PENDING || r < 0)
                return -EAGAIN;
        if ((r == CLAIM_THEIRS || r == CLAIM_WAIT) && holder) {
                if (done) {
                        log_info("Task %s: cancel requested by Lagoon for a task that ended on %s; its status is "
                                 "that node's to report.",
                                 task_id, holder);
                        return 0;
                }
                if (asprintf(ret_forward, "%s:node:%s:misc", l->target, holder) < 0)
                        return -ENOMEM;
                log_info("Task %s: cancel requested by Lagoon; handed to %s, which holds its claim.", task_id, holder);
                return HANDLE_FORWARD;
        }
        return 1;
}

/* Handles one message. Returns 1 when it is settled (ack), 0 when it must wait (room in
 * the queue), -EAGAIN when it waits for its claim, HANDLE_FORWARD when it is handed on
 * unchanged with the routing key *ret_forward (another node's queue, remote-controller's
 * misc queue), -EBADMSG when it is to be rejected, other errors: leave it
 * unacknowledged. */
static int
handle_message(Lagoon *l, LagoonQueue queue, bool routed, const char *body, size_t size, char **ret_forward) {
        _cleanup_(lagoon_message_freep) LagoonMessage *msg = NULL;
        _cleanup_strv_free_ char **env = NULL, **secrets = NULL, **pod_labels = NULL;
        _cleanup_free_ char *error = NULL;
        const Task *t = NULL;
        bool existing = false;
        int r;

        r = lagoon_message_parse(queue, body, size, &msg, &error);
        if (msg) {
                int k = lagoon_message_set_namespace_prefix(msg, config(l)->namespace_prefix);
                if (k < 0 && k != -EINVAL)
                        return k;
        }
        if (r == -EOPNOTSUPP && l->rc_key_misc) {
                /* Not a task (a build cancel, a restore, idling, …): remote-controller's.
                 * Quiet while the copies fail: held ones come here every second. */
                log_full(l->forward_warned ? LOG_DEBUG : LOG_INFO,
                         "Handing a %s message to remote-controller (routing key %s).",
                         msg && msg->key ? msg->key : "key-less", l->rc_key_misc);
                *ret_forward = strdup(l->rc_key_misc);
                return *ret_forward ? HANDLE_FORWARD : -ENOMEM;
        }
        if (r < 0) {
                log_error("Rejecting a message from the %s queue: %s%s%s%s",
                          queue == LAGOON_QUEUE_JOBS ? "jobs" : "misc", strna(error),
                          msg && msg->task_id ? "; task " : "", msg ? strempty(msg->task_id) : "",
                          r == -EOPNOTSUPP ? " (not a task: set [Lagoon] RemoteControllerTarget= to hand such "
                                             "messages to remote-controller)"
                                           : "");
                if (msg) {
                        r = report_failure(l, msg, TASK_FAILED, error);
                        if (r < 0)
                                return r;
                }
                return -EBADMSG;
        }

        if (msg->kind == LAGOON_MESSAGE_CANCEL) {
                r = task_id_is_valid(msg->task_id) ? manager_cancel(l->manager, msg->task_id) : -ENOENT;
                if (r >= 0) {
                        log_info("Task %s: cancel requested by Lagoon.", msg->task_id);
                        return 1;
                }
                if (r == -ENOENT && l->claims && task_id_is_valid(msg->task_id)) {
                        r = cancel_elsewhere(l, msg->task_id, ret_forward);
                        if (r != 1)
                                return r == 0 ? 1 : r;
                        r = -ENOENT;
                }
                /* Lagoon wants an answer even for a task it thinks is stuck. */
                t = r == -EALREADY ? manager_get_task(l->manager, msg->task_id) : NULL;
                if (t) {
                        log_info("Task %s: cancel requested by Lagoon for a task that is %s; answering with that "
                                 "status again.",
                                 msg->task_id, task_status_to_string(t->status));
                        r = report_cancel_finished(l, t);
                } else if (l->rc_key_misc) {
                        /* remote-controller may run it (started before lagoon-taskd took the
                         * tasks over); it answers cancelled as this daemon would when not. */
                        log_full(l->forward_warned ? LOG_DEBUG : LOG_INFO,
                                 "Task %s: cancel requested by Lagoon for a task unknown here; handed to "
                                 "remote-controller.",
                                 msg->task_id);
                        *ret_forward = strdup(l->rc_key_misc);
                        return *ret_forward ? HANDLE_FORWARD : -ENOMEM;
                } else {
                        log_info("Task %s: cancel requested by Lagoon for a task unknown here; answering cancelled.",
                                 msg->task_id);
                        r = report_cancel_unknown(l, msg);
                }
                return r < 0 ? r : 1;
        }

        if (!task_id_is_valid(msg->task_id)) {
                log_error("Rejecting task message: task id \"%s\" is not usable here.", msg->task_id);
                r = report_failure(l, msg, TASK_FAILED, "launch-error: invalid task id");
                return r < 0 ? r : -EBADMSG;
        }
        /* Cluster mode: a standard task runs on the node of its service (the daemon there
         * claims it); what another daemon handed here stays here. */
        if (l->claims && !routed && msg->kind == LAGOON_MESSAGE_STANDARD &&
            !manager_get_task(l->manager, msg->task_id)) {
                r = route_for(l, msg, ret_forward);
                if (r != 0)
                        return r;
        }
        r = claim_for(l, msg);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = task_env(l, msg, &env);
        if (r < 0)
                return r;
        r = lagoon_message_secrets(msg, config(l)->secret_variables, &secrets);
        if (r < 0)
                return r;

        const JsonValue *task = json_get(msg->info, "task");
        TaskRequest req = {
                .id = msg->task_id,
                .name = json_get_string(task, "taskName") ?: json_get_string(task, "name"),
                .project = msg->project,
                .environment = msg->environment,
                .namespace = msg->namespace,
                .env = env,
                .secrets = secrets,
                .lagoon = msg->info,
        };
        if (msg->kind == LAGOON_MESSAGE_STANDARD) {
                req.service = msg->service;
                req.command = msg->command;
        } else {
                req.image = msg->image;
                req.deployer_token = msg->deployer_token;
                req.ssh_key = msg->ssh_key;
                req.volume_mounts = msg->volume_mounts;
                req.rb_namespace = msg->activestandby_destination;
                req.rb_source = msg->activestandby_source;
                req.rootless = task_rootless(l, msg);
        }
        r = task_pod_labels(msg, &pod_labels);
        if (r < 0)
                return r;
        req.pod_labels = pod_labels;

        error = mfree(error);
        r = manager_submit(l->manager, &req, &t, &existing, &error);
        if (r == -EBUSY || r == -ESHUTDOWN)
                return 0;
        if (r == -EEXIST) {
                /* Not reported: Lagoon's record is the other task's. */
                log_error("Rejecting task message: %s.", strna(error));
                return -EBADMSG;
        }
        if (r == -ENOENT || r == -EINVAL) {
                _cleanup_free_ char *reason = NULL;

                log_error("Task %s from Lagoon cannot run: %s.", msg->task_id, strna(error));
                if (asprintf(&reason, "%s: %s",
                             r == -EINVAL ? "launch-error"
                             : req.image  ? "image-pull"
                                          : "service-not-found",
                             strna(error)) < 0)
                        return -ENOMEM;
                r = report_failure(l, msg, TASK_FAILED, reason);
                if (r >= 0 && l->claims)
                        (void) claim_finish(l->claims, msg->task_id); /* ended here, never stored */
                return r < 0 ? r : 1;
        }
        if (r < 0)
                return log_error_errno(r, "Task %s: failed to accept it: %m", msg->task_id);
        if (l->claims) {
                _cleanup_free_ char *report = NULL;

                /* Stored: others may drop it now. */
                (void) claim_report(msg, t, &report);
                (void) claim_accept(l->claims, msg->task_id, report);
        }
        if (existing)
                log_info("Task %s: delivered again by the broker, already known (%s).", msg->task_id,
                         task_status_to_string(t->status));
        else
                log_info("Task %s: accepted from Lagoon (%s, %s).", msg->task_id,
                         lagoon_message_kind_to_string(msg->kind), msg->namespace);
        return 1;
}

/* Publishes the message unchanged with the routing key; the delivery is acknowledged
 * when the broker confirms the copy. Mandatory: a copy no queue takes is returned, not
 * confirmed away. */
static int forward(Lagoon *l, const HeldDelivery *h, const char *routing_key) {
        _cleanup_free_ char *key = strdup(routing_key);
        Forward f = {.delivery = {.tag = h->tag, .queue = h->queue, .routed = h->routed, .size = h->size}};
        Forward *n;
        int r;

        n = reallocarray(l->forwards, l->n_forwards + 1, sizeof(Forward));
        if (!n)
                return -ENOMEM;
        l->forwards = n;
        f.delivery.body = memdup(h->body, h->size);
        if (!key || !f.delivery.body || amqp_properties_copy(h->props, &f.delivery.props) < 0) {
                held_delivery_done(&f.delivery);
                return -ENOMEM;
        }
        r = amqp_client_publish_as(l->amqp, EXCHANGE_TASKS, key, h->body, h->size, h->props, /* mandatory= */ true,
                                   &f.publish_tag);
        if (r < 0) {
                held_delivery_done(&f.delivery);
                return log_warning_errno(r, "Failed to hand a message on with routing key %s: %m", key);
        }
        f.routing_key = TAKE_PTR(key);
        l->forwards[l->n_forwards++] = f;
        return 0;
}

static void settle(Lagoon *l, uint64_t tag, int r) {
        if (r == HANDLE_FORWARD)
                return; /* acknowledged by its confirm */
        if (r > 0)
                (void) amqp_client_ack(l->amqp, tag);
        else if (r == -EBADMSG)
                (void) amqp_client_reject(l->amqp, tag, false);
        /* Otherwise left unacknowledged: the broker redelivers it after a reconnect. */
}

static int on_held_timer(sd_event_source *s, uint64_t usec, void *userdata);

static int held_timer_arm(Lagoon *l, uint64_t delay_usec) {
        int r;

        if (!l->held_timer) {
                r = sd_event_add_time_relative(l->event, &l->held_timer, CLOCK_MONOTONIC, delay_usec,
                                               10 * USEC_PER_MSEC, on_held_timer, l);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(l->held_timer, "lagoon-held");
        } else {
                r = sd_event_source_set_time_relative(l->held_timer, delay_usec);
                if (r < 0)
                        return r;
        }
        return sd_event_source_set_enabled(l->held_timer, SD_EVENT_ONESHOT);
}

static int on_held_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Lagoon *l = userdata;
        size_t w = 0;

        for (size_t i = 0; i < l->n_held; i++) {
                HeldDelivery *h = l->held + i;
                _cleanup_free_ char *key = NULL;
                int r = handle_message(l, h->queue, h->routed, h->body, h->size, &key);

                if (r == HANDLE_FORWARD && forward(l, h, key) < 0)
                        r = -EAGAIN;
                if ((r == 0 || r == -EAGAIN) && manager_is_shutting_down(l->manager) == false) {
                        l->held[w++] = *h;
                        continue;
                }
                settle(l, h->tag, r);
                held_delivery_done(h);
        }
        l->n_held = w;
        if (w > 0) {
                (void) sd_event_source_set_time_relative(s, USEC_PER_SEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

static void on_amqp_delivery(AmqpClient *c,
                             const char *queue,
                             const char *routing_key,
                             uint64_t tag,
                             const void *body,
                             size_t size,
                             const AmqpProperties *props,
                             void *userdata) {
        Lagoon *l = userdata;
        _cleanup_free_ char *key = NULL;
        HeldDelivery h = {.tag = tag, .body = (char *) body, .size = size, .props = (AmqpProperties *) props};
        int r;

        if (find_delivery_queue(l, queue, &h.queue, &h.routed) < 0) {
                (void) amqp_client_reject(c, tag, false);
                return;
        }
        r = handle_message(l, h.queue, h.routed, body, size, &key);
        if (r == HANDLE_FORWARD && forward(l, &h, key) < 0)
                r = -EAGAIN;
        if (!(r == 0 || r == -EAGAIN) || manager_is_shutting_down(l->manager)) {
                settle(l, tag, r);
                return;
        }

        /* The queue is full or the claim not settled: hold it (the prefetch window bounds
         * how many) and retry. On failure it stays unacknowledged. */
        h.body = memdup(body, size);
        h.props = NULL;
        if (!h.body || amqp_properties_copy(props, &h.props) < 0) {
                held_delivery_done(&h);
                return;
        }
        if (r == 0)
                log_notice("Task queue full (MaxQueued=): holding a message from Lagoon until there is room.");
        (void) hold(l, &h, USEC_PER_SEC);
}

/* A claim was answered: look at the held messages again now, and at the stored task. */
static void on_claim_changed(ClaimSet *s, const char *task_id, void *userdata) {
        Lagoon *l = userdata;
        const Task *t = manager_get_task(l->manager, task_id);

        if (l->n_held > 0)
                (void) held_timer_arm(l, 0);
        if (!t)
                return;
        bus_schedule_flush(l); /* its outbox entries may have waited for this */
        if (claim_taken(s, task_id) && !task_status_is_final(t->status) && !t->pod) {
                /* This daemon was taken for dead while it was away and the task reported
                 * lost: it must not run (on) here. Its pod, if it has one, is the new
                 * holder's, which watches and reports it. */
                log_warning("Task %s: another daemon took its claim over while this one was away and reported it; "
                            "stopping it here, not reported again.",
                            task_id);
                (void) manager_cancel_with_grace(l->manager, task_id, 0);
        }
        manager_gate_changed(l->manager);
}

static void on_amqp_state(AmqpClient *c, bool connected, const char *reason, void *userdata) {
        Lagoon *l = userdata;

        if (connected) {
                l->bus_connected = true;
                l->bus_warned = false;
                log_info("Connected to Lagoon's message bus, consuming %s and %s%s%s%s.", l->queue_jobs, l->queue_misc,
                         l->rc_key_misc ? "; builds, removals and non-task misc messages go to remote-controller ("
                                        : "",
                         l->rc_key_misc ? config(l)->rc_target : "", l->rc_key_misc ? ")" : "");
                bus_schedule_flush(l);
                return;
        }
        /* Called for every failed attempt too: say it once per outage. */
        if (l->bus_connected) {
                l->bus_disconnects++;
                log_warning("Lost Lagoon's message bus (%s); reconnecting. %zu message(s) wait in the outbox.",
                            strna(reason), outbox_count(l->outbox, OUTBOX_BUS));
        } else if (!l->bus_warned)
                log_warning("Cannot reach Lagoon's message bus (%s); retrying with backoff.", strna(reason));
        else
                log_debug("Lagoon's message bus: still unreachable (%s).", strna(reason));
        l->bus_warned = true;
        l->bus_connected = false;
        if (reason && startswith(reason, "channel closed by broker: 406"))
                bus_refused(l, reason);
        /* Unconfirmed publishes are sent again; held deliveries go back to the queue. */
        outbox_reset_in_flight(l->outbox, OUTBOX_BUS);
        l->n_publishes = 0;
        forwards_clear(l); /* their deliveries went back to the queue with the connection */
        routes_clear(l);
        claim_abandon_unaccepted(l->claims);
        for (size_t i = 0; i < l->n_held; i++)
                held_delivery_done(l->held + i);
        l->n_held = 0;
}

/* ---- the API sender ---- */

static void on_api_done(LagoonApi *a, LagoonApiResult result, const char *detail, void *userdata) {
        Lagoon *l = userdata;
        OutboxEntry *e = outbox_get(l->outbox, OUTBOX_API, 0);

        if (result == LAGOON_API_RETRY) {
                if (!l->api_warned)
                        log_warning("Lagoon's API is not answering (%s); retrying with backoff.", strna(detail));
                l->api_warned = true;
                l->api_backoff_usec = CLAMP(l->api_backoff_usec * 2, RETRY_MIN_USEC, RETRY_MAX_USEC);
                api_schedule(l, l->api_backoff_usec);
                return;
        }
        if (l->api_warned)
                log_info("Lagoon's API answers again.");
        l->api_warned = false;
        l->api_backoff_usec = 0;
        if (result == LAGOON_API_REJECTED)
                log_error("Lagoon's API refused an update of task %s, dropping it: %s", e ? e->task_id : "?",
                          strna(detail));
        if (e) {
                int r = outbox_remove(l->outbox, e->seq);
                if (r < 0 && r != -ENOENT)
                        log_warning_errno(r, "Failed to remove delivered outbox entry %" PRIu64 ": %m", e->seq);
        }
        api_schedule(l, 0);
}

/* With the bus as well, Lagoon's API has two writers: the daemon, and actions-handler
 * applying the bus messages. The daemon's final update is the last write: sent once the
 * task's bus statuses were all confirmed and FinalStatusDelaySec= passed since its final
 * status was (at once while the bus is unreachable: the API is the way left). Returns
 * how long to wait, 0 to send now. */
static uint64_t api_hold(Lagoon *l, const OutboxEntry *e) {
        uint64_t since = 0, now = now_usec(CLOCK_MONOTONIC);

        if (!streq(e->kind, "final") || !l->amqp || !amqp_client_is_connected(l->amqp))
                return 0;
        for (size_t i = 0;; i++) {
                const OutboxEntry *b = outbox_get(l->outbox, OUTBOX_BUS, i);

                if (!b)
                        break;
                if (streq(b->task_id, e->task_id) && (streq(b->kind, "status") || streq(b->kind, "final")))
                        return 250 * USEC_PER_MSEC; /* looked at again then */
        }
        for (size_t i = 0; i < l->n_confirmed; i++)
                if (streq(l->confirmed[i].task_id, e->task_id))
                        since = l->confirmed[i].usec;
        return since + config(l)->final_delay_usec > now ? since + config(l)->final_delay_usec - now : 0;
}

static int on_api_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Lagoon *l = userdata;
        OutboxEntry *e;
        uint64_t wait;
        int r;

        if (!l->api || lagoon_api_busy(l->api))
                return 0;
        e = outbox_get(l->outbox, OUTBOX_API, 0);
        if (!e)
                return 0;
        r = outbox_claim_check(l, e);
        if (r == -EPERM) {
                if (outbox_drop_taken(l, e))
                        api_schedule(l, 0);
                else
                        api_schedule(l, RETRY_MAX_USEC);
                return 0;
        }
        if (r > 0) {
                api_schedule(l, 250 * USEC_PER_MSEC);
                return 0;
        }
        wait = api_hold(l, e);
        if (wait > 0) {
                api_schedule(l, wait);
                return 0;
        }
        r = lagoon_api_send(l->api, e->body, e->body_size, on_api_done, l);
        if (r < 0) {
                log_warning_errno(r, "Failed to send an update to Lagoon's API, retrying: %m");
                api_schedule(l, RETRY_MAX_USEC);
        }
        return 0;
}

static void api_schedule(Lagoon *l, uint64_t delay_usec) {
        if (!l->api_timer)
                return;
        (void) sd_event_source_set_time_relative(l->api_timer, delay_usec);
        (void) sd_event_source_set_enabled(l->api_timer, SD_EVENT_ONESHOT);
}

/* ---- lifecycle ---- */

Lagoon *lagoon_free(Lagoon *l) {
        if (!l)
                return NULL;
        manager_remove_task_callback(l->manager, on_task_changed, l);
        if (l->slots)
                manager_set_gate(l->manager, NULL);
        slot_set_free(l->slots);
        amqp_client_free(l->amqp);
        while (l->adoptions)
                adoption_free(l->adoptions);
        claim_set_free(l->claims);
        lagoon_api_free(l->api);
        http_client_free(l->http);
        sd_event_source_disable_unref(l->bus_flush_source);
        sd_event_source_disable_unref(l->held_timer);
        sd_event_source_disable_unref(l->api_timer);
        sd_event_source_disable_unref(l->log_timer);
        sd_event_source_disable_unref(l->hold_timer);
        for (size_t i = 0; i < l->n_confirmed; i++)
                free(l->confirmed[i].task_id);
        free(l->confirmed);
        free(l->nacked);
        for (size_t i = 0; i < l->n_held; i++)
                held_delivery_done(l->held + i);
        free(l->held);
        free(l->publishes);
        for (size_t i = 0; i < l->n_logs; i++)
                free(l->logs[i].task_id);
        free(l->logs);
        outbox_free(l->outbox);
        free(l->target);
        free(l->queue_jobs);
        free(l->queue_misc);
        free(l->queue_node_jobs);
        free(l->queue_node_misc);
        forwards_clear(l);
        free(l->forwards);
        free(l->rc_key_misc);
        routes_clear(l);
        free(l->key_jobs);
        free(l->key_misc);
        sd_event_unref(l->event);
        return mfree(l);
}

static int lagoon_new_bus(Lagoon *l) {
        const Config *c = config(l);
        int r;

        if (asprintf(&l->queue_jobs, "lagoon-tasks:%s:jobs", l->target) < 0 ||
            asprintf(&l->queue_misc, "lagoon-tasks:%s:misc", l->target) < 0 ||
            asprintf(&l->key_jobs, "%s:jobs", l->target) < 0 || asprintf(&l->key_misc, "%s:misc", l->target) < 0)
                return -ENOMEM;

        /* What remote-controller declares, plus the logs exchange it publishes to. */
        const AmqpExchange exchanges[] = {
                {EXCHANGE_TASKS, "direct"},
                {EXCHANGE_LOGS, "direct"},
        };
        _cleanup_free_ char *key_node_jobs = NULL, *key_node_misc = NULL, *rc_builddeploy = NULL, *rc_remove = NULL,
                            *rc_misc = NULL, *key_builddeploy = NULL, *key_remove = NULL;
        AmqpQueue queues[7] = {
                {l->queue_jobs, EXCHANGE_TASKS, l->key_jobs},
                {l->queue_misc, EXCHANGE_TASKS, l->key_misc},
        };
        size_t n_queues = 2;

        /* Coexistence: remote-controller runs under the target name RemoteControllerTarget=
         * and keeps the builds. Its queues are declared as it declares them (durable, no
         * arguments), so nothing is unroutable before it first ran: the target's builds and
         * removals are bound to its queues, the misc messages that are not tasks are handed
         * to its misc queue (bound as it binds it). Not consumed here. */
        if (c->rc_target) {
                if (asprintf(&rc_builddeploy, "lagoon-tasks:%s:builddeploy", c->rc_target) < 0 ||
                    asprintf(&rc_remove, "lagoon-tasks:%s:remove", c->rc_target) < 0 ||
                    asprintf(&rc_misc, "lagoon-tasks:%s:misc", c->rc_target) < 0 ||
                    asprintf(&l->rc_key_misc, "%s:misc", c->rc_target) < 0 ||
                    asprintf(&key_builddeploy, "%s:builddeploy", l->target) < 0 ||
                    asprintf(&key_remove, "%s:remove", l->target) < 0)
                        return -ENOMEM;
                queues[n_queues++] = (AmqpQueue){rc_builddeploy, EXCHANGE_TASKS, key_builddeploy, .no_consume = true};
                queues[n_queues++] = (AmqpQueue){rc_remove, EXCHANGE_TASKS, key_remove, .no_consume = true};
                queues[n_queues++] = (AmqpQueue){rc_misc, EXCHANGE_TASKS, l->rc_key_misc, .no_consume = true};
        }

        /* Cluster mode: this node's own queues, for what other daemons hand it (the
         * cancel of a task whose claim it holds). */
        if (c->claim_namespace && c->node_name) {
                if (asprintf(&l->queue_node_jobs, "lagoon-tasks:%s:node:%s:jobs", l->target, c->node_name) < 0 ||
                    asprintf(&l->queue_node_misc, "lagoon-tasks:%s:node:%s:misc", l->target, c->node_name) < 0 ||
                    asprintf(&key_node_jobs, "%s:node:%s:jobs", l->target, c->node_name) < 0 ||
                    asprintf(&key_node_misc, "%s:node:%s:misc", l->target, c->node_name) < 0)
                        return -ENOMEM;
                queues[n_queues++] = (AmqpQueue){l->queue_node_jobs, EXCHANGE_TASKS, key_node_jobs};
                queues[n_queues++] = (AmqpQueue){l->queue_node_misc, EXCHANGE_TASKS, key_node_misc};
        }
        const AmqpSettings settings = {
                .url = c->broker_url,
                .user = c->broker_user,
                .password = c->broker_password,
                .heartbeat_sec = c->broker_heartbeat_sec,
                .prefetch = c->broker_prefetch,
                .ca_file = c->broker_ca_file,
                .cert_file = c->broker_cert_file,
                .key_file = c->broker_key_file,
        };
        const AmqpCallbacks callbacks = {
                .delivery = on_amqp_delivery,
                .confirm = on_amqp_confirm,
                .state = on_amqp_state,
                .returned = on_amqp_return,
                .userdata = l,
        };
        r = amqp_client_new(l->event, &settings, exchanges, ELEMENTSOF(exchanges), queues, n_queues, &callbacks,
                            &l->amqp);
        if (r < 0)
                return log_error_errno(r, "Invalid BrokerURL=: %m");

        r = sd_event_add_defer(l->event, &l->bus_flush_source, bus_flush, l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(l->bus_flush_source, "lagoon-bus-flush");
        r = sd_event_add_time(l->event, &l->hold_timer, CLOCK_MONOTONIC, UINT64_MAX, 10 * USEC_PER_MSEC, on_hold_timer,
                              l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(l->hold_timer, "lagoon-bus-hold");
        (void) sd_event_source_set_enabled(l->hold_timer, SD_EVENT_OFF);
        l->bus_start_usec = now_usec(CLOCK_MONOTONIC);
        return sd_event_source_set_enabled(l->bus_flush_source, SD_EVENT_OFF);
}

int lagoon_new(sd_event *e, Manager *m, Lagoon **ret) {
        _cleanup_(lagoon_freep) Lagoon *l = NULL;
        const Config *c = manager_get_config(m);
        _cleanup_free_ char *dir = NULL;
        unsigned n_corrupt = 0;
        int r;

        if (!c->broker_url && !c->api_url) {
                *ret = NULL;
                return 0;
        }

        l = calloc(1, sizeof(Lagoon));
        if (!l)
                return log_oom();
        l->event = sd_event_ref(e);
        l->manager = m;
        l->bus_size_max = c->message_size_max;
        l->target = strdup(c->target_name);
        dir = path_join(c->state_dir, "outbox");
        if (!l->target || !dir)
                return log_oom();
        r = outbox_open(dir, &l->outbox, &n_corrupt);
        if (r < 0)
                return log_error_errno(r, "Failed to open the outbox %s: %m", dir);
        if (n_corrupt > 0)
                log_warning("Outbox %s: %u unreadable entr%s moved to corrupt/.", dir, n_corrupt,
                            n_corrupt == 1 ? "y" : "ies");
        if (outbox_count(l->outbox, OUTBOX_BUS) + outbox_count(l->outbox, OUTBOX_API) > 0)
                log_info("Outbox: %zu message(s) for the bus and %zu for the API still to deliver.",
                         outbox_count(l->outbox, OUTBOX_BUS), outbox_count(l->outbox, OUTBOX_API));

        if (c->broker_url) {
                r = lagoon_new_bus(l);
                if (r < 0)
                        return r;
        }
        if (c->api_url) {
                r = http_client_new(e, &l->http);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the HTTP client: %m");
                r = lagoon_api_new(l->http, c, &l->api);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the Lagoon API client: %m");
                r = sd_event_add_time_relative(e, &l->api_timer, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC, on_api_timer,
                                               l);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(l->api_timer, "lagoon-api");
                (void) sd_event_source_set_enabled(l->api_timer, SD_EVENT_OFF);
        }

        if (l->amqp) {
                r = sd_event_add_time_relative(e, &l->log_timer, CLOCK_MONOTONIC, c->log_interval_usec,
                                               USEC_PER_SEC / 4, on_log_timer, l);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(l->log_timer, "lagoon-logs");
        }

        r = manager_add_task_callback(m, on_task_changed, l);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

/* Cluster mode: a stored task launches only while its claim is this daemon's (after a
 * restart: once it was read back; one another daemon took over while this one was away
 * is stopped in on_claim_changed()). Then MaxRunningPerEnvironment= across the cluster:
 * a task's environment is its namespace. */
static int gate_acquire(const Task *t, unsigned limit, void *userdata) {
        Lagoon *l = userdata;
        int r = claim_ready(l->claims, t->id);

        if (r == 0 || r == -EPERM)
                return 0;
        if (!l->slots || limit == 0)
                return 1;
        r = slot_acquire(l->slots, t->id, t->namespace, limit);

        if (r < 0)
                log_warning_errno(r, "Task %s: cannot ask for a slot of environment %s: %m", t->id, t->namespace);
        return r;
}

static void gate_release(const Task *t, void *userdata) {
        Lagoon *l = userdata;

        if (l->slots)
                slot_release(l->slots, t->id);
}

static bool gate_all_held(const Task *t, void *userdata) {
        Lagoon *l = userdata;

        return l->slots && slot_all_held(l->slots, t->id);
}

static void on_slot_changed(SlotSet *s, const char *task_id, void *userdata) {
        Lagoon *l = userdata;

        manager_gate_changed(l->manager);
}

/* Cluster mode: the claims need the API server client, which exists once the manager
 * started. */
static int lagoon_start_claims(Lagoon *l) {
        const Config *c = config(l);
        Node *node = manager_get_node(l->manager);
        int r;

        if (!c->claim_namespace || !l->amqp)
                return 0;
        if (!node || !node_api(node))
                return log_error_errno(EINVAL, "ClaimNamespace= needs the Kubernetes API server ([Kubernetes]).");

        const ClaimSettings settings = {
                .namespace = c->claim_namespace,
                .holder = node_name(node),
                .target = l->target,
                .duration_usec = c->claim_duration_usec,
                .retention_usec = c->claim_retention_usec,
        };
        r = claim_set_new(l->event, node_api(node), &settings, on_claim_changed, on_claim_lost, l, &l->claims);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the cluster claims: %m");
        log_info("Cluster mode: tasks are claimed as Leases in namespace %s, as node %s.", c->claim_namespace,
                 settings.holder);
        if (c->max_running_per_environment > 0) {
                r = slot_set_new(l->event, node_api(node), &settings, on_slot_changed, l, &l->slots);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the cluster's per-environment limits: %m");
        }
        manager_set_gate(l->manager, &(const ManagerGate){
                                             .acquire = gate_acquire,
                                             .release = gate_release,
                                             .all_held = gate_all_held,
                                             .userdata = l,
                                     });
        if (!l->slots)
                return 0;
        log_info("Cluster mode: MaxRunningPerEnvironment=%u counts the tasks of all daemons (Leases "
                 "%s/lagoon-taskd-slot-*).",
                 c->max_running_per_environment, c->claim_namespace);
        return 0;
}

int lagoon_start(Lagoon *l) {
        _cleanup_free_ const Task **tasks = NULL;
        size_t n = 0;
        int r;

        r = lagoon_start_claims(l);
        if (r < 0)
                return r;

        /* What a crash or a full disk left owed. */
        r = manager_list_tasks(l->manager, &tasks, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                (void) report_task(l, tasks[i]);
                /* Our claims from before the restart: renew the live ones, mark the
                 * recently ended ones done (the deletion after the retention is ours). */
                if (!l->claims)
                        continue;
                if (!task_status_is_final(tasks[i]->status))
                        (void) claim_adopt(l->claims, tasks[i]->id);
                else if (tasks[i]->finished_usec + manager_get_config(l->manager)->claim_retention_usec >
                         now_usec(CLOCK_REALTIME))
                        (void) claim_finish(l->claims, tasks[i]->id);
        }

        if (l->amqp) {
                r = amqp_client_start(l->amqp);
                if (r < 0)
                        return log_error_errno(r, "Failed to start the message bus client: %m");
        }
        api_schedule(l, 0);
        return 0;
}

size_t lagoon_n_outbox(Lagoon *l) {
        return l ? outbox_count(l->outbox, OUTBOX_BUS) + outbox_count(l->outbox, OUTBOX_API) : 0;
}

bool lagoon_bus_connected(Lagoon *l) {
        return l && l->amqp && amqp_client_is_connected(l->amqp);
}

void lagoon_get_stats(Lagoon *l, LagoonStats *ret) {
        *ret = (LagoonStats){};
        if (!l)
                return;
        ret->bus_configured = l->amqp;
        ret->bus_connected = lagoon_bus_connected(l);
        ret->bus_disconnects = l->bus_disconnects;
        ret->api_configured = l->api;
        ret->api_ok = !l->api_warned;
        for (OutboxSink s = 0; s < _OUTBOX_SINK_MAX; s++) {
                ret->outbox[s] = outbox_count(l->outbox, s);
                ret->outbox_oldest_usec[s] = outbox_oldest_usec(l->outbox, s);
        }
}
