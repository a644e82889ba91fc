/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the runtime launcher's tests share: a task of a service "cli", and a Config that
 * runs conmon + runc with its runtime and state directories below a test's directory. */

#include "config.h"
#include "fs-util.h"
#include "task.h"
#include "tests.h"

static inline Task *launch_test_task(const char *id, const char *command, const char *project, const char *namespace) {
        Task *t = task_new();

        ASSERT(t);
        t->id = strdup(id);
        t->name = strdup(id);
        t->project = strdup(project);
        t->environment = strdup("main");
        t->namespace = strdup(namespace);
        t->service = strdup("cli");
        t->command = strdup(command);
        ASSERT(t->id && t->name && t->project && t->environment && t->namespace && t->service && t->command);
        return t;
}

static inline Config *launch_test_config(const char *dir) {
        char *run = path_join(dir, "run"), *state = path_join(dir, "state");
        Config *config = config_new();

        ASSERT(run && state && config);
        ASSERT_OK(free_and_strdup(&config->runtime, "runc"));
        ASSERT_OK(free_and_strdup(&config->conmon, "conmon"));
        ASSERT_OK(free_and_strdup(&config->runtime_dir, run));
        ASSERT_OK(free_and_strdup(&config->state_dir, state));
        free(run);
        free(state);
        return config;
}
