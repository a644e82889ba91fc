/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The messages lagoon-taskd sends back to Lagoon, exactly in Lagoon's shapes (DESIGN.md
 * "Lagoon wire formats", fixtures/lagoon/amqp-out-controller-*.json, and the machinery
 * schema: LagoonMessage, LagoonLog, LagoonLogMeta with omitempty members). Pure: no I/O
 * except lagoon_report_read_log(), no logging above debug. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "task.h"

/* What every report about one task needs. */
typedef struct LagoonJob {
        const JsonValue *info; /* LagoonMessage.info as persisted with the task */
        const char *namespace;
        const char *job_name;      /* jobName: the task's name (taskName, else name, else id) */
        const char *remote_id;     /* remoteId: the daemon's UUID for the task */
        const char *cluster;       /* clusterName: the deploy target name */
        TaskStatus status;         /* PENDING, RUNNING, COMPLETE, FAILED or CANCELLED */
        uint64_t start_usec;       /* 0 = omit startTime */
        uint64_t end_usec;         /* 0 = omit endTime */
        const char *advanced_data; /* taskData, verbatim; NULL = omit (a projectclone's final status
                                      then carries lagoon_clone_advanced_data()) */
        /* remote-controller's answer to a cancel of a task it does not have
         * (lagoontask_helpers.go updateLagoonTask): the task's names, no key, ids,
         * command, remoteId or clusterName, so Lagoon keeps the remoteId it has. */
        bool not_found;
        /* A PENDING task waiting for room under MaxRunning=/MaxRunningPerEnvironment=:
         * Lagoon's "queued" (TaskStatusType QUEUED, remote-controller's task QoS). */
        bool queued;
} LagoonJob;

/* jobStatus text: "pending", "running", "complete", "failed", "cancelled"; NULL for
 * statuses Lagoon has no name for (TASK_NEW). */
const char *lagoon_job_status(TaskStatus s);

/* "2006-01-02 15:04:05" in UTC. */
int lagoon_format_time(uint64_t usec, char **ret);

/* Status for exchange "lagoon-tasks", routing key "controller":
 * {"type":"task","namespace":…,"meta":{"task":{…},"environment","project",
 *  "environmentId","projectId","jobName","jobStatus","remoteId","clusterName",
 *  "advancedData"?,"startTime"?,"endTime"?}} — members omitted when unknown, like
 * Go's omitempty; ids as JSON numbers, task.id as a string. */
int lagoon_report_status(const LagoonJob *j, char **ret, size_t *ret_size);

/* Status event for exchange "lagoon-logs": {"severity":"info","project":…,
 * "event":"task:job-kubernetes:<status>","meta":{task, projectName, environment,
 * environmentId, projectId, jobName, jobStatus, remoteId, clusterName},
 * "message":"*[<project>]* Task `<task id>` *<task name>* <status>"}. */
int lagoon_report_event(const LagoonJob *j, char **ret, size_t *ret_size);

/* Log message for exchange "lagoon-logs": {"severity":"info","project":…,
 * "event":"task-logs:job-kubernetes:<jobName>","meta":{task, environment, jobName,
 * jobStatus, remoteId, clusterName},"message": header + log}. The header is the
 * remote-controller's banner: a line of 80 '=', "Logs on task <jobName>, run by
 * lagoon-taskd on cluster <cluster>", a line of 80 '=', then the log. log may contain
 * invalid UTF-8: invalid bytes become U+FFFD so the JSON stays valid. */
int lagoon_report_logs(const LagoonJob *j, const char *log, size_t log_size, char **ret, size_t *ret_size);

/* What remote-controller appends below a task's output in its final log, for a task
 * that did not just run to its exit code: a cancel ("Task cancelled") or a failure with
 * its reason ("Task failed: timeout", "…: image-pull: …", "…: pod-deleted: …"), between
 * two rules of 40 '='. Appended to log (a newline first when it does not end in one);
 * nothing for other statuses and for "exit-code N" (the output says why). */
int lagoon_report_append_result(char **log, size_t *log_size, TaskStatus status, const char *reason);

/* Log messages of a running task cost a broker message and, in Lagoon, an S3 upload of
 * the whole log each. A running task's log is sent again (at most every
 * LogUpdateIntervalSec=) only when it grew and the log bytes sent for it so far stay
 * within twice its size now (size: as sent, capped): after that send, at most 3× its
 * size, so all of a task's logs, the final one included, are at most 4× its final log
 * (LAGOON_LOG_BUDGET), whatever the task writes. For a steady writer that is a send each
 * time the log grew by half: every 5 s at first, about every 20 min an hour in. */
#define LAGOON_LOG_BUDGET 4U
bool lagoon_log_due(uint64_t sent_total, uint64_t last_size, uint64_t size);

/* The log remote-controller sends for a queued task: "This task is currently queued in
 * position <position>/<length>" between two rules of 40 '='. */
int lagoon_report_queued_log(unsigned position, unsigned length, char **ret);

/* The body of a GraphQL request for Lagoon's API:
 * {"query":"mutation updateTask($id: Int!, $patch: UpdateTaskPatchInput!) {…}",
 *  "variables":{"id":<task id as number>,"patch":{"status":"RUNNING","started":"…",
 *  "completed":"…","remoteId":"…"}}} — status upper-case (PENDING RUNNING COMPLETE
 * FAILED CANCELLED), times as lagoon_format_time(), started/completed omitted when 0.
 * -EINVAL when the task id is not a decimal integer (the API's id is Int!). */
int lagoon_report_update_task(const LagoonJob *j, char **ret, size_t *ret_size);

/* Reads a task log file capped to cap bytes: when the file is larger, the first and
 * last (cap - ~100)/2 bytes, cut at line boundaries where one is near, joined by a line
 * "[… N bytes omitted …]". A missing file gives an empty log. */
int lagoon_report_read_log(const char *path, size_t cap, char **ret, size_t *ret_size);
