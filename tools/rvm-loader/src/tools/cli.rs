//! `rvm-loader tool add | set | list | remove`: the operator's tool
//! registrations ([`super::registry`]).

use crate::diag::{quote, Diagnostic};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::model::PartitionName;
use crate::tools::registry::{self, McpServer, Registrations};
use clap::{Subcommand, ValueEnum};
use std::path::Path;

/// `tool --help`.
pub const TOOL_LONG: &str = "\
The tools a partition's agents may call, served by the loader.

An agent calls a tool by name; the hypervisor lets the call through only if
a claim of the partition's capability table allows it (the `resource` of a
capability: `Bash(npx demo*)`, `mcp__demo__*`, `*`), witnesses it, and the
loader serves it, checking the claims again:

  Bash                    the request is a command line, run as its words
                          (no shell: `;`, `|`, `$( )` are bytes of an
                          argument) under the partition's Bash policy
                          (`tool set`); the answer is JSON: exit_code,
                          stdout, stderr, truncated, timed_out
  mcp__<server>__<tool>   the request is the tool's JSON arguments; the
                          answer is the result of `tools/call` on the MCP
                          server registered as <server> (`tool add`)

Registrations live in $RVM_HOME/tools/<partition>.json (written whole,
atomically; read at every call, so a change applies to the next call).
Commands and servers run in $RVM_HOME/tools/<partition>.d/ (made on first
use) with an environment of PATH=/usr/local/bin:/usr/bin:/bin only (a server
also gets HOME=<partition>.d/<server>.home/; its error output goes to
<partition>.d/<server>.stderr). A server is started at its first call and
kept; it is started again at the next call after it exited, timed out (its
process group is killed) or broke the protocol.

A partition need not be registered in this RVM_HOME to have tools:
tenants may be set up in any order (a warning says so).

Exit codes: 0 done; 2 refused (a bad name, value or file; nothing written);
1 the machine failed (I/O).";

/// The kinds of tool `tool add` registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// An MCP server over stdio.
    Mcp,
}

#[derive(Subcommand, Debug)]
pub enum ToolCmd {
    /// Register an MCP server (stdio) whose tools the partition's agents
    /// may call as mcp__<server>__<tool>.
    #[command(long_about = ADD_LONG)]
    Add {
        /// The partition (registered in this RVM_HOME, or not yet).
        partition: String,
        /// What is registered: `mcp`, an MCP server over stdio.
        #[arg(value_enum, value_name = "KIND")]
        kind: Kind,
        /// The server's name: what follows mcp__ in its tools' names
        /// (letters, digits, - and _, no __).
        server: String,
        /// Seconds one call may take, the server's start included (default
        /// 30; decimals allowed, at most 570).
        #[arg(long, value_name = "SECS", value_parser = registry::parse_secs)]
        timeout: Option<u64>,
        /// The program and its arguments, after `--` (run as they are, no
        /// shell).
        #[arg(last = true, required = true, value_name = "ARGV")]
        argv: Vec<String>,
    },
    /// Set how the partition's Bash commands run: the folder, the timeout,
    /// the output kept, the environment. Options not given keep their
    /// value.
    #[command(long_about = SET_LONG)]
    Set {
        /// The partition (registered in this RVM_HOME, or not yet).
        partition: String,
        /// Run commands in this existing folder (default: the partition's
        /// $RVM_HOME/tools/<partition>.d/).
        #[arg(long, value_name = "DIR")]
        cwd: Option<std::path::PathBuf>,
        /// Seconds a command may run before its process group is killed
        /// (default 30; decimals allowed, at most 570).
        #[arg(long, value_name = "SECS", value_parser = registry::parse_secs)]
        timeout: Option<u64>,
        /// Bytes of output kept, standard output and error together
        /// (default 8192, at most 1048576); the answer is cut further to
        /// fit what the agent can take.
        #[arg(long, value_name = "BYTES", value_parser = registry::parse_output_cap)]
        output_cap: Option<usize>,
        /// An environment variable commands get (repeatable; the ones given
        /// replace the whole list; PATH=... replaces the default PATH).
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = registry::parse_env)]
        env: Vec<(String, String)>,
        /// Start from the defaults (folder, 30 s, 8192 bytes, no variables)
        /// instead of the current policy.
        #[arg(long)]
        reset: bool,
    },
    /// List the partitions' tool registrations: their MCP servers and Bash
    /// policy (every partition with registrations when none is named).
    List {
        /// One partition (shown with the defaults when it has none).
        partition: Option<String>,
        /// JSON instead of lines: one object for a named partition, else
        /// an array of them.
        #[arg(long)]
        json: bool,
    },
    /// Forget an MCP server registered for a partition.
    Remove {
        /// The partition.
        partition: String,
        /// The server's name.
        server: String,
    },
}

const ADD_LONG: &str = "\
Register an MCP server whose tools the partition's agents may call as
mcp__<server>__<tool>, with the server's own tool names.

The server is a program speaking MCP over stdio (newline-delimited JSON-RPC
2.0). It is started, as the argument vector after `--` (no shell), at the
partition's first call of one of its tools, in
$RVM_HOME/tools/<partition>.d/ with PATH=/usr/local/bin:/usr/bin:/bin and
HOME=<partition>.d/<server>.home/ only; its error output goes to
<partition>.d/<server>.stderr. Each call may take --timeout seconds (its
start included): past it, the call answers TimedOut and the server's process
group is killed; it is started again at the next call, as after it exits.

Agents reach the server only through a claim of their capability table that
names its tools (`mcp__<server>__*`, `mcp__<server>__<tool>` or `*`); a note
says when the installed table has none. Adding a server under a name already
registered replaces it (a running one is started again at its next call).

Example: rvm-loader tool add demo-devops mcp demo-devops -- npx -y @acme/devops-mcp";

const SET_LONG: &str = "\
Set how the partition's Bash commands run.

A command line is split at whitespace (no quotes, no expansion, no shell) and
its first word is looked up on PATH; it runs in --cwd (default
$RVM_HOME/tools/<partition>.d/, made on first use) with PATH (default
/usr/local/bin:/usr/bin:/bin) and the --env variables only, no input, and at
most --timeout seconds: then its whole process group is killed and the call
answers TimedOut. When it exits, whatever it left running in its process
group is killed too. Its output is kept up to --output-cap bytes (standard
output and error share it), then cut further to fit the answer the agent can
take (`truncated` says so).

Options not given keep their current value (--reset starts from the
defaults); --env, when given, replaces every variable set before.";

/// A name given on the command line.
fn partition_arg(s: &str) -> Result<PartitionName> {
    Ok(crate::parse::names::partition_name(
        "<partition>",
        "value",
        s,
    )?)
}

fn server_arg(s: &str) -> Result<String> {
    registry::check_server_name(s).map_err(|why| {
        Error::from(Diagnostic::field(
            "<server>",
            "value",
            format!("{} is not an MCP server name: it {why}", quote(s)),
        ))
    })?;
    Ok(s.to_string())
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", ms as f64 / 1000.0)
    }
}

/// An argument vector as text (arguments with spaces or odd characters
/// quoted).
fn shown_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            {
                a.clone()
            } else {
                quote(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Warn when `name` is not a partition of this home.
fn warn_unknown(home: &Home, name: &PartitionName) -> Option<crate::home::PartitionRecord> {
    match home.load() {
        Ok(reg) => match reg.partitions.get(name) {
            Some(r) => Some(r.clone()),
            None => {
                eprintln!(
                    "warning: partition {name} is not registered in {} (yet): its tools serve it once it is",
                    home.root().display()
                );
                None
            }
        },
        Err(_) => None,
    }
}

/// Whether `program` can be found as servers look it up.
fn findable(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    registry::DEFAULT_PATH
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}

/// `tool add <partition> mcp <server> [--timeout SECS] -- <argv…>`.
pub fn add(
    home: &Home,
    partition: &str,
    server: &str,
    timeout_ms: Option<u64>,
    argv: &[String],
) -> Result<()> {
    let name = partition_arg(partition)?;
    let server = server_arg(server)?;
    let entry = McpServer {
        argv: argv.to_vec(),
        timeout_ms: timeout_ms.unwrap_or(registry::DEFAULT_TIMEOUT_MS),
    };
    let (old, file) = registry::update(home.root(), &name, |r| {
        Ok(r.mcp_servers.insert(server.clone(), entry.clone()))
    })?;
    let verb = match old {
        None => "registered",
        Some(o) if o == entry => "already registered (unchanged)",
        Some(_) => "replaced",
    };
    println!(
        "{name}: MCP server {server} {verb} (tools mcp__{server}__*): {}, timeout {}; in {}",
        shown_argv(&entry.argv),
        secs(entry.timeout_ms),
        file.display()
    );
    if let Some(program) = argv.first().filter(|p| !findable(p)) {
        eprintln!(
            "warning: {} is not found on {} (servers run with that PATH): the server cannot start until it is",
            quote(program),
            registry::DEFAULT_PATH
        );
    }
    if let Some(caps) = warn_unknown(home, &name).and_then(|r| r.caps) {
        let sample = format!("mcp__{server}__x");
        let prefix = format!("mcp__{server}__");
        let claimed = caps
            .tokens
            .iter()
            .filter_map(|t| t.resource.as_deref())
            .any(|r| {
                r.starts_with(&prefix)
                    || rvm_cap::claim::parse(r).is_ok_and(|c| c.allows(&sample, b"{}").is_ok())
            });
        if !claimed {
            eprintln!(
                "note: no claim of {name}'s installed capability table names mcp__{server}__ tools: its agents cannot call them until one does (e.g. \"mcp__{server}__*\")"
            );
        }
    }
    Ok(())
}

/// What `tool set` changes.
#[derive(Debug, Default)]
pub struct SetArgs {
    pub cwd: Option<std::path::PathBuf>,
    pub timeout_ms: Option<u64>,
    pub output_cap: Option<usize>,
    pub env: Vec<(String, String)>,
    pub reset: bool,
}

/// `tool set <partition> [--cwd DIR] [--timeout SECS] [--output-cap BYTES]
/// [--env NAME=VALUE]… [--reset]`.
pub fn set(home: &Home, partition: &str, args: &SetArgs) -> Result<()> {
    let name = partition_arg(partition)?;
    if args.cwd.is_none()
        && args.timeout_ms.is_none()
        && args.output_cap.is_none()
        && args.env.is_empty()
        && !args.reset
    {
        return Err(Error::refused(
            "tool set",
            "nothing to set: give --cwd, --timeout, --output-cap, --env or --reset",
        ));
    }
    let cwd = match &args.cwd {
        None => None,
        Some(d) => {
            let shown = d.display().to_string();
            let abs = std::fs::canonicalize(d).map_err(|e| {
                Error::from(Diagnostic::field(
                    "--cwd",
                    "value",
                    format!("{}: {e}", quote(&shown)),
                ))
            })?;
            if !abs.is_dir() {
                return Err(Diagnostic::field(
                    "--cwd",
                    "value",
                    format!("{} is not a folder", quote(&shown)),
                )
                .into());
            }
            let text = abs.to_str().ok_or_else(|| {
                Error::from(Diagnostic::field(
                    "--cwd",
                    "value",
                    format!("{} is not UTF-8", quote(&shown)),
                ))
            })?;
            Some(text.to_string())
        }
    };
    if let Some((n, _)) = args
        .env
        .iter()
        .enumerate()
        .find_map(|(i, (k, _))| args.env[..i].iter().find(|(e, _)| e == k))
    {
        return Err(Diagnostic::field("--env", "value", format!("{n} is given twice")).into());
    }
    let (policy, file) = registry::update(home.root(), &name, |r| {
        if args.reset {
            r.bash = registry::BashPolicy::default();
        }
        if let Some(c) = &cwd {
            r.bash.cwd = Some(c.clone());
        }
        if let Some(t) = args.timeout_ms {
            r.bash.timeout_ms = t;
        }
        if let Some(c) = args.output_cap {
            r.bash.output_cap = c;
        }
        if !args.env.is_empty() {
            r.bash.env = args.env.clone();
        }
        Ok(r.bash.clone())
    })?;
    warn_unknown(home, &name);
    println!(
        "{name}: Bash {}; in {}",
        bash_text(home, &name, &policy),
        file.display()
    );
    Ok(())
}

fn bash_text(home: &Home, name: &PartitionName, b: &registry::BashPolicy) -> String {
    let work = registry::work_dir(home.root(), name);
    let mut text = format!(
        "runs in {}{}, timeout {}, output cap {} bytes, PATH={}",
        b.cwd_or(&work).display(),
        if b.cwd.is_none() {
            " (the default)"
        } else {
            ""
        },
        secs(b.timeout_ms),
        b.output_cap,
        b.path()
    );
    for (k, v) in b.env.iter().filter(|(k, _)| k != "PATH") {
        text.push_str(&format!(
            " {k}={}",
            if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                quote(v)
            } else {
                v.clone()
            }
        ));
    }
    text
}

fn list_json(
    home: &Home,
    name: &PartitionName,
    reg: &Registrations,
    has_file: bool,
) -> serde_json::Value {
    let work = registry::work_dir(home.root(), name);
    serde_json::json!({
        "partition": name.as_str(),
        "file": registry::file(home.root(), name).display().to_string(),
        "registered": has_file,
        "bash": {
            "cwd": reg.bash.cwd_or(&work).display().to_string(),
            "cwd_default": reg.bash.cwd.is_none(),
            "timeout_ms": reg.bash.timeout_ms,
            "output_cap": reg.bash.output_cap,
            "path": reg.bash.path(),
            "env": reg.bash.env,
        },
        "mcp_servers": reg.mcp_servers.iter().map(|(s, m)| (s.clone(), serde_json::json!({
            "tools": format!("mcp__{s}__*"),
            "argv": m.argv,
            "timeout_ms": m.timeout_ms,
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

fn list_text(home: &Home, name: &PartitionName, reg: &Registrations, has_file: bool) -> String {
    let mut out = if has_file {
        format!("{name} ({})\n", registry::file(home.root(), name).display())
    } else {
        format!("{name} (nothing registered: the defaults)\n")
    };
    out.push_str(&format!("  Bash {}\n", bash_text(home, name, &reg.bash)));
    if reg.mcp_servers.is_empty() {
        out.push_str("  no MCP servers\n");
    }
    for (s, m) in &reg.mcp_servers {
        out.push_str(&format!(
            "  mcp__{s}__*  {} (timeout {})\n",
            shown_argv(&m.argv),
            secs(m.timeout_ms)
        ));
    }
    out
}

/// `tool list [<partition>] [--json]`.
pub fn list(home: &Home, partition: Option<&str>, json: bool) -> Result<()> {
    if let Some(p) = partition {
        let name = partition_arg(p)?;
        let found = registry::load(home.root(), &name)?;
        let has_file = found.is_some();
        let reg = found.unwrap_or_default();
        if json {
            println!("{}", list_json(home, &name, &reg, has_file));
        } else {
            print!("{}", list_text(home, &name, &reg, has_file));
        }
        return Ok(());
    }
    let names = registry::partitions(home.root())?;
    let mut all = Vec::new();
    for name in &names {
        let reg = registry::load_or_default(home.root(), name)?;
        all.push((name, reg));
    }
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|(n, r)| list_json(home, n, r, true))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else if all.is_empty() {
        println!(
            "no tool registrations under {} (rvm-loader tool add <partition> mcp <server> -- <program> <arguments…>)",
            registry::dir(home.root()).display()
        );
    } else {
        for (n, r) in &all {
            print!("{}", list_text(home, n, r, true));
        }
    }
    Ok(())
}

/// `tool remove <partition> <server>`.
pub fn remove(home: &Home, partition: &str, server: &str) -> Result<()> {
    let name = partition_arg(partition)?;
    let file = registry::file(home.root(), &name);
    let shown = file.display().to_string();
    let absent = |reg: &Registrations| {
        let known: Vec<&str> = reg.mcp_servers.keys().map(String::as_str).collect();
        Error::from(Diagnostic::field(
            &shown,
            "mcp_servers",
            format!(
                "no server {} is registered for {name} ({})",
                quote(server),
                if known.is_empty() {
                    "none is".to_string()
                } else {
                    format!("registered: {}", known.join(", "))
                }
            ),
        ))
    };
    // Refused before anything is made when there is nothing to remove.
    match registry::load(home.root(), &name)? {
        Some(reg) if reg.mcp_servers.contains_key(server) => {}
        Some(reg) => return Err(absent(&reg)),
        None => return Err(absent(&Registrations::default())),
    }
    registry::update(home.root(), &name, |r| match r.mcp_servers.remove(server) {
        Some(_) => Ok(()),
        None => Err(absent(r)),
    })?;
    println!(
        "{name}: MCP server {server} removed (a running one stops at its next call); in {shown}"
    );
    Ok(())
}

/// Run a `tool` command.
pub fn run(home: &Home, cmd: ToolCmd) -> Result<()> {
    match cmd {
        ToolCmd::Add {
            partition,
            kind: Kind::Mcp,
            server,
            timeout,
            argv,
        } => add(home, &partition, &server, timeout, &argv),
        ToolCmd::Set {
            partition,
            cwd,
            timeout,
            output_cap,
            env,
            reset,
        } => set(
            home,
            &partition,
            &SetArgs {
                cwd,
                timeout_ms: timeout,
                output_cap,
                env,
                reset,
            },
        ),
        ToolCmd::List { partition, json } => list(home, partition.as_deref(), json),
        ToolCmd::Remove { partition, server } => remove(home, &partition, &server),
    }
}
