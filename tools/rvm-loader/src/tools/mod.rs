//! Tool calls served on the host: the programs behind an agent's `Bash(…)`
//! claims ([`command`]). The hypervisor decides whether a call is allowed
//! (`rvm_cap::claim`); what runs here is exactly the argument vector that
//! decision saw, never a shell.
//!
//! Not wired to the hypervisor yet: no import or hypercall carries a tool
//! call, and MCP servers are not served.

pub mod command;
