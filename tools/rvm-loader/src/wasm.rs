//! A small WebAssembly binary reader: just enough to check a module's
//! imports against [`rvm_abi::imports::HostImport`] before it is deployed, and
//! to read its memory limits for the partition's budget.
//!
//! It walks the section headers (bounds-checked, every length checked against
//! the input) and decodes the type (1), import (2) and memory (5) sections.
//! Everything else is skipped; the guest runtime validates the whole module
//! again with wasmi at load.

use rvm_abi::imports::{HostImport, ValType, MODULE};
use std::fmt;

/// First eight bytes of a version-1 binary module.
const HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";

/// Why the bytes are not a module this reader understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub offset: usize,
    pub reason: &'static str,
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
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x7f => WasmType::I32,
            0x7e => WasmType::I64,
            0x7d => WasmType::F32,
            0x7c => WasmType::F64,
            0x7b => WasmType::V128,
            0x70 => WasmType::FuncRef,
            0x6f => WasmType::ExternRef,
            _ => return None,
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

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    /// Offset of `b[0]` in the whole module, for messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> Malformed {
        Malformed {
            offset: self.base + self.pos,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = *self
            .b
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }

    fn leb(&mut self, bits: u32) -> Result<u64, Malformed> {
        let mut result = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift >= bits {
                return Err(self.err("integer too long"));
            }
            let chunk = u64::from(b & 0x7f);
            if shift + 7 > bits && chunk >> (bits - shift) != 0 {
                return Err(self.err("integer too large"));
            }
            result |= chunk << shift;
            if b & 0x80 == 0 {
                return Ok(result);
            }
            shift += 7;
        }
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let v = self.leb(32)?;
        u32::try_from(v).map_err(|_| self.err("integer too large"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.err("length past the end"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn name(&mut self) -> Result<String, Malformed> {
        let n = self.u32()? as usize;
        let raw = self.bytes(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| self.err("name is not UTF-8"))
    }

    /// A count of items that each take at least one byte: bounded by what is left.
    fn count(&mut self) -> Result<usize, Malformed> {
        let n = self.u32()? as usize;
        if n > self.b.len() - self.pos {
            return Err(self.err("count larger than the section"));
        }
        Ok(n)
    }

    fn valtype(&mut self) -> Result<WasmType, Malformed> {
        let b = self.byte()?;
        WasmType::from_byte(b).ok_or_else(|| self.err("unsupported value type"))
    }

    fn limits(&mut self, memory64_ok: bool) -> Result<MemoryLimits, Malformed> {
        let flags = self.byte()?;
        if flags & !0x07 != 0 || (!memory64_ok && flags & 0x04 != 0) {
            return Err(self.err("unsupported limits flags"));
        }
        let bits = if flags & 0x04 != 0 { 64 } else { 32 };
        let min = self.leb(bits)?;
        let max = if flags & 0x01 != 0 {
            Some(self.leb(bits)?)
        } else {
            None
        };
        Ok(MemoryLimits { min, max })
    }

    fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

/// Read a module's types, imports and memories.
pub fn read(module: &[u8]) -> Result<ModuleInfo, Malformed> {
    if module.len() < HEADER.len() || module[..HEADER.len()] != HEADER {
        return Err(Malformed {
            offset: 0,
            reason: "no WebAssembly version-1 header (\\0asm 01 00 00 00)",
        });
    }
    let mut top = Reader {
        b: module,
        pos: HEADER.len(),
        base: 0,
    };
    let mut info = ModuleInfo::default();
    while !top.done() {
        let id = top.byte()?;
        let len = top.u32()? as usize;
        let at = top.pos;
        let body = top.bytes(len)?;
        let mut r = Reader {
            b: body,
            pos: 0,
            base: at,
        };
        match id {
            1 => {
                for _ in 0..r.count()? {
                    if r.byte()? != 0x60 {
                        return Err(r.err(
                            "type is not a plain function type (GC types are not supported)",
                        ));
                    }
                    let np = r.count()?;
                    let params = (0..np).map(|_| r.valtype()).collect::<Result<_, _>>()?;
                    let nr = r.count()?;
                    let results = (0..nr).map(|_| r.valtype()).collect::<Result<_, _>>()?;
                    info.types.push(FuncType { params, results });
                }
            }
            2 => {
                for _ in 0..r.count()? {
                    let module = r.name()?;
                    let name = r.name()?;
                    let kind = match r.byte()? {
                        0x00 => ImportKind::Func(r.u32()?),
                        0x01 => {
                            r.valtype()?;
                            r.limits(false)?;
                            ImportKind::Table
                        }
                        0x02 => {
                            r.limits(true)?;
                            ImportKind::Memory
                        }
                        0x03 => {
                            r.valtype()?;
                            r.byte()?;
                            ImportKind::Global
                        }
                        0x04 => {
                            r.byte()?;
                            r.u32()?;
                            ImportKind::Tag
                        }
                        _ => return Err(r.err("unknown import kind")),
                    };
                    info.imports.push(Import { module, name, kind });
                }
            }
            5 => {
                for _ in 0..r.count()? {
                    info.memories.push(r.limits(true)?);
                }
            }
            0..=13 => continue,
            _ => return Err(r.err("unknown section id")),
        }
        if !r.done() {
            return Err(r.err("section longer than its contents"));
        }
    }
    Ok(info)
}

/// Why a module cannot run under RVM's guest runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed(Malformed),
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
            Refusal::JsGlue { imports } => write!(
                f,
                "is a wasm-bindgen JS-glue module (it imports {}); it needs a JavaScript host and cannot run in an RVM partition: build the agent for the `{MODULE}` imports instead (RVM provides: {})",
                imports.join(", "),
                provided.join(", ")
            ),
            Refusal::Unsupported { imports } => write!(
                f,
                "imports what RVM does not provide: {} (RVM provides only functions of module \"{MODULE}\": {})",
                imports.join(", "),
                provided.join(", ")
            ),
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
    FuncType {
        params: want.params().iter().map(wasm_type).collect(),
        results: want.results().iter().map(wasm_type).collect(),
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
        if i.module != MODULE {
            missing.push(describe(i, "unknown module"));
            continue;
        }
        let ImportKind::Func(ty) = i.kind else {
            missing.push(describe(i, "not a function"));
            continue;
        };
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
    if missing.is_empty() {
        Ok(info)
    } else {
        Err(Refusal::Unsupported { imports: missing })
    }
}

/// Builders of small modules for tests (here and in the integration tests).
pub mod build {
    /// `(module (type ...) (import ...) (memory min))` for the given imports
    /// `(module, name, params, results)` with types as encoded bytes.
    pub fn module(imports: &[(&str, &str, &[u8], &[u8])], memory_min: Option<u32>) -> Vec<u8> {
        fn leb(mut v: u64, out: &mut Vec<u8>) {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(b);
                    return;
                }
                out.push(b | 0x80);
            }
        }
        fn name(s: &str, out: &mut Vec<u8>) {
            leb(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        fn section(id: u8, body: Vec<u8>, out: &mut Vec<u8>) {
            out.push(id);
            leb(body.len() as u64, out);
            out.extend(body);
        }
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let mut types = Vec::new();
        leb(imports.len() as u64, &mut types);
        for (_, _, p, r) in imports {
            types.push(0x60);
            leb(p.len() as u64, &mut types);
            types.extend_from_slice(p);
            leb(r.len() as u64, &mut types);
            types.extend_from_slice(r);
        }
        section(1, types, &mut m);
        let mut imps = Vec::new();
        leb(imports.len() as u64, &mut imps);
        for (i, (module, n, _, _)) in imports.iter().enumerate() {
            name(module, &mut imps);
            name(n, &mut imps);
            imps.push(0);
            leb(i as u64, &mut imps);
        }
        section(2, imps, &mut m);
        if let Some(min) = memory_min {
            let mut mem = vec![1, 0];
            leb(u64::from(min), &mut mem);
            section(5, mem, &mut m);
        }
        m
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
}

#[cfg(test)]
mod tests {
    use super::build::*;
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
    fn malformed_modules() {
        assert_eq!(read(b"\0asm").unwrap_err().offset, 0);
        assert!(read(b"\0asm\x01\0\0\0\x02\x05\x01").is_err());
        // A count claiming more items than bytes.
        assert_eq!(
            read(b"\0asm\x01\0\0\0\x02\x02\xff\x01").unwrap_err().reason,
            "count larger than the section"
        );
        assert!(read(b"\0asm\x01\0\0\0").unwrap().imports.is_empty());
        // LEB with too many bytes.
        assert!(read(b"\0asm\x01\0\0\0\x00\x80\x80\x80\x80\x80\x01").is_err());
    }
}
