/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a loaded configuration would make fail on every task although it parses: the
 * runtime or conmon not found, a service's Bundle= without a readable config.json or
 * its rootfs, DefaultService= naming no [Service] section (local mode), Init= missing.
 * Read-only: looks at the files, runs nothing. */

#include "config.h"

/* Logs each problem at error level (a missing Init= at warning level: tasks still run)
 * and returns how many errors it found (0: tasks can be launched). */
unsigned preflight_check(const Config *c);

/* The nginx -T-like summary --check-config prints on success: one line per service,
 * the runtime, conmon and the init in use, the limits. Written to f. */
void preflight_summary(const Config *c, FILE *f);
