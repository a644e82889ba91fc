/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* api.c, the pure parts: routing of request paths and the POST /v1/tasks body. */

#include <string.h>

#include "api.h"
#include "tests.h"

static void route_ok(const char *path, ApiRoute expected, const char *expected_id) {
        _cleanup_free_ char *id = NULL;
        ApiRoute route = _API_ROUTE_INVALID;
        int r;

        r = api_route(path, &route, &id);
        if (r < 0)
                fprintf(stderr, "route of \"%s\" failed: %s\n", path, strerror(-r));
        ASSERT_OK(r);
        ASSERT_EQ(route, expected);
        if (expected_id)
                ASSERT_STREQ(id, expected_id);
        else
                ASSERT(id == NULL);
}

static void route_bad(const char *path, int expected) {
        char *id = (char *) "untouched";
        ApiRoute route = _API_ROUTE_INVALID;
        int r;

        r = api_route(path, &route, &id);
        if (r != expected)
                fprintf(stderr, "route of \"%s\": got %d, expected %d\n", path ?: "(null)", r, expected);
        ASSERT_EQ(r, expected);
        ASSERT_EQ(route, _API_ROUTE_INVALID); /* untouched on failure */
        ASSERT_STREQ(id, "untouched");
}

TEST(routes) {
        char long_path[512];

        route_ok("/v1/tasks", API_ROUTE_TASKS, NULL);
        route_ok("/v1/health", API_ROUTE_HEALTH, NULL);
        route_ok("/metrics", API_ROUTE_METRICS, NULL);
        route_ok("/v1/tasks/abc", API_ROUTE_TASK, "abc");
        route_ok("/v1/tasks/lagoon-task-1.x_Y", API_ROUTE_TASK, "lagoon-task-1.x_Y");
        route_ok("/v1/tasks/abc/logs", API_ROUTE_TASK_LOGS, "abc");
        route_ok("/v1/tasks/42/cancel", API_ROUTE_TASK_CANCEL, "42");

        /* 128 characters is the longest id */
        strcpy(long_path, "/v1/tasks/");
        memset(long_path + strlen(long_path), 'a', TASK_ID_MAX);
        long_path[strlen("/v1/tasks/") + TASK_ID_MAX] = '\0';
        route_ok(long_path, API_ROUTE_TASK, long_path + strlen("/v1/tasks/"));
        {
                _cleanup_free_ char *id = strdup(long_path + strlen("/v1/tasks/"));

                ASSERT(id);
                strcat(long_path, "/logs");
                route_ok(long_path, API_ROUTE_TASK_LOGS, id);
        }

        /* ret_id may be NULL */
        {
                ApiRoute route;
                ASSERT_OK(api_route("/v1/tasks/x/cancel", &route, NULL));
                ASSERT_EQ(route, API_ROUTE_TASK_CANCEL);
        }
}

TEST(routes_unknown) {
        static const char *const paths[] = {
                "",
                "/",
                "/v1",
                "/v1/",
                "/v2/tasks",
                "/V1/TASKS",
                "v1/tasks",
                "/v1/tasks/",
                "/v1/tasks//",
                "/v1/tasks//logs",
                "/v1/tasks/a/",
                "/v1/tasks/a/b",
                "/v1/tasks/a/b/c",
                "/v1/tasks/a/logs/",
                "/v1/tasks/a/logs/x",
                "/v1/tasks/a/cancel/",
                "/v1/tasks/a/LOGS",
                "//v1/tasks",
                "/v1//tasks",
                "/v1/tasks/../x",
                "/v1/tasks/../../etc/passwd",
                "/v1/health/",
                "/v1/healthz",
                "/v1/tasksx",
                "/v1/tasks?x=1", /* MHD strips the query; a literal '?' is no route */
                "/v1/health/x",
                "/metrics/",
                "/v1/metrics",
                "/metricsx",
        };

        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                route_bad(paths[i], -ENOENT);
        route_bad(NULL, -ENOENT);
}

TEST(routes_bad_id) {
        static const char *const paths[] = {
                "/v1/tasks/..",    "/v1/tasks/.",       "/v1/tasks/.hidden",    "/v1/tasks/-x",       "/v1/tasks/a b",
                "/v1/tasks/a%2Fb", "/v1/tasks/a;b",     "/v1/tasks/a\tb",       "/v1/tasks/\xc3\xbc", "/v1/tasks/$(id)",
                "/v1/tasks/a*",    "/v1/tasks/../logs", "/v1/tasks/.../cancel", "/v1/tasks/a b/logs",
        };
        char long_path[1024];

        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                route_bad(paths[i], -EINVAL);

        /* 129 characters: too long, also with a sub-route, and far too long */
        strcpy(long_path, "/v1/tasks/");
        memset(long_path + strlen(long_path), 'a', TASK_ID_MAX + 1);
        long_path[strlen("/v1/tasks/") + TASK_ID_MAX + 1] = '\0';
        route_bad(long_path, -EINVAL);
        strcat(long_path, "/cancel");
        route_bad(long_path, -EINVAL);
        memset(long_path + strlen("/v1/tasks/"), 'b', sizeof(long_path) - strlen("/v1/tasks/") - 1);
        long_path[sizeof(long_path) - 1] = '\0';
        route_bad(long_path, -EINVAL);
}

static void parse_ok(const char *body, TaskRequest *ret, JsonValue **ret_json) {
        _cleanup_free_ char *error = NULL;
        int r;

        r = api_parse_task_request(body, strlen(body), ret, ret_json, &error);
        if (r < 0)
                fprintf(stderr, "parse of %s failed: %s\n", body, error ?: "(no message)");
        ASSERT_OK(r);
        ASSERT(*ret_json);
        ASSERT(error == NULL);
}

/* Fails with -EINVAL and a message containing `expected`. */
static void parse_bad_n(const char *body, size_t size, const char *expected) {
        _cleanup_free_ char *error = NULL;
        JsonValue *json = NULL;
        TaskRequest req = {.command = "untouched"};
        int r;

        r = api_parse_task_request(body, size, &req, &json, &error);
        if (r != -EINVAL || !error || !strstr(error, expected))
                fprintf(stderr, "parse of \"%.*s\": got %d \"%s\", expected \"%s\"\n", (int) MIN(size, 200), body ?: "",
                        r, error ?: "(null)", expected);
        ASSERT_EQ(r, -EINVAL);
        ASSERT(error);
        ASSERT(strstr(error, expected));
        ASSERT(json == NULL);
        ASSERT_STREQ(req.command, "untouched");
}

static void parse_bad(const char *body, const char *expected) {
        parse_bad_n(body, strlen(body), expected);
}

TEST(parse_good) {
        TaskRequest req;

        {
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok("{\"command\": \"env\"}", &req, &json);
                ASSERT_STREQ(req.command, "env");
                ASSERT(!req.id && !req.name && !req.service && !req.project && !req.environment);
                ASSERT_EQ(req.timeout_usec, 0u);
                /* strings point into the returned tree */
                ASSERT(req.command == json_get_string(json, "command"));
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok("{\"id\":\"t-1\",\"name\":\"lagoon-task-abc\",\"service\":\"cli\",\"project\":\"p\","
                         "\"environment\":\"main\",\"command\":\"drush cr\",\"timeout\":30}",
                         &req, &json);
                ASSERT_STREQ(req.id, "t-1");
                ASSERT_STREQ(req.name, "lagoon-task-abc");
                ASSERT_STREQ(req.service, "cli");
                ASSERT_STREQ(req.project, "p");
                ASSERT_STREQ(req.environment, "main");
                ASSERT_STREQ(req.command, "drush cr");
                ASSERT_EQ(req.timeout_usec, 30 * USEC_PER_SEC);
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok("{\"command\":\"x\",\"timeout\":\"5min\"}", &req, &json);
                ASSERT_EQ(req.timeout_usec, 300 * USEC_PER_SEC);
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok("{\"timeout\":\"1h 30min\",\"command\":\"x\"}", &req, &json);
                ASSERT_EQ(req.timeout_usec, 5400 * USEC_PER_SEC);
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok("{\"command\":\"x\",\"timeout\":\"45\"}", &req, &json);
                ASSERT_EQ(req.timeout_usec, 45 * USEC_PER_SEC);
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok("{\"command\":\"x\",\"timeout\":\"infinity\"}", &req, &json);
                ASSERT_EQ(req.timeout_usec, USEC_INFINITY);
        }
        /* 0 is "no limit", as DefaultTimeoutSec=0 (a TaskRequest's 0 would be the default). */
        for (size_t i = 0; i < 3; i++) {
                static const char *const zero[] = {"{\"command\":\"x\",\"timeout\":0}",
                                                   "{\"command\":\"x\",\"timeout\":\"0\"}",
                                                   "{\"command\":\"x\",\"timeout\":\"0s\"}"};
                _cleanup_json_ JsonValue *json = NULL;

                parse_ok(zero[i], &req, &json);
                ASSERT_EQ(req.timeout_usec, USEC_INFINITY);
        }
        parse_bad("{\"command\":\" \\t\\n \"}", "member 'command' holds only white space");
        parse_bad("{\"command\":\"   \"}", "member 'command' holds only white space");
        {
                _cleanup_json_ JsonValue *json = NULL;

                /* null for optional members = not given */
                parse_ok("{\"command\":\"x\",\"id\":null,\"name\":null,\"service\":null,\"project\":null,"
                         "\"environment\":null,\"timeout\":null}",
                         &req, &json);
                ASSERT(!req.id && !req.name && !req.service && !req.project && !req.environment);
                ASSERT_EQ(req.timeout_usec, 0u);
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                /* whitespace around, unicode escapes, the body need not be NUL-terminated */
                const char body[] = " \n{ \"command\" : \"echo \\u00fc \\\"q\\\"\" } \n!!!";
                _cleanup_free_ char *error = NULL;

                ASSERT_OK(api_parse_task_request(body, strlen(body) - 3, &req, &json, &error));
                ASSERT_STREQ(req.command, "echo \xc3\xbc \"q\"");
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                /* a repeated member: the JSON layer keeps the last one */
                parse_ok("{\"command\":\"a\",\"command\":\"b\"}", &req, &json);
                ASSERT_STREQ(req.command, "b");
        }
        {
                _cleanup_json_ JsonValue *json = NULL;

                /* ret_error may be NULL */
                ASSERT_OK(api_parse_task_request("{\"command\":\"x\"}", 15, &req, &json, NULL));
        }
}

TEST(parse_bad) {
        static const char deep[] =
                "{\"command\":\"x\",\"id\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]"
                "]]]]]]]]]]]]]]]]]]]}";

        parse_bad_n(NULL, 0, "empty");
        parse_bad("", "empty");
        parse_bad_n("{\"command\":\"x\"}", 0, "empty");
        parse_bad("not json", "not valid JSON");
        parse_bad("{", "not valid JSON");
        parse_bad("{\"command\":\"x\"", "not valid JSON");
        parse_bad("{\"command\":\"x\"} trailing", "not valid JSON");
        parse_bad("{\"command\":\"x\"}{}", "not valid JSON");
        parse_bad("{command:\"x\"}", "not valid JSON");
        parse_bad("{'command':'x'}", "not valid JSON");
        parse_bad_n("{\"command\":\"x\0\"}", 15, "not valid JSON");
        parse_bad("\xff\xfe{}", "not valid JSON");
        parse_bad("{\"command\":\"rm -rf /tmp/x\\u0000 && echo\"}", "holds a NUL byte (\\u0000) in a string");
        parse_bad("{\"command\":\"x\",\"name\":\"\\u0000\"}", "holds a NUL byte");
        parse_bad("{\"command\":\"x\",\"id\\u0000x\":\"y\"}", "NUL byte in an object key");
        parse_bad(deep, "nested too deeply");

        parse_bad("[]", "must be a JSON object, got array");
        parse_bad("[{\"command\":\"x\"}]", "must be a JSON object, got array");
        parse_bad("\"command\"", "must be a JSON object, got string");
        parse_bad("42", "must be a JSON object, got number");
        parse_bad("null", "must be a JSON object, got null");
        parse_bad("true", "must be a JSON object, got boolean");

        parse_bad("{}", "member 'command' is required");
        parse_bad("{\"id\":\"x\",\"service\":\"cli\"}", "member 'command' is required");
        parse_bad("{\"command\":null}", "member 'command' must be a string, got null");
        parse_bad("{\"command\":\"\"}", "member 'command' must not be empty");
        parse_bad("{\"command\":1}", "member 'command' must be a string, got number");
        parse_bad("{\"command\":[\"ls\",\"-l\"]}", "member 'command' must be a string, got array");
        parse_bad("{\"command\":{}}", "member 'command' must be a string, got object");
        parse_bad("{\"command\":\"x\",\"id\":5}", "member 'id' must be a string, got number");
        parse_bad("{\"command\":\"x\",\"name\":true}", "member 'name' must be a string, got boolean");
        parse_bad("{\"command\":\"x\",\"service\":[]}", "member 'service' must be a string, got array");
        parse_bad("{\"command\":\"x\",\"project\":{}}", "member 'project' must be a string, got object");
        parse_bad("{\"command\":\"x\",\"environment\":1.5}", "member 'environment' must be a string");
        parse_bad("{\"command\":\"x\",\"service\":\"\"}", "member 'service' must not be empty");

        parse_bad("{\"command\":\"x\",\"bogus\":1}", "unknown member 'bogus'");
        parse_bad("{\"bogus\":1,\"command\":\"x\"}", "unknown member 'bogus'");
        parse_bad("{\"command\":\"x\",\"Command\":\"y\"}", "unknown member 'Command'");
        parse_bad("{\"command\":\"x\",\"\":\"y\"}", "unknown member ''");
        parse_bad("{\"command\":\"x\",\"env\":{\"A\":\"b\"}}", "unknown member 'env'");

        parse_bad("{\"command\":\"x\",\"id\":\"a b\"}", "member 'id' must be 1-128 characters");
        parse_bad("{\"command\":\"x\",\"id\":\"../x\"}", "member 'id' must be 1-128 characters");
        parse_bad("{\"command\":\"x\",\"id\":\".x\"}", "member 'id' must be 1-128 characters");
        parse_bad("{\"command\":\"x\",\"id\":"
                  "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "\"}",
                  "member 'id' must be 1-128 characters");

        parse_bad("{\"command\":\"x\",\"timeout\":-5}", "member 'timeout' must be a non-negative integer");
        parse_bad("{\"command\":\"x\",\"timeout\":1.5}", "member 'timeout' must be a non-negative integer");
        parse_bad("{\"command\":\"x\",\"timeout\":1e3}", "member 'timeout' must be a non-negative integer");
        parse_bad("{\"command\":\"x\",\"timeout\":\"abc\"}", "got \"abc\"");
        parse_bad("{\"command\":\"x\",\"timeout\":\"\"}", "member 'timeout' must be a non-negative integer");
        parse_bad("{\"command\":\"x\",\"timeout\":\"-5s\"}", "member 'timeout' must be a non-negative integer");
        parse_bad("{\"command\":\"x\",\"timeout\":\"5 parsecs\"}", "member 'timeout' must be a non-negative integer");
        parse_bad("{\"command\":\"x\",\"timeout\":true}", "got boolean");
        parse_bad("{\"command\":\"x\",\"timeout\":[30]}", "got array");
        parse_bad("{\"command\":\"x\",\"timeout\":99999999999999999999}", "member 'timeout' is too large");
        parse_bad("{\"command\":\"x\",\"timeout\":9223372036854775807}", "member 'timeout' is too large");
        parse_bad("{\"command\":\"x\",\"timeout\":\"99999999999999999999s\"}", "member 'timeout' is too large");
}

int main(void) {
        RUN(routes);
        RUN(routes_unknown);
        RUN(routes_bad_id);
        RUN(parse_good);
        RUN(parse_bad);
        return 0;
}
