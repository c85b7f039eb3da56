//! An ordinary Rust program, written for any `wasm32-wasip1` host, that RVM
//! runs unmodified as an agent: nothing in it knows of RVM. It prints to
//! standard output and error (the partition's console), reads its
//! arguments, environment and standard input (its name; nothing; empty),
//! times itself (the partition's virtual clock), hashes with a randomly
//! keyed `HashMap` (`random_get`), yields, and exits with a code of its own
//! through `std::process::exit` (`proc_exit`).

use std::collections::HashMap;
use std::io::{Read, Write};

fn main() {
    let started = std::time::Instant::now();
    let args: Vec<String> = std::env::args().collect();
    println!("wasi-hello: args {args:?}");
    println!("wasi-hello: {} environment variables", std::env::vars().count());
    let mut input = Vec::new();
    let read = std::io::stdin().read_to_end(&mut input).map(|_| input.len());
    println!("wasi-hello: standard input gave {read:?} bytes");
    // A keyed map: its keys come from `random_get`.
    let mut words: HashMap<&str, usize> = HashMap::new();
    for w in "the quick brown fox jumps over the lazy dog the end".split(' ') {
        *words.entry(w).or_default() += 1;
    }
    let mut counted: Vec<(&str, usize)> = words.into_iter().collect();
    counted.sort();
    println!("wasi-hello: counted {counted:?}");
    std::thread::yield_now();
    let _ = writeln!(std::io::stderr(), "wasi-hello: a line on standard error");
    let elapsed = started.elapsed();
    println!("wasi-hello: done after {} virtual microseconds", elapsed.as_micros());
    let _ = std::io::stdout().flush();
    std::process::exit(if elapsed.as_nanos() > 0 { 0 } else { 1 });
}
