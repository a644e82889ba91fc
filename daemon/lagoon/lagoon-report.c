/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The messages lagoon-taskd sends back to Lagoon, in the shapes Lagoon's own
 * remote-controller sends (machinery's LagoonMessage / LagoonLog / LagoonLogMeta,
 * omitempty members left out): the task status, the status event, the task log, and
 * the GraphQL updateTask request. Also reads a task log capped to a size, head and tail
 * kept. Pure apart from that read; no logging. */

#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

#include "lagoon-message.h"
#include "lagoon-report.h"

#define BANNER_RULE "================================================================================"
#define RESULT_RULE "========================================" /* remote-controller's cancel banner */
/* How far back (or forward) a cut of the capped log looks for a line break. */
#define LINE_SEARCH_MAX (4U * 1024U)

static const char *const job_status_names[_TASK_STATUS_MAX] = {
        [TASK_PENDING] = "pending", [TASK_RUNNING] = "running",     [TASK_COMPLETE] = "complete",
        [TASK_FAILED] = "failed",   [TASK_CANCELLED] = "cancelled",
};

static const char *const api_status_names[_TASK_STATUS_MAX] = {
        [TASK_PENDING] = "PENDING", [TASK_RUNNING] = "RUNNING",     [TASK_COMPLETE] = "COMPLETE",
        [TASK_FAILED] = "FAILED",   [TASK_CANCELLED] = "CANCELLED",
};

const char *lagoon_job_status(TaskStatus s) {
        return s >= 0 && s < _TASK_STATUS_MAX ? job_status_names[s] : NULL;
}

static const char *job_status(const LagoonJob *j) {
        return j->queued && j->status == TASK_PENDING ? "queued" : lagoon_job_status(j->status);
}

int lagoon_format_time(uint64_t usec, char **ret) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        char buf[64];
        struct tm tm;
        char *s;

        if (usec / USEC_PER_SEC > (uint64_t) INT64_MAX || !gmtime_r(&t, &tm))
                return -ERANGE;
        if (strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0)
                return -ERANGE;
        s = strdup(buf);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), 0 if the byte at s does not start one. */
static size_t utf8_valid_at(const unsigned char *s, size_t n) {
        unsigned char lo = 0x80, hi = 0xbf;
        size_t len;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                len = 2;
        else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                if (s[0] == 0xe0)
                        lo = 0xa0;
                else if (s[0] == 0xed)
                        hi = 0x9f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                if (s[0] == 0xf0)
                        lo = 0x90;
                else if (s[0] == 0xf4)
                        hi = 0x8f;
        } else
                return 0;
        if (n < len || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (s[i] < 0x80 || s[i] > 0xbf)
                        return 0;
        return len;
}

/* Copies s to dst (when non-NULL) with every byte that is not part of a valid UTF-8
 * sequence replaced by U+FFFD, one per byte as Go's decoder does. Returns the length
 * of the result. */
static size_t utf8_sanitize(char *dst, const char *s, size_t n) {
        const unsigned char *u = (const unsigned char *) s;
        size_t o = 0;

        for (size_t i = 0; i < n;) {
                size_t l = utf8_valid_at(u + i, n - i);

                if (l == 0) {
                        if (dst)
                                memcpy(dst + o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                } else {
                        if (dst)
                                memcpy(dst + o, s + i, l);
                        o += l;
                        i += l;
                }
        }
        return o;
}

/* A JSON string from text that did not come through the JSON parser (which checks
 * UTF-8): json_format() passes bytes through, so invalid ones are replaced here. */
static JsonValue *new_string_utf8(const char *s, size_t n) {
        _cleanup_free_ char *buf = NULL;
        size_t l = utf8_sanitize(NULL, s, n);

        if (l == n)
                return json_new_stringn(s, n);
        buf = malloc(l);
        if (!buf)
                return NULL;
        utf8_sanitize(buf, s, n);
        return json_new_stringn(buf, l);
}

static int set_text(JsonValue *obj, const char *key, const char *s) {
        if (isempty(s)) /* omitempty */
                return 0;
        return json_object_set(obj, key, new_string_utf8(s, strlen(s)));
}

/* ---- what the persisted info says ---- */

static const char *info_string(const LagoonJob *j, const char *section, const char *key) {
        return json_get_string(json_get(j->info, section), key);
}

/* A non-negative id, as the parser stores it (a number), or as a decimal string. */
static bool info_id(const LagoonJob *j, const char *section, int64_t *ret) {
        const JsonValue *v = json_get_path(j->info, section, "id", NULL);
        const char *s = json_string(v);
        char *end;
        int64_t i;

        if (json_type(v) == JSON_NUMBER) {
                if (json_int64(v, &i) < 0 || i < 0)
                        return false;
        } else if (s && s[0] >= '0' && s[0] <= '9') {
                errno = 0;
                i = strtoll(s, &end, 10);
                if (errno != 0 || *end)
                        return false;
        } else
                return false;
        *ret = i;
        return true;
}

/* task.id as a string: the parser stores a string; a number is tolerated. */
static int info_task_id(const LagoonJob *j, char **ret) {
        const JsonValue *v = json_get_path(j->info, "task", "id", NULL);
        uint64_t u;
        char *s = NULL;

        if (json_string(v))
                s = strdup(json_string(v));
        else if (json_uint64(v, &u) >= 0) {
                if (asprintf(&s, "%" PRIu64, u) < 0)
                        s = NULL;
        } else
                s = strdup("");
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* The caller's jobName, else the task's taskName, name or id. */
static int job_name(const LagoonJob *j, char **ret) {
        const char *s = j->job_name;
        char *n;

        if (isempty(s))
                s = info_string(j, "task", "taskName");
        if (isempty(s))
                s = info_string(j, "task", "name");
        if (isempty(s))
                return info_task_id(j, ret);
        n = strdup(s);
        if (!n)
                return -ENOMEM;
        *ret = n;
        return 0;
}

/* LagoonTaskInfo: "id" always (no omitempty there), the rest when set. */
static int build_task(const LagoonJob *j, JsonValue **ret) {
        static const char *const keys[] = {"name", "taskName", "service", "command"};
        _cleanup_json_ JsonValue *task = NULL;
        _cleanup_free_ char *id = NULL;
        int r;

        task = json_new_object();
        if (!task)
                return -ENOMEM;
        r = info_task_id(j, &id);
        if (r < 0)
                return r;
        r = json_object_set(task, "id", new_string_utf8(id, strlen(id)));
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(keys) - j->not_found; i++) { /* command last */
                r = set_text(task, keys[i], info_string(j, "task", keys[i]));
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(task);
        return 0;
}

typedef enum MetaKind {
        META_STATUS,
        META_EVENT,
        META_LOGS,
} MetaKind;

static int set_time(JsonValue *meta, const char *key, uint64_t usec) {
        _cleanup_free_ char *t = NULL;
        int r;

        if (usec == 0)
                return 0;
        r = lagoon_format_time(usec, &t);
        if (r < 0)
                return r;
        return json_object_set_string(meta, key, t);
}

/* LagoonLogMeta with the members remote-controller fills for each message, in the
 * fixtures' order (which is LagoonLogMeta's field order, the times last). */
static int build_meta(const LagoonJob *j, MetaKind kind, JsonValue **ret) {
        _cleanup_json_ JsonValue *meta = NULL, *task = NULL;
        const char *status = job_status(j), *advanced = j->advanced_data;
        _cleanup_free_ char *name = NULL, *clone_data = NULL;
        int64_t id;
        int r;

        if (!status)
                return -EINVAL;
        r = job_name(j, &name);
        if (r < 0)
                return r;
        meta = json_new_object();
        if (!meta)
                return -ENOMEM;

        if ((r = set_text(meta, "environment", info_string(j, "environment", "name"))) < 0)
                return r;
        if (kind != META_LOGS && !j->not_found && info_id(j, "environment", &id) &&
            (r = json_object_set_int64(meta, "environmentId", id)) < 0)
                return r;
        if ((r = set_text(meta, "jobName", name)) < 0 || (r = set_text(meta, "jobStatus", status)) < 0)
                return r;
        if (kind == META_STATUS && (r = set_text(meta, "project", info_string(j, "project", "name"))) < 0)
                return r;
        if (kind != META_LOGS && !j->not_found && info_id(j, "project", &id) &&
            (r = json_object_set_int64(meta, "projectId", id)) < 0)
                return r;
        if (kind == META_EVENT && (r = set_text(meta, "projectName", info_string(j, "project", "name"))) < 0)
                return r;
        if ((r = set_text(meta, "remoteId", j->remote_id)) < 0)
                return r;
        r = build_task(j, &task);
        if (r < 0)
                return r;
        if ((r = json_object_set(meta, "task", TAKE_PTR(task))) < 0)
                return r;
        if (!j->not_found && (r = set_text(meta, "key", json_get_string(j->info, "key"))) < 0)
                return r;
        /* A projectclone that ended without taskData: actions-handler still needs the
         * clone's id and status, or Lagoon's task stays NEW. */
        if (kind == META_STATUS && !advanced && IN_SET_STATUS(j->status, TASK_COMPLETE, TASK_FAILED)) {
                r = lagoon_clone_advanced_data(j->info, j->status == TASK_FAILED, &clone_data);
                if (r == -ENOMEM)
                        return r;
                advanced = clone_data;
        }
        if (kind == META_STATUS && (r = set_text(meta, "advancedData", advanced)) < 0)
                return r;
        if ((r = set_text(meta, "clusterName", j->cluster)) < 0)
                return r;
        if (kind == META_STATUS &&
            ((r = set_time(meta, "startTime", j->start_usec)) < 0 || (r = set_time(meta, "endTime", j->end_usec)) < 0))
                return r;

        *ret = TAKE_PTR(meta);
        return 0;
}

int lagoon_report_status(const LagoonJob *j, char **ret, size_t *ret_size) {
        _cleanup_json_ JsonValue *msg = NULL, *meta = NULL;
        int r;

        r = build_meta(j, META_STATUS, &meta);
        if (r < 0)
                return r;
        msg = json_new_object();
        if (!msg)
                return -ENOMEM;
        if ((r = json_object_set_string(msg, "type", "task")) < 0 ||
            (r = set_text(msg, "namespace", j->namespace)) < 0 ||
            (r = json_object_set(msg, "meta", TAKE_PTR(meta))) < 0)
                return r;
        return json_format(msg, false, ret, ret_size);
}

/* LagoonLog: severity, project, event, meta, message (uuid is never set). */
static int build_log(const LagoonJob *j, const char *event, JsonValue *meta, JsonValue *message, JsonValue **ret) {
        _cleanup_json_ JsonValue *msg = NULL, *m = meta, *text = message;
        int r;

        msg = json_new_object();
        if (!msg || !m || !text)
                return -ENOMEM;
        if ((r = json_object_set_string(msg, "severity", "info")) < 0 ||
            (r = set_text(msg, "project", info_string(j, "project", "name"))) < 0 ||
            (r = set_text(msg, "event", event)) < 0 || (r = json_object_set(msg, "meta", TAKE_PTR(m))) < 0 ||
            (r = json_object_set(msg, "message", TAKE_PTR(text))) < 0)
                return r;
        *ret = TAKE_PTR(msg);
        return 0;
}

int lagoon_report_event(const LagoonJob *j, char **ret, size_t *ret_size) {
        _cleanup_json_ JsonValue *msg = NULL, *meta = NULL;
        _cleanup_free_ char *event = NULL, *text = NULL, *id = NULL;
        int r;

        r = build_meta(j, META_EVENT, &meta);
        if (r < 0)
                return r;
        r = info_task_id(j, &id);
        if (r < 0)
                return r;
        if (asprintf(&event, "task:job-kubernetes:%s", job_status(j)) < 0)
                return -ENOMEM;
        if (asprintf(&text, "*[%s]* Task `%s` *%s* %s", strempty(info_string(j, "project", "name")), id,
                     strempty(info_string(j, "task", "name")), job_status(j)) < 0)
                return -ENOMEM;
        r = build_log(j, event, TAKE_PTR(meta), new_string_utf8(text, strlen(text)), &msg);
        if (r < 0)
                return r;
        return json_format(msg, false, ret, ret_size);
}

int lagoon_report_logs(const LagoonJob *j, const char *log, size_t log_size, char **ret, size_t *ret_size) {
        _cleanup_json_ JsonValue *msg = NULL, *meta = NULL;
        _cleanup_free_ char *event = NULL, *banner = NULL, *text = NULL, *name = NULL;
        size_t banner_len, text_len;
        int r;

        r = build_meta(j, META_LOGS, &meta);
        if (r < 0)
                return r;
        r = job_name(j, &name);
        if (r < 0)
                return r;
        if (asprintf(&event, "task-logs:job-kubernetes:%s", name) < 0)
                return -ENOMEM;
        if (asprintf(&banner, BANNER_RULE "\nLogs on task %s, run by lagoon-taskd on cluster %s\n" BANNER_RULE "\n",
                     name, strempty(j->cluster)) < 0)
                return -ENOMEM;

        /* One buffer: the banner, then the log with invalid bytes replaced. */
        banner_len = utf8_sanitize(NULL, banner, strlen(banner));
        text_len = banner_len + utf8_sanitize(NULL, log ?: "", log ? log_size : 0);
        text = malloc(text_len + 1);
        if (!text)
                return -ENOMEM;
        utf8_sanitize(text, banner, strlen(banner));
        utf8_sanitize(text + banner_len, log ?: "", log ? log_size : 0);
        text[text_len] = 0;

        r = build_log(j, event, TAKE_PTR(meta), json_new_stringn(text, text_len), &msg);
        if (r < 0)
                return r;
        text = mfree(text); /* the tree holds its own copy; keep the peak lower */
        return json_format(msg, false, ret, ret_size);
}

int lagoon_report_queued_log(unsigned position, unsigned length, char **ret) {
        return asprintf(ret, RESULT_RULE "\nThis task is currently queued in position %u/%u\n" RESULT_RULE "\n",
                        position, length) < 0
                       ? -ENOMEM
                       : 0;
}

int lagoon_report_append_result(char **log, size_t *log_size, TaskStatus status, const char *reason) {
        _cleanup_free_ char *banner = NULL;
        bool nl = *log_size > 0 && (*log)[*log_size - 1] != '\n';
        size_t n;
        char *p;

        if (status == TASK_CANCELLED)
                banner = strdup(RESULT_RULE "\nTask cancelled\n" RESULT_RULE "\n");
        else if (status == TASK_FAILED && !isempty(reason) && !startswith(reason, "exit-code ")) {
                if (asprintf(&banner, RESULT_RULE "\nTask failed: %s\n" RESULT_RULE "\n", reason) < 0)
                        banner = NULL;
        } else
                return 0;
        if (!banner)
                return -ENOMEM;
        n = strlen(banner);
        p = realloc(*log, *log_size + nl + n + 1);
        if (!p)
                return -ENOMEM;
        if (nl)
                p[(*log_size)++] = '\n';
        memcpy(p + *log_size, banner, n + 1);
        *log = p;
        *log_size += n;
        return 0;
}

bool lagoon_log_due(uint64_t sent_total, uint64_t last_size, uint64_t size) {
        /* sent + size <= (BUDGET - 1) × size: the final log adds at most one more size. */
        return size != last_size && sent_total <= (uint64_t) (LAGOON_LOG_BUDGET - 2) * size;
}

/* The API's task id is Int!: a decimal integer that fits 32 bits. */
static int api_task_id(const LagoonJob *j, int64_t *ret) {
        _cleanup_free_ char *id = NULL;
        int64_t v = 0;
        int r;

        r = info_task_id(j, &id);
        if (r < 0)
                return r;
        if (isempty(id))
                return -EINVAL;
        for (const char *p = id; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (*p - '0');
                if (v > INT32_MAX)
                        return -EINVAL;
        }
        *ret = v;
        return 0;
}

int lagoon_report_update_task(const LagoonJob *j, char **ret, size_t *ret_size) {
        _cleanup_json_ JsonValue *body = NULL;
        JsonValue *variables, *patch;
        const char *status;
        int64_t id;
        int r;

        status = j->status >= 0 && j->status < _TASK_STATUS_MAX ? api_status_names[j->status] : NULL;
        if (status && j->queued && j->status == TASK_PENDING)
                status = "QUEUED";
        if (!status)
                return -EINVAL;
        r = api_task_id(j, &id);
        if (r < 0)
                return r;

        body = json_new_object();
        if (!body)
                return -ENOMEM;
        r = json_object_set_string(body, "query",
                                   "mutation updateTask($id: Int!, $patch: UpdateTaskPatchInput!) { "
                                   "updateTask(input: {id: $id, patch: $patch}) { id status started completed } }");
        if (r < 0)
                return r;
        if ((r = json_object_ensure_object(body, "variables", &variables)) < 0 ||
            (r = json_object_set_int64(variables, "id", id)) < 0 ||
            (r = json_object_ensure_object(variables, "patch", &patch)) < 0 ||
            (r = json_object_set_string(patch, "status", status)) < 0 ||
            (r = set_time(patch, "started", j->start_usec)) < 0 ||
            (r = set_time(patch, "completed", j->end_usec)) < 0 || (r = set_text(patch, "remoteId", j->remote_id)) < 0)
                return r;
        return json_format(body, false, ret, ret_size);
}

/* ---- the capped log ---- */

static int pread_full(int fd, char *buf, size_t size, off_t offset, size_t *ret) {
        size_t done = 0;

        while (done < size) {
                ssize_t k = pread(fd, buf + done, size - done, offset + (off_t) done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0) /* the file shrank under us: take what is there */
                        break;
                done += (size_t) k;
        }
        *ret = done;
        return 0;
}

int lagoon_report_read_log(const char *path, size_t cap, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        char line[128], c = 0;
        size_t size, half, got_head, got_tail, head, skip = 0, tail, line_len;
        struct stat st;
        int r, k;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* never hang on a FIFO */
        if (fd < 0 && errno != ENOENT)
                return -errno;
        if (fd >= 0) {
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (!S_ISREG(st.st_mode))
                        return -EINVAL;
                size = (size_t) st.st_size;
        } else
                size = 0; /* no log yet */

        if (size <= cap) {
                /* A log still being written may have grown since: read what was seen. */
                buf = malloc(size + 1);
                if (!buf)
                        return -ENOMEM;
                got_head = 0;
                if (size > 0) {
                        r = pread_full(fd, buf, size, 0, &got_head);
                        if (r < 0)
                                return r;
                }
                buf[got_head] = 0;
                *ret = TAKE_PTR(buf);
                if (ret_size)
                        *ret_size = got_head;
                return 0;
        }

        /* Room for the omission line, the rest split between head and tail. One buffer:
         * the head at its start, the tail read behind a gap the line will fill. */
        half = cap > 100 ? (cap - 100) / 2 : 0;
        buf = malloc(2 * half + sizeof(line) + 1);
        if (!buf)
                return -ENOMEM;
        r = pread_full(fd, buf, half, 0, &got_head);
        if (r < 0)
                return r;
        r = pread_full(fd, buf + half + sizeof(line), half, (off_t) (size - half), &got_tail);
        if (r < 0)
                return r;

        /* Cut the head after its last line break and the tail after its first, when one
         * is near; otherwise cut mid-line. */
        head = got_head;
        for (size_t i = 0; i < MIN(got_head, (size_t) LINE_SEARCH_MAX); i++)
                if (buf[got_head - 1 - i] == '\n') {
                        head = got_head - i;
                        break;
                }
        /* A tail that already starts a line (the byte before it ends one) is kept whole. */
        if (half > 0 && (pread(fd, &c, 1, (off_t) (size - half - 1)) != 1 || c != '\n'))
                for (size_t i = 0; i < MIN(got_tail, (size_t) LINE_SEARCH_MAX); i++)
                        if (buf[half + sizeof(line) + i] == '\n') {
                                skip = i + 1;
                                break;
                        }
        tail = got_tail - skip;

        k = snprintf(line, sizeof(line), "%s[… %" PRIu64 " bytes omitted …]\n",
                     head > 0 && buf[head - 1] != '\n' ? "\n" : "", (uint64_t) (size - head - tail));
        if (k < 0 || (size_t) k >= sizeof(line))
                return -EINVAL;
        line_len = (size_t) k;
        memcpy(buf + head, line, line_len);
        memmove(buf + head + line_len, buf + half + sizeof(line) + skip, tail);
        buf[head + line_len + tail] = 0;

        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = head + line_len + tail;
        return 0;
}
