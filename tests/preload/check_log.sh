#!/bin/sh
# check_log.sh LOG NRANKS: the SPARCCL_DEBUG=INFO log of allreduce_check under the preload
# (SPARCCL_PRELOAD_LAYER=30000) names each decision once per buffer and rank.
log=$1; n=$2; fail=0
lines=$(grep 'SPARCCL INFO preload: MPI_Allreduce' "$log")
expect() { # PATTERN COUNT WHAT
  got=$(printf '%s\n' "$lines" | grep -c -- "$1")
  if [ "$got" -ne "$2" ]; then echo "FAIL: $3: $got decision lines, expected $2"; fail=1;
  else echo "   ok: $3: $got line(s) for $n ranks"; fi
}
# Called 3 times per rank, logged once per rank.
expect 'from 0x[0-9a-f]* count 100000 MPI_FLOAT MPI_SUM .*-> sparccl (4 layers)' "$n" "gradient (3 calls)"
expect 'in place on 0x[0-9a-f]* count 70000 MPI_FLOAT MPI_SUM .*-> sparccl (3 layers)' "$n" "in place (2 calls)"
expect 'count 65536 MPI_FLOAT MPI_SUM .*-> sparccl (3 layers)' "$n" "threshold"
expect 'count 65535 MPI_FLOAT MPI_SUM .*-> MPI (below SPARCCL_PRELOAD_MIN_COUNT)' "$n" "one under the threshold (3 calls)"
expect 'count 1 MPI_FLOAT MPI_SUM .*-> MPI (below' "$n" "scalar loss (3 calls)"
expect 'count 100000 MPI_DOUBLE MPI_SUM .*-> MPI (not MPI_FLOAT)' "$n" "double (3 calls)"
expect 'count 100000 MPI_FLOAT MPI_MAX .*-> MPI (not MPI_SUM)' "$n" "float max (3 calls)"
# Two sub-communicators (freed in between): a line per communicator and rank, at most.
got=$(printf '%s\n' "$lines" | grep -c 'count 80000 MPI_FLOAT MPI_SUM .*-> sparccl (3 layers)')
if [ "$got" -lt "$n" ] || [ "$got" -gt $((2 * n)) ]; then echo "FAIL: sub-communicator: $got lines"; fail=1;
else echo "   ok: sub-communicator: $got line(s)"; fi
# No line twice in one process (host:pid:tid prefixes the line).
dups=$(printf '%s\n' "$lines" | sort | uniq -d | wc -l)
if [ "$dups" -ne 0 ]; then echo "FAIL: $dups decision lines repeated"; fail=1; else echo "   ok: no decision logged twice"; fi
created=$(grep -c 'SPARCCL INFO preload: sparccl comm .* created' "$log")
destroyed=$(grep -c 'SPARCCL INFO preload: sparccl comm .* destroyed' "$log")
if [ "$created" -ne "$destroyed" ] || [ "$created" -lt "$n" ]; then
  echo "FAIL: $created sparccl comms created, $destroyed destroyed"; fail=1
else echo "   ok: $created sparccl comms created and destroyed (MPI_Comm_free, MPI_Finalize)"; fi
echo "   sample (one rank):"
pid=$(printf '%s\n' "$lines" | head -1 | cut -d: -f2)
grep "^[^:]*:$pid:" "$log" | grep 'SPARCCL INFO preload' | sed 's/^/     /'
exit $fail
