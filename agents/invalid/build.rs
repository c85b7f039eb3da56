//! Writes two modules to OUT_DIR: `whole.wasm`, the smallest valid agent
//! (`(module (func (export "run")))`), and `invalid.wasm`, the same bytes
//! cut off inside the code section — what the hostile fixture is.
use std::path::Path;

const WHOLE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, // magic "\0asm"
    0x01, 0x00, 0x00, 0x00, // version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: 1 type, func [] -> []
    0x03, 0x02, 0x01, 0x00, // function section: 1 function of type 0
    0x07, 0x07, 0x01, 0x03, b'r', b'u', b'n', 0x00, 0x00, // export "run" = func 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: 1 body, no locals, `end`
];

/// Where the cut falls: inside the code section, after its size byte, so
/// the section claims 4 bytes and only 2 follow.
const CUT: usize = WHOLE.len() - 2;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    std::fs::write(out.join("whole.wasm"), WHOLE).expect("write whole.wasm");
    std::fs::write(out.join("invalid.wasm"), &WHOLE[..CUT]).expect("write invalid.wasm");
}
