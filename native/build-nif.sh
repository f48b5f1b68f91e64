#!/bin/sh
# Builds the Rust NIF and the vmq-warden-passwd tool, and installs the NIF as
# priv/vmq_warden_nif.so. Run by `rebar3 compile` (rebar.config pre_hook).
#
# Both packages in one cargo invocation: cargo unifies the features of the
# shared crates (warden_core and its dependencies) over the packages it
# builds, so a separate `cargo build -p warden_passwd` would resolve other
# feature sets and compile warden_core and part of its dependencies again.
#
# CARGO_PROFILE (default release) picks the cargo profile; `profiling` is the
# release build with debug info, for perf (Cargo.toml).
# WARDEN_NIF_FEATURES=diagnostics adds the diagnostic NIFs and the call
# timer (native/warden_nif/src/diagnostics.rs); `make test` and
# scripts/bench.sh (`make bench`) set it, `make` (the library to ship) does not.
set -eu
cd "$(dirname "$0")/.."
PROFILE="${CARGO_PROFILE:-release}"
FEATURES="${WARDEN_NIF_FEATURES:-}"
cargo build --profile "$PROFILE" --locked -p warden_nif -p warden_passwd ${FEATURES:+--features "warden_nif/$FEATURES"}
mkdir -p priv
# Copy to a temp name and rename, so a running VM never maps a half-written file.
cp "target/$PROFILE/libwarden_nif.so" priv/.vmq_warden_nif.so.tmp
mv -f priv/.vmq_warden_nif.so.tmp priv/vmq_warden_nif.so
