/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A message body from Lagoon's queues (the first byte picks the queue): parse it, and
 * for every message the parser hands back check the invariants its callers rely on,
 * then build each report from what was kept and check it is valid JSON. */

#include <stdint.h>
#include <string.h>

#include "lagoon-message.h"
#include "lagoon-report.h"
#include "parse-util.h"

static void check_json(char *s, size_t n) {
        _cleanup_json_ JsonValue *v = NULL;

        if (!s)
                __builtin_trap();
        if (strlen(s) != n || json_parse(s, n, 0, &v, NULL) < 0)
                __builtin_trap();
        free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(lagoon_message_freep) LagoonMessage *m = NULL;
        _cleanup_strv_free_ char **secrets = NULL;
        _cleanup_free_ char *error = NULL, *out = NULL;
        char *patterns[] = {(char *) "*PASSWORD*", (char *) "*TOKEN*", NULL};
        LagoonQueue queue;
        LagoonJob j;
        size_t n;
        int r;

        if (size < 1)
                return 0;
        queue = data[0] & 1 ? LAGOON_QUEUE_MISC : LAGOON_QUEUE_JOBS;
        r = lagoon_message_parse(queue, (const char *) data + 1, size - 1, &m, &error);
        if (r == -ENOMEM)
                return 0;
        if (r < 0 && (!error || strchr(error, '\n')))
                __builtin_trap();
        if (r == -EINVAL || r == -E2BIG) {
                if (m)
                        __builtin_trap();
                return 0;
        }
        if (r != 0 && r != -EBADMSG && r != -EOPNOTSUPP)
                __builtin_trap();
        if (!m || !json_is_object(m->info))
                __builtin_trap();
        if (r == 0) {
                if (!m->task_id || !lagoon_message_kind_to_string(m->kind))
                        __builtin_trap();
                if (m->kind == LAGOON_MESSAGE_STANDARD && (!m->service || !m->command))
                        __builtin_trap();
                if (m->kind != LAGOON_MESSAGE_CANCEL && (!m->project || !m->environment || !m->namespace))
                        __builtin_trap();
                if ((m->kind == LAGOON_MESSAGE_ADVANCED || m->kind == LAGOON_MESSAGE_ACTIVESTANDBY ||
                     m->kind == LAGOON_MESSAGE_PROJECTCLONE) &&
                    !m->image)
                        __builtin_trap();
                if (m->kind == LAGOON_MESSAGE_PROJECTCLONE &&
                    !(m->deployer_token && m->ssh_key && m->volume_mounts && m->json_payload && m->clone_id >= 0))
                        __builtin_trap();
                if (m->kind != LAGOON_MESSAGE_PROJECTCLONE && m->clone_id != 0)
                        __builtin_trap();
                if (m->organization_name && !*m->organization_name)
                        __builtin_trap();
                /* they become API paths: namespace names, both or neither, switches only */
                if (!!m->activestandby_source != !!m->activestandby_destination ||
                    (m->activestandby_source &&
                     (m->kind != LAGOON_MESSAGE_ACTIVESTANDBY || !dns_label_is_valid(m->activestandby_source) ||
                      !dns_label_is_valid(m->activestandby_destination))))
                        __builtin_trap();
                (void) lagoon_message_variable(m, "LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD");
                if (m->kind == LAGOON_MESSAGE_ACTIVESTANDBY && !(m->deployer_token && m->ssh_key))
                        __builtin_trap();
                if (queue == LAGOON_QUEUE_JOBS && m->kind != LAGOON_MESSAGE_STANDARD)
                        __builtin_trap();
        }
        for (size_t i = 0; i < m->n_project_variables; i++)
                if (!m->project_variables[i].name || !m->project_variables[i].value)
                        __builtin_trap();
        if (lagoon_message_secrets(m, patterns, &secrets) >= 0)
                for (char **s = secrets; *s; s++)
                        if (!**s)
                                __builtin_trap();

        /* whatever was kept makes valid reports */
        j = (LagoonJob){
                .info = m->info,
                .namespace = m->namespace,
                .job_name = m->task_task_name,
                .remote_id = "r",
                .cluster = "c",
                .status = TASK_RUNNING,
                .start_usec = 1,
                .advanced_data = m->task_id,
        };
        if (lagoon_report_status(&j, &out, &n) >= 0)
                check_json(TAKE_PTR(out), n);
        if (lagoon_report_event(&j, &out, &n) >= 0)
                check_json(TAKE_PTR(out), n);
        if (lagoon_report_logs(&j, (const char *) data, size, &out, &n) >= 0)
                check_json(TAKE_PTR(out), n);
        if (lagoon_report_update_task(&j, &out, &n) >= 0)
                check_json(TAKE_PTR(out), n);

        /* the final status without taskData: a projectclone's carries its clone */
        j.status = TASK_FAILED;
        j.end_usec = 2;
        j.advanced_data = NULL;
        if (lagoon_report_status(&j, &out, &n) >= 0)
                check_json(TAKE_PTR(out), n);
        r = lagoon_clone_advanced_data(m->info, true, &out);
        if (r >= 0 && (m->kind != LAGOON_MESSAGE_PROJECTCLONE || m->clone_id <= 0 || !out))
                __builtin_trap();
        if (r >= 0) {
                _cleanup_free_ char *v = NULL;
                if (lagoon_task_data_validate(out, strlen(out), &v, NULL) < 0) /* what Lagoon decodes */
                        __builtin_trap();
        }
        out = mfree(out);
        return 0;
}
