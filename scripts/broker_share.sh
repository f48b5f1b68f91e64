#!/bin/sh
# The plugin's share of a running node's CPU, by sampling: perf samples the
# node's beam process for SECONDS (default 30) and counts the samples that
# fell in the plugin's NIF library (its Rust code) and, when the node runs
# with the JIT's perf map (`+JPperf map`), in its Erlang hook modules.
# Nothing is traced or changed in the node. Run it under the node's usual
# traffic; docs/OPERATIONS.md ("What the plugin costs your node") says how
# to read it.
# Usage: scripts/broker_share.sh BEAM_PID [SECONDS]
# Needs perf (Debian: linux-perf) and the right to sample the process (root,
# or kernel.perf_event_paranoid <= 1 for your own processes).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 BEAM_PID [SECONDS]" >&2; exit 2; }
PID=$1
SECS=${2:-30}
FREQ=999
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 2; }
kill -0 "$PID" 2>/dev/null || { echo "no process $PID (or no right to signal it)" >&2; exit 2; }
# Without these rights perf falls back to user-space samples only: the
# kernel's share of the node would be missing and the plugin's read too high.
PARANOID=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 3)
if [ "$(id -u)" != 0 ] && [ "$PARANOID" -gt 1 ]; then
    echo "needs root, or kernel.perf_event_paranoid <= 1 (it is $PARANOID)" >&2
    exit 2
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
perf record -q -e cpu-clock -F "$FREQ" -p "$PID" -o "$OUT/perf.data" -- sleep "$SECS" >/dev/null 2>"$OUT/err" ||
    { cat "$OUT/err" >&2; exit 1; }
# The JIT's map, if this node (not an earlier process with its pid) wrote it.
MAP=no
if [ -f "/tmp/perf-$PID.map" ] &&
    [ -n "$(find "/tmp/perf-$PID.map" -newermt "$(ps -o lstart= -p "$PID")" 2>/dev/null)" ]; then
    MAP=yes
fi
# One line per sample: address, symbol, then its library in parentheses.
perf script -i "$OUT/perf.data" -F ip,sym,dso 2>/dev/null | awk -v freq="$FREQ" -v secs="$SECS" -v map="$MAP" '
    {all++}
    /vmq_warden_nif/ {nif++; next}
    /\$vmq_warden/ {erl++}
    END {
        if (all == 0) {print "no samples: the process used no CPU while sampled"; exit 1}
        if (all < 1000) printf "only %d samples: too few to read a share of 2%%; sample longer or under traffic\n", all
        printf "node CPU while sampled: %.2f cores (%d samples in %d s)\n", all / freq / secs, all, secs
        printf "vmq_warden NIF (Rust):  %6.2f%% of the node'"'"'s CPU (%d samples)\n", 100 * nif / all, nif
        if (map == "yes")
            printf "vmq_warden Erlang:      %6.2f%% (%d samples)\n", 100 * erl / all, erl
        else
            print "vmq_warden Erlang:      not counted (start the node with +JPperf map to name JIT code)"
    }'
