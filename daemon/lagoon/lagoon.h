/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Lagoon integration: takes tasks from Lagoon's message bus (queues
 * lagoon-tasks:<target>:jobs and :misc) into the manager, and reports every task that
 * came from Lagoon back to it — status messages and logs to the bus, updateTask to the
 * API — through the durable outbox (<state>/outbox), so nothing is lost across
 * restarts or outages of the broker or the API.
 *
 * A message is acknowledged only once its task is stored (or its failure is in the
 * outbox). Each status is queued exactly once per task, in order (pending, running,
 * then the final one), and the task record remembers the last one queued; a restart
 * queues whatever a crash left owed. */

#include <systemd/sd-event.h>

#include "macro.h"
#include "manager.h"
#include "outbox.h"

typedef struct Lagoon Lagoon;

/* *ret = NULL (and 0) when [Lagoon] configures neither BrokerURL= nor APIURL=. */
int lagoon_new(sd_event *e, Manager *m, Lagoon **ret);
/* After manager_start(): queues what is owed, connects to the broker, starts sending. */
int lagoon_start(Lagoon *l);
Lagoon *lagoon_free(Lagoon *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(Lagoon *, lagoon_free);

/* For the STATUS= line and the API: entries waiting in the outbox, broker state. */
size_t lagoon_n_outbox(Lagoon *l);
bool lagoon_bus_connected(Lagoon *l);

/* For GET /metrics. */
typedef struct LagoonStats {
        bool bus_configured, bus_connected;
        bool api_configured, api_ok; /* api_ok: the last attempt got an answer (or none yet) */
        uint64_t bus_disconnects;    /* connections to the broker lost since the start */
        size_t outbox[_OUTBOX_SINK_MAX];
        uint64_t outbox_oldest_usec[_OUTBOX_SINK_MAX]; /* CLOCK_REALTIME, 0 when empty */
} LagoonStats;
void lagoon_get_stats(Lagoon *l, LagoonStats *ret);
