#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Installs the Debian 12 packages lagoon-taskd needs to build, run and test.
set -euo pipefail

BUILD_DEPS="meson ninja-build pkg-config gcc libsystemd-dev libcurl4-openssl-dev libyajl-dev
            libseccomp-dev libssl-dev libmicrohttpd-dev librabbitmq-dev libyaml-dev"
RUN_DEPS="conmon runc busybox-static catatonit"
TEST_DEPS="clang-format git crun umoci systemd systemd-container python3 curl jq clang libclang-rt-14-dev util-linux
           openssl rabbitmq-server python3-pika python3-prometheus-client prometheus scdoc groff-base man-db
           bash-completion containerd
           debhelper dpkg-dev fakeroot lintian rpm debootstrap build-essential zstd"

if [ "$(id -u)" != 0 ]; then
        echo "install-deps.sh: run as root (apt-get)" >&2
        exit 1
fi
missing=()
for p in $BUILD_DEPS $RUN_DEPS ${WITH_TEST_DEPS:+$TEST_DEPS}; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
