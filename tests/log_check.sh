#!/usr/bin/env bash
# SPARCCL_DEBUG and SPARCCL_DEBUG_FILE behave like NCCL_DEBUG / NCCL_DEBUG_FILE.
set -u
probe=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi; }

out=$("$probe" 2>&1)
check "silent without SPARCCL_DEBUG" '[ -z "$out" ]'
out=$(SPARCCL_DEBUG=WARN "$probe" 2>&1 >/dev/null)
check "WARN goes to stderr with host:pid:tid SPARCCL WARN" 'echo "$out" | grep -Eq "^[^:]+:[0-9]+:[0-9]+ SPARCCL WARN sparcclGetVersion: version is NULL$"'
out=$(SPARCCL_DEBUG=WARN "$probe" 2>/dev/null)
check "nothing on stdout" '[ -z "$out" ]'
SPARCCL_DEBUG=INFO SPARCCL_DEBUG_FILE="$dir/log.%h.%p" "$probe" 2>"$dir/stderr"
files=$(ls "$dir"/log.* 2>/dev/null | wc -l)
check "SPARCCL_DEBUG_FILE with %h and %p makes one file" '[ "$files" = 1 ]'
check "the file holds the warning" 'grep -q "SPARCCL WARN sparcclGetVersion" "$dir"/log.*'
check "the file name has the host" 'ls "$dir"/log.* | grep -q "log.$(hostname)."'
check "stderr stays empty when logging to a file" '[ ! -s "$dir/stderr" ]'
out=$(SPARCCL_DEBUG=bogus "$probe" 2>&1)
check "an unknown level is reported and falls back to WARN" 'echo "$out" | grep -q "not one of WARN, INFO, TRACE" && echo "$out" | grep -q "SPARCCL WARN"'
# A refused environment value is named in the warning: format and range errors alike, and
# a variable set to the empty string is refused, not read as unset.
for setting in SPARCCL_DENSITY=2 SPARCCL_DENSITY=x SPARCCL_IMP_GAMMA=-1 SPARCCL_IMP_LOW=3 \
               SPARCCL_RESTART_RATIO=-1 SPARCCL_FEEDBACK= SPARCCL_DENSITY= SPARCCL_MIN_SPARSE= \
               SPARCCL_SEED= SPARCCL_RESTART_LAG=0; do
  name=${setting%%=*}
  out=$(env SPARCCL_DEBUG=WARN "$setting" "$probe" config 2>&1); refused=$?
  check "$setting is refused" '[ $refused = 0 ]'
  check "$setting: the warning names $name" 'echo "$out" | grep -q "$name"'
done
echo "logging: $pass passed, $fail failed"
[ "$fail" = 0 ]
