#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make-demo-bundle.sh DIR — makes a small OCI bundle usable as a lagoon-taskd service
# in embedded local mode: DIR/config.json (from `runc spec`) and DIR/rootfs with a
# static busybox and its applet symlinks, /etc/passwd, /etc/group and
# /srv/service.txt ("written by the service"). process.env carries a PATH and a
# CRONJOBS variable (which tasks must not inherit). The service's own process just
# prints its file and sleeps; tasks replace process.args.
#
# Needs: runc (or crun) for `spec`, busybox-static (/bin/busybox), python3 or jq.
set -eu

if [ $# -ne 1 ]; then
        echo "usage: $0 DIR" >&2
        exit 2
fi
dir=$1
busybox=${BUSYBOX:-/bin/busybox}
runtime=${RUNTIME:-runc}

if ! [ -x "$busybox" ]; then
        echo "$0: $busybox not found (apt-get install busybox-static)" >&2
        exit 1
fi
case "$(file -b "$busybox" 2>/dev/null || echo static)" in
*dynamically*) echo "$0: $busybox is not static (install busybox-static)" >&2; exit 1 ;;
esac
if [ -e "$dir/config.json" ] || [ -e "$dir/rootfs" ]; then
        echo "$0: $dir already holds a bundle" >&2
        exit 1
fi

mkdir -p "$dir/rootfs"
dir=$(cd "$dir" && pwd)
root=$dir/rootfs

mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
         "$root/srv" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev" \
         "$root/run" "$root/var/tmp"
chmod 1777 "$root/tmp" "$root/var/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"

# The equivalent of `busybox --install -s` inside the rootfs, without needing a
# chroot with /proc: one absolute symlink per applet.
"$root/bin/busybox" --list-full | while read -r applet; do
        [ "$applet" = bin/busybox ] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
done
[ -x "$root/bin/sh" ] || { echo "$0: busybox gave no /bin/sh" >&2; exit 1; }

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo "demo" >"$root/etc/hostname"
echo "written by the service" >"$root/srv/service.txt"

(cd "$dir" && "$runtime" spec)

# Make it a non-interactive service: no terminal, a PATH and CRONJOBS, a process
# that prints its file and sleeps.
edit='
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/sh", "-c", "cat /srv/service.txt; exec sleep 2147483647"]
c["process"]["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                       "HOME=/root",
                       "CRONJOBS=*/15 * * * * drush cron",
                       "LAGOON_SERVICE_NAME=cli"]
c["process"]["cwd"] = "/"
c["hostname"] = "demo-cli"
'
if command -v python3 >/dev/null 2>&1; then
        python3 - "$dir/config.json" <<PY
import json, sys
p = sys.argv[1]
with open(p) as f:
    c = json.load(f)
$edit
with open(p + ".tmp", "w") as f:
    json.dump(c, f, indent=2)
    f.write("\n")
import os
os.rename(p + ".tmp", p)
PY
elif command -v jq >/dev/null 2>&1; then
        jq '.process.terminal = false
            | .process.args = ["/bin/sh", "-c", "cat /srv/service.txt; exec sleep 2147483647"]
            | .process.env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              "HOME=/root", "CRONJOBS=*/15 * * * * drush cron",
                              "LAGOON_SERVICE_NAME=cli"]
            | .process.cwd = "/" | .hostname = "demo-cli"' \
                "$dir/config.json" >"$dir/config.json.tmp"
        mv "$dir/config.json.tmp" "$dir/config.json"
else
        echo "$0: need python3 or jq to edit config.json" >&2
        exit 1
fi

echo "$dir"
