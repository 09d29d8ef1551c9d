#!/bin/sh
# check_log.sh LOG: the SPARCCL_DEBUG=INFO log of interpose_check under the NCCL preload
# names each decision exactly once (the program's calls reached the preload, and the group
# depth was counted up and back down).
log=$1; fail=0
lines=$(grep 'SPARCCL INFO nccl preload: ncclAllReduce' "$log")
expect() { # PATTERN WHAT
  got=$(printf '%s\n' "$lines" | grep -c -- "$1")
  if [ "$got" -ne 1 ]; then echo "FAIL: $2: $got decision lines, expected 1"; fail=1;
  else echo "   ok: $2"; fi
}
grep -q 'SPARCCL INFO nccl preload: libsparccl_nccl_preload enabled' "$log" \
  || { echo "FAIL: no banner line"; fail=1; }
expect 'count 1 float32 sum .*-> NCCL (below SPARCCL_PRELOAD_MIN_COUNT)' "below the threshold"
expect 'count 1048576 float32 sum .*-> NCCL (null argument)' "NULL communicator"
expect 'count 1048576 float64 sum .*-> NCCL (not float32, float16 or bfloat16)' "float64"
expect 'count 1048576 bfloat16 max .*-> NCCL (not sum or avg)' "max"
expect 'count 524288 float16 avg .*-> NCCL (inside ncclGroupStart/ncclGroupEnd)' "inside a group"
expect 'count 262144 float32 avg .*-> NCCL (null argument)' "after the group (depth back to 0)"
n=$(printf '%s\n' "$lines" | wc -l)
if [ "$n" -ne 6 ]; then echo "FAIL: $n decision lines, expected 6"; fail=1; fi
if [ $fail -ne 0 ]; then sed 's/^/     /' "$log"; fi
exit $fail
