/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Fuzzes the derivation of a task config from an arbitrary service config.json (and
 * the seccomp profile validation and its compilation for crun, the other readers of
 * outside JSON in this module): any JSON shape must give a config or -EINVAL with a
 * message, a program or -EOPNOTSUPP, never a crash. */

#include <stdint.h>

#include "bundle.h"
#include "json.h"
#include "seccomp-bpf.h"
#include "seccomp-profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const args[] = {"/bin/sh", "-c", "drush cr", NULL};
static const char *const env_add[] = {"PATH=/usr/bin:/bin", "TASK_DATA_ID=1", "LAGOON_PROJECT=p", NULL};
static const char *const env_remove[] = {"CRONJOBS", NULL};
static const char *const annotations[] = {"sh.lagoon.task.id=1", "org.opencontainers.image.os=linux", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ JsonValue *v = NULL;
        _cleanup_json_ JsonValue *profile = NULL;
        _cleanup_free_ char *perror = NULL;

        if (size > 1024 * 1024)
                return 0;
        if (json_parse((const char *) data, size, JSON_DEPTH_MAX_DEFAULT, &v, NULL) < 0)
                return 0;

        (void) seccomp_profile_validate(v, &perror);
        {
                _cleanup_free_ char *bpf = NULL;
                int r = seccomp_bpf_compile(v, &bpf);

                if (r == 0 && (!bpf || !*bpf))
                        __builtin_trap();
                if (r < 0 && (r != -EOPNOTSUPP && r != -ENOMEM))
                        __builtin_trap();
        }
        profile = json_new_object();
        if (!profile || json_object_set_string(profile, "defaultAction", "SCMP_ACT_ALLOW") < 0)
                return 0;

        for (SeccompMode mode = SECCOMP_MODE_AUTO; mode <= SECCOMP_MODE_PROFILE; mode++) {
                _cleanup_json_ JsonValue *d = NULL;
                _cleanup_free_ char *error = NULL, *text = NULL;
                BundleParams p = {
                        .args = (char *const *) args,
                        .env_add = (char *const *) env_add,
                        .env_remove = (char *const *) env_remove,
                        .hostname = "task-1",
                        .root_path = "/run/lagoon-taskd/tasks/1/rootfs",
                        .cgroups_path = "/lagoon-taskd/task-1",
                        .annotations = (char *const *) annotations,
                        .seccomp = mode,
                        .seccomp_profile = profile,
                        /* AUTO compiles the service's own profile. */
                        .seccomp_bpf = true,
                };
                int r = bundle_derive(v, &p, &d, &error);

                if (r == -EINVAL && !error)
                        __builtin_trap(); /* a refusal always says why */
                if (r == 0) {
                        if (!d || error)
                                __builtin_trap();
                        (void) json_format(d, false, &text, NULL);
                }
        }
        return 0;
}
