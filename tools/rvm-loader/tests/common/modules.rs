//! Small WebAssembly modules for the tests (here and in the library's unit
//! tests), encoded by `wasm-encoder`.

use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection, ImportSection,
    Instruction, MemorySection, MemoryType, Module, TypeSection, ValType,
};

fn val(t: u8) -> ValType {
    match t {
        0x7f => ValType::I32,
        0x7e => ValType::I64,
        _ => panic!("value type {t:#x} is not i32 or i64"),
    }
}

/// `(module (type ...) (import ...) (memory min))` for the given imports
/// `(module, name, params, results)` with types as encoded bytes.
pub fn module(imports: &[(&str, &str, &[u8], &[u8])], memory_min: Option<u32>) -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    for (_, _, p, r) in imports {
        types
            .ty()
            .function(p.iter().copied().map(val), r.iter().copied().map(val));
    }
    m.section(&types);
    let mut imps = ImportSection::new();
    for (i, (module, name, _, _)) in (0u32..).zip(imports) {
        imps.import(module, name, EntityType::Function(i));
    }
    m.section(&imps);
    if let Some(min) = memory_min {
        let mut mem = MemorySection::new();
        mem.memory(MemoryType {
            minimum: u64::from(min),
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mem);
    }
    m.finish()
}

/// A module importing every RVM host function with its signature.
pub fn rvm_agent(memory_min: Option<u32>) -> Vec<u8> {
    use rvm_abi::imports::{HostImport, ValType};
    let enc = |v: &[ValType]| -> Vec<u8> {
        v.iter()
            .map(|t| if *t == ValType::I32 { 0x7f } else { 0x7e })
            .collect()
    };
    let sigs: Vec<(Vec<u8>, Vec<u8>)> = HostImport::ALL
        .iter()
        .map(|i| (enc(i.params()), enc(i.results())))
        .collect();
    let list: Vec<(&str, &str, &[u8], &[u8])> = HostImport::ALL
        .iter()
        .zip(&sigs)
        .map(|(i, (p, r))| ("rvm", i.name(), p.as_slice(), r.as_slice()))
        .collect();
    module(&list, memory_min)
}

/// A module whose entry traps at once (`unreachable`): a fault at run time.
pub fn trapping() -> Vec<u8> {
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
    body.instruction(&Instruction::Unreachable)
        .instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&body);
    m.section(&code);
    m.finish()
}
