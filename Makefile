# vmq_warden: the two commands of the README.
#   make        builds the plugin and prints how to load it into VerneMQ
#   make test   runs every test (Rust, Erlang, static checks)
REBAR ?= rebar3
DIR := $(abspath .)

.PHONY: all build test rust-test erlang-test check shell demo bench clean

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

build:
	$(REBAR) compile

test: rust-test erlang-test check

rust-test:
	cargo test --workspace --locked
	cargo clippy --workspace --all-targets --locked -- -D warnings

erlang-test: build
	$(REBAR) ct

check: build
	$(REBAR) xref
	$(REBAR) dialyzer

shell: build
	erl -pa _build/default/lib/vmq_warden/ebin -eval 'application:ensure_all_started(vmq_warden)'

demo: build
	escript scripts/demo.escript

# Benchmark (release build): make bench; make bench QUICK=1 (under a minute).
bench:
	sh scripts/bench.sh $(if $(QUICK),--quick)

clean:
	$(REBAR) clean
	cargo clean
