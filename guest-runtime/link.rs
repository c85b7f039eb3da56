// Shared by the build scripts of the runtime and the probes (`include!`d):
// link an EL1 image with the runtime's `linker.ld` (bins only, bare-metal
// targets only, so nothing else in the workspace is affected). The layout
// constants the script needs are generated from the ABI crate, not restated.

/// Link this crate's bins with `linker.ld` in `script_dir`.
fn link_el1_image(script_dir: &std::path::Path) {
    use rvm_abi::bootinfo::layout;
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let script = script_dir.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    let generated = format!(
        "/* Generated from rvm_abi::bootinfo::layout by build.rs. */\n\
         IMAGE_BASE = {:#x};\nIMAGE_LIMIT = {:#x};\n",
        layout::IMAGE_BASE,
        layout::IMAGE_LIMIT
    );
    std::fs::write(format!("{out}/rvm_layout.ld"), generated).expect("write rvm_layout.ld");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-L{out}");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        // Segments are 4 KiB-aligned in memory; keep the file offsets to the
        // same granule instead of LLD's 64 KiB AArch64 default.
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
