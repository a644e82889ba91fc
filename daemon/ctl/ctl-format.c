/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lagoon-taskctl's presentation of API answers: the task table, key: value lines and
 * the mapping of a finished task to an exit status. Everything shown comes from the
 * daemon (a task's command is the submitter's text), so control characters never
 * reach the terminal and members of the wrong type are shown as missing. */

#include <inttypes.h>
#include <string.h>
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

/* AGE and DURATION as kubectl shows them: two units at most ("45s", "3m12s", "5h4m",
 * "2d3h"); "-" when a time is missing or not a timestamp. */
static void format_span(const char *from, const char *to, uint64_t now, char *buf, size_t size) {
        uint64_t a, b, s;

        if (!from || parse_timestamp_rfc3339(from, &a) < 0 || (to && parse_timestamp_rfc3339(to, &b) < 0)) {
                snprintf(buf, size, "-");
                return;
        }
        if (!to)
                b = now;
        s = b > a ? (b - a) / USEC_PER_SEC : 0;
        if (s < 60)
                snprintf(buf, size, "%" PRIu64 "s", s);
        else if (s < 3600)
                snprintf(buf, size, "%" PRIu64 "m%" PRIu64 "s", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, size, "%" PRIu64 "h%" PRIu64 "m", s / 3600, s / 60 % 60);
        else
                snprintf(buf, size, "%" PRIu64 "d%" PRIu64 "h", s / 86400, s / 3600 % 24);
}

void ctl_format_status(const JsonValue *t, char *buf, size_t size) {
        const char *status = strna(json_get_string(t, "status")), *reason = json_get_string(t, "reason");
        uint64_t pos = 0;
        unsigned code;
        int n = 0;

        if (streq(status, "pending") && json_uint64(json_get(t, "queuePosition"), &pos) >= 0 && pos > 0)
                snprintf(buf, size, "pending #%" PRIu64, pos);
        else if (streq(status, "running") && json_get_string(t, "stoppingAt"))
                snprintf(buf, size, "stopping");
        else if (streq(status, "failed") && reason && sscanf(reason, "exit-code %u%n", &code, &n) == 1 &&
                 (size_t) n == strlen(reason)) {
                /* 128+N is how a runtime reports death by signal N. */
                const char *sig = code > 128 && code < 128 + 65 ? sigabbrev_np((int) code - 128) : NULL;

                if (sig)
                        snprintf(buf, size, "killed (SIG%s)", sig);
                else
                        snprintf(buf, size, "failed");
        } else if (streq(status, "failed") && reason)
                /* "launch-error: runc: …" → "launch-error": the detail is in show. */
                snprintf(buf, size, "%.*s", (int) MIN(strcspn(reason, ": "), (size_t) 32), reason);
        else
                snprintf(buf, size, "%.32s", status);
}

typedef struct Row {
        const char *id, *name, *service, *command;
        char projenv[2 * 64 + 2];
        char status[48];
        char exit[8];
        char created[64];
        char age[32], duration[32];
} Row;

static void print_cell(FILE *f, const char *s, size_t width) {
        size_t w = text_width(s);

        /* A cell over its width keeps width - 3 characters and "...". */
        if (w > width) {
                ctl_print_clean(f, s, width > 3 ? width - 3 : 0, ' ');
                w = width;
        } else
                ctl_print_clean(f, s, SIZE_MAX, ' ');
        for (; w < width; w++)
                fputc(' ', f);
        fputs("  ", f);
}

/* One column: its heading, where the row keeps it, whether it is wide-only. */
typedef struct Column {
        const char *heading;
        size_t width;
        bool wide_only, capped;
} Column;

enum { COL_ID, COL_NAME, COL_STATUS, COL_EXIT, COL_SERVICE, COL_PROJENV, COL_CREATED, COL_AGE, COL_DURATION, _COL_MAX };

static const char *row_cell(const Row *row, int col) {
        switch (col) {
        case COL_ID:
                return row->id;
        case COL_NAME:
                return row->name;
        case COL_STATUS:
                return row->status;
        case COL_EXIT:
                return row->exit;
        case COL_SERVICE:
                return row->service;
        case COL_PROJENV:
                return row->projenv;
        case COL_CREATED:
                return row->created;
        case COL_AGE:
                return row->age;
        default:
                return row->duration;
        }
}

int ctl_print_task_table(FILE *f, const JsonValue *answer, size_t columns, bool wide, uint64_t now) {
        Column cols[_COL_MAX] = {
                [COL_ID] = {"ID", .capped = true},
                [COL_NAME] = {"NAME", .wide_only = true, .capped = true},
                [COL_STATUS] = {"STATUS"},
                [COL_EXIT] = {"EXIT"},
                [COL_SERVICE] = {"SERVICE", .capped = true},
                [COL_PROJENV] = {"PROJECT/ENVIRONMENT", .wide_only = true, .capped = true},
                [COL_CREATED] = {"CREATED", .wide_only = true},
                [COL_AGE] = {"AGE"},
                [COL_DURATION] = {"DURATION"},
        };
        size_t n, used = 0, w_command;
        _cleanup_free_ Row *rows = NULL;
        const JsonValue *tasks;

        tasks = json_get(answer, "tasks");
        if (!json_is_array(tasks))
                return -EBADMSG;

        n = json_length(tasks);
        rows = calloc(MAX(n, (size_t) 1), sizeof(Row));
        if (!rows)
                return -ENOMEM;
        for (int c = 0; c < _COL_MAX; c++)
                cols[c].width = text_width(cols[c].heading);
        for (size_t i = 0; i < n; i++) {
                const JsonValue *t = json_array_at(tasks, i);
                const char *project = json_get_string(t, "project"), *env = json_get_string(t, "environment");
                Row *row = rows + i;
                int64_t code;

                row->id = strna(json_get_string(t, "id"));
                row->name = json_get_string(t, "name") ?: "-";
                row->service = json_get_string(t, "service") ?: json_get_string(t, "image") ?: "-";
                row->command = strempty(json_get_string(t, "command"));
                snprintf(row->projenv, sizeof(row->projenv), "%.64s/%.64s", project ?: "-", env ?: "-");
                ctl_format_status(t, row->status, sizeof(row->status));
                if (json_int64(json_get(t, "exitCode"), &code) >= 0 && code >= 0 && code <= 255)
                        snprintf(row->exit, sizeof(row->exit), "%" PRIi64, code);
                else
                        snprintf(row->exit, sizeof(row->exit), "-");
                format_created(json_get_string(t, "createdAt"), row->created, sizeof(row->created));
                format_span(json_get_string(t, "createdAt"), NULL, now, row->age, sizeof(row->age));
                if (json_get_string(t, "startedAt"))
                        format_span(json_get_string(t, "startedAt"), json_get_string(t, "finishedAt"), now,
                                    row->duration, sizeof(row->duration));
                else
                        snprintf(row->duration, sizeof(row->duration), "-");

                for (int c = 0; c < _COL_MAX; c++)
                        cols[c].width = MAX(cols[c].width, text_width(row_cell(row, c)));
        }

        for (int c = 0; c < _COL_MAX; c++) {
                /* Fitting the terminal, one long id or name must not squeeze COMMAND away. */
                if (cols[c].capped && columns != SIZE_MAX)
                        cols[c].width = MIN(cols[c].width, (size_t) CTL_COLUMN_WIDTH_CAP);
                if (wide || !cols[c].wide_only)
                        used += cols[c].width + 2;
        }
        if (columns == SIZE_MAX)
                w_command = SIZE_MAX;
        else if (columns == 0)
                w_command = CTL_COMMAND_WIDTH_DEFAULT;
        else
                /* "..." goes past the limit, so leave room for it; never less than 10. */
                w_command = columns > used + 13 ? columns - used - 3 : 10;

        for (int c = 0; c < _COL_MAX; c++)
                if (wide || !cols[c].wide_only)
                        print_cell(f, cols[c].heading, cols[c].width);
        fputs("COMMAND\n", f);
        for (size_t i = 0; i < n; i++) {
                for (int c = 0; c < _COL_MAX; c++)
                        if (wide || !cols[c].wide_only)
                                print_cell(f, row_cell(rows + i, c), cols[c].width);
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
