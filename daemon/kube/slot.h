/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Cluster-wide MaxRunningPerEnvironment=: a counting semaphore of Kubernetes Leases, so
 * that N daemons sharing a deploy target run at most `limit` tasks of one environment
 * between them. Slot k of an environment is the Lease
 * lagoon-taskd-slot-<hash of target and environment>-<k> in ClaimNamespace=, k < limit;
 * a task may launch once it holds one. A slot is taken by creating its Lease (201: ours;
 * 409 AlreadyExists: read it: ours already after a restart when it names the task, taken
 * over with the resourceVersion read when its holder stopped renewing it for two lease
 * durations, else the next slot). With every slot held, the task waits and the set tries
 * again every SLOT_RETRY_USEC. Held slots are renewed every third of the lease duration
 * and deleted (uid precondition) when the task ends.
 *
 * Everything runs on the event loop through kube.c; no call blocks. */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "claim.h"
#include "kube.h"
#include "macro.h"

typedef struct SlotSet SlotSet;

/* A slot was taken (or asking failed): the task may be dispatched again. */
typedef void (*slot_changed_cb_t)(SlotSet *s, const char *task_id, void *userdata);

/* settings: namespace, holder, target and duration_usec as for the claims. */
int slot_set_new(sd_event *e,
                 KubeClient *api /* borrowed */,
                 const ClaimSettings *settings,
                 slot_changed_cb_t cb,
                 void *userdata,
                 SlotSet **ret);
SlotSet *slot_set_free(SlotSet *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(SlotSet *, slot_set_free);

/* 1: the task holds a slot of environment (also one it held before a restart);
 * 0: not yet (asking, or every slot is held: the callback comes when that changes);
 * < 0: -ENOMEM, -EINVAL. */
int slot_acquire(SlotSet *s, const char *task_id, const char *environment, unsigned limit);
/* The task ended or will not launch: its slot (if any, or once the create in flight
 * answered) is deleted. */
void slot_release(SlotSet *s, const char *task_id);
/* What a waiting task waits for, for the wait reason: true while every slot is held. */
bool slot_all_held(SlotSet *s, const char *task_id);

/* The Lease name of slot k (tests). */
int slot_lease_name(const char *target, const char *environment, unsigned k, char **ret);
