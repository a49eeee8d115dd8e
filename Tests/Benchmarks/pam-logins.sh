#!/usr/bin/env bash
# PAM logins per second: sallyport (release build) under pam_wrapper with pam_matrix, driven by
# sallyport-bench over loopback. Each login is a full session: greeting, RFC 1929, CONNECT to a
# local echo server, 4 bytes each way, close. The same load with method none is measured beside it.
# Usage: Tests/Benchmarks/pam-logins.sh [SECONDS] [WORKERS]
set -euo pipefail
seconds=${1:-5}
workers=${2:-8}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
swift build -c release >/dev/null
bin=$(swift build -c release --show-bin-path)
fixtures=$root/.build/pam-fixtures
Tests/Fixtures/make-pam-fixtures.sh "$fixtures" >/dev/null
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin/sallyport-bench" echo --listen 127.0.0.1:0 >"$work/echo.port" &
pids+=($!)
cat >"$work/sallyport.yaml" <<YAML
listen:
  - address: 127.0.0.1:0
    methods: [username]
  - address: 127.0.0.1:0
    methods: [none]
auth:
  pam: {service: sallyport-test, threads: 4, max_pending: 256}
  throttle: {max_failures: 0}
  cache_ttl: 0  # every login a PAM transaction: this measures PAM, not the cache
state_dir: $work/state  # usage totals of the bench's own
rules:  # the echo target is on loopback, which the default rules refuse
  - name: bench-loopback
    action: allow
    to: [127.0.0.0/8]
log: {level: warning}
YAML
env LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so" PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR="$fixtures/services" \
  NSS_WRAPPER_PASSWD="$fixtures/passwd" NSS_WRAPPER_GROUP="$fixtures/group" \
  "$bin/sallyport" --config "$work/sallyport.yaml" --log-level info 2>"$work/sallyport.log" &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q 'msg=listening' "$work/sallyport.log" 2>/dev/null && [ -s "$work/echo.port" ] && break
  sleep 0.1
done
addresses=$(sed -n 's/.*msg=listening addresses=\([^ ]*\).*/\1/p' "$work/sallyport.log")
pam_port=${addresses%%,*}; pam_port=${pam_port##*:}
none_port=${addresses##*,}; none_port=${none_port##*:}
echo_port=$(cat "$work/echo.port")

pam=$("$bin/sallyport-bench" connections --proxy "127.0.0.1:$pam_port" --target "127.0.0.1:$echo_port" \
  --user alice --password wonderland --workers "$workers" --seconds "$seconds")
none=$("$bin/sallyport-bench" connections --proxy "127.0.0.1:$none_port" --target "127.0.0.1:$echo_port" \
  --workers "$workers" --seconds "$seconds")
echo "pam_matrix logins (username/password, one PAM transaction each): $pam"
echo "same sessions with method none:                                  $none"
