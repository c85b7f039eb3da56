//! The shape of `kernel/core/src`, checked: its files import one another
//! without cycles (a subsystem's state sits below the behaviour that uses
//! it, so every file has a level and imports only files below it), and the
//! run loop in `hypervisor.rs` stays short enough to read in one sitting,
//! and no file writes a subsystem's fields or grows the hypervisor's
//! collections but the subsystem's own module (and `state.rs`).
//!
//! A file's imports are the `crate::…` paths in its code (comments and its
//! `#[cfg(test)] mod tests` block left out), each resolved to the longest
//! module path that names a file. The host tests under `src/tests/` are not
//! part of the kernel and are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest `hypervisor.rs` (the run loop: boot, exits, housekeeping,
/// shutdown) may grow.
const RUN_LOOP_MAX_LINES: usize = 250;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, by module path (`memory::addr`, `lib`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("file name").to_string();
        if path.is_dir() {
            let mut p = prefix.to_vec();
            p.push(name);
            modules(&path, &p, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut p = prefix.to_vec();
            if name != "mod" && name != "lib" {
                p.push(name);
            }
            let module = if p.is_empty() { "lib".to_string() } else { p.join("::") };
            out.insert(module, std::fs::read_to_string(&path).expect("read file"));
        }
    }
}

/// `src` without comments and without its `#[cfg(test)] mod tests { … }`.
fn code_of(src: &str) -> String {
    let uncommented = src
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let Some(start) = uncommented.find("#[cfg(test)]\nmod tests {") else { return uncommented };
    let open = start + uncommented[start..].find('{').expect("the block opens");
    let mut depth = 0usize;
    for (i, c) in uncommented[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return format!("{}{}", &uncommented[..start], &uncommented[open + i + 1..]);
                }
            }
            _ => {}
        }
    }
    uncommented[..start].to_string()
}

/// The modules `code` names through `crate::` paths.
fn imports(code: &str, known: &BTreeSet<String>, me: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        for n in (1..=parts.len()).rev() {
            let candidate = parts[..n].join("::");
            if known.contains(&candidate) {
                if candidate != me {
                    out.insert(candidate);
                }
                break;
            }
        }
    }
    out
}

/// The kernel's files (not `lib.rs`, not the host tests), by module path.
fn kernel_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    modules(&src(), &[], &mut files);
    files.into_iter().filter(|(m, _)| m != "lib" && m != "tests" && !m.starts_with("tests::")).collect()
}

/// The hypervisor's own collections (`state.rs` grows and shrinks them).
const COLLECTIONS: [&str; 3] = ["partitions", "stores", "channels"];
/// What changes a collection in place.
const GROWERS: [&str; 8] = ["push", "insert", "remove", "truncate", "clear", "retain", "pop", "swap_remove"];

/// Where `code` writes into a subsystem through the world: a field of one
/// of the `Hypervisor`'s subsystems assigned (`hv.orders.refused += 1`),
/// or one of its collections grown or shrunk (`hv.partitions.push(p)`).
/// A subsystem changes its own fields, in its own module, behind methods.
fn writes_into_subsystems(code: &str) -> Vec<String> {
    fn ident(s: &str) -> &str {
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        &s[..end]
    }
    let mut found = Vec::new();
    for (at, _) in code.match_indices("hv.") {
        if at > 0 && code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let rest = &code[at + 3..];
        let sub = ident(rest);
        let Some(after) = rest[sub.len()..].strip_prefix('.') else { continue };
        let field = ident(after);
        let tail = after[field.len()..].trim_start();
        let assigned = ["=", "+=", "-=", "|=", "&=", "*="].iter().any(|op| tail.starts_with(op)) && !tail.starts_with("==");
        let grown = COLLECTIONS.contains(&sub) && GROWERS.contains(&field) && tail.starts_with('(');
        if assigned || grown {
            found.push(format!("hv.{sub}.{field}"));
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let kernel = kernel_files();
    let known: BTreeSet<String> = kernel.keys().cloned().collect();
    kernel.iter().map(|(m, src)| (m.clone(), imports(&code_of(src), &known, m))).collect()
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in &s.g[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), next: 0, out: Vec::new() };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_kernels_files_import_each_other_without_cycles() {
    let g = graph();
    assert!(g.len() > 30, "found only {} kernel files under {}", g.len(), src().display());
    assert!(g["hypervisor"].contains("state"), "the run loop is built on the state module");
    let found = cycles(&g);
    assert!(found.is_empty(), "import cycles in kernel/core/src: {found:?}");
}

#[test]
fn the_state_module_imports_no_behaviour() {
    // The hypervisor's state is the ground the handlers stand on: it names
    // the subsystems' types, never the code that handles exits or faults.
    let g = graph();
    let behaviour = ["hypervisor", "dispatch", "recovery::fault", "recovery::restart", "domains::migrate", "load", "running::smp", "orders"];
    let wrong: Vec<&String> = g["state"].iter().filter(|m| behaviour.contains(&m.as_str())).collect();
    assert!(wrong.is_empty(), "state.rs imports behaviour: {wrong:?}");
}

#[test]
fn no_file_writes_into_a_subsystem_through_the_world() {
    let wrong: Vec<(String, Vec<String>)> = kernel_files()
        .iter()
        .filter(|(m, _)| m.as_str() != "state")
        .map(|(m, src)| (m.clone(), writes_into_subsystems(&code_of(src))))
        .filter(|(_, w)| !w.is_empty())
        .collect();
    assert!(wrong.is_empty(), "subsystem fields written from outside their module: {wrong:?}");
}

#[test]
fn the_run_loop_stays_short() {
    let text = std::fs::read_to_string(src().join("hypervisor.rs")).expect("read hypervisor.rs");
    let lines = text.lines().count();
    assert!(lines < RUN_LOOP_MAX_LINES, "hypervisor.rs has {lines} lines (at most {RUN_LOOP_MAX_LINES})");
}

#[test]
fn the_checks_see_a_cycle_when_there_is_one() {
    // The checker itself, on a made-up graph: a → b → c → a is one cycle.
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
    let known: BTreeSet<String> = ["memory", "memory::addr", "state"].iter().map(|s| s.to_string()).collect();
    let code = code_of("use crate::memory::addr::Ipa; // crate::state\n#[cfg(test)]\nmod tests { fn t() { crate::memory::f(); } }\nfn f() { crate::state::x(); }");
    assert_eq!(imports(&code, &known, "me"), BTreeSet::from(["memory::addr".to_string(), "state".to_string()]));
}

#[test]
fn the_checks_see_a_write_into_a_subsystem() {
    let code = "fn f() { hv.orders.refused += 1; hv.partitions.push(p); if hv.domains.epoch == 2 {} hv.stores[0].commit(); g(hv.frames.used); self.hv.x = 1; }";
    assert_eq!(writes_into_subsystems(code), ["hv.orders.refused", "hv.partitions.push"]);
}
