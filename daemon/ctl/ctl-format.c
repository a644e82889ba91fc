/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lagoon-taskctl's presentation of API answers: the task table, key: value lines and
 * the mapping of a finished task to an exit status. Everything shown comes from the
 * daemon (a task's command is the submitter's text), so control characters never
 * reach the terminal and members of the wrong type are shown as missing. */

#include <inttypes.h>
#include <time.h>

#include "ctl-format.h"
#include "macro.h"
#include "parse-util.h"
#include "task.h"

void ctl_print_clean(FILE *f, const char *s, size_t max_chars, char replacement) {
        size_t chars = 0;

        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                bool continuation = (c & 0xc0) == 0x80;

                if (!continuation && chars >= max_chars) {
                        fputs("...", f);
                        return;
                }
                if (!continuation)
                        chars++;
                fputc(c < 0x20 || c == 0x7f ? replacement : c, f);
        }
}

/* Terminal columns a string takes: UTF-8 code points, good enough for alignment. */
static size_t text_width(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                if (((unsigned char) *s & 0xc0) != 0x80)
                        n++;
        return n;
}

/* CREATED in local time, to the second; a value that is no timestamp is shown as is. */
static void format_created(const char *s, char *buf, size_t size) {
        uint64_t usec;
        struct tm tm;
        time_t t;

        if (!s) {
                snprintf(buf, size, "-");
                return;
        }
        if (parse_timestamp_rfc3339(s, &usec) < 0) {
                snprintf(buf, size, "%s", s);
                return;
        }
        t = (time_t) (usec / USEC_PER_SEC);
        if (!localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, size, "%s", s);
}

typedef struct Row {
        const char *id, *service, *command;
        char status[48];
        char exit[8];
        char created[64];
} Row;

static void print_cell(FILE *f, const char *s, size_t width) {
        size_t w = text_width(s);

        ctl_print_clean(f, s, SIZE_MAX, ' ');
        for (; w < width; w++)
                fputc(' ', f);
        fputs("  ", f);
}

int ctl_print_task_table(FILE *f, const JsonValue *answer, size_t columns) {
        size_t n, w_id = 2, w_status = 6, w_exit = 4, w_service = 7, w_created = 7, used, w_command;
        _cleanup_free_ Row *rows = NULL;
        const JsonValue *tasks;

        tasks = json_get(answer, "tasks");
        if (!json_is_array(tasks))
                return -EBADMSG;

        n = json_length(tasks);
        rows = calloc(MAX(n, (size_t) 1), sizeof(Row));
        if (!rows)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const JsonValue *t = json_array_at(tasks, i);
                const char *status = strna(json_get_string(t, "status"));
                Row *row = rows + i;
                uint64_t pos = 0;
                int64_t code;

                row->id = strna(json_get_string(t, "id"));
                row->service = json_get_string(t, "service") ?: json_get_string(t, "image") ?: "-";
                row->command = strempty(json_get_string(t, "command"));
                if (json_uint64(json_get(t, "queuePosition"), &pos) >= 0 && pos > 0)
                        snprintf(row->status, sizeof(row->status), "%.16s #%" PRIu64, status, pos);
                else
                        snprintf(row->status, sizeof(row->status), "%s", status);
                if (json_int64(json_get(t, "exitCode"), &code) >= 0 && code >= 0 && code <= 255)
                        snprintf(row->exit, sizeof(row->exit), "%" PRIi64, code);
                else
                        snprintf(row->exit, sizeof(row->exit), "-");
                format_created(json_get_string(t, "createdAt"), row->created, sizeof(row->created));

                w_id = MAX(w_id, text_width(row->id));
                w_status = MAX(w_status, text_width(row->status));
                w_exit = MAX(w_exit, text_width(row->exit));
                w_service = MAX(w_service, text_width(row->service));
                w_created = MAX(w_created, text_width(row->created));
        }

        used = w_id + w_status + w_exit + w_service + w_created + 5 * 2;
        if (columns == SIZE_MAX)
                w_command = SIZE_MAX;
        else if (columns == 0)
                w_command = CTL_COMMAND_WIDTH_DEFAULT;
        else
                /* "..." goes past the limit, so leave room for it; never less than 10. */
                w_command = columns > used + 13 ? columns - used - 3 : 10;

        print_cell(f, "ID", w_id);
        print_cell(f, "STATUS", w_status);
        print_cell(f, "EXIT", w_exit);
        print_cell(f, "SERVICE", w_service);
        print_cell(f, "CREATED", w_created);
        fputs("COMMAND\n", f);
        for (size_t i = 0; i < n; i++) {
                print_cell(f, rows[i].id, w_id);
                print_cell(f, rows[i].status, w_status);
                print_cell(f, rows[i].exit, w_exit);
                print_cell(f, rows[i].service, w_service);
                print_cell(f, rows[i].created, w_created);
                ctl_print_clean(f, rows[i].command, w_command, ' ');
                fputc('\n', f);
        }
        return 0;
}

static void print_value(FILE *f, const char *key, const JsonValue *v, size_t indent) {
        _cleanup_free_ char *text = NULL, *duration = NULL;
        uint64_t u;

        switch (json_type(v)) {
        case JSON_NULL:
                fputc('-', f);
                break;
        case JSON_STRING:
                /* A multi-line command continues under its first line. */
                for (const char *s = json_string(v); *s; s++)
                        if (*s == '\n')
                                fprintf(f, "\n%*s", (int) MIN(indent, (size_t) 256), "");
                        else
                                fputc((unsigned char) *s < 0x20 || *s == 0x7f ? '?' : *s, f);
                break;
        case JSON_BOOLEAN:
                fputs(json_boolean(v) > 0 ? "yes" : "no", f);
                break;
        default:
                if (json_format(v, false, &text, NULL) >= 0)
                        ctl_print_clean(f, text, SIZE_MAX, '?');
                if (streq(key, "timeout") && json_uint64(v, &u) >= 0 && u > 0 && u <= UINT64_MAX / USEC_PER_SEC &&
                    (duration = format_duration(u * USEC_PER_SEC)))
                        fprintf(f, " (%s)", duration);
        }
        fputc('\n', f);
}

void ctl_print_task_fields(FILE *f, const JsonValue *task) {
        size_t width = 0;

        /* json_length() counts array elements too, which have no keys. */
        if (!json_is_object(task))
                return;
        for (size_t i = 0; i < json_length(task); i++)
                width = MAX(width, text_width(json_object_key_at(task, i)));
        /* Keys are the API's; one absurdly long key must not push everything away. */
        width = MIN(width, (size_t) 32);

        for (size_t i = 0; i < json_length(task); i++) {
                const char *key = json_object_key_at(task, i);
                size_t w = text_width(key);

                ctl_print_clean(f, key, SIZE_MAX, '?');
                fputc(':', f);
                for (; w <= width; w++)
                        fputc(' ', f);
                print_value(f, key, json_object_value_at(task, i), width + 2);
        }
}

static int make_note(char **ret, const char *id, const char *what, const char *detail) {
        /* buf before f: the stream must be closed (it writes buf) before buf is freed. */
        _cleanup_free_ char *buf = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size = 0;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fputs("task ", f);
        ctl_print_clean(f, id, 128, '?');
        fputs(what, f);
        if (detail)
                ctl_print_clean(f, detail, 1024, '?');
        if (fflush(f) != 0 || ferror(f))
                return -ENOMEM;
        fclose(TAKE_PTR(f));
        *ret = TAKE_PTR(buf);
        return 0;
}

int ctl_task_exit_status(const JsonValue *task, char **ret_note) {
        const char *status = json_get_string(task, "status"), *reason = json_get_string(task, "reason"),
                   *id = strna(json_get_string(task, "id"));
        _cleanup_free_ char *note = NULL;
        int64_t code = -1;
        int r, ret;

        if (json_int64(json_get(task, "exitCode"), &code) < 0 || code < 0 || code > 255)
                code = -1;

        if (streq_ptr(status, "complete")) {
                *ret_note = NULL;
                return code >= 0 ? (int) code : 0;
        }
        if (streq_ptr(status, "failed") && code > 0 && !streq_ptr(reason, "timeout")) {
                /* The command's own failure speaks through its exit code and output. */
                *ret_note = NULL;
                return (int) code;
        }

        if (streq_ptr(status, "cancelled")) {
                r = make_note(&note, id, " was cancelled", NULL);
                ret = CTL_EXIT_TASK_CANCELLED;
        } else if (streq_ptr(status, "failed") && streq_ptr(reason, "timeout")) {
                r = make_note(&note, id, " timed out", NULL);
                ret = CTL_EXIT_TASK_TIMEOUT;
        } else if (streq_ptr(status, "failed")) {
                r = make_note(&note, id, " failed: ", reason ?: "no reason given");
                ret = CTL_EXIT_TASK_NOT_RUN;
        } else {
                r = make_note(&note, id, " ended in an unexpected state: ", strna(status));
                ret = CTL_EXIT_API_ERROR;
        }
        if (r < 0)
                return r;
        *ret_note = TAKE_PTR(note);
        return ret;
}
