//! Writes two modules to OUT_DIR: `whole.wasm`, the smallest valid agent
//! (`(module (func (export "run")))`), and `invalid.wasm`, the same bytes
//! cut off inside the code section — what the hostile fixture is.
use std::path::Path;
use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module,
    TypeSection,
};

fn whole() -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);
    m.section(&exports);
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&body);
    // Last section: id, size 4, one body of size 2 (no locals, `end`).
    m.section(&code);
    m.finish()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    let whole = whole();
    // The cut falls inside the code section, after its size byte, so the
    // section claims 4 bytes and only 2 follow.
    let cut = whole.len() - 2;
    std::fs::write(out.join("whole.wasm"), &whole).expect("write whole.wasm");
    std::fs::write(out.join("invalid.wasm"), &whole[..cut]).expect("write invalid.wasm");
}
