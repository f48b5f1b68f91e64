#!/bin/sh
# vmq_warden benchmark: builds in release mode (the NIF always is: see
# native/build-nif.sh) and runs bench/vmq_warden_bench.erl against the
# same-run baselines. Usage: scripts/bench.sh [--quick] [--smoke] [--sessions=N]
set -eu
cd "$(dirname "$0")/.."
# also builds vmq-warden-passwd (native/build-nif.sh)
${REBAR:-rebar3} compile >/dev/null
mkdir -p _build/bench/ebin
erlc -o _build/bench/ebin -pa _build/default/lib/vmq_warden/ebin bench/*.erl test/vmq_plugin_harness.erl
export WARDEN_PASSWD="$PWD/target/${CARGO_PROFILE:-release}/vmq-warden-passwd"
exec erl -noshell -pa _build/default/lib/vmq_warden/ebin _build/bench/ebin \
    -eval 'vmq_warden_bench:main(init:get_plain_arguments())' -extra "$@"
