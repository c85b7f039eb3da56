//! Property tests: no parser panics on arbitrary bytes, or on the real
//! fixture files with random bytes changed, inserted or cut.

mod common;

use proptest::prelude::*;
use rvm_loader::model::PartitionName;
use rvm_loader::parse::{captable, guestref, manifest, script};
use rvm_loader::stream::{LineSplitter, Session};
use rvm_loader::witness_sink::{LogNames, NotFiled};
use rvm_loader::{source, wasm};

const NOW: u64 = 1_750_000_000;

/// Feed text to every text parser; none may panic.
fn all_parsers(bytes: Vec<u8>) {
    let Ok((text, _)) = source::text_from_bytes("f", bytes) else {
        return;
    };
    let _ = manifest::parse("f", &text);
    let _ = captable::parse("f", &text, NOW);
    let _ = guestref::parse("f", &text);
    let lint = script::lint("f", &text);
    // Every finding names the file.
    assert!(lint.findings.iter().all(|d| d.file == "f"));
}

fn fixture_texts() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for case in common::CASES {
        for e in std::fs::read_dir(common::fixture(case)).unwrap() {
            out.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    out
}

/// A fixture file with a few random edits.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let files = fixture_texts();
    (
        0..files.len(),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut f = files[i].clone();
            for (at, byte, op) in edits {
                let pos = usize::from(at) % (f.len() + 1);
                match op {
                    0 if pos < f.len() => f[pos] = byte,
                    1 => f.insert(pos, byte),
                    _ => f.truncate(pos),
                }
            }
            f
        })
}

/// Shell-ish text: the characters the lexer treats specially.
fn shellish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "'",
            "\"",
            "\\",
            "$",
            "(",
            ")",
            "{",
            "}",
            "`",
            "#",
            ";",
            "&",
            "|",
            "<",
            ">",
            "\n",
            " ",
            "a",
            "=",
            "echo",
            "if",
            "fi",
            "rvm-loader",
            "$((",
            "${",
            "<<",
        ]),
        0..60,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_parsers(bytes.clone());
        let _ = wasm::check(&bytes);
    }

    #[test]
    fn mutated_fixtures(bytes in mutated()) {
        all_parsers(bytes);
    }

    #[test]
    fn shell_text(text in shellish()) {
        let _ = script::lint("s.sh", &text);
    }

    #[test]
    fn wasm_with_a_valid_header(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend(body);
        let _ = wasm::check(&m);
    }

    #[test]
    fn mutated_wasm(edits in prop::collection::vec((any::<u16>(), any::<u8>()), 1..6)) {
        let mut m = common::modules::rvm_agent(Some(3));
        for (at, b) in edits {
            let i = usize::from(at) % m.len();
            m[i] = b;
        }
        let _ = wasm::check(&m);
    }

    #[test]
    fn serial_stream(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut sink = NotFiled::default();
        let names = LogNames(vec![(1, PartitionName::new("a").unwrap())]);
        let mut session = Session::new(names, &mut sink);
        let mut splitter = LineSplitter::default();
        let mut shown = 0usize;
        for c in &chunks {
            splitter.push(c, &mut |l| session.line(&l, &mut |_| shown += 1));
        }
        splitter.finish(&mut |l| session.line(&l, &mut |_| shown += 1));
    }
}
