/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* GET /metrics: the daemon's state in the Prometheus text exposition format 0.0.4
 * (Content-Type METRICS_CONTENT_TYPE). Names start with lagoon_taskd_, counters end in
 * _total, times are in seconds; each family has # HELP and # TYPE. Read only: it
 * reads the manager's counters, the Lagoon integration's state (outbox, broker, API)
 * and journald's. The families are listed in README ("Metrics"). */

#include <stddef.h>

#include "lagoon.h"
#include "manager.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* l may be NULL (no [Lagoon] configured: its families are left out). *ret is
 * NUL-terminated, *ret_size without the NUL. -ENOMEM. */
int metrics_render(Manager *m, Lagoon *l, char **ret, size_t *ret_size);
