/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Lagoon's incoming task messages: the body of a message on lagoon-tasks:<target>:jobs
 * or :misc parsed into a LagoonMessage, with the project and environment variables
 * decoded, the values that must be masked in task output, and the check of a taskData
 * value a task hands back. Pure: no I/O, no logging. Every error carries a one-line
 * reason, and on a message Lagoon can be told about, also what could be read. */

#include <ctype.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>

#include "lagoon-message.h"
#include "parse-util.h"
#include "task.h"

#define LAGOON_MESSAGE_SIZE_MAX (16U * 1024U * 1024U)
/* Variables are a flat array of flat objects. */
#define LAGOON_VARIABLES_DEPTH_MAX 4U
/* How much of an outside string a reason quotes. */
#define QUOTE_MAX 64U

static const char *const kind_names[_LAGOON_MESSAGE_KIND_MAX] = {
        [LAGOON_MESSAGE_STANDARD] = "standard",           [LAGOON_MESSAGE_ADVANCED] = "advanced",
        [LAGOON_MESSAGE_ACTIVESTANDBY] = "activestandby", [LAGOON_MESSAGE_CANCEL] = "cancel",
        [LAGOON_MESSAGE_PROJECTCLONE] = "projectclone",
};

const char *lagoon_message_kind_to_string(LagoonMessageKind k) {
        return k >= 0 && k < _LAGOON_MESSAGE_KIND_MAX ? kind_names[k] : NULL;
}

static const struct {
        const char *key;
        LagoonMessageKind kind;
} misc_keys[] = {
        {"deploytarget:task:advanced", LAGOON_MESSAGE_ADVANCED},
        {"kubernetes:task:advanced", LAGOON_MESSAGE_ADVANCED},
        {"deploytarget:task:activestandby", LAGOON_MESSAGE_ACTIVESTANDBY},
        {"deploytarget:task:cancel", LAGOON_MESSAGE_CANCEL},
        {"kubernetes:task:cancel", LAGOON_MESSAGE_CANCEL},
        {"deploytarget:task:projectclone", LAGOON_MESSAGE_PROJECTCLONE},
        {"deploytarget:task:projectclonerestore", LAGOON_MESSAGE_PROJECTCLONE},
};

static void variables_free(LagoonVariable *v, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(v[i].name);
                free(v[i].value);
                free(v[i].scope);
        }
        free(v);
}

LagoonMessage *lagoon_message_free(LagoonMessage *m) {
        if (!m)
                return NULL;
        free(m->key);
        free(m->task_id);
        free(m->task_name);
        free(m->task_task_name);
        free(m->service);
        free(m->command);
        free(m->project);
        free(m->environment);
        free(m->environment_type);
        free(m->namespace);
        free(m->openshift_project_name);
        free(m->namespace_pattern);
        free(m->image);
        free(m->json_payload);
        free(m->organization_name);
        free(m->activestandby_source);
        free(m->activestandby_destination);
        variables_free(m->project_variables, m->n_project_variables);
        variables_free(m->environment_variables, m->n_environment_variables);
        free(m->project_variables_raw);
        free(m->environment_variables_raw);
        json_free(m->info);
        free(m);
        return NULL;
}

/* ---- base64 ---- */

/* Standard alphabet, padding required. CR and LF are skipped wherever they are, as
 * Go's base64.StdEncoding does (the remote-controller's decoder), so wrapped output
 * of base64(1) is accepted; anything else outside the alphabet is -EBADMSG. */
static int base64_decode(const char *s, size_t n, char **ret, size_t *ret_size) {
        _cleanup_free_ char *out = NULL;
        size_t o = 0, q = 0, pad = 0;
        unsigned acc = 0;

        out = malloc(n / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int v;

                if (s[i] == '\r' || s[i] == '\n')
                        continue;
                if (s[i] == '=') {
                        /* only in the last two places of the last quantum */
                        if (q < 2)
                                return -EBADMSG;
                        pad++;
                        q++;
                } else {
                        if (pad > 0)
                                return -EBADMSG;
                        v = base64_char_value(s[i]);
                        if (v < 0)
                                return -EBADMSG;
                        acc = acc << 6 | (unsigned) v;
                        q++;
                }
                if (q == 4) {
                        acc <<= 6 * pad;
                        out[o++] = (char) (acc >> 16);
                        if (pad < 2)
                                out[o++] = (char) (acc >> 8 & 0xff);
                        if (pad < 1)
                                out[o++] = (char) (acc & 0xff);
                        acc = 0;
                        q = 0;
                        if (pad > 0) {
                                /* nothing but line breaks may follow the padding */
                                for (i++; i < n; i++)
                                        if (s[i] != '\r' && s[i] != '\n')
                                                return -EBADMSG;
                                break;
                        }
                }
        }
        if (q != 0)
                return -EBADMSG;
        out[o] = 0;
        *ret = TAKE_PTR(out);
        *ret_size = o;
        return 0;
}

/* ---- errors ---- */

typedef struct ParseError {
        int r;
        char *reason;
} ParseError;

/* Records the first error only: later ones are usually consequences of it. */
_printf_(3, 4) static void fail(ParseError *e, int r, const char *format, ...) {
        va_list ap;

        if (e->r < 0)
                return;
        e->r = r;
        va_start(ap, format);
        if (vasprintf(&e->reason, format, ap) < 0)
                e->reason = NULL;
        va_end(ap);
}

/* A printable excerpt of outside text for a reason line. */
static char *quote(const char *s) {
        size_t n = strnlen(s, QUOTE_MAX + 1);
        char *q = malloc(MIN(n, (size_t) QUOTE_MAX) + 4);

        if (!q)
                return NULL;
        for (size_t i = 0; i < MIN(n, (size_t) QUOTE_MAX); i++)
                q[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' ? s[i] : '?';
        if (n > QUOTE_MAX)
                strcpy(q + QUOTE_MAX, "...");
        else
                q[n] = 0;
        return q;
}

/* Reasons are one line; yajl's messages end in a newline. */
static int one_line(char **ret_error, int r) {
        char *s;
        size_t n;

        if (!ret_error || !*ret_error)
                return r;
        s = *ret_error;
        for (char *p = s; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = ' ';
        n = strlen(s);
        while (n > 0 && s[n - 1] == ' ')
                s[--n] = 0;
        return r;
}

/* ---- members ---- */

static bool absent(const JsonValue *v) {
        return !v || json_type(v) == JSON_NULL;
}

/* A string member. Empty strings count as absent, like Go's omitempty. */
static int
read_string(const JsonValue *obj, const char *path, const char *key, bool required, ParseError *e, char **ret) {
        const JsonValue *v = json_get(obj, key);
        const char *s;

        if (absent(v)) {
                if (required)
                        fail(e, -EBADMSG, "%s.%s is missing", path, key);
                return 0;
        }
        s = json_string(v);
        if (!s) {
                fail(e, -EBADMSG, "%s.%s is not a string", path, key);
                return 0;
        }
        if (isempty(s)) {
                if (required)
                        fail(e, -EBADMSG, "%s.%s is empty", path, key);
                return 0;
        }
        return free_and_strdup(ret, s);
}

static int parse_decimal(const char *s, int64_t *ret) {
        int64_t v = 0;

        if (isempty(s))
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (INT64_MAX - (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (*p - '0');
        }
        *ret = v;
        return 0;
}

/* project.id / environment.id: a non-negative integer, as a number or a decimal string. */
static void read_id(const JsonValue *obj, const char *path, ParseError *e, bool *has, int64_t *ret) {
        const JsonValue *v = json_get(obj, "id");
        int64_t id;
        int r;

        if (absent(v))
                return;
        if (json_type(v) == JSON_NUMBER)
                r = json_int64(v, &id);
        else if (json_type(v) == JSON_STRING)
                r = parse_decimal(json_string(v), &id);
        else
                r = -EINVAL;
        if (r < 0 || id < 0) {
                fail(e, -EBADMSG, "%s.id is not a non-negative integer", path);
                return;
        }
        *has = true;
        *ret = id;
}

/* Lagoon sends these as 0/1 (JavaScript), or as booleans. */
static void read_flag(const JsonValue *obj, const char *key, ParseError *e, bool *ret) {
        const JsonValue *v = json_get(obj, key);
        int64_t i;
        int b;

        if (absent(v))
                return;
        b = json_boolean(v);
        if (b >= 0) {
                *ret = b;
                return;
        }
        if (json_int64(v, &i) >= 0 && (i == 0 || i == 1)) {
                *ret = i == 1;
                return;
        }
        fail(e, -EBADMSG, "advancedTask.%s is not a boolean or 0/1", key);
}

static int read_task_id(const JsonValue *task, ParseError *e, char **ret) {
        const JsonValue *v = json_get(task, "id");
        _cleanup_free_ char *id = NULL, *q = NULL;
        uint64_t u;

        if (absent(v)) {
                fail(e, -EBADMSG, "task.id is missing");
                return 0;
        }
        if (json_type(v) == JSON_NUMBER) {
                if (json_uint64(v, &u) < 0) {
                        fail(e, -EBADMSG, "task.id is not a non-negative integer");
                        return 0;
                }
                if (asprintf(&id, "%" PRIu64, u) < 0)
                        return -ENOMEM;
        } else if (json_string(v)) {
                id = strdup(json_string(v));
                if (!id)
                        return -ENOMEM;
        } else {
                fail(e, -EBADMSG, "task.id is not a string");
                return 0;
        }
        if (isempty(id)) {
                fail(e, -EBADMSG, "task.id is empty");
                return 0;
        }
        /* Kept even when invalid, so the failure can still be reported to Lagoon
         * against the id it knows. */
        if (!task_id_is_valid(id)) {
                q = quote(id);
                if (!q)
                        return -ENOMEM;
                fail(e, -EBADMSG, "task.id \"%s\" is not a valid task id", q);
        }
        *ret = TAKE_PTR(id);
        return 0;
}

/* One of project.variables.{project,environment}: base64 of a JSON array of
 * {name, value, scope}. */
static int read_variables(const JsonValue *variables,
                          const char *which,
                          ParseError *e,
                          char **ret_raw,
                          LagoonVariable **ret,
                          size_t *ret_n) {
        const JsonValue *v = json_get(variables, which);
        _cleanup_free_ char *raw = NULL, *decoded = NULL, *error = NULL;
        _cleanup_json_ JsonValue *array = NULL;
        LagoonVariable *l = NULL;
        size_t size, n = 0;
        int r;

        if (absent(v))
                return 0;
        if (!json_string(v)) {
                fail(e, -EBADMSG, "project.variables.%s is not a string", which);
                return 0;
        }
        raw = strdup(json_string(v));
        if (!raw)
                return -ENOMEM;
        r = base64_decode(raw, strlen(raw), &decoded, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                fail(e, -EBADMSG, "project.variables.%s is not base64", which);
                return 0;
        }
        r = json_parse(decoded, size, LAGOON_VARIABLES_DEPTH_MAX, &array, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                fail(e, -EBADMSG, "project.variables.%s is not JSON: %s", which, strna(error));
                return 0;
        }
        if (!json_is_array(array)) {
                fail(e, -EBADMSG, "project.variables.%s is not a JSON array", which);
                return 0;
        }
        if (json_has_nul(array)) {
                fail(e, -EBADMSG, "project.variables.%s holds a NUL byte (\\u0000) in a string", which);
                return 0;
        }

        if (json_length(array) > 0) {
                l = calloc(json_length(array), sizeof(LagoonVariable));
                if (!l)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < json_length(array); i++) {
                const JsonValue *item = json_array_at(array, i);
                const JsonValue *value = json_get(item, "value"), *scope = json_get(item, "scope");

                if (!json_is_object(item) || isempty(json_get_string(item, "name")) ||
                    !(absent(value) || json_is_string(value)) || !(absent(scope) || json_is_string(scope))) {
                        variables_free(l, n);
                        fail(e, -EBADMSG, "project.variables.%s[%zu] is not a {name, value, scope} object", which, i);
                        return 0;
                }
                l[n].name = strdup(json_get_string(item, "name"));
                l[n].value = strdup(strempty(json_string(value)));
                l[n].scope = json_string(scope) ? strdup(json_string(scope)) : NULL;
                n++;
                if (!l[n - 1].name || !l[n - 1].value || (json_string(scope) && !l[n - 1].scope)) {
                        variables_free(l, n);
                        return -ENOMEM;
                }
        }

        /* As remote-controller passes it: the decoded JSON, and only when not empty. */
        *ret_raw = json_length(array) > 0 ? TAKE_PTR(decoded) : NULL;
        *ret = l;
        *ret_n = n;
        return 0;
}

/* A projectclone's JSONPayload: base64 of {projectName, sourceEnvironment |
 * destinationEnvironment, cloneId, …}. remote-controller refuses the task when it does
 * not decode (base64, then JSON into an int cloneId); a payload without cloneId is not an
 * error there (cloneId 0), but leaves nothing to tell Lagoon's clone about. */
static int read_clone_payload(LagoonMessage *m, ParseError *e) {
        _cleanup_free_ char *decoded = NULL, *error = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        const JsonValue *id;
        size_t size;
        int r;

        if (!m->json_payload) {
                fail(e, -EBADMSG, "advancedTask.JSONPayload is missing");
                return 0;
        }
        r = base64_decode(m->json_payload, strlen(m->json_payload), &decoded, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                fail(e, -EBADMSG, "advancedTask.JSONPayload is not base64");
                return 0;
        }
        r = json_parse(decoded, size, JSON_DEPTH_MAX_DEFAULT, &v, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_is_object(v)) {
                fail(e, -EBADMSG, "advancedTask.JSONPayload is not a JSON object");
                return 0;
        }
        id = json_get(v, "cloneId");
        if (absent(id))
                return 0;
        if (json_type(id) != JSON_NUMBER || json_int64(id, &m->clone_id) < 0 || m->clone_id < 0) {
                m->clone_id = 0;
                fail(e, -EBADMSG, "advancedTask.JSONPayload: cloneId is not a non-negative integer");
        }
        return 0;
}

/* An active/standby switch's JSONPayload (commons tasks.ts): base64 of
 * {productionEnvironment, standbyEnvironment, sourceNamespace, destinationNamespace}.
 * Read leniently: what is not there leaves the RoleBinding out. */
static int read_activestandby_payload(LagoonMessage *m) {
        _cleanup_free_ char *decoded = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        const char *src, *dst;
        size_t size;
        int r;

        if (!m->json_payload)
                return 0;
        r = base64_decode(m->json_payload, strlen(m->json_payload), &decoded, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;
        r = json_parse(decoded, size, JSON_DEPTH_MAX_DEFAULT, &v, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0;
        src = json_get_string(v, "sourceNamespace");
        dst = json_get_string(v, "destinationNamespace");
        /* They become paths and a subject in API requests: namespace names or nothing. */
        if (!src || !dst || !dns_label_is_valid(src) || !dns_label_is_valid(dst))
                return 0;
        if (!(m->activestandby_source = strdup(src)) || !(m->activestandby_destination = strdup(dst)))
                return -ENOMEM;
        return 0;
}

static int set_string_if(JsonValue *obj, const char *key, const char *s) {
        return s ? json_object_set_string(obj, key, s) : 0;
}

/* What the daemon persists with the task: ids and names only, never secrets. */
static int build_info(const LagoonMessage *m, JsonValue **ret) {
        _cleanup_json_ JsonValue *info = NULL;
        JsonValue *o;
        int r;

        info = json_new_object();
        if (!info)
                return -ENOMEM;
        r = set_string_if(info, "key", m->key);
        if (r < 0)
                return r;

        r = json_object_ensure_object(info, "task", &o);
        if (r < 0)
                return r;
        if ((r = set_string_if(o, "id", m->task_id)) < 0 || (r = set_string_if(o, "name", m->task_name)) < 0 ||
            (r = set_string_if(o, "taskName", m->task_task_name)) < 0 ||
            (r = set_string_if(o, "service", m->service)) < 0 || (r = set_string_if(o, "command", m->command)) < 0)
                return r;

        r = json_object_ensure_object(info, "project", &o);
        if (r < 0)
                return r;
        if (m->has_project_id && (r = json_object_set_int64(o, "id", m->project_id)) < 0)
                return r;
        if ((r = set_string_if(o, "name", m->project)) < 0)
                return r;

        r = json_object_ensure_object(info, "environment", &o);
        if (r < 0)
                return r;
        if (m->has_environment_id && (r = json_object_set_int64(o, "id", m->environment_id)) < 0)
                return r;
        if ((r = set_string_if(o, "name", m->environment)) < 0 ||
            (r = set_string_if(o, "environmentType", m->environment_type)) < 0)
                return r;
        if (m->clone_id > 0 && (r = json_object_set_int64(info, "cloneId", m->clone_id)) < 0)
                return r;

        *ret = TAKE_PTR(info);
        return 0;
}

static const JsonValue *read_object(const JsonValue *root, const char *key, bool required, ParseError *e) {
        const JsonValue *v = json_get(root, key);

        if (absent(v)) {
                if (required)
                        fail(e, -EBADMSG, "%s is missing", key);
                return NULL;
        }
        if (!json_is_object(v)) {
                fail(e, -EBADMSG, "%s is not an object", key);
                return NULL;
        }
        return v;
}

/* Everything after the JSON itself: fills m as far as possible, recording the first
 * problem in e. Returns only hard errors (-ENOMEM). */
static int parse_members(LagoonQueue queue, const JsonValue *root, LagoonMessage *m, ParseError *e) {
        const JsonValue *task, *project, *environment, *advanced, *variables, *v;
        bool known = true, cancel, standard, advanced_kind;
        int r;

        v = json_get(root, "key");
        if (!absent(v) && !json_is_string(v))
                fail(e, -EBADMSG, "key is not a string");
        else if (json_string(v) && (r = free_and_strdup(&m->key, json_string(v))) < 0)
                return r;

        if (queue == LAGOON_QUEUE_JOBS)
                m->kind = LAGOON_MESSAGE_STANDARD;
        else {
                known = false;
                for (size_t i = 0; m->key && i < ELEMENTSOF(misc_keys); i++)
                        if (streq(m->key, misc_keys[i].key)) {
                                m->kind = misc_keys[i].kind;
                                known = true;
                        }
                if (!known) {
                        _cleanup_free_ char *q = NULL;

                        m->kind = _LAGOON_MESSAGE_KIND_MAX;
                        if (!m->key)
                                fail(e, -EOPNOTSUPP, "message on the misc queue has no key");
                        else {
                                q = quote(m->key);
                                if (!q)
                                        return -ENOMEM;
                                fail(e, -EOPNOTSUPP, "unknown message key \"%s\"", q);
                        }
                }
        }
        /* With an unknown key nothing is required: read what is there to report. */
        cancel = !known || m->kind == LAGOON_MESSAGE_CANCEL;
        standard = known && m->kind == LAGOON_MESSAGE_STANDARD;
        advanced_kind = known && (m->kind == LAGOON_MESSAGE_ADVANCED || m->kind == LAGOON_MESSAGE_ACTIVESTANDBY ||
                                  m->kind == LAGOON_MESSAGE_PROJECTCLONE);

        task = read_object(root, "task", true, e);
        if (task) {
                r = read_task_id(task, e, &m->task_id);
                if (r < 0)
                        return r;
                if ((r = read_string(task, "task", "name", false, e, &m->task_name)) < 0 ||
                    (r = read_string(task, "task", "taskName", false, e, &m->task_task_name)) < 0 ||
                    (r = read_string(task, "task", "service", standard, e, &m->service)) < 0 ||
                    (r = read_string(task, "task", "command", standard, e, &m->command)) < 0)
                        return r;
        }

        project = read_object(root, "project", !cancel, e);
        if (project) {
                read_id(project, "project", e, &m->has_project_id, &m->project_id);
                r = read_string(project, "project", "name", !cancel, e, &m->project);
                if (r < 0)
                        return r;
                r = read_string(project, "project", "namespacePattern", false, e, &m->namespace_pattern);
                if (r < 0)
                        return r;
                /* Lagoon adds {name, id} when the project belongs to an organization. */
                v = json_get(project, "organization");
                if (!absent(v) && !json_is_object(v))
                        fail(e, -EBADMSG, "project.organization is not an object");
                else if (!absent(v)) {
                        read_id(v, "project.organization", e, &m->has_organization_id, &m->organization_id);
                        r = read_string(v, "project.organization", "name", false, e, &m->organization_name);
                        if (r < 0)
                                return r;
                }
        }

        environment = read_object(root, "environment", !cancel, e);
        if (environment) {
                read_id(environment, "environment", e, &m->has_environment_id, &m->environment_id);
                if ((r = read_string(environment, "environment", "name", !cancel, e, &m->environment)) < 0 ||
                    (r = read_string(environment, "environment", "environmentType", false, e, &m->environment_type)) <
                            0 ||
                    (r = read_string(environment, "environment", "openshiftProjectName", false, e,
                                     &m->openshift_project_name)) < 0)
                        return r;
                /* It becomes a path in Kubernetes API requests: a DNS label or nothing. */
                if (m->openshift_project_name && !dns_label_is_valid(m->openshift_project_name)) {
                        _cleanup_free_ char *q = quote(m->openshift_project_name);
                        if (!q)
                                return -ENOMEM;
                        fail(e, -EBADMSG, "environment.openshiftProjectName \"%s\" is not a namespace name", q);
                        m->openshift_project_name = mfree(m->openshift_project_name);
                }
                /* "should be int, but the api sends it as a string": either is fine */
                v = json_get(environment, "project");
                if (!absent(v) && !json_is_string(v) && json_type(v) != JSON_NUMBER)
                        fail(e, -EBADMSG, "environment.project is not a string or a number");
        }

        if (advanced_kind) {
                advanced = read_object(root, "advancedTask", true, e);
                if (advanced) {
                        /* Go's decoder reads RunnerImage first, then runnerImage overrides it */
                        v = json_get(advanced, "runnerImage");
                        r = read_string(advanced, "advancedTask", absent(v) ? "RunnerImage" : "runnerImage", true, e,
                                        &m->image);
                        if (r < 0)
                                return r;
                        r = read_string(advanced, "advancedTask", "JSONPayload", false, e, &m->json_payload);
                        if (r < 0)
                                return r;
                        read_flag(advanced, "deployerToken", e, &m->deployer_token);
                        read_flag(advanced, "sshKey", e, &m->ssh_key);
                        read_flag(advanced, "volumeMounts", e, &m->volume_mounts);
                }
                if (m->kind == LAGOON_MESSAGE_ACTIVESTANDBY) {
                        m->deployer_token = m->ssh_key = true;
                        r = read_activestandby_payload(m);
                        if (r < 0)
                                return r;
                }
                /* As remote-controller's ProjectClone(): the clone reads and writes the
                 * environment's files and talks to the API as its deployer. */
                if (m->kind == LAGOON_MESSAGE_PROJECTCLONE) {
                        m->deployer_token = m->ssh_key = m->volume_mounts = true;
                        if (advanced) {
                                r = read_clone_payload(m, e);
                                if (r < 0)
                                        return r;
                        }
                }
        }

        /* A cancel needs no variables, and they would only be secrets to hold. */
        if (project && !cancel) {
                variables = json_get(project, "variables");
                if (!absent(variables) && !json_is_object(variables))
                        fail(e, -EBADMSG, "project.variables is not an object");
                else if (!absent(variables)) {
                        r = read_variables(variables, "project", e, &m->project_variables_raw, &m->project_variables,
                                           &m->n_project_variables);
                        if (r < 0)
                                return r;
                        r = read_variables(variables, "environment", e, &m->environment_variables_raw,
                                           &m->environment_variables, &m->n_environment_variables);
                        if (r < 0)
                                return r;
                }
        }

        if (m->openshift_project_name) {
                m->namespace = strdup(m->openshift_project_name);
                if (!m->namespace)
                        return -ENOMEM;
        } else if (m->project && m->environment) {
                r = task_make_namespace(m->project, m->environment, m->namespace_pattern, NULL, &m->namespace);
                if (r == -ENOMEM)
                        return r;
                if (r < 0 && !cancel) {
                        _cleanup_free_ char *qp = quote(m->project), *qe = quote(m->environment);
                        if (!qp || !qe)
                                return -ENOMEM;
                        fail(e, -EBADMSG, "no namespace can be made of project \"%s\" and environment \"%s\"", qp, qe);
                }
        }
        return 0;
}

int lagoon_message_parse(LagoonQueue queue, const char *body, size_t size, LagoonMessage **ret, char **ret_error) {
        _cleanup_(lagoon_message_freep) LagoonMessage *m = NULL;
        _cleanup_json_ JsonValue *root = NULL;
        _cleanup_free_ char *error = NULL;
        ParseError e = {};
        int r;

        if (size > LAGOON_MESSAGE_SIZE_MAX) {
                *ret = NULL;
                return error_message(ret_error, -E2BIG, "message is too big (%zu bytes, at most %u)", size,
                                     LAGOON_MESSAGE_SIZE_MAX);
        }
        r = json_parse(body, size, JSON_DEPTH_MAX_DEFAULT, &root, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                *ret = NULL;
                return one_line(ret_error, error_message(ret_error, -EINVAL, "message is not JSON: %s", strna(error)));
        }
        if (!json_is_object(root)) {
                *ret = NULL;
                return error_message(ret_error, -EINVAL, "message is not a JSON object");
        }
        if (json_has_nul(root)) {
                *ret = NULL;
                return error_message(ret_error, -EINVAL, "message holds a NUL byte (\\u0000) in a string");
        }

        m = calloc(1, sizeof(LagoonMessage));
        if (!m)
                return -ENOMEM;
        r = parse_members(queue, root, m, &e);
        if (r >= 0)
                r = build_info(m, &m->info);
        if (r < 0) {
                free(e.reason);
                return r;
        }
        if (e.r < 0) {
                if (ret_error) {
                        if (!e.reason)
                                return -ENOMEM;
                        free(*ret_error);
                        *ret_error = e.reason;
                        one_line(ret_error, 0);
                } else
                        free(e.reason);
        }
        *ret = TAKE_PTR(m);
        return e.r;
}

int lagoon_message_set_namespace_prefix(LagoonMessage *m, const char *prefix) {
        char *ns = NULL;
        int r;

        if (isempty(prefix) || m->openshift_project_name || !m->project || !m->environment)
                return 0;
        r = task_make_namespace(m->project, m->environment, m->namespace_pattern, prefix, &ns);
        if (r < 0)
                return r;
        free(m->namespace);
        m->namespace = ns;
        return 0;
}

/* ---- variables ---- */

static const char *find_variable(const LagoonVariable *v, size_t n, const char *name) {
        /* The last one wins, as a later entry overrides in Lagoon's merged lists. */
        for (size_t i = n; i > 0; i--)
                if (streq_ptr(v[i - 1].name, name))
                        return v[i - 1].value;
        return NULL;
}

const char *lagoon_message_variable(const LagoonMessage *m, const char *name) {
        return find_variable(m->environment_variables, m->n_environment_variables, name)
                       ?: find_variable(m->project_variables, m->n_project_variables, name);
}

/* ---- secrets ---- */

bool lagoon_variable_is_secret(const LagoonVariable *v, char *const *patterns) {
        if (!v || !v->name)
                return false;
        if (streq_ptr(v->scope, "internal_system"))
                return false;
        if (streq_ptr(v->scope, "container_registry"))
                return true;
        for (char *const *p = patterns; p && *p; p++)
                if (fnmatch(*p, v->name, FNM_CASEFOLD) == 0)
                        return true;
        return false;
}

static int add_secret(char ***l, const char *value) {
        if (isempty(value) || strv_contains(*l, value))
                return 0;
        return strv_extend(l, value);
}

int lagoon_message_secrets(const LagoonMessage *m, char *const *secret_patterns, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;
        int r;

        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_project_variables; i++)
                if (lagoon_variable_is_secret(&m->project_variables[i], secret_patterns) &&
                    (r = add_secret(&l, m->project_variables[i].value)) < 0)
                        return r;
        for (size_t i = 0; i < m->n_environment_variables; i++)
                if (lagoon_variable_is_secret(&m->environment_variables[i], secret_patterns) &&
                    (r = add_secret(&l, m->environment_variables[i].value)) < 0)
                        return r;
        r = add_secret(&l, m->json_payload);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- projectclone ---- */

int lagoon_clone_advanced_data(const JsonValue *info, bool failed, char **ret) {
        const char *key = json_get_string(info, "key"), *status;
        _cleanup_free_ char *text = NULL;
        int64_t id;

        if (!key || json_int64(json_get(info, "cloneId"), &id) < 0 || id <= 0)
                return -ENODATA;
        if (streq(key, "deploytarget:task:projectclone"))
                status = failed ? "FAILED" : "SOURCE_FILES_UPLOADED";
        else if (streq(key, "deploytarget:task:projectclonerestore"))
                status = failed ? "FAILED" : "SOURCE_FILES_APPLIED";
        else
                return -ENODATA;
        /* The status goes into the GraphQL mutation as an enum literal: CloneStatus's names. */
        if (asprintf(&text, "{\"cloneId\":%" PRIi64 ",\"status\":\"%s\"}", id, status) < 0)
                return -ENOMEM;
        return base64_encode(text, strlen(text), ret);
}

/* ---- taskData ---- */

int lagoon_task_data_validate(const char *data, size_t size, char **ret, char **ret_error) {
        _cleanup_free_ char *decoded = NULL, *error = NULL, *copy = NULL;
        _cleanup_json_ JsonValue *v = NULL;
        size_t decoded_size;
        int r;

        while (size > 0 && isspace((unsigned char) data[0])) {
                data++;
                size--;
        }
        while (size > 0 && isspace((unsigned char) data[size - 1]))
                size--;

        if (size > LAGOON_TASK_DATA_MAX)
                return error_message(ret_error, -E2BIG, "taskData is too big (%zu bytes, at most %u)", size,
                                     LAGOON_TASK_DATA_MAX);
        r = base64_decode(data, size, &decoded, &decoded_size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_error, -EBADMSG, "taskData is not base64");
        r = json_parse(decoded, decoded_size, JSON_DEPTH_MAX_DEFAULT, &v, &error);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return one_line(ret_error,
                                error_message(ret_error, -EBADMSG, "taskData is not JSON: %s", strna(error)));

        copy = strndup(data, size);
        if (!copy)
                return -ENOMEM;
        *ret = TAKE_PTR(copy);
        return 0;
}
