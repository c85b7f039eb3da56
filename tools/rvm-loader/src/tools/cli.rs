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

  Bash                    served only once the operator set the
                          partition's Bash policy (`tool set <partition>`;
                          `tool set <partition> --off` stops it): the
                          request is a command line, run as its words (no
                          shell: `;`, `|`, `$( )` are bytes of an
                          argument) under that policy; the answer is JSON:
                          exit_code, stdout, stderr, truncated, timed_out
  mcp__<server>__<tool>   the request is the tool's JSON arguments; the
                          answer is the result of `tools/call` on the MCP
                          server registered as <server> (`tool add`)

Registrations live in $RVM_HOME/tools/<partition>.json (written whole,
atomically; read at every call, so a change applies to the next call).
Commands run in $RVM_HOME/tools/<partition>.d/work/ unless `tool set --cwd`
names a folder; server <server> runs in <partition>.d/mcp/<server>/ with
HOME=<partition>.d/mcp/<server>/home/ and its error output in
<partition>.d/mcp/<server>/stderr.log: apart from the commands' folder, so
that what a command writes is not what a server loads. Each folder is made
on first use (0700; a symbolic link there is refused). Both run with an
environment of PATH=/usr/local/bin:/usr/bin:/bin only (plus a policy's
--env for commands). A server is started at its first call and kept; it is
started again at the next call after it exited, timed out (its process
group is killed) or broke the protocol.

A file written by an older loader (schema 1) is still read, but its Bash
section is ignored (`tool add` wrote one too): run `tool set <partition>`
again to serve commands.

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
    /// Serve the partition's Bash commands, and set how they run: the
    /// folder, the timeout, the output kept, the environment. Options not
    /// given keep their value; --off stops serving them.
    #[command(long_about = SET_LONG)]
    Set {
        /// The partition (registered in this RVM_HOME, or not yet).
        partition: String,
        /// Stop serving the partition's Bash commands (its policy is
        /// forgotten).
        #[arg(long, conflicts_with_all = ["cwd", "timeout", "output_cap", "env", "reset"])]
        off: bool,
        /// Run commands in this existing folder (default: the partition's
        /// $RVM_HOME/tools/<partition>.d/work/).
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
    /// List the partitions' tool registrations: their MCP servers, and
    /// whether and how their Bash commands are served (every partition
    /// with registrations when none is named).
    List {
        /// One partition (shown as serving nothing when it has none).
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
$RVM_HOME/tools/<partition>.d/mcp/<server>/ with
PATH=/usr/local/bin:/usr/bin:/bin and HOME=<partition>.d/mcp/<server>/home/
only; its error output goes to <partition>.d/mcp/<server>/stderr.log. None
of it is inside the folder the partition's commands run in. Each call may
take --timeout seconds (its
start included): past it, the call answers TimedOut and the server's process
group is killed; it is started again at the next call, as after it exits.

Agents reach the server only through a claim of their capability table that
names its tools (`mcp__<server>__*`, `mcp__<server>__<tool>` or `*`); a note
says when the installed table has none. Adding a server under a name already
registered replaces it (a running one is started again at its next call).
Registering a server does not serve the partition's Bash commands (that is
`tool set`).

Example: rvm-loader tool add demo-devops mcp demo-devops -- npx -y @acme/devops-mcp";

const SET_LONG: &str = "\
Serve the partition's Bash commands, and set how they run.

A partition's Bash calls are served only once this was run for it (with or
without options); until then, and after `tool set <partition> --off`, each
fails without running anything, the loader's log naming this command.

A command line is split at whitespace (no quotes, no expansion, no shell) and
its first word is looked up on PATH; it runs in --cwd (default
$RVM_HOME/tools/<partition>.d/work/, made on first use; a folder elsewhere in
$RVM_HOME/tools/ is refused) with PATH (default /usr/local/bin:/usr/bin:/bin)
and the --env variables only, no input, and at most --timeout seconds: then
its whole process group is killed and the call answers TimedOut. When it
exits, whatever it left running in its process group is killed too; a
process that left the group (setsid, a daemon) is not, and may outlive the
call. Its output is kept up to --output-cap bytes (standard output and error
share it), then cut further to fit the answer the agent can take
(`truncated` says so); a call whose agent cannot take even an empty answer
is not run.

Options not given keep their current value (--reset starts from the
defaults); --env, when given, replaces every variable set before. --off
stops serving commands and forgets the policy.";

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

/// The program of a server's argv as it is kept: a relative path made
/// absolute (servers run in their own folder, where it would name nothing),
/// and a bare name that the servers' PATH lacks but the caller's PATH has,
/// its absolute path there (what the operator meant by it).
fn resolve_program(program: &str) -> String {
    resolve_program_on(program, std::env::var_os("PATH"))
}

/// [`resolve_program`] with the caller's PATH given.
fn resolve_program_on(program: &str, caller_path: Option<std::ffi::OsString>) -> String {
    if program.contains('/') {
        let path = Path::new(program);
        if path.is_relative() {
            if let Ok(cwd) = std::env::current_dir() {
                return cwd.join(path).to_string_lossy().into_owned();
            }
        }
        return program.to_string();
    }
    if findable(program) {
        return program.to_string();
    }
    caller_path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_absolute() && p.is_file())
        .map_or_else(|| program.to_string(), |p| p.to_string_lossy().into_owned())
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
    let mut argv = argv.to_vec();
    if let Some(program) = argv.first_mut() {
        *program = resolve_program(program);
    }
    let argv = argv.as_slice();
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
    /// Stop serving commands (no other option with it).
    pub off: bool,
}

/// `--cwd DIR` as an absolute UTF-8 path: an existing folder, not inside
/// `$RVM_HOME/tools/` except under the partition's own commands' folder
/// (the registrations and the servers' folders are there).
fn cwd_arg(home: &Home, name: &PartitionName, d: &Path) -> Result<String> {
    let shown = d.display().to_string();
    let bad = |why: String| Error::from(Diagnostic::field("--cwd", "value", why));
    let abs = std::fs::canonicalize(d).map_err(|e| bad(format!("{}: {e}", quote(&shown))))?;
    if !abs.is_dir() {
        return Err(bad(format!("{} is not a folder", quote(&shown))));
    }
    let text = abs
        .to_str()
        .ok_or_else(|| bad(format!("{} is not UTF-8", quote(&shown))))?;
    let tools = registry::dir(home.root());
    if let Ok(tools) = std::fs::canonicalize(&tools) {
        let own = std::fs::canonicalize(registry::bash_dir(home.root(), name)).ok();
        if abs.starts_with(&tools) && !own.is_some_and(|o| abs.starts_with(o)) {
            return Err(bad(format!(
                "{} is inside {}, which holds the registrations and the MCP servers' folders: commands run in the partition's {} (the default) or outside it",
                quote(&shown),
                tools.display(),
                registry::bash_dir(home.root(), name).display()
            )));
        }
        if tools.starts_with(&abs) {
            eprintln!(
                "warning: {} holds {}: a command given a relative path can reach the registrations and the MCP servers' folders",
                abs.display(),
                tools.display()
            );
        }
    }
    Ok(text.to_string())
}

/// `tool set <partition> [--cwd DIR] [--timeout SECS] [--output-cap BYTES]
/// [--env NAME=VALUE]… [--reset]`, or `tool set <partition> --off`.
pub fn set(home: &Home, partition: &str, args: &SetArgs) -> Result<()> {
    let name = partition_arg(partition)?;
    if args.off {
        if args.cwd.is_some()
            || args.timeout_ms.is_some()
            || args.output_cap.is_some()
            || !args.env.is_empty()
            || args.reset
        {
            return Err(Error::refused(
                "tool set",
                "--off takes no other option: it stops serving commands",
            ));
        }
        return set_off(home, &name);
    }
    let cwd = match &args.cwd {
        None => None,
        Some(d) => Some(cwd_arg(home, &name, d)?),
    };
    if let Some((n, _)) = args
        .env
        .iter()
        .enumerate()
        .find_map(|(i, (k, _))| args.env[..i].iter().find(|(e, _)| e == k))
    {
        return Err(Diagnostic::field("--env", "value", format!("{n} is given twice")).into());
    }
    let ((was_served, policy), file) = registry::update(home.root(), &name, |r| {
        let was_served = r.bash.is_some();
        let b = r.bash.get_or_insert_with(registry::BashPolicy::default);
        if args.reset {
            *b = registry::BashPolicy::default();
        }
        if let Some(c) = &cwd {
            b.cwd = Some(c.clone());
        }
        if let Some(t) = args.timeout_ms {
            b.timeout_ms = t;
        }
        if let Some(c) = args.output_cap {
            b.output_cap = c;
        }
        if !args.env.is_empty() {
            b.env = args.env.clone();
        }
        Ok((was_served, b.clone()))
    })?;
    warn_unknown(home, &name);
    println!(
        "{name}: Bash commands {}: {}; in {}",
        if was_served { "served" } else { "now served" },
        bash_text(home, &name, &policy),
        file.display()
    );
    Ok(())
}

/// `tool set <partition> --off`.
fn set_off(home: &Home, name: &PartitionName) -> Result<()> {
    // Nothing is made for a partition with no registrations: it serves no
    // commands already.
    if registry::load(home.root(), name)?.is_none() {
        println!(
            "{name}: Bash commands are not served (nothing is registered for it); nothing written"
        );
        return Ok(());
    }
    let (was_served, file) = registry::update(home.root(), name, |r| Ok(r.bash.take().is_some()))?;
    let file = file.display();
    println!(
        "{name}: Bash commands {} (`rvm-loader tool set {name}` serves them again); in {file}",
        if was_served {
            "no longer served"
        } else {
            "were not served"
        }
    );
    Ok(())
}

fn bash_text(home: &Home, name: &PartitionName, b: &registry::BashPolicy) -> String {
    let work = registry::bash_dir(home.root(), name);
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
    let work = registry::bash_dir(home.root(), name);
    serde_json::json!({
        "partition": name.as_str(),
        "file": registry::file(home.root(), name).display().to_string(),
        "registered": has_file,
        "bash_served": reg.bash.is_some(),
        "bash": reg.bash.as_ref().map(|b| serde_json::json!({
            "cwd": b.cwd_or(&work).display().to_string(),
            "cwd_default": b.cwd.is_none(),
            "timeout_ms": b.timeout_ms,
            "output_cap": b.output_cap,
            "path": b.path(),
            "env": b.env,
        })),
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
        format!("{name} (nothing registered: no tools served)\n")
    };
    match &reg.bash {
        Some(b) => out.push_str(&format!(
            "  Bash commands served: {}\n",
            bash_text(home, name, b)
        )),
        None => out.push_str(&format!(
            "  Bash commands not served (rvm-loader tool set {name} serves them)\n"
        )),
    }
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
            off,
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
                off,
            },
        ),
        ToolCmd::List { partition, json } => list(home, partition.as_deref(), json),
        ToolCmd::Remove { partition, server } => remove(home, &partition, &server),
    }
}

#[cfg(test)]
mod tests {
    use super::{resolve_program, resolve_program_on};

    #[test]
    fn a_server_s_program_is_kept_as_an_absolute_path_where_a_relative_one_would_name_nothing() {
        // A relative path: made absolute from where the operator stands.
        let here = std::env::current_dir().unwrap();
        assert_eq!(resolve_program("target/x-server"), here.join("target/x-server").to_string_lossy());
        // An absolute path, and a name the servers' PATH has: as given.
        assert_eq!(resolve_program("/opt/x/server"), "/opt/x/server");
        assert_eq!(resolve_program("sh"), "sh");
        // A name only the caller's PATH has: its path there (this test's own
        // binary's folder holds the loader, on no default PATH).
        let me = std::env::current_exe().unwrap();
        let dir = me.parent().unwrap();
        let name = me.file_name().unwrap().to_str().unwrap();
        let path = std::env::join_paths(["/nonexistent".as_ref(), dir]).unwrap();
        assert_eq!(resolve_program_on(name, Some(path.clone())), me.to_string_lossy());
        assert_eq!(resolve_program_on("no-such-program-anywhere", Some(path)), "no-such-program-anywhere");
    }
}
