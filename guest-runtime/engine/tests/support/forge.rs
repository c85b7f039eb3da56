//! Small WASM modules for tests that need one no Rust agent would produce
//! (wrong signatures, start functions, traps, memory growth). The binary
//! encoding is `wasm-encoder`'s; this only keeps the tests' short builder.

use wasm_encoder::{
    CodeSection, ConstExpr, Encode, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, ImportSection, MemorySection, MemoryType, RefType, StartSection,
    TableSection, TableType, TypeSection, ValType,
};

/// Value types, as the binary encodes them.
pub const I32: u8 = 0x7f;
pub const I64: u8 = 0x7e;

fn val(t: u8) -> ValType {
    match t {
        I32 => ValType::I32,
        I64 => ValType::I64,
        _ => panic!("forge: value type {t:#x} is not i32 or i64"),
    }
}

/// Signed LEB128 for `i32.const` immediates.
pub fn sleb(v: i64, out: &mut Vec<u8>) {
    v.encode(out);
}

/// A module under construction. Function indices count imports first.
#[derive(Default)]
pub struct Module {
    types: Vec<(Vec<u8>, Vec<u8>)>,
    imports: Vec<(String, String, u32)>,
    funcs: Vec<(u32, u32, Vec<u8>)>,
    memory: Option<u32>,
    /// A `funcref` table of this many elements (none if `None`).
    table: Option<u32>,
    exports: Vec<(String, u32)>,
    start: Option<u32>,
    /// Mutable i32 globals: (initial value, exported as).
    globals: Vec<(i32, Option<String>)>,
}

impl Module {
    pub fn new() -> Self {
        Self::default()
    }

    fn ty(&mut self, params: &[u8], results: &[u8]) -> u32 {
        let t = (params.to_vec(), results.to_vec());
        if let Some(i) = self.types.iter().position(|x| *x == t) {
            return i as u32;
        }
        self.types.push(t);
        (self.types.len() - 1) as u32
    }

    /// Import a function; its index.
    pub fn import(&mut self, module: &str, field: &str, params: &[u8], results: &[u8]) -> u32 {
        assert!(self.funcs.is_empty(), "imports come first");
        let ty = self.ty(params, results);
        self.imports.push((module.into(), field.into(), ty));
        (self.imports.len() - 1) as u32
    }

    /// Define a function with `body` (instructions without the final `end`); its index.
    pub fn func(&mut self, params: &[u8], results: &[u8], body: &[u8]) -> u32 {
        self.func_with_locals(params, results, 0, body)
    }

    /// Like [`func`](Self::func), with `i32_locals` extra `i32` locals after the parameters.
    pub fn func_with_locals(
        &mut self,
        params: &[u8],
        results: &[u8],
        i32_locals: u32,
        body: &[u8],
    ) -> u32 {
        let ty = self.ty(params, results);
        self.funcs.push((ty, i32_locals, body.to_vec()));
        (self.imports.len() + self.funcs.len() - 1) as u32
    }

    /// A `funcref` table of `min` elements, not exported.
    pub fn table(&mut self, min: u32) -> &mut Self {
        self.table = Some(min);
        self
    }

    /// A memory of `min` pages, exported as "memory".
    pub fn memory(&mut self, min: u32) -> &mut Self {
        self.memory = Some(min);
        self
    }

    pub fn export(&mut self, name: &str, func: u32) -> &mut Self {
        self.exports.push((name.into(), func));
        self
    }

    /// A mutable `i32` global, exported as `export` if given; its index.
    pub fn global_i32(&mut self, init: i32, export: Option<&str>) -> u32 {
        self.globals.push((init, export.map(String::from)));
        (self.globals.len() - 1) as u32
    }

    pub fn start(&mut self, func: u32) -> &mut Self {
        self.start = Some(func);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut module = wasm_encoder::Module::new();
        let mut types = TypeSection::new();
        for (p, r) in &self.types {
            types
                .ty()
                .function(p.iter().copied().map(val), r.iter().copied().map(val));
        }
        module.section(&types);
        if !self.imports.is_empty() {
            let mut imports = ImportSection::new();
            for (m, f, t) in &self.imports {
                imports.import(m, f, wasm_encoder::EntityType::Function(*t));
            }
            module.section(&imports);
        }
        let mut funcs = FunctionSection::new();
        for (t, _, _) in &self.funcs {
            funcs.function(*t);
        }
        module.section(&funcs);
        if let Some(min) = self.table {
            let mut tables = TableSection::new();
            tables.table(TableType {
                element_type: RefType::FUNCREF,
                table64: false,
                minimum: u64::from(min),
                maximum: None,
                shared: false,
            });
            module.section(&tables);
        }
        if let Some(min) = self.memory {
            let mut memories = MemorySection::new();
            memories.memory(MemoryType {
                minimum: u64::from(min),
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
            module.section(&memories);
        }
        if !self.globals.is_empty() {
            let mut globals = GlobalSection::new();
            for (init, _) in &self.globals {
                let ty = GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                };
                globals.global(ty, &ConstExpr::i32_const(*init));
            }
            module.section(&globals);
        }
        let mut exports = ExportSection::new();
        for (e, f) in &self.exports {
            exports.export(e, ExportKind::Func, *f);
        }
        if self.memory.is_some() {
            exports.export("memory", ExportKind::Memory, 0);
        }
        for (i, (_, e)) in (0u32..).zip(&self.globals) {
            if let Some(e) = e {
                exports.export(e, ExportKind::Global, i);
            }
        }
        module.section(&exports);
        if let Some(function_index) = self.start {
            module.section(&StartSection { function_index });
        }
        let mut code = CodeSection::new();
        for (_, locals, body) in &self.funcs {
            let locals = (*locals > 0).then_some((*locals, ValType::I32));
            let mut f = Function::new(locals);
            f.raw(body.iter().copied());
            f.raw([op::END]);
            code.function(&f);
        }
        module.section(&code);
        module.finish()
    }
}

/// Opcodes used by the tests.
pub mod op {
    pub const UNREACHABLE: u8 = 0x00;
    pub const CALL: u8 = 0x10;
    pub const DROP: u8 = 0x1a;
    pub const I32_CONST: u8 = 0x41;
    pub const MEMORY_GROW: [u8; 2] = [0x40, 0x00];
    pub const BLOCK: [u8; 2] = [0x02, 0x40];
    pub const LOOP: [u8; 2] = [0x03, 0x40];
    pub const END: u8 = 0x0b;
    pub const BR: u8 = 0x0c;
    pub const BR_IF: u8 = 0x0d;
    pub const LOCAL_GET: u8 = 0x20;
    pub const LOCAL_SET: u8 = 0x21;
    pub const I32_GE_U: u8 = 0x4f;
    pub const I32_ADD: u8 = 0x6a;
    pub const GLOBAL_GET: u8 = 0x23;
    pub const GLOBAL_SET: u8 = 0x24;
}
