#!/bin/sh
# vmq_warden benchmark: builds in release mode (the NIF always is: see
# native/build-nif.sh) and runs bench/vmq_warden_bench.erl against the
# same-run baselines. Usage: scripts/bench.sh [--quick] [--smoke] [--sessions=N]
#
# --broker (or BROKER=1 in the environment, so `make bench BROKER=1` and
# `make bench BROKER=1 QUICK=1`): the hooks under the broker's calling
# conditions instead (bench/warden_broker_bench.erl: fresh connection and
# queue processes, 50 connects at a time, encrypted passwords through a
# credentials_obfuscation stand-in, a policy with 1,000 $6$ users, call-time
# tracing, against a vmq_passwd-like reference).
set -eu
cd "$(dirname "$0")/.."
ENTRY=vmq_warden_bench
case " $* " in *" --broker "*) ENTRY=warden_broker_bench ;; esac
# --events (or EVENTS=1): the event stream's hook cost off vs on, and the
# sinks' throughput (bench/warden_events_bench.erl).
case " $* " in *" --events "*) ENTRY=warden_events_bench ;; esac
case "${EVENTS:-}" in ""|0|no|false) ;; *) ENTRY=warden_events_bench ;; esac
case "${BROKER:-}" in ""|0|no|false) ;; *) ENTRY=warden_broker_bench ;; esac
# --cold[=KiB] (or COLD=1 / COLD=KiB), with --broker: the core's caches
# emptied before each hook, as the broker's own work between two hooks does.
case "${COLD:-}" in ""|0|no|false) ;; 1|yes|true) set -- "$@" --cold ;; *) set -- "$@" "--cold=$COLD" ;; esac
# The benchmark calls the diagnostic NIFs (the empty call, the call timer,
# the cache evictor): build them in, as `make bench` does, also when this
# script is run by itself. Also builds vmq-warden-passwd (native/build-nif.sh).
export WARDEN_NIF_FEATURES="${WARDEN_NIF_FEATURES:-diagnostics}"
${REBAR:-rebar3} compile >/dev/null
mkdir -p _build/bench/ebin
erlc -o _build/bench/ebin -pa _build/default/lib/vmq_warden/ebin bench/*.erl test/vmq_plugin_harness.erl test/credentials_obfuscation.erl test/vmq_warden_http_stub.erl
export WARDEN_PASSWD="$PWD/target/${CARGO_PROFILE:-release}/vmq-warden-passwd"
exec erl -noshell -pa _build/default/lib/vmq_warden/ebin _build/bench/ebin \
    -eval "$ENTRY:main(init:get_plain_arguments())" -extra "$@"
