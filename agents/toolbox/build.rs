//! Link settings for the wasm32 agent: a small shadow stack (the default is
//! 1 MiB, which would be most of a partition's memory budget) and the stack
//! pointer exported so snapshots capture it; no DWARF (the release profile
//! keeps debug info for the EL2 image, but a partition would only carry it).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=65536");
        println!("cargo:rustc-link-arg=--export=__stack_pointer");
        println!("cargo:rustc-link-arg=--strip-debug");
    }
}
