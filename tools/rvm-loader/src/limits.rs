//! Size policy for everything the loader reads. Inputs come from generated
//! files that may have been tampered with, so every size is bounded before
//! anything is stored or sent to the device.

use rvm_abi::bootinfo;

/// Largest manifest, capability table or guest reference file, in bytes.
pub const TEXT_FILE_MAX: u64 = 1 << 20;
/// Largest install script linted, in bytes.
pub const SCRIPT_MAX: u64 = 64 << 10;
/// Largest WebAssembly module: what fits the guest's module window.
pub const WASM_MAX: u64 = bootinfo::layout::WASM_MAX_LEN;
/// Largest guest runtime ELF read from the image directory.
pub const RUNTIME_MAX: u64 = 64 << 20;

/// `[metadata].description`: bounded only by the manifest's own size (the
/// adapter emits a harness's description as it is, 100 KB ones included);
/// listings show it shortened.
pub const DESCRIPTION_MAX: usize = TEXT_FILE_MAX as usize;
/// `[metadata].system_prompt`: long, multi-line prompts are expected.
pub const SYSTEM_PROMPT_MAX: usize = 64 << 10;
/// A capability's `resource` name.
pub const RESOURCE_MAX: usize = 256;
/// npm's own limit on a package name.
pub const PACKAGE_NAME_MAX: usize = 214;
/// A package version or version range.
pub const VERSION_MAX: usize = 64;
/// `guest.entrypoint`, a path inside the package.
pub const ENTRYPOINT_MAX: usize = 256;
/// Any other free-text string (companion notes, enum-like values).
pub const SHORT_TEXT_MAX: usize = 1 << 10;

/// Handles the kernel gives a partition besides its table's tokens
/// (channels, state store, its own witness log); the boot-info page lists
/// both, so a table may use the rest.
pub const KERNEL_HANDLES_RESERVED: usize = 16;
/// Most tokens one capability table may hold.
pub const TOKENS_MAX: usize = bootinfo::MAX_HANDLES - KERNEL_HANDLES_RESERVED;

/// Most partitions booted together (`up`).
pub const PARTITIONS_PER_BOOT_MAX: usize = 64;
/// WASM memory budget given to a partition whose module asks for less.
pub const WASM_PAGES_DEFAULT: u32 = 16;
/// Most WASM pages a partition may be given (256 pages = 16 MiB).
pub const WASM_PAGES_MAX: u32 = 256;
/// Messages a channel between two partitions booted together can hold.
pub const CHANNEL_CAPACITY: u32 = 16;
