/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tests for Lagoon's incoming task messages (lagoon-message.h): the fixtures Lagoon
 * sends, every message key, each required member missing or of the wrong type with its
 * reason, ids as numbers or strings, 0/1 flags, variables (good and undecodable),
 * secrets, and taskData validation. */

#include <stdarg.h>
#include <string.h>

#include "fs-util.h"
#include "lagoon-message.h"
#include "tests.h"

static char *base64(const char *s) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t n = strlen(s), o = 0;
        const unsigned char *u = (const unsigned char *) s;
        char *out = malloc((n + 2) / 3 * 4 + 1);

        ASSERT(out);
        for (size_t i = 0; i < n; i += 3) {
                unsigned v = u[i] << 16 | (i + 1 < n ? u[i + 1] << 8 : 0) | (i + 2 < n ? u[i + 2] : 0);
                out[o++] = alphabet[v >> 18 & 63];
                out[o++] = alphabet[v >> 12 & 63];
                out[o++] = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
                out[o++] = i + 2 < n ? alphabet[v & 63] : '=';
        }
        out[o] = 0;
        return out;
}

/* The message body of a fixture: the "payload" text, unescaped. */
static char *fixture_body(const char *name) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        const char *srcdir = getenv("TEST_SRCDIR"), *start, *end;
        char *body;
        size_t size, o = 0;

        if (!srcdir) {
                printf("TEST_SRCDIR not set: skipping (run through meson test)\n");
                exit(77);
        }
        path = strf("%s/tests/fixtures/lagoon/%s", srcdir, name);
        ASSERT_OK(read_full_file(path, 1024 * 1024, &text, &size));
        start = strstr(text, "\"payload\":\"");
        ASSERT(start);
        start += strlen("\"payload\":\"");
        end = strstr(start, "\",\n    \"payload_encoding\"");
        ASSERT(end);
        body = malloc(end - start + 1);
        ASSERT(body);
        for (const char *p = start; p < end; p++) {
                if (p[0] == '\\' && p[1] == '"')
                        p++;
                body[o++] = *p;
        }
        body[o] = 0;
        return body;
}

#define TASK_STD "{\"id\":\"7\",\"name\":\"n7\",\"taskName\":\"lagoon-task-x\",\"service\":\"cli\",\"command\":\"env\"}"
#define TASK_ADV "{\"id\":\"8\",\"name\":\"n8\",\"taskName\":\"lagoon-task-y\"}"
#define PROJECT "{\"id\":3,\"name\":\"proj\"}"
#define ENVIRONMENT "{\"id\":4,\"name\":\"Main\",\"project\":\"proj\",\"environmentType\":\"development\"}"
#define ADVANCED "{\"runnerImage\":\"img:1\",\"JSONPayload\":\"eyJ4IjoxfQ==\",\"deployerToken\":1,\"sshKey\":0}"

/* A body from its parts (NULL leaves a part out). */
static char *body(const char *key, const char *task, const char *project, const char *environment, const char *adv) {
        _cleanup_free_ char *k = key ? strf("\"key\":\"%s\",", key) : strdup("");
        _cleanup_free_ char *t = task ? strf("\"task\":%s,", task) : strdup("");
        _cleanup_free_ char *p = project ? strf("\"project\":%s,", project) : strdup("");
        _cleanup_free_ char *e = environment ? strf("\"environment\":%s,", environment) : strdup("");
        _cleanup_free_ char *a = adv ? strf("\"advancedTask\":%s,", adv) : strdup("");

        return strf("{%s%s%s%s%s\"misc\":{\"name\":\"x\"}}", k, t, p, e, a);
}

/* Parses and checks the result code and reason; returns the message (NULL for -EINVAL/-E2BIG). */
static LagoonMessage *parse_expect(LagoonQueue q, const char *b, int expect_r, const char *expect_error) {
        LagoonMessage *m = (LagoonMessage *) 0x1;
        _cleanup_free_ char *error = NULL;
        int r;

        r = lagoon_message_parse(q, b, strlen(b), &m, &error);
        if (r != expect_r) {
                fprintf(stderr, "parse of %s: got %d (%s), expected %d\n", b, r, strna(error), expect_r);
                abort();
        }
        if (r == 0)
                ASSERT(!error);
        else {
                ASSERT(error);
                ASSERT(!strchr(error, '\n'));
                if (expect_error && !streq(error, expect_error) &&
                    !(expect_error[strlen(expect_error) - 1] == '*' &&
                      strncmp(error, expect_error, strlen(expect_error) - 1) == 0)) {
                        fprintf(stderr, "parse of %s: reason \"%s\", expected \"%s\"\n", b, error, expect_error);
                        abort();
                }
        }
        if (r == 0 || r == -EBADMSG || r == -EOPNOTSUPP) {
                ASSERT(m && m != (LagoonMessage *) 0x1);
                ASSERT(json_is_object(m->info));
        } else
                ASSERT(!m);
        return m;
}

static void check_error(LagoonQueue q, const char *b, const char *expect_error) {
        lagoon_message_free(parse_expect(q, b, -EBADMSG, expect_error));
}

static char *info_text(const LagoonMessage *m) {
        char *s = NULL;
        ASSERT_OK(json_format(m->info, false, &s, NULL));
        return s;
}

TEST(fixture_standard) {
        _cleanup_free_ char *b = fixture_body("amqp-in-task-standard.json"), *info = NULL;
        _cleanup_(lagoon_message_freep) LagoonMessage *m = parse_expect(LAGOON_QUEUE_JOBS, b, 0, NULL);

        /* the jobs queue carries standard tasks, whatever the key says */
        ASSERT_EQ(m->kind, LAGOON_MESSAGE_STANDARD);
        ASSERT_STREQ(m->key, "deploytarget:task:advanced");
        ASSERT_STREQ(m->task_id, "1");
        ASSERT_STREQ(m->task_name, "lagoon-task-7m5zypx");
        ASSERT_STREQ(m->task_task_name, "lagoon-task-7m5zypx");
        ASSERT_STREQ(m->service, "nginx");
        ASSERT_STREQ(m->command, "env");
        ASSERT_STREQ(m->project, "nginx-example");
        ASSERT(m->has_project_id && m->project_id == 1);
        ASSERT_STREQ(m->environment, "main");
        ASSERT(m->has_environment_id && m->environment_id == 1);
        ASSERT_STREQ(m->environment_type, "production");
        ASSERT_STREQ(m->namespace, "nginx-example-main");
        ASSERT(!m->image && !m->json_payload && !m->deployer_token && !m->ssh_key);

        ASSERT_EQ(m->n_project_variables, 1U);
        ASSERT_STREQ(m->project_variables[0].name, "LAGOON_SYSTEM_ROUTER_PATTERN");
        ASSERT_STREQ(m->project_variables[0].value, "${environment}.${project}.example.com");
        ASSERT_STREQ(m->project_variables[0].scope, "internal_system");
        ASSERT_EQ(m->n_environment_variables, 0U);
        /* Decoded JSON, as remote-controller passes it; an empty list ("W10=") not at all. */
        ASSERT(startswith(m->project_variables_raw, "[{\"name\":\"LAGOON_SYSTEM_ROUTER_PATTERN\""));
        ASSERT(!m->environment_variables_raw);

        info = info_text(m);
        ASSERT_STREQ(info,
                     "{\"key\":\"deploytarget:task:advanced\",\"task\":{\"id\":\"1\",\"name\":\"lagoon-task-7m5zypx\","
                     "\"taskName\":\"lagoon-task-7m5zypx\",\"service\":\"nginx\",\"command\":\"env\"},"
                     "\"project\":{\"id\":1,\"name\":\"nginx-example\"},"
                     "\"environment\":{\"id\":1,\"name\":\"main\",\"environmentType\":\"production\"}}");
        ASSERT_STREQ(lagoon_message_kind_to_string(m->kind), "standard");
}

TEST(fixture_advanced) {
        _cleanup_free_ char *b = fixture_body("amqp-in-task-advanced.json"), *info = NULL;
        _cleanup_(lagoon_message_freep) LagoonMessage *m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);

        ASSERT_EQ(m->kind, LAGOON_MESSAGE_ADVANCED);
        ASSERT_STREQ(m->task_id, "1");
        ASSERT_STREQ(m->task_task_name, "lagoon-task-1xpyz5m");
        ASSERT(!m->service && !m->command);
        ASSERT_STREQ(m->image, "example.com/test-task-image:v0.0.1");
        ASSERT(!m->json_payload && !m->deployer_token && !m->ssh_key);
        ASSERT_STREQ(m->namespace, "nginx-example-main");
        ASSERT_EQ(m->n_project_variables, 1U);
        info = info_text(m);
        ASSERT(!strstr(info, "W3sib")); /* never the variables */
        ASSERT(!strstr(info, "runnerImage"));
        ASSERT_STREQ(lagoon_message_kind_to_string(m->kind), "advanced");

        /* the same message on the jobs queue is a standard task, which needs a service */
        check_error(LAGOON_QUEUE_JOBS, b, "task.service is missing");
}

TEST(fixture_standard_on_misc) {
        _cleanup_free_ char *b = fixture_body("amqp-in-task-standard.json");
        /* its key says advanced: then it lacks the runner image */
        check_error(LAGOON_QUEUE_MISC, b, "advancedTask is missing");
}

TEST(keys) {
        static const struct {
                const char *key;
                LagoonMessageKind kind;
        } keys[] = {
                {"deploytarget:task:advanced", LAGOON_MESSAGE_ADVANCED},
                {"kubernetes:task:advanced", LAGOON_MESSAGE_ADVANCED},
                {"deploytarget:task:activestandby", LAGOON_MESSAGE_ACTIVESTANDBY},
                {"deploytarget:task:cancel", LAGOON_MESSAGE_CANCEL},
                {"kubernetes:task:cancel", LAGOON_MESSAGE_CANCEL},
                {"deploytarget:task:projectclone", LAGOON_MESSAGE_PROJECTCLONE},
                {"deploytarget:task:projectclonerestore", LAGOON_MESSAGE_PROJECTCLONE},
        };

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                _cleanup_free_ char *b = body(keys[i].key, TASK_ADV, PROJECT, ENVIRONMENT, ADVANCED);
                _cleanup_(lagoon_message_freep) LagoonMessage *m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
                _cleanup_(lagoon_message_freep) LagoonMessage *j =
                        parse_expect(LAGOON_QUEUE_JOBS, b, -EBADMSG, "task.service is missing");

                ASSERT_EQ(m->kind, keys[i].kind);
                ASSERT_STREQ(m->key, keys[i].key);
                ASSERT_STREQ(m->namespace, "proj-main");
                if (keys[i].kind == LAGOON_MESSAGE_CANCEL) {
                        ASSERT(!m->image && !m->json_payload);
                        ASSERT(!m->project_variables);
                } else {
                        ASSERT_STREQ(m->image, "img:1");
                        ASSERT_STREQ(m->json_payload, "eyJ4IjoxfQ==");
                        ASSERT(m->deployer_token);
                        /* activestandby and projectclone force them on */
                        ASSERT_EQ(m->ssh_key, keys[i].kind != LAGOON_MESSAGE_ADVANCED);
                        ASSERT_EQ(m->volume_mounts, keys[i].kind == LAGOON_MESSAGE_PROJECTCLONE);
                        ASSERT_EQ(m->clone_id, 0); /* {"x":1} has no cloneId */
                }
                ASSERT_EQ(j->kind, LAGOON_MESSAGE_STANDARD);
        }
        ASSERT_STREQ(lagoon_message_kind_to_string(LAGOON_MESSAGE_ACTIVESTANDBY), "activestandby");
        ASSERT_STREQ(lagoon_message_kind_to_string(LAGOON_MESSAGE_CANCEL), "cancel");
        ASSERT(!lagoon_message_kind_to_string(_LAGOON_MESSAGE_KIND_MAX));

        {
                /* activestandby without any flags still gets them */
                _cleanup_free_ char *b = body("deploytarget:task:activestandby", TASK_ADV, PROJECT, ENVIRONMENT,
                                              "{\"runnerImage\":\"i\"}");
                _cleanup_(lagoon_message_freep) LagoonMessage *m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
                ASSERT(m->deployer_token && m->ssh_key);
                ASSERT(!m->activestandby_source && !m->activestandby_destination);
        }
        {
                /* the switch's namespaces, for its RoleBinding; anything else leaves them out */
                static const struct {
                        const char *payload;
                        const char *src, *dst;
                } cases[] = {
                        {"{\"sourceNamespace\":\"p-standby\",\"destinationNamespace\":\"p-main\"}", "p-standby",
                         "p-main"},
                        {"{\"sourceNamespace\":\"p-standby\"}", NULL, NULL},
                        {"{\"sourceNamespace\":\"a/b\",\"destinationNamespace\":\"p-main\"}", NULL, NULL},
                        {"{\"sourceNamespace\":1,\"destinationNamespace\":\"p-main\"}", NULL, NULL},
                        {"[1]", NULL, NULL},
                        {"not json", NULL, NULL},
                };

                for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                        _cleanup_free_ char *p = base64(cases[i].payload), *a = NULL, *b = NULL;
                        _cleanup_(lagoon_message_freep) LagoonMessage *m = NULL;

                        a = strf("{\"runnerImage\":\"i\",\"JSONPayload\":\"%s\"}", p);
                        b = body("deploytarget:task:activestandby", TASK_ADV, PROJECT, ENVIRONMENT, a);
                        m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
                        ASSERT(streq_ptr(m->activestandby_source, cases[i].src));
                        ASSERT(streq_ptr(m->activestandby_destination, cases[i].dst));
                }
        }
}

TEST(unknown_keys) {
        _cleanup_free_ char *b = body("deploytarget:foo", TASK_ADV, PROJECT, ENVIRONMENT, NULL);
        _cleanup_free_ char *nokey = body(NULL, TASK_ADV, PROJECT, ENVIRONMENT, ADVANCED);
        _cleanup_free_ char *bare = body("deploytarget:task:remove", "{\"id\":\"9\"}", NULL, NULL, NULL);
        _cleanup_free_ char *weird = body("a\\nb\\\"c", TASK_ADV, NULL, NULL, NULL);
        _cleanup_free_ char *info = NULL;
        LagoonMessage *m;

        m = parse_expect(LAGOON_QUEUE_MISC, b, -EOPNOTSUPP, "unknown message key \"deploytarget:foo\"");
        /* what could be read is there to report the failure */
        ASSERT_STREQ(m->task_id, "8");
        ASSERT_STREQ(m->project, "proj");
        ASSERT_STREQ(m->namespace, "proj-main");
        info = info_text(m);
        ASSERT(strstr(info, "\"key\":\"deploytarget:foo\""));
        lagoon_message_free(m);

        lagoon_message_free(
                parse_expect(LAGOON_QUEUE_MISC, nokey, -EOPNOTSUPP, "message on the misc queue has no key"));
        m = parse_expect(LAGOON_QUEUE_MISC, bare, -EOPNOTSUPP, "unknown message key \"deploytarget:task:remove\"");
        ASSERT_STREQ(m->task_id, "9");
        ASSERT(!m->project && !m->namespace);
        lagoon_message_free(m);
        /* the reason stays one printable line */
        lagoon_message_free(parse_expect(LAGOON_QUEUE_MISC, weird, -EOPNOTSUPP, "unknown message key \"a?b?c\""));
}

TEST(cancel) {
        _cleanup_free_ char *b = body("deploytarget:task:cancel", "{\"id\":\"12\"}", NULL, NULL, NULL);
        _cleanup_free_ char *n =
                body("kubernetes:task:cancel", "{\"id\":13,\"taskName\":\"t\"}", "{\"name\":\"p\"}", NULL, NULL);
        _cleanup_free_ char *none = body("deploytarget:task:cancel", "{\"name\":\"x\"}", PROJECT, ENVIRONMENT, NULL);
        _cleanup_free_ char *info = NULL;
        LagoonMessage *m;

        m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
        ASSERT_EQ(m->kind, LAGOON_MESSAGE_CANCEL);
        ASSERT_STREQ(m->task_id, "12");
        ASSERT(!m->project && !m->environment && !m->namespace && !m->service);
        info = info_text(m);
        ASSERT_STREQ(info, "{\"key\":\"deploytarget:task:cancel\",\"task\":{\"id\":\"12\"},\"project\":{},"
                           "\"environment\":{}}");
        lagoon_message_free(m);

        m = parse_expect(LAGOON_QUEUE_MISC, n, 0, NULL);
        ASSERT_STREQ(m->task_id, "13");
        ASSERT_STREQ(m->project, "p");
        ASSERT(!m->namespace);
        lagoon_message_free(m);

        check_error(LAGOON_QUEUE_MISC, none, "task.id is missing");
}

TEST(required_members) {
        static const struct {
                LagoonQueue queue;
                const char *key, *task, *project, *environment, *advanced, *error;
        } cases[] = {
                {LAGOON_QUEUE_JOBS, NULL, NULL, PROJECT, ENVIRONMENT, NULL, "task is missing"},
                {LAGOON_QUEUE_JOBS, NULL, "null", PROJECT, ENVIRONMENT, NULL, "task is missing"},
                {LAGOON_QUEUE_JOBS, NULL, "\"7\"", PROJECT, ENVIRONMENT, NULL, "task is not an object"},
                {LAGOON_QUEUE_JOBS, NULL, "[]", PROJECT, ENVIRONMENT, NULL, "task is not an object"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT, NULL,
                 "task.id is missing"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":true,\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT,
                 NULL, "task.id is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":[1],\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT,
                 NULL, "task.id is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"\",\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT,
                 NULL, "task.id is empty"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":-1,\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT, NULL,
                 "task.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":1.5,\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT,
                 NULL, "task.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"a/../b\",\"service\":\"s\",\"command\":\"c\"}", PROJECT,
                 ENVIRONMENT, NULL, "task.id \"a/../b\" is not a valid task id"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"command\":\"c\"}", PROJECT, ENVIRONMENT, NULL,
                 "task.service is missing"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"service\":\"\",\"command\":\"c\"}", PROJECT, ENVIRONMENT,
                 NULL, "task.service is empty"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"service\":3,\"command\":\"c\"}", PROJECT, ENVIRONMENT, NULL,
                 "task.service is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"service\":\"s\"}", PROJECT, ENVIRONMENT, NULL,
                 "task.command is missing"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"service\":\"s\",\"command\":{}}", PROJECT, ENVIRONMENT, NULL,
                 "task.command is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"name\":5,\"service\":\"s\",\"command\":\"c\"}", PROJECT,
                 ENVIRONMENT, NULL, "task.name is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, "{\"id\":\"7\",\"taskName\":false,\"service\":\"s\",\"command\":\"c\"}",
                 PROJECT, ENVIRONMENT, NULL, "task.taskName is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, NULL, ENVIRONMENT, NULL, "project is missing"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "1", ENVIRONMENT, NULL, "project is not an object"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":1}", ENVIRONMENT, NULL, "project.name is missing"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"name\":\"\"}", ENVIRONMENT, NULL, "project.name is empty"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"name\":[]}", ENVIRONMENT, NULL, "project.name is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":\"x\",\"name\":\"p\"}", ENVIRONMENT, NULL,
                 "project.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":-3,\"name\":\"p\"}", ENVIRONMENT, NULL,
                 "project.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":2.5,\"name\":\"p\"}", ENVIRONMENT, NULL,
                 "project.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":true,\"name\":\"p\"}", ENVIRONMENT, NULL,
                 "project.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":\"-3\",\"name\":\"p\"}", ENVIRONMENT, NULL,
                 "project.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, "{\"id\":\"99999999999999999999\",\"name\":\"p\"}", ENVIRONMENT,
                 NULL, "project.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, NULL, NULL, "environment is missing"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "\"main\"", NULL, "environment is not an object"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"id\":4}", NULL, "environment.name is missing"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"name\":1}", NULL, "environment.name is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"id\":{},\"name\":\"e\"}", NULL,
                 "environment.id is not a non-negative integer"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"name\":\"e\",\"environmentType\":1}", NULL,
                 "environment.environmentType is not a string"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"name\":\"e\",\"project\":[]}", NULL,
                 "environment.project is not a string or a number"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT, NULL,
                 "advancedTask is missing"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT, "[]",
                 "advancedTask is not an object"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT, "{}",
                 "advancedTask.RunnerImage is missing"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                 "{\"runnerImage\":\"\"}", "advancedTask.runnerImage is empty"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT, "{\"runnerImage\":7}",
                 "advancedTask.runnerImage is not a string"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                 "{\"runnerImage\":\"i\",\"JSONPayload\":{}}", "advancedTask.JSONPayload is not a string"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                 "{\"runnerImage\":\"i\",\"deployerToken\":2}", "advancedTask.deployerToken is not a boolean or 0/1"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                 "{\"runnerImage\":\"i\",\"sshKey\":\"true\"}", "advancedTask.sshKey is not a boolean or 0/1"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                 "{\"runnerImage\":\"i\",\"sshKey\":1.0}", "advancedTask.sshKey is not a boolean or 0/1"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, NULL, ENVIRONMENT, ADVANCED,
                 "project is missing"},
                {LAGOON_QUEUE_MISC, "deploytarget:task:advanced", TASK_ADV, PROJECT, "{}", ADVANCED,
                 "environment.name is missing"},
                {LAGOON_QUEUE_JOBS, "[]", TASK_STD, PROJECT, ENVIRONMENT, NULL, "key is not a string"},
                /* it would become a path in Kubernetes API requests */
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"name\":\"e\",\"openshiftProjectName\":\"../x\"}", NULL,
                 "environment.openshiftProjectName \"../x\" is not a namespace name"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"name\":\"e\",\"openshiftProjectName\":\"A-b\"}", NULL,
                 "environment.openshiftProjectName \"A-b\" is not a namespace name"},
                {LAGOON_QUEUE_JOBS, NULL, TASK_STD, PROJECT, "{\"name\":\"e\",\"openshiftProjectName\":7}", NULL,
                 "environment.openshiftProjectName is not a string"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *b = NULL;
                _cleanup_(lagoon_message_freep) LagoonMessage *m = NULL;

                if (cases[i].key && cases[i].key[0] == '[') {
                        b = strf("{\"key\":[],\"task\":%s,\"project\":%s,\"environment\":%s}", cases[i].task,
                                 cases[i].project, cases[i].environment);
                } else
                        b = body(cases[i].key, cases[i].task, cases[i].project, cases[i].environment,
                                 cases[i].advanced);
                m = parse_expect(cases[i].queue, b, -EBADMSG, cases[i].error);
                /* what is known stays known */
                if (cases[i].task && streq(cases[i].task, TASK_STD))
                        ASSERT_STREQ(m->task_id, "7");
        }

        {
                /* an invalid id is kept, to report against */
                _cleanup_free_ char *b =
                        body(NULL, "{\"id\":\"a b\",\"service\":\"s\",\"command\":\"c\"}", PROJECT, ENVIRONMENT, NULL);
                _cleanup_(lagoon_message_freep) LagoonMessage *m =
                        parse_expect(LAGOON_QUEUE_JOBS, b, -EBADMSG, "task.id \"a b\" is not a valid task id");
                ASSERT_STREQ(m->task_id, "a b");
        }
}

TEST(namespace) {
        _cleanup_free_ char *b1 = NULL, *b2 = NULL, *b3 = NULL;
        _cleanup_(lagoon_message_freep) LagoonMessage *m1 = NULL, *m2 = NULL, *m3 = NULL;

        /* openshiftProjectName wins, even against a prefix: it is the namespace Lagoon knows */
        b1 = body("deploytarget:task:advanced", "{\"id\":\"3\"}", "{\"name\":\"p\"}",
                  "{\"name\":\"e\",\"openshiftProjectName\":\"pfx-p-e\"}", "{\"RunnerImage\":\"i\"}");
        m1 = parse_expect(LAGOON_QUEUE_MISC, b1, 0, NULL);
        ASSERT_STREQ(m1->namespace, "pfx-p-e");
        ASSERT_OK(lagoon_message_set_namespace_prefix(m1, "other"));
        ASSERT_STREQ(m1->namespace, "pfx-p-e");

        /* otherwise Lagoon's rule, long names shortened as Lagoon does, and the prefix */
        b2 = body(NULL, TASK_STD, "{\"name\":\"drupal-example\"}",
                  "{\"name\":\"feature-a-very-long-branch-name-that-goes-on-and-on-and-on-forever\"}", NULL);
        m2 = parse_expect(LAGOON_QUEUE_JOBS, b2, 0, NULL);
        ASSERT_STREQ(m2->namespace, "drupal-example-feature-a-very-long-branch-name-that-go-9885");
        ASSERT_OK(lagoon_message_set_namespace_prefix(m2, "abcdefgh"));
        ASSERT_STREQ(m2->namespace, "abcdefgh-drupal-example-feature-a-very-long-branch-name-th-080a");

        /* project.namespacePattern, as remote-controller reads it */
        b3 = body(NULL, TASK_STD, "{\"name\":\"p\",\"namespacePattern\":\"${environment}-${project}\"}",
                  "{\"name\":\"Main\"}", NULL);
        m3 = parse_expect(LAGOON_QUEUE_JOBS, b3, 0, NULL);
        ASSERT_STREQ(m3->namespace, "main-p");
}

TEST(numbers_and_flags) {
        char *b = NULL;
        LagoonMessage *m;

        /* ids as numbers and numeric strings; task.id a number; environment.project a number */
        b = body(NULL, "{\"id\":42,\"service\":\"s\",\"command\":\"c\"}", "{\"id\":\"17\",\"name\":\"P\"}",
                 "{\"id\":9007199254740993,\"name\":\"E\",\"project\":17}", NULL);
        m = parse_expect(LAGOON_QUEUE_JOBS, b, 0, NULL);
        ASSERT_STREQ(m->task_id, "42");
        ASSERT(m->has_project_id && m->project_id == 17);
        ASSERT(m->has_environment_id && m->environment_id == 9007199254740993LL);
        ASSERT_STREQ(m->namespace, "p-e");
        ASSERT(!m->task_name && !m->task_task_name && !m->environment_type);
        {
                _cleanup_free_ char *info = info_text(m);
                ASSERT_STREQ(info, "{\"task\":{\"id\":\"42\",\"service\":\"s\",\"command\":\"c\"},"
                                   "\"project\":{\"id\":17,\"name\":\"P\"},"
                                   "\"environment\":{\"id\":9007199254740993,\"name\":\"E\"}}");
        }
        lagoon_message_free(m);
        free(b);

        /* no ids at all: omitted from info; null members count as absent */
        b = body(NULL, "{\"id\":\"5\",\"name\":null,\"service\":\"s\",\"command\":\"c\"}",
                 "{\"id\":null,\"name\":\"p\"}", "{\"name\":\"e\",\"project\":null}", NULL);
        m = parse_expect(LAGOON_QUEUE_JOBS, b, 0, NULL);
        ASSERT(!m->has_project_id && !m->has_environment_id);
        ASSERT(!m->task_name);
        {
                _cleanup_free_ char *info = info_text(m);
                ASSERT_STREQ(info, "{\"task\":{\"id\":\"5\",\"service\":\"s\",\"command\":\"c\"},"
                                   "\"project\":{\"name\":\"p\"},\"environment\":{\"name\":\"e\"}}");
        }
        lagoon_message_free(m);
        free(b);

        /* flags: booleans and 0/1; RunnerImage; runnerImage wins over RunnerImage */
        static const struct {
                const char *adv;
                bool token, ssh;
                const char *image;
        } flags[] = {
                {"{\"RunnerImage\":\"R\",\"deployerToken\":true,\"sshKey\":false}", true, false, "R"},
                {"{\"RunnerImage\":\"R\",\"runnerImage\":\"r\",\"deployerToken\":0,\"sshKey\":1}", false, true, "r"},
                {"{\"runnerImage\":\"r\",\"deployerToken\":null}", false, false, "r"},
                {"{\"runnerImage\":\"r\",\"deployerToken\":1,\"sshKey\":true,\"volumeMounts\":1}", true, true, "r"},
        };
        for (size_t i = 0; i < ELEMENTSOF(flags); i++) {
                b = body("kubernetes:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT, flags[i].adv);
                m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
                ASSERT_EQ(m->deployer_token, flags[i].token);
                ASSERT_EQ(m->ssh_key, flags[i].ssh);
                ASSERT_STREQ(m->image, flags[i].image);
                lagoon_message_free(m);
                free(b);
        }
}

TEST(not_json) {
        static const char *const bodies[] = {"",      "{", "[]", "\"x\"", "null", "{\"task\":1}}", "{\"a\":\"\xff\"}",
                                             "{} {}", "1"};
        char big_prefix[] = "{\"x\":\"";
        _cleanup_free_ char *big = NULL, *error = NULL;
        LagoonMessage *m = (LagoonMessage *) 0x1;
        size_t n = 16U * 1024U * 1024U + 1;

        for (size_t i = 0; i < ELEMENTSOF(bodies); i++) {
                error = mfree(error);
                ASSERT_EQ(lagoon_message_parse(LAGOON_QUEUE_JOBS, bodies[i], strlen(bodies[i]), &m, &error), -EINVAL);
                ASSERT(!m);
                ASSERT(startswith(error, "message is not"));
        }
        /* A NUL would cut a command or a name short. */
        {
                static const char nul[] = "{\"key\":\"kubernetes:restic:backup:restore\",\"x\":\"a\\u0000b\"}";
                error = mfree(error);
                ASSERT_EQ(lagoon_message_parse(LAGOON_QUEUE_JOBS, nul, strlen(nul), &m, &error), -EINVAL);
                ASSERT(!m);
                ASSERT_STREQ(error, "message holds a NUL byte (\\u0000) in a string");
        }
        /* depth */
        {
                _cleanup_free_ char *deep = malloc(20001);
                ASSERT(deep);
                memset(deep, '[', 10000);
                memset(deep + 10000, ']', 10000);
                deep[20000] = 0;
                ASSERT_EQ(lagoon_message_parse(LAGOON_QUEUE_JOBS, deep, 20000, &m, NULL), -EINVAL);
        }
        big = malloc(n);
        ASSERT(big);
        memset(big, ' ', n);
        memcpy(big, big_prefix, strlen(big_prefix));
        error = mfree(error);
        ASSERT_EQ(lagoon_message_parse(LAGOON_QUEUE_JOBS, big, n, &m, &error), -E2BIG);
        ASSERT(!m);
        ASSERT(startswith(error, "message is too big"));
}

static char *variables_body(const char *project_b64, const char *environment_b64) {
        _cleanup_free_ char *p = project_b64 ? strf("\"project\":\"%s\"", project_b64) : strdup("");
        _cleanup_free_ char *e = environment_b64
                                         ? strf("%s\"environment\":\"%s\"", project_b64 ? "," : "", environment_b64)
                                         : strdup("");
        _cleanup_free_ char *proj = strf("{\"id\":1,\"name\":\"p\",\"variables\":{%s%s}}", p, e);
        return body(NULL, TASK_STD, proj, ENVIRONMENT, NULL);
}

TEST(variables) {
        static const char *const bad[][2] = {
                {"!!!!", "project.variables.project is not base64"},
                {"W10", "project.variables.project is not base64"},                /* padding required */
                {"W1=0", "project.variables.project is not base64"},               /* data after padding */
                {"W10=W10=", "project.variables.project is not base64"},           /* a second quantum after padding */
                {"W===", "project.variables.project is not base64"},               /* too much padding */
                {"W1 0=", "project.variables.project is not base64"},              /* spaces are not skipped */
                {"bm90anNvbg==", "project.variables.project is not JSON*"},        /* "notjson" */
                {"eyJhIjoxfQ==", "project.variables.project is not a JSON array"}, /* {"a":1} */
                {"WzFd", "project.variables.project[0] is not a {name, value, scope} object"}, /* [1] */
                /* [{"name":"A","value":"x\u0000y","scope":"runtime"}] */
                {"W3sibmFtZSI6IkEiLCJ2YWx1ZSI6InhcdTAwMDB5Iiwic2NvcGUiOiJydW50aW1lIn1d",
                 "project.variables.project holds a NUL byte (\\u0000) in a string"},
        };
        char *b = NULL;
        LagoonMessage *m;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                b = variables_body(bad[i][0], "W10=");
                check_error(LAGOON_QUEUE_JOBS, b, bad[i][1]);
                free(b);
                /* the same, naming the environment's variables */
                b = variables_body("W10=", bad[i][0]);
                m = parse_expect(LAGOON_QUEUE_JOBS, b, -EBADMSG, "project.variables.environment*");
                lagoon_message_free(m);
                free(b);
        }

        /* element shapes */
        static const char *const bad_items[] = {
                "[{\"value\":\"v\"}]",
                "[{\"name\":\"\",\"value\":\"v\"}]",
                "[{\"name\":1,\"value\":\"v\"}]",
                "[{\"name\":\"A\",\"value\":5}]",
                "[{\"name\":\"A\",\"value\":\"v\",\"scope\":[]}]",
                "[{\"name\":\"A\",\"value\":\"v\"},\"x\"]",
                "[[[[[[1]]]]]]",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad_items); i++) {
                _cleanup_free_ char *enc = base64(bad_items[i]);
                b = variables_body(enc, NULL);
                m = parse_expect(LAGOON_QUEUE_JOBS, b, -EBADMSG, "project.variables.project*");
                lagoon_message_free(m);
                free(b);
        }

        /* wrong types */
        b = body(NULL, TASK_STD, "{\"name\":\"p\",\"variables\":{\"project\":5}}", ENVIRONMENT, NULL);
        check_error(LAGOON_QUEUE_JOBS, b, "project.variables.project is not a string");
        free(b);
        b = body(NULL, TASK_STD, "{\"name\":\"p\",\"variables\":\"W10=\"}", ENVIRONMENT, NULL);
        check_error(LAGOON_QUEUE_JOBS, b, "project.variables is not an object");
        free(b);

        /* good ones: every padding length, line breaks (Go's decoder skips them), null values */
        static const char *const good[] = {
                "[{\"name\":\"A\",\"value\":\"1\"}]",
                "[{\"name\":\"AB\",\"value\":\"1\"}]",
                "[{\"name\":\"ABC\",\"value\":\"1\"}]",
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *enc = base64(good[i]);
                b = variables_body(enc, "W10=");
                m = parse_expect(LAGOON_QUEUE_JOBS, b, 0, NULL);
                ASSERT_EQ(m->n_project_variables, 1U);
                ASSERT_EQ(strlen(m->project_variables[0].name), i + 1);
                ASSERT_STREQ(m->project_variables[0].value, "1");
                ASSERT(!m->project_variables[0].scope);
                ASSERT_STREQ(m->project_variables_raw, good[i]);
                lagoon_message_free(m);
                free(b);
        }
        {
                _cleanup_free_ char *enc = base64("[{\"name\":\"N\",\"value\":null,\"scope\":null,\"x\":1}]");
                _cleanup_free_ char *wrapped = strf("%.8s\\n%s\\r\\n", enc, enc + 8);
                b = variables_body(wrapped, NULL);
                m = parse_expect(LAGOON_QUEUE_JOBS, b, 0, NULL);
                ASSERT_EQ(m->n_project_variables, 1U);
                ASSERT_STREQ(m->project_variables[0].value, "");
                ASSERT(!m->environment_variables && !m->environment_variables_raw);
                lagoon_message_free(m);
                free(b);
        }
        /* absent variables: NULL arrays */
        b = body(NULL, TASK_STD, PROJECT, ENVIRONMENT, NULL);
        m = parse_expect(LAGOON_QUEUE_JOBS, b, 0, NULL);
        ASSERT(!m->project_variables && !m->environment_variables);
        ASSERT(!m->project_variables_raw && !m->environment_variables_raw);
        lagoon_message_free(m);
        free(b);

        /* a cancel ignores variables, even broken ones */
        b = body("deploytarget:task:cancel", TASK_ADV, "{\"name\":\"p\",\"variables\":{\"project\":\"!!\"}}", NULL,
                 NULL);
        m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
        ASSERT(!m->project_variables_raw);
        lagoon_message_free(m);
        free(b);
}

TEST(secrets) {
        static const char *const project_vars =
                "[{\"name\":\"DB_PASSWORD\",\"value\":\"s3cret\",\"scope\":\"global\"},"
                "{\"name\":\"api_token\",\"value\":\"tok-123\",\"scope\":\"runtime\"},"
                "{\"name\":\"REGISTRY_X\",\"value\":\"regpass\",\"scope\":\"container_registry\"},"
                "{\"name\":\"LAGOON_SYSTEM_PASSWORD\",\"value\":\"internal-pw\",\"scope\":\"internal_system\"},"
                "{\"name\":\"PLAIN\",\"value\":\"visible\",\"scope\":\"build\"},"
                "{\"name\":\"EMPTY_TOKEN\",\"value\":\"\",\"scope\":\"global\"},"
                "{\"name\":\"OTHER_PASSWORD\",\"value\":\"s3cret\"}]";
        static const char *const env_vars = "[{\"name\":\"ENV_TOKEN\",\"value\":\"envtok\",\"scope\":\"runtime\"}]";
        char *patterns[] = {(char *) "*PASSWORD*", (char *) "*TOKEN*", NULL};
        _cleanup_free_ char *p = base64(project_vars), *e = base64(env_vars), *b = NULL, *proj = NULL;
        _cleanup_strv_free_ char **secrets = NULL, **none = NULL;
        _cleanup_(lagoon_message_freep) LagoonMessage *m = NULL;
        LagoonVariable v = {.name = (char *) "X_PASSWORD", .value = (char *) "v"};

        proj = strf("{\"id\":1,\"name\":\"p\",\"variables\":{\"project\":\"%s\",\"environment\":\"%s\"}}", p, e);
        b = body("deploytarget:task:advanced", TASK_ADV, proj, ENVIRONMENT, ADVANCED);
        m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
        ASSERT_EQ(m->n_project_variables, 7U);
        ASSERT_EQ(m->n_environment_variables, 1U);

        ASSERT_OK(lagoon_message_secrets(m, patterns, &secrets));
        ASSERT_EQ(strv_length(secrets), 5U);
        ASSERT(strv_contains(secrets, "s3cret"));  /* once, though two variables hold it */
        ASSERT(strv_contains(secrets, "tok-123")); /* case-insensitive match */
        ASSERT(strv_contains(secrets, "regpass")); /* by scope */
        ASSERT(strv_contains(secrets, "envtok"));
        ASSERT(strv_contains(secrets, "eyJ4IjoxfQ==")); /* the JSONPayload */
        ASSERT(!strv_contains(secrets, "internal-pw"));
        ASSERT(!strv_contains(secrets, "visible"));
        ASSERT(!strv_contains(secrets, ""));

        /* no patterns: only the registry scope and the payload */
        ASSERT_OK(lagoon_message_secrets(m, NULL, &none));
        ASSERT_EQ(strv_length(none), 2U);

        ASSERT(lagoon_variable_is_secret(&v, patterns));
        v.scope = (char *) "internal_system";
        ASSERT(!lagoon_variable_is_secret(&v, patterns));
        v.scope = (char *) "container_registry";
        v.name = (char *) "USER";
        ASSERT(lagoon_variable_is_secret(&v, NULL));
        v.scope = NULL;
        ASSERT(!lagoon_variable_is_secret(&v, patterns));
}

static void check_task_data(const char *data, size_t size, int expect_r, const char *expect) {
        _cleanup_free_ char *out = NULL, *error = NULL;
        int r = lagoon_task_data_validate(data, size, &out, &error);

        if (r != expect_r) {
                fprintf(stderr, "taskData \"%.40s\": got %d (%s), expected %d\n", data, r, strna(error), expect_r);
                abort();
        }
        if (r == 0) {
                ASSERT(!error);
                ASSERT_STREQ(out, expect);
        } else {
                ASSERT(!out);
                ASSERT(error);
                if (expect[strlen(expect) - 1] == '*')
                        ASSERT(strncmp(error, expect, strlen(expect) - 1) == 0);
                else
                        ASSERT_STREQ(error, expect);
        }
}

TEST(task_data) {
        _cleanup_free_ char *json = NULL, *max = NULL, *big = NULL;
        size_t n;

        check_task_data("eyJhIjoxfQ==", 12, 0, "eyJhIjoxfQ==");
        check_task_data(" \t\neyJhIjoxfQ==\r\n ", 18, 0, "eyJhIjoxfQ==");
        check_task_data("WzEsMiwzXQ==", 12, 0, "WzEsMiwzXQ=="); /* [1,2,3]: any JSON document */
        check_task_data("ImEi", 4, 0, "ImEi");                  /* "a" */
        check_task_data("@@@@", 4, -EBADMSG, "taskData is not base64");
        check_task_data("eyJhIjoxfQ", 10, -EBADMSG, "taskData is not base64");
        check_task_data("eyJhIjox fQ==", 13, -EBADMSG, "taskData is not base64");
        check_task_data("eyJhIjoxfQ==\0", 13, -EBADMSG, "taskData is not base64");
        check_task_data("aGVsbG8=", 8, -EBADMSG, "taskData is not JSON: *"); /* hello */
        check_task_data("eyJhIjox", 8, -EBADMSG, "taskData is not JSON: *"); /* {"a":1 */
        check_task_data("", 0, -EBADMSG, "taskData is not JSON: *");
        check_task_data("   ", 3, -EBADMSG, "taskData is not JSON: *");

        /* exactly the limit: a JSON string whose base64 is LAGOON_TASK_DATA_MAX bytes */
        n = LAGOON_TASK_DATA_MAX / 4 * 3;
        json = malloc(n + 1);
        ASSERT(json);
        memset(json, 'a', n);
        json[0] = json[n - 1] = '"';
        json[n] = 0;
        max = base64(json);
        ASSERT_EQ(strlen(max), (size_t) LAGOON_TASK_DATA_MAX);
        check_task_data(max, strlen(max), 0, max);
        /* surrounding whitespace does not count */
        big = strf("  %s\n", max);
        check_task_data(big, strlen(big), 0, max);
        free(big);
        big = strf("%sAAAA", max);
        check_task_data(big, strlen(big), -E2BIG, "taskData is too big*");
}

/* As Lagoon's createMiscTask sends them (commons tasks.ts): no taskName, no flags, the
 * clone's id in the JSONPayload. */
TEST(projectclone) {
        _cleanup_free_ char *payload = base64("{\"projectName\":\"proj\",\"sourceEnvironment\":\"main\","
                                              "\"cloneId\":17}"),
                            *restore = base64("{\"projectName\":\"proj\",\"destinationEnvironment\":\"main\","
                                              "\"cloneId\":18,\"action\":\"restore\",\"files\":[{\"id\":1}]}"),
                            *adv = strf("{\"JSONPayload\":\"%s\",\"runnerImage\":\"uselagoon/task-projectclone:v2\"}",
                                        payload),
                            *adv_restore = strf("{\"JSONPayload\":\"%s\",\"runnerImage\":\"i\"}", restore),
                            *b = body("deploytarget:task:projectclone",
                                      "{\"id\":\"21\",\"name\":\"Project Clone Archive\"}", "{\"name\":\"proj\"}",
                                      "{\"name\":\"main\",\"openshiftProjectName\":\"proj-main\"}", adv),
                            *br = body("deploytarget:task:projectclonerestore", TASK_ADV, PROJECT, ENVIRONMENT,
                                       adv_restore),
                            *info = NULL, *data = NULL, *failed = NULL;
        LagoonMessage *m;

        m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
        ASSERT_EQ(m->kind, LAGOON_MESSAGE_PROJECTCLONE);
        ASSERT(m->ssh_key && m->deployer_token && m->volume_mounts);
        ASSERT_EQ(m->clone_id, 17);
        ASSERT_STREQ(m->image, "uselagoon/task-projectclone:v2");
        info = info_text(m);
        ASSERT(strstr(info, "\"cloneId\":17"));
        ASSERT(strstr(info, "\"key\":\"deploytarget:task:projectclone\""));
        /* what actions-handler needs when the task has no taskData of its own */
        ASSERT_OK(lagoon_clone_advanced_data(m->info, false, &data));
        ASSERT_STREQ(data,
                     "eyJjbG9uZUlkIjoxNywic3RhdHVzIjoiU09VUkNFX0ZJTEVTX1VQTE9BREVEIn0="); /* SOURCE_FILES_UPLOADED */
        ASSERT_OK(lagoon_clone_advanced_data(m->info, true, &failed));
        ASSERT_STREQ(failed, "eyJjbG9uZUlkIjoxNywic3RhdHVzIjoiRkFJTEVEIn0="); /* {"cloneId":17,"status":"FAILED"} */
        lagoon_message_free(m);
        data = mfree(data);
        failed = mfree(failed);

        m = parse_expect(LAGOON_QUEUE_MISC, br, 0, NULL);
        ASSERT_EQ(m->clone_id, 18);
        ASSERT_OK(lagoon_clone_advanced_data(m->info, false, &data));
        ASSERT_STREQ(data,
                     "eyJjbG9uZUlkIjoxOCwic3RhdHVzIjoiU09VUkNFX0ZJTEVTX0FQUExJRUQifQ=="); /* SOURCE_FILES_APPLIED */
        lagoon_message_free(m);
        data = mfree(data);

        /* a payload remote-controller would refuse */
        {
                _cleanup_free_ char *nob64 = body("deploytarget:task:projectclone", TASK_ADV, PROJECT, ENVIRONMENT,
                                                  "{\"JSONPayload\":\"not base64\",\"runnerImage\":\"i\"}"),
                                    *nojson = body("deploytarget:task:projectclone", TASK_ADV, PROJECT, ENVIRONMENT,
                                                   "{\"JSONPayload\":\"WzFd\",\"runnerImage\":\"i\"}"),
                                    *strid = NULL, *strid_adv = NULL, *s = base64("{\"cloneId\":\"17\"}"),
                                    *none = body("deploytarget:task:projectclone", TASK_ADV, PROJECT, ENVIRONMENT,
                                                 "{\"runnerImage\":\"i\"}");

                strid_adv = strf("{\"JSONPayload\":\"%s\",\"runnerImage\":\"i\"}", s);
                strid = body("deploytarget:task:projectclone", TASK_ADV, PROJECT, ENVIRONMENT, strid_adv);
                check_error(LAGOON_QUEUE_MISC, nob64, "advancedTask.JSONPayload is not base64");
                check_error(LAGOON_QUEUE_MISC, nojson, "advancedTask.JSONPayload is not a JSON object");
                check_error(LAGOON_QUEUE_MISC, strid,
                            "advancedTask.JSONPayload: cloneId is not a non-negative integer");
                check_error(LAGOON_QUEUE_MISC, none, "advancedTask.JSONPayload is missing");
        }
        /* no cloneId: runs (as in remote-controller), but nothing to tell the clone */
        {
                _cleanup_free_ char *p0 = base64("{\"projectName\":\"proj\"}"), *a0 = NULL, *b0 = NULL;

                a0 = strf("{\"JSONPayload\":\"%s\",\"runnerImage\":\"i\"}", p0);
                b0 = body("deploytarget:task:projectclone", TASK_ADV, PROJECT, ENVIRONMENT, a0);
                m = parse_expect(LAGOON_QUEUE_MISC, b0, 0, NULL);
                ASSERT_EQ(m->clone_id, 0);
                ASSERT_EQ(lagoon_clone_advanced_data(m->info, true, &data), -ENODATA);
                lagoon_message_free(m);
        }
        /* other keys never get one */
        {
                _cleanup_free_ char *ba = body("deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT, adv);

                m = parse_expect(LAGOON_QUEUE_MISC, ba, 0, NULL);
                ASSERT_EQ(m->clone_id, 0);
                ASSERT_EQ(lagoon_clone_advanced_data(m->info, true, &data), -ENODATA);
                ASSERT_EQ(lagoon_clone_advanced_data(NULL, true, &data), -ENODATA);
                lagoon_message_free(m);
        }
        ASSERT_STREQ(lagoon_message_kind_to_string(LAGOON_MESSAGE_PROJECTCLONE), "projectclone");
}

/* advancedTask.volumeMounts, project.organization, and the variables' lookup. */
TEST(volume_mounts_organization_variables) {
        _cleanup_free_ char *vars = base64("[{\"name\":\"LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD\","
                                           "\"value\":\"disabled\",\"scope\":\"build\"},"
                                           "{\"name\":\"ONLY_PROJECT\",\"value\":\"p\",\"scope\":\"global\"}]"),
                            *env_vars = base64("[{\"name\":\"LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD\","
                                               "\"value\":\"enabled\",\"scope\":\"build\"}]"),
                            *project = strf("{\"id\":3,\"name\":\"proj\",\"organization\":{\"id\":5,"
                                            "\"name\":\"acme\"},\"variables\":{\"project\":\"%s\","
                                            "\"environment\":\"%s\"}}",
                                            vars, env_vars),
                            *b = body("deploytarget:task:advanced", TASK_ADV, project, ENVIRONMENT,
                                      "{\"runnerImage\":\"i\",\"volumeMounts\":1}"),
                            *no = body("deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                                       "{\"runnerImage\":\"i\",\"volumeMounts\":false}"),
                            *bad = body("deploytarget:task:advanced", TASK_ADV, PROJECT, ENVIRONMENT,
                                        "{\"runnerImage\":\"i\",\"volumeMounts\":\"yes\"}"),
                            *badorg = body("deploytarget:task:advanced", TASK_ADV,
                                           "{\"name\":\"proj\",\"organization\":\"acme\"}", ENVIRONMENT,
                                           "{\"runnerImage\":\"i\"}"),
                            *badorgid = body("deploytarget:task:advanced", TASK_ADV,
                                             "{\"name\":\"proj\",\"organization\":{\"id\":-1}}", ENVIRONMENT,
                                             "{\"runnerImage\":\"i\"}");
        LagoonMessage *m;

        m = parse_expect(LAGOON_QUEUE_MISC, b, 0, NULL);
        ASSERT(m->volume_mounts);
        ASSERT(m->has_organization_id);
        ASSERT_EQ(m->organization_id, 5);
        ASSERT_STREQ(m->organization_name, "acme");
        /* the environment's value wins over the project's */
        ASSERT_STREQ(lagoon_message_variable(m, "LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD"), "enabled");
        ASSERT_STREQ(lagoon_message_variable(m, "ONLY_PROJECT"), "p");
        ASSERT(!lagoon_message_variable(m, "NOPE"));
        lagoon_message_free(m);

        m = parse_expect(LAGOON_QUEUE_MISC, no, 0, NULL);
        ASSERT(!m->volume_mounts && !m->has_organization_id && !m->organization_name);
        lagoon_message_free(m);
        check_error(LAGOON_QUEUE_MISC, bad, "advancedTask.volumeMounts is not a boolean or 0/1");
        check_error(LAGOON_QUEUE_MISC, badorg, "project.organization is not an object");
        check_error(LAGOON_QUEUE_MISC, badorgid, "project.organization.id is not a non-negative integer");
}

int main(void) {
        RUN(fixture_standard);
        RUN(fixture_advanced);
        RUN(fixture_standard_on_misc);
        RUN(keys);
        RUN(unknown_keys);
        RUN(cancel);
        RUN(required_members);
        RUN(namespace);
        RUN(numbers_and_flags);
        RUN(not_json);
        RUN(variables);
        RUN(secrets);
        RUN(task_data);
        RUN(projectclone);
        RUN(volume_mounts_organization_variables);
        return 0;
}
