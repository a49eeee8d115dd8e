#!/usr/bin/env bash
# Writes the PAM and NSS fixtures the PAM test suite runs against (pam_wrapper + pam_matrix,
# nss_wrapper), into DIR: Tests/Fixtures/make-pam-fixtures.sh DIR
set -euo pipefail
dir=$1
matrix=$(dpkg -L libpam-wrapper | grep '/pam_matrix\.so$' | head -n 1)
[ -n "$matrix" ] || { echo "pam_matrix.so not found: install libpam-wrapper" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/services"

# pam_matrix's password database: user:password:service.
cat >"$dir/passdb" <<PASSDB
alice:wonderland:sallyport-test
bob:builder:sallyport-test
carol:c4rol-pw:sallyport-test
locked:locked-pw:sallyport-locked
slowpoke:tortoise:sallyport-slow
PASSDB
# pam_matrix takes a user's first line, so services that share users have files of their own.
printf 'alice:wonderland:sallyport-faildelay\nbob:builder:sallyport-faildelay\ncarol:c4rol-pw:sallyport-faildelay\n' >"$dir/passdb-faildelay"
printf 'slowpoke:tortoise:sallyport-blocking\n' >"$dir/passdb-blocking"
printf 'slowpoke:tortoise:sallyport-gated\n' >"$dir/passdb-gated"
for i in $(seq 1 60); do
  echo "user$i:pass$i:sallyport-test" >>"$dir/passdb"
done

cat >"$dir/services/sallyport-test" <<SERVICE
auth required $matrix passdb=$dir/passdb
account required $matrix passdb=$dir/passdb
SERVICE
# Right password, but pam_acct_mgmt refuses (an expired or locked account).
cat >"$dir/services/sallyport-locked" <<SERVICE
auth required $matrix passdb=$dir/passdb
account required pam_deny.so
SERVICE
# A stack that delays each failure, as pam_unix does (here 1 s).
cat >"$dir/services/sallyport-slow" <<SERVICE
auth optional pam_faildelay.so delay=1000000
auth required $matrix passdb=$dir/passdb
account required $matrix passdb=$dir/passdb
SERVICE
# The same with pam_unix's 2 s.
cat >"$dir/services/sallyport-faildelay" <<SERVICE
auth optional pam_faildelay.so delay=2000000
auth required $matrix passdb=$dir/passdb-faildelay
account required $matrix passdb=$dir/passdb-faildelay
SERVICE
# A stack that holds its thread for 1 s on every check (a slow LDAP server, say).
cat >"$dir/services/sallyport-blocking" <<SERVICE
auth required pam_exec.so quiet /bin/sleep 1
auth required $matrix passdb=$dir/passdb-blocking
account required $matrix passdb=$dir/passdb-blocking
SERVICE
# A stack that writes a line to checks.log for each check it runs ("user rhost"): the tests count
# PAM checks of the real server binary (cache hits and throttled logins write none).
printf 'dora:explorer:sallyport-counted\nerin:e-pass:sallyport-counted\nfrank:f-pass:sallyport-counted\n' >"$dir/passdb-counted"
printf '#!/bin/sh\necho "$PAM_USER $PAM_RHOST" >>"%s/checks.log"\n' "$dir" >"$dir/count-check.sh"
chmod +x "$dir/count-check.sh"
cat >"$dir/services/sallyport-counted" <<SERVICE
auth required pam_exec.so quiet $dir/count-check.sh
auth required $matrix passdb=$dir/passdb-counted
account required $matrix passdb=$dir/passdb-counted
SERVICE
# A stack whose checks wait (up to 20 s) until the file gate-open exists: a test holds the PAM
# thread for exactly as long as it needs.
printf '#!/bin/sh\nfor i in $(seq 200); do [ -e "%s/gate-open" ] && exit 0; sleep 0.1; done\nexit 0\n' "$dir" >"$dir/gate.sh"
chmod +x "$dir/gate.sh"
cat >"$dir/services/sallyport-gated" <<SERVICE
auth required pam_exec.so quiet $dir/gate.sh
auth required $matrix passdb=$dir/passdb-gated
account required $matrix passdb=$dir/passdb-gated
SERVICE
cat >"$dir/services/other" <<SERVICE
auth required pam_deny.so
account required pam_deny.so
SERVICE

# nss_wrapper's users and groups, so that group lookups after login are real NSS calls.
{
  getent passwd root
  getent passwd "$(id -u)" || true
  echo "alice:x:5001:5001:Alice:/nonexistent:/usr/sbin/nologin"
  echo "bob:x:5002:5002:Bob:/nonexistent:/usr/sbin/nologin"
  echo "carol:x:5003:5003:Carol:/nonexistent:/usr/sbin/nologin"
} | sort -u >"$dir/passwd"
{
  getent group root
  getent group "$(id -g)" || true
  echo "alice:x:5001:"
  echo "bob:x:5002:"
  echo "carol:x:5003:"
  echo "engineers:x:6001:alice,bob"
  echo "contractors:x:6002:carol"
  # A group too large for a 64 KiB lookup buffer (getgrgid_r answers ERANGE; retry larger).
  printf 'crowd:x:6003:carol'
  for i in $(seq 1 8000); do printf ',member%05d' "$i"; done
  echo
} | sort -u >"$dir/group"
echo "PAM fixtures in $dir"
