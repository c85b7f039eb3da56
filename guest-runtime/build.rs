//! Link the EL1 runtime with `linker.ld` (see `link.rs`).
include!("link.rs");

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    link_el1_image(std::path::Path::new(&dir));
}
