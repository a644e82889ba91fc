/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Lagoon's incoming task messages (the body of a message on the queues
 * lagoon-tasks:<target>:jobs and :misc), parsed and checked. Pure: no I/O, no logging
 * above debug. Wire facts: DESIGN.md "Lagoon wire formats", fixtures/lagoon/amqp-in-*.
 *
 * Body: {key?, task:{id (string; a number is accepted), name, taskName, service,
 * command}, project:{id, name, variables:{project, environment} (base64 JSON arrays of
 * {name, value, scope})}, environment:{id, name, project, environmentType},
 * advancedTask?:{runnerImage | RunnerImage, JSONPayload, deployerToken, sshKey,
 * volumeMounts (bool or 0/1)}, project.organization?:{id, name}, misc?}. Unknown members
 * are ignored. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "macro.h"

/* Which queue a message came from: the jobs queue carries standard tasks whatever
 * their key; on the misc queue the key decides. */
typedef enum LagoonQueue {
        LAGOON_QUEUE_JOBS,
        LAGOON_QUEUE_MISC,
} LagoonQueue;

typedef enum LagoonMessageKind {
        LAGOON_MESSAGE_STANDARD,      /* jobs queue */
        LAGOON_MESSAGE_ADVANCED,      /* deploytarget:task:advanced, kubernetes:task:advanced */
        LAGOON_MESSAGE_ACTIVESTANDBY, /* deploytarget:task:activestandby: an advanced task with
                                       * deployerToken and sshKey forced on */
        LAGOON_MESSAGE_CANCEL,        /* deploytarget:task:cancel, kubernetes:task:cancel */
        LAGOON_MESSAGE_PROJECTCLONE,  /* deploytarget:task:projectclone, …:projectclonerestore: an
                                       * advanced task with deployerToken, sshKey and volumeMounts
                                       * forced on; its JSONPayload carries the cloneId */
        _LAGOON_MESSAGE_KIND_MAX,
} LagoonMessageKind;

#define LAGOON_TASK_DATA_MAX (256U * 1024U)

typedef struct LagoonVariable {
        char *name;
        char *value;
        char *scope; /* may be NULL */
} LagoonVariable;

typedef struct LagoonMessage {
        LagoonMessageKind kind;
        char *key; /* may be NULL (jobs queue) */

        char *task_id;        /* task.id, required; a JSON number is converted to its decimal text */
        char *task_name;      /* task.name, may be NULL */
        char *task_task_name; /* task.taskName, may be NULL */
        char *service;        /* task.service: required for standard tasks */
        char *command;        /* task.command: required for standard tasks */

        char *project; /* project.name, required except for cancel */
        bool has_project_id;
        int64_t project_id;
        char *environment; /* environment.name, required except for cancel */
        bool has_environment_id;
        int64_t environment_id;
        char *environment_type;       /* may be NULL */
        char *namespace;              /* environment.openshiftProjectName when sent, else derived with
                                       * task_make_namespace() (see lagoon_message_set_namespace_prefix) */
        char *openshift_project_name; /* environment.openshiftProjectName (a DNS label), may be NULL */
        char *namespace_pattern;      /* project.namespacePattern, may be NULL (Lagoon never sends one) */

        /* advanced tasks */
        char *image;        /* advancedTask.runnerImage (or RunnerImage); required for advanced */
        char *json_payload; /* advancedTask.JSONPayload, verbatim (base64), may be NULL */
        bool deployer_token;
        bool ssh_key;
        bool volume_mounts; /* advancedTask.volumeMounts: the namespace's "bulk" PVCs at /storage/<name> */
        int64_t clone_id;   /* projectclone: JSONPayload's cloneId, 0 when it has none */
        /* activestandby: JSONPayload's sourceNamespace and destinationNamespace when it
         * decodes and both are namespace names, else NULL (the task runs without the
         * RoleBinding; remote-controller refuses such a payload) */
        char *activestandby_source;
        char *activestandby_destination;

        /* project.organization, for the pod's organization.lagoon.sh/ labels */
        bool has_organization_id;
        int64_t organization_id;
        char *organization_name; /* may be NULL */

        /* project.variables.project / .environment, decoded; NULL arrays when absent.
         * Undecodable variables are an error (-EBADMSG). */
        LagoonVariable *project_variables;
        size_t n_project_variables;
        LagoonVariable *environment_variables;
        size_t n_environment_variables;
        char *project_variables_raw;     /* the decoded JSON array text, NULL when empty ("[]"), for
                                          * LAGOON_PROJECT_VARIABLES (as remote-controller sets it) */
        char *environment_variables_raw; /* likewise for LAGOON_ENVIRONMENT_VARIABLES */

        /* What the daemon keeps with the task to report on it later (persisted in the
         * task record): {"key"?, "task":{id, name?, taskName?, service?, command?},
         * "project":{"id"?, "name"}, "environment":{"id"?, "name", "environmentType"?},
         * "cloneId"? (projectclone)}.
         * Never contains the JSONPayload or variables. */
        JsonValue *info;
} LagoonMessage;

/* Parses a message body. Returns:
 *   0        *ret set;
 *   -EINVAL  not JSON / not an object (*ret NULL);
 *   -EBADMSG a required member missing or of the wrong type, variables not base64
 *            JSON, …;
 *   -EOPNOTSUPP an unknown key on the misc queue.
 * On -EBADMSG and -EOPNOTSUPP *ret is ALSO set, to a message holding what could be
 * read (task_id may be NULL; info holds what is known), so the caller can report the
 * failure to Lagoon. *ret_error (when non-NULL) gets a one-line reason on every error,
 * e.g. "task.id is missing", "unknown message key \"deploytarget:foo\"". Bodies over
 * 16 MiB are -E2BIG. Never crashes on any input. */
int lagoon_message_parse(LagoonQueue queue, const char *body, size_t size, LagoonMessage **ret, char **ret_error);

/* Derives m->namespace again with remote-controller's namespace prefix (NamespacePrefix=),
 * unless the message named its namespace (openshiftProjectName). */
int lagoon_message_set_namespace_prefix(LagoonMessage *m, const char *prefix);

LagoonMessage *lagoon_message_free(LagoonMessage *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(LagoonMessage *, lagoon_message_free);

const char *lagoon_message_kind_to_string(LagoonMessageKind k); /* "standard", "advanced", … */

/* The value of the Lagoon variable name (a feature flag such as
 * LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD): the environment's, else the project's, else
 * NULL. Any scope, as remote-controller looks them up. */
const char *lagoon_message_variable(const LagoonMessage *m, const char *name);

/* The values of variables that must never be shown (see lagoon_variable_is_secret),
 * plus the JSONPayload: a NULL-terminated list to add to a task's secrets. */
int lagoon_message_secrets(const LagoonMessage *m, char *const *secret_patterns, char ***ret);

/* A variable is secret when its name matches one of patterns (fnmatch(3) globs,
 * case-insensitive, e.g. "*PASSWORD*", "*TOKEN*") or its scope is
 * "container_registry". Variables of scope "internal_system" are not secret. */
bool lagoon_variable_is_secret(const LagoonVariable *v, char *const *patterns);

/* The advancedData actions-handler needs for a projectclone task that ends without
 * taskData of its own (without it, Lagoon's task stays NEW): base64 of
 * {"cloneId":N,"status":S}, S "FAILED" for status failed, else the stage the task's
 * success means ("SOURCE_FILES_UPLOADED" for projectclone, "SOURCE_FILES_APPLIED" for
 * projectclonerestore). info is LagoonMessage.info. -ENODATA when info is no projectclone
 * with a cloneId. */
int lagoon_clone_advanced_data(const JsonValue *info, bool failed, char **ret);

/* Validates a taskData value (the lagoon.sh/taskData annotation, or the local-mode
 * file): at most LAGOON_TASK_DATA_MAX bytes, standard base64 (padding required,
 * surrounding whitespace trimmed), decoding to a JSON document. -E2BIG, -EBADMSG with
 * a reason in *ret_error ("taskData is not base64", "taskData is not JSON: …"). On
 * success *ret is the trimmed value, verbatim otherwise. */
int lagoon_task_data_validate(const char *data, size_t size, char **ret, char **ret_error);
