#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Builds the DEB (packaging/debian) and the RPM (packaging/rpm/lagoon-taskd.spec) from the
# files git tracks in this tree, outside the tree; runs lintian on the .deb (errors fail)
# and checks both packages' file lists. The last line is DEB=<path of the .deb>.
#
#   scripts/build-packages.sh [--out DIR]     (default /tmp/lagoon-taskd-packages)
#
# Needs: dpkg-dev debhelper fakeroot lintian rpm, plus the build dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

out=/tmp/lagoon-taskd-packages
while [ $# -gt 0 ]; do
        case "$1" in
        --out) out="$2"; shift 2 ;;
        --out=*) out="${1#--out=}"; shift ;;
        *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
        esac
done

version=$(sed -n "s/^ *version : '\([^']*\)'.*/\1/p" meson.build | head -1)
name=lagoon-taskd-$version
rm -rf "$out"
mkdir -p "$out/src" "$out/rpmbuild"/{SOURCES,SPECS,BUILD,RPMS,SRPMS,BUILDROOT}
out=$(cd "$out" && pwd)

# The tracked files only (plus uncommitted edits of them), never build directories.
git ls-files -z --cached | grep -zv '^packaging/debian/' |
        tar --null -T - -cf - | tar -xf - -C "$out/src" --one-top-level="$name"
tar -C "$out/src" -czf "$out/rpmbuild/SOURCES/$name.tar.gz" "$name"

# ---- DEB
cp -r packaging/debian "$out/src/$name/debian"
(cd "$out/src/$name" && dpkg-buildpackage -us -uc -b) >"$out/deb-build.log" 2>&1 ||
        { tail -50 "$out/deb-build.log"; echo "build-packages: dpkg-buildpackage failed" >&2; exit 1; }
deb=$(ls "$out"/src/lagoon-taskd_"$version"_*.deb)
mv "$deb" "$out/"
deb="$out/$(basename "$deb")"

echo "=== lintian $(basename "$deb")"
lintian --fail-on error --tag-display-limit 0 "$deb" | tee "$out/lintian.log"

expect_deb=(
        ./usr/sbin/lagoon-taskd
        ./usr/bin/lagoon-taskctl
        ./lib/systemd/system/lagoon-taskd.service
        ./lib/systemd/system/lagoon-taskd.socket
        ./usr/lib/sysusers.d/lagoon-taskd.conf
        ./usr/lib/tmpfiles.d/lagoon-taskd.conf
        ./etc/lagoon-taskd/taskd.conf
        ./usr/share/man/man1/lagoon-taskctl.1.gz
        ./usr/share/man/man5/lagoon-taskd.conf.5.gz
        ./usr/share/man/man8/lagoon-taskd.8.gz
        ./usr/share/bash-completion/completions/lagoon-taskctl
)
dpkg-deb -c "$deb" | awk '{ print $6 }' >"$out/deb-files.txt"
for f in "${expect_deb[@]}"; do
        grep -qxF "$f" "$out/deb-files.txt" || { echo "build-packages: $f missing from the .deb" >&2; exit 1; }
done
dpkg-deb -f "$deb" Depends | grep -q conmon || { echo "build-packages: .deb does not depend on conmon" >&2; exit 1; }
dpkg-deb -e "$deb" "$out/deb-control"
grep -qx /etc/lagoon-taskd/taskd.conf "$out/deb-control/conffiles" ||
        { echo "build-packages: taskd.conf is not a conffile" >&2; exit 1; }

# ---- RPM (Debian's rpm lacks %meson and %systemd_*: packaging/rpm/macros.local)
cp packaging/rpm/lagoon-taskd.spec "$out/rpmbuild/SPECS/"
rpmbuild --nodeps --load="$(pwd)/packaging/rpm/macros.local" --define "_topdir $out/rpmbuild" -bb "$out/rpmbuild/SPECS/lagoon-taskd.spec" \
        >"$out/rpm-build.log" 2>&1 || { tail -50 "$out/rpm-build.log"; echo "build-packages: rpmbuild failed" >&2; exit 1; }
rpm=$(ls "$out"/rpmbuild/RPMS/*/lagoon-taskd-"$version"-*.rpm)
mv "$rpm" "$out/"
rpm="$out/$(basename "$rpm")"
rpm -qpl "$rpm" >"$out/rpm-files.txt" 2>/dev/null
for f in "${expect_deb[@]}"; do
        f=${f#.}
        case "$f" in /usr/share/man/*) f=${f%.gz} ;; esac
        grep -q "^$f" "$out/rpm-files.txt" || { echo "build-packages: $f missing from the .rpm" >&2; exit 1; }
done
rpm -qp --requires "$rpm" 2>/dev/null | grep -q '^conmon' || { echo "build-packages: .rpm does not require conmon" >&2; exit 1; }
rpm -qp --configfiles "$rpm" 2>/dev/null | grep -qx /etc/lagoon-taskd/taskd.conf ||
        { echo "build-packages: taskd.conf is not %config in the .rpm" >&2; exit 1; }

echo "=== packages"
ls -l "$deb" "$rpm"
echo "RPM=$rpm"
echo "DEB=$deb"
