#!/bin/sh
# Cache lines one connect's hooks touch with the CPU caches emptied before
# each hook, counted by valgrind's cache simulator: the same figures on
# every run of the same build, where timings of cold hooks move by 10-40%
# on a shared VM. Usage: scripts/cold_lines.sh [ROUNDS] (default 200).
#
# Runs native/warden_core/examples/cold_lines.rs five times (no hook, then
# one more hook each time) and prints each hook's difference per connect:
# instructions, first-level misses, and the last-level misses (code, data)
# that an emptied cache pays for. Valgrind hides SHA-NI from the program, so
# the decrypt's SHA-256 runs in software here: its code lines
# (sha2::sha256::compress256) are an artefact of the simulator. Last, the
# code one connect runs: its distinct lines and pages.
set -eu
cd "$(dirname "$0")/.."
ROUNDS="${1:-200}"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
cargo build --release -q -p warden_core --example cold_lines
BIN=target/release/examples/cold_lines
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for hooks in none auth auth+reg auth+reg+wake all; do
    # 2 MiB last level, as one core's L2 here; 4 MiB are written between hooks.
    valgrind --tool=cachegrind --cache-sim=yes --I1=32768,8,64 --D1=49152,12,64 --LL=2097152,16,64 \
        --cachegrind-out-file=/dev/null "$BIN" "$hooks" "$ROUNDS" 2>"$OUT/$hooks" >/dev/null
done
echo "per connect, $ROUNDS connects (each hook: its run minus the run before it)"
for hooks in none auth auth+reg auth+reg+wake all; do
    sed 's/,//g' "$OUT/$hooks" | awk -v h="$hooks" '
        /I *refs:/ {ir=$4} /I1 *misses:/ {i1=$4} /LLi *misses:/ {lli=$4}
        /D1 *misses:/ {d1=$4} /LLd *misses:/ {lld=$4}
        END {print h, ir, i1, lli, d1, lld}'
done | awk -v r="$ROUNDS" '
    BEGIN {split("-,auth_on_register,on_register,on_client_wakeup,on_client_gone", name, ",")
           printf "%-18s %9s %9s %9s %9s %9s %9s\n", "hook", "instr", "I1 miss", "D1 miss", "LL code", "LL data", "LL lines"}
    NR > 1 {d[1]=$2-p[1]; d[2]=$3-p[2]; d[3]=$5-p[4]; d[4]=$4-p[3]; d[5]=$6-p[5]
            for (i = 1; i <= 5; i++) t[i] += d[i]
            printf "%-18s %9.0f %9.0f %9.0f %9.0f %9.0f %9.0f\n", name[NR], d[1]/r, d[2]/r, d[3]/r, d[4]/r, d[5]/r, (d[4]+d[5])/r}
    {p[1]=$2; p[2]=$3; p[3]=$4; p[4]=$5; p[5]=$6}
    END {printf "%-18s %9.0f %9.0f %9.0f %9.0f %9.0f %9.0f\n", "connect", t[1]/r, t[2]/r, t[3]/r, t[4]/r, t[5]/r, (t[4]+t[5])/r}'

# The code one connect runs, by its addresses (callgrind, collecting only
# inside the measured connects): how many distinct 64-byte lines and 4 KiB
# pages it spans, whatever the caches (docs/BENCHMARKS.md, "Cache lines per
# hook").
valgrind --tool=callgrind --dump-instr=yes --compress-strings=no --compress-pos=no \
    --toggle-collect='*measured_connect*' --callgrind-out-file="$OUT/profile" "$BIN" all 20 >/dev/null 2>&1
awk '
    function hex(s,    i, n) {n = 0; s = tolower(substr(s, 3))
        for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
        return n}
    /^ob=/ {ob = substr($0, 4); next}
    /^calls=/ {skip = 1; next}
    /^0x/ {if (!skip && $NF > 0) {a = hex($1); line[ob, int(a / 64)] = 1; page[ob, int(a / 4096)] = 1}; skip = 0}
    END {for (k in line) l++; for (k in page) p++
         printf "code of one connect: %d lines of 64 bytes in %d pages of 4 KiB\n", l, p}' "$OUT/profile"
