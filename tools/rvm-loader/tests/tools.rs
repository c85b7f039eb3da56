//! Tool calls served on the host: MCP servers (the `rvm-mcp-demo` server)
//! started, called, timed out, restarted and stopped through
//! `ToolServer`, the folders commands and servers run in, and the
//! `rvm-loader tool` commands that register them.

mod common;

use common::*;
use rvm_abi::tool::AnswerStatus;
use rvm_loader::home::Home;
use rvm_loader::model::PartitionName;
use rvm_loader::tools::registry::{self, McpServer};
use rvm_loader::tools::serve::{self, Answer, ToolServer};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const DEMO: &str = env!("CARGO_BIN_EXE_rvm-mcp-demo");

fn tenant() -> PartitionName {
    PartitionName::new("tenant").unwrap()
}

/// Register server `name` of partition `tenant` as `argv` with a timeout.
fn register(home: &Path, name: &str, argv: &[&str], timeout_ms: u64) {
    registry::update(home, &tenant(), |r| {
        r.mcp_servers.insert(
            name.to_string(),
            McpServer {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                timeout_ms,
            },
        );
        Ok(())
    })
    .unwrap();
}

fn claims() -> Vec<String> {
    vec![
        "mcp__demo__*".into(),
        "mcp__other__*".into(),
        "mcp__broken__*".into(),
    ]
}

fn call(tools: &ToolServer, name: &str, request: Value) -> Answer {
    tools.call(
        "tenant",
        &claims(),
        name.as_bytes(),
        request.to_string().as_bytes(),
        4096,
    )
}

fn result(a: &Answer) -> Value {
    assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
    serde_json::from_slice(&a.response).unwrap()
}

fn text(a: &Answer) -> String {
    result(a)["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The server's pid a note names (`server demo (pid N...`).
fn pid(a: &Answer) -> u32 {
    let rest = &a.note[a.note.find("(pid ").unwrap_or_else(|| panic!("{}", a.note)) + 5..];
    rest[..rest.find([',', ')']).unwrap()].parse().unwrap()
}

/// Server `server`'s folder (its working directory).
fn server_dir(home: &Path, server: &str) -> std::path::PathBuf {
    registry::mcp_dirs(home, &tenant(), server).cwd
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether `pid` has ended but is not reaped yet.
fn zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // `pid (comm) S ...`: the state follows the last `)`.
    stat.rfind(')')
        .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'))
}

struct Fixture {
    _dir: TempDir,
    home: Home,
}

fn fixture(tag: &str) -> Fixture {
    let dir = TempDir::new(tag);
    let home = Home::new(dir.join("home"));
    Fixture { _dir: dir, home }
}

#[test]
fn an_mcp_server_s_tools_answer_through_the_tool_server() {
    let f = fixture("mcp-echo");
    register(f.home.root(), "demo", &[DEMO], 5000);
    let tools = ToolServer::new(&f.home);
    let a = call(
        &tools,
        "mcp__demo__echo",
        json!({"text": "hello; rm -rf / $(id)"}),
    );
    assert_eq!(text(&a), "hello; rm -rf / $(id)");
    assert!(a.note.contains("started for this call"), "{}", a.note);
    let first = pid(&a);
    let a = call(&tools, "mcp__demo__add", json!({"a": 2, "b": 40}));
    assert_eq!(text(&a), "42");
    assert_eq!(result(&a)["isError"], false);
    // The same process, kept between calls.
    assert_eq!(pid(&a), first);
    assert!(!a.note.contains("started"), "{}", a.note);
    // A JSON-RPC error (an unknown tool) is an error result.
    let a = call(&tools, "mcp__demo__nosuch", json!({}));
    assert_eq!(result(&a)["isError"], true);
    assert!(text(&a).contains("unknown tool: nosuch"), "{}", a.note);
    assert!(a.note.contains("error -32602"), "{}", a.note);
    // A result larger than the call can take: an error result saying so.
    let big = "x".repeat(3000);
    let a = tools.call(
        "tenant",
        &claims(),
        b"mcp__demo__echo",
        json!({"text": big}).to_string().as_bytes(),
        500,
    );
    assert!(a.response.len() <= 500);
    let t = text(&a);
    assert!(
        t.contains("bytes, more than the 500 bytes this call can take"),
        "{t}"
    );
    // Its folder, HOME and error output file.
    let d = registry::mcp_dirs(f.home.root(), &tenant(), "demo");
    assert!(d.cwd.is_dir() && d.home.is_dir() && d.stderr_log.is_file());
    tools.shutdown();
    assert!(!running(first), "shut down");
}

#[test]
fn a_call_past_its_timeout_kills_the_server_and_the_next_starts_it_again() {
    let f = fixture("mcp-timeout");
    register(f.home.root(), "demo", &[DEMO], 300);
    let tools = ToolServer::new(&f.home);
    let first = pid(&call(&tools, "mcp__demo__echo", json!({"text": "a"})));
    let t = Instant::now();
    let a = call(&tools, "mcp__demo__sleep", json!({"ms": 5000}));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(a.status, AnswerStatus::TimedOut, "{}", a.note);
    assert!(a.response.is_empty());
    assert!(
        a.note.contains("did not answer within 300 ms") && a.note.contains("killed"),
        "{}",
        a.note
    );
    assert!(!running(first), "the server was killed");
    let a = call(&tools, "mcp__demo__echo", json!({"text": "again"}));
    assert_eq!(text(&a), "again");
    assert!(
        a.note.contains("started for this call") && pid(&a) != first,
        "{}",
        a.note
    );
    // A sleep within the timeout answers.
    assert_eq!(
        text(&call(&tools, "mcp__demo__sleep", json!({"ms": 10}))),
        "slept 10 ms"
    );
}

#[test]
fn a_server_that_cannot_start_or_crashes_fails_and_is_tried_again_next_time() {
    let f = fixture("mcp-crash");
    register(
        f.home.root(),
        "demo",
        &["/nonexistent/rvm-no-such-server"],
        2000,
    );
    register(
        f.home.root(),
        "broken",
        &["sh", "-c", "echo started >> starts; echo oops >&2; exit 3"],
        2000,
    );
    let tools = ToolServer::new(&f.home);
    let a = call(&tools, "mcp__demo__echo", json!({"text": "a"}));
    assert_eq!(a.status, AnswerStatus::Failed);
    assert!(
        a.note.contains("could not be started")
            && a.note.contains("/nonexistent/rvm-no-such-server"),
        "{}",
        a.note
    );
    for n in 1..=2 {
        let a = call(&tools, "mcp__broken__echo", json!({"text": "a"}));
        assert_eq!(a.status, AnswerStatus::Failed, "{}", a.note);
        assert!(
            a.note.contains("exited with code 3") && a.note.contains("\"oops\""),
            "{}",
            a.note
        );
        assert!(!a.note.contains('\n'));
        let starts =
            std::fs::read_to_string(server_dir(f.home.root(), "broken").join("starts")).unwrap();
        assert_eq!(starts.lines().count(), n, "started again at each call");
    }
    let log =
        std::fs::read_to_string(registry::mcp_dirs(f.home.root(), &tenant(), "broken").stderr_log)
            .unwrap();
    assert_eq!(log, "oops\n");
    // Registered properly now: the next call starts it.
    register(f.home.root(), "demo", &[DEMO], 2000);
    assert_eq!(
        text(&call(&tools, "mcp__demo__echo", json!({"text": "ok"}))),
        "ok"
    );
}

#[test]
fn a_server_that_died_or_was_registered_anew_is_started_again() {
    let f = fixture("mcp-restart");
    register(f.home.root(), "demo", &[DEMO], 5000);
    let tools = ToolServer::new(&f.home);
    let first = pid(&call(&tools, "mcp__demo__echo", json!({"text": "a"})));
    // Killed behind the loader's back.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Dead (a zombie until the loader reaps it) before the next call.
    let t = Instant::now();
    while !zombie(first) {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(2));
    }
    let a = call(&tools, "mcp__demo__echo", json!({"text": "b"}));
    assert_eq!(text(&a), "b");
    let second = pid(&a);
    assert!(
        second != first && a.note.contains("started for this call"),
        "{}",
        a.note
    );
    // Registered with another argument vector: the old one stops.
    register(f.home.root(), "demo", &[DEMO, "--again"], 5000);
    let a = call(&tools, "mcp__demo__echo", json!({"text": "c"}));
    assert_eq!(text(&a), "c");
    assert!(pid(&a) != second && !running(second), "{}", a.note);
    // Removed: the next call fails and the process stops.
    let third = pid(&a);
    registry::update(f.home.root(), &tenant(), |r| {
        Ok(r.mcp_servers.remove("demo"))
    })
    .unwrap();
    let a = call(&tools, "mcp__demo__echo", json!({"text": "d"}));
    assert_eq!(a.status, AnswerStatus::Failed);
    assert!(
        a.note.contains("rvm-loader tool add tenant mcp demo -- "),
        "{}",
        a.note
    );
    assert!(!running(third));
}

#[test]
fn a_server_that_floods_a_line_breaks_the_protocol_and_is_killed() {
    let f = fixture("mcp-flood");
    register(
        f.home.root(),
        "broken",
        &[
            "sh",
            "-c",
            "echo $$ > pid; head -c 3000000 /dev/zero | tr '\\000' x; sleep 30",
        ],
        5000,
    );
    let tools = ToolServer::new(&f.home);
    let t = Instant::now();
    let a = call(&tools, "mcp__broken__echo", json!({"text": "a"}));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(a.status, AnswerStatus::Failed, "{}", a.note);
    assert!(
        a.note
            .contains("broke the protocol: it sent a line longer than 1048576 bytes"),
        "{}",
        a.note
    );
    let shell: u32 = std::fs::read_to_string(server_dir(f.home.root(), "broken").join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!running(shell), "its process group was killed");
}

#[test]
fn calls_to_different_servers_do_not_wait_for_each_other() {
    let f = fixture("mcp-parallel");
    register(f.home.root(), "demo", &[DEMO], 5000);
    register(f.home.root(), "other", &[DEMO], 5000);
    let tools = ToolServer::new(&f.home);
    // Both started first, so that only the calls are timed.
    call(&tools, "mcp__demo__echo", json!({"text": "a"}));
    call(&tools, "mcp__other__echo", json!({"text": "a"}));
    std::thread::scope(|s| {
        let slow = s.spawn(|| call(&tools, "mcp__demo__sleep", json!({"ms": 1500})));
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        assert_eq!(
            text(&call(&tools, "mcp__other__echo", json!({"text": "b"}))),
            "b"
        );
        assert!(
            t.elapsed() < Duration::from_millis(700),
            "{:?}",
            t.elapsed()
        );
        assert!(
            !slow.is_finished(),
            "the other server answered while this one slept"
        );
        // A second call to the busy server waits for it.
        let t = Instant::now();
        assert_eq!(
            text(&call(&tools, "mcp__demo__echo", json!({"text": "c"}))),
            "c"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(text(&slow.join().unwrap()), "slept 1500 ms");
    });
}

#[test]
fn the_tool_commands_register_list_and_remove() {
    let env = Env::new();
    let o = env.ok(&[
        "tool",
        "add",
        "tenant",
        "mcp",
        "demo",
        "--timeout",
        "2.5",
        "--",
        DEMO,
        "--flag",
    ]);
    assert!(
        o.stdout
            .contains("tenant: MCP server demo registered (tools mcp__demo__*)"),
        "{o:?}"
    );
    assert!(
        o.stderr.contains("partition tenant is not registered"),
        "{o:?}"
    );
    let file = env.home().join("tools/tenant.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        v["mcp_servers"]["demo"],
        json!({"argv": [DEMO, "--flag"], "timeout_ms": 2500})
    );
    // Registering a server does not serve commands.
    assert_eq!(v["bash"], Value::Null);
    let o = env.ok(&["tool", "list", "tenant"]);
    assert!(
        o.stdout
            .contains("Bash commands not served (rvm-loader tool set tenant serves them)"),
        "{o:?}"
    );
    let v: Value =
        serde_json::from_str(&env.ok(&["tool", "list", "tenant", "--json"]).stdout).unwrap();
    assert_eq!(
        (&v["bash_served"], &v["bash"]),
        (&json!(false), &Value::Null)
    );
    let o = env.ok(&[
        "tool",
        "set",
        "tenant",
        "--env",
        "LANG=C",
        "--output-cap",
        "100",
        "--timeout",
        "5",
    ]);
    assert!(
        o.stdout
            .contains("tenant: Bash commands now served: runs in ")
            && o.stdout.contains("timeout 5 s, output cap 100 bytes")
            && o.stdout.contains("LANG=C"),
        "{o:?}"
    );
    let o = env.ok(&["tool", "list", "tenant", "--json"]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["bash_served"], true);
    assert_eq!(
        v["bash"]["cwd"],
        env.home().join("tools/tenant.d/work").to_str().unwrap()
    );
    assert_eq!(v["bash"]["env"], json!([["LANG", "C"]]));
    assert_eq!(
        (
            v["bash"]["output_cap"].as_u64(),
            v["bash"]["timeout_ms"].as_u64()
        ),
        (Some(100), Some(5000))
    );
    assert_eq!(v["bash"]["cwd_default"], true);
    assert_eq!(v["mcp_servers"]["demo"]["tools"], "mcp__demo__*");
    let o = env.ok(&["tool", "list"]);
    assert!(
        o.stdout.contains("mcp__demo__*") && o.stdout.contains("(timeout 2.5 s)"),
        "{o:?}"
    );
    let o = env.ok(&["tool", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&o.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Refusals: exit 2, the home unchanged, the file, field or value named.
    let o = env.refused(&["tool", "remove", "tenant", "nope"]);
    assert!(o.stderr.contains("tenant.json: mcp_servers: no server \"nope\" is registered for tenant (registered: demo)"), "{o:?}");
    let o = env.refused(&["tool", "add", "tenant", "mcp", "a__b", "--", DEMO]);
    assert!(
        o.stderr
            .contains("is not an MCP server name: it holds `__`"),
        "{o:?}"
    );
    let o = env.refused(&["tool", "add", "../x", "mcp", "demo", "--", DEMO]);
    assert!(o.stderr.contains("is not a safe identifier"), "{o:?}");
    env.refused(&["tool", "add", "tenant", "mcp", "demo"]);
    env.refused(&[
        "tool",
        "add",
        "tenant",
        "mcp",
        "demo",
        "--timeout",
        "0",
        "--",
        DEMO,
    ]);
    env.refused(&["tool", "add", "tenant", "ssh", "demo", "--", DEMO]);
    env.refused(&["tool", "set", "tenant", "--off", "--timeout", "5"]);
    env.refused(&["tool", "set", "tenant", "--cwd", "/nonexistent/dir"]);
    // Not in the folder of the registrations and the servers' folders.
    let tools_dir = env.home().join("tools");
    let o = env.refused(&[
        "tool",
        "set",
        "tenant",
        "--cwd",
        tools_dir.to_str().unwrap(),
    ]);
    assert!(
        o.stderr
            .contains("which holds the registrations and the MCP servers' folders"),
        "{o:?}"
    );
    env.refused(&["tool", "set", "tenant", "--env", "1A=x"]);
    env.refused(&["tool", "set", "tenant", "--env", "A=1", "--env", "A=2"]);
    env.refused(&["tool", "remove", "other", "demo"]);
    // --reset and --cwd.
    let dir = TempDir::new("tool-cwd");
    let o = env.ok(&[
        "tool",
        "set",
        "tenant",
        "--reset",
        "--cwd",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        o.stdout.contains("timeout 30 s, output cap 8192 bytes") && !o.stdout.contains("LANG"),
        "{o:?}"
    );
    let o = env.ok(&["tool", "remove", "tenant", "demo"]);
    assert!(o.stdout.contains("MCP server demo removed"), "{o:?}");
    let o = env.ok(&["tool", "list", "tenant"]);
    assert!(
        o.stdout.contains("no MCP servers") && o.stdout.contains("Bash commands served: "),
        "{o:?}"
    );
    // --off: no longer served; `tool set` alone serves them again.
    let o = env.ok(&["tool", "set", "tenant", "--off"]);
    assert!(
        o.stdout.contains(
            "tenant: Bash commands no longer served (`rvm-loader tool set tenant` serves them again)"
        ),
        "{o:?}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["bash"], Value::Null);
    let o = env.ok(&["tool", "set", "tenant"]);
    assert!(
        o.stdout
            .contains("tenant: Bash commands now served: runs in ")
            && o.stdout.contains("(the default), timeout 30 s"),
        "{o:?}"
    );
    let o = env.ok(&["tool", "set", "tenant"]);
    assert!(o.stdout.contains("tenant: Bash commands served: "), "{o:?}");
    // A partition with nothing registered serves nothing, and --off makes
    // nothing for it.
    let o = env.ok(&["tool", "list", "fresh"]);
    assert!(
        o.stdout
            .contains("fresh (nothing registered: no tools served)")
            && o.stdout.contains("Bash commands not served"),
        "{o:?}"
    );
    let before = env.hash();
    let o = env.ok(&["tool", "set", "fresh", "--off"]);
    assert!(o.stdout.contains("nothing written"), "{o:?}");
    assert_eq!(env.hash(), before);
}

#[test]
fn commands_and_servers_run_in_folders_apart() {
    let f = fixture("apart");
    // A server that says where it runs and with what HOME, then exits.
    register(
        f.home.root(),
        "broken",
        &["sh", "-c", "pwd > where; echo \"$HOME\" >> where; exit 3"],
        2000,
    );
    registry::update(f.home.root(), &tenant(), |r| {
        r.bash = Some(registry::BashPolicy::default());
        Ok(())
    })
    .unwrap();
    let tools = ToolServer::new(&f.home);
    let a = call(&tools, "mcp__broken__x", json!({}));
    assert_eq!(a.status, AnswerStatus::Failed, "{}", a.note);
    let d = registry::mcp_dirs(f.home.root(), &tenant(), "broken");
    let canon = |p: &Path| p.canonicalize().unwrap().to_str().unwrap().to_string();
    let where_ = std::fs::read_to_string(d.cwd.join("where")).unwrap();
    assert_eq!(
        where_.lines().collect::<Vec<_>>(),
        [canon(&d.cwd), d.home.to_str().unwrap().to_string()]
    );
    // A command writes in its own folder, where no server runs.
    let c = vec!["Bash(touch*)".to_string(), "Bash(pwd)".to_string()];
    let a = tools.call("tenant", &c, b"Bash", b"touch package.json .npmrc", 4096);
    assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
    let work = registry::bash_dir(f.home.root(), &tenant());
    assert!(work.join("package.json").is_file() && work.join(".npmrc").is_file());
    let a = tools.call("tenant", &c, b"Bash", b"pwd", 4096);
    let pwd: Value = serde_json::from_slice(&a.response).unwrap();
    assert_eq!(pwd["stdout"].as_str().unwrap().trim_end(), canon(&work));
    for p in [&d.cwd, &d.home, &d.stderr_log] {
        assert!(!p.starts_with(&work), "{}", p.display());
        assert!(!p.join("package.json").exists() && !p.join(".npmrc").exists());
    }
    // A symbolic link planted at a server's HOME is refused, not followed.
    let elsewhere = f._dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir_all(&d.home).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &d.home).unwrap();
    let a = call(&tools, "mcp__broken__x", json!({}));
    assert_eq!(a.status, AnswerStatus::Failed);
    assert!(
        a.note.contains("symbolic link is not followed"),
        "{}",
        a.note
    );
    // And one at the commands' folder.
    std::fs::remove_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &work).unwrap();
    let a = tools.call("tenant", &c, b"Bash", b"touch planted", 4096);
    assert_eq!(a.status, AnswerStatus::Failed);
    assert!(
        a.note.contains("symbolic link is not followed"),
        "{}",
        a.note
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn an_mcp_call_whose_answer_could_not_be_sent_is_not_made() {
    let f = fixture("mcp-tiny");
    // Counts its starts, then serves as the demo server.
    register(
        f.home.root(),
        "demo",
        &["sh", "-c", "echo started >> starts; exec \"$0\"", DEMO],
        5000,
    );
    let tools = ToolServer::new(&f.home);
    let floor = serve::error_floor();
    let request = json!({"text": "hi"}).to_string();
    for capacity in [0, 10, floor - 1] {
        let a = tools.call(
            "tenant",
            &claims(),
            b"mcp__demo__echo",
            request.as_bytes(),
            capacity,
        );
        assert_eq!(a.status, AnswerStatus::Failed, "{}", a.note);
        assert!(
            a.note.contains(&format!(
                "not called: the agent's response buffer of {capacity} bytes cannot hold even an empty error result ({floor} bytes)"
            )),
            "{}",
            a.note
        );
    }
    assert!(
        !server_dir(f.home.root(), "demo").join("starts").exists(),
        "the server was not started"
    );
    // At the floor it is called (its answer, too big, an error result
    // saying so, or its own when it fits).
    let a = tools.call(
        "tenant",
        &claims(),
        b"mcp__demo__echo",
        request.as_bytes(),
        floor,
    );
    assert_eq!(a.status, AnswerStatus::Ran, "{}", a.note);
    assert!(a.response.len() <= floor);
    assert_eq!(
        std::fs::read_to_string(server_dir(f.home.root(), "demo").join("starts")).unwrap(),
        "started\n"
    );
}
