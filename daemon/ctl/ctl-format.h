/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* How lagoon-taskctl presents the control API's answers: the task table of `ls`, the
 * key: value lines of `show`, and the exit status of a task that ended. Pure: reads
 * json.h values, writes to the FILE given, and copes with any JSON (wrong member
 * types, control characters), since the answers come from outside. */

#include <stdbool.h>
#include <stdio.h>

#include "json.h"

/* Exit statuses of `run --wait` and `wait` for tasks that did not simply exit. */
#define CTL_EXIT_TASK_TIMEOUT 124
#define CTL_EXIT_TASK_NOT_RUN 125
#define CTL_EXIT_TASK_CANCELLED 130
/* Also the status for "lagoon-taskd could not be reached or refused". */
#define CTL_EXIT_API_ERROR 1

/* COMMAND column width of the table when the width of the output is unknown. */
#define CTL_COMMAND_WIDTH_DEFAULT 60

/* Writes s with control characters replaced by `replacement`, cut after max_chars
 * code points (then "..." is added; SIZE_MAX: never cut). */
void ctl_print_clean(FILE *f, const char *s, size_t max_chars, char replacement);

/* ID, NAME, SERVICE and PROJECT/ENVIRONMENT are cut to this width unless columns is SIZE_MAX. */
#define CTL_COLUMN_WIDTH_CAP 24

/* The `ls` table of a {"tasks":[…]} answer: ID STATUS EXIT SERVICE AGE DURATION COMMAND;
 * wide adds NAME, PROJECT/ENVIRONMENT and CREATED. now (CLOCK_REALTIME) is what AGE and
 * a running task's DURATION count to. columns: the line width to fit COMMAND into;
 * 0 = unknown (COMMAND cut at CTL_COMMAND_WIDTH_DEFAULT), SIZE_MAX = nothing cut.
 * -EBADMSG without a "tasks" array, -ENOMEM. */
int ctl_print_task_table(FILE *f, const JsonValue *answer, size_t columns, bool wide, uint64_t now);

/* The STATUS cell: "pending #2", "stopping" (SIGTERM sent), the reason of a failure
 * ("timeout", "launch-error", "killed (SIGKILL)" for exit code 137), else the status. */
void ctl_format_status(const JsonValue *task, char *buf, size_t size);

/* `show`: every member of the task object as "key: value", in the API's order, so
 * members added later show up too; null as "-", timeout (seconds) also as a duration. */
void ctl_print_task_fields(FILE *f, const JsonValue *task);

/* The exit status of a task that ended: its exit code, or one of CTL_EXIT_TASK_*
 * (CTL_EXIT_API_ERROR for a status that is not final). For anything but a plain exit
 * code *ret_note gets a line for stderr ("task t1 timed out"), else NULL. -ENOMEM. */
int ctl_task_exit_status(const JsonValue *task, char **ret_note);
