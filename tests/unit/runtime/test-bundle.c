/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tests of the task bundle derivation: every real config.json under data/bundle/ (made
 * by `runc spec`, `runc spec --rootless`, `crun spec`, `umoci unpack` of a busybox
 * image) derives into a task config with exactly the intended changes; bad configs and
 * bad parameters are refused with precise messages; Lagoon's wrapper is detected inside
 * a rootfs without ever following a link out of it (with openat2() and without). As
 * root with runc installed, a derived config is really run: exit code, cgroup path,
 * and the default seccomp profile blocking what the unconfined run allows. */

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "bundle.h"
#include "fs-util.h"
#include "json.h"
#include "seccomp-bpf.h"
#include "seccomp-profile.h"
#include "tests.h"

static const char *const data_files[] = {
        "runc-spec.json",     "runc-spec-rootless.json",     "crun-spec.json",
        "umoci-busybox.json", "umoci-busybox-rootless.json", NULL,
};

static char *data_dir;

static void find_data_dir(void) {
        const char *e = getenv("TEST_DATADIR");
        char *d;

        if (e)
                d = path_join(e, "bundle");
        else {
                /* Run by hand from the build directory: the source path as compiled. */
                _cleanup_free_ char *f = strdup(__FILE__);
                ASSERT(f);
                *strrchr(f, '/') = 0;
                d = path_join(f, "data/bundle");
        }
        ASSERT(d);
        if (access(d, R_OK) < 0) {
                fprintf(stderr, "test data not found at %s (set TEST_DATADIR)\n", d);
                abort();
        }
        data_dir = d;
}

static JsonValue *parse(const char *s) {
        JsonValue *v = NULL;
        _cleanup_free_ char *error = NULL;
        int r = json_parse(s, strlen(s), JSON_DEPTH_MAX_DEFAULT, &v, &error);
        if (r < 0) {
                fprintf(stderr, "cannot parse %s: %s\n", s, strna(error));
                abort();
        }
        return v;
}

static JsonValue *load_data(const char *name) {
        _cleanup_free_ char *path = path_join(data_dir, name), *text = NULL;
        ASSERT(path);
        ASSERT_OK(read_full_file(path, 1 << 20, &text, NULL));
        return parse(text);
}

/* Compact text of a value, "(absent)" for NULL: subtrees compare by their text. */
static char *fmt(const JsonValue *v) {
        char *s = NULL;
        if (!v)
                return strdup("(absent)");
        ASSERT_OK(json_format(v, false, &s, NULL));
        return s;
}

static void assert_same(const JsonValue *a, const JsonValue *b, const char *what) {
        _cleanup_free_ char *x = fmt(a), *y = fmt(b);
        if (!streq(x, y)) {
                fprintf(stderr, "%s differs:\n  %s\n  %s\n", what, x, y);
                abort();
        }
}

static void assert_json(const JsonValue *v, const char *expected, const char *what) {
        _cleanup_json_ JsonValue *e = parse(expected);
        assert_same(v, e, what);
}

static JsonValue *default_profile(void) {
        JsonValue *p = NULL;
        ASSERT_OK(seccomp_default_profile(&p));
        return p;
}

/* A NULL-terminated vector of literals, typed as BundleParams wants it. */
#define STRV(...) ((char *const *) (const char *const[]){__VA_ARGS__, NULL})

static const char *const task_args_[] = {"/bin/sh", "-c", "drush cr && echo done", NULL};
static const char *const task_env_add_[] = {"PATH=/task/bin:/usr/bin:/bin", "TASK_DATA_ID=42", "LAGOON_PROJECT=proj",
                                            NULL};
static const char *const task_env_remove_[] = {"CRONJOBS", NULL};
static const char *const task_annotations_[] = {"sh.lagoon.task.id=42", "org.opencontainers.image.os=lagoon-task",
                                                "sh.lagoon.empty=", NULL};
#define task_args ((char *const *) task_args_)
#define task_env_add ((char *const *) task_env_add_)
#define task_env_remove ((char *const *) task_env_remove_)
#define task_annotations ((char *const *) task_annotations_)

static BundleParams task_params(SeccompMode mode) {
        return (BundleParams){
                .args = task_args,
                .env_add = task_env_add,
                .env_remove = task_env_remove,
                .hostname = "task-42",
                .root_path = "/run/lagoon-taskd/tasks/42/rootfs",
                .cgroups_path = "/lagoon-taskd-test/42",
                .annotations = task_annotations,
                .seccomp = mode,
        };
}

static JsonValue *derive_ok(const JsonValue *service, const BundleParams *p) {
        _cleanup_free_ char *error = NULL;
        JsonValue *d = NULL;
        int r = bundle_derive(service, p, &d, &error);
        if (r < 0) {
                fprintf(stderr, "bundle_derive failed: %s (%s)\n", strerror(-r), strna(error));
                abort();
        }
        ASSERT(d && !error);
        return d;
}

/* Every field the derivation sets, and every other one kept, for one real config. */
static void check_derived(const char *name, const JsonValue *orig, const JsonValue *d) {
        _cleanup_json_ JsonValue *def = default_profile();
        const JsonValue *env = json_get_path(d, "process", "env", NULL);
        const JsonValue *orig_env = json_get_path(orig, "process", "env", NULL);
        const JsonValue *ann = json_get(d, "annotations"), *orig_ann = json_get(orig, "annotations");
        const char *kept[][3] = {
                {"ociVersion", NULL},        {"mounts", NULL},
                {"process", "user"},         {"process", "cwd"},
                {"process", "capabilities"}, {"process", "rlimits"},
                {"linux", "namespaces"},     {"linux", "uidMappings"},
                {"linux", "gidMappings"},    {"linux", "resources"},
                {"linux", "maskedPaths"},    {"linux", "readonlyPaths"},
        };
        size_t path_index = SIZE_MAX;

        for (size_t i = 0; i < ELEMENTSOF(kept); i++) {
                char what[128];
                snprintf(what, sizeof(what), "%s: %s%s%s", name, kept[i][0], kept[i][1] ? "." : "", kept[i][1] ?: "");
                assert_same(json_get_path(orig, kept[i][0], kept[i][1], NULL),
                            json_get_path(d, kept[i][0], kept[i][1], NULL), what);
        }
        /* No top-level member lost. */
        for (size_t i = 0; i < json_length(orig); i++)
                ASSERT(json_get(d, json_object_key_at(orig, i)));

        assert_json(json_get_path(d, "process", "args", NULL), "[\"/bin/sh\",\"-c\",\"drush cr && echo done\"]",
                    "process.args");
        ASSERT(json_boolean(json_get_path(d, "process", "terminal", NULL)) == 0);
        ASSERT(!json_get_path(d, "process", "consoleSize", NULL));
        ASSERT(json_boolean(json_get_path(d, "process", "noNewPrivileges", NULL)) == 1);
        ASSERT_STREQ(json_get_string(d, "hostname"), "task-42");
        assert_json(json_get(d, "root"), "{\"path\":\"/run/lagoon-taskd/tasks/42/rootfs\",\"readonly\":false}", "root");
        ASSERT_STREQ(json_get_string(json_get(d, "linux"), "cgroupsPath"), "/lagoon-taskd-test/42");
        assert_same(json_get_path(d, "linux", "seccomp", NULL), def, "linux.seccomp");

        /* Environment: CRONJOBS gone, PATH replaced where it stood, the rest kept in order,
         * new keys appended once. */
        ASSERT(json_is_array(env));
        for (size_t i = 0, k = 0; i < json_length(orig_env); i++) {
                const char *e = json_string(json_array_at(orig_env, i));
                if (startswith(e, "CRONJOBS="))
                        continue;
                if (startswith(e, "PATH=")) {
                        path_index = k;
                        ASSERT_STREQ(json_string(json_array_at(env, k)), "PATH=/task/bin:/usr/bin:/bin");
                } else if (startswith(e, "LAGOON_PROJECT="))
                        ASSERT_STREQ(json_string(json_array_at(env, k)), "LAGOON_PROJECT=proj");
                else
                        ASSERT_STREQ(json_string(json_array_at(env, k)), e);
                k++;
        }
        ASSERT(path_index != SIZE_MAX);
        {
                size_t n_task = 0, n_project = 0, n_path = 0;
                for (size_t i = 0; i < json_length(env); i++) {
                        const char *e = json_string(json_array_at(env, i));
                        ASSERT(e && !startswith(e, "CRONJOBS="));
                        n_task += streq(e, "TASK_DATA_ID=42");
                        n_project += !!startswith(e, "LAGOON_PROJECT=");
                        n_path += !!startswith(e, "PATH=");
                }
                ASSERT(n_task == 1 && n_project == 1 && n_path == 1);
        }
        if (strstr(name, "umoci"))
                assert_json(env,
                            "[\"PATH=/task/bin:/usr/bin:/bin\",\"TERM=xterm\",\"LAGOON_PROJECT=proj\","
                            "\"TASK_DATA_ID=42\"]",
                            "umoci env");
        else
                assert_json(env,
                            "[\"PATH=/task/bin:/usr/bin:/bin\",\"TERM=xterm\",\"TASK_DATA_ID=42\","
                            "\"LAGOON_PROJECT=proj\"]",
                            "runc env");

        /* Annotations: ours added or replacing, the service's others kept. */
        ASSERT(json_is_object(ann));
        ASSERT_STREQ(json_get_string(ann, "sh.lagoon.task.id"), "42");
        ASSERT_STREQ(json_get_string(ann, "org.opencontainers.image.os"), "lagoon-task");
        ASSERT_STREQ(json_get_string(ann, "sh.lagoon.empty"), "");
        for (size_t i = 0; i < json_length(orig_ann); i++) {
                const char *k = json_object_key_at(orig_ann, i);
                if (streq(k, "org.opencontainers.image.os"))
                        continue;
                assert_same(json_object_value_at(orig_ann, i), json_get(ann, k), k);
        }
        ASSERT(json_length(ann) ==
               json_length(orig_ann) + 3 - (json_get(orig_ann, "org.opencontainers.image.os") ? 1 : 0));

        /* The result is valid JSON text. */
        {
                _cleanup_free_ char *text = NULL;
                _cleanup_json_ JsonValue *again = NULL;
                ASSERT_OK(json_format(d, true, &text, NULL));
                again = parse(text);
                assert_same(again, d, "round trip");
        }
}

static void test_real_configs(void) {
        for (const char *const *f = data_files; *f; f++) {
                _cleanup_json_ JsonValue *orig = load_data(*f), *with_console = NULL, *d = NULL, *d2 = NULL;
                _cleanup_free_ char *before = fmt(orig), *after = NULL;
                BundleParams p = task_params(SECCOMP_MODE_DEFAULT);
                JsonValue *process;

                d = derive_ok(orig, &p);
                check_derived(*f, orig, d);

                /* The input is left alone. */
                after = fmt(orig);
                ASSERT(streq(before, after));

                /* A terminal config (consoleSize set, as `runc run -t` makes) loses it. */
                with_console = json_copy(orig);
                ASSERT(with_console);
                process = json_get(with_console, "process");
                ASSERT_OK(json_object_set(process, "consoleSize", parse("{\"height\":24,\"width\":80}")));
                ASSERT_OK(json_object_set_boolean(process, "terminal", true));
                d2 = derive_ok(with_console, &p);
                check_derived(*f, orig, d2);
                printf("derived from %s: all changed fields right, the rest kept\n", *f);
        }
}

static void test_seccomp_modes(void) {
        _cleanup_json_ JsonValue *plain = load_data("runc-spec.json"), *own_cfg = NULL, *def = default_profile();
        _cleanup_json_ JsonValue *own = parse("{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"syscalls\":[{\"names\":"
                                              "[\"mount\"],\"action\":\"SCMP_ACT_ERRNO\"}]}");
        _cleanup_json_ JsonValue *custom = parse("{\"defaultAction\":\"SCMP_ACT_LOG\"}");
        JsonValue *linux_obj;

        own_cfg = json_copy(plain);
        ASSERT(own_cfg);
        linux_obj = json_get(own_cfg, "linux");
        ASSERT_OK(json_object_set(linux_obj, "seccomp", json_copy(own)));

        struct {
                const JsonValue *service;
                SeccompMode mode;
                const JsonValue *expected;
        } cases[] = {
                {plain, SECCOMP_MODE_AUTO, def},        {own_cfg, SECCOMP_MODE_AUTO, own},
                {plain, SECCOMP_MODE_DEFAULT, def},     {own_cfg, SECCOMP_MODE_DEFAULT, def},
                {plain, SECCOMP_MODE_UNCONFINED, NULL}, {own_cfg, SECCOMP_MODE_UNCONFINED, NULL},
                {plain, SECCOMP_MODE_PROFILE, custom},  {own_cfg, SECCOMP_MODE_PROFILE, custom},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_json_ JsonValue *d = NULL;
                BundleParams p = task_params(cases[i].mode);
                char what[64];

                p.seccomp_profile = custom;
                d = derive_ok(cases[i].service, &p);
                snprintf(what, sizeof(what), "seccomp case %zu", i);
                assert_same(json_get_path(d, "linux", "seccomp", NULL), cases[i].expected, what);
        }

        /* null counts as absent. */
        {
                _cleanup_json_ JsonValue *null_cfg = json_copy(plain), *d = NULL;
                BundleParams p = task_params(SECCOMP_MODE_AUTO);
                ASSERT(null_cfg);
                ASSERT_OK(json_object_set(json_get(null_cfg, "linux"), "seccomp", json_new_null()));
                d = derive_ok(null_cfg, &p);
                assert_same(json_get_path(d, "linux", "seccomp", NULL), def, "seccomp null");
        }

        /* Precompiled for crun: the program next to linux.seccomp, never a service's or a
         * task's own annotation, nothing when unconfined or untranslatable. */
        {
                _cleanup_json_ JsonValue *ann_cfg = json_copy(plain);
                _cleanup_json_ JsonValue *odd = parse("{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"syscalls\":"
                                                      "[{\"names\":[\"nosuchcall\"],\"action\":\"SCMP_ACT_ALLOW\"}]}");
                const char *forged[] = {SECCOMP_BPF_ANNOTATION "=AAAA", NULL};
                struct {
                        SeccompMode mode;
                        const JsonValue *profile;
                        bool precompile, expect_bpf;
                } bcases[] = {
                        {SECCOMP_MODE_DEFAULT, NULL, true, true},   {SECCOMP_MODE_PROFILE, custom, true, true},
                        {SECCOMP_MODE_DEFAULT, NULL, false, false}, {SECCOMP_MODE_UNCONFINED, NULL, true, false},
                        {SECCOMP_MODE_PROFILE, odd, true, false},
                };

                JsonValue *svc_ann;

                ASSERT(ann_cfg);
                ASSERT_OK(json_object_ensure_object(ann_cfg, "annotations", &svc_ann));
                ASSERT_OK(json_object_set_string(svc_ann, SECCOMP_BPF_ANNOTATION, "AAAA"));
                for (size_t i = 0; i < ELEMENTSOF(bcases); i++) {
                        _cleanup_json_ JsonValue *d = NULL;
                        BundleParams p = task_params(bcases[i].mode);
                        const char *bpf;

                        p.seccomp_profile = bcases[i].profile;
                        p.seccomp_bpf = bcases[i].precompile;
                        p.annotations = (char *const *) forged;
                        d = derive_ok(ann_cfg, &p);
                        bpf = json_get_string(json_get(d, "annotations"), SECCOMP_BPF_ANNOTATION);
                        ASSERT(!bpf || !streq(bpf, "AAAA"));
                        ASSERT(!!bpf == bcases[i].expect_bpf);
                        ASSERT(!!json_get_path(d, "linux", "seccomp", NULL) ==
                               (bcases[i].mode != SECCOMP_MODE_UNCONFINED));
                }
        }
        printf("seccomp: auto keeps the service's or uses the default, default, unconfined, profile; precompiled "
               "for crun unless unconfined or untranslatable, never a forged annotation\n");
}

static void test_env_and_annotations(void) {
        _cleanup_json_ JsonValue *svc =
                parse("{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":42,\"env\":[\"A=1\",\"B=2\",\"A=3\",\"FOO\","
                      "\"CRONJOBS=*/5 * * * * x\",\"CRONJOBS_EXTRA=y\",\"C==x\"]},\"root\":{\"path\":\"rootfs\"},"
                      "\"hostname\":\"svc\",\"linux\":{\"cgroupsPath\":\"kubepods:cri-containerd:abc\"},"
                      "\"annotations\":null}");
        _cleanup_json_ JsonValue *d = NULL, *d2 = NULL, *d3 = NULL, *no_env = NULL, *d4 = NULL;
        char *const *add = STRV("A=9", "FOO=bar", "X=1", "X=2", "C=y=z");
        BundleParams p = {
                .args = STRV("true"),
                .env_add = add,
                .env_remove = STRV("CRONJOBS"),
                .root_path = "/r",
                .seccomp = SECCOMP_MODE_UNCONFINED,
        };

        d = derive_ok(svc, &p);
        assert_json(json_get_path(d, "process", "env", NULL),
                    "[\"A=9\",\"B=2\",\"FOO=bar\",\"CRONJOBS_EXTRA=y\",\"C=y=z\",\"X=2\"]", "env edge cases");
        /* hostname NULL keeps the service's; cgroups_path NULL drops the service's cgroup. */
        ASSERT_STREQ(json_get_string(d, "hostname"), "svc");
        ASSERT(!json_get_path(d, "linux", "cgroupsPath", NULL));
        ASSERT(!json_get_path(d, "linux", "seccomp", NULL));
        assert_json(json_get(d, "annotations"), "{}", "annotations from null");

        /* No changes asked: the variables stay as they were. */
        p.env_add = NULL;
        p.env_remove = NULL;
        d2 = derive_ok(svc, &p);
        assert_same(json_get_path(d2, "process", "env", NULL), json_get_path(svc, "process", "env", NULL), "env kept");

        /* No env, no linux, no annotations in the service: all created. */
        no_env = parse("{\"ociVersion\":\"1.0.2\",\"process\":{},\"root\":{\"path\":\"/abs/rootfs\"}}");
        p.env_add = add;
        p.annotations = STRV("a=b");
        p.cgroups_path = "/x/y";
        p.seccomp = SECCOMP_MODE_AUTO;
        d3 = derive_ok(no_env, &p);
        assert_json(json_get_path(d3, "process", "env", NULL), "[\"A=9\",\"FOO=bar\",\"X=2\",\"C=y=z\"]",
                    "env created");
        assert_json(json_get(d3, "annotations"), "{\"a\":\"b\"}", "annotations created");
        ASSERT_STREQ(json_get_string(json_get(d3, "linux"), "cgroupsPath"), "/x/y");
        ASSERT(json_is_object(json_get_path(d3, "linux", "seccomp", NULL)));

        /* process.env null is an absent env. */
        {
                _cleanup_json_ JsonValue *null_env =
                        parse("{\"ociVersion\":\"1.0.2\",\"process\":{\"env\":null},\"root\":{\"path\":\"r\"}}");
                d4 = derive_ok(null_env, &p);
                assert_json(json_get_path(d4, "process", "env", NULL), "[\"A=9\",\"FOO=bar\",\"X=2\",\"C=y=z\"]",
                            "env from null");
        }
        printf("env: remove, replace in place, duplicates, append; annotations merged or created\n");
}

static void assert_derive_fails(const char *service, const BundleParams *p, const char *message, bool exact) {
        _cleanup_json_ JsonValue *svc = parse(service);
        _cleanup_free_ char *error = NULL;
        JsonValue *d = (JsonValue *) 0x1;
        int r;

        r = bundle_derive(svc, p, &d, &error);
        if (r != -EINVAL || !error || (exact ? !streq(error, message) : !strstr(error, message))) {
                fprintf(stderr, "derive of %s: expected -EINVAL '%s', got %d '%s'\n", service, message, r,
                        strna(error));
                abort();
        }
        ASSERT(d == (JsonValue *) 0x1); /* untouched on failure */
        ASSERT(bundle_derive(svc, p, &d, NULL) == -EINVAL);
}

static void test_bad_inputs(void) {
        BundleParams p = task_params(SECCOMP_MODE_AUTO);
#define GOOD_ROOT "\"root\":{\"path\":\"rootfs\"}"
#define GOOD_PROCESS "\"process\":{\"env\":[\"A=1\"]}"
        static const struct {
                const char *json, *message;
        } cases[] = {
                {"[]", "config.json: not a JSON object but array"},
                {"42", "config.json: not a JSON object but number"},
                {"\"config\"", "config.json: not a JSON object but string"},
                {"null", "config.json: not a JSON object but null"},
                {"{}", "config.json: ociVersion is missing"},
                {"{\"ociVersion\":1.0," GOOD_PROCESS "," GOOD_ROOT "}", "config.json: ociVersion is not a string"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_ROOT "}", "config.json: process is missing"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":[]," GOOD_ROOT "}", "config.json: process is not an object"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"env\":\"A=1\"}," GOOD_ROOT "}",
                 "config.json: process.env is not an array"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"env\":{}}," GOOD_ROOT "}",
                 "config.json: process.env is not an array"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"env\":[\"A=1\",\"B=2\",\"C=3\",4]}," GOOD_ROOT "}",
                 "config.json: process.env[3] is not a string"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"env\":[null]}," GOOD_ROOT "}",
                 "config.json: process.env[0] is not a string"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"user\":\"root\"}," GOOD_ROOT "}",
                 "config.json: process.user is not an object"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"cwd\":[]}," GOOD_ROOT "}",
                 "config.json: process.cwd is not a string"},
                {"{\"ociVersion\":\"1.0.2\",\"process\":{\"capabilities\":[]}," GOOD_ROOT "}",
                 "config.json: process.capabilities is not an object"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "}", "config.json: root is missing"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS ",\"root\":\"rootfs\"}",
                 "config.json: root is not an object"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS ",\"root\":{\"readonly\":true}}",
                 "config.json: root.path is missing"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS ",\"root\":{\"path\":7}}",
                 "config.json: root.path is not a string"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS ",\"root\":{\"path\":\"\"}}",
                 "config.json: root.path is empty"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"mounts\":{}}",
                 "config.json: mounts is not an array"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"mounts\":[1]}",
                 "config.json: mounts[0] is not an object"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"mounts\":[{\"destination\":\"/a\"},{}]}",
                 "config.json: mounts[1].destination is missing or not a string"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"annotations\":[]}",
                 "config.json: annotations is not an object"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"annotations\":{\"a\":\"b\",\"n\":1}}",
                 "config.json: annotations.n is not a string"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"hostname\":false}",
                 "config.json: hostname is not a string"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"linux\":[]}",
                 "config.json: linux is not an object"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"linux\":{\"namespaces\":{}}}",
                 "config.json: linux.namespaces is not an array"},
                {"{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT ",\"linux\":{\"seccomp\":\"default\"}}",
                 "config.json: linux.seccomp is not an object"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_derive_fails(cases[i].json, &p, cases[i].message, true);

        {
                JsonValue *d = NULL;
                ASSERT(bundle_derive(NULL, &p, &d, NULL) == -EINVAL && !d);
        }

        /* An advanced task: the image's own args are kept; extra bind mounts appended. */
        {
                const char *image =
                        "{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"/run-task\",\"x\"]},"
                        "\"mounts\":[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"}]," GOOD_ROOT "}";
                const BundleMount mounts[] = {
                        {"/etc/key", "/var/run/secrets/lagoon/ssh/ssh-privatekey", true},
                        {"/state/taskdata", "/run/lagoon-task", false},
                };
                _cleanup_json_ JsonValue *svc = NULL, *d = NULL;
                _cleanup_free_ char *text = NULL;
                BundleParams q = p;

                ASSERT(json_parse(image, strlen(image), 64, &svc, NULL) == 0);
                q.args = NULL;
                q.mounts_add = mounts;
                q.n_mounts_add = ELEMENTSOF(mounts);
                d = derive_ok(svc, &q);
                ASSERT(json_format(json_get_path(d, "process", "args", NULL), false, &text, NULL) == 0);
                ASSERT_STREQ(text, "[\"/run-task\",\"x\"]");
                text = mfree(text);
                ASSERT(json_format(json_get(d, "mounts"), false, &text, NULL) == 0);
                ASSERT_STREQ(text,
                             "[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},"
                             "{\"destination\":\"/var/run/secrets/lagoon/ssh/ssh-privatekey\",\"type\":\"bind\","
                             "\"source\":\"/etc/key\",\"options\":[\"rbind\",\"nosuid\",\"nodev\",\"ro\"]},"
                             "{\"destination\":\"/run/lagoon-task\",\"type\":\"bind\",\"source\":\"/state/taskdata\","
                             "\"options\":[\"rbind\",\"nosuid\",\"nodev\",\"rw\"]}]");

                q.mounts_add = (const BundleMount[]){{"relative", "/x", true}};
                q.n_mounts_add = 1;
                assert_derive_fails(image, &q, "needs absolute paths", false);
        }

        /* Bad parameters. */
        {
                const char *good = "{\"ociVersion\":\"1.0.2\"," GOOD_PROCESS "," GOOD_ROOT "}";
                BundleParams q;

                q = p;
                q.args = NULL; /* keep the image's own: but it has none */
                assert_derive_fails(good, &q, "process.args is missing or empty", false);
                q = p;
                q.args = (char *[]){NULL};
                assert_derive_fails(good, &q, "no command", false);
                q = p;
                q.root_path = "rootfs";
                assert_derive_fails(good, &q, "'rootfs' is not absolute", false);
                q = p;
                q.root_path = NULL;
                assert_derive_fails(good, &q, "is not absolute", false);
                q = p;
                q.env_add = STRV("NOVALUE");
                assert_derive_fails(good, &q, "'NOVALUE'", false);
                q = p;
                q.env_add = STRV("=x");
                assert_derive_fails(good, &q, "'=x'", false);
                q = p;
                q.env_remove = STRV("A=1");
                assert_derive_fails(good, &q, "'A=1'", false);
                q = p;
                q.annotations = STRV("novalue");
                assert_derive_fails(good, &q, "'novalue'", false);
                q = p;
                q.seccomp = SECCOMP_MODE_PROFILE;
                q.seccomp_profile = NULL;
                assert_derive_fails(good, &q, "seccomp profile", false);
                _cleanup_json_ JsonValue *not_object = parse("[1]");
                q.seccomp_profile = not_object;
                assert_derive_fails(good, &q, "seccomp profile", false);
                q = p;
                q.seccomp = (SeccompMode) 17;
                assert_derive_fails(good, &q, "seccomp mode", false);
        }
        printf("bad configs and parameters: -EINVAL with a precise message, output untouched\n");
}

/* Replaces the n-th node (pre-order, root excluded) of v by r; returns true when done. */
static bool replace_nth(JsonValue *v, size_t *n, const JsonValue *r) {
        for (size_t i = 0; i < json_length(v); i++) {
                JsonValue *child = json_is_object(v) ? json_object_value_at(v, i) : json_array_at(v, i);
                if ((*n)-- == 0) {
                        if (json_is_object(v))
                                ASSERT_OK(json_object_set(v, json_object_key_at(v, i), json_copy(r)));
                        else {
                                ASSERT_OK(json_array_remove_at(v, i));
                                ASSERT_OK(json_array_append(v, json_copy(r)));
                        }
                        return true;
                }
                if (replace_nth(child, n, r))
                        return true;
        }
        return false;
}

/* Every node of every real config replaced by every kind of value: derive must answer
 * 0 or -EINVAL with a message, in every mode, and never crash. */
static void test_mutations(void) {
        const char *replacements[] = {"null", "true",           "0",  "-1",          "\"\"", "\"x\"",
                                      "[]",   "[1,\"a\",null]", "{}", "{\"path\":1}"};
        _cleanup_json_ JsonValue *profile = parse("{\"defaultAction\":\"SCMP_ACT_ALLOW\"}");
        size_t total = 0, accepted = 0;

        for (const char *const *f = data_files; *f; f++) {
                _cleanup_json_ JsonValue *orig = load_data(*f);

                for (size_t k = 0; k < ELEMENTSOF(replacements); k++) {
                        _cleanup_json_ JsonValue *r = parse(replacements[k]);

                        for (size_t target = 0;; target++) {
                                _cleanup_json_ JsonValue *m = json_copy(orig);
                                size_t n = target;

                                ASSERT(m);
                                if (!replace_nth(m, &n, r))
                                        break;
                                for (SeccompMode mode = SECCOMP_MODE_AUTO; mode <= SECCOMP_MODE_PROFILE; mode++) {
                                        _cleanup_json_ JsonValue *d = NULL;
                                        _cleanup_free_ char *error = NULL;
                                        BundleParams p = task_params(mode);
                                        int ret;

                                        p.seccomp_profile = profile;
                                        ret = bundle_derive(m, &p, &d, &error);
                                        ASSERT(ret == 0 || ret == -EINVAL);
                                        ASSERT(ret == 0 ? d && !error
                                                        : !d && error && startswith(error, "config.json: "));
                                        total++;
                                        accepted += ret == 0;
                                }
                        }
                }
        }
        printf("mutations: %zu derivations of damaged real configs, %zu accepted, the rest refused cleanly\n", total,
               accepted);
}

static void test_rootfs_path(void) {
        _cleanup_json_ JsonValue *rel = parse("{\"root\":{\"path\":\"rootfs\"}}");
        _cleanup_json_ JsonValue *dot = parse("{\"root\":{\"path\":\"./rootfs\"}}");
        _cleanup_json_ JsonValue *abs = parse("{\"root\":{\"path\":\"/var/lib/x/rootfs\"}}");
        _cleanup_json_ JsonValue *none = parse("{\"root\":{}}");
        _cleanup_json_ JsonValue *empty = parse("{\"root\":{\"path\":\"\"}}");
        _cleanup_free_ char *cwd = getcwd(NULL, 0), *expected = NULL;
        char *s = NULL;

        ASSERT_OK(bundle_rootfs_path("/run/b", rel, &s));
        ASSERT_STREQ(s, "/run/b/rootfs");
        s = mfree(s);
        ASSERT_OK(bundle_rootfs_path("/run/b/", dot, &s));
        ASSERT_STREQ(s, "/run/b/rootfs");
        s = mfree(s);
        ASSERT_OK(bundle_rootfs_path("/run/b", abs, &s));
        ASSERT_STREQ(s, "/var/lib/x/rootfs");
        s = mfree(s);
        ASSERT(cwd);
        ASSERT(asprintf(&expected, "%s/bundles/b/rootfs", cwd) > 0);
        ASSERT_OK(bundle_rootfs_path("bundles/b", rel, &s));
        ASSERT_STREQ(s, expected);
        s = mfree(s);
        ASSERT(bundle_rootfs_path("/run/b", none, &s) == -EINVAL && !s);
        ASSERT(bundle_rootfs_path("/run/b", empty, &s) == -EINVAL && !s);
        ASSERT(bundle_rootfs_path("/run/b", NULL, &s) == -EINVAL && !s);
        printf("rootfs path: relative, ./relative, absolute, relative bundle dir, missing\n");
}

static void write_file(const char *dir, const char *name, const char *content, mode_t mode) {
        _cleanup_free_ char *p = path_join(dir, name);
        _cleanup_close_ int fd = -EBADF;
        size_t l = strlen(content);

        ASSERT(p);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        ASSERT(fd >= 0);
        ASSERT(write(fd, content, l) == (ssize_t) l);
        ASSERT(fchmod(fd, mode) == 0);
}

static void test_read_config(void) {
        char dir[] = "/tmp/test-bundle-read.XXXXXX";
        _cleanup_free_ char *src = NULL, *text = NULL, *error = NULL, *cfg = NULL;
        _cleanup_json_ JsonValue *v = NULL, *expected = load_data("umoci-busybox.json");
        int r;

        ASSERT(mkdtemp(dir));
        cfg = path_join(dir, "config.json");
        ASSERT(cfg);

        r = bundle_read_config(dir, &v, &error);
        ASSERT(r == -ENOENT && !v && error && strstr(error, cfg));
        error = mfree(error);

        src = path_join(data_dir, "umoci-busybox.json");
        ASSERT_OK(read_full_file(src, 1 << 20, &text, NULL));
        write_file(dir, "config.json", text, 0644);
        ASSERT_OK(bundle_read_config(dir, &v, &error));
        ASSERT(!error);
        assert_same(v, expected, "read config");
        v = json_free(v);

        write_file(dir, "config.json", "{\"ociVersion\": \"1.0.2\",", 0644);
        r = bundle_read_config(dir, &v, &error);
        ASSERT(r == -EINVAL && !v && error && strstr(error, cfg));
        error = mfree(error);

        {
                char deep[400];
                memset(deep, '[', sizeof(deep) - 1);
                deep[sizeof(deep) - 1] = 0;
                write_file(dir, "config.json", deep, 0644);
                r = bundle_read_config(dir, &v, &error);
                ASSERT(r == -EINVAL && !v && error && strstr(error, cfg));
                error = mfree(error);
        }

        {
                _cleanup_close_ int fd = open(cfg, O_WRONLY | O_TRUNC | O_CLOEXEC);
                ASSERT(fd >= 0);
                ASSERT(ftruncate(fd, 4 * 1024 * 1024 + 1) == 0);
        }
        r = bundle_read_config(dir, &v, &error);
        ASSERT(r == -EFBIG && !v && error && strstr(error, "larger"));
        error = mfree(error);

        ASSERT_OK(rm_rf(dir));
        printf("read config: good, missing, broken, too deep, over 4 MiB\n");
}

static void make_dirs(const char *root, const char *rel) {
        _cleanup_free_ char *p = path_join(root, rel);
        ASSERT(p);
        ASSERT_OK(mkdir_p(p, 0755));
}

static void make_link(const char *root, const char *rel, const char *target) {
        _cleanup_free_ char *p = path_join(root, rel);
        ASSERT(p);
        ASSERT(symlink(target, p) == 0);
}

static char *make_rootfs(const char *base, const char *name) {
        char *p = path_join(base, name);
        ASSERT(p);
        ASSERT(mkdir(p, 0755) == 0);
        return p;
}

static void assert_args_sh(const char *rootfs, bool lagoon, bool has_sh) {
        _cleanup_strv_free_ char **args = NULL, **with_init = NULL;

        /* An init goes before the plain shell only (Lagoon images bring tini), and only
         * when there is a shell for it to start (else the launch fails, as without). */
        ASSERT(bundle_command_args(rootfs, "drush cr; echo 'x'", "/dev/init", &with_init) ==
               (!lagoon && has_sh ? 1 : 0));
        if (lagoon)
                ASSERT_STREQ(with_init[0], "/sbin/tini");
        else if (!has_sh)
                ASSERT_STREQ(with_init[0], "/bin/sh");
        else {
                ASSERT(strv_length(with_init) == 5);
                ASSERT_STREQ(with_init[0], "/dev/init");
                ASSERT_STREQ(with_init[1], "--");
                ASSERT_STREQ(with_init[2], "/bin/sh");
                ASSERT_STREQ(with_init[4], "drush cr; echo 'x'");
        }

        ASSERT(bundle_command_args(rootfs, "drush cr; echo 'x'", NULL, &args) == 0);
        if (lagoon) {
                ASSERT(strv_length(args) == 6);
                ASSERT_STREQ(args[0], "/sbin/tini");
                ASSERT_STREQ(args[1], "--");
                ASSERT_STREQ(args[2], "/lagoon/entrypoints.sh");
                ASSERT_STREQ(args[3], "/bin/sh");
                ASSERT_STREQ(args[4], "-c");
                ASSERT_STREQ(args[5], "drush cr; echo 'x'");
        } else {
                if (strv_length(args) != 3) {
                        fprintf(stderr, "%s: expected the plain shell, got %s\n", rootfs, args[0]);
                        abort();
                }
                ASSERT_STREQ(args[0], "/bin/sh");
                ASSERT_STREQ(args[1], "-c");
                ASSERT_STREQ(args[2], "drush cr; echo 'x'");
        }
}

static void assert_args(const char *rootfs, bool lagoon) {
        assert_args_sh(rootfs, lagoon, false);
}

static void check_command_args(const char *base) {
        _cleanup_free_ char *empty = NULL, *only_tini = NULL, *both = NULL, *noexec = NULL, *merged = NULL,
                            *escape_abs = NULL, *escape_dots = NULL, *linked = NULL, *loop = NULL, *dir_tini = NULL,
                            *host = NULL, *missing = NULL, *host_file = NULL;
        char **args = NULL;

        empty = path_join(base, "empty");
        only_tini = path_join(base, "only-tini");
        both = path_join(base, "both");
        noexec = path_join(base, "noexec");
        merged = path_join(base, "merged");
        escape_abs = path_join(base, "escape-abs");
        escape_dots = path_join(base, "escape-dots");
        linked = path_join(base, "linked");
        loop = path_join(base, "loop");
        dir_tini = path_join(base, "dir-tini");
        host = path_join(base, "host");
        missing = path_join(base, "missing");
        ASSERT(empty && only_tini && both && noexec && merged && escape_abs && escape_dots && linked && loop &&
               dir_tini && host && missing);

        assert_args(empty, false);
        assert_args(only_tini, false);
        assert_args(both, true);
        assert_args(noexec, false);
        assert_args(merged, true);
        assert_args(escape_abs, false);
        assert_args(escape_dots, false);
        assert_args(linked, true);
        assert_args(loop, false);
        assert_args(dir_tini, false);
        {
                _cleanup_free_ char *plain_sh = path_join(base, "plain-sh");
                ASSERT(plain_sh);
                assert_args_sh(plain_sh, false, true);
        }
        /* The escaping links do point at real files on the host side. */
        host_file = path_join(host, "lagoon/entrypoints.sh");
        ASSERT(host_file && access(host_file, X_OK) == 0);
        ASSERT(bundle_command_args(missing, "x", NULL, &args) == -ENOENT && !args);
        ASSERT(bundle_command_args(NULL, "x", NULL, &args) == -EINVAL && !args);
}

static void setup_rootfs_layouts(const char *base) {
        _cleanup_free_ char *r = NULL, *host = NULL, *dots = NULL;

        /* Outside every rootfs: a complete Lagoon layout the escaping links aim at. */
        host = make_rootfs(base, "host");
        make_dirs(host, "sbin");
        make_dirs(host, "lagoon");
        write_file(host, "sbin/tini", "#!/bin/sh\n", 0755);
        write_file(host, "lagoon/entrypoints.sh", "#!/bin/sh\n", 0755);

        free(make_rootfs(base, "empty"));

        r = make_rootfs(base, "plain-sh");
        make_dirs(r, "bin");
        write_file(r, "bin/sh", "#!/bin/sh\n", 0755);
        r = mfree(r);

        r = make_rootfs(base, "only-tini");
        make_dirs(r, "sbin");
        write_file(r, "sbin/tini", "#!/bin/sh\n", 0755);
        r = mfree(r);

        r = make_rootfs(base, "both");
        make_dirs(r, "sbin");
        make_dirs(r, "lagoon");
        write_file(r, "sbin/tini", "#!/bin/sh\n", 0755);
        write_file(r, "lagoon/entrypoints.sh", "#!/bin/sh\n", 0755);
        r = mfree(r);

        r = make_rootfs(base, "noexec");
        make_dirs(r, "sbin");
        make_dirs(r, "lagoon");
        write_file(r, "sbin/tini", "#!/bin/sh\n", 0755);
        write_file(r, "lagoon/entrypoints.sh", "#!/bin/sh\n", 0644);
        r = mfree(r);

        /* Merged /usr with an absolute link: must resolve inside the rootfs. */
        r = make_rootfs(base, "merged");
        make_dirs(r, "usr/sbin");
        make_dirs(r, "lagoon");
        make_link(r, "sbin", "/usr/sbin");
        write_file(r, "usr/sbin/tini", "#!/bin/sh\n", 0755);
        write_file(r, "lagoon/entrypoints.sh", "#!/bin/sh\n", 0755);
        r = mfree(r);

        /* Absolute link to the host's copy: seen from inside the rootfs it does not exist. */
        r = make_rootfs(base, "escape-abs");
        make_dirs(r, "sbin");
        write_file(r, "sbin/tini", "#!/bin/sh\n", 0755);
        {
                _cleanup_free_ char *t = path_join(host, "lagoon");
                make_link(r, "lagoon", t);
        }
        r = mfree(r);

        /* Relative link climbing out with "..": clamped at the rootfs. */
        r = make_rootfs(base, "escape-dots");
        make_dirs(r, "sbin");
        make_dirs(r, "lagoon");
        write_file(r, "sbin/tini", "#!/bin/sh\n", 0755);
        ASSERT(asprintf(&dots, "../../../../../../../../../..%s/lagoon/entrypoints.sh", host) > 0);
        make_link(r, "lagoon/entrypoints.sh", dots);
        r = mfree(r);

        /* Links that stay inside are fine, also through "..". */
        r = make_rootfs(base, "linked");
        make_dirs(r, "sbin");
        make_dirs(r, "lagoon");
        make_dirs(r, "opt/bin");
        write_file(r, "opt/bin/tini", "#!/bin/sh\n", 0755);
        write_file(r, "opt/bin/entry", "#!/bin/sh\n", 0755);
        make_link(r, "sbin/tini", "../opt/./bin/tini");
        make_link(r, "lagoon/entrypoints.sh", "/../../opt/bin/entry");
        r = mfree(r);

        r = make_rootfs(base, "loop");
        make_dirs(r, "sbin");
        make_dirs(r, "lagoon");
        make_link(r, "sbin/tini", "/sbin/tini2");
        make_link(r, "sbin/tini2", "tini");
        write_file(r, "lagoon/entrypoints.sh", "#!/bin/sh\n", 0755);
        r = mfree(r);

        r = make_rootfs(base, "dir-tini");
        make_dirs(r, "sbin/tini");
        make_dirs(r, "lagoon");
        write_file(r, "lagoon/entrypoints.sh", "#!/bin/sh\n", 0755);
        r = mfree(r);
}

static void test_command_args(void) {
        char base[] = "/tmp/test-bundle-args.XXXXXX";
        int status;
        pid_t pid;

        ASSERT(mkdtemp(base));
        setup_rootfs_layouts(base);

        check_command_args(base);

        /* Again without openat2(), as on kernels before 5.6: the fallback walker. */
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
                ASSERT(ctx);
                ASSERT(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name("openat2"), 0) == 0);
                ASSERT(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
                ASSERT(seccomp_load(ctx) == 0);
                errno = 0;
                ASSERT(syscall(SYS_openat2, AT_FDCWD, "/", NULL, 0) < 0 && errno == ENOSYS);
                check_command_args(base);
                _exit(0);
        }
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        ASSERT_OK(rm_rf(base));
        printf("command args: Lagoon wrapper only with both executables inside the rootfs; links resolved in the "
               "rootfs, escapes refused; same with the openat2-less fallback\n");
}

/* ---- root only: run derived configs with runc ---- */

static int copy_file(const char *from, const char *to, mode_t mode) {
        _cleanup_free_ char *data = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t size = 0;
        int r;

        r = read_full_file(from, 64 * 1024 * 1024, &data, &size);
        if (r < 0)
                return r;
        fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                return -errno;
        if (write(fd, data, size) != (ssize_t) size)
                return -EIO;
        return 0;
}

typedef struct Run {
        int status;
        char *output;
} Run;

/* Derives from the runc spec config, writes a bundle and runs it with `runc run`. */
static Run
run_task(const char *base, const char *runc, const char *command, SeccompMode mode, bool sys_admin, char **ret_id) {
        static unsigned counter = 0;
        _cleanup_json_ JsonValue *svc = load_data("runc-spec.json"), *d = NULL;
        _cleanup_free_ char *bundle = NULL, *rootfs = NULL, *state = NULL, *out = NULL, *text = NULL, *cgroup = NULL,
                            *hostname = NULL, *env = NULL;
        char id[64];
        const char *args[] = {"/bin/sh", "-c", command, NULL};
        char *env_add[] = {NULL, NULL};
        BundleParams p;
        Run run = {};
        pid_t pid;

        snprintf(id, sizeof(id), "lagoon-taskd-test-%d-%u", (int) getpid(), ++counter);
        ASSERT(asprintf(&bundle, "%s/bundle-%u", base, counter) > 0);
        ASSERT(asprintf(&out, "%s/out-%u", base, counter) > 0);
        ASSERT(asprintf(&cgroup, "/lagoon-taskd-test/%s", id) > 0);
        ASSERT(asprintf(&hostname, "task-%u", counter) > 0);
        ASSERT(asprintf(&env, "TASK_DATA_ID=%u", counter) > 0);
        rootfs = path_join(base, "rootfs");
        state = path_join(base, "state");
        ASSERT(rootfs && state);
        ASSERT(mkdir(bundle, 0755) == 0);
        env_add[0] = env;

        p = (BundleParams){
                .args = (char *const *) args,
                .env_add = env_add,
                .env_remove = task_env_remove,
                .hostname = hostname,
                .root_path = rootfs,
                .cgroups_path = cgroup,
                .annotations = task_annotations,
                .seccomp = mode,
        };
        d = derive_ok(svc, &p);
        if (sys_admin) {
                const char *sets[] = {"bounding", "effective", "permitted"};
                for (size_t i = 0; i < ELEMENTSOF(sets); i++)
                        ASSERT_OK(json_array_append(json_get_path(d, "process", "capabilities", sets[i], NULL),
                                                    json_new_string("CAP_SYS_ADMIN")));
        }
        ASSERT_OK(json_format(d, true, &text, NULL));
        write_file(bundle, "config.json", text, 0644);

        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
                int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (in < 0 || o < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(o, 2) < 0)
                        _exit(127);
                execl(runc, runc, "--root", state, "run", "--bundle", bundle, id, (char *) NULL);
                _exit(127);
        }
        ASSERT(waitpid(pid, &run.status, 0) == pid);
        ASSERT_OK(read_full_file(out, 1 << 20, &run.output, NULL));
        if (ret_id)
                *ret_id = strdup(id);
        return run;
}

static void assert_exit(const Run *r, int code, const char *what) {
        if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != code) {
                fprintf(stderr, "%s: expected exit %d, got status 0x%x, output:\n%s\n", what, code, r->status,
                        r->output);
                abort();
        }
}

static void assert_refused(const Run *r, const char *message) {
        if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) == 0 || !strstr(r->output, message)) {
                fprintf(stderr, "expected a failure with '%s', got status 0x%x, output:\n%s\n", message, r->status,
                        r->output);
                abort();
        }
}

static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

static void remove_test_cgroups(void) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        d = opendir("/sys/fs/cgroup");
        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *p = NULL;
                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&p, "/sys/fs/cgroup/%s/lagoon-taskd-test", de->d_name) < 0)
                        continue;
                (void) rmdir(p); /* runc removed the task's own; only our empty parent is left */
        }
        (void) rmdir("/sys/fs/cgroup/lagoon-taskd-test");
}

/* Derives a config for crun with the profile precompiled (seccomp_bpf), optionally
 * without linux.seccomp so that only the program can confine the task, and runs it with
 * `crun run` where crun works on a hybrid host: a private mount namespace without
 * /sys/fs/cgroup/unified, no cgroup manager. */
static Run run_crun(const char *base,
                    const char *crun,
                    const char *command,
                    SeccompMode mode,
                    const JsonValue *profile,
                    bool precompiled,
                    bool drop_json) {
        static unsigned counter = 0;
        _cleanup_json_ JsonValue *svc = load_data("runc-spec.json"), *d = NULL;
        _cleanup_free_ char *bundle = NULL, *rootfs = NULL, *state = NULL, *out = NULL, *text = NULL;
        const char *args[] = {"/bin/sh", "-c", command, NULL};
        const char *bpf;
        char id[64];
        BundleParams p;
        Run run = {};
        pid_t pid;

        snprintf(id, sizeof(id), "lagoon-taskd-test-crun-%d-%u", (int) getpid(), ++counter);
        ASSERT(asprintf(&bundle, "%s/crun-bundle-%u", base, counter) > 0);
        ASSERT(asprintf(&out, "%s/crun-out-%u", base, counter) > 0);
        rootfs = path_join(base, "rootfs");
        state = path_join(base, "crun-state");
        ASSERT(rootfs && state);
        ASSERT(mkdir(bundle, 0755) == 0);

        p = (BundleParams){
                .args = (char *const *) args,
                .env_remove = task_env_remove,
                .hostname = "task-crun",
                .root_path = rootfs,
                .annotations = task_annotations,
                .seccomp = mode,
                .seccomp_profile = profile,
                .seccomp_bpf = precompiled,
        };
        d = derive_ok(svc, &p);
        bpf = json_get_string(json_get(d, "annotations"), SECCOMP_BPF_ANNOTATION);
        ASSERT(!precompiled == !bpf);
        if (drop_json)
                ASSERT_OK(json_object_remove(json_get(d, "linux"), "seccomp"));
        ASSERT_OK(json_format(d, true, &text, NULL));
        write_file(bundle, "config.json", text, 0644);

        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
                int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (in < 0 || o < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(o, 2) < 0)
                        _exit(127);
                if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                        _exit(126);
                if (umount2("/sys/fs/cgroup/unified", MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                        _exit(125);
                execl(crun, crun, "--root", state, "--cgroup-manager=disabled", "run", "--bundle", bundle, id,
                      (char *) NULL);
                _exit(127);
        }
        ASSERT(waitpid(pid, &run.status, 0) == pid);
        ASSERT_OK(read_full_file(out, 1 << 20, &run.output, NULL));
        return run;
}

/* The precompiled program, run by the real crun: what the profile denies is denied with
 * the profile's errno, what it allows works, also with linux.seccomp taken out (so it is
 * the program, not crun's own compilation, that does it), and as crun's own build of
 * the JSON does. */
static void test_crun(const char *base) {
        _cleanup_free_ char *crun = NULL;
        _cleanup_json_ JsonValue *exdev = parse(
                "{\"defaultAction\":\"SCMP_ACT_ALLOW\",\"architectures\":[\"SCMP_ARCH_X86_64\",\"SCMP_ARCH_X86\"],"
                "\"syscalls\":[{\"names\":[\"mkdir\",\"mkdirat\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":18},"
                "{\"names\":[\"unshare\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":22,\"args\":[{\"index\":0,"
                "\"value\":268435456,\"valueTwo\":268435456,\"op\":\"SCMP_CMP_MASKED_EQ\"}]}]}");
        Run r;

        if (find_executable("crun", &crun) < 0) {
                printf("skip: crun not installed\n");
                return;
        }
        for (int drop_json = 0; drop_json <= 1; drop_json++) {
                r = run_crun(base, crun, "mkdir /tmp/x", SECCOMP_MODE_PROFILE, exdev, true, drop_json);
                assert_refused(&r, "cross-device link"); /* EXDEV, the profile's errnoRet */
                free(r.output);
                /* An argument condition: CLONE_NEWUSER (0x10000000) gets EINVAL (without the
                 * filter, a user namespace needs no capability and is made). */
                r = run_crun(base, crun, "unshare -U true", SECCOMP_MODE_PROFILE, exdev, true, drop_json);
                assert_refused(&r, "Invalid argument");
                free(r.output);
                r = run_crun(base, crun, "echo hello | cat", SECCOMP_MODE_PROFILE, exdev, true, drop_json);
                assert_exit(&r, 0, "allowed by the precompiled profile");
                ASSERT(strstr(r.output, "hello\n"));
                free(r.output);

                /* The built-in default. */
                r = run_crun(base, crun, "unshare -U true", SECCOMP_MODE_DEFAULT, NULL, true, drop_json);
                assert_refused(&r, "Operation not permitted");
                free(r.output);
                r = run_crun(base, crun, "echo hello | cat", SECCOMP_MODE_DEFAULT, NULL, true, drop_json);
                assert_exit(&r, 0, "default profile precompiled");
                ASSERT(strstr(r.output, "hello\n"));
                free(r.output);
        }
        /* crun compiling the JSON itself answers the same. */
        r = run_crun(base, crun, "mkdir /tmp/x", SECCOMP_MODE_PROFILE, exdev, false, false);
        assert_refused(&r, "cross-device link");
        free(r.output);
        printf("crun: precompiled profiles (also without linux.seccomp) deny with the profile's errno (EXDEV, "
               "EINVAL on an argument, EPERM by default) and allow the rest\n");
}

static void test_runc(void) {
        char base[] = "/tmp/test-bundle-runc.XXXXXX";
        _cleanup_free_ char *runc = NULL, *rootfs = NULL, *busybox = NULL, *id = NULL, *expect = NULL;
        const char *applets[] = {"sh", "cat", "echo", "unshare", "mount", "mkdir", "true"};
        Run r;

        if (geteuid() != 0) {
                printf("skip: running derived configs with runc needs root\n");
                return;
        }
        if (find_executable("runc", &runc) < 0) {
                printf("skip: runc not installed\n");
                return;
        }
        if (access("/bin/busybox", X_OK) < 0) {
                printf("skip: /bin/busybox (busybox-static) not installed\n");
                return;
        }

        ASSERT(mkdtemp(base));
        rootfs = path_join(base, "rootfs");
        ASSERT(rootfs);
        make_dirs(rootfs, "bin");
        make_dirs(rootfs, "proc");
        make_dirs(rootfs, "dev");
        make_dirs(rootfs, "sys");
        make_dirs(rootfs, "tmp");
        make_dirs(rootfs, "mnt");
        busybox = path_join(rootfs, "bin/busybox");
        ASSERT(busybox);
        ASSERT_OK(copy_file("/bin/busybox", busybox, 0755));
        for (size_t i = 0; i < ELEMENTSOF(applets); i++) {
                _cleanup_free_ char *l = NULL;
                ASSERT(asprintf(&l, "bin/%s", applets[i]) > 0);
                make_link(rootfs, l, "busybox");
        }

        /* The exit code comes through. */
        r = run_task(base, runc, "exit 3", SECCOMP_MODE_DEFAULT, false, NULL);
        assert_exit(&r, 3, "exit 3");
        free(r.output);

        /* Fork (a pipe) works under the default profile; variables, hostname and the
         * cgroup are the task's. No cgroup namespace here, so the path shows as is. */
        r = run_task(base, runc,
                     "echo hello | cat; echo \"id=$TASK_DATA_ID cron=${CRONJOBS-unset}\"; "
                     "cat /proc/sys/kernel/hostname; cat /proc/self/cgroup",
                     SECCOMP_MODE_DEFAULT, false, &id);
        assert_exit(&r, 0, "pipe");
        ASSERT(strstr(r.output, "hello\n"));
        ASSERT(strstr(r.output, "id=2 cron=unset\n"));
        ASSERT(strstr(r.output, "task-2\n"));
        ASSERT(asprintf(&expect, "/lagoon-taskd-test/%s\n", id) > 0);
        if (!strstr(r.output, expect)) {
                fprintf(stderr, "cgroupsPath not applied, output:\n%s\n", r.output);
                abort();
        }
        free(r.output);

        /* A user namespace needs no capability: only the filter stops it. */
        r = run_task(base, runc, "unshare -U true", SECCOMP_MODE_DEFAULT, false, NULL);
        assert_refused(&r, "Operation not permitted");
        free(r.output);
        r = run_task(base, runc, "unshare -U true", SECCOMP_MODE_UNCONFINED, false, NULL);
        assert_exit(&r, 0, "unshare -U unconfined");
        free(r.output);

        /* mount with CAP_SYS_ADMIN: refused by the default profile, allowed unconfined. */
        r = run_task(base, runc, "mount -t tmpfs tmpfs /mnt", SECCOMP_MODE_DEFAULT, true, NULL);
        assert_refused(&r, "permission denied"); /* busybox's words for EPERM */
        free(r.output);
        r = run_task(base, runc, "mount -t tmpfs tmpfs /mnt && echo mounted", SECCOMP_MODE_UNCONFINED, true, NULL);
        assert_exit(&r, 0, "mount unconfined");
        ASSERT(strstr(r.output, "mounted"));
        free(r.output);

        /* AUTO on a config without a profile: the default, so the same refusal. */
        r = run_task(base, runc, "unshare -U true", SECCOMP_MODE_AUTO, false, NULL);
        ASSERT(WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0);
        free(r.output);

        test_crun(base);

        remove_test_cgroups();
        ASSERT_OK(rm_rf(base));
        printf("runc: derived config runs (exit 3 kept, cgroupsPath applied); default seccomp blocks unshare -U and "
               "mount that unconfined allows\n");
}

static const char *mount_source_at(const JsonValue *c, const char *destination) {
        const JsonValue *mounts = json_get(c, "mounts");

        for (size_t i = 0; i < json_length(mounts); i++)
                if (streq_ptr(json_get_string(json_array_at(mounts, i), "destination"), destination))
                        return json_get_string(json_array_at(mounts, i), "source");
        return NULL;
}

static bool has_mount(const JsonValue *c, const char *destination) {
        const JsonValue *mounts = json_get(c, "mounts");

        for (size_t i = 0; i < json_length(mounts); i++)
                if (streq_ptr(json_get_string(json_array_at(mounts, i), "destination"), destination))
                        return true;
        return false;
}

/* A node clone of a containerd CRI container: joined to the pod's network, a private uts
 * for its hostname, ipc and pid as the service had them, the kubelet's termination-log
 * file left out, hosts/resolv.conf/hostname/shm and volumes kept, the CRI annotations and
 * the sysctls of joined namespaces dropped, our cgroup instead of the kubepods slice. */
static void test_cri_clone(void) {
        _cleanup_json_ JsonValue *svc = load_data("containerd-cri-spec.json"), *d = NULL, *d2 = NULL, *bare = NULL,
                                 *d3 = NULL, *d4 = NULL;
        _cleanup_free_ char *error = NULL;
        BundleParams p = task_params(SECCOMP_MODE_AUTO);
        const JsonValue *ann;
        const char *const kept_mounts[] = {"/proc",
                                           "/dev",
                                           "/dev/shm",
                                           "/etc/hosts",
                                           "/etc/hostname",
                                           "/etc/resolv.conf",
                                           "/var/run/secrets/lagoon/sshkey",
                                           "/app/docroot/sites/default/files",
                                           NULL};

        p.netns_path = "/proc/777/ns/net";
        d = derive_ok(svc, &p);

        assert_json(json_get_path(d, "linux", "namespaces", NULL),
                    "[{\"type\":\"pid\"},{\"type\":\"ipc\",\"path\":\"/proc/4242/ns/ipc\"},{\"type\":\"uts\"},"
                    "{\"type\":\"mount\"},{\"type\":\"network\",\"path\":\"/proc/777/ns/net\"}]",
                    "namespaces of a CRI clone");
        ASSERT_STREQ(json_get_string(d, "hostname"), "task-42");
        ASSERT_STREQ(json_string(json_get_path(d, "linux", "cgroupsPath", NULL)), "/lagoon-taskd-test/42");
        assert_json(json_get_path(d, "linux", "sysctl", NULL), "{\"kernel.domainname\":\"example\"}",
                    "sysctls of a CRI clone");
        for (const char *const *m = kept_mounts; *m; m++)
                if (!has_mount(d, *m)) {
                        fprintf(stderr, "mount %s lost\n", *m);
                        abort();
                }
        ASSERT(!has_mount(d, "/dev/termination-log"));
        ASSERT(json_length(json_get(d, "mounts")) == json_length(json_get(svc, "mounts")) - 1);
        ASSERT_STREQ(mount_source_at(d, "/etc/hosts"),
                     "/var/lib/kubelet/pods/6c1f0b9e-3a57-4d2c-9e8b-1f2a3b4c5d6e/etc-hosts");

        ann = json_get(d, "annotations");
        for (size_t i = 0; i < json_length(ann); i++)
                ASSERT(!startswith(json_object_key_at(ann, i), "io.kubernetes."));
        ASSERT_STREQ(json_get_string(ann, "sh.lagoon.task.id"), "42");
        ASSERT(json_length(ann) == 3);

        /* Kept as the service had them. */
        assert_same(json_get_path(d, "process", "user", NULL), json_get_path(svc, "process", "user", NULL), "user");
        assert_same(json_get_path(d, "linux", "resources", NULL), json_get_path(svc, "linux", "resources", NULL),
                    "resources");
        assert_same(json_get_path(d, "linux", "seccomp", NULL), json_get_path(svc, "linux", "seccomp", NULL),
                    "seccomp (auto: the service's)");
        assert_same(json_get_path(d, "linux", "maskedPaths", NULL), json_get_path(svc, "linux", "maskedPaths", NULL),
                    "maskedPaths");

        /* Deriving twice (an adopted clone's config re-derived) changes nothing more. */
        d2 = derive_ok(d, &p);
        assert_same(json_get(d2, "linux"), json_get(d, "linux"), "linux, derived twice");
        assert_same(json_get(d2, "mounts"), json_get(d, "mounts"), "mounts, derived twice");

        /* Without any namespaces (a host-network pod): uts and network are added. */
        bare = json_copy(svc);
        ASSERT(bare);
        ASSERT_OK(json_object_remove(json_get(bare, "linux"), "namespaces"));
        d3 = derive_ok(bare, &p);
        assert_json(json_get_path(d3, "linux", "namespaces", NULL),
                    "[{\"type\":\"uts\"},{\"type\":\"network\",\"path\":\"/proc/777/ns/net\"}]", "namespaces added");
        assert_json(json_get_path(d3, "linux", "sysctl", NULL),
                    "{\"kernel.shmmax\":\"68719476736\",\"kernel.domainname\":\"example\"}",
                    "ipc sysctls kept when ipc is not joined");

        /* No hostname and no netns (what local mode never asks for): namespaces untouched. */
        p.hostname = NULL;
        p.netns_path = NULL;
        d4 = derive_ok(svc, &p);
        assert_same(json_get_path(d4, "linux", "namespaces", NULL), json_get_path(svc, "linux", "namespaces", NULL),
                    "namespaces without hostname and netns");

        p = task_params(SECCOMP_MODE_AUTO);
        p.netns_path = "proc/1/ns/net";
        ASSERT(bundle_derive(svc, &p, &d4, &error) == -EINVAL);
        ASSERT(error && strstr(error, "network namespace path 'proc/1/ns/net' is not absolute"));
        printf("cri clone: pod network joined, private uts, termination-log, CRI annotations and joined sysctls "
               "dropped\n");
}

/* Only the kubelet's per-container file is taken for a termination log. */
static void test_termination_log_mounts(void) {
        static const struct {
                const char *mount;
                bool dropped;
        } cases[] = {
                {"{\"destination\":\"/dev/termination-log\",\"type\":\"bind\",\"source\":\"/x\"}", true},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods/u/containers/cli/0a1b\"}", true},
                {"{\"destination\":\"/msg\",\"source\":\"/k/pods/pods/u/containers/cli/0a1b\"}", true},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods/u/containers/cli/0a1b/\"}", false},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods/u/containers/cli/0a1b/x\"}", false},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods/u/containers/cli\"}", false},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods/u/volumes/cli/0a1b\"}", false},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods/u/containersX/cli/0a1b\"}", false},
                {"{\"destination\":\"/msg\",\"source\":\"/var/lib/kubelet/pods//containers/cli/0a1b\"}", false},
                {"{\"destination\":\"/msg\"}", false},
                {"{\"destination\":\"/msg\",\"source\":7}", false},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *text = NULL;
                _cleanup_json_ JsonValue *svc = NULL, *d = NULL;
                BundleParams p = task_params(SECCOMP_MODE_UNCONFINED);

                ASSERT(asprintf(&text,
                                "{\"ociVersion\":\"1.0.2\",\"process\":{\"args\":[\"sh\"]},"
                                "\"root\":{\"path\":\"rootfs\"},\"mounts\":[%s]}",
                                cases[i].mount) >= 0);
                svc = parse(text);
                d = derive_ok(svc, &p);
                if ((json_length(json_get(d, "mounts")) == 0) != cases[i].dropped) {
                        fprintf(stderr, "%s: expected %s\n", cases[i].mount, cases[i].dropped ? "dropped" : "kept");
                        abort();
                }
        }
        printf("termination-log mounts: only the kubelet's per-container file\n");
}

int main(void) {
        find_data_dir();
        test_real_configs();
        test_seccomp_modes();
        test_env_and_annotations();
        test_bad_inputs();
        test_mutations();
        test_rootfs_path();
        test_read_config();
        test_command_args();
        test_cri_clone();
        test_termination_log_mounts();
        test_runc();
        free(data_dir);
        return 0;
}
