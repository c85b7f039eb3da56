//! Screening a module before it is compiled and instantiated: the import
//! table, the memory budget, no start function.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rvm_abi::imports::{self, wasi, HostImport};
use wasmi::{ExternType, Module};
use wasmparser::{ExternalKind, FunctionBody, Operator, Parser, Payload, TypeRef};

use crate::LoadError;

fn invalid(e: impl core::fmt::Display) -> LoadError {
    LoadError::Invalid {
        detail: e.to_string(),
    }
}

/// What the screen learnt about a module besides its verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ModuleFacts {
    /// The module defines a mutable global it does not export: its state is
    /// not all reachable, so it cannot be snapshotted faithfully.
    pub(crate) hidden_mutable_global: bool,
    /// Some function may change a table or an element segment (`table.set`,
    /// `table.grow`, `table.fill`, `table.copy`, `table.init`, `elem.drop`),
    /// or its code could not be read to rule that out. Function references
    /// have no byte form, so such a module's tables could differ from what
    /// instantiation rebuilds: it cannot be snapshotted faithfully. Without
    /// any of these instructions a table is exactly what the element segments
    /// made it, and a restore rebuilds it as it was.
    pub(crate) table_writer: bool,
}

/// Whether `body` may change a table or an element segment. Code that cannot
/// be decoded counts as a writer: the answer must never be a false "no".
fn writes_tables(body: &FunctionBody<'_>) -> bool {
    let Ok(mut ops) = body.get_operators_reader() else { return true };
    while !ops.eof() {
        match ops.read() {
            Ok(
                Operator::TableSet { .. }
                | Operator::TableGrow { .. }
                | Operator::TableFill { .. }
                | Operator::TableCopy { .. }
                | Operator::TableInit { .. }
                | Operator::ElemDrop { .. },
            ) => return true,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Walk the module's sections (parsing only, cheap): every import must be a
/// function of the `rvm` table, the declared memory minimum must fit
/// `budget_pages`, and there must be no start function.
pub(crate) fn prescan(wasm: &[u8], budget_pages: u32) -> Result<ModuleFacts, LoadError> {
    let mut declared_pages: u64 = 0;
    let mut mutable_globals: Vec<u32> = Vec::new();
    let mut exported_globals: Vec<u32> = Vec::new();
    let mut table_writer = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::GlobalSection(reader) => {
                // Global imports are refused, so indexes start at 0 here.
                for (index, global) in (0u32..).zip(reader) {
                    if global.map_err(invalid)?.ty.mutable {
                        mutable_globals.push(index);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.kind == ExternalKind::Global {
                        exported_globals.push(export.index);
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    let kind = match import.ty {
                        TypeRef::Func(_) => None,
                        TypeRef::Table(_) => Some("table"),
                        TypeRef::Memory(_) => Some("memory"),
                        TypeRef::Global(_) => Some("global"),
                        TypeRef::Tag(_) => Some("tag"),
                    };
                    let known = (import.module == imports::MODULE
                        && HostImport::from_name(import.name).is_some())
                        || (import.module == wasi::MODULE
                            && wasi::WasiImport::from_name(import.name).is_some());
                    let forbidden = match (kind, known) {
                        (Some(kind), _) => Some(kind),
                        (None, false) => Some("function"),
                        (None, true) => None,
                    };
                    if let Some(kind) = forbidden {
                        return Err(LoadError::ForbiddenImport {
                            module: String::from(import.module),
                            name: String::from(import.name),
                            kind,
                        });
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    declared_pages = declared_pages.saturating_add(memory.initial);
                }
            }
            Payload::StartSection { .. } => return Err(LoadError::StartFunction),
            Payload::CodeSectionEntry(body) => {
                table_writer = table_writer || writes_tables(&body);
            }
            _ => {}
        }
    }
    if declared_pages > u64::from(budget_pages) {
        return Err(LoadError::MemoryOverBudget {
            declared_pages,
            budget_pages,
        });
    }
    Ok(ModuleFacts {
        hidden_mutable_global: mutable_globals
            .iter()
            .any(|g| !exported_globals.contains(g)),
        table_writer,
    })
}

/// Whether wasmi types `have` are the ABI types `want`.
fn same(have: &[wasmi::ValType], want: &[imports::ValType]) -> bool {
    have.len() == want.len() && have.iter().zip(want).all(|(h, w)| *h == wasmi_type(*w))
}

fn wasmi_type(t: imports::ValType) -> wasmi::ValType {
    match t {
        imports::ValType::I32 => wasmi::ValType::I32,
        imports::ValType::I64 => wasmi::ValType::I64,
    }
}

/// Every `rvm` import of a compiled module has its table signature.
pub(crate) fn check_import_signatures(module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        if import.module() == wasi::MODULE {
            let Some(w) = wasi::WasiImport::from_name(import.name()) else {
                return Err(LoadError::ForbiddenImport {
                    module: String::from(import.module()),
                    name: String::from(import.name()),
                    kind: "function",
                });
            };
            let fits = match import.ty() {
                ExternType::Func(ty) => same(ty.params(), w.params()) && same(ty.results(), w.results()),
                _ => false,
            };
            if !fits {
                return Err(LoadError::WasiSignature { name: w.name() });
            }
            continue;
        }
        let Some(host) = HostImport::from_name(import.name()) else {
            // `prescan` already refused it; keep this check total anyway.
            return Err(LoadError::ForbiddenImport {
                module: String::from(import.module()),
                name: String::from(import.name()),
                kind: "function",
            });
        };
        let ExternType::Func(ty) = import.ty() else {
            return Err(LoadError::ImportSignature { import: host });
        };
        if !same(ty.params(), host.params()) || !same(ty.results(), host.results()) {
            return Err(LoadError::ImportSignature { import: host });
        }
    }
    Ok(())
}
