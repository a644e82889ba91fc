/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon configuration: /etc/lagoon-taskd/taskd.conf plus taskd.conf.d/ *.conf
 * drop-ins, INI in systemd style. See README "Configuration" for every key.
 *
 *   [Daemon]   StateDirectory=, RuntimeDirectory=, ListenSocket=, SocketGroup=, LogLevel=
 *   [Runtime]  Runtime=, RuntimeArguments=, Conmon=, ConmonArguments=, Init=
 *   [Tasks]    MaxRunning=, MaxRunningPerEnvironment=, MaxQueued=, DefaultTimeoutSec=,
 *              KillGraceSec=, KeepFinished=, TaskLogSizeMax=, MinFreeSpace=, DefaultService=, DefaultProject=,
 *              DefaultEnvironment=, Secret=, SecretFile=
 *   [Lagoon]   TargetName=, BrokerURL=, BrokerUser=, BrokerPasswordFile=, BrokerCAFile=,
 *              BrokerCertFile=, BrokerKeyFile=, BrokerHeartbeatSec=, BrokerPrefetch=,
 *              APIURL=, APITokenFile=, JWTSecretFile=, JWTAudience=, APICAFile=,
 *              LogUpdateIntervalSec=, LogSizeMax=, BrokerMessageSizeMax=, FinalStatusDelaySec=,
 *              SecretVariables=,
 *              APIHost=, SSHHost=, SSHPort=, TokenHost=, TokenPort=,
 *              SSHKeyFile=, DeployerTokenFile=, NamespacePrefix=, RandomNamespacePrefix=,
 *              ControllerNamespace=, RemoteControllerTarget=, ForceRootlessWorkload=,
 *              DefaultRootlessWorkload=
 *   [Kubernetes]  NodeName=, Kubeconfig=, Context=, Server=, CAFile=, TokenFile=,
 *              ClientCertFile=, ClientKeyFile=, InCluster=, KubeletURL=, KubeletCAFile=,
 *              KubeletTokenFile=, KubeletCertFile=, KubeletKeyFile=, ContainerdState=,
 *              ContainerdNamespace=, CRIORunRoot=, KeepTaskPods=, ClaimNamespace=,
 *              ClaimDurationSec=, ClaimRetentionSec=
 *   [Service NAME]  Bundle=, Seccomp=
 *   [Image REFERENCE]  Bundle=, Seccomp=   (local bundles for advanced-task runner images)
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define CONFIG_PATH_DEFAULT "/etc/lagoon-taskd/taskd.conf"

typedef enum SeccompMode {
        SECCOMP_MODE_AUTO,       /* the service's own profile if its config.json has one, else the default */
        SECCOMP_MODE_DEFAULT,    /* always the built-in default profile */
        SECCOMP_MODE_UNCONFINED, /* no seccomp filter */
        SECCOMP_MODE_PROFILE,    /* an OCI "linux.seccomp" JSON object read from seccomp_profile */
} SeccompMode;

typedef struct ServiceConfig {
        char *name;
        char *bundle;          /* Bundle=: OCI bundle directory (config.json + rootfs), local mode */
        SeccompMode seccomp;   /* Seccomp=auto|default|unconfined|/path/to/profile.json */
        char *seccomp_profile; /* path, when seccomp == SECCOMP_MODE_PROFILE */
        char *section_file;    /* where the section first appeared, for messages (config_finalize) */
        unsigned section_line;
} ServiceConfig;

typedef struct Config {
        /* [Daemon] */
        char *state_dir;     /* StateDirectory=, default /var/lib/lagoon-taskd */
        char *runtime_dir;   /* RuntimeDirectory=, default /run/lagoon-taskd */
        char *listen_socket; /* ListenSocket=, default <runtime_dir>/api.sock; used without socket activation */
        char *socket_group;  /* SocketGroup=, default "lagoon-task"; members may use the API */
        int log_level;       /* LogLevel=, default LOG_INFO */

        /* [Runtime] */
        char *runtime;                      /* Runtime=, PATH lookup; unset: config_finalize() picks crun or runc */
        const char *runtime_default_reason; /* why, when it picked it (static); NULL when Runtime= was set */
        char **runtime_args; /* RuntimeArguments=, space-separated, shell-style quotes; repeated keys append, empty
                                resets */
        char *conmon;        /* Conmon=, default "conmon" (PATH lookup) */
        char **conmon_args;  /* ConmonArguments=, like RuntimeArguments= */
        char *init;          /* Init=, default /usr/bin/catatonit; NULL (Init=no): none */

        /* [Tasks] */
        unsigned max_running;                 /* MaxRunning=, default 4, >= 1 */
        unsigned max_running_per_environment; /* MaxRunningPerEnvironment=, default 0 = no limit */
        unsigned max_queued;                  /* MaxQueued=, default 1000; submissions beyond it get 503 */
        uint64_t default_timeout_usec;        /* DefaultTimeoutSec=, default 6h; "infinity" = USEC_INFINITY */
        uint64_t kill_grace_usec;             /* KillGraceSec=, default 10s: SIGTERM → SIGKILL */
        unsigned keep_finished;               /* KeepFinished=, default 100 finished tasks (records + logs) */
        uint64_t task_log_size_max;           /* TaskLogSizeMax=, default 32 MiB: cap of a task log file */
        uint64_t min_free_space;              /* MinFreeSpace=, default 64 MiB: no launch below it, 0 = no check */
        char *default_service;                /* DefaultService=, default "cli" */
        char *default_project;                /* DefaultProject=, default "local" */
        char *default_environment;            /* DefaultEnvironment=, default "local" */
        char **secrets;                       /* Secret= (repeatable), plus one value per line of each SecretFile= */

        /* Every assignment in force, as "[Section] Key=value" (a list key: one entry per
         * value since its last reset), in the order given: what config_changes() compares. */
        char **assignments;

        ServiceConfig *services; /* [Service NAME] sections, in order of appearance */
        size_t n_services;
        ServiceConfig *images; /* [Image REFERENCE] sections: name is the image reference */
        size_t n_images;

        /* [Lagoon] — the bus source is on when TargetName= and BrokerURL= are set, the
         * API sink when TargetName= and APIURL= are. Credential files are read when the
         * configuration is loaded; their values join secrets. */
        char *target_name;             /* TargetName=: deploy target; queues lagoon-tasks:<target>:jobs|misc,
                                          clusterName in reports */
        char *broker_url;              /* BrokerURL=: amqp[s]://host[:port][/vhost] */
        char *broker_user;             /* BrokerUser=, default from the URL, else "guest" */
        char *broker_password;         /* content of BrokerPasswordFile= (trailing newline stripped) */
        char *broker_ca_file;          /* BrokerCAFile= */
        char *broker_cert_file;        /* BrokerCertFile= */
        char *broker_key_file;         /* BrokerKeyFile= */
        unsigned broker_heartbeat_sec; /* BrokerHeartbeatSec=, default 30 */
        unsigned broker_prefetch;      /* BrokerPrefetch=, default 4 */
        char *api_url;                 /* APIURL=: Lagoon's GraphQL endpoint, e.g. https://api.example/graphql */
        char *api_token;               /* content of APITokenFile= (a ready bearer token) */
        char *jwt_secret;              /* content of JWTSecretFile= (Lagoon's JWTSECRET) */
        char *jwt_audience;            /* JWTAudience=, default "api.dev" */
        char *api_ca_file;             /* APICAFile= */
        uint64_t log_interval_usec;    /* LogUpdateIntervalSec=, default 5 s: log messages while running */
        uint64_t log_size_max;         /* LogSizeMax=, default 8 MiB: cap of a log sent to Lagoon */
        uint64_t message_size_max;     /* BrokerMessageSizeMax=, default 16 MiB: cap of an encoded message */
        uint64_t final_delay_usec;     /* FinalStatusDelaySec=, default 2 s: gap before a final status */
        char **secret_variables;       /* SecretVariables=: globs of Lagoon variable names whose values are
                                          masked; default *PASSWORD* *SECRET* *TOKEN* *_KEY */
        char *lagoon_api_host;         /* APIHost=: TASK_API_HOST, LAGOON_CONFIG_API_HOST */
        char *lagoon_ssh_host;         /* SSHHost=: LAGOON_CONFIG_SSH_HOST */
        char *lagoon_ssh_port;         /* SSHPort=: LAGOON_CONFIG_SSH_PORT */
        char *lagoon_token_host;       /* TokenHost=: LAGOON_CONFIG_TOKEN_HOST and TASK_SSH_HOST (as
                                          remote-controller: Lagoon's task scripts get a token there) */
        char *lagoon_token_port;       /* TokenPort=: LAGOON_CONFIG_TOKEN_PORT and TASK_SSH_PORT */
        char *http_proxy;              /* HTTPProxy=: HTTP_PROXY and http_proxy of standard tasks */
        char *https_proxy;             /* HTTPSProxy=: HTTPS_PROXY and https_proxy */
        char *no_proxy;                /* NoProxy=: NO_PROXY and no_proxy */
        char *rootless_force;          /* ForceRootlessWorkload=: "enabled"/"disabled"/NULL; wins over
                                          the LAGOON_FEATURE_FLAG_ROOTLESS_WORKLOAD variable */
        char *rootless_default;        /* DefaultRootlessWorkload=: when neither sets it */
        char *ssh_key_file;            /* SSHKeyFile=: mounted for advanced tasks with sshKey (local mode) */
        char *deployer_token_file;     /* DeployerTokenFile=: mounted for advanced tasks with deployerToken */
        char *namespace_prefix;        /* NamespacePrefix= (remote-controller's --namespace-prefix); with
                                          RandomNamespacePrefix=yes, the 8 hex digits derived from
                                          ControllerNamespace= (its --random-prefix) once loaded */
        bool random_namespace_prefix;  /* RandomNamespacePrefix= */
        char *controller_namespace;    /* ControllerNamespace= (its --controller-namespace) */
        char *rc_target;               /* RemoteControllerTarget=: coexistence with remote-controller running
                                          under this target name: builds and the non-task misc messages
                                          go to its queues lagoon-tasks:<rc>:builddeploy|remove|misc */

        /* [Kubernetes] — node mode: services without a [Service] section are found through
         * the kubelet (KubeletURL=) and the API server (Kubeconfig=, Server= or InCluster=). */
        char *node_name;               /* NodeName=, default the host name */
        char *kubeconfig;              /* Kubeconfig=: API server credentials from a kubeconfig file */
        char *kube_context;            /* Context=: kubeconfig context, default its current-context */
        char *kube_server;             /* Server=: API server URL (instead of Kubeconfig=) */
        char *kube_ca_file;            /* CAFile= */
        char *kube_token_file;         /* TokenFile=: bearer token, re-read for every request */
        char *kube_cert_file;          /* ClientCertFile= */
        char *kube_key_file;           /* ClientKeyFile= */
        bool kube_in_cluster;          /* InCluster=: the service-account token and CA of a pod */
        char *kubelet_url;             /* KubeletURL=, e.g. https://127.0.0.1:10250 */
        char *kubelet_ca_file;         /* KubeletCAFile= */
        char *kubelet_token_file;      /* KubeletTokenFile= */
        char *kubelet_cert_file;       /* KubeletCertFile= */
        char *kubelet_key_file;        /* KubeletKeyFile= */
        char *containerd_state;        /* ContainerdState=, default /run/containerd */
        char *containerd_namespace;    /* ContainerdNamespace=, default k8s.io */
        char *crio_run_root;           /* CRIORunRoot=, default /run/containers/storage */
        char **api_namespaces;         /* APINamespaces=: globs of the namespaces tasks from the control API may
                                        * use in node mode; none by default */
        unsigned keep_task_pods;       /* KeepTaskPods=, default 1 finished task pod per namespace */
        char *claim_namespace;         /* ClaimNamespace=: cluster mode, tasks claimed as Leases there */
        uint64_t claim_duration_usec;  /* ClaimDurationSec=, default 60 s */
        uint64_t claim_retention_usec; /* ClaimRetentionSec=, default 1 h */
} Config;

/* Load path (default CONFIG_PATH_DEFAULT when NULL) and then "<path>.d/" *.conf files in
 * lexical order; later assignments override earlier ones. A missing main file is fine
 * when path is NULL (defaults apply) and an error (-ENOENT) when it was given.
 * Every problem (unknown section or key, invalid value, syntax) is logged as
 * "FILE:LINE: message" at error level; after reading everything, any problem makes
 * the call fail with -EINVAL. */
int config_load(const char *path, Config **ret);

/* What a reload from old to new changes, key by key, one line each ("[Tasks] MaxRunning=
 * 4 → 8", "[Tasks] KillGraceSec=30s (was the default)", "[Tasks] Secret= changed (values
 * not shown)"); the values of Secret= and BrokerURL=, and what credential and secret files
 * hold, are never in them. *ret is an empty list when nothing changed. -ENOMEM. */
int config_changes(const Config *old, const Config *new, char ***ret);

/* Where a cgroups v1/v2 hybrid host mounts its cgroup2 hierarchy. */
#define CONFIG_CGROUP_UNIFIED "/sys/fs/cgroup/unified"

/* The runtime for Runtime= unset: "crun" when it is in PATH and this host's cgroups let it
 * run (not a v1/v2 hybrid whose cgroup2 hierarchy, mounted at unified_path, has
 * controllers), else "runc". *ret_reason (may be NULL) says why, for --check-config and
 * the log. Both strings are static. */
const char *config_default_runtime(const char *unified_path, const char **ret_reason);

/* Parse INI text directly (for tests and fuzzing); file_name is used in messages. */
int config_parse_string(Config *c, const char *file_name, const char *text, size_t size);
Config *config_new(void); /* all defaults */
/* Checks done after all files are read: derived defaults, e.g. listen_socket. */
int config_finalize(Config *c);

Config *config_free(Config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

const ServiceConfig *config_find_service(const Config *c, const char *name);
/* Node mode: a [Kubernetes] source of services is configured. */
bool config_kube_enabled(const Config *c);
/* The [Service NAME] names, ", "-separated, in order ("" when none), for messages. */
int config_service_names(const Config *c, char **ret);
const ServiceConfig *config_find_image(const Config *c, const char *reference);
