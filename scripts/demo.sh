#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The embedded local mode end to end: installs the Debian packages, builds with meson,
# makes a demo "cli" service (an OCI bundle from busybox-static), starts lagoon-taskd
# with an example configuration, and runs a real task in a real container through
# lagoon-taskctl, showing its output and exit code. Run as root from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
        echo "demo.sh: run as root (it installs packages and runs containers)" >&2
        exit 1
fi
./scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

demo=${DEMO_DIR:-/var/tmp/lagoon-taskd-demo}
if [ -d "$demo/state" ]; then
        # Leftovers of an earlier run: its daemon is gone, remove its containers' mounts.
        grep -o " $demo/state/containers/[^ ]*/rootfs " /proc/self/mountinfo | xargs -r -n1 umount -l || true
fi
rm -rf "$demo"
mkdir -p "$demo"
./scripts/make-demo-bundle.sh "$demo/cli-bundle" >/dev/null

cat >"$demo/taskd.conf" <<CONF
# Example configuration for the demo (see README "Configuration").
[Daemon]
StateDirectory=$demo/state
RuntimeDirectory=$demo/run
ListenSocket=$demo/run/api.sock

[Runtime]
Runtime=runc
Conmon=conmon

[Tasks]
MaxRunning=4
DefaultTimeoutSec=10min
Secret=demo-secret-value

[Service cli]
Bundle=$demo/cli-bundle
CONF

echo "### Starting lagoon-taskd --config $demo/taskd.conf"
./build/lagoon-taskd --config "$demo/taskd.conf" 2> >(sed 's/^/    [lagoon-taskd] /' >&2) &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do
        [ -S "$demo/run/api.sock" ] && break
        kill -0 $daemon 2>/dev/null || { echo "lagoon-taskd exited" >&2; exit 1; }
        sleep 0.1
done

export LAGOON_TASKD_SOCKET=$demo/run/api.sock
cmd='echo hello; uname -a; exit 3'
echo "### lagoon-taskctl run --service cli --wait -- '$cmd'"
set +e
./build/lagoon-taskctl run --service cli --wait -- "$cmd"
code=$?
set -e
echo "### exit code: $code"
echo "### lagoon-taskctl ls"
./build/lagoon-taskctl ls
[ "$code" = 3 ]
