//! Tool calls served on the host: an agent's `Bash(…)` commands
//! ([`command`]) and the tools of the MCP servers the operator registered
//! for its partition ([`mcp`], [`registry`]), behind one entry point
//! ([`serve::ToolServer`]). The hypervisor decides whether a call is
//! allowed (`rvm_cap::claim`) and the host checks it again; what runs is
//! exactly the argument vector that decision saw, never a shell.
//!
//! `rvm-loader tool add | set | list | remove` ([`cli`]) keep the
//! registrations under `$RVM_HOME/tools/`.

pub mod cli;
pub mod command;
pub mod mcp;
pub mod registry;
pub mod serve;

/// How `cap` bytes are shared between two outputs of `a` and `b` bytes:
/// both whole when they fit; else the smaller keeps all of itself up to
/// half the cap and the other the rest (so error output survives a flood
/// on standard output, and the other way round).
pub fn share(cap: usize, a: usize, b: usize) -> (usize, usize) {
    if a.saturating_add(b) <= cap {
        return (a, b);
    }
    let half = cap / 2;
    if a <= half {
        (a, cap - a)
    } else if b <= half {
        (cap - b, b)
    } else {
        (cap - half, half)
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn the_cap_is_shared_fairly() {
        assert_eq!(share(10, 3, 4), (3, 4));
        assert_eq!(share(10, 3, 40), (3, 7));
        assert_eq!(share(10, 40, 2), (8, 2));
        assert_eq!(share(10, 40, 40), (5, 5));
        assert_eq!(share(11, 40, 40), (6, 5));
        assert_eq!(share(0, 4, 4), (0, 0));
        assert_eq!(share(10, usize::MAX, 1), (9, 1));
    }
}
