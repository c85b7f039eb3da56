//! The example tenant's agent (`examples/researcher/`): an ordinary Rust
//! program built for `wasm32-wasip1` — standard output, `std` collections,
//! `serde_json` — that also calls RVM's `rvm` imports for what WASI has no
//! word for: tools under its partition's claims, and its committed state.
//!
//! It asks the MCP server `demo` (the repository's `rvm-mcp-demo`, under its
//! claim `mcp__demo__*`) to add two numbers and to echo a note, runs `uname
//! -s` (its claim `Bash(uname *)`), tries a command no claim allows (`curl`,
//! refused by the hypervisor), commits what it learned under `research/`
//! in one transaction, reads it back, and finishes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use rvm_guest::{HvError, StateStore};
use serde_json::Value;

/// A response buffer of this many bytes.
const RESPONSE: usize = 4096;

/// The text of an MCP result's first content item.
fn mcp_text(result: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(result).ok()?;
    if v["isError"] == Value::Bool(true) {
        return None;
    }
    Some(v["content"][0]["text"].as_str()?.to_string())
}

/// A command's standard output, trimmed, when it exited 0.
fn command_stdout(result: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(result).ok()?;
    (v["exit_code"] == 0).then(|| v["stdout"].as_str().unwrap_or("").trim().to_string())
}

fn mcp(tool: &str, arguments: &Value) -> Result<Option<String>, HvError> {
    let mut response = vec![0u8; RESPONSE];
    let n = rvm_guest::mcp("demo", tool, &arguments.to_string(), &mut response)?;
    Ok(mcp_text(&response[..n]))
}

fn bash(line: &str) -> Result<Option<String>, HvError> {
    let mut response = vec![0u8; RESPONSE];
    let n = rvm_guest::bash(line, &mut response)?;
    Ok(command_stdout(&response[..n]))
}

fn main() -> ExitCode {
    let me = std::env::args().next().unwrap_or_default();
    println!("researcher: {me} starts");
    let mut learned: BTreeMap<&str, String> = BTreeMap::new();
    match mcp("add", &serde_json::json!({"a": 19, "b": 23})) {
        Ok(Some(sum)) => {
            println!("researcher: the demo server says 19 + 23 = {sum}");
            learned.insert("research/answer", sum);
        }
        other => println!("researcher: the demo server's add: {other:?}"),
    }
    match mcp("echo", &serde_json::json!({"text": "tools answer under claims"})) {
        Ok(Some(note)) => {
            println!("researcher: the demo server echoed {note:?}");
            learned.insert("research/note", note);
        }
        other => println!("researcher: the demo server's echo: {other:?}"),
    }
    match bash("uname -s") {
        Ok(Some(os)) => {
            println!("researcher: the host runs {os}");
            learned.insert("research/host", os);
        }
        other => println!("researcher: uname: {other:?}"),
    }
    // No claim allows it: refused by the hypervisor, witnessed, never run.
    match bash("curl https://example.com") {
        Err(e) => println!("researcher: curl refused: {}", e.name()),
        Ok(_) => println!("researcher: curl ran (a claim allowed it)"),
    }
    let Ok(store) = StateStore::nth(0) else {
        println!("researcher: no state store");
        return ExitCode::from(3);
    };
    let committed = learned
        .iter()
        .try_for_each(|(k, v)| store.stage(k.as_bytes(), v.as_bytes()))
        .and_then(|()| store.validate())
        .and_then(|()| store.commit());
    if let Err(e) = committed {
        println!("researcher: commit refused: {}", e.name());
        return ExitCode::from(4);
    }
    let mut value = [0u8; 256];
    for key in learned.keys() {
        let n = store.get(key.as_bytes(), &mut value).unwrap_or(0);
        println!("researcher: committed {key} = {:?}", String::from_utf8_lossy(&value[..n.min(value.len())]));
    }
    println!("researcher: done, {} findings kept", learned.len());
    ExitCode::SUCCESS
}
