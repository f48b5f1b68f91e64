#!/bin/sh
# Builds the Rust NIF in release mode and installs it as priv/vmq_warden_nif.so.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --locked -p warden_nif
mkdir -p priv
# Copy to a temp name and rename, so a running VM never maps a half-written file.
cp target/release/libwarden_nif.so priv/.vmq_warden_nif.so.tmp
mv -f priv/.vmq_warden_nif.so.tmp priv/vmq_warden_nif.so
