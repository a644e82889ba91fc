/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* task.c and store.c: state machine, ids, Lagoon namespaces, JSON forms, and the
 * store's atomic writes and handling of corrupt records. */

#include <fcntl.h>
#include <sys/stat.h>

#include "fs-util.h"
#include "store.h"
#include "task.h"
#include "tests.h"

TEST(state_machine) {
        _cleanup_(task_freep) Task *t = task_new();

        ASSERT(t);
        ASSERT_EQ(t->status, TASK_NEW);
        ASSERT_EQ(task_transition(t, TASK_COMPLETE, NULL, 1), -EINVAL);
        ASSERT_OK(task_transition(t, TASK_PENDING, NULL, 1));
        ASSERT_EQ(task_transition(t, TASK_PENDING, NULL, 2), -EINVAL);
        ASSERT_OK(task_transition(t, TASK_RUNNING, NULL, 5));
        ASSERT_EQ(t->started_usec, 5u);
        ASSERT_EQ(task_transition(t, TASK_PENDING, NULL, 6), -EINVAL);
        ASSERT_OK(task_transition(t, TASK_FAILED, "exit-code 3", 9));
        ASSERT_EQ(t->finished_usec, 9u);
        ASSERT_STREQ(t->reason, "exit-code 3");
        for (int s = 0; s < _TASK_STATUS_MAX; s++)
                ASSERT_EQ(task_transition(t, s, NULL, 10), -EINVAL);

        ASSERT(task_transition_allowed(TASK_PENDING, TASK_CANCELLED));
        ASSERT(task_transition_allowed(TASK_NEW, TASK_FAILED));
        ASSERT(!task_transition_allowed(TASK_COMPLETE, TASK_FAILED));
        ASSERT(!task_transition_allowed(TASK_CANCELLED, TASK_RUNNING));
        for (int s = 0; s < _TASK_STATUS_MAX; s++)
                ASSERT_EQ(task_status_from_string(task_status_to_string(s)), s);
        ASSERT_EQ(task_status_from_string("bogus"), _TASK_STATUS_INVALID);
        ASSERT_EQ(task_status_from_string(NULL), _TASK_STATUS_INVALID);
}

/* A launch in flight keeps the task pending but out of the queue; a requeue puts it back. */
TEST(launching) {
        _cleanup_(task_freep) Task *t = task_new();

        ASSERT(t);
        ASSERT(!task_queued(t)); /* new */
        ASSERT_OK(task_transition(t, TASK_PENDING, NULL, 1));
        ASSERT(task_queued(t) && !task_launching(t));
        ASSERT_EQ(task_requeue(t), -EINVAL);
        t->launch_step = TASK_LAUNCH_PREPARED;
        ASSERT(task_launching(t) && !task_queued(t));
        ASSERT_OK(task_requeue(t));
        ASSERT(task_queued(t));
        ASSERT_EQ(t->launch_step, TASK_LAUNCH_NONE);
        t->launch_step = TASK_LAUNCH_STARTED;
        ASSERT_OK(task_transition(t, TASK_RUNNING, NULL, 2));
        ASSERT(!task_queued(t) && !task_launching(t));
}

TEST(ids) {
        char longid[TASK_ID_MAX + 2];

        ASSERT(task_id_is_valid("123"));
        ASSERT(task_id_is_valid("lagoon-task-abc_1.2"));
        ASSERT(!task_id_is_valid(""));
        ASSERT(!task_id_is_valid(NULL));
        ASSERT(!task_id_is_valid(".hidden"));
        ASSERT(!task_id_is_valid("-x"));
        ASSERT(!task_id_is_valid("a/b"));
        ASSERT(!task_id_is_valid("a b"));
        ASSERT(!task_id_is_valid("ä"));
        memset(longid, 'a', sizeof(longid) - 1);
        longid[sizeof(longid) - 1] = 0;
        ASSERT(!task_id_is_valid(longid));
        longid[TASK_ID_MAX] = 0;
        ASSERT(task_id_is_valid(longid));
}

/* Expected values computed with Lagoon's rule (commons truncateEnvironmentName +
 * remote-controller's GenerateNamespaceName) in Python, independently of this code. */
static void assert_namespace(const char *project,
                             const char *environment,
                             const char *pattern,
                             const char *prefix,
                             const char *expected) {
        _cleanup_free_ char *ns = NULL;

        ASSERT_OK(task_make_namespace(project, environment, pattern, prefix, &ns));
        ASSERT_STREQ(ns, expected);
}

TEST(namespace) {
        _cleanup_free_ char *c = NULL, *p = NULL;
        char longp[61];

        assert_namespace("MyProject", "feature/Foo_bar", NULL, NULL, "myproject-feature-foo-bar");
        /* over 58 - len(project): 53 - len(project) kept, sha1 of the made-safe name */
        assert_namespace("drupal-example", "feature-a-very-long-branch-name-that-goes-on-and-on-and-on-forever", NULL,
                         NULL, "drupal-example-feature-a-very-long-branch-name-that-go-9885");
        assert_namespace("myproject", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, NULL,
                         "myproject-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-6c17");
        /* exactly at the threshold: not shortened */
        assert_namespace("myproject", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, NULL,
                         "myproject-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_namespace("myproject", "Feature/ABC_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL,
                         NULL, "myproject-feature-abc-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-2968");
        /* a project of 55 (threshold under 5): the environment is only "-" + hash */
        memset(longp, 'p', 55);
        longp[55] = 0;
        assert_namespace(longp, "main", NULL, NULL, "ppppppppppppppppppppppppppppppppppppppppppppppppppppppp--b28b");
        /* 60: then the whole name is capped at 63 */
        memset(longp, 'p', 60);
        longp[60] = 0;
        assert_namespace(longp, "main", NULL, NULL, "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppp-07b9");
        /* a prefix counts towards the 63 cap */
        assert_namespace("drupal-example", "feature-a-very-long-branch-name-that-goes-on-and-on-and-on-forever", NULL,
                         "abcdefgh", "abcdefgh-drupal-example-feature-a-very-long-branch-name-th-080a");
        assert_namespace("myproject", "main", "${environment}-${project}", NULL, "main-myproject");
        /* RandomNamespacePrefix=yes with ControllerNamespace=lagoon: test-config checks a30fb066 */
        assert_namespace("myproject", "main", NULL, "a30fb066", "a30fb066-myproject-main");
        ASSERT_EQ(task_make_namespace("", "x", NULL, NULL, &c), -EINVAL);
        ASSERT_EQ(task_make_namespace("x", "", NULL, NULL, &p), -EINVAL);
}

static Task *make_task(const char *id, uint64_t seq) {
        Task *t = task_new();
        ASSERT(t);
        t->id = strdup(id);
        t->name = strdup("lagoon-task-xyz");
        t->project = strdup("proj");
        t->environment = strdup("main");
        t->namespace = strdup("proj-main");
        t->service = strdup("cli");
        t->command = strdup("echo 'hi' \"there\"");
        t->seq = seq;
        t->created_usec = 1764300000123456ULL;
        t->timeout_usec = 30 * USEC_PER_SEC;
        return t;
}

TEST(json_forms) {
        _cleanup_(task_freep) Task *t = make_task("42", 7), *back = NULL;
        _cleanup_json_ JsonValue *api = NULL, *rec = NULL;
        _cleanup_free_ char *ts = NULL;
        uint64_t u;

        ASSERT_OK(task_transition(t, TASK_PENDING, NULL, t->created_usec));
        ASSERT_OK(task_to_json(t, 3, &api));
        ASSERT_STREQ(json_get_string(api, "status"), "pending");
        ASSERT_STREQ(json_get_string(api, "createdAt"), "2025-11-28T03:20:00.123456Z");
        ASSERT_EQ(json_type(json_get(api, "startedAt")), JSON_NULL);
        ASSERT_EQ(json_type(json_get(api, "exitCode")), JSON_NULL);
        ASSERT_OK(json_uint64(json_get(api, "queuePosition"), &u));
        ASSERT_EQ(u, 3u);
        ASSERT_OK(json_uint64(json_get(api, "timeout"), &u));
        ASSERT_EQ(u, 30u);
        ASSERT(json_get(api, "seq") == NULL);

        ASSERT_OK(task_transition(t, TASK_RUNNING, NULL, t->created_usec + 1));
        ASSERT_OK(task_transition(t, TASK_FAILED, "exit-code 3", t->created_usec + 2));
        t->exit_code = 3;
        t->cancel_requested = true;
        t->pod = strdup("lagoon-task-42");
        ASSERT(t->pod);
        ASSERT_OK(task_to_record(t, &rec));
        ASSERT_STREQ(json_get_string(rec, "pod"), "lagoon-task-42");
        ASSERT_OK(task_from_json(rec, &back));
        ASSERT_STREQ(back->id, "42");
        ASSERT_STREQ(back->command, t->command);
        ASSERT_EQ(back->status, TASK_FAILED);
        ASSERT_EQ(back->exit_code, 3);
        ASSERT_EQ(back->seq, 7u);
        ASSERT_EQ(back->started_usec, t->created_usec + 1);
        ASSERT(back->cancel_requested);
        ASSERT(!back->timed_out);
        ASSERT_STREQ(back->pod, "lagoon-task-42");
        ASSERT_EQ(back->timeout_usec, t->timeout_usec);

        /* An API pod's advanced-task options survive; a record from before them loads. */
        {
                _cleanup_(task_freep) Task *adv = make_task("43", 8), *adv_back = NULL, *old = NULL;
                _cleanup_json_ JsonValue *adv_rec = NULL;

                adv->image = strdup("img:1");
                adv->volume_mounts = adv->rootless = true;
                ASSERT_OK(strv_extend(&adv->pod_labels, "organization.lagoon.sh/id=5"));
                adv->rb_namespace = strdup("p-main");
                adv->rb_source = strdup("p-standby");
                adv->rb_created = true;
                ASSERT(adv->image && adv->rb_namespace && adv->rb_source);
                ASSERT_OK(task_to_record(adv, &adv_rec));
                ASSERT_OK(task_from_json(adv_rec, &adv_back));
                ASSERT(adv_back->volume_mounts && adv_back->rootless);
                ASSERT_STREQ(adv_back->pod_labels[0], "organization.lagoon.sh/id=5");
                ASSERT(!adv_back->pod_labels[1]);
                ASSERT_STREQ(adv_back->rb_namespace, "p-main");
                ASSERT_STREQ(adv_back->rb_source, "p-standby");
                ASSERT(adv_back->rb_created);
                (void) json_object_remove(adv_rec, "volumeMounts");
                (void) json_object_remove(adv_rec, "rootless");
                (void) json_object_remove(adv_rec, "podLabels");
                (void) json_object_remove(adv_rec, "roleBindingNamespace");
                ASSERT_OK(task_from_json(adv_rec, &old));
                ASSERT(!old->volume_mounts && !old->rootless && !old->pod_labels && !old->rb_namespace &&
                       !old->rb_created);
        }

        ASSERT_OK(parse_timestamp_rfc3339("2025-11-28T03:20:00.123456Z", &u));
        ASSERT_EQ(u, 1764300000123456ULL);
        ASSERT_OK(parse_timestamp_rfc3339("2025-11-28T03:20:00Z", &u));
        ASSERT_EQ(parse_timestamp_rfc3339("2025-11-28 03:20:00", &u), -EINVAL);
        ASSERT_EQ(parse_timestamp_rfc3339("garbage", &u), -EINVAL);
        ASSERT_OK(format_timestamp_rfc3339(0, &ts));
        ASSERT_STREQ(ts, "1970-01-01T00:00:00.000000Z");
}

TEST(record_garbage) {
        const char *bad[] = {
                "[]",
                "{}",
                "{\"id\":\"1\"}",
                "{\"id\":\"../x\",\"project\":\"p\",\"environment\":\"e\",\"namespace\":\"n\",\"service\":\"s\","
                "\"command\":\"c\",\"status\":\"new\",\"seq\":1,\"createdUsec\":1,\"startedUsec\":0,"
                "\"finishedUsec\":0,\"timeoutUsec\":1,\"killUsec\":0,\"cancelRequested\":false,\"timedOut\":false}",
                "{\"id\":\"1\",\"project\":\"p\",\"environment\":\"e\",\"namespace\":\"n\",\"service\":\"s\","
                "\"command\":\"c\",\"status\":\"exploded\",\"seq\":1,\"createdUsec\":1,\"startedUsec\":0,"
                "\"finishedUsec\":0,\"timeoutUsec\":1,\"killUsec\":0,\"cancelRequested\":false,\"timedOut\":false}",
                "{\"id\":\"1\",\"project\":\"p\",\"environment\":\"e\",\"namespace\":\"n\",\"service\":\"s\","
                "\"command\":\"c\",\"status\":\"new\",\"seq\":-1,\"createdUsec\":1,\"startedUsec\":0,"
                "\"finishedUsec\":0,\"timeoutUsec\":1,\"killUsec\":0,\"cancelRequested\":false,\"timedOut\":false}",
                "{\"id\":\"1\",\"project\":\"p\",\"environment\":\"e\",\"namespace\":\"n\",\"service\":\"s\","
                "\"command\":\"c\",\"status\":\"new\",\"exitCode\":999,\"seq\":1,\"createdUsec\":1,\"startedUsec\":0,"
                "\"finishedUsec\":0,\"timeoutUsec\":1,\"killUsec\":0,\"cancelRequested\":false,\"timedOut\":false}",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_json_ JsonValue *v = NULL;
                Task *t = NULL;

                ASSERT_OK(json_parse(bad[i], strlen(bad[i]), 0, &v, NULL));
                ASSERT_EQ(task_from_json(v, &t), -EBADMSG);
                ASSERT(t == NULL);
        }
}

typedef struct Loaded {
        char *ids[16];
        size_t n;
        char *corrupt[16];
        size_t n_corrupt;
} Loaded;

static int on_load(Task *t, void *userdata) {
        Loaded *l = userdata;
        l->ids[l->n++] = strdup(t->id);
        task_free(t);
        return 0;
}

static void on_corrupt(const char *name, int error, const char *message, void *userdata) {
        Loaded *l = userdata;
        ASSERT(error < 0);
        ASSERT(message && *message);
        l->corrupt[l->n_corrupt++] = strdup(name);
}

static bool has(char **l, size_t n, const char *s) {
        for (size_t i = 0; i < n; i++)
                if (streq(l[i], s))
                        return true;
        return false;
}

TEST(store) {
        char dir[] = "/tmp/test-store-XXXXXX";
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_(task_freep) Task *a = make_task("a", 1), *b = make_task("b", 2);
        _cleanup_free_ char *p = NULL, *text = NULL, *logp = NULL;
        Loaded l = {};
        struct stat st;

        ASSERT(mkdtemp(dir));
        ASSERT_OK(store_open(dir, &s));
        ASSERT_OK(store_save(s, a));
        ASSERT_OK(store_save(s, b));
        a->exit_code = 0;
        ASSERT_OK(task_transition(a, TASK_CANCELLED, NULL, 5));
        ASSERT_OK(store_save(s, a)); /* replace */

        /* The record on disk is the latest, complete, and private. */
        ASSERT(asprintf(&p, "%s/tasks/a.json", dir) > 0);
        ASSERT_OK(read_full_file(p, 1 << 20, &text, NULL));
        ASSERT(strstr(text, "\"status\":\"cancelled\""));
        ASSERT_OK(stat(p, &st));
        ASSERT_EQ(st.st_mode & 0777, 0600u);

        /* Garbage of every kind next to good records. */
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/bad1.json", dir) > 0);
        ASSERT_OK(write_file_atomic(p, "{not json", 9, 0600));
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/bad2.json", dir) > 0);
        ASSERT_OK(write_file_atomic(p, "{\"id\":\"bad2\"}", 13, 0600));
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/bad3.json", dir) > 0);
        ASSERT_OK(write_file_atomic(p, "", 0, 0600));
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/c.json", dir) > 0); /* valid record of task "a" under the wrong name */
        free(text);
        ASSERT(asprintf(&text, "%s/tasks/a.json", dir) > 0);
        {
                _cleanup_free_ char *content = NULL;
                size_t n;
                ASSERT_OK(read_full_file(text, 1 << 20, &content, &n));
                ASSERT_OK(write_file_atomic(p, content, n, 0600));
        }
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/a.json.tmp.123", dir) > 0); /* crash leftover */
        ASSERT_OK(write_file_atomic(p, "{", 1, 0600));

        ASSERT_OK(store_load_all(s, on_load, on_corrupt, &l));
        ASSERT_EQ(l.n, 2u);
        ASSERT(has(l.ids, l.n, "a") && has(l.ids, l.n, "b"));
        ASSERT_EQ(l.n_corrupt, 4u);
        ASSERT(has(l.corrupt, l.n_corrupt, "bad1.json") && has(l.corrupt, l.n_corrupt, "bad2.json") &&
               has(l.corrupt, l.n_corrupt, "bad3.json") && has(l.corrupt, l.n_corrupt, "c.json"));
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/corrupt/bad1.json", dir) > 0);
        ASSERT_OK(access(p, F_OK));
        free(p);
        ASSERT(asprintf(&p, "%s/tasks/a.json.tmp.123", dir) > 0);
        ASSERT_EQ(access(p, F_OK), -1);

        /* Removal takes the record and the log. */
        ASSERT_OK(store_task_log_path(s, "b", &logp));
        ASSERT_OK(write_file_atomic(logp, "x\n", 2, 0600));
        ASSERT_OK(store_remove(s, "b"));
        ASSERT_EQ(access(logp, F_OK), -1);
        ASSERT_EQ(store_remove(s, "../etc"), -EINVAL);

        for (size_t i = 0; i < l.n; i++)
                free(l.ids[i]);
        for (size_t i = 0; i < l.n_corrupt; i++)
                free(l.corrupt[i]);
        ASSERT_OK(rm_rf(dir));
}

int main(void) {
        RUN(state_machine);
        RUN(launching);
        RUN(ids);
        RUN(namespace);
        RUN(json_forms);
        RUN(record_garbage);
        RUN(store);
        return 0;
}
