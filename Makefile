# vmq_warden: the two commands of the README.
#   make        builds the plugin and prints how to load it into VerneMQ
#   make test   runs every test (Rust, Erlang, static checks)
REBAR ?= rebar3
DIR := $(abspath .)

.PHONY: all build test rust-test erlang-test check fuzz-smoke shell demo bench clean

all: build
	@echo
	@echo "vmq_warden is built: $(DIR)/_build/default/lib/vmq_warden/{ebin,priv}"
	@echo
	@echo "1. Copy the schema into the release's schema directory:"
	@echo "     cp $(DIR)/priv/vmq_warden.schema <vernemq>/share/schema/"
	@echo "2. Add to vernemq.conf:"
	@echo "     plugins.vmq_warden = on"
	@echo "     plugins.vmq_warden.path = $(DIR)/_build/default"
	@echo "     plugins.vmq_warden.priority = 1"
	@echo "   (or at run time: vmq-admin plugin enable --name vmq_warden --path $(DIR)/_build/default)"
	@echo
	@echo "Try the hooks without a broker:  make demo   (scripted sessions)"
	@echo "                                 make shell  (an Erlang shell with the plugin running)"

# rebar3's pre_hook (native/build-nif.sh) builds the NIF and vmq-warden-passwd
# in one cargo invocation, so the crates they share are compiled once.
build:
	$(REBAR) compile

test: rust-test erlang-test check fuzz-smoke

# The tests need the diagnostic NIFs (native/build-nif.sh); the benchmark's
# script asks for them itself.
test erlang-test check: export WARDEN_NIF_FEATURES = diagnostics

rust-test:
	cargo test --workspace --locked
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo clippy --workspace --all-targets --locked --features warden_nif/diagnostics -- -D warnings

erlang-test: build
	$(REBAR) ct

check: build
	$(REBAR) xref
	$(REBAR) dialyzer

# libFuzzer smoke run, FUZZ_SECONDS per target (docs/ROBUSTNESS.md). The same
# fuzz bodies already ran in `cargo test` with deterministic inputs; this
# step runs only where cargo-fuzz is installed and skips with a message elsewhere.
FUZZ_SECONDS ?= 5
FUZZ_TARGETS := hash_string password_file policy cert_identity
fuzz-smoke:
	@if ! command -v cargo-fuzz >/dev/null 2>&1; then \
	  echo "fuzz-smoke: skipped (cargo-fuzz not installed: cargo install cargo-fuzz)"; \
	else \
	  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then FUZZ="cargo +nightly fuzz"; \
	  else FUZZ="env RUSTC_BOOTSTRAP=1 cargo fuzz"; fi; \
	  cd fuzz && for t in $(FUZZ_TARGETS); do \
	    mkdir -p corpus/$$t && \
	    seeds=$$(test -d seeds/$$t && echo seeds/$$t); \
	    if $$FUZZ run $$t corpus/$$t $$seeds -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	        > fuzz-$$t.log 2>&1; then grep -h '^Done' fuzz-$$t.log | sed "s/^/fuzz $$t: /"; \
	    else tail -40 fuzz-$$t.log; echo "fuzz $$t: FAILED (fuzz/fuzz-$$t.log, fuzz/artifacts/$$t)"; exit 1; fi; \
	  done; \
	fi

# An Erlang shell with the plugin running and its log lines on the console:
# scripts/vmq_warden_shell.erl (a boot script that starts the plugin before
# the first prompt, and a logger filter for this shell only).
SHELL_BUILD := _build/shell
shell: build
	@mkdir -p $(SHELL_BUILD)
	@erlc -o $(SHELL_BUILD) scripts/vmq_warden_shell.erl
	@erl -noshell -pa $(SHELL_BUILD) -eval 'ok = vmq_warden_shell:boot("$(SHELL_BUILD)/vmq_warden_shell"), halt().'
	erl -boot $(SHELL_BUILD)/vmq_warden_shell -pa _build/default/lib/vmq_warden/ebin $(SHELL_BUILD)

demo: build
	escript scripts/demo.escript

# Benchmark (release build): make bench; make bench QUICK=1 (under a minute).
bench:
	sh scripts/bench.sh $(if $(QUICK),--quick)

clean:
	$(REBAR) clean
	cargo clean
