#!/usr/bin/env bash
# Installs the OS packages the tests need when they are missing (Debian/Ubuntu, as root):
# etcd for the integration tests, iproute2/ping/iperf3/nftables/iptables for the e2e tests, clang for
# the fuzz target, valgrind, systemd-analyze, openssl for the TLS tests. Used by .ci/run and
# by `npm test`. Does nothing when all are present or when not root.
set -euo pipefail
need=()
want() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
want etcd etcd-server
want etcdctl etcd-client
want iperf3 iperf3
want ip iproute2
want ping iputils-ping
want nft nftables
want iptables-legacy iptables
want iptables-nft iptables
want openssl openssl
want valgrind valgrind
want make make
want gcc gcc
want clang clang
want python3 python3
want systemd-analyze systemd
want dpkg-deb dpkg
want objdump binutils
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing (install as root): ${need[*]}" >&2
  exit 0
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
