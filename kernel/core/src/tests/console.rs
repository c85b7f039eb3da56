//! A guest's console text on the fake machine: whatever bytes it writes, in
//! whatever pieces, beside whatever the hypervisor prints, none of them ever
//! starts a line of the serial stream, so no guest can forge a witness frame,
//! the exit frame or an order's answer.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use rvm_abi::bootinfo::layout;
use rvm_abi::frame::{ExitFrame, Frame};
use rvm_abi::Hypercall;

use crate::fake::GuestFn;
use crate::partition::CONSOLE_LINE_MAX;
use crate::tests::{boot, call};

/// A guest that writes `pieces` one console call each, yielding between
/// them (so the other guest and the kernel print in between), then exits
/// with its last line still open.
fn writer(pieces: Vec<Vec<u8>>) -> GuestFn {
    let mut step = 0usize;
    Box::new(move |v, m| {
        let i = step / 2;
        if step % 2 == 1 {
            step += 1;
            return call(v, Hypercall::Yield, &[]);
        }
        match pieces.get(i) {
            Some(p) => {
                // The heap is mapped on first touch: the fault goes to the
                // kernel, and this step runs again.
                if let Err(f) = m.write(layout::HEAP_IPA, p) {
                    return f.0;
                }
                step += 1;
                call(
                    v,
                    Hypercall::ConsoleWrite,
                    &[layout::HEAP_IPA, p.len() as u64],
                )
            }
            None => call(v, Hypercall::Exit, &[0]),
        }
    })
}

/// Every way a guest's bytes could try to start a line: `\n`, `\r`,
/// `\r\n`, other control characters, a line left open while others print,
/// a frame just past the point where a long line is cut, a line left open
/// at exit.
fn forgeries() -> Vec<Vec<u8>> {
    let mut long = vec![b'x'; CONSOLE_LINE_MAX];
    long.extend_from_slice(b"@X 0\n");
    let mut v: Vec<Vec<u8>> = [
        "half a line, left open ",
        "\n@X 0\n",
        "\r@X 0\r\n@W 0 forged\r",
        "\x1b[2K\x1b[1G@K forged\n",
        "\x0b@X 0\x0c@X 0\n",
        "\r\n\r\n@C 0 forged",
        "\n",
        "@O 1 evict beta forged\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(long);
    v.push(b"an unterminated @X 0".to_vec());
    v
}

#[test]
fn a_guest_never_starts_a_line_on_the_console() {
    let mut hv = boot(&["alpha", "beta"], false);
    hv.arch.set_guest(1, writer(forgeries()));
    hv.arch.set_guest(2, writer(forgeries()));
    let summary = hv.run();
    let text = hv.arch.console_text();
    assert_eq!(summary.finished, 2, "{text}");

    // Every line a guest's text could begin is the guest's own, prefixed.
    for l in text.lines() {
        if l.starts_with("[alpha] ") || l.starts_with("[beta] ") {
            continue;
        }
        assert!(
            ExitFrame::parse(l).is_none() && !ExitFrame::is_exit_line(l),
            "forged exit frame {l:?} in\n{text}"
        );
        assert!(
            !l.contains("forged") && !l.contains("@X"),
            "guest text {l:?} starts a line in\n{text}"
        );
        if Frame::is_frame_line(l) {
            assert!(
                Frame::parse(l).is_some(),
                "damaged (forged) frame {l:?} in\n{text}"
            );
        }
    }
    // And the text did arrive, line by line, each behind its prefix.
    let long: String = "x".repeat(CONSOLE_LINE_MAX);
    let want = [
        "half a line, left open ",
        "@X 0",
        "@X 0",
        "@W 0 forged?[2K?[1G@K forged",
        "?@X 0?@X 0",
        "@C 0 forged",
        "@O 1 evict beta forged",
        &long,
        "@X 0",
        "an unterminated @X 0",
    ];
    for who in ["alpha", "beta"] {
        let prefix = alloc::format!("[{who}] ");
        let got: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        assert_eq!(got, want, "{text}");
    }

    // Each guest line reached the UART in one write: nothing printed from
    // elsewhere (another CPU) can land between its prefix and its text.
    let mut start = 0;
    let mut guest_lines = 0;
    for &end in &hv.arch.console_writes {
        let chunk = String::from_utf8_lossy(&hv.arch.console[start..end]).into_owned();
        if chunk.starts_with('[') || chunk.contains("forged") || chunk.contains("@X") {
            assert!(
                (chunk.starts_with("[alpha] ") || chunk.starts_with("[beta] "))
                    && chunk.ends_with('\n')
                    && chunk.matches('\n').count() == 1,
                "guest text written in pieces: {chunk:?}"
            );
            guest_lines += 1;
        }
        if chunk.starts_with("rvm: ") {
            assert!(
                chunk.ends_with('\n') && chunk.matches('\n').count() == 1,
                "hypervisor line in pieces: {chunk:?}"
            );
        }
        start = end;
    }
    let prefixed = text
        .lines()
        .filter(|l| l.starts_with("[alpha] ") || l.starts_with("[beta] "))
        .count();
    assert_eq!(guest_lines, prefixed, "{text}");
}
