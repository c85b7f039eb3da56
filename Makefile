# RVM build, run and test entry points. `make help` lists them.
#
# The EL2 image is built for aarch64-unknown-none-softfloat (EL2 never touches
# FP/SIMD, so guest FP state survives every trap untouched), the EL1 guest
# runtime and raw test guests for aarch64-unknown-none (the `cargo el2` and
# `cargo el1` aliases of .cargo/config.toml), agents for
# wasm32-unknown-unknown (and WASI programs for wasm32-wasip1). Everything
# lands in target/rvm/.

CARGO     ?= cargo
# The compiler pinned in rust-toolchain.toml: `make setup` installs it and
# adds the targets and components to it (by name, whatever rustup's default).
TOOLCHAIN := $(shell sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
TARGET    := $(or $(CARGO_TARGET_DIR),target)
OUT       := target/rvm
EL2       := $(TARGET)/aarch64-unknown-none-softfloat/release
EL1       := $(TARGET)/aarch64-unknown-none/release
WASM      := $(TARGET)/wasm32-unknown-unknown/release
SYSROOT    = $(shell rustc --print sysroot)
OBJCOPY    = $(firstword $(wildcard $(SYSROOT)/lib/rustlib/*/bin/llvm-objcopy))
PROBES    := probe-read-unmapped probe-write-hyp probe-write-device probe-spin-masked probe-bench probe-cap-attacks probe-approvals probe-cap-peer probe-hvc-fuzz probe-fence-resume probe-semihosting probe-shared-regs probe-stall probe-wait
AGENTS    := reference spin bad-import over-budget packet faulty chatter counter toolbox
# Ordinary WASI programs (Rust std, wasm32-wasip1), run unmodified.
WASI_AGENTS := wasi-hello researcher
WASI      := $(TARGET)/wasm32-wasip1/release

.PHONY: help setup images run test test-host test-qemu lint bench bench-qemu soak clean

help:
	@echo "make setup       install Rust targets/components and qemu-system-arm (Debian)"
	@echo "make run         build everything, boot RVM under QEMU with the reference agents"
	@echo "make test        host unit/property tests + QEMU integration tests"
	@echo "make lint        clippy, warnings as errors, over every crate for its target"
	@echo "make bench       criterion benchmarks (host)"
	@echo "make bench-qemu  instruction counts of hypervisor paths under QEMU -icount"
	@echo "make soak        an instance of 16 tenants committing every turn for 10 000 turns,"
	@echo "                 through restarts, evictions and killed machines (not in CI; RVM_SOAK_*)"
	@echo "make images      cross-build the EL2 image, guest runtime, test guests and agents"

setup:
	rustup toolchain install $(TOOLCHAIN) --profile minimal
	rustup target add --toolchain $(TOOLCHAIN) aarch64-unknown-none aarch64-unknown-none-softfloat wasm32-unknown-unknown wasm32-wasip1
	rustup component add --toolchain $(TOOLCHAIN) rust-src llvm-tools
	rustup show active-toolchain
	command -v qemu-system-aarch64 >/dev/null || { apt-get update && apt-get install -y qemu-system-arm; }

images:
	$(CARGO) el2
	$(CARGO) el1
	$(CARGO) build $(foreach a,$(AGENTS),-p rvm-agent-$(a)) --release --target wasm32-unknown-unknown
	$(CARGO) build $(foreach a,$(WASI_AGENTS),-p rvm-agent-$(a)) --release --target wasm32-wasip1 --config 'profile.release.strip="debuginfo"'
	mkdir -p $(OUT)/agents $(OUT)/probes
	$(OBJCOPY) -O binary $(EL2)/rvm $(OUT)/rvm.bin
	cp $(EL2)/rvm $(OUT)/rvm.elf
	$(OBJCOPY) --strip-debug $(EL1)/rvm-guest-runtime $(OUT)/guest-runtime.elf
	$(foreach p,$(PROBES),$(OBJCOPY) --strip-debug $(EL1)/$(p) $(OUT)/probes/$(p).elf;)
	$(foreach a,$(AGENTS),cp $(WASM)/rvm_agent_$(subst -,_,$(a)).wasm $(OUT)/agents/$(a).wasm;)
	$(foreach a,$(WASI_AGENTS),cp $(WASI)/$(a).wasm $(OUT)/agents/$(a).wasm;)
	$(CARGO) run -q -p rvm-agent-invalid -- $(OUT)/agents/invalid.wasm
	@echo "images in $(OUT)/"

# Deploy the two reference tenants (examples/reference/) with rvm-loader into
# a fresh RVM_HOME under $(TARGET)/, boot them under QEMU, verify the logs.
run: images
	$(CARGO) build -q -p rvm-loader
	RVM_IMAGE_DIR=$(abspath $(OUT)) sh examples/reference/run.sh $(TARGET)/debug/rvm-loader $(TARGET)/rvm-demo-home

test: images
	RVM_AGENT_WASM_DIR=$(abspath $(WASM)) $(CARGO) test --workspace --exclude rvm-boot --exclude rvm-hal --exclude rvm-guest-runtime --exclude rvm-guest-probes $(foreach a,$(AGENTS) $(WASI_AGENTS) invalid,--exclude rvm-agent-$(a)) --exclude rvm-guest

# The soak: one instance, RVM_SOAK_TENANTS tenants (16) committing every turn
# for RVM_SOAK_TURNS turns (10 000), an event every RVM_SOAK_EVERY turns (300)
# of the slowest; prints its figures (tools/rvm-loader/tests/e2e.rs, soak_*).
soak: images
	RVM_IMAGE_DIR=$(abspath $(OUT)) $(CARGO) test --release -p rvm-loader --test e2e soak_ -- --ignored --nocapture

# Clippy over every crate, each for the target it is built for. The cross
# crates are linted alone (--no-deps): their workspace dependencies are
# host crates, linted (with their tests) by the last line.
lint:
	$(CARGO) clippy --no-deps -p rvm-boot -p rvm-hal --release --target aarch64-unknown-none-softfloat -- -D warnings
	$(CARGO) clippy --no-deps -p rvm-guest-runtime -p rvm-guest-probes --release --target aarch64-unknown-none -- -D warnings
	$(CARGO) clippy --no-deps -p rvm-guest $(foreach a,$(AGENTS),-p rvm-agent-$(a)) --release --target wasm32-unknown-unknown -- -D warnings
	$(CARGO) clippy --no-deps $(foreach a,$(WASI_AGENTS),-p rvm-agent-$(a)) --release --target wasm32-wasip1 -- -D warnings
	$(CARGO) clippy --no-deps -p rvm-agent-invalid --all-targets -- -D warnings
	$(CARGO) clippy --all-targets -- -D warnings

bench:
	$(CARGO) bench -p rvm-cap -p rvm-witness -p rvm-coherence

bench-qemu: images
	RVM_IMAGE_DIR=$(OUT) $(CARGO) run -q --release -p rvm-tests-qemu --bin rvm-bench-qemu

clean:
	$(CARGO) clean
