//! Reading a module before it is deployed: its imports checked against
//! [`rvm_abi::imports::HostImport`], its memory limits read for the
//! partition's budget, and the whole module validated by the engine the
//! guest runtime runs ([`rvm_agent_engine::validate`]), so a module this
//! accepts is one the guest runtime finds valid too.
//!
//! Parsing is `wasmparser`'s, the parser under the engine's wasmi.

use rvm_abi::imports::{wasi, HostImport, ValType, MODULE};
use std::fmt;
use wasmparser::{CompositeInnerType, Parser, Payload, TypeRef};

/// First eight bytes of a version-1 binary module.
const HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Why the bytes are not a module the loader can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a valid WebAssembly module: {} (at byte {})",
            self.reason, self.offset
        )
    }
}

/// A value type as the binary encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmType {
    I32,
    I64,
    F32,
    F64,
    V128,
    FuncRef,
    ExternRef,
}

impl WasmType {
    fn of(t: wasmparser::ValType) -> Option<Self> {
        use wasmparser::{RefType, ValType as V};
        Some(match t {
            V::I32 => WasmType::I32,
            V::I64 => WasmType::I64,
            V::F32 => WasmType::F32,
            V::F64 => WasmType::F64,
            V::V128 => WasmType::V128,
            V::Ref(RefType::FUNCREF) => WasmType::FuncRef,
            V::Ref(RefType::EXTERNREF) => WasmType::ExternRef,
            V::Ref(_) => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            WasmType::I32 => "i32",
            WasmType::I64 => "i64",
            WasmType::F32 => "f32",
            WasmType::F64 => "f64",
            WasmType::V128 => "v128",
            WasmType::FuncRef => "funcref",
            WasmType::ExternRef => "externref",
        }
    }
}

/// A function type of the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncType {
    pub params: Vec<WasmType>,
    pub results: Vec<WasmType>,
}

impl fmt::Display for FuncType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[WasmType]| v.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
        write!(f, "({}) -> ({})", list(&self.params), list(&self.results))
    }
}

/// What an import brings in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// A function of type index n.
    Func(u32),
    Table,
    Memory,
    Global,
    Tag,
}

/// One import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub module: String,
    pub name: String,
    pub kind: ImportKind,
}

/// Memory limits in 64 KiB pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    pub min: u64,
    pub max: Option<u64>,
}

/// What the reader learned about a module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    pub types: Vec<FuncType>,
    pub imports: Vec<Import>,
    /// Memories the module defines itself.
    pub memories: Vec<MemoryLimits>,
}

fn malformed(e: wasmparser::BinaryReaderError) -> Malformed {
    Malformed {
        offset: e.offset(),
        reason: e.message().to_owned(),
    }
}

const NOT_PLAIN: &str = "type is not a plain function type (GC types are not supported)";

fn func_type(at: usize, ty: wasmparser::SubType) -> Result<FuncType, Malformed> {
    let bad = |reason: &str| Malformed {
        offset: at,
        reason: reason.to_owned(),
    };
    let plain = ty.is_final && ty.supertype_idx.is_none() && !ty.composite_type.shared;
    let CompositeInnerType::Func(f) = ty.composite_type.inner else {
        return Err(bad(NOT_PLAIN));
    };
    if !plain {
        return Err(bad(NOT_PLAIN));
    }
    let list = |v: &[wasmparser::ValType]| {
        v.iter()
            .map(|&t| WasmType::of(t).ok_or_else(|| bad("unsupported value type")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(FuncType {
        params: list(f.params())?,
        results: list(f.results())?,
    })
}

/// Read a module's types, imports and memories (parsing only: [`check`]
/// also validates).
pub fn read(module: &[u8]) -> Result<ModuleInfo, Malformed> {
    if module.len() < HEADER.len() || module[..HEADER.len()] != HEADER {
        return Err(Malformed {
            offset: 0,
            reason: "no WebAssembly version-1 header (\\0asm 01 00 00 00)".into(),
        });
    }
    let mut info = ModuleInfo::default();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(malformed)? {
            Payload::TypeSection(reader) => {
                for group in reader.into_iter_with_offsets() {
                    let (at, group) = group.map_err(malformed)?;
                    if group.is_explicit_rec_group() {
                        return Err(Malformed {
                            offset: at,
                            reason: NOT_PLAIN.into(),
                        });
                    }
                    for ty in group.into_types() {
                        info.types.push(func_type(at, ty)?);
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(malformed)?;
                    let kind = match import.ty {
                        TypeRef::Func(ty) => ImportKind::Func(ty),
                        TypeRef::Table(_) => ImportKind::Table,
                        TypeRef::Memory(_) => ImportKind::Memory,
                        TypeRef::Global(_) => ImportKind::Global,
                        TypeRef::Tag(_) => ImportKind::Tag,
                    };
                    info.imports.push(Import {
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                        kind,
                    });
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(malformed)?;
                    info.memories.push(MemoryLimits {
                        min: memory.initial,
                        max: memory.maximum,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Why a module cannot run under RVM's guest runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed(Malformed),
    /// Well-formed, but WebAssembly validation (the engine's) refuses it.
    Invalid {
        detail: String,
    },
    /// A wasm-bindgen JS-glue module: it needs a JavaScript host.
    JsGlue {
        imports: Vec<String>,
    },
    /// Imports RVM does not provide (or provides with another signature).
    Unsupported {
        imports: Vec<String>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let provided: Vec<&str> = HostImport::ALL.iter().map(|i| i.name()).collect();
        match self {
            Refusal::Malformed(m) => m.fmt(f),
            Refusal::Invalid { detail } => {
                write!(f, "not a valid WebAssembly module: {detail}")
            }
            Refusal::JsGlue { imports } => write!(
                f,
                "is a wasm-bindgen JS-glue module (it imports {}); it needs a JavaScript host and cannot run in an RVM partition: build the agent for the `{MODULE}` imports instead (RVM provides: {})",
                imports.join(", "),
                provided.join(", ")
            ),
            Refusal::Unsupported { imports } => {
                let wasi: Vec<&str> = wasi::WasiImport::ALL.iter().map(|i| i.name()).collect();
                write!(
                    f,
                    "imports what RVM does not provide: {} (RVM provides only functions of module \"{MODULE}\": {}; and of \"{}\": {})",
                    imports.join(", "),
                    provided.join(", "),
                    wasi::MODULE,
                    wasi.join(", ")
                )
            }
        }
    }
}

fn is_js_glue(i: &Import) -> bool {
    i.module == "wbg"
        || i.module == "__wbindgen_placeholder__"
        || i.module.starts_with("__wbindgen")
        || i.name.starts_with("__wbindgen")
        || i.name.starts_with("__wbg_")
}

fn describe(i: &Import, why: &str) -> String {
    let show = |s: &str| crate::diag::quote(s);
    format!("{}.{} ({why})", show(&i.module), show(&i.name))
}

fn wasm_type(t: &ValType) -> WasmType {
    match t {
        ValType::I32 => WasmType::I32,
        ValType::I64 => WasmType::I64,
    }
}

/// RVM's signature of a host function, in the module's terms.
pub fn rvm_signature(want: HostImport) -> FuncType {
    signature(want.params(), want.results())
}

fn signature(params: &[ValType], results: &[ValType]) -> FuncType {
    FuncType {
        params: params.iter().map(wasm_type).collect(),
        results: results.iter().map(wasm_type).collect(),
    }
}

/// Check a module against what RVM provides; returns what was read.
pub fn check(module: &[u8]) -> Result<ModuleInfo, Refusal> {
    let info = read(module).map_err(Refusal::Malformed)?;
    let glue: Vec<String> = info
        .imports
        .iter()
        .filter(|i| is_js_glue(i))
        .map(|i| describe(i, "wasm-bindgen"))
        .collect();
    if !glue.is_empty() {
        return Err(Refusal::JsGlue { imports: glue });
    }
    let mut missing = Vec::new();
    for i in &info.imports {
        if i.module != MODULE && i.module != wasi::MODULE {
            missing.push(describe(i, "unknown module"));
            continue;
        }
        let ImportKind::Func(ty) = i.kind else {
            missing.push(describe(i, "not a function"));
            continue;
        };
        if i.module == wasi::MODULE {
            match wasi::WasiImport::from_name(&i.name) {
                None => missing.push(describe(i, "a WASI function RVM does not provide")),
                Some(want) => {
                    let sig = signature(want.params(), want.results());
                    match info.types.get(ty as usize) {
                        Some(got) if *got == sig => {}
                        Some(got) => missing.push(describe(i, &format!("type {got}, WASI's is {sig}"))),
                        None => missing.push(describe(i, "bad type index")),
                    }
                }
            }
            continue;
        }
        match HostImport::from_name(&i.name) {
            None => missing.push(describe(i, "no such function")),
            Some(want) => match info.types.get(ty as usize) {
                None => missing.push(describe(i, "bad type index")),
                Some(got) if *got != rvm_signature(want) => missing.push(describe(
                    i,
                    &format!("type {got}, RVM's is {}", rvm_signature(want)),
                )),
                Some(_) => {}
            },
        }
    }
    if !missing.is_empty() {
        return Err(Refusal::Unsupported { imports: missing });
    }
    rvm_agent_engine::validate(module).map_err(|e| match e {
        rvm_agent_engine::LoadError::Invalid { detail } => Refusal::Invalid { detail },
        other => Refusal::Invalid {
            detail: other.to_string(),
        },
    })?;
    Ok(info)
}

/// The integration tests' module builders.
#[cfg(test)]
#[path = "../tests/common/modules.rs"]
#[allow(dead_code)]
mod test_modules;

#[cfg(test)]
mod tests {
    use super::test_modules::*;
    use super::*;

    #[test]
    fn an_rvm_agent_passes() {
        let m = rvm_agent(Some(17));
        let info = check(&m).unwrap();
        assert_eq!(info.imports.len(), HostImport::ALL.len());
        assert_eq!(info.memories, [MemoryLimits { min: 17, max: None }]);
    }

    #[test]
    fn js_glue_is_refused_by_name() {
        let m = module(
            &[
                ("wbg", "__wbindgen_throw", &[0x7f, 0x7f], &[]),
                ("rvm", "clock", &[], &[0x7e]),
            ],
            None,
        );
        let e = check(&m).unwrap_err();
        assert!(matches!(e, Refusal::JsGlue { .. }));
        let text = e.to_string();
        assert!(
            text.contains("wasm-bindgen JS-glue") && text.contains("\"wbg\".\"__wbindgen_throw\""),
            "{text}"
        );
    }

    #[test]
    fn unsupported_imports_are_listed() {
        let m = module(
            &[
                ("env", "abort", &[], &[]),
                ("rvm", "fork", &[], &[0x7f]),
                ("rvm", "clock", &[], &[0x7f]),
                ("rvm", "console_write", &[0x7f, 0x7f], &[0x7f]),
            ],
            None,
        );
        let Refusal::Unsupported { imports } = check(&m).unwrap_err() else {
            panic!()
        };
        assert_eq!(
            imports,
            [
                "\"env\".\"abort\" (unknown module)",
                "\"rvm\".\"fork\" (no such function)",
                "\"rvm\".\"clock\" (type () -> (i32), RVM's is () -> (i64))",
            ]
        );
    }

    #[test]
    fn the_wasi_subset_is_provided_and_anything_else_of_wasi_is_listed() {
        let w = "wasi_snapshot_preview1";
        let m = module(
            &[
                (w, "fd_write", &[0x7f, 0x7f, 0x7f, 0x7f], &[0x7f]),
                (w, "clock_time_get", &[0x7f, 0x7e, 0x7f], &[0x7f]),
                (w, "proc_exit", &[0x7f], &[]),
                ("rvm", "tool_call", &[0x7f; 6], &[0x7f]),
            ],
            None,
        );
        assert!(check(&m).is_ok(), "{:?}", check(&m));
        let m = module(
            &[
                (w, "fd_write", &[0x7f, 0x7f, 0x7f, 0x7f], &[0x7f]),
                (w, "path_open", &[0x7f; 9], &[0x7f]),
                (w, "sock_accept", &[0x7f, 0x7f, 0x7f], &[0x7f]),
                (w, "random_get", &[0x7f], &[0x7f]),
            ],
            None,
        );
        let e = check(&m).unwrap_err();
        let Refusal::Unsupported { imports } = &e else { panic!("{e}") };
        assert_eq!(
            imports,
            &[
                "\"wasi_snapshot_preview1\".\"path_open\" (a WASI function RVM does not provide)",
                "\"wasi_snapshot_preview1\".\"sock_accept\" (a WASI function RVM does not provide)",
                "\"wasi_snapshot_preview1\".\"random_get\" (type (i32) -> (i32), WASI's is (i32, i32) -> (i32))",
            ]
        );
        assert!(e.to_string().contains("and of \"wasi_snapshot_preview1\": fd_write, fd_read,"), "{e}");
    }

    #[test]
    fn malformed_modules() {
        assert_eq!(read(b"\0asm").unwrap_err().offset, 0);
        assert!(read(b"\0asm\x01\0\0\0\x02\x05\x01").is_err());
        // A count claiming more items than bytes.
        let e = read(b"\0asm\x01\0\0\0\x02\x02\xff\x01").unwrap_err();
        assert_eq!(
            (e.offset, e.reason.as_str()),
            (12, "unexpected end-of-file")
        );
        assert!(read(b"\0asm\x01\0\0\0").unwrap().imports.is_empty());
        // LEB with too many bytes.
        assert!(read(b"\0asm\x01\0\0\0\x00\x80\x80\x80\x80\x80\x01").is_err());
    }

    #[test]
    fn a_module_the_engine_finds_invalid_is_refused() {
        use wasm_encoder::{CodeSection, Function, FunctionSection, Instruction, TypeSection};
        // `() -> ()` whose body leaves an i32 on the stack: well-formed, not valid.
        let mut m = wasm_encoder::Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(1))
            .instruction(&Instruction::End);
        let mut code = CodeSection::new();
        code.function(&body);
        m.section(&code);
        let m = m.finish();
        assert!(read(&m).is_ok());
        let e = check(&m).unwrap_err();
        assert!(matches!(e, Refusal::Invalid { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("not a valid WebAssembly module: type mismatch"),
            "{e}"
        );
    }
}
