#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A private containerd for tests (root only), everything under DIR, never the system's:
#
#   containerd.sh start DIR        containerd with root, state, gRPC and ttrpc sockets in
#                                  DIR (no CRI plugin), and a busybox-static OCI image made
#                                  with umoci, imported into namespace k8s.io as
#                                  lagoon-test/busybox:latest
#   containerd.sh run DIR ID CMD [CTR-RUN-OPTION…]
#                                  a running container ID in namespace k8s.io (ctr run -d
#                                  with the options, e.g. --with-ns to join a "sandbox"
#                                  container's namespaces as a CRI pod's containers do):
#                                  /bin/sh -c CMD
#   containerd.sh ctr DIR ARGS…    ctr against it
#   containerd.sh stop DIR         kills and removes its containers, stops containerd and its
#                                  shims by PID, unmounts what is left under DIR
#
# The state of a running container is then DIR/state/io.containerd.runtime.v2.task/k8s.io/ID
# (config.json, rootfs/ mounted, init.pid), as on a node with state = /run/containerd.

set -eu

IMAGE=lagoon-test/busybox:latest
NS=k8s.io

die() {
        echo "containerd.sh: $*" >&2
        exit 1
}

[ $# -ge 2 ] || die "usage: $0 start|run|ctr|stop DIR …"
cmd=$1
dir=$(realpath -m "$2")
shift 2
sock="$dir/containerd.sock"

ctr_() {
        ctr --address "$sock" --namespace "$NS" "$@"
}

# Shim processes serving this containerd (they outlive it): their command line names our socket.
shim_pids() {
        for p in /proc/[0-9]*; do
                case "$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" in
                *containerd-shim*"$sock"*) echo "${p#/proc/}" ;;
                esac
        done
}

unmount_under() {
        # Deepest first; lazily, so a busy mount is still detached.
        awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
                umount -l "$m" 2>/dev/null || true
        done
}

make_image() {
        oci="$dir/oci"
        bundle="$dir/image-bundle"
        rm -rf "$oci" "$bundle"
        umoci init --layout "$oci"
        umoci new --image "$oci:latest"
        umoci unpack --image "$oci:latest" "$bundle" >/dev/null
        mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/app" "$bundle/rootfs/tmp" "$bundle/rootfs/etc"
        cp /bin/busybox "$bundle/rootfs/bin/busybox"
        chroot "$bundle/rootfs" /bin/busybox --install -s /bin
        echo "root:x:0:0:root:/root:/bin/sh" >"$bundle/rootfs/etc/passwd"
        echo "image-file" >"$bundle/rootfs/app/from-image"
        umoci repack --image "$oci:latest" "$bundle"
        umoci config --image "$oci:latest" --config.env PATH=/bin:/usr/bin --config.env SERVICE_NAME=cli \
                --config.workingdir /app --config.cmd /bin/sh
        umoci gc --layout "$oci"
        rm -rf "$bundle"
        tar -C "$oci" -cf "$dir/busybox-oci.tar" .
        ctr_ images import --base-name lagoon-test/busybox "$dir/busybox-oci.tar" >/dev/null
        ctr_ images ls -q | grep -qx "$IMAGE" || die "image $IMAGE not imported"
}

start() {
        [ "$(id -u)" = 0 ] || die "needs root"
        mkdir -p "$dir/root" "$dir/state" "$dir/opt"
        [ ! -e "$dir/containerd.pid" ] || die "$dir/containerd.pid exists: already started?"
        # The default configuration with everything of ours moved under DIR.
        containerd config default | awk -v d="$dir" '
                /^root = /                { print "root = \"" d "/root\""; next }
                /^state = /               { print "state = \"" d "/state\""; next }
                /^disabled_plugins = /    { print "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"; next }
                /^\[grpc\]/               { sect = "grpc" }
                /^\[ttrpc\]/              { sect = "ttrpc" }
                /^\[debug\]/              { sect = "debug" }
                /^\[[a-z]/ && !/^\[(grpc|ttrpc|debug)\]/ { sect = "" }
                /^  address = / && sect == "grpc"  { print "  address = \"" d "/containerd.sock\""; next }
                /^  address = / && sect == "ttrpc" { print "  address = \"" d "/containerd.sock.ttrpc\""; next }
                /^  address = / && sect == "debug" { print "  address = \"\""; next }
                /^    path = "\/opt\/containerd"/ { print "    path = \"" d "/opt\""; next }
                { print }' >"$dir/config.toml"
        grep -q "^  address = \"$dir/containerd.sock.ttrpc\"" "$dir/config.toml" || die "ttrpc address not set"

        containerd --config "$dir/config.toml" --log-level warn >"$dir/containerd.log" 2>&1 &
        echo $! >"$dir/containerd.pid"
        i=0
        until ctr --address "$sock" version >/dev/null 2>&1; do
                i=$((i + 1))
                if [ $i -gt 100 ] || ! kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
                        cat "$dir/containerd.log" >&2
                        die "containerd did not come up"
                fi
                sleep 0.1
        done
        make_image
}

run() {
        [ $# -ge 2 ] || die "usage: $0 run DIR ID CMD [CTR-RUN-OPTION…]"
        id=$1
        command=$2
        shift 2
        ctr_ run -d --snapshotter overlayfs "$@" "$IMAGE" "$id" /bin/sh -c "$command" >/dev/null
        i=0
        until [ "$(ctr_ task ls | awk -v id="$id" '$1 == id { print $3 }')" = RUNNING ]; do
                i=$((i + 1))
                [ $i -le 100 ] || die "container $id is not running"
                sleep 0.1
        done
}

stop() {
        if [ -S "$sock" ]; then
                for id in $(ctr_ task ls -q 2>/dev/null); do
                        ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
                done
                for id in $(ctr_ task ls -q 2>/dev/null); do
                        i=0
                        while ctr_ task ls | awk -v id="$id" '$1 == id { print $3 }' | grep -q RUNNING; do
                                i=$((i + 1))
                                [ $i -le 50 ] || break
                                sleep 0.1
                        done
                        ctr_ task rm -f "$id" >/dev/null 2>&1 || true
                done
                for id in $(ctr_ containers ls -q 2>/dev/null); do
                        ctr_ containers rm "$id" >/dev/null 2>&1 || true
                done
        fi
        if [ -f "$dir/containerd.pid" ]; then
                pid=$(cat "$dir/containerd.pid")
                kill "$pid" 2>/dev/null || true
                i=0
                while kill -0 "$pid" 2>/dev/null; do
                        i=$((i + 1))
                        if [ $i -gt 50 ]; then
                                kill -9 "$pid" 2>/dev/null || true
                                break
                        fi
                        sleep 0.1
                done
                rm -f "$dir/containerd.pid"
        fi
        for pid in $(shim_pids); do
                kill -9 "$pid" 2>/dev/null || true
        done
        unmount_under
}

case "$cmd" in
start) start ;;
run) run "$@" ;;
ctr) ctr_ "$@" ;;
stop) stop ;;
*) die "unknown command $cmd" ;;
esac
