# Corvid's two everyday commands. Each sets up what it needs first.
#   make serve   a development server on the built-in config, with the bundled plugins
#   make test    the whole test suite (what CI runs)
# Plugins are WebAssembly components built for wasm32-wasip2; each plugin crate is its own
# cargo workspace, built into target/plugins.

PLUGINS := recipient-list address-rewrite header-stamp rate-limit dnsbl route-table rspamd
PLUGIN_TARGET := target/plugins

.PHONY: serve test plugins wasm-target deb

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

plugins: wasm-target
	@for p in $(PLUGINS); do \
	  cargo build --quiet --manifest-path plugins/$$p/Cargo.toml --target wasm32-wasip2 \
	    --release --target-dir $(PLUGIN_TARGET) || exit 1; \
	done
	@echo "plugins built in $(PLUGIN_TARGET)/wasm32-wasip2/release/"

serve: plugins
	@cargo run --quiet --release -p corvid -- dkim record
	cargo run --release -p corvid -- serve

test:
	tests/run

# The Debian package (needs cargo-deb: `cargo install cargo-deb`): binary, manual pages,
# /etc/corvid/corvid.toml, the bundled plugins in /usr/lib/corvid/plugins, the systemd unit.
deb: plugins
	cargo build --release -p corvid
	rm -rf target/man && target/release/corvid man target/man
	cargo deb -p corvid --no-build
