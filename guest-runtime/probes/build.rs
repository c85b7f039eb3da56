//! Link the probes exactly as the runtime is linked: the runtime's
//! `linker.ld`, with the layout constants generated from the ABI crate.
use rvm_abi::bootinfo::layout;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=../linker.ld");
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
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker.ld");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}
