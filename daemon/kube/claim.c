/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Cluster claims as Kubernetes Leases (see claim.h). Each claim has at most one request
 * in flight; one timer renews, retries and deletes. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "claim.h"
#include "lease.h"
#include "list.h"
#include "sha256.h"
#include "log.h"

#define CLAIM_ANNOTATION "lagoon.sh/taskd-claim"
#define CLAIM_TASK_ANNOTATION "lagoon.sh/task-id"
#define CLAIM_REPORT_ANNOTATION "lagoon.sh/taskd-report"
#define CLAIM_TARGET_LABEL "lagoon.sh/taskd-target"
#define CLAIM_RETRY_USEC USEC_PER_SEC
#define CLAIM_TICK_USEC USEC_PER_SEC
#define CLAIM_FOREIGN_KEEP_USEC (60 * USEC_PER_SEC) /* how long another daemon's answer is cached */
#define CLAIM_NAME_PREFIX "lagoon-task-"

typedef enum Mark {
        MARK_CLAIMED,
        MARK_ACCEPTED,
        MARK_DONE,
        _MARK_MAX,
} Mark;

static const char *const mark_table[_MARK_MAX] = {
        [MARK_CLAIMED] = "claimed",
        [MARK_ACCEPTED] = "accepted",
        [MARK_DONE] = "done",
};

static const char *const state_table[_CLAIM_STATE_MAX] = {
        [CLAIM_PENDING] = "pending", [CLAIM_OURS] = "ours",     [CLAIM_THEIRS] = "theirs",
        [CLAIM_WAIT] = "wait",       [CLAIM_ABSENT] = "absent",
};

const char *claim_state_to_string(ClaimState s) {
        return s >= 0 && s < _CLAIM_STATE_MAX ? state_table[s] : NULL;
}

typedef struct Claim Claim;

struct Claim {
        ClaimSet *set;
        char *task_id, *name;
        ClaimState state;
        Mark want;           /* the mark the Lease should carry (ours) */
        Mark sent;           /* the mark it carries, as far as we know */
        bool synced;         /* the Lease is as we want it */
        JsonValue *lease;    /* ours: the Lease as last written or read */
        char *holder;        /* theirs */
        bool foreign_done;   /* theirs, and the task ended there */
        bool lookup;         /* only asked who holds it: never create it */
        bool takeover_lost;  /* taking a dead node's accepted claim over */
        bool adopting;       /* read after a restart, to renew it */
        bool abandon;        /* its message is gone: delete it once it is ours */
        bool taken;          /* adopted, but another daemon had taken it over */
        char *report;        /* lagoon.sh/taskd-report to write */
        uint64_t renew_usec; /* CLOCK_MONOTONIC: next renewal of ours */
        uint64_t retry_usec; /* CLOCK_MONOTONIC: no new attempt before this */
        uint64_t forget_usec;
        uint64_t delete_usec; /* CLOCK_REALTIME: done, delete then */
        int error;            /* of the last attempt */
        KubeCall *call;
        Claim *prev, *next;
};

struct ClaimSet {
        sd_event *event;
        LeaseScope scope;
        uint64_t retention_usec;
        claim_changed_cb_t cb;
        claim_lost_cb_t lost_cb;
        void *userdata;
        Claim *claims;
        sd_event_source *timer, *sweep_timer;
        KubeCall *sweep_call;
};

static Claim *claim_free(Claim *c) {
        if (!c)
                return NULL;
        if (c->set)
                LIST_REMOVE(c->set->claims, c);
        kube_call_cancel(c->call);
        json_free(c->lease);
        free(c->task_id);
        free(c->name);
        free(c->holder);
        free(c->report);
        return mfree(c);
}

ClaimSet *claim_set_free(ClaimSet *s) {
        if (!s)
                return NULL;
        while (s->claims)
                claim_free(s->claims);
        sd_event_source_disable_unref(s->timer);
        sd_event_source_disable_unref(s->sweep_timer);
        kube_call_cancel(s->sweep_call);
        sd_event_unref(s->event);
        lease_scope_done(&s->scope);
        return mfree(s);
}

static bool is_dns_label(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n == 0 || n > max || s[0] == '-' || s[n - 1] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
                        return false;
        return true;
}

int claim_lease_name(const char *task_id, char **ret) {
        uint8_t md[SHA256_DIGEST_SIZE];
        char part[41], *p;
        size_t n = 0;

        if (isempty(task_id))
                return -EINVAL;
        /* 253 is the Lease name limit (a DNS subdomain); a label keeps it simple. */
        if (is_dns_label(task_id, 63 - strlen(CLAIM_NAME_PREFIX)))
                return asprintf(ret, CLAIM_NAME_PREFIX "%s", task_id) < 0 ? -ENOMEM : 0;

        /* Two ids that differ only in case or in '_' against '-' must not share a claim:
         * the exact id's hash tells them apart. */
        sha256(task_id, strlen(task_id), md);
        for (const char *c = task_id; *c && n < sizeof(part) - 1; c++) {
                char x = (char) ((*c >= 'A' && *c <= 'Z') ? *c - 'A' + 'a' : *c);
                part[n++] = (x >= 'a' && x <= 'z') || (x >= '0' && x <= '9') ? x : '-';
        }
        part[n] = 0;
        for (p = part; *p == '-'; p++)
                ;
        if (asprintf(ret, CLAIM_NAME_PREFIX "%s%s%02x%02x%02x%02x%02x", p, *p ? "-" : "", md[0], md[1], md[2], md[3],
                     md[4]) < 0)
                return -ENOMEM;
        return 0;
}

static Claim *claim_find(ClaimSet *s, const char *task_id) {
        for (Claim *c = s->claims; c; c = c->next)
                if (streq(c->task_id, task_id))
                        return c;
        return NULL;
}

static int claim_new(ClaimSet *s, const char *task_id, Claim **ret) {
        _cleanup_free_ Claim *c = NULL;
        int r;

        c = calloc(1, sizeof(Claim));
        if (!c)
                return -ENOMEM;
        c->task_id = strdup(task_id);
        if (!c->task_id)
                return -ENOMEM;
        r = claim_lease_name(task_id, &c->name);
        if (r < 0) {
                free(c->task_id);
                return r;
        }
        c->set = s;
        c->state = CLAIM_PENDING;
        LIST_PREPEND(s->claims, c);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ON);
        *ret = TAKE_PTR(c);
        return 0;
}

static void claim_changed(Claim *c) {
        if (c->set->cb)
                c->set->cb(c->set, c->task_id, c->set->userdata);
}

/* Sets holder, times and mark on a Lease (new or read); acquire: a new holder. */
static int lease_set(Claim *c, JsonValue *lease, Mark mark, bool acquire) {
        const JsonValue *old = json_get(lease, "spec");
        JsonValue *md, *spec, *annotations;
        int64_t transitions = 0;
        int r;

        if (acquire) {
                const JsonValue *t = json_get(old, "leaseTransitions");

                if (t && json_int64(t, &transitions) < 0)
                        transitions = 0;
                if (json_get(old, "holderIdentity"))
                        transitions++;
        }
        r = lease_set_common(lease, &c->set->scope, c->name, acquire, &spec);
        if (r < 0)
                return r;
        md = (JsonValue *) json_get(lease, "metadata");
        if ((r = json_object_ensure_object(md, "annotations", &annotations)) < 0 ||
            (r = json_object_set_string(annotations, CLAIM_ANNOTATION, mark_table[mark])) < 0 ||
            (r = json_object_set_string(annotations, CLAIM_TASK_ANNOTATION, c->task_id)) < 0 ||
            (c->report && (r = json_object_set_string(annotations, CLAIM_REPORT_ANNOTATION, c->report)) < 0) ||
            (c->set->scope.target && (r = json_object_set_string((JsonValue *) json_get(md, "labels"),
                                                                 CLAIM_TARGET_LABEL, c->set->scope.target)) < 0) ||
            (acquire && (r = json_object_set_int64(spec, "leaseTransitions", transitions)) < 0))
                return r;
        return 0;
}

static Mark lease_mark(const JsonValue *lease) {
        const char *m = json_get_string(json_get_path(lease, "metadata", "annotations", NULL), CLAIM_ANNOTATION);

        for (Mark i = 0; i < _MARK_MAX; i++)
                if (streq_ptr(m, mark_table[i]))
                        return i;
        /* A Lease of this name without our mark is somebody's: treat it as accepted. */
        return MARK_ACCEPTED;
}

static void claim_fail(Claim *c, int error, const char *what, const char *text) {
        c->error = error;
        c->retry_usec = now_usec(CLOCK_MONOTONIC) + CLAIM_RETRY_USEC;
        log_warning_errno(error, "Task %s: claim %s/%s: %s failed: %s", c->task_id, c->set->scope.namespace, c->name,
                          what, text ?: strerror(-error));
}

static void claim_take_lease(Claim *c, KubeCall *call) {
        json_free(c->lease);
        c->lease = kube_call_take_body(call);
}

static int claim_get(Claim *c);
static int claim_delete(Claim *c);

/* One request of the claim's (body: a JSON value, may be NULL); a failure to start it
 * counts as a failed attempt. */
static int
claim_send(Claim *c, const char *method, const char *path, const JsonValue *body, kube_done_cb_t cb, const char *what) {
        _cleanup_free_ char *text = NULL;
        int r;

        if (!path)
                return -ENOMEM;
        if (body) {
                r = json_format(body, false, &text, NULL);
                if (r < 0)
                        return r;
        }
        r = kube_request(c->set->scope.api, method, path, NULL, text, cb, c, &c->call);
        if (r < 0)
                claim_fail(c, r, what, NULL);
        return r;
}
static int claim_create(Claim *c);
static int claim_write(Claim *c, bool acquire);

/* A Lease of this name was read: whose is it, and what may we do? */
static void claim_judge(Claim *c, KubeCall *call, JsonValue *lease) {
        const char *holder = json_get_string(json_get(lease, "spec"), "holderIdentity");
        Mark mark = lease_mark(lease);
        ClaimState before = c->state;

        if (c->adopting && !streq_ptr(holder, c->set->scope.holder))
                c->taken = true; /* after a restart: another daemon took it for dead */
        c->adopting = false;
        if (streq_ptr(holder, c->set->scope.holder)) {
                /* Ours from before a restart (or a redelivery to us): carry on with it. */
                claim_take_lease(c, call);
                c->state = CLAIM_OURS;
                c->sent = mark;
                if (c->want < mark)
                        c->want = mark;
                c->synced = c->want == c->sent;
        } else if (mark == MARK_CLAIMED && !c->lookup && lease_expired(&c->set->scope, lease, 1)) {
                /* Its holder died before it stored the task: take it over, guarded by the
                 * resourceVersion read (a third daemon racing us gets 409). */
                claim_take_lease(c, call);
                log_info("Task %s: claim %s held by %s expired before it was accepted; taking it over.", c->task_id,
                         c->name, strna(holder));
                (void) claim_write(c, /* acquire= */ true);
                return;
        } else {
                c->state = mark == MARK_CLAIMED ? CLAIM_WAIT : CLAIM_THEIRS;
                c->foreign_done = mark == MARK_DONE;
                (void) free_and_strdup(&c->holder, holder);
                c->forget_usec = now_usec(CLOCK_MONOTONIC) + CLAIM_FOREIGN_KEEP_USEC;
                c->retry_usec = now_usec(CLOCK_MONOTONIC) + CLAIM_RETRY_USEC;
        }
        if (before == CLAIM_OURS && c->state != CLAIM_OURS) {
                log_error("Task %s: claim %s was taken by %s while this daemon held it.", c->task_id, c->name,
                          strna(holder));
                /* Taken for dead (frozen, cut off for two lease durations) with the task
                 * stored: the new holder reports it, as after a restart. */
                if (c->want >= MARK_ACCEPTED)
                        c->taken = true;
        }
        c->error = 0;
        claim_changed(c);
}

static void on_get(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Claim *c = userdata;

        c->call = NULL;
        if (error == -ENOENT) {
                if (c->want == MARK_DONE) {
                        /* A finished task's claim that is gone already: nothing left to do. */
                        claim_free(c);
                        return;
                }
                if (c->lookup) {
                        c->state = CLAIM_ABSENT;
                        c->error = 0;
                        c->forget_usec = now_usec(CLOCK_MONOTONIC) + CLAIM_RETRY_USEC;
                        claim_changed(c);
                        return;
                }
                /* Gone between our create and this read, or an adopted claim that
                 * vanished: (re)create it with the mark we want. */
                (void) claim_create(c);
                return;
        }
        if (error < 0) {
                claim_fail(c, error, "reading it", text);
                claim_changed(c);
                return;
        }
        claim_judge(c, call, body);
}

static int claim_get(Claim *c) {
        _cleanup_free_ char *path = lease_path(&c->set->scope, c->name);

        return claim_send(c, "GET", path, NULL, on_get, "reading it");
}

static void on_created(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Claim *c = userdata;

        c->call = NULL;
        if (error == -EEXIST) {
                (void) claim_get(c);
                return;
        }
        if (error < 0) {
                claim_fail(c, error, "creating it", text);
                claim_changed(c);
                return;
        }
        claim_take_lease(c, call);
        c->state = CLAIM_OURS;
        c->sent = lease_mark(c->lease);
        c->synced = c->sent == c->want;
        c->error = 0;
        if (c->abandon) {
                (void) claim_delete(c);
                return;
        }
        log_debug("Task %s: claimed as Lease %s/%s.", c->task_id, c->set->scope.namespace, c->name);
        claim_changed(c);
}

static int claim_create(Claim *c) {
        _cleanup_json_ JsonValue *lease = json_new_object();
        _cleanup_free_ char *path = lease_path(&c->set->scope, NULL);
        int r;

        if (!lease)
                return -ENOMEM;
        r = lease_set(c, lease, c->want, /* acquire= */ true);
        if (r < 0)
                return r;
        /* A fresh create never carries leaseTransitions or a resourceVersion. */
        (void) json_object_remove(json_get(lease, "spec"), "leaseTransitions");
        return claim_send(c, "POST", path, lease, on_created, "creating it");
}

static void on_written(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Claim *c = userdata;
        bool lost;

        c->call = NULL;
        if (error == -EEXIST || error == -ENOENT) {
                /* 409: somebody changed it since we read it; 404: it went away. Look again:
                 * still ours (a stale resourceVersion of our own) → write again; another
                 * holder → lost. */
                if (c->state == CLAIM_OURS && error == -ENOENT) {
                        log_warning("Task %s: claim %s vanished; creating it again.", c->task_id, c->name);
                        (void) claim_create(c);
                } else
                        (void) claim_get(c);
                return;
        }
        if (error < 0) {
                claim_fail(c, error, c->state == CLAIM_OURS ? "renewing it" : "taking it over", text);
                if (c->state != CLAIM_OURS)
                        claim_changed(c);
                return;
        }
        claim_take_lease(c, call);
        lost = c->takeover_lost;
        if (lost) {
                c->takeover_lost = false;
                c->state = CLAIM_OURS;
                log_warning("Task %s: the daemon of %s holding its claim is gone; claim taken over.", c->task_id,
                            strna(c->holder));
        } else if (c->state != CLAIM_OURS) {
                c->state = CLAIM_OURS;
                if (c->abandon && c->want == MARK_CLAIMED) {
                        (void) claim_delete(c);
                        return;
                }
                claim_changed(c);
        }
        c->sent = lease_mark(c->lease);
        c->synced = c->sent == c->want;
        c->error = 0;
        c->renew_usec = now_usec(CLOCK_MONOTONIC) + c->set->scope.duration_usec / 3;
        if (c->sent == MARK_DONE && c->delete_usec == 0)
                c->delete_usec = now_usec(CLOCK_REALTIME) + c->set->retention_usec;
        /* Last, with copies: the callback may finish the claim, which writes it again. */
        if (lost && c->set->lost_cb) {
                _cleanup_free_ char *report = NULL, *holder = NULL, *task_id = strdup(c->task_id);

                if (task_id &&
                    free_and_strdup(&report, json_get_string(json_get_path(c->lease, "metadata", "annotations", NULL),
                                                             CLAIM_REPORT_ANNOTATION)) >= 0 &&
                    free_and_strdup(&holder, c->holder) >= 0)
                        c->set->lost_cb(c->set, task_id, holder, report, c->set->userdata);
        }
}

/* PUT of the Lease we hold (or read, to take over), with its resourceVersion. */
static int claim_write(Claim *c, bool acquire) {
        _cleanup_free_ char *path = lease_path(&c->set->scope, c->name);
        int r;

        if (!c->lease)
                return claim_get(c);
        r = lease_set(c, c->lease, c->want, acquire);
        if (r < 0)
                return r;
        return claim_send(c, "PUT", path, c->lease, on_written, "writing it");
}

static void on_deleted(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Claim *c = userdata;

        c->call = NULL;
        if (error < 0 && error != -ENOENT && error != -EEXIST) {
                claim_fail(c, error, "deleting it", text);
                return;
        }
        /* 409: the uid is not ours any more: somebody else's Lease of that name now. */
        log_debug("Task %s: claim %s released.", c->task_id, c->name);
        claim_free(c);
}

static int claim_delete(Claim *c) {
        _cleanup_json_ JsonValue *opts = NULL;
        _cleanup_free_ char *path = lease_path(&c->set->scope, c->name);
        int r;

        r = lease_delete_options(c->lease, &opts);
        if (r < 0)
                return r;
        return claim_send(c, "DELETE", path, opts, on_deleted, "deleting it");
}

/* One pass over the claims: renew ours when due, write marks not yet written, delete
 * the done ones after their retention, forget other daemons' answers. */
static int on_tick(sd_event_source *es, uint64_t usec, void *userdata) {
        ClaimSet *s = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC), wall = now_usec(CLOCK_REALTIME);
        Claim *next;

        for (Claim *c = s->claims; c; c = next) {
                next = c->next;
                if (c->call || now < c->retry_usec)
                        continue;
                switch (c->state) {
                case CLAIM_OURS:
                        if (c->sent == MARK_DONE && c->synced) {
                                if (wall >= c->delete_usec)
                                        (void) claim_delete(c);
                        } else if (!c->synced || (c->want == MARK_ACCEPTED && now >= c->renew_usec))
                                (void) claim_write(c, /* acquire= */ false);
                        break;
                case CLAIM_THEIRS:
                case CLAIM_WAIT:
                case CLAIM_ABSENT:
                        if (now >= c->forget_usec && !c->taken)
                                claim_free(c);
                        break;
                case CLAIM_PENDING:
                        /* A failed first attempt: asked again by claim_check(). */
                        break;
                default:
                        break;
                }
        }
        if (!s->claims)
                return sd_event_source_set_enabled(es, SD_EVENT_OFF);
        return sd_event_source_set_time_relative(es, CLAIM_TICK_USEC);
}

/* ---- node loss ---- */

static void sweep_one(ClaimSet *s, JsonValue *lease) {
        const JsonValue *md = json_get(lease, "metadata"), *spec = json_get(lease, "spec");
        const char *task_id = json_get_string(json_get(md, "annotations"), CLAIM_TASK_ANNOTATION);
        const char *holder = json_get_string(spec, "holderIdentity");
        const char *renew = json_get_string(spec, "renewTime");
        _cleanup_free_ char *name = NULL;
        uint64_t t;
        Claim *c;

        if (!task_id || !holder || streq(holder, s->scope.holder) || lease_mark(lease) != MARK_ACCEPTED)
                return;
        /* Two lease durations without a renewal: its daemon is gone, not just slow. */
        if (!renew || kube_parse_timestamp(renew, strlen(renew), &t) < 0 ||
            t + 2 * s->scope.duration_usec > now_usec(CLOCK_REALTIME))
                return;
        if (claim_lease_name(task_id, &name) < 0 || !streq_ptr(json_get_string(md, "name"), name))
                return; /* not a claim this daemon would make */
        c = claim_find(s, task_id);
        if (c && (c->call || c->state == CLAIM_OURS))
                return;
        if (c)
                claim_free(c);
        if (claim_new(s, task_id, &c) < 0)
                return;
        c->lease = json_copy(lease);
        c->holder = strdup(holder);
        if (!c->lease || !c->holder) {
                claim_free(c);
                return;
        }
        c->takeover_lost = true;
        /* Accepted by us now (of several survivors, whoever wins the update): the lost
         * callback adopts the task's pod, which this daemon then renews the claim for, or
         * reports the task lost and finishes the claim. */
        c->want = MARK_ACCEPTED;
        if (claim_write(c, /* acquire= */ true) < 0)
                claim_free(c);
}

static void on_sweep_list(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        ClaimSet *s = userdata;
        const JsonValue *items = json_get(body, "items");

        s->sweep_call = NULL;
        if (error < 0) {
                log_warning_errno(error, "Listing the claims in %s failed: %s", s->scope.namespace,
                                  text ?: strerror(-error));
                return;
        }
        for (size_t i = 0; i < json_length(items); i++)
                sweep_one(s, json_array_at(items, i));
}

static int on_sweep(sd_event_source *es, uint64_t usec, void *userdata) {
        ClaimSet *s = userdata;
        _cleanup_free_ char *path = lease_path(&s->scope, NULL), *selector = NULL;

        (void) sd_event_source_set_time_relative(es, s->scope.duration_usec);
        if (s->sweep_call || !path)
                return 0;
        if (s->scope.target && (asprintf(&selector, CLAIM_TARGET_LABEL "=%s", s->scope.target) < 0 ||
                                kube_path_append_query(&path, "labelSelector", selector) < 0))
                return 0;
        (void) kube_request(s->scope.api, "GET", path, NULL, NULL, on_sweep_list, s, &s->sweep_call);
        return 0;
}

int claim_set_new(sd_event *e,
                  KubeClient *api,
                  const ClaimSettings *settings,
                  claim_changed_cb_t cb,
                  claim_lost_cb_t lost_cb,
                  void *userdata,
                  ClaimSet **ret) {
        _cleanup_(claim_set_freep) ClaimSet *s = NULL;
        int r;

        s = calloc(1, sizeof(ClaimSet));
        if (!s)
                return -ENOMEM;
        r = lease_scope_init(&s->scope, api, settings->namespace, settings->holder, settings->target,
                             settings->duration_usec);
        if (r < 0)
                return r;
        s->event = sd_event_ref(e);
        s->retention_usec = settings->retention_usec;
        s->cb = cb;
        s->lost_cb = lost_cb;
        s->userdata = userdata;
        r = sd_event_add_time_relative(e, &s->timer, CLOCK_MONOTONIC, CLAIM_TICK_USEC, 100 * USEC_PER_MSEC, on_tick, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->timer, "claims");
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        r = sd_event_add_time_relative(e, &s->sweep_timer, CLOCK_MONOTONIC, s->scope.duration_usec, USEC_PER_SEC,
                                       on_sweep, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->sweep_timer, "claims-sweep");
        (void) sd_event_source_set_enabled(s->sweep_timer, SD_EVENT_ON);
        *ret = TAKE_PTR(s);
        return 0;
}

int claim_check(ClaimSet *s, const char *task_id, const char *report, const char **ret_holder) {
        Claim *c = claim_find(s, task_id);
        int r;

        if (c && c->lookup && !c->call && (c->state == CLAIM_ABSENT || c->state == CLAIM_PENDING)) {
                /* Only looked up before, and nobody had it: claim it now. */
                claim_free(c);
                c = NULL;
        }
        if (c)
                c->lookup = false;
        if (!c) {
                r = claim_new(s, task_id, &c);
                if (r < 0)
                        return r;
                c->want = MARK_CLAIMED;
                if (report && !(c->report = strdup(report))) {
                        claim_free(c);
                        return -ENOMEM;
                }
                r = claim_create(c);
                if (r < 0) {
                        claim_free(c);
                        return r;
                }
                return CLAIM_PENDING;
        }
        if (ret_holder)
                *ret_holder = c->holder;
        if (c->call)
                return CLAIM_PENDING;
        if (c->state == CLAIM_OURS || c->state == CLAIM_THEIRS)
                return c->state;
        /* Waiting on another daemon, or the last attempt failed: look again, not too often. */
        if (now_usec(CLOCK_MONOTONIC) >= c->retry_usec) {
                if (c->state == CLAIM_PENDING)
                        r = c->lease ? claim_write(c, /* acquire= */ true) : claim_create(c);
                else
                        r = claim_get(c);
                if (r < 0)
                        return r;
        }
        if (c->state == CLAIM_WAIT)
                return CLAIM_WAIT;
        return c->error < 0 ? c->error : CLAIM_PENDING;
}

int claim_lookup(ClaimSet *s, const char *task_id, const char **ret_holder, bool *ret_done) {
        Claim *c = claim_find(s, task_id);
        int r;

        if (!c) {
                r = claim_new(s, task_id, &c);
                if (r < 0)
                        return r;
                c->lookup = true;
                r = claim_get(c);
                if (r < 0) {
                        claim_free(c);
                        return r;
                }
                return CLAIM_PENDING;
        }
        if (c->call)
                return CLAIM_PENDING;
        if (c->error < 0 && c->state == CLAIM_PENDING) {
                if (now_usec(CLOCK_MONOTONIC) >= c->retry_usec && (r = claim_get(c)) < 0)
                        return r;
                return c->error;
        }
        if (ret_holder)
                *ret_holder = c->holder;
        if (ret_done)
                *ret_done = c->foreign_done;
        return c->state;
}

static int claim_mark(ClaimSet *s, const char *task_id, Mark mark, bool adopt) {
        Claim *c = claim_find(s, task_id);
        int r;

        if (!c) {
                if (!adopt)
                        return -ENOENT;
                r = claim_new(s, task_id, &c);
                if (r < 0)
                        return r;
                /* Read it first: claim_judge() takes it as ours (our holder name). */
                c->state = CLAIM_OURS;
                c->want = mark;
                c->sent = MARK_CLAIMED;
                c->synced = false;
                c->adopting = true;
                return claim_get(c);
        }
        if (c->state != CLAIM_OURS)
                return -EPERM;
        if (c->want >= mark)
                return 0;
        c->want = mark;
        c->synced = false;
        c->retry_usec = 0;
        if (!c->call)
                (void) claim_write(c, /* acquire= */ false);
        return 0;
}

void claim_abandon_unaccepted(ClaimSet *s) {
        Claim *next;

        if (!s)
                return;
        for (Claim *c = s->claims; c; c = next) {
                next = c->next;
                if (c->lookup || c->adopting || c->takeover_lost || c->want != MARK_CLAIMED)
                        continue;
                if (c->state == CLAIM_OURS && !c->call) {
                        log_debug("Task %s: its message went back to the broker; releasing claim %s.", c->task_id,
                                  c->name);
                        (void) claim_delete(c);
                } else if (c->state == CLAIM_OURS || c->state == CLAIM_PENDING)
                        c->abandon = true;
        }
}

int claim_ready(ClaimSet *s, const char *task_id) {
        Claim *c = s ? claim_find(s, task_id) : NULL;

        if (!c)
                return -ENOENT;
        if (c->taken)
                return -EPERM;
        if (c->adopting)
                return 0;
        return c->state == CLAIM_OURS ? 1 : -EPERM;
}

bool claim_taken(ClaimSet *s, const char *task_id) {
        Claim *c = s ? claim_find(s, task_id) : NULL;

        return c && c->taken;
}

int claim_accept(ClaimSet *s, const char *task_id, const char *report) {
        Claim *c = claim_find(s, task_id);

        /* Written with the mark: the acceptance carries what the stored task adds. */
        if (c && c->state == CLAIM_OURS && report && free_and_strdup(&c->report, report) < 0)
                return -ENOMEM;
        return claim_mark(s, task_id, MARK_ACCEPTED, false);
}

int claim_adopt(ClaimSet *s, const char *task_id) {
        return claim_mark(s, task_id, MARK_ACCEPTED, true);
}

int claim_finish(ClaimSet *s, const char *task_id) {
        return claim_mark(s, task_id, MARK_DONE, true);
}
