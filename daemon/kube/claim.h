/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Cluster claims: when several daemons share one deploy target, each task is run by
 * exactly one of them. The arbiter is the Kubernetes API server: a task's claim is a
 * coordination.k8s.io/v1 Lease named after the task in ClaimNamespace=, created if
 * absent (201: ours; 409 AlreadyExists: look at its holder), holder = NodeName=.
 *
 * A claim goes through three states, kept in the Lease's lagoon.sh/taskd-claim
 * annotation, so a daemon reading another's claim knows what it may do:
 *   claimed   created by a daemon that has the message in hand but has not stored the
 *             task yet. Another daemon that gets the message (a redelivery) leaves it
 *             unacknowledged and asks again later; once the Lease expired without being
 *             accepted (its holder died before storing the task) it takes the claim over
 *             by updating the Lease with the resourceVersion it read (409 Conflict: a
 *             third daemon was quicker).
 *   accepted  the holder stored the task (it runs it, or reports it failed): others
 *             acknowledge the message and drop it. Renewed every third of
 *             ClaimDurationSec= while the task lives.
 *   done      the task ended; the Lease stays for ClaimRetentionSec=, so a late
 *             redelivery is still dropped, and is then deleted by its holder (with a
 *             uid precondition).
 * Node loss: every ClaimDurationSec= each daemon lists the target's claims; an accepted
 * claim of another holder that was not renewed for two lease durations belongs to a
 * daemon that is gone. It is taken over (an update guarded by its resourceVersion: of
 * several survivors, one wins) and stays accepted, now held by the survivor, whose lost
 * callback gets what the claim carries (lagoon.sh/taskd-report: the message's names and
 * ids, the remoteId, the name its pod has if it runs as one, never its secrets or
 * command): it adopts the pod (the claim is then renewed and finished like any of its
 * own) or reports the task lost and finishes the claim (claim_finish()). A daemon that
 * comes back and finds its claim taken over must not report that task again
 * (claim_taken()).
 *
 * Everything runs on the event loop through kube.c; no call blocks. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "kube.h"
#include "macro.h"

typedef struct ClaimSet ClaimSet;

typedef enum ClaimState {
        CLAIM_PENDING, /* being created or looked up: ask again after the set's callback */
        CLAIM_OURS,    /* this daemon holds it: store the task, then claim_accept() */
        CLAIM_THEIRS,  /* another daemon accepted it: drop the message */
        CLAIM_WAIT,    /* another daemon claimed it but has not stored it yet: ask again later */
        CLAIM_ABSENT,  /* claim_lookup(): nobody claimed it */
        _CLAIM_STATE_MAX,
} ClaimState;

const char *claim_state_to_string(ClaimState s);

typedef struct ClaimSettings {
        const char *namespace;  /* where the Leases live */
        const char *holder;     /* this daemon: the node name */
        const char *target;     /* the deploy target, as a label on every Lease */
        uint64_t duration_usec; /* leaseDurationSeconds */
        uint64_t retention_usec;
} ClaimSettings;

/* Called when a claim that was asked for changes state (the answer came), so a caller
 * holding a message for it can look again. */
typedef void (*claim_changed_cb_t)(ClaimSet *s, const char *task_id, void *userdata);
/* A dead node's task was taken over: its claim is this daemon's (accepted) now; adopt
 * the task or report it lost, then claim_finish() once it ended. report is the JSON text
 * its claim carried (NULL when it had none). */
typedef void (
        *claim_lost_cb_t)(ClaimSet *s, const char *task_id, const char *holder, const char *report, void *userdata);

int claim_set_new(sd_event *e,
                  KubeClient *api /* borrowed */,
                  const ClaimSettings *settings,
                  claim_changed_cb_t cb,
                  claim_lost_cb_t lost_cb,
                  void *userdata,
                  ClaimSet **ret);
ClaimSet *claim_set_free(ClaimSet *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(ClaimSet *, claim_set_free);

/* What is known of the task's claim; starts creating it (or reading it, or taking an
 * expired one over) when nothing is known or the last attempt failed. The holder of a
 * CLAIM_THEIRS or CLAIM_WAIT claim is in *ret_holder (borrowed, may be NULL).
 * Returns a ClaimState, or < 0 when the API server did not answer usefully (the error
 * of the last attempt, logged there; the next call tries again, at most once a second). */
int claim_check(ClaimSet *s, const char *task_id, const char *report, const char **ret_holder);

/* Who holds the task's claim, without claiming it (a cancel for a task this daemon
 * does not know): CLAIM_PENDING while the answer is awaited (the set's callback comes),
 * CLAIM_ABSENT, CLAIM_OURS, or CLAIM_THEIRS/CLAIM_WAIT with the holder in *ret_holder and
 * *ret_done set when the task ended there; < 0 as claim_check(). */
int claim_lookup(ClaimSet *s, const char *task_id, const char **ret_holder, bool *ret_done);

/* The task is stored: mark the claim accepted (retried until the API server takes
 * it), and renew it from now on. report (may be NULL: unchanged) replaces the claim's
 * lagoon.sh/taskd-report with what the stored task knows (its remoteId, its pod's name). */
int claim_accept(ClaimSet *s, const char *task_id, const char *report);
/* After a restart, for every stored task that has not ended: the claim is ours and
 * accepted already; read it and renew it. */
int claim_adopt(ClaimSet *s, const char *task_id);
/* The task ended: mark the claim done and delete it after the retention time. */
int claim_finish(ClaimSet *s, const char *task_id);
/* The messages this daemon held are gone (its broker connection dropped): delete the
 * claims it made for them and never accepted, so the daemon the broker hands them to
 * next need not wait for them to expire. */
void claim_abandon_unaccepted(ClaimSet *s);

/* May this daemon launch the stored task now? 1 yes (the claim is ours), 0 not yet (it
 * is being read after a restart: the set's callback comes), -EPERM never (another daemon
 * took it over, claim_taken()), -ENOENT no claim is known for it. */
int claim_ready(ClaimSet *s, const char *task_id);

/* After claim_adopt(): another daemon took the claim over (this one was taken for
 * dead) and reported the task; this daemon must not report it again. */
bool claim_taken(ClaimSet *s, const char *task_id);

/* The Lease name for a task id: the id itself when it is a lowercase DNS label,
 * otherwise a lowercased form of it with a hash of the exact id. */
int claim_lease_name(const char *task_id, char **ret);
