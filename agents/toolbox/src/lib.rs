//! The toolbox agent: tool calls under its partition's claims.
//!
//! It runs once (a `run` entry) and makes these calls in order, each with a
//! response buffer of [`RESPONSE_CAP`] bytes — some its claims
//! (`Bash(echo *)`, `mcp__demo__*`) allow, some they do not, one that
//! times out:
//!
//! * `echo`: `Bash`, `echo hello-from-rvm`;
//! * `inject`: `Bash`, ``echo a; rm -rf / $(id) `id` |cat`` (allowed: the
//!   host runs no shell, so it is all arguments of echo);
//! * `dotdot`: `Bash`, `echo ../etc/passwd` (refused: a `..` component);
//! * `newline`: `Bash`, `echo a`, a newline, `rm -rf /` (refused: a
//!   control character);
//! * `denied`: `Bash`, `rm -rf /tmp/nothing` (no claim names `rm`);
//! * `mcp`: `mcp__demo__echo`, `{"text":"hi from toolbox"}`;
//! * `mcp-add`: `mcp__demo__add`, `{"a":2,"b":40}`;
//! * `mcp-denied`: `mcp__other__echo`, `{"text":"x"}` (no claim);
//! * `slow`: `mcp__demo__sleep`, `{"ms":4000}` (longer than the timeout
//!   its server is registered with).
//!
//! For each it prints one console line:
//!
//! ```text
//! toolbox: <label> ok <length> <response>
//! toolbox: <label> err <error name>
//! ```
//!
//! where `<response>` is the response's first [`SHOWN`] bytes as UTF-8,
//! lossy (an invalid sequence is U+FFFD), with control characters escaped
//! (`\n`, `\u{1b}`) so that the line stays one line. Then, if the partition
//! has a state store and the `echo` call answered, it commits the key
//! [`ECHO_KEY`] = that response, prints how long each call took on the
//! partition's clock (`toolbox: round trips (us): echo=… inject=… …`),
//! then `toolbox: done`, and finishes with exit code 0.
//!
//! Exit codes: 0 done; 6 the commit failed.
#![no_std]

use core::fmt::{self, Write};

/// The response buffer of every call.
pub const RESPONSE_CAP: usize = 1024;
/// How much of a response a line shows.
pub const SHOWN: usize = 200;
/// The state-store key the `echo` call's response is committed under.
pub const ECHO_KEY: &[u8] = b"toolbox/echo";

/// One call the agent makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `Bash` with this command line.
    Bash(&'static str),
    /// MCP tool `tool` of server `server`, with these JSON arguments.
    Mcp {
        server: &'static str,
        tool: &'static str,
        arguments: &'static str,
    },
}

/// The calls, in order, with their labels.
pub const CALLS: [(&str, Tool); 9] = [
    ("echo", Tool::Bash("echo hello-from-rvm")),
    // Allowed by `Bash(echo *)`: the host runs no shell, so every byte
    // after `echo` is an argument of echo.
    ("inject", Tool::Bash("echo a; rm -rf / $(id) `id` |cat")),
    // No claim allows a `..` path component.
    ("dotdot", Tool::Bash("echo ../etc/passwd")),
    // Nor a control character.
    ("newline", Tool::Bash("echo a\nrm -rf /")),
    // No claim names `rm`.
    ("denied", Tool::Bash("rm -rf /tmp/nothing")),
    (
        "mcp",
        Tool::Mcp {
            server: "demo",
            tool: "echo",
            arguments: r#"{"text":"hi from toolbox"}"#,
        },
    ),
    (
        "mcp-add",
        Tool::Mcp {
            server: "demo",
            tool: "add",
            arguments: r#"{"a":2,"b":40}"#,
        },
    ),
    // No claim names server `other`.
    (
        "mcp-denied",
        Tool::Mcp {
            server: "other",
            tool: "echo",
            arguments: r#"{"text":"x"}"#,
        },
    ),
    // Longer than the timeout the server is registered with.
    (
        "slow",
        Tool::Mcp {
            server: "demo",
            tool: "sleep",
            arguments: r#"{"ms":4000}"#,
        },
    ),
];

/// Bytes shown as UTF-8, lossy, with control characters escaped.
pub struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        Ok(())
    }
}

/// Room for a line: a label, a length and [`SHOWN`] bytes, each at worst
/// escaped to six characters.
pub const LINE_CAP: usize = 64 + SHOWN * 6;

/// A line built in a fixed buffer, written with one console call (so a
/// character is never split between two writes). Text past its capacity
/// is dropped, whole characters at a time.
pub struct Line {
    buf: [u8; LINE_CAP],
    len: usize,
}

impl Line {
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_CAP],
            len: 0,
        }
    }

    /// What has been written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let c = c.encode_utf8(&mut utf8).as_bytes();
            let Some(to) = self.buf.get_mut(self.len..self.len + c.len()) else {
                return Ok(());
            };
            to.copy_from_slice(c);
            self.len += c.len();
        }
        Ok(())
    }
}

#[cfg(target_arch = "wasm32")]
mod agent {
    use core::fmt::Write;

    use rvm_guest::{HvError, StateStore};

    use super::{Line, Shown, Tool, CALLS, ECHO_KEY, RESPONSE_CAP, SHOWN};

    const EXIT_STORE: i32 = 6;

    fn print(args: core::fmt::Arguments<'_>) {
        let mut line = Line::new();
        let _ = line.write_fmt(args);
        let _ = line.write_str("\n");
        let _ = rvm_guest::console_write(line.as_bytes());
    }

    fn call(tool: Tool, response: &mut [u8]) -> Result<usize, HvError> {
        match tool {
            Tool::Bash(line) => rvm_guest::bash(line, response),
            Tool::Mcp {
                server,
                tool,
                arguments,
            } => rvm_guest::mcp(server, tool, arguments, response),
        }
    }

    /// The entry point (see the agent engine's entry convention).
    #[no_mangle]
    pub extern "C" fn run() {
        let mut echo = [0u8; RESPONSE_CAP];
        let mut echo_len = None;
        let mut took_us = [0u64; CALLS.len()];
        for (at, (label, tool)) in CALLS.into_iter().enumerate() {
            let mut response = [0u8; RESPONSE_CAP];
            let before = rvm_guest::clock().unwrap_or(0);
            let answer = call(tool, &mut response);
            took_us[at] = rvm_guest::clock().unwrap_or(0).saturating_sub(before) / 1_000;
            match answer {
                Ok(n) => {
                    let got = response.get(..n).unwrap_or(&response);
                    let shown = got.get(..SHOWN).unwrap_or(got);
                    print(format_args!("toolbox: {label} ok {n} {}", Shown(shown)));
                    if label == "echo" {
                        echo[..got.len()].copy_from_slice(got);
                        echo_len = Some(got.len());
                    }
                }
                Err(e) => print(format_args!("toolbox: {label} err {}", e.name())),
            }
        }
        if let (Ok(store), Some(n)) = (StateStore::nth(0), echo_len) {
            let committed = store
                .stage(ECHO_KEY, &echo[..n])
                .and_then(|()| store.validate())
                .and_then(|()| store.commit());
            if let Err(e) = committed {
                print(format_args!("toolbox: commit err {}", e.name()));
                rvm_guest::exit(EXIT_STORE);
            }
        }
        let mut line = Line::new();
        let _ = line.write_str("toolbox: round trips (us):");
        for ((label, _), us) in CALLS.iter().zip(took_us) {
            let _ = write!(line, " {label}={us}");
        }
        let _ = line.write_str("\n");
        let _ = rvm_guest::console_write(line.as_bytes());
        print(format_args!("toolbox: done"));
    }
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::println!("toolbox: panic: {}", info.message());
    rvm_guest::exit(101)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::{String, ToString};

    fn shown(b: &[u8]) -> String {
        Shown(b).to_string()
    }

    #[test]
    fn responses_show_lossy_and_on_one_line() {
        assert_eq!(shown(br#"{"stdout":"hi\n"}"#), r#"{"stdout":"hi\n"}"#);
        assert_eq!(shown(b"a\nb\tc\x1b"), "a\\nb\\tc\\u{1b}");
        assert_eq!(shown(b"ok \xff\xfe end"), "ok \u{fffd}\u{fffd} end");
        // A character cut at the end of what is shown.
        assert_eq!(shown("é".as_bytes().get(..1).unwrap()), "\u{fffd}");
    }

    #[test]
    fn a_line_keeps_whole_characters_up_to_its_capacity() {
        let mut line = Line::new();
        write!(line, "{}", "é".repeat(LINE_CAP)).unwrap();
        assert_eq!(line.as_bytes().len(), LINE_CAP);
        assert!(core::str::from_utf8(line.as_bytes()).is_ok());
        let mut line = Line::new();
        write!(line, "toolbox: {} ok", "echo").unwrap();
        assert_eq!(line.as_bytes(), b"toolbox: echo ok");
    }
}
