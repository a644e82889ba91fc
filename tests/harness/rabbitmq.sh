#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Starts and stops a private RabbitMQ node for tests: its own node name, 127.0.0.1
# only, free ports, its own epmd (started here, so it can be stopped by PID), data and
# logs in a temporary directory owned by the rabbitmq user.
#
#   rabbitmq.sh start DIR          start (or restart, same ports and data); prints the AMQP port
#   rabbitmq.sh stop DIR [--keep]  stop the node and its epmd; removes the data unless --keep
#   rabbitmq.sh pause DIR          SIGSTOP the node (a silent broker, for heartbeat tests)
#   rabbitmq.sh resume DIR         SIGCONT it
#   rabbitmq.sh ctl DIR ARGS…      run rabbitmqctl against the node
#   rabbitmq.sh tls-port DIR       prints the AMQPS port (see below)
#
# DIR holds the state of this script (ports, PIDs, where the data is); it is created when
# missing. When DIR/tls/ holds ca.pem, server.pem and server.key at the first start, the
# node also listens for AMQP over TLS (client certificates optional). When DIR/extra.conf
# exists at the first start, its lines are added to the node's rabbitmq.conf (a test's
# own limits, e.g. max_message_size). Exits 77 when not root or rabbitmq-server is not
# installed.
set -euo pipefail

RABBITMQ_BIN=/usr/lib/rabbitmq/bin
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-120}

die() {
        echo "rabbitmq.sh: $*" >&2
        exit 1
}

skip() {
        echo "rabbitmq.sh: skipped: $*" >&2
        exit 77
}

[ $# -ge 2 ] || die "usage: $0 start|stop|pause|resume|ctl DIR [args]"
cmd=$1
dir=$2
shift 2

[ "$(id -u)" = 0 ] || skip "not root"
[ -x /usr/sbin/rabbitmq-server ] && [ -x "$RABBITMQ_BIN/rabbitmq-server" ] || skip "rabbitmq-server not installed"
id rabbitmq >/dev/null 2>&1 || skip "no rabbitmq user"
command -v epmd >/dev/null || skip "epmd not installed"

free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The command prefix that runs a program as rabbitmq with the node's environment. It
# is an array, not a function, so "${as_rabbitmq[@]}" prog & is a plain command and $!
# is the program itself (setpriv and env exec, no shell stays in between).
set_env() {
        as_rabbitmq=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- env -i
                PATH=/usr/sbin:/usr/bin:/sbin:/bin
                HOME="$work/home"
                LANG=C.UTF-8 LC_ALL=C.UTF-8
                RABBITMQ_NODENAME="$node"
                RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
                RABBITMQ_NODE_PORT="$amqp_port"
                RABBITMQ_DIST_PORT="$dist_port"
                RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
                ERL_EPMD_ADDRESS=127.0.0.1
                ERL_EPMD_PORT="$epmd_port"
                RABBITMQ_MNESIA_BASE="$work/mnesia"
                RABBITMQ_LOG_BASE="$work/log"
                RABBITMQ_CONFIG_FILE="$work/rabbitmq.conf"
                RABBITMQ_ADVANCED_CONFIG_FILE="$work/advanced.config"
                RABBITMQ_ENABLED_PLUGINS_FILE="$work/enabled_plugins"
                RABBITMQ_CONF_ENV_FILE="$work/rabbitmq-env.conf"
                RABBITMQ_PID_FILE="$work/rabbitmq.pid"
                RABBITMQ_LOGS="$work/log/rabbit.log")
}

load_state() {
        [ -f "$dir/state" ] || die "$dir/state missing: not started with this script"
        # shellcheck disable=SC1091
        . "$dir/state"
        set_env
}

ctl() {
        "${as_rabbitmq[@]}" "$RABBITMQ_BIN/rabbitmqctl" -n "$node" "$@"
}

alive() {
        [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null
}

wait_gone() {
        local pid=$1 i
        for ((i = 0; i < 300; i++)); do
                alive "$pid" || return 0
                sleep 0.1
        done
        return 1
}

# rabbitmq-server runs the VM as a child of a shell that waits for it; the node
# writes the VM's own PID to its pid file.
vm_pid() {
        local p
        p=$(cat "$work/rabbitmq.pid" 2>/dev/null) || die "no pid file"
        [ -n "$p" ] || die "empty pid file"
        echo "$p"
}

do_start() {
        mkdir -p "$dir"
        if [ -f "$dir/state" ]; then
                load_state
                if alive "${server_pid:-}"; then
                        echo "$amqp_port"
                        return 0
                fi
        else
                work=$(mktemp -d /tmp/rabbitmq-test.XXXXXX)
                node="taskd-test-$$-$RANDOM@localhost"
                amqp_port=$(free_port)
                dist_port=$(free_port)
                epmd_port=$(free_port)
                tls_port=
                mkdir -p "$work/home" "$work/mnesia" "$work/log"
                # Own, empty configuration: nothing from /etc/rabbitmq leaks in.
                printf 'loopback_users.guest = true\nlisteners.tcp.default = 127.0.0.1:%s\n' "$amqp_port" >"$work/rabbitmq.conf"
                if [ -f "$dir/tls/ca.pem" ] && [ -f "$dir/tls/server.pem" ] && [ -f "$dir/tls/server.key" ]; then
                        tls_port=$(free_port)
                        mkdir -p "$work/tls"
                        cp "$dir/tls/ca.pem" "$dir/tls/server.pem" "$dir/tls/server.key" "$work/tls/"
                        cat >>"$work/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $work/tls/ca.pem
ssl_options.certfile = $work/tls/server.pem
ssl_options.keyfile = $work/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
EOF
                fi
                if [ -f "$dir/extra.conf" ]; then
                        cat "$dir/extra.conf" >>"$work/rabbitmq.conf"
                fi
                echo '[].' >"$work/advanced.config"
                echo '[].' >"$work/enabled_plugins"
                : >"$work/rabbitmq-env.conf"
                chown -R rabbitmq:rabbitmq "$work"
                chmod 700 "$work"
                server_pid=
                epmd_pid=
        fi
        set_env

        # Our own epmd, in the foreground of a background job: its PID is known, and
        # the node finds it running instead of starting a daemonized one.
        if ! alive "${epmd_pid:-}"; then
                "${as_rabbitmq[@]}" epmd -address 127.0.0.1 -port "$epmd_port" </dev/null >>"$work/log/epmd.log" 2>&1 &
                epmd_pid=$!
        fi
        "${as_rabbitmq[@]}" "$RABBITMQ_BIN/rabbitmq-server" </dev/null >>"$work/log/server.out" 2>&1 &
        server_pid=$!

        cat >"$dir/state" <<EOF
work=$work
node=$node
amqp_port=$amqp_port
dist_port=$dist_port
epmd_port=$epmd_port
tls_port=$tls_port
server_pid=$server_pid
epmd_pid=$epmd_pid
EOF

        # Poll the AMQP port first (cheap), then let rabbitmqctl confirm once: each
        # rabbitmqctl run boots an Erlang VM, seconds on a loaded machine.
        local start=$SECONDS
        until (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; do
                if ! alive "$server_pid"; then
                        tail -n 30 "$work/log/server.out" >&2 || true
                        die "rabbitmq-server exited during startup (logs in $work/log)"
                fi
                [ $((SECONDS - start)) -lt "$START_TIMEOUT" ] || die "rabbitmq-server did not start within ${START_TIMEOUT}s (logs in $work/log)"
                sleep 0.2
        done
        ctl await_startup --timeout "$START_TIMEOUT" >/dev/null || die "rabbitmq-server did not finish starting (logs in $work/log)"
        echo "$amqp_port"
}

do_stop() {
        local keep=false
        [ "${1:-}" = --keep ] && keep=true
        [ -f "$dir/state" ] || return 0
        load_state
        if alive "$server_pid"; then
                # A stopped (paused) node cannot answer rabbitmqctl.
                [ -s "$work/rabbitmq.pid" ] && kill -CONT "$(cat "$work/rabbitmq.pid")" 2>/dev/null || true
                ctl stop >/dev/null 2>&1 || true
                if ! wait_gone "$server_pid"; then
                        kill -TERM "$server_pid" 2>/dev/null || true
                        wait_gone "$server_pid" || kill -KILL "$server_pid" 2>/dev/null || true
                fi
        fi
        if alive "$epmd_pid"; then
                kill -TERM "$epmd_pid" 2>/dev/null || true
                wait_gone "$epmd_pid" || kill -KILL "$epmd_pid" 2>/dev/null || true
        fi
        if $keep; then
                sed -i -e 's/^server_pid=.*/server_pid=/' -e 's/^epmd_pid=.*/epmd_pid=/' "$dir/state"
        else
                case "$work" in
                /tmp/rabbitmq-test.*) rm -rf "$work" ;;
                esac
                rm -f "$dir/state"
        fi
}

case "$cmd" in
start) do_start ;;
stop) do_stop "$@" ;;
pause)
        load_state
        alive "$server_pid" || die "not running"
        kill -STOP "$(vm_pid)"
        ;;
resume)
        load_state
        kill -CONT "$(vm_pid)"
        ;;
tls-port)
        load_state
        [ -n "${tls_port:-}" ] || die "no TLS listener (no $dir/tls/ at the first start)"
        echo "$tls_port"
        ;;
ctl)
        load_state
        ctl "$@"
        ;;
*) die "unknown command $cmd" ;;
esac
