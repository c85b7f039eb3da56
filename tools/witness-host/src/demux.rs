//! Splitting the console UART byte stream into console lines and witness
//! frames.
//!
//! The stream is fed in chunks of any size; lines may be split anywhere.
//! A line ends at `\n` (a `\r` before it is dropped). Console text always
//! starts with `[<partition>] ` or `rvm: ` (the hypervisor prefixes every
//! guest line, so no guest can start one), so a line that starts with `@`
//! is a witness frame: it decodes ([`StreamItem::Frame`]) or it is reported
//! as damaged ([`StreamItem::Damaged`]), never passed off as console text
//! and never silently dropped.

use rvm_abi::frame::{Frame, MAX_FRAME_LEN};

/// Console lines longer than this are passed on in pieces.
pub const MAX_CONSOLE_LINE: usize = 16 * 1024;
/// How much of a damaged line a report keeps.
pub const DAMAGED_EXCERPT: usize = 120;

/// One thing found in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// A console line, without its line ending (invalid UTF-8 replaced).
    Console(String),
    /// A witness frame that decoded.
    Frame(Frame),
    /// A frame line that did not decode.
    Damaged(DamagedLine),
}

/// A frame line that did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedLine {
    /// 1-based line number in the stream.
    pub line: u64,
    pub reason: DamageReason,
    /// The start of the line (at most [`DAMAGED_EXCERPT`] bytes, lossy UTF-8).
    pub excerpt: String,
}

/// Why a frame line did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageReason {
    /// Wrong tag, field count, number or hex digits.
    Malformed,
    /// Longer than any frame.
    TooLong,
    /// Not valid UTF-8.
    NotText,
    /// The stream ended before the line's newline.
    Unterminated,
}

impl std::fmt::Display for DamagedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.reason {
            DamageReason::Malformed => "does not decode",
            DamageReason::TooLong => "is longer than any frame",
            DamageReason::NotText => "is not text",
            DamageReason::Unterminated => "was cut off at the end of the stream",
        };
        write!(
            f,
            "serial line {}: witness frame {why}: {:?}",
            self.line, self.excerpt
        )
    }
}

/// The demultiplexer's state between chunks.
#[derive(Debug, Default)]
pub struct Demux {
    line: Vec<u8>,
    /// 1-based number of the line being assembled.
    line_no: u64,
    /// The current line started with `@` and has outgrown every frame.
    overlong_frame: bool,
}

impl Demux {
    /// A demultiplexer at the start of a stream.
    pub fn new() -> Self {
        Self {
            line: Vec::new(),
            line_no: 1,
            overlong_frame: false,
        }
    }

    /// Feed the next chunk; returns the items completed by it, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<StreamItem> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n');
            let seg_end = newline.unwrap_or(rest.len());
            let frame_line =
                self.overlong_frame || self.line.first().or(rest.first()) == Some(&b'@');
            // Console lines are held to MAX_CONSOLE_LINE bytes.
            let take = if frame_line {
                seg_end
            } else {
                (MAX_CONSOLE_LINE - self.line.len()).min(seg_end)
            };
            self.take(&rest[..take]);
            if take == seg_end && newline.is_some() {
                out.push(self.finish_line(false));
                rest = &rest[seg_end + 1..];
            } else {
                rest = &rest[take..];
                if !frame_line && self.line.len() >= MAX_CONSOLE_LINE {
                    let piece = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    out.push(StreamItem::Console(piece));
                }
            }
        }
        out
    }

    /// The stream ended: whatever is left of the last line.
    pub fn finish(&mut self) -> Option<StreamItem> {
        if self.line.is_empty() && !self.overlong_frame {
            return None;
        }
        Some(self.finish_line(true))
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.overlong_frame {
            return;
        }
        self.line.extend_from_slice(bytes);
        // A frame line plus a possible '\r'.
        if self.line.first() == Some(&b'@') && self.line.len() > MAX_FRAME_LEN + 1 {
            self.overlong_frame = true;
            self.line.truncate(DAMAGED_EXCERPT);
        }
    }

    fn finish_line(&mut self, at_end: bool) -> StreamItem {
        let mut bytes = std::mem::take(&mut self.line);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let line = self.line_no;
        self.line_no += 1;
        let overlong = std::mem::replace(&mut self.overlong_frame, false);
        if !overlong && bytes.first() != Some(&b'@') {
            return StreamItem::Console(String::from_utf8_lossy(&bytes).into_owned());
        }
        let damaged = |reason| {
            let cut = &bytes[..bytes.len().min(DAMAGED_EXCERPT)];
            StreamItem::Damaged(DamagedLine {
                line,
                reason,
                excerpt: String::from_utf8_lossy(cut).into_owned(),
            })
        };
        if overlong {
            return damaged(DamageReason::TooLong);
        }
        if at_end {
            return damaged(DamageReason::Unterminated);
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return damaged(DamageReason::NotText);
        };
        match Frame::parse(text) {
            Some(f) => StreamItem::Frame(f),
            None => damaged(DamageReason::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (Vec<u8>, Vec<StreamItem>) {
        let rec = Frame::Record {
            log: 2,
            bytes: [0xa5; 64],
        };
        let key = Frame::Key { public: [7; 32] };
        let cp = Frame::Checkpoint {
            log: 2,
            size: 1,
            head: [1; 32],
            root: [2; 32],
            signature: [3; 64],
        };
        let mut s = Vec::new();
        s.extend_from_slice(b"rvm: booting\r\n");
        s.extend_from_slice(key.encode().as_bytes());
        s.extend_from_slice(b"[agent-a] hello @W 2 not a frame\n");
        s.extend_from_slice(rec.encode().as_bytes());
        s.extend_from_slice(b"@W 2 00zz\n");
        s.extend_from_slice(cp.encode().as_bytes());
        s.extend_from_slice(b"[agent-a] \xff bye\n");
        let want = vec![
            StreamItem::Console("rvm: booting".into()),
            StreamItem::Frame(key),
            StreamItem::Console("[agent-a] hello @W 2 not a frame".into()),
            StreamItem::Frame(rec),
            StreamItem::Damaged(DamagedLine {
                line: 5,
                reason: DamageReason::Malformed,
                excerpt: "@W 2 00zz".into(),
            }),
            StreamItem::Frame(cp),
            StreamItem::Console("[agent-a] \u{fffd} bye".into()),
        ];
        (s, want)
    }

    #[test]
    fn any_chunking_gives_the_same_items() {
        let (s, want) = stream();
        for chunk in [1, 2, 3, 7, 64, 133, 1000] {
            let mut d = Demux::new();
            let mut got = Vec::new();
            for c in s.chunks(chunk) {
                got.extend(d.feed(c));
            }
            assert_eq!(d.finish(), None);
            assert_eq!(got, want, "chunk size {chunk}");
        }
    }

    #[test]
    fn cut_overlong_and_binary_frame_lines_are_reported() {
        let mut d = Demux::new();
        assert!(d.feed(b"@W 1 0011").is_empty());
        let end = d.finish().unwrap();
        assert!(matches!(
            end,
            StreamItem::Damaged(DamagedLine {
                reason: DamageReason::Unterminated,
                ..
            })
        ));

        let mut d = Demux::new();
        let mut long = vec![b'@'; 5000];
        long.push(b'\n');
        let items: Vec<_> = long.chunks(100).flat_map(|c| d.feed(c)).collect();
        assert_eq!(items.len(), 1);
        match &items[0] {
            StreamItem::Damaged(l) => {
                assert_eq!(l.reason, DamageReason::TooLong);
                assert_eq!(l.excerpt.len(), DAMAGED_EXCERPT);
            }
            other => panic!("{other:?}"),
        }
        let items = d.feed(b"@K \xff\xfe\nrvm: next\n");
        assert!(matches!(
            &items[0],
            StreamItem::Damaged(DamagedLine {
                reason: DamageReason::NotText,
                line: 2,
                ..
            })
        ));
        assert_eq!(items[1], StreamItem::Console("rvm: next".into()));
    }

    #[test]
    fn endless_console_lines_come_out_in_pieces() {
        let mut d = Demux::new();
        let items = d.feed(&vec![b'x'; MAX_CONSOLE_LINE * 2 + 5]);
        assert_eq!(items.len(), 2);
        assert_eq!(d.finish(), Some(StreamItem::Console("xxxxx".into())));
    }
}
