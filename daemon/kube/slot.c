/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Cluster-wide per-environment limits as a semaphore of Leases (see slot.h). Each
 * task's slot has at most one request in flight; one timer retries and renews. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "list.h"
#include "log.h"
#include "lease.h"
#include "sha256.h"
#include "slot.h"

#define SLOT_TASK_ANNOTATION "lagoon.sh/task-id"
#define SLOT_ENVIRONMENT_ANNOTATION "lagoon.sh/taskd-environment"
/* Not the claims' target label: their sweep must not take slots for claims. */
#define SLOT_TARGET_LABEL "lagoon.sh/taskd-slot-target"
#define SLOT_RETRY_USEC (2 * USEC_PER_SEC)
#define SLOT_TICK_USEC USEC_PER_SEC

typedef enum SlotState {
        SLOT_TRYING,  /* a request for slot k is in flight */
        SLOT_WAITING, /* every slot was held (or the API server failed): try again later */
        SLOT_HELD,
} SlotState;

typedef struct Slot Slot;

struct Slot {
        SlotSet *set;
        char *task_id, *environment, *name;
        unsigned limit, k;
        SlotState state;
        bool all_held; /* the last round found every slot held */
        bool release;  /* released while a request was in flight */
        JsonValue *lease;
        uint64_t next_usec; /* CLOCK_MONOTONIC: next round (waiting) or renewal (held) */
        KubeCall *call;
        Slot *prev, *next;
};

struct SlotSet {
        sd_event *event;
        LeaseScope scope;
        slot_changed_cb_t cb;
        void *userdata;
        Slot *slots;
        sd_event_source *timer;
};

static Slot *slot_free(Slot *sl) {
        if (!sl)
                return NULL;
        if (sl->set)
                LIST_REMOVE(sl->set->slots, sl);
        kube_call_cancel(sl->call);
        json_free(sl->lease);
        free(sl->task_id);
        free(sl->environment);
        free(sl->name);
        return mfree(sl);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Slot *, slot_free);

SlotSet *slot_set_free(SlotSet *s) {
        if (!s)
                return NULL;
        while (s->slots)
                slot_free(s->slots);
        sd_event_source_disable_unref(s->timer);
        sd_event_unref(s->event);
        lease_scope_done(&s->scope);
        return mfree(s);
}

int slot_lease_name(const char *target, const char *environment, unsigned k, char **ret) {
        uint8_t md[SHA256_DIGEST_SIZE];
        Sha256 ctx;

        if (isempty(environment))
                return -EINVAL;
        /* Target and environment names may be long and of any case: a hash names them. */
        sha256_init(&ctx);
        sha256_update(&ctx, strempty(target), strlen(strempty(target)));
        sha256_update(&ctx, "/", 1);
        sha256_update(&ctx, environment, strlen(environment));
        sha256_final(&ctx, md);
        return asprintf(ret, "lagoon-taskd-slot-%02x%02x%02x%02x%02x%02x-%u", md[0], md[1], md[2], md[3], md[4], md[5],
                        k) < 0
                       ? -ENOMEM
                       : 0;
}

static Slot *slot_find(SlotSet *s, const char *task_id) {
        for (Slot *sl = s->slots; sl; sl = sl->next)
                if (streq(sl->task_id, task_id))
                        return sl;
        return NULL;
}

/* Holder, times, task and labels on a Lease (new, or read for a take-over or renewal). */
static int lease_set(Slot *sl, JsonValue *lease, bool acquire) {
        JsonValue *md, *annotations;
        int r;

        r = lease_set_common(lease, &sl->set->scope, sl->name, acquire, NULL);
        if (r < 0)
                return r;
        md = (JsonValue *) json_get(lease, "metadata");
        if ((r = json_object_ensure_object(md, "annotations", &annotations)) < 0 ||
            (r = json_object_set_string(annotations, SLOT_TASK_ANNOTATION, sl->task_id)) < 0 ||
            (r = json_object_set_string(annotations, SLOT_ENVIRONMENT_ANNOTATION, sl->environment)) < 0 ||
            (sl->set->scope.target && (r = json_object_set_string((JsonValue *) json_get(md, "labels"),
                                                                  SLOT_TARGET_LABEL, sl->set->scope.target)) < 0))
                return r;
        return 0;
}

static int slot_send(Slot *sl, const char *method, const char *name, const JsonValue *body, kube_done_cb_t cb) {
        _cleanup_free_ char *path = lease_path(&sl->set->scope, name), *text = NULL;
        int r;

        if (!path)
                return -ENOMEM;
        if (body && (r = json_format(body, false, &text, NULL)) < 0)
                return r;
        return kube_request(sl->set->scope.api, method, path, NULL, text, cb, sl, &sl->call);
}

static void slot_wait(Slot *sl, bool all_held) {
        sl->state = SLOT_WAITING;
        sl->all_held = all_held;
        sl->next_usec = now_usec(CLOCK_MONOTONIC) + SLOT_RETRY_USEC;
}

static void slot_fail(Slot *sl, int error, const char *what, const char *text) {
        log_warning_errno(error, "Task %s: slot %s/%s: %s failed: %s", sl->task_id, sl->set->scope.namespace,
                          strna(sl->name), what, text ?: strerror(-error));
        slot_wait(sl, false);
}

static int slot_delete(Slot *sl);
static void slot_try(Slot *sl);

static void slot_held(Slot *sl, KubeCall *call) {
        json_free(sl->lease);
        sl->lease = kube_call_take_body(call);
        sl->state = SLOT_HELD;
        sl->all_held = false;
        sl->next_usec = now_usec(CLOCK_MONOTONIC) + sl->set->scope.duration_usec / 3;
        if (sl->release) {
                (void) slot_delete(sl);
                return;
        }
        log_debug("Task %s: holds slot %s of environment %s.", sl->task_id, sl->name, sl->environment);
        if (sl->set->cb)
                sl->set->cb(sl->set, sl->task_id, sl->set->userdata);
}

/* The request ended and the slot was released meanwhile without being ours. */
static bool slot_released(Slot *sl) {
        if (!sl->release)
                return false;
        slot_free(sl);
        return true;
}

static void on_taken(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Slot *sl = userdata;

        sl->call = NULL;
        if (error == -EEXIST || error == -ENOENT) {
                /* 409: another daemon took it first; 404: deleted meanwhile, free again. */
                if (slot_released(sl))
                        return;
                if (error == -EEXIST)
                        sl->k++;
                slot_try(sl);
                return;
        }
        if (error < 0) {
                if (!slot_released(sl))
                        slot_fail(sl, error, "taking it over", text);
                return;
        }
        log_info("Task %s: slot %s of environment %s was held by a daemon that is gone; taken over.", sl->task_id,
                 sl->name, sl->environment);
        slot_held(sl, call);
}

static void on_read(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Slot *sl = userdata;
        const char *holder = json_get_string(json_get(body, "spec"), "holderIdentity");
        const char *task = json_get_string(json_get_path(body, "metadata", "annotations", NULL), SLOT_TASK_ANNOTATION);
        JsonValue *lease;
        int r;

        sl->call = NULL;
        if (slot_released(sl))
                return;
        if (error == -ENOENT) {
                slot_try(sl); /* freed between our create and this read */
                return;
        }
        if (error < 0) {
                slot_fail(sl, error, "reading it", text);
                return;
        }
        if (streq_ptr(holder, sl->set->scope.holder) && streq_ptr(task, sl->task_id)) {
                slot_held(sl, call); /* ours from before a restart */
                return;
        }
        if (!lease_expired(&sl->set->scope, body, 2)) {
                sl->k++;
                slot_try(sl);
                return;
        }
        /* Guarded by the resourceVersion read: of several daemons, one wins. */
        lease = kube_call_take_body(call);
        r = lease_set(sl, lease, /* acquire= */ true);
        if (r >= 0)
                r = slot_send(sl, "PUT", sl->name, lease, on_taken);
        json_free(lease);
        if (r < 0)
                slot_fail(sl, r, "taking it over", NULL);
}

static void on_created(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Slot *sl = userdata;
        int r;

        sl->call = NULL;
        if (error == -EEXIST) {
                if (slot_released(sl))
                        return;
                r = slot_send(sl, "GET", sl->name, NULL, on_read);
                if (r < 0)
                        slot_fail(sl, r, "reading it", NULL);
                return;
        }
        if (error < 0) {
                if (!slot_released(sl))
                        slot_fail(sl, error, "creating it", text);
                return;
        }
        slot_held(sl, call);
}

/* Slot k, or wait when k is past the limit: a round ends there. */
static void slot_try(Slot *sl) {
        _cleanup_json_ JsonValue *lease = NULL;
        int r;

        if (sl->k >= sl->limit) {
                if (!sl->all_held)
                        log_debug("Task %s: all %u slots of environment %s are held; waiting.", sl->task_id, sl->limit,
                                  sl->environment);
                slot_wait(sl, true);
                return;
        }
        sl->state = SLOT_TRYING;
        sl->name = mfree(sl->name);
        r = slot_lease_name(sl->set->scope.target, sl->environment, sl->k, &sl->name);
        if (r >= 0)
                r = (lease = json_new_object()) ? lease_set(sl, lease, /* acquire= */ true) : -ENOMEM;
        if (r >= 0)
                r = slot_send(sl, "POST", NULL, lease, on_created);
        if (r < 0)
                slot_fail(sl, r, "creating it", NULL);
}

static void on_renewed(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Slot *sl = userdata;

        sl->call = NULL;
        if (error == -EEXIST || error == -ENOENT) {
                /* Taken over (this daemon was taken for gone) or deleted: the task runs on,
                 * uncounted; there is nothing better to do than say so. */
                log_error("Task %s: slot %s of environment %s was %s while the task runs.", sl->task_id, sl->name,
                          sl->environment, error == -EEXIST ? "taken over by another daemon" : "deleted");
                slot_free(sl);
                return;
        }
        if (error < 0) {
                log_warning("Task %s: renewing slot %s failed: %s", sl->task_id, sl->name, strna(text));
                sl->next_usec = now_usec(CLOCK_MONOTONIC) + SLOT_RETRY_USEC;
                return;
        }
        json_free(sl->lease);
        sl->lease = kube_call_take_body(call);
        sl->next_usec = now_usec(CLOCK_MONOTONIC) + sl->set->scope.duration_usec / 3;
        if (sl->release)
                (void) slot_delete(sl);
}

static void on_deleted(KubeCall *call, int error, long status, JsonValue *body, const char *text, void *userdata) {
        Slot *sl = userdata;

        sl->call = NULL;
        /* 404: gone already; 409: the uid is not ours, somebody else's slot now. */
        if (error < 0 && error != -ENOENT && error != -EEXIST) {
                log_warning("Task %s: deleting slot %s failed: %s", sl->task_id, sl->name, strna(text));
                sl->next_usec = now_usec(CLOCK_MONOTONIC) + SLOT_RETRY_USEC;
                return;
        }
        log_debug("Task %s: slot %s released.", sl->task_id, sl->name);
        slot_free(sl);
}

static int slot_delete(Slot *sl) {
        _cleanup_json_ JsonValue *opts = NULL;
        int r;

        r = lease_delete_options(sl->lease, &opts);
        if (r < 0)
                return r;
        r = slot_send(sl, "DELETE", sl->name, opts, on_deleted);
        if (r < 0)
                sl->next_usec = now_usec(CLOCK_MONOTONIC) + SLOT_RETRY_USEC;
        return r;
}

static int on_tick(sd_event_source *es, uint64_t usec, void *userdata) {
        SlotSet *s = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        Slot *next;
        int r;

        for (Slot *sl = s->slots; sl; sl = next) {
                next = sl->next;
                if (sl->call || now < sl->next_usec)
                        continue;
                if (sl->state == SLOT_WAITING) {
                        sl->k = 0; /* a new round: any slot may have been freed */
                        slot_try(sl);
                } else if (sl->state == SLOT_HELD && sl->release)
                        (void) slot_delete(sl);
                else if (sl->state == SLOT_HELD) {
                        r = lease_set(sl, sl->lease, /* acquire= */ false);
                        if (r >= 0)
                                r = slot_send(sl, "PUT", sl->name, sl->lease, on_renewed);
                        if (r < 0)
                                sl->next_usec = now + SLOT_RETRY_USEC;
                }
        }
        if (!s->slots)
                return sd_event_source_set_enabled(es, SD_EVENT_OFF);
        return sd_event_source_set_time_relative(es, SLOT_TICK_USEC);
}

int slot_acquire(SlotSet *s, const char *task_id, const char *environment, unsigned limit) {
        _cleanup_(slot_freep) Slot *sl = NULL;
        Slot *found;

        if (isempty(task_id) || isempty(environment) || limit == 0)
                return -EINVAL;
        found = slot_find(s, task_id);
        if (found) {
                found->release = false; /* asked for again (a launch that was put back) */
                return found->state == SLOT_HELD;
        }
        sl = calloc(1, sizeof(Slot));
        if (!sl)
                return -ENOMEM;
        sl->task_id = strdup(task_id);
        sl->environment = strdup(environment);
        if (!sl->task_id || !sl->environment)
                return -ENOMEM;
        sl->limit = limit;
        sl->set = s;
        LIST_PREPEND(s->slots, sl);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ON);
        slot_try(TAKE_PTR(sl));
        return 0;
}

void slot_release(SlotSet *s, const char *task_id) {
        Slot *sl = s ? slot_find(s, task_id) : NULL;

        if (!sl)
                return;
        sl->release = true;
        if (sl->call)
                return; /* decided when it answers */
        if (sl->state == SLOT_HELD)
                (void) slot_delete(sl);
        else
                slot_free(sl);
}

bool slot_all_held(SlotSet *s, const char *task_id) {
        Slot *sl = s ? slot_find(s, task_id) : NULL;

        return sl && sl->state != SLOT_HELD && sl->all_held;
}

int slot_set_new(sd_event *e,
                 KubeClient *api,
                 const ClaimSettings *settings,
                 slot_changed_cb_t cb,
                 void *userdata,
                 SlotSet **ret) {
        _cleanup_(slot_set_freep) SlotSet *s = NULL;
        int r;

        s = calloc(1, sizeof(SlotSet));
        if (!s)
                return -ENOMEM;
        r = lease_scope_init(&s->scope, api, settings->namespace, settings->holder, settings->target,
                             settings->duration_usec);
        if (r < 0)
                return r;
        s->event = sd_event_ref(e);
        s->cb = cb;
        s->userdata = userdata;
        r = sd_event_add_time_relative(e, &s->timer, CLOCK_MONOTONIC, SLOT_TICK_USEC, 100 * USEC_PER_MSEC, on_tick, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(s->timer, "slots");
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        *ret = TAKE_PTR(s);
        return 0;
}
