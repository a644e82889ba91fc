/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tests for the messages sent back to Lagoon (lagoon-report.h): the status body compared
 * member by member, in order, with Lagoon's own examples (fixtures/lagoon/
 * amqp-out-controller-*.json) for every status; omitted members; the event, log and
 * GraphQL bodies; invalid UTF-8 in logs; and the capped log read on small, exactly-cap
 * and huge files. */

#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "lagoon-report.h"
#include "tests.h"

#define START_USEC (1136214245ULL * USEC_PER_SEC) /* 2006-01-02 15:04:05 UTC */
#define END_USEC (1136217845ULL * USEC_PER_SEC)   /* 2006-01-02 16:04:05 UTC */
#define REMOTE_ID "b1d53406-48d6-4a28-87d2-bada0b602d87"

static JsonValue *parse(const char *s, size_t n) {
        JsonValue *v = NULL;
        _cleanup_free_ char *error = NULL;

        if (json_parse(s, n, 0, &v, &error) < 0) {
                fprintf(stderr, "not valid JSON (%s): %.*s\n", strna(error), (int) MIN(n, (size_t) 400), s);
                abort();
        }
        return v;
}

#define P(s) parse((s), strlen(s))

/* Deep equality, member order included. */
static bool json_equal(const JsonValue *a, const JsonValue *b) {
        _cleanup_free_ char *x = NULL, *y = NULL;

        if (json_type(a) != json_type(b))
                return false;
        switch (json_type(a)) {
        case JSON_OBJECT:
                if (json_length(a) != json_length(b))
                        return false;
                for (size_t i = 0; i < json_length(a); i++)
                        if (!streq(json_object_key_at(a, i), json_object_key_at(b, i)) ||
                            !json_equal(json_object_value_at(a, i), json_object_value_at(b, i)))
                                return false;
                return true;
        case JSON_ARRAY:
                if (json_length(a) != json_length(b))
                        return false;
                for (size_t i = 0; i < json_length(a); i++)
                        if (!json_equal(json_array_at(a, i), json_array_at(b, i)))
                                return false;
                return true;
        default:
                ASSERT_OK(json_format(a, false, &x, NULL));
                ASSERT_OK(json_format(b, false, &y, NULL));
                return streq(x, y);
        }
}

static void assert_json_equal(const JsonValue *got, const JsonValue *expect) {
        _cleanup_free_ char *g = NULL, *e = NULL;

        if (json_equal(got, expect))
                return;
        ASSERT_OK(json_format(got, true, &g, NULL));
        ASSERT_OK(json_format(expect, true, &e, NULL));
        fprintf(stderr, "got:\n%s\nexpected:\n%s\n", g, e);
        abort();
}

static void assert_output(const char *out, size_t size, const char *expect) {
        _cleanup_json_ JsonValue *g = NULL, *e = NULL;

        ASSERT_EQ(strlen(out), size);
        g = parse(out, size);
        e = parse(expect, strlen(expect));
        assert_json_equal(g, e);
}

static JsonValue *fixture(const char *name) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        const char *srcdir = getenv("TEST_SRCDIR");
        size_t size;

        if (!srcdir) {
                printf("TEST_SRCDIR not set: skipping (run through meson test)\n");
                exit(77);
        }
        path = strf("%s/tests/fixtures/lagoon/%s", srcdir, name);
        ASSERT_OK(read_full_file(path, 1024 * 1024, &text, &size));
        return parse(text, size);
}

/* What the parser persists for a task like the fixtures'. */
#define INFO \
        "{\"task\":{\"id\":\"1\",\"name\":\"run task\"},\"project\":{\"id\":1,\"name\":\"example-project\"}," \
        "\"environment\":{\"id\":1,\"name\":\"main\"}}"

static LagoonJob job(const JsonValue *info, TaskStatus status) {
        return (LagoonJob){
                .info = info,
                .namespace = "example-project-main",
                .job_name = "lagoon-task-abcdefg",
                .remote_id = REMOTE_ID,
                .cluster = "cluster-01",
                .status = status,
                .start_usec = status >= TASK_RUNNING ? START_USEC : 0,
                .end_usec = task_status_is_final(status) ? END_USEC : 0,
        };
}

TEST(status_fixtures) {
        static const struct {
                const char *fixture;
                TaskStatus status;
        } cases[] = {
                {"amqp-out-controller-taskpending.json", TASK_PENDING},
                {"amqp-out-controller-taskrunning.json", TASK_RUNNING},
                {"amqp-out-controller-taskcomplete.json", TASK_COMPLETE},
                {"amqp-out-controller-taskfailed.json", TASK_FAILED},
                {"amqp-out-controller-taskcancelled.json", TASK_CANCELLED},
        };
        _cleanup_json_ JsonValue *info = parse(INFO, strlen(INFO));

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_json_ JsonValue *expect = fixture(cases[i].fixture), *got = NULL;
                _cleanup_free_ char *out = NULL;
                LagoonJob j = job(info, cases[i].status);
                size_t size = 0;

                /* Lagoon's cancelled example says "complete"; a cancelled task says cancelled. */
                if (cases[i].status == TASK_CANCELLED) {
                        JsonValue *meta = json_get(expect, "meta");
                        ASSERT_STREQ(json_get_string(meta, "jobStatus"), "complete");
                        ASSERT_OK(json_object_set_string(meta, "jobStatus", "cancelled"));
                }
                ASSERT_OK(lagoon_report_status(&j, &out, &size));
                ASSERT_EQ(strlen(out), size);
                got = parse(out, size);
                assert_json_equal(got, expect);
                /* ids are numbers, task.id a string */
                ASSERT_EQ(json_type(json_get_path(got, "meta", "projectId", NULL)), JSON_NUMBER);
                ASSERT_EQ(json_type(json_get_path(got, "meta", "environmentId", NULL)), JSON_NUMBER);
                ASSERT_EQ(json_type(json_get_path(got, "meta", "task", "id", NULL)), JSON_STRING);
        }
}

TEST(status_omitted) {
        _cleanup_json_ JsonValue *info = NULL, *full = NULL;
        _cleanup_free_ char *out = NULL;
        LagoonJob j;
        size_t size;

        /* no ids, no namespace, no remote id, no cluster: left out like Go's omitempty */
        info = P("{\"task\":{\"id\":\"5\"},\"project\":{\"name\":\"p\"},\"environment\":{\"name\":\"e\"}}");
        j = (LagoonJob){.info = info, .job_name = "t5", .status = TASK_PENDING};
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        assert_output(out, size,
                      "{\"type\":\"task\",\"meta\":{\"environment\":\"e\",\"jobName\":\"t5\",\"jobStatus\":\"pending\","
                      "\"project\":\"p\",\"task\":{\"id\":\"5\"}}}");
        out = mfree(out);

        /* an empty info still gives a valid message; task.id is never omitted */
        full = P("{}");
        j = (LagoonJob){.info = full, .status = TASK_FAILED, .namespace = "", .cluster = ""};
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        assert_output(out, size, "{\"type\":\"task\",\"meta\":{\"jobStatus\":\"failed\",\"task\":{\"id\":\"\"}}}");
        out = mfree(out);
        j.info = NULL;
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        assert_output(out, size, "{\"type\":\"task\",\"meta\":{\"jobStatus\":\"failed\",\"task\":{\"id\":\"\"}}}");
        out = mfree(out);
        json_free(full);

        /* everything: key, all task members, advancedData, ids 0 (present: pointers in Go) */
        full = P("{\"key\":\"deploytarget:task:advanced\",\"task\":{\"id\":\"9\",\"name\":\"n\",\"taskName\":\"tn\","
                 "\"service\":\"cli\",\"command\":\"env\"},\"project\":{\"id\":0,\"name\":\"p\"},"
                 "\"environment\":{\"id\":0,\"name\":\"e\",\"environmentType\":\"production\"}}");
        j = (LagoonJob){.info = full,
                        .namespace = "p-e",
                        .job_name = "tn",
                        .remote_id = "r",
                        .cluster = "c",
                        .status = TASK_COMPLETE,
                        .start_usec = START_USEC,
                        .end_usec = END_USEC,
                        .advanced_data = "eyJhIjoxfQ=="};
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        assert_output(out, size,
                      "{\"type\":\"task\",\"namespace\":\"p-e\",\"meta\":{\"environment\":\"e\",\"environmentId\":0,"
                      "\"jobName\":\"tn\",\"jobStatus\":\"complete\",\"project\":\"p\",\"projectId\":0,"
                      "\"remoteId\":\"r\",\"task\":{\"id\":\"9\",\"name\":\"n\",\"taskName\":\"tn\","
                      "\"service\":\"cli\",\"command\":\"env\"},\"key\":\"deploytarget:task:advanced\","
                      "\"advancedData\":\"eyJhIjoxfQ==\",\"clusterName\":\"c\",\"startTime\":\"2006-01-02 15:04:05\","
                      "\"endTime\":\"2006-01-02 16:04:05\"}}");
        out = mfree(out);

        /* jobName falls back to taskName, name, id */
        j.job_name = NULL;
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        ASSERT(strstr(out, "\"jobName\":\"tn\""));
        out = mfree(out);

        /* a task id stored as a number is still sent as a string; ids as strings as numbers */
        json_free(info);
        info = P("{\"task\":{\"id\":77},\"project\":{\"id\":\"3\",\"name\":\"p\"},\"environment\":{\"name\":\"e\"}}");
        j = (LagoonJob){.info = info, .status = TASK_RUNNING};
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        assert_output(out, size,
                      "{\"type\":\"task\",\"meta\":{\"environment\":\"e\",\"jobName\":\"77\",\"jobStatus\":\"running\","
                      "\"project\":\"p\",\"projectId\":3,\"task\":{\"id\":\"77\"}}}");
        out = mfree(out);

        /* no status Lagoon knows */
        j.status = TASK_NEW;
        ASSERT_EQ(lagoon_report_status(&j, &out, &size), -EINVAL);
        ASSERT_EQ(lagoon_report_event(&j, &out, &size), -EINVAL);
        ASSERT_EQ(lagoon_report_logs(&j, "x", 1, &out, &size), -EINVAL);
        ASSERT_EQ(lagoon_report_update_task(&j, &out, &size), -EINVAL);
        j.status = _TASK_STATUS_INVALID;
        ASSERT_EQ(lagoon_report_status(&j, &out, &size), -EINVAL);
        ASSERT(!out);
}

/* A cancel of a task not found: remote-controller's updateLagoonTask() members only (the
 * task's id, name, taskName, service; environment, project, jobName, jobStatus, times);
 * no remoteId, so actions-handler keeps the task's. Its API update has none either. */
TEST(status_cancel_not_found) {
        _cleanup_json_ JsonValue *info = NULL;
        _cleanup_free_ char *out = NULL;
        size_t size;

        info = P("{\"key\":\"deploytarget:task:cancel\",\"task\":{\"id\":\"9\",\"name\":\"n\",\"taskName\":\"tn\","
                 "\"service\":\"cli\",\"command\":\"env\"},\"project\":{\"id\":3,\"name\":\"p\"},"
                 "\"environment\":{\"id\":4,\"name\":\"e\"}}");
        LagoonJob j = {
                .info = info,
                .namespace = "p-e",
                .job_name = "tn",
                .status = TASK_CANCELLED,
                .start_usec = START_USEC,
                .end_usec = START_USEC,
                .not_found = true,
        };
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        assert_output(out, size,
                      "{\"type\":\"task\",\"namespace\":\"p-e\",\"meta\":{\"environment\":\"e\","
                      "\"jobName\":\"tn\",\"jobStatus\":\"cancelled\",\"project\":\"p\","
                      "\"task\":{\"id\":\"9\",\"name\":\"n\",\"taskName\":\"tn\",\"service\":\"cli\"},"
                      "\"startTime\":\"2006-01-02 15:04:05\",\"endTime\":\"2006-01-02 15:04:05\"}}");
        out = mfree(out);
        ASSERT_OK(lagoon_report_update_task(&j, &out, &size));
        ASSERT(strstr(out, "\"patch\":{\"status\":\"CANCELLED\",\"started\":\"2006-01-02 15:04:05\","
                           "\"completed\":\"2006-01-02 15:04:05\"}"));
        ASSERT(!strstr(out, "remoteId"));
}

#define RULE40 "========================================"

static void check_result(const char *log, TaskStatus status, const char *reason, const char *expect) {
        char *buf = log ? strdup(log) : NULL;
        size_t size = log ? strlen(log) : 0;

        ASSERT(!log || buf);
        ASSERT_OK(lagoon_report_append_result(&buf, &size, status, reason));
        ASSERT_EQ(size, strlen(expect));
        ASSERT(memcmp(buf ?: "", expect, size) == 0);
        ASSERT(!buf || buf[size] == 0);
        free(buf);
}

TEST(append_result) {
        check_result("out\n", TASK_CANCELLED, NULL, "out\n" RULE40 "\nTask cancelled\n" RULE40 "\n");
        check_result("out", TASK_FAILED, "timeout", "out\n" RULE40 "\nTask failed: timeout\n" RULE40 "\n");
        check_result(NULL, TASK_FAILED, "image-pull: ErrImagePull: not found",
                     RULE40 "\nTask failed: image-pull: ErrImagePull: not found\n" RULE40 "\n");
        check_result("", TASK_FAILED, "pod-deleted: the pod was deleted before the task ended",
                     RULE40 "\nTask failed: pod-deleted: the pod was deleted before the task ended\n" RULE40 "\n");
        /* the output says why; nothing to say for the others */
        check_result("out", TASK_FAILED, "exit-code 3", "out");
        check_result("out", TASK_FAILED, NULL, "out");
        check_result("out", TASK_COMPLETE, NULL, "out");
        check_result("out", TASK_RUNNING, "timeout", "out");
}

/* The daemon's tick (LogUpdateIntervalSec=, 5 s) over a task's life: size_at(t) is the
 * log's size t seconds in; returns the log bytes sent, the final log included. */
static uint64_t simulate(uint64_t (*size_at)(unsigned), unsigned seconds, uint64_t cap, unsigned *ret_sends) {
        uint64_t sent = 0, last = 0, final = MIN(size_at(seconds), cap);
        unsigned sends = 0;

        for (unsigned t = 5; t < seconds; t += 5) {
                uint64_t size = MIN(size_at(t), cap);

                if (lagoon_log_due(sent, last, size)) {
                        sent += size;
                        last = size;
                        sends++;
                }
        }
        *ret_sends = sends + 1;
        return sent + final;
}

static uint64_t steady(unsigned t) { /* 2 KiB/s */
        return 2048ULL * t;
}

static uint64_t burst_then_quiet(unsigned t) { /* 20 MiB in the first minute, then a line a minute */
        return t < 60 ? 350000ULL * t : 21000000ULL + 100ULL * (t / 60);
}

static uint64_t slow_start(unsigned t) { /* a line every 30 s, then 100 KiB/s after 50 min */
        return t < 3000 ? 80ULL * (t / 30) : 8000ULL + 102400ULL * (t - 3000);
}

TEST(log_schedule) {
        uint64_t (*const writers[])(unsigned) = {steady, burst_then_quiet, slow_start};
        uint64_t total, cap = 8 * 1024 * 1024;
        unsigned sends;

        /* A steady writer for an hour: every 5 s sent the whole log 720 times (360× the
         * final log); now at most 4×, and still a log the first minute and later on. */
        total = simulate(steady, 3600, UINT64_MAX, &sends);
        printf("# steady hour: %u sends, %.2f× the final log\n", sends, (double) total / steady(3600));
        ASSERT(total <= LAGOON_LOG_BUDGET * steady(3600));
        ASSERT(sends >= 10 && sends <= 30);
        ASSERT(lagoon_log_due(0, 0, 1));                       /* the first log at once */
        ASSERT(lagoon_log_due(2048 * 5, 2048 * 5, 2048 * 10)); /* and the next tick's */
        ASSERT(!lagoon_log_due(100, 50, 50));                  /* not grown: not sent */

        for (size_t i = 0; i < ELEMENTSOF(writers); i++)
                for (unsigned hours = 1; hours <= 6; hours++) {
                        uint64_t final;

                        total = simulate(writers[i], hours * 3600, cap, &sends);
                        final = MIN(writers[i](hours * 3600), cap);
                        ASSERT(total <= LAGOON_LOG_BUDGET * final);
                }
        /* A log over the cap: it is sent (capped) a few times at most. */
        total = simulate(burst_then_quiet, 3600, cap, &sends);
        ASSERT(sends <= 6);
}

/* A projectclone's final status without taskData carries the clone's id and status,
 * which actions-handler needs for complete and failed (else Lagoon's task stays NEW);
 * the task's own taskData is passed on as it is. */
TEST(status_projectclone) {
        _cleanup_json_ JsonValue *info = NULL, *msg = NULL;
        _cleanup_free_ char *out = NULL;
        LagoonJob j;
        size_t size;

        info = P("{\"key\":\"deploytarget:task:projectclone\",\"task\":{\"id\":\"21\"},"
                 "\"project\":{\"name\":\"p\"},\"environment\":{\"name\":\"e\"},\"cloneId\":17}");
        j = job(info, TASK_FAILED);
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        msg = parse(out, size);
        ASSERT_STREQ(json_get_string(json_get(msg, "meta"), "advancedData"),
                     "eyJjbG9uZUlkIjoxNywic3RhdHVzIjoiRkFJTEVEIn0=");
        ASSERT_STREQ(json_get_string(json_get(msg, "meta"), "key"), "deploytarget:task:projectclone");
        out = mfree(out);
        msg = json_free(msg);

        j = job(info, TASK_COMPLETE);
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        msg = parse(out, size);
        ASSERT_STREQ(json_get_string(json_get(msg, "meta"), "advancedData"),
                     "eyJjbG9uZUlkIjoxNywic3RhdHVzIjoiU09VUkNFX0ZJTEVTX1VQTE9BREVEIn0=");
        out = mfree(out);
        msg = json_free(msg);

        j.advanced_data = "eyJjbG9uZUlkIjoxNywic3RhdHVzIjoiQ09NUExFVEUifQ==";
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        msg = parse(out, size);
        ASSERT_STREQ(json_get_string(json_get(msg, "meta"), "advancedData"), j.advanced_data);
        out = mfree(out);
        msg = json_free(msg);

        /* not while it runs, not for a cancel (actions-handler reads it on complete and failed) */
        for (TaskStatus st = TASK_PENDING; st < _TASK_STATUS_MAX; st++) {
                if (st == TASK_COMPLETE || st == TASK_FAILED)
                        continue;
                j = job(info, st);
                ASSERT_OK(lagoon_report_status(&j, &out, &size));
                msg = parse(out, size);
                ASSERT(!json_get(json_get(msg, "meta"), "advancedData"));
                out = mfree(out);
                msg = json_free(msg);
        }
}

/* Waiting on the limits: Lagoon's "queued" everywhere, and remote-controller's log. */
TEST(queued) {
        _cleanup_json_ JsonValue *info = P(INFO);
        _cleanup_free_ char *out = NULL;
        LagoonJob j = job(info, TASK_PENDING);
        size_t size;

        j.queued = true;
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        ASSERT(strstr(out, "\"jobStatus\":\"queued\""));
        out = mfree(out);
        ASSERT_OK(lagoon_report_event(&j, &out, &size));
        ASSERT(strstr(out, "\"event\":\"task:job-kubernetes:queued\""));
        ASSERT(strstr(out, "*run task* queued\""));
        out = mfree(out);
        ASSERT_OK(lagoon_report_update_task(&j, &out, &size));
        ASSERT(strstr(out, "\"status\":\"QUEUED\""));
        out = mfree(out);
        ASSERT_OK(lagoon_report_queued_log(2, 3, &out));
        ASSERT_STREQ(out, RULE40 "\nThis task is currently queued in position 2/3\n" RULE40 "\n");
        out = mfree(out);
        /* only a pending task is queued */
        j.status = TASK_RUNNING;
        ASSERT_OK(lagoon_report_status(&j, &out, &size));
        ASSERT(strstr(out, "\"jobStatus\":\"running\""));
}

TEST(status_names) {
        _cleanup_free_ char *t = NULL;

        ASSERT(!lagoon_job_status(TASK_NEW));
        ASSERT_STREQ(lagoon_job_status(TASK_PENDING), "pending");
        ASSERT_STREQ(lagoon_job_status(TASK_RUNNING), "running");
        ASSERT_STREQ(lagoon_job_status(TASK_COMPLETE), "complete");
        ASSERT_STREQ(lagoon_job_status(TASK_FAILED), "failed");
        ASSERT_STREQ(lagoon_job_status(TASK_CANCELLED), "cancelled");
        ASSERT(!lagoon_job_status(_TASK_STATUS_MAX));
        ASSERT(!lagoon_job_status(_TASK_STATUS_INVALID));

        ASSERT_OK(lagoon_format_time(START_USEC + 999999, &t));
        ASSERT_STREQ(t, "2006-01-02 15:04:05");
        t = mfree(t);
        ASSERT_OK(lagoon_format_time(0, &t));
        ASSERT_STREQ(t, "1970-01-01 00:00:00");
}

TEST(event) {
        _cleanup_json_ JsonValue *info = parse(INFO, strlen(INFO));
        _cleanup_free_ char *out = NULL;
        LagoonJob j = job(info, TASK_RUNNING);
        size_t size;

        ASSERT_OK(lagoon_report_event(&j, &out, &size));
        assert_output(
                out, size,
                "{\"severity\":\"info\",\"project\":\"example-project\",\"event\":\"task:job-kubernetes:running\","
                "\"meta\":{\"environment\":\"main\",\"environmentId\":1,\"jobName\":\"lagoon-task-abcdefg\","
                "\"jobStatus\":\"running\",\"projectId\":1,\"projectName\":\"example-project\","
                "\"remoteId\":\"" REMOTE_ID "\",\"task\":{\"id\":\"1\",\"name\":\"run task\"},"
                "\"clusterName\":\"cluster-01\"},"
                "\"message\":\"*[example-project]* Task `1` *run task* running\"}");
        out = mfree(out);

        j = job(info, TASK_CANCELLED);
        ASSERT_OK(lagoon_report_event(&j, &out, &size));
        ASSERT(strstr(out, "\"event\":\"task:job-kubernetes:cancelled\""));
        ASSERT(strstr(out, "*run task* cancelled\""));
        ASSERT(!strstr(out, "startTime")); /* events carry no times */
}

TEST(logs) {
        _cleanup_json_ JsonValue *info = parse(INFO, strlen(INFO)), *v = NULL;
        _cleanup_free_ char *out = NULL;
        LagoonJob j = job(info, TASK_COMPLETE);
        size_t size;

        ASSERT_OK(lagoon_report_logs(&j, "hello\nworld\n", 12, &out, &size));
        assert_output(
                out, size,
                "{\"severity\":\"info\",\"project\":\"example-project\","
                "\"event\":\"task-logs:job-kubernetes:lagoon-task-abcdefg\","
                "\"meta\":{\"environment\":\"main\",\"jobName\":\"lagoon-task-abcdefg\",\"jobStatus\":\"complete\","
                "\"remoteId\":\"" REMOTE_ID "\",\"task\":{\"id\":\"1\",\"name\":\"run task\"},"
                "\"clusterName\":\"cluster-01\"},"
                "\"message\":\"========================================"
                "========================================\\n"
                "Logs on task lagoon-task-abcdefg, run by lagoon-taskd on cluster cluster-01\\n"
                "========================================"
                "========================================\\nhello\\nworld\\n\"}");
        out = mfree(out);

        /* an empty (or NULL) log is only the banner */
        ASSERT_OK(lagoon_report_logs(&j, NULL, 0, &out, &size));
        v = parse(out, size);
        ASSERT(strstr(json_get_string(v, "message"), "cluster-01\n====="));
        ASSERT_EQ(strlen(json_get_string(v, "message")), 81U + 76U + 81U);
}

static const char *log_message(const char *log, size_t n, JsonValue **ret) {
        _cleanup_json_ JsonValue *info = parse(INFO, strlen(INFO));
        _cleanup_free_ char *out = NULL;
        LagoonJob j = job(info, TASK_RUNNING);
        const char *m;
        size_t size;

        ASSERT_OK(lagoon_report_logs(&j, log, n, &out, &size));
        *ret = parse(out, size); /* json_parse checks UTF-8 */
        m = json_get_string(*ret, "message");
        ASSERT(m);
        m = strstr(m, "=\n") + 2;
        m = strstr(m, "=\n") + 2;
        return m;
}

TEST(invalid_utf8) {
        static const struct {
                const char *in;
                size_t n;
                const char *out;
        } cases[] = {
                {"plain", 5, "plain"},
                {"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac", 14, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac"},
                {"a\xff"
                 "b",
                 3,
                 "a\xef\xbf\xbd"
                 "b"},
                {"\xc3(", 2, "\xef\xbf\xbd("},                                               /* bad continuation */
                {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong */
                {"\xe0\x80\xaf", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
                {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* surrogate */
                {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
                {"x\xe2\x82", 3, "x\xef\xbf\xbd\xef\xbf\xbd"},                               /* truncated at the end */
                {"\xf0\x9f\x98", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
                {"\xef\xbf\xbd", 3, "\xef\xbf\xbd"}, /* U+FFFD itself is fine */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_json_ JsonValue *v = NULL;
                ASSERT_STREQ(log_message(cases[i].in, cases[i].n, &v), cases[i].out);
        }

        {
                /* NUL and control characters survive, escaped */
                _cleanup_json_ JsonValue *v = NULL;
                const char *m = log_message("a\0b\x01\x7f", 5, &v);
                ASSERT(memcmp(m, "a\0b\x01\x7f", 5) == 0);
        }
        {
                /* every byte value, in random-ish order: always valid JSON */
                char buf[4096];
                unsigned x = 1;
                for (size_t i = 0; i < sizeof(buf); i++) {
                        x = x * 1103515245 + 12345;
                        buf[i] = (char) (x >> 16);
                }
                _cleanup_json_ JsonValue *v = NULL;
                (void) log_message(buf, sizeof(buf), &v);
        }
}

TEST(update_task) {
        _cleanup_json_ JsonValue *info = parse(INFO, strlen(INFO)), *bad = NULL;
        _cleanup_free_ char *out = NULL;
        LagoonJob j = job(info, TASK_RUNNING);
        size_t size;

        ASSERT_OK(lagoon_report_update_task(&j, &out, &size));
        assert_output(out, size,
                      "{\"query\":\"mutation updateTask($id: Int!, $patch: UpdateTaskPatchInput!) { "
                      "updateTask(input: {id: $id, patch: $patch}) { id status started completed } }\","
                      "\"variables\":{\"id\":1,\"patch\":{\"status\":\"RUNNING\",\"started\":\"2006-01-02 15:04:05\","
                      "\"remoteId\":\"" REMOTE_ID "\"}}}");
        out = mfree(out);

        j = job(info, TASK_FAILED);
        j.remote_id = NULL;
        ASSERT_OK(lagoon_report_update_task(&j, &out, &size));
        assert_output(out, size,
                      "{\"query\":\"mutation updateTask($id: Int!, $patch: UpdateTaskPatchInput!) { "
                      "updateTask(input: {id: $id, patch: $patch}) { id status started completed } }\","
                      "\"variables\":{\"id\":1,\"patch\":{\"status\":\"FAILED\",\"started\":\"2006-01-02 15:04:05\","
                      "\"completed\":\"2006-01-02 16:04:05\"}}}");
        out = mfree(out);

        static const struct {
                TaskStatus s;
                const char *name;
        } names[] = {
                {TASK_PENDING, "PENDING"}, {TASK_RUNNING, "RUNNING"},     {TASK_COMPLETE, "COMPLETE"},
                {TASK_FAILED, "FAILED"},   {TASK_CANCELLED, "CANCELLED"},
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_json_ JsonValue *v = NULL;
                j = job(info, names[i].s);
                ASSERT_OK(lagoon_report_update_task(&j, &out, &size));
                v = parse(out, size);
                ASSERT_STREQ(json_get_string(json_get_path(v, "variables", "patch", NULL), "status"), names[i].name);
                ASSERT_EQ(!!json_get_path(v, "variables", "patch", "started", NULL), names[i].s != TASK_PENDING);
                out = mfree(out);
        }

        /* the API's id is Int! */
        static const char *const bad_ids[] = {"\"abc\"", "\"\"",           "\"-1\"",
                                              "\"1.5\"", "\"2147483648\"", "\"99999999999999999999999\"",
                                              "\" 1\"",  "null",           "true"};
        for (size_t i = 0; i < ELEMENTSOF(bad_ids); i++) {
                _cleanup_free_ char *text = strf("{\"task\":{\"id\":%s}}", bad_ids[i]);
                bad = json_free(bad);
                bad = parse(text, strlen(text));
                j = job(bad, TASK_RUNNING);
                ASSERT_EQ(lagoon_report_update_task(&j, &out, &size), -EINVAL);
                ASSERT(!out);
        }
        bad = json_free(bad);
        bad = P("{\"task\":{\"id\":\"2147483647\"}}");
        j = job(bad, TASK_RUNNING);
        ASSERT_OK(lagoon_report_update_task(&j, &out, &size));
        ASSERT(strstr(out, "\"id\":2147483647,"));
}

/* ---- read_log ---- */

static char *tmpdir;

static char *write_file(const char *name, const char *data, size_t n) {
        char *path = strf("%s/%s", tmpdir, name);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        ASSERT(fd >= 0);
        ASSERT(write(fd, data, n) == (ssize_t) n);
        return path;
}

static void read_log(const char *path, size_t cap, char **ret, size_t *ret_size) {
        ASSERT_OK(lagoon_report_read_log(path, cap, ret, ret_size));
        ASSERT_EQ(strlen(*ret), *ret_size); /* test data has no NULs */
}

TEST(read_log_small) {
        _cleanup_free_ char *path = NULL, *out = NULL, *missing = NULL, *empty = NULL;
        size_t size = 1;

        missing = strf("%s/missing.log", tmpdir);
        read_log(missing, 100, &out, &size);
        ASSERT_EQ(size, 0U);
        ASSERT_STREQ(out, "");
        out = mfree(out);

        empty = write_file("empty.log", "", 0);
        read_log(empty, 100, &out, &size);
        ASSERT_EQ(size, 0U);
        out = mfree(out);

        path = write_file("small.log", "one\ntwo\n", 8);
        read_log(path, 1024, &out, &size);
        ASSERT_STREQ(out, "one\ntwo\n");
        out = mfree(out);

        ASSERT_EQ(lagoon_report_read_log(tmpdir, 100, &out, &size), -EINVAL);
}

static char *lines(size_t n_lines) {
        char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);

        ASSERT(f);
        for (size_t i = 0; i < n_lines; i++)
                fprintf(f, "line %05zu of the task log\n", i); /* 27 bytes */
        ASSERT(fclose(f) == 0);
        return s;
}

/* The omission line's count. */
static uint64_t omitted(const char *out) {
        const char *p = strstr(out, "[\xe2\x80\xa6 ");
        ASSERT(p);
        return strtoull(p + 5, NULL, 10);
}

TEST(read_log_cap) {
        _cleanup_free_ char *text = lines(1000), *path = NULL, *out = NULL;
        size_t n = strlen(text), size, cap;
        const char *line;

        ASSERT_EQ(n, 27000U);
        path = write_file("cap.log", text, n);

        /* exactly the cap: whole */
        read_log(path, n, &out, &size);
        ASSERT_EQ(size, n);
        ASSERT_STREQ(out, text);
        out = mfree(out);

        /* one byte over: head and tail at line boundaries, the omission line between */
        cap = n - 1;
        read_log(path, cap, &out, &size);
        ASSERT(size <= cap);
        line = strstr(out, "\n[\xe2\x80\xa6 ");
        ASSERT(line);
        ASSERT(strncmp(out, text, line + 1 - out) == 0); /* a head of whole lines */
        ASSERT(strstr(line, " bytes omitted \xe2\x80\xa6]\n"));
        {
                const char *tail = strstr(line + 1, "]\n") + 2;
                size_t head_len = line + 1 - out, tail_len = size - (tail - out);
                ASSERT(memcmp(tail, text + n - tail_len, tail_len) == 0);
                ASSERT(tail_len == 0 || text[n - tail_len - 1] == '\n'); /* whole lines */
                ASSERT_EQ(omitted(out), n - head_len - tail_len);
                ASSERT(head_len > cap / 2 - 100 - 27 && tail_len > cap / 2 - 100 - 27);
        }
        out = mfree(out);

        /* a tiny cap still says what is missing */
        read_log(path, 10, &out, &size);
        ASSERT_EQ(omitted(out), n);
        out = mfree(out);
        read_log(path, 0, &out, &size);
        ASSERT_EQ(omitted(out), n);
}

TEST(read_log_huge) {
        _cleanup_free_ char *path = NULL, *head = lines(40000), *out = NULL, *tail = NULL;
        const size_t total = 20U * 1024U * 1024U, cap = 1024U * 1024U;
        _cleanup_close_ int fd = -EBADF;
        size_t size, hl = strlen(head);
        const char *line, *t;

        /* 20 MiB: lines, a sparse hole, lines; written in pieces */
        tail = strdup(head);
        ASSERT(tail);
        path = strf("%s/huge.log", tmpdir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT(fd >= 0);
        ASSERT(pwrite(fd, head, hl, 0) == (ssize_t) hl);
        ASSERT(pwrite(fd, "\n", 1, total - hl - 1) == 1);
        ASSERT(pwrite(fd, tail, hl, total - hl) == (ssize_t) hl);
        fd = safe_close(fd);

        read_log(path, cap, &out, &size);
        ASSERT(size <= cap);
        ASSERT(size > cap - 100 - 2 * 27);
        line = strstr(out, "[\xe2\x80\xa6 ");
        ASSERT(line && line > out && line[-1] == '\n');
        ASSERT(strncmp(out, head, line - out) == 0);
        t = strstr(line, "]\n") + 2;
        ASSERT(strncmp(t, "line ", 5) == 0);
        ASSERT(memcmp(t, tail + hl - (size - (t - out)), size - (t - out)) == 0);
        ASSERT_EQ(omitted(out), total - (line - out) - (size - (t - out)));
        out = mfree(out);

        /* no line breaks anywhere near the cuts: cut mid-line, the omission line on its own */
        ASSERT(truncate(path, 0) == 0);
        ASSERT(truncate(path, total) == 0);
        {
                _cleanup_free_ char *zeros = NULL, *expect = NULL;
                size_t half = (cap - 100) / 2;

                expect = strf("\n[\xe2\x80\xa6 %zu bytes omitted \xe2\x80\xa6]\n", total - 2 * half);
                ASSERT_OK(lagoon_report_read_log(path, cap, &zeros, &size));
                ASSERT_EQ(size, 2 * half + strlen(expect));
                ASSERT(memcmp(zeros + half, expect, strlen(expect)) == 0);
                ASSERT(zeros[0] == 0 && zeros[size - 1] == 0);
        }
}

int main(void) {
        char template[] = "/tmp/test-lagoon-report-XXXXXX";

        tmpdir = mkdtemp(template);
        ASSERT(tmpdir);

        RUN(status_fixtures);
        RUN(status_omitted);
        RUN(status_cancel_not_found);
        RUN(status_projectclone);
        RUN(status_names);
        RUN(append_result);
        RUN(log_schedule);
        RUN(queued);
        RUN(event);
        RUN(logs);
        RUN(invalid_utf8);
        RUN(update_task);
        RUN(read_log_small);
        RUN(read_log_cap);
        RUN(read_log_huge);

        ASSERT_OK(rm_rf(tmpdir));
        return 0;
}
