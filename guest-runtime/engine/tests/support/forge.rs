//! A tiny WASM module encoder for tests that need a module no Rust agent
//! would produce (wrong signatures, start functions, traps, memory growth).

/// Value types.
pub const I32: u8 = 0x7f;
pub const I64: u8 = 0x7e;

fn leb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Signed LEB128 for `i32.const` immediates.
pub fn sleb(mut v: i64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return;
        }
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
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        let mut b = Vec::new();
        leb(self.types.len() as u64, &mut b);
        for (p, r) in &self.types {
            b.push(0x60);
            leb(p.len() as u64, &mut b);
            b.extend(p);
            leb(r.len() as u64, &mut b);
            b.extend(r);
        }
        section(1, b, &mut out);
        if !self.imports.is_empty() {
            let mut b = Vec::new();
            leb(self.imports.len() as u64, &mut b);
            for (m, f, t) in &self.imports {
                name(m, &mut b);
                name(f, &mut b);
                b.push(0);
                leb(u64::from(*t), &mut b);
            }
            section(2, b, &mut out);
        }
        let mut b = Vec::new();
        leb(self.funcs.len() as u64, &mut b);
        for (t, _, _) in &self.funcs {
            leb(u64::from(*t), &mut b);
        }
        section(3, b, &mut out);
        if let Some(min) = self.table {
            let mut b = vec![1, 0x70, 0];
            leb(u64::from(min), &mut b);
            section(4, b, &mut out);
        }
        if let Some(min) = self.memory {
            let mut b = vec![1, 0];
            leb(u64::from(min), &mut b);
            section(5, b, &mut out);
        }
        if !self.globals.is_empty() {
            let mut b = Vec::new();
            leb(self.globals.len() as u64, &mut b);
            for (init, _) in &self.globals {
                b.extend([I32, 1, 0x41]);
                sleb(i64::from(*init), &mut b);
                b.push(0x0b);
            }
            section(6, b, &mut out);
        }
        let mut b = Vec::new();
        let exported_globals = self.globals.iter().filter(|(_, e)| e.is_some()).count();
        let n = self.exports.len() + usize::from(self.memory.is_some()) + exported_globals;
        leb(n as u64, &mut b);
        for (e, f) in &self.exports {
            name(e, &mut b);
            b.push(0);
            leb(u64::from(*f), &mut b);
        }
        if self.memory.is_some() {
            name("memory", &mut b);
            b.extend([2, 0]);
        }
        for (i, (_, e)) in self.globals.iter().enumerate() {
            if let Some(e) = e {
                name(e, &mut b);
                b.push(3);
                leb(i as u64, &mut b);
            }
        }
        section(7, b, &mut out);
        if let Some(s) = self.start {
            let mut b = Vec::new();
            leb(u64::from(s), &mut b);
            section(8, b, &mut out);
        }
        let mut b = Vec::new();
        leb(self.funcs.len() as u64, &mut b);
        for (_, locals, body) in &self.funcs {
            let mut f = Vec::new();
            if *locals == 0 {
                f.push(0);
            } else {
                f.push(1);
                leb(u64::from(*locals), &mut f);
                f.push(I32);
            }
            f.extend(body);
            f.push(0x0b);
            leb(f.len() as u64, &mut b);
            b.extend(f);
        }
        section(10, b, &mut out);
        out
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
