#!/usr/bin/env bash
# The test command (`npm test`): builds, then runs unit tests, the C tests of the native core
# (normal and ASan/UBSan builds) and, as root, the integration (real etcd) and e2e (netns)
# tests, and the e2e forwarding tests once more with the ASan/UBSan build of the addon. Prints "N passed, N failed" at the end; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()
log_dir=$(mktemp -d /tmp/overlayd-test.XXXXXX)

# run NAME CMD...: runs one suite, counts its tests from tap's/our summary lines
suite() {
  local name=$1; shift
  local log="$log_dir/$name.log"
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # tap prints "# { total: N, pass: P, fail: F, ... }"; the C tests print "ok N"/"not ok N" lines
  local p f
  p=$(grep -Eo '^# \{ total: [0-9]+, pass: [0-9]+' "$log" | grep -Eo 'pass: [0-9]+' | grep -Eo '[0-9]+' | tail -1)
  f=$(grep -Eo '^# \{ total: [0-9]+.*fail: [0-9]+' "$log" | grep -Eo 'fail: [0-9]+' | grep -Eo '[0-9]+' | tail -1)
  if [ -z "$p" ]; then
    p=$(grep -Ec '^ok [0-9]+' "$log")
    f=$(grep -Ec '^not ok [0-9]+' "$log")
  fi
  p=${p:-0}; f=${f:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$rc" -ne 0 ]; then failures+=("$name (exit $rc)"); fi
}

# the OS packages the suites need (installed when missing and root)
bash test/system-deps.sh

TAP="node_modules/.bin/tap --disable-coverage --allow-empty-coverage --reporter=base"

suite build npx tsc -p tsconfig.json
suite unit $TAP --jobs=2 --timeout=120 dist/test/unit
suite native make -s -C native/test check
suite native-asan make -s -C native/test check-asan
# libFuzzer on the engine's per-packet paths (clang), seeded with real packets
suite fuzz make -s -C native/fuzz run FUZZ_SECONDS=${OVERLAYD_FUZZ_SECONDS:-60}
if [ "$(id -u)" -eq 0 ]; then
  if [ -d dist/test/integration ]; then
    suite integration $TAP --jobs=1 --timeout=600 dist/test/integration
  fi
  suite e2e $TAP --jobs=1 --timeout=900 dist/test/e2e
  # the forwarding tests again, with the ASan/UBSan build of the addon in every daemon
  suite e2e-asan make -s -C native/test e2e-asan
else
  echo "=== not root: integration and e2e tests NOT run (they need etcd, network namespaces and TUN devices)"
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
fi
echo "logs: $log_dir"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#failures[@]} -eq 0 ]
