# One entry point per gate: build, check, test, install. `make install` is for a desktop
# user (everything under ~/.local and ~/.config); run it as yourself, not as root.

CARGO      ?= cargo
PREFIX     ?= $(HOME)/.local
BINDIR     ?= $(PREFIX)/bin
DOCDIR     ?= $(PREFIX)/share/doc/sandboxd
UNITDIR    ?= $(HOME)/.config/systemd/user
DBUSDIR    ?= $(PREFIX)/share/dbus-1/services
AUTOSTARTDIR ?= $(HOME)/.config/autostart
MANDIR     ?= $(PREFIX)/share/man
# Where bash-completion, zsh (add it to $fpath) and fish look for a user's completions.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(HOME)/.config/fish/completions
TRIPLE     := x86_64-unknown-linux-gnu
# Built by `make build`; overridable so tests can install what cargo test built.
SANDBOXD   ?= target/release/sandboxd
SANDBOXCTL ?= target/release/sandboxctl
INIT       ?= target/$(TRIPLE)/release/sandbox-init
LOCKED     ?= $(if $(CI),--locked,)

.PHONY: build init check test test-unit test-e2e bench install install-files uninstall

# The tiers. test-unit needs no root, no network and no user session (under a minute after
# the build; as root, scripts/unit-tier runs it as the unprivileged user sandboxd-unit):
# unit and property tests, the D-Bus contract over a peer-to-peer connection, the netns
# helper in a throwaway `unshare -rn` namespace (skipped, saying why, where unprivileged
# user namespaces are off), sandbox-init as a process, the docs and examples.
UNIT_TESTS := --lib --bins --test unit_bus --test unit_netns --test init --test ctl \
	--test docs --test examples --test fuzz_net --test fuzz_profile

build: init
	$(CARGO) build $(LOCKED) --release --bin sandboxd --bin sandboxctl

# sandbox-init runs in root file systems without libc: link it statically. The flag is
# set for the explicit target only, so build scripts and proc macros stay dynamic.
init:
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build $(LOCKED) --release --target $(TRIPLE) --bin sandbox-init

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(LOCKED) --all-targets -- -D warnings

test:
	scripts/test

test-unit:
	CARGO=$(CARGO) scripts/unit-tier $(LOCKED) $(UNIT_TESTS)

# The end-to-end suites: real runc, a real systemd --user and bus, real namespaces (root).
test-e2e:
	scripts/test --e2e

bench:
	bench/run

install: build install-files
	systemctl --user daemon-reload || true
	@echo "installed; start with: systemctl --user enable --now sandboxd"

install-files:
	install -d $(BINDIR) $(UNITDIR) $(DBUSDIR) $(AUTOSTARTDIR) $(DOCDIR) $(MANDIR)/man1 $(MANDIR)/man5 $(MANDIR)/man8
	install -m 0755 $(SANDBOXD) $(SANDBOXCTL) $(BINDIR)/
	install -m 0755 $(INIT) $(BINDIR)/sandbox-init
	sed -e 's|@bindir@|$(BINDIR)|g' -e 's|@docdir@|$(DOCDIR)|g' dist/systemd/sandboxd.service > $(UNITDIR)/sandboxd.service
	sed -e 's|@bindir@|$(BINDIR)|g' dist/dbus/org.sandboxd.Sandboxd1.service > $(DBUSDIR)/org.sandboxd.Sandboxd1.service
	install -m 0644 dist/autostart/sandboxd.desktop $(AUTOSTARTDIR)/sandboxd.desktop
	install -m 0644 README.md SECURITY.md $(DOCDIR)/
	install -d $(DOCDIR)/examples $(BASHCOMPDIR) $(ZSHCOMPDIR) $(FISHCOMPDIR)
	install -m 0644 etc/sandboxd.toml $(DOCDIR)/
	install -m 0644 etc/profiles/*.toml $(DOCDIR)/examples/
	# Written by the installed binary, which the scripts call at each Tab for the names.
	$(BINDIR)/sandboxctl completions bash > $(BASHCOMPDIR)/sandboxctl
	$(BINDIR)/sandboxctl completions zsh > $(ZSHCOMPDIR)/_sandboxctl
	$(BINDIR)/sandboxctl completions fish > $(FISHCOMPDIR)/sandboxctl.fish
	install -m 0644 man/sandboxctl.1 $(MANDIR)/man1/
	install -m 0644 man/sandboxd.profile.5 $(MANDIR)/man5/
	install -m 0644 man/sandboxd.8 $(MANDIR)/man8/

uninstall:
	-systemctl --user disable --now sandboxd.service
	rm -f $(BINDIR)/sandboxd $(BINDIR)/sandboxctl $(BINDIR)/sandbox-init
	rm -f $(UNITDIR)/sandboxd.service $(DBUSDIR)/org.sandboxd.Sandboxd1.service $(AUTOSTARTDIR)/sandboxd.desktop
	rm -rf $(DOCDIR)
	rm -f $(BASHCOMPDIR)/sandboxctl $(ZSHCOMPDIR)/_sandboxctl $(FISHCOMPDIR)/sandboxctl.fish
	rm -f $(MANDIR)/man1/sandboxctl.1 $(MANDIR)/man5/sandboxd.profile.5 $(MANDIR)/man8/sandboxd.8
