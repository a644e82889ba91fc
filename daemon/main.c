/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lagoon-taskd: command line, configuration loading and reload, the one sd-event
 * loop with its signal handlers and watchdog, and the readiness protocol. */

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "api.h"
#include "cgroup.h"
#include "config.h"
#include "lagoon.h"
#include "log.h"
#include "manager.h"
#include "preflight.h"

static const char *arg_config = NULL;
static int arg_log_level = -1;

typedef struct Context {
        sd_event *event;
        Manager *manager;
        Api *api;
} Context;

static void help(void) {
        printf("lagoon-taskd [OPTIONS]\n\n"
               "Runs Lagoon tasks in containers (conmon + runc/crun) and journals their output.\n\n"
               "  -h --help             Show this help\n"
               "     --version          Show the version\n"
               "  -c --config=PATH      Configuration file (default %s,\n"
               "                        plus drop-ins in PATH.d/*.conf)\n"
               "     --log-level=LEVEL  emerg…debug (overrides LogLevel=)\n"
               "     --check-config     Load the configuration, report problems and exit\n",
               CONFIG_PATH_DEFAULT);
}

static int parse_argv(int argc, char *argv[], bool *ret_check_only) {
        enum { ARG_VERSION = 0x100, ARG_LOG_LEVEL, ARG_CHECK };
        static const struct option options[] = {{"help", no_argument, NULL, 'h'},
                                                {"version", no_argument, NULL, ARG_VERSION},
                                                {"config", required_argument, NULL, 'c'},
                                                {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
                                                {"check-config", no_argument, NULL, ARG_CHECK},
                                                {}};
        int c;

        *ret_check_only = false;
        while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("lagoon-taskd %s\n", PACKAGE_VERSION);
                        return 0;
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        arg_log_level = log_level_from_string(optarg);
                        if (arg_log_level < 0)
                                return log_error_errno(EINVAL, "Invalid log level: %s", optarg);
                        break;
                case ARG_CHECK:
                        *ret_check_only = true;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument: %s", argv[optind]);
        return 1;
}

static void apply_log_level(const Config *c) {
        log_set_max_level(arg_log_level >= 0 ? arg_log_level : c->log_level);
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Context *ctx = userdata;
        _cleanup_(config_freep) Config *c = NULL;
        struct timespec ts;
        char buf[64];
        int r;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
                 (unsigned long long) ts.tv_sec * 1000000ULL + (unsigned long long) ts.tv_nsec / 1000ULL);
        (void) sd_notify(false, buf);
        log_info("Reloading configuration.");

        r = config_load(arg_config, &c);
        if (r < 0) {
                log_error_errno(r, "New configuration is invalid, keeping the old one: %m");
                manager_note_reload(ctx->manager, r, "invalid configuration (the journal says why), the old one stays");
        } else {
                _cleanup_strv_free_ char **changes = NULL;

                /* Key by key, so the journal says what a reload did (never a secret's value). */
                if (config_changes(manager_get_config(ctx->manager), c, &changes) < 0)
                        log_oom();
                apply_log_level(c);
                (void) manager_set_config(ctx->manager, TAKE_PTR(c));
                manager_note_reload(ctx->manager, 0, NULL);
                for (char **l = changes; l && *l; l++)
                        log_info("Configuration change: %s", *l);
                if (changes && !changes[0])
                        log_info("Configuration reloaded: nothing changed.");
                else
                        log_info("Configuration reloaded.");
        }
        (void) sd_notify(false, "READY=1");
        return 0;
}

static int on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Context *ctx = userdata;

        (void) sd_notify(false, "STOPPING=1");
        log_info("Received %s, stopping; running tasks continue under conmon.", strsignal((int) si->ssi_signo));
        manager_begin_shutdown(ctx->manager);
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void on_task_changed(Manager *m, const Task *t, void *userdata) {
        Context *ctx = userdata;

        if (ctx->api)
                api_task_changed(ctx->api, t);
}

static int run(int argc, char *argv[]) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(config_freep) Config *config = NULL;
        _cleanup_(manager_freep) Manager *m = NULL;
        _cleanup_(api_freep) Api *api = NULL;
        _cleanup_(lagoon_freep) Lagoon *lagoon = NULL;
        Context ctx = {};
        bool check_only;
        unsigned problems;
        sigset_t ss;
        int r;

        r = parse_argv(argc, argv, &check_only);
        if (r <= 0)
                return r;

        r = config_load(arg_config, &config);
        if (r == -EINVAL)
                return log_error_errno(r, "Configuration %s refused: see the problems above.",
                                       arg_config ?: CONFIG_PATH_DEFAULT);
        if (r < 0)
                return log_error_errno(r, "Failed to load configuration %s: %m", arg_config ?: CONFIG_PATH_DEFAULT);
        apply_log_level(config);
        /* A configuration that parses can still fail every task: say so, and refuse it
         * with --check-config (a running daemon only warns: a bundle may come later). */
        problems = preflight_check(config);
        if (check_only) {
                if (problems > 0) {
                        log_error("Configuration %s parses, but %u problem%s above would fail tasks.",
                                  arg_config ?: CONFIG_PATH_DEFAULT, problems, problems == 1 ? "" : "s");
                        return -EINVAL;
                }
                preflight_summary(config, stdout);
                log_info("Configuration is valid.");
                return 0;
        }

        /* Before anything is forked: conmon processes inherit our cgroup. */
        r = cgroup_enter_supervisor();
        if (r < 0)
                log_warning_errno(r, "Failed to move into the %s sub-cgroup, task cgroups may fail: %m",
                                  CGROUP_SUPERVISOR);
        else if (r > 0)
                log_debug("Running in the %s sub-cgroup of the unit.", CGROUP_SUPERVISOR);

        /* Task containers are ours to supervise: a dying conmon must not make us die. */
        (void) signal(SIGPIPE, SIG_IGN);
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigaddset(&ss, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &ss, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");

        r = sd_event_default(&e);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        (void) sd_event_set_watchdog(e, true);

        r = manager_new(e, config, &m);
        if (r < 0)
                return r;
        TAKE_PTR(config);
        ctx.event = e;
        ctx.manager = m;

        r = sd_event_add_signal(e, NULL, SIGTERM, on_sigterm, &ctx);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGINT, on_sigterm, &ctx);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGHUP, on_sighup, &ctx);
        if (r < 0)
                return log_error_errno(r, "Failed to install signal handlers: %m");

        /* The API socket first: a second instance fails here, before it touches
         * the state directory. No request is served before the loop runs. */
        r = api_new(e, m, &api);
        if (r < 0)
                return log_error_errno(r, "Failed to start the control API: %m");
        ctx.api = api;
        (void) manager_add_task_callback(m, on_task_changed, &ctx);

        r = lagoon_new(e, m, &lagoon);
        if (r < 0)
                return r;
        api_set_lagoon(api, lagoon);

        r = manager_start(m);
        if (r < 0)
                return r;
        if (lagoon) {
                r = lagoon_start(lagoon);
                if (r < 0)
                        return r;
        }

        (void) sd_notifyf(false, "READY=1\nSTATUS=%u running, %u queued", manager_n_running(m), manager_n_queued(m));
        log_info("lagoon-taskd %s ready.", PACKAGE_VERSION);

        r = sd_event_loop(e);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        /* Leave containers to conmon: freeing only stops watching them. */
        manager_remove_task_callback(m, on_task_changed, &ctx);
        return 0;
}

int main(int argc, char *argv[]) {
        int r;

        /* Buffers of 64 KiB and more (each task's CRI read buffer, its journal datagram)
         * get a mapping of their own, given back whole when freed. In the heap they lay
         * between the tasks' small records, and 100 tasks left the heap 1.1 MiB larger
         * than idle after they ended, for 0.3 MiB in use. Setting it also stops glibc from
         * raising the threshold once such a block was freed. */
        (void) mallopt(M_MMAP_THRESHOLD, 64 * 1024);

        r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
