//! `rvm-mcp-demo`: a small MCP server over stdio (newline-delimited
//! JSON-RPC 2.0) for the tests and the example tenant. Its tools:
//!
//! * `echo` `{"text": string}`: answers the text;
//! * `add` `{"a": number, "b": number}`: answers the sum;
//! * `sleep` `{"ms": integer}`: sleeps that long (at most 600 000 ms),
//!   then answers `slept <ms> ms`.
//!
//! It reads one message a line and exits at the end of its input.
//! Notifications are ignored; unknown methods get `-32601`, unknown tools
//! and bad arguments `-32602`.

use serde_json::{json, Value};
use std::io::{BufRead, Write};

const PROTOCOL_VERSION: &str = "2025-06-18";
const MAX_SLEEP_MS: u64 = 600_000;

/// A JSON-RPC error.
struct RpcError(i64, String);

fn text(t: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": t.into()}], "isError": false})
}

fn tools() -> Value {
    json!({"tools": [
        {
            "name": "echo",
            "description": "Answers the text it is given.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        },
        {
            "name": "add",
            "description": "Adds two numbers.",
            "inputSchema": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
        {
            "name": "sleep",
            "description": "Sleeps for ms milliseconds, then answers.",
            "inputSchema": {
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": MAX_SLEEP_MS}},
                "required": ["ms"],
            },
        },
    ]})
}

fn bad(what: &str) -> RpcError {
    RpcError(-32602, format!("invalid arguments: {what}"))
}

fn call(params: &Value) -> Result<Value, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no tool name"))?;
    let empty = json!({});
    let args = params.get("arguments").unwrap_or(&empty);
    match name {
        "echo" => {
            let t = args
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("echo takes {\"text\": string}"))?;
            Ok(text(t))
        }
        "add" => {
            let (a, b) = (args.get("a"), args.get("b"));
            let (Some(a), Some(b)) = (a.filter(|v| v.is_number()), b.filter(|v| v.is_number()))
            else {
                return Err(bad("add takes {\"a\": number, \"b\": number}"));
            };
            let sum = match (a.as_i64(), b.as_i64()) {
                (Some(x), Some(y)) => x.checked_add(y).map(|s| s.to_string()),
                _ => None,
            };
            let sum = sum.unwrap_or_else(|| {
                (a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)).to_string()
            });
            Ok(text(sum))
        }
        "sleep" => {
            let ms = args
                .get("ms")
                .and_then(Value::as_u64)
                .filter(|ms| *ms <= MAX_SLEEP_MS)
                .ok_or_else(|| bad("sleep takes {\"ms\": 0 to 600000}"))?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(text(format!("slept {ms} ms")))
        }
        other => Err(RpcError(-32602, format!("unknown tool: {other}"))),
    }
}

fn handle(method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "initialize" => Ok(json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "rvm-mcp-demo", "version": env!("CARGO_PKG_VERSION")},
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(tools()),
        "tools/call" => call(params),
        other => Err(RpcError(-32601, format!("method not found: {other}"))),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Err(e) => {
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}})
            }
            Ok(msg) => {
                let (Some(method), Some(id)) =
                    (msg.get("method").and_then(Value::as_str), msg.get("id"))
                else {
                    // A notification or a response: nothing to answer.
                    continue;
                };
                match handle(method, msg.get("params").unwrap_or(&Value::Null)) {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    Err(RpcError(code, message)) => {
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                    }
                }
            }
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
