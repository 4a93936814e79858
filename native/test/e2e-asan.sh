#!/usr/bin/env bash
# The e2e forwarding test (both engines) and the USO test with the ASan+UBSan build of the addon in every
# daemon: node runs with libasan preloaded (node is not instrumented, the addon and the C
# core are) and OVERLAYD_ADDON pointing at native/test/bin/asan/overlayd.node. Root only.
#
#   make -C native/test e2e-asan        (builds the addon, then runs this)
#
# Leak checking is off (node exits with allocations alive by design); any other report
# aborts the daemon (the test then fails on its exit code) and is kept in
# $LOG_DIR/asan.<pid>; the script fails when one was written.
set -euo pipefail
cd "$(dirname "$0")/../.."
ADDON=native/test/bin/asan/overlayd.node
[ -f "$ADDON" ] || { echo "e2e-asan: $ADDON missing: make -C native/test addon-asan" >&2; exit 2; }
LIBASAN=$(${CC:-cc} -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "e2e-asan: libasan.so not found ($LIBASAN)" >&2; exit 2; }
LOG_DIR=$(mktemp -d /tmp/overlayd-e2e-asan.XXXXXX)
npx tsc -p tsconfig.json
# Precondition: node with these settings really maps the ASan addon and libasan.
LD_PRELOAD="$LIBASAN" OVERLAYD_ADDON="$PWD/$ADDON" ASAN_OPTIONS=detect_leaks=0 node -e "
  require('./dist/src/dataplane/addon').loadAddon();
  const maps = require('fs').readFileSync('/proc/self/maps', 'utf8');
  if (!maps.includes('$ADDON') || !maps.includes('libasan')) { console.error('e2e-asan: the ASan addon is not what node loads'); process.exit(1); }"
set +e
LD_PRELOAD="$LIBASAN" OVERLAYD_ADDON="$PWD/$ADDON" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$LOG_DIR/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOG_DIR/ubsan" \
  npx tap --disable-coverage --allow-empty-coverage --reporter=tap --timeout=600 dist/test/e2e/forwarding.test.js dist/test/e2e/uso.test.js
rc=$?
set -e
if compgen -G "$LOG_DIR/*san.*" >/dev/null; then
  echo "e2e-asan: sanitizer reports:" >&2
  cat "$LOG_DIR"/*san.* >&2
  rc=1
fi
echo "e2e-asan: exit $rc (sanitizer logs would be in $LOG_DIR)"
exit $rc
