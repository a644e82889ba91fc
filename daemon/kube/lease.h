/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the claims (claim.c) and the per-environment slots (slot.c) do alike with
 * coordination.k8s.io/v1 Leases: where they live and who this daemon is, the Lease's
 * path, its holder and times, its expiry, and its deletion guarded by its uid. */

#include <stdbool.h>
#include <stdint.h>

#include "json.h"
#include "kube.h"

typedef struct LeaseScope {
        KubeClient *api; /* borrowed */
        char *namespace; /* where the Leases live */
        char *holder;    /* this daemon: the node name */
        char *target;    /* the deploy target, may be NULL */
        uint64_t duration_usec;
} LeaseScope;

/* -EINVAL without an API client, namespace or holder, or for a duration under 1 s. */
int lease_scope_init(LeaseScope *s,
                     KubeClient *api,
                     const char *namespace,
                     const char *holder,
                     const char *target,
                     uint64_t duration_usec);
void lease_scope_done(LeaseScope *s);

/* The Lease's path, or the collection's when name is NULL; NULL on OOM. */
char *lease_path(const LeaseScope *s, const char *name);

/* apiVersion, kind, metadata.name and the managed-by label; spec.renewTime and
 * leaseDurationSeconds now, and with acquire spec.holderIdentity and acquireTime too.
 * *ret_spec (may be NULL) is the Lease's spec. */
int lease_set_common(JsonValue *lease, const LeaseScope *s, const char *name, bool acquire, JsonValue **ret_spec);

/* Not renewed for factor lease durations (its own leaseDurationSeconds, else the
 * scope's): renewTime, else acquireTime; a Lease without a readable one is expired. */
bool lease_expired(const LeaseScope *s, const JsonValue *lease, unsigned factor);

/* DeleteOptions with the Lease's metadata.uid as precondition, so a Lease of the same
 * name made by somebody else meanwhile is not deleted (409). */
int lease_delete_options(const JsonValue *lease, JsonValue **ret);
