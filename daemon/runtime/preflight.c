/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* --check-config's look past the syntax (preflight.h): the checks the launch would do
 * for every task, done once with the configuration's own words in the messages. */

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "fs-util.h"
#include "json.h"
#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "preflight.h"

static unsigned check_program(const char *key, const char *name) {
        _cleanup_free_ char *path = NULL;
        int r;

        r = find_executable(name, &path);
        if (r == -ENOMEM)
                return log_oom(), 1;
        if (r < 0) {
                log_error("%s=%s: %s%s, every task would fail to launch.", key, name, strerror(-r),
                          strchr(name, '/') ? "" : " (looked up in PATH)");
                return 1;
        }
        return 0;
}

static unsigned check_bundle(const char *kind, const ServiceConfig *s) {
        _cleanup_(json_freep) JsonValue *cfg = NULL;
        _cleanup_free_ char *error = NULL, *rootfs = NULL;
        struct stat st;
        int r;

        if (!s->bundle)
                return 0; /* config_finalize() reported it, or node mode finds it elsewhere */
        r = bundle_read_config(s->bundle, &cfg, &error);
        if (r < 0) {
                log_error("[%s %s] Bundle=%s: %s", kind, s->name, s->bundle, error ?: strerror(-r));
                return 1;
        }
        r = bundle_rootfs_path(s->bundle, cfg, &rootfs);
        if (r < 0) {
                log_error("[%s %s] Bundle=%s: config.json has no root.path.", kind, s->name, s->bundle);
                return 1;
        }
        if (stat(rootfs, &st) < 0 || !S_ISDIR(st.st_mode)) {
                log_error("[%s %s] Bundle=%s: its rootfs %s is %s.", kind, s->name, s->bundle, rootfs,
                          errno == ENOENT ? "missing" : "not a directory");
                return 1;
        }
        return 0;
}

unsigned preflight_check(const Config *c) {
        unsigned n = 0;

        if (c->runtime_default_reason)
                log_info("Runtime: %s (%s).", c->runtime, c->runtime_default_reason);

        n += check_program("Runtime", c->runtime ?: "runc");
        n += check_program("Conmon", c->conmon ?: "conmon");
        if (c->init && access(c->init, X_OK) < 0)
                log_warning("Init=%s: %s; tasks of images without /sbin/tini run without an init and stop "
                            "only after KillGraceSec= (install catatonit, or set Init=no).",
                            c->init, strerror(errno));
        for (size_t i = 0; i < c->n_services; i++)
                n += check_bundle("Service", c->services + i);
        for (size_t i = 0; i < c->n_images; i++)
                n += check_bundle("Image", c->images + i);
        /* In node mode the services come from the cluster, not from sections. */
        if (!config_kube_enabled(c) && c->default_service && !config_find_service(c, c->default_service)) {
                _cleanup_free_ char *known = NULL;

                if (config_service_names(c, &known) < 0)
                        return log_oom(), n + 1;
                log_error("DefaultService=%s names no [Service %s] section (configured: %s); every task without "
                          "a service would fail.",
                          c->default_service, c->default_service, isempty(known) ? "none" : known);
                n++;
        }
        return n;
}

void preflight_summary(const Config *c, FILE *f) {
        _cleanup_free_ char *timeout = format_duration(c->default_timeout_usec),
                            *grace = format_duration(c->kill_grace_usec);

        fprintf(f, "runtime: %s%s%s%s, conmon: %s, init: %s\n", c->runtime ?: "runc",
                c->runtime_default_reason ? " (" : "", strempty(c->runtime_default_reason),
                c->runtime_default_reason ? ")" : "", c->conmon ?: "conmon",
                c->init && access(c->init, X_OK) == 0 ? c->init : "none");
        for (size_t i = 0; i < c->n_services; i++)
                fprintf(f, "[Service %s] Bundle=%s%s\n", c->services[i].name, strna(c->services[i].bundle),
                        c->default_service && streq(c->services[i].name, c->default_service) ? " (default)" : "");
        for (size_t i = 0; i < c->n_images; i++)
                fprintf(f, "[Image %s] Bundle=%s\n", c->images[i].name, strna(c->images[i].bundle));
        fprintf(f, "MaxRunning=%u MaxRunningPerEnvironment=%u MaxQueued=%u DefaultTimeoutSec=%s KillGraceSec=%s\n",
                c->max_running, c->max_running_per_environment, c->max_queued, strna(timeout), strna(grace));
        fprintf(f, "state: %s, socket: %s\n", strna(c->state_dir), strna(c->listen_socket));
}
