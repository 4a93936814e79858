#!/usr/bin/env bash
# Builds the release artifact `npm run package`: dist/overlayd_<version>_<arch>.deb
# (version from package.json, arch from `dpkg --print-architecture`). Needs what `npm ci`
# needs (a C compiler, Node.js headers for node-gyp) plus dpkg-deb and binutils; the nodes
# that install the package need neither.
#
# Everything is built fresh in a staging directory from this checkout (the worktree's dist/
# and build/ are not used, so no stale module, test or ASan build can slip in):
#   /usr/lib/overlayd/      package.json, README.md, bin/overlayd, dist/src (compiled JS, no
#                           tests, benchmarks, lab or source maps), build/Release/overlayd.node
#                           (Release addon for this machine's arch, stripped), node_modules
#                           (production dependencies only: npm ci --omit=dev, without their
#                           tests, benchmarks, examples and docs)
#   /usr/bin/overlayd       -> ../lib/overlayd/bin/overlayd, run by /usr/bin/node (package nodejs)
#   /lib/systemd/system/overlayd.service, /etc/overlayd/overlayd.env (conffile, 0600)
#   /usr/share/doc/overlayd/copyright, README.md (-> /usr/lib/overlayd/README.md)
# Maintainer scripts: systemd/deb/{postinst,prerm,postrm}.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

for cmd in dpkg-deb dpkg node npm npx strip objdump; do
  command -v "$cmd" >/dev/null || { echo "build-deb: $cmd is missing (packages dpkg, nodejs, npm, binutils)" >&2; exit 1; }
done

version=$(node -p "require('./package.json').version")
arch=$(dpkg --print-architecture)
out="$src/dist/overlayd_${version}_${arch}.deb"

umask 022
# reproducible timestamps in the archive (dpkg-deb clamps to it): the commit's time
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
stage=$(mktemp -d /tmp/overlayd-deb.XXXXXX)
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
lib="$root/usr/lib/overlayd"
mkdir -p "$lib/bin" "$lib/dist" "$lib/build/Release" "$root/usr/bin" "$root/lib/systemd/system" \
  "$root/etc/overlayd" "$root/usr/share/doc/overlayd" "$root/DEBIAN"

echo "[1/5] TypeScript -> $lib/dist/src"
npx tsc -p tsconfig.json --outDir "$stage/tsc" --sourceMap false
cp -r "$stage/tsc/src" "$lib/dist/src"
rm -rf "$lib/dist/src/lab"   # the test lab and the demo (namespaces, etcd): not part of the daemon

echo "[2/5] native addon (Release, $arch)"
mkdir -p "$stage/addon/native"
cp binding.gyp "$stage/addon/"
cp -r native/binding.c native/src native/include "$stage/addon/native/"
npx node-gyp rebuild --release -C "$stage/addon" >"$stage/node-gyp.log" 2>&1 || { cat "$stage/node-gyp.log" >&2; exit 1; }
cp "$stage/addon/build/Release/overlayd.node" "$lib/build/Release/overlayd.node"
strip --strip-unneeded "$lib/build/Release/overlayd.node"
chmod 0644 "$lib/build/Release/overlayd.node"
# the newest glibc symbol version the addon links against (what dpkg-shlibdeps would compute)
glibc=$(objdump -T "$lib/build/Release/overlayd.node" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

echo "[3/5] production node_modules (npm ci --omit=dev)"
cp package.json package-lock.json README.md "$lib/"
(cd "$lib" && npm ci --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error)
rm -f "$lib/package-lock.json"
find "$lib/node_modules" -type d -name .bin -prune -exec rm -rf {} +   # links to the dependencies' CLIs
# the dependencies' own tests, benchmarks, examples and docs (never loaded; ~4 MB)
find "$lib/node_modules" -type d -regextype posix-extended \
  -regex '(.*/)?node_modules/(@[^/]+/)?[^/@][^/]*/(test|tests|__tests__|bench|benchmarks|example|examples|docs)' -prune -exec rm -rf {} +

echo "[4/5] command, unit, env file, maintainer scripts"
# the system's node (the nodejs package), with bin/overlayd's node flags (its shebang)
head -1 bin/overlayd | grep -q '^#!/usr/bin/env -S node ' || { echo "build-deb: bin/overlayd's first line is not '#!/usr/bin/env -S node ...'" >&2; exit 1; }
sed '1s|^#!/usr/bin/env -S node |#!/usr/bin/env -S /usr/bin/node |' bin/overlayd >"$lib/bin/overlayd"
chmod 0755 "$lib/bin/overlayd"
ln -s ../lib/overlayd/bin/overlayd "$root/usr/bin/overlayd"
install -m 0644 systemd/overlayd.service "$root/lib/systemd/system/overlayd.service"
install -m 0600 systemd/overlayd.env "$root/etc/overlayd/overlayd.env"
install -m 0644 systemd/deb/copyright "$root/usr/share/doc/overlayd/copyright"
ln -s ../../../lib/overlayd/README.md "$root/usr/share/doc/overlayd/README.md"
install -m 0755 systemd/deb/postinst systemd/deb/prerm systemd/deb/postrm "$root/DEBIAN/"
# the unit and the package agree on the env file and the documentation
grep -qx 'EnvironmentFile=-/etc/overlayd/overlayd.env' systemd/overlayd.service || { echo "build-deb: the unit's EnvironmentFile= is not /etc/overlayd/overlayd.env" >&2; exit 1; }
doc=$(sed -n 's|^Documentation=file:||p' systemd/overlayd.service)
[ -n "$doc" ] && [ -e "$root$doc" ] || { echo "build-deb: the unit's Documentation=file:$doc is not in the package" >&2; exit 1; }
echo /etc/overlayd/overlayd.env >"$root/DEBIAN/conffiles"
find "$root" -type d -exec chmod 0755 {} +
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles"

cat >"$root/DEBIAN/control" <<EOF
Package: overlayd
Version: $version
Architecture: $arch
Maintainer: ${DEBFULLNAME:-overlayd developers} <${DEBEMAIL:-overlayd@invalid}>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: nodejs (>= 20), libc6 (>= $glibc), iproute2, nftables
Recommends: iptables
Section: net
Priority: optional
Description: per-node pod network over UDP, compatible with flannel's udp backend
 overlayd builds a flat pod network across hosts by carrying IPv4 packets in UDP (port 8285),
 interoperating with flanneld's udp backend: same TUN device, etcd schema and subnet file.
 The packet hot path is a native Node-API addon (prebuilt for this architecture).
 .
 The overlayd.service unit is installed disabled: configure /etc/overlayd/overlayd.env,
 then run systemctl enable --now overlayd.
EOF

echo "[5/5] $out"
mkdir -p "$src/dist"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "built $out ($(stat -c %s "$out") bytes, installed size $(du -sk --exclude=DEBIAN "$root" | cut -f1) KiB)"
