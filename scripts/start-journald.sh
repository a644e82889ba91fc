#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# start-journald.sh [COMMAND [ARG...]]
#
# Runs COMMAND (default: $SHELL) in a private mount namespace that has its own
# systemd-journald, for machines (containers, CI) where journald is not running. Inside,
# tmpfs mounts on /run/systemd/journal and /run/log hold the journald sockets and a
# volatile journal, so lagoon-taskd (and anything else) can log there and plain
# `journalctl LAGOON_TASK_ID=…` reads it back. Nothing is changed outside the namespace
# (two empty directories may be created). journald is stopped when COMMAND ends.
#
# Needs root, unshare (util-linux) and systemd's journald binary.
set -eu

journald=
for p in /lib/systemd/systemd-journald /usr/lib/systemd/systemd-journald; do
        [ -x "$p" ] && journald=$p && break
done
[ -n "$journald" ] || { echo "$0: systemd-journald not found" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 1; }

if [ "${LAGOON_JOURNALD_NS:-}" != 1 ]; then
        LAGOON_JOURNALD_NS=1 exec unshare -m --propagation private -- "$0" "$@"
fi

mkdir -p /run/systemd/journal /run/log
mount -t tmpfs -o mode=0755 tmpfs /run/systemd/journal
mount -t tmpfs -o mode=0755 tmpfs /run/log
conf=/run/systemd/journal/journald-private.conf
cat >"$conf" <<'CONF'
[Journal]
Storage=volatile
RateLimitIntervalSec=0
RateLimitBurst=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
ReadKMsg=no
CONF
# Our settings replace the host's, in this namespace only.
[ -e /etc/systemd/journald.conf ] && mount --bind "$conf" /etc/systemd/journald.conf

"$journald" >/run/systemd/journal/journald.log 2>&1 &
jpid=$!
i=0
while ! [ -S /run/systemd/journal/socket ]; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! kill -0 $jpid 2>/dev/null; then
                echo "$0: journald did not start:" >&2
                cat /run/systemd/journal/journald.log >&2
                exit 1
        fi
        sleep 0.1
done
echo "journald running (pid $jpid); read with: journalctl LAGOON_TASK_ID=<id>" >&2

rc=0
if [ $# -gt 0 ]; then
        "$@" || rc=$?
else
        "${SHELL:-/bin/sh}" || rc=$?
fi
kill $jpid 2>/dev/null || true
wait $jpid 2>/dev/null || true
exit $rc
