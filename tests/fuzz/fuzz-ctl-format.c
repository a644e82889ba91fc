/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lagoon-taskctl's presentation of API answers, fed any JSON: the task table (the
 * input as a {"tasks":[…]} answer, and wrapped as one task of it), key: value lines
 * and the exit status of each value as if it were a finished task. */

#include <stdint.h>
#include <string.h>

#include "ctl-format.h"
#include "ctl-journal.h"
#include "json.h"

static FILE *devnull = NULL;

static void check_task(const JsonValue *task) {
        _cleanup_free_ char *note = NULL;
        int r;

        ctl_print_task_fields(devnull, task);
        r = ctl_task_exit_status(task, &note);
        if (r > 255 || (r < 0 && r != -ENOMEM))
                __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ JsonValue *v = NULL, *wrapped = NULL;
        JsonValue *tasks;

        if (!devnull) {
                devnull = fopen("/dev/null", "we");
                if (!devnull)
                        __builtin_trap();
        }
        {
                /* The same bytes as a --since argument (a C string: up to the first NUL). */
                _cleanup_free_ char *s = strndup((const char *) data, size);
                uint64_t t = 0;
                if (s)
                        (void) ctl_journal_parse_since(s, 1800000000000000ULL, &t);
        }
        if (json_parse((const char *) data, size, 16, &v, NULL) < 0)
                return 0;

        (void) ctl_print_task_table(devnull, v, 0, false, 0);
        (void) ctl_print_task_table(devnull, v, 80, true, UINT64_MAX);
        (void) ctl_print_task_table(devnull, v, SIZE_MAX, true, 1);
        check_task(v);
        tasks = json_get(v, "tasks");
        for (size_t i = 0; i < json_length(tasks); i++)
                check_task(json_array_at(tasks, i));

        wrapped = json_new_object();
        if (!wrapped || json_object_set(wrapped, "tasks", json_new_array()) < 0 ||
            json_array_append(json_get(wrapped, "tasks"), json_copy(v)) < 0)
                return 0;
        if (ctl_print_task_table(devnull, wrapped, 40, false, 1700000000000000) < 0)
                __builtin_trap();
        return 0;
}
