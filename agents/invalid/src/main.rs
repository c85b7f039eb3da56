//! `rvm-agent-invalid OUT.wasm`: write the invalid-module fixture to a file
//! (the Makefile puts it in a bundle as a hostile partition's module).
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: rvm-agent-invalid OUT.wasm");
        return ExitCode::from(2);
    };
    match std::fs::write(&path, rvm_agent_invalid::INVALID) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvm-agent-invalid: {}: {e}", path.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
