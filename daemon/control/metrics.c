/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Prometheus text exposition (format 0.0.4) of GET /metrics, built on each scrape
 * from the counters the other modules keep; nothing here is stored. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "journal.h"
#include "log.h"
#include "metrics.h"

#define PREFIX "lagoon_taskd_"

static void family(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP " PREFIX "%s %s\n# TYPE " PREFIX "%s %s\n", name, help, name, type);
}

static void sample_u64(FILE *f, const char *name, const char *labels, uint64_t v) {
        fprintf(f, PREFIX "%s%s %" PRIu64 "\n", name, labels ?: "", v);
}

static void sample_seconds(FILE *f, const char *name, const char *labels, uint64_t usec) {
        fprintf(f, PREFIX "%s%s %" PRIu64 ".%06" PRIu64 "\n", name, labels ?: "", usec / USEC_PER_SEC,
                usec % USEC_PER_SEC);
}

static void one_u64(FILE *f, const char *name, const char *type, const char *help, uint64_t v) {
        family(f, name, type, help);
        sample_u64(f, name, NULL, v);
}

/* Label values written here come from fixed tables or the version string, which holds
 * no quote, backslash or newline; escaped anyway, as the format asks. */
static void label_value(FILE *f, const char *s) {
        for (; *s; s++)
                if (*s == '\\' || *s == '"')
                        fprintf(f, "\\%c", *s);
                else if (*s == '\n')
                        fputs("\\n", f);
                else
                        fputc(*s, f);
}

static void render_manager(FILE *f, Manager *m) {
        const ManagerStats *st = manager_get_stats(m);
        _cleanup_free_ const Task **tasks = NULL;
        uint64_t by_status[_TASK_STATUS_MAX] = {};
        uint64_t cumulative = 0;
        size_t n = 0;
        char labels[64];

        if (manager_list_tasks(m, &tasks, &n) >= 0)
                for (size_t i = 0; i < n; i++)
                        if ((unsigned) tasks[i]->status < _TASK_STATUS_MAX)
                                by_status[tasks[i]->status]++;
        family(f, "tasks", "gauge",
               "Tasks the daemon holds, by status (finished ones until KeepFinished= removes them).");
        for (TaskStatus s = 0; s < _TASK_STATUS_MAX; s++) {
                snprintf(labels, sizeof(labels), "{status=\"%s\"}", task_status_to_string(s));
                sample_u64(f, "tasks", labels, by_status[s]);
        }
        one_u64(f, "queue_length", "gauge", "Tasks waiting in the queue for a free slot (status pending).",
                manager_n_queued(m));
        one_u64(f, "queue_limit", "gauge", "MaxQueued=: submissions beyond this many queued tasks are refused.",
                manager_get_config(m)->max_queued);
        one_u64(f, "running_limit", "gauge", "MaxRunning=: tasks that may run at the same time.",
                manager_get_config(m)->max_running);

        family(f, "tasks_finished_total", "counter", "Tasks that reached a final status since the daemon started.");
        for (TaskStatus s = 0; s < _TASK_STATUS_MAX; s++) {
                if (!task_status_is_final(s))
                        continue;
                snprintf(labels, sizeof(labels), "{status=\"%s\"}", task_status_to_string(s));
                sample_u64(f, "tasks_finished_total", labels, st->finished[s]);
        }
        one_u64(f, "tasks_adopted_total", "counter",
                "Running containers or pods adopted at start-up from an earlier daemon.", st->adopted);

        one_u64(f, "launches_total", "counter", "Task launches begun (container or pod creation).", st->launches);
        one_u64(f, "launch_failures_total", "counter",
                "Launches that failed (launch-error, service-not-found, image-pull).", st->launch_failures);

        family(f, "launch_duration_seconds", "histogram",
               "Time from leaving the queue until the task's container or pod runs, for launches that succeeded.");
        for (size_t i = 0; i < MANAGER_LAUNCH_BUCKETS; i++) {
                cumulative += st->launch_buckets[i];
                snprintf(labels, sizeof(labels), "{le=\"%g\"}", manager_launch_bucket_seconds[i]);
                sample_u64(f, "launch_duration_seconds_bucket", labels, cumulative);
        }
        sample_u64(f, "launch_duration_seconds_bucket", "{le=\"+Inf\"}", st->launch_count);
        sample_seconds(f, "launch_duration_seconds_sum", NULL, st->launch_sum_usec);
        sample_u64(f, "launch_duration_seconds_count", NULL, st->launch_count);

        one_u64(f, "reloads_total", "counter", "Configuration reloads (SIGHUP), refused ones included.", st->reloads);
        one_u64(f, "reload_failures_total", "counter", "Configuration reloads refused (the old configuration stays).",
                st->reload_failures);
        one_u64(f, "last_reload_success", "gauge",
                "1 if the last reload was applied (or none happened yet), 0 if it was refused.", st->last_reload_ok);
        family(f, "last_reload_timestamp_seconds", "gauge",
               "Unix time of the last reload, 0 when there was none since the start.");
        sample_seconds(f, "last_reload_timestamp_seconds", NULL, st->last_reload_usec);
        one_u64(f, "state_writable", "gauge",
                "0 while a task record could not be written (launches stop, the write is retried), else 1.",
                st->store_error == 0);
        one_u64(f, "state_write_failures_total", "counter", "Task record writes that failed (ENOSPC, EIO, ...).",
                st->store_failures);
        one_u64(f, "state_low_space", "gauge",
                "1 if the state directory had less than MinFreeSpace= free at the last look before a launch, else 0.",
                st->low_space);
        family(f, "start_time_seconds", "gauge", "Unix time the daemon started (a change means a restart).");
        sample_seconds(f, "start_time_seconds", NULL, st->start_usec);
}

static void render_lagoon(FILE *f, Lagoon *l) {
        static const char *const sinks[_OUTBOX_SINK_MAX] = {
                [OUTBOX_BUS] = "bus",
                [OUTBOX_API] = "api",
        };
        uint64_t now = now_usec(CLOCK_REALTIME);
        LagoonStats st;
        char labels[32];

        lagoon_get_stats(l, &st);
        family(f, "outbox_messages", "gauge",
               "Messages for Lagoon waiting in the durable outbox, by sink (bus: RabbitMQ, api: GraphQL).");
        for (OutboxSink s = 0; s < _OUTBOX_SINK_MAX; s++) {
                snprintf(labels, sizeof(labels), "{sink=\"%s\"}", sinks[s]);
                sample_u64(f, "outbox_messages", labels, st.outbox[s]);
        }
        family(f, "outbox_oldest_age_seconds", "gauge",
               "Age of the oldest message waiting in the outbox, by sink; 0 when it is empty.");
        for (OutboxSink s = 0; s < _OUTBOX_SINK_MAX; s++) {
                uint64_t t = st.outbox_oldest_usec[s];

                snprintf(labels, sizeof(labels), "{sink=\"%s\"}", sinks[s]);
                sample_seconds(f, "outbox_oldest_age_seconds", labels, t > 0 && now > t ? now - t : 0);
        }
        if (st.bus_configured) {
                one_u64(f, "broker_up", "gauge", "1 while connected to Lagoon's RabbitMQ broker (BrokerURL=).",
                        st.bus_connected);
                one_u64(f, "broker_disconnects_total", "counter", "Connections to the broker lost since the start.",
                        st.bus_disconnects);
        }
        if (st.api_configured)
                one_u64(f, "lagoon_api_up", "gauge",
                        "0 while Lagoon's API (APIURL=) does not answer and updates are retried, else 1.", st.api_ok);
}

int metrics_render(Manager *m, Lagoon *l, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;

        family(f, "build_info", "gauge", "Always 1; the version as a label.");
        fputs(PREFIX "build_info{version=\"", f);
        label_value(f, PACKAGE_VERSION);
        fputs("\"} 1\n", f);

        render_manager(f, m);
        if (l)
                render_lagoon(f, l);

        one_u64(f, "journal_up", "gauge", "1 if journald's socket accepts a connection now.", journal_reachable());
        one_u64(f, "journal_send_failures_total", "counter",
                "Sends of task output to journald given up after retries (an entry or a batch of entries).",
                journal_send_failures());

        if (ferror(f)) {
                fclose(f);
                return -ENOMEM;
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}
