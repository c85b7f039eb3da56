//! wasm32 link settings: a 64 KiB shadow stack, no DWARF, and an initial
//! linear memory of 1 GiB (16384 pages) — the point of this agent.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=65536");
        println!("cargo:rustc-link-arg=--strip-debug");
        println!("cargo:rustc-link-arg=--initial-memory=1073741824");
    }
}
