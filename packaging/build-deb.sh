#!/usr/bin/env bash
# Builds dist/sallyport_VERSION_ARCH.deb from a release binary: packaging/build-deb.sh VERSION BINARY OUTDIR
set -euo pipefail
version=$1 binary=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$binary" "$stage/usr/bin/sallyport"
install -D -m 0644 "$root/conf/sallyport.yaml" "$stage/etc/sallyport/sallyport.yaml"
install -D -m 0644 "$root/conf/pam.d/sallyport" "$stage/etc/pam.d/sallyport"
install -D -m 0644 "$here/sallyport.service" "$stage/lib/systemd/system/sallyport.service"
install -D -m 0644 "$here/logrotate" "$stage/etc/logrotate.d/sallyport"
install -D -m 0644 "$root/README.md" "$stage/usr/share/doc/sallyport/README.md"
mkdir -p "$stage/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" "$here/debian/control" >"$stage/DEBIAN/control"
cp "$here/debian/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$here/debian/postinst" "$stage/DEBIAN/postinst"
mkdir -p "$outdir"
dpkg-deb --root-owner-group --build "$stage" "$outdir/sallyport_${version}_${arch}.deb"
