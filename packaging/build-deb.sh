#!/usr/bin/env bash
# Builds dist/sallyport_VERSION_ARCH.deb from a release binary: packaging/build-deb.sh VERSION BINARY OUTDIR
# Laid out as debhelper would: stripped binary, man pages, copyright and changelog, the unit under
# /usr/lib/systemd/system, maintainer scripts, md5sums, and Depends from dpkg-shlibdeps.
set -euo pipefail
version=$1 binary=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$stage" "$work"' EXIT
umask 022

install -D -m 0755 "$binary" "$stage/usr/bin/sallyport"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/sallyport"
install -D -m 0644 "$root/conf/sallyport.yaml" "$stage/etc/sallyport/sallyport.yaml"
install -D -m 0644 "$root/conf/pam.d/sallyport" "$stage/etc/pam.d/sallyport"
install -D -m 0644 "$here/logrotate" "$stage/etc/logrotate.d/sallyport"
install -D -m 0644 "$here/sallyport.service" "$stage/usr/lib/systemd/system/sallyport.service"
doc="$stage/usr/share/doc/sallyport"
install -D -m 0644 "$here/debian/copyright" "$doc/copyright"
install -m 0644 "$root/README.md" "$doc/README.md"
sed "s/@VERSION@/$version/" "$here/debian/changelog" | gzip -9n >"$doc/changelog.gz"
install -d "$stage/usr/share/man/man1" "$stage/usr/share/man/man5"
gzip -9n <"$here/man/sallyport.1" >"$stage/usr/share/man/man1/sallyport.1.gz"
gzip -9n <"$here/man/sallyport.yaml.5" >"$stage/usr/share/man/man5/sallyport.yaml.5.gz"

# Depends: the shared libraries the binary needs, as dpkg-shlibdeps finds them, and the rest.
mkdir -p "$work/debian"
printf 'Source: sallyport\n\nPackage: sallyport\nArchitecture: any\n' >"$work/debian/control"
shlibs=$(cd "$work" && dpkg-shlibdeps -O "$stage/usr/bin/sallyport" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
mkdir -p "$stage/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SHLIBS@/$shlibs/" \
    -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$stage" | cut -f1)/" "$here/debian/control" >"$stage/DEBIAN/control"
install -m 0644 "$here/debian/conffiles" "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do install -m 0755 "$here/debian/$script" "$stage/DEBIAN/$script"; done
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$stage/DEBIAN/md5sums"
mkdir -p "$outdir"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$outdir/sallyport_${version}_${arch}.deb"
