//! Line numbers of CSV records counted from their byte positions.
//!
//! The `csv` crate's own `Position::line()` does not count fully blank lines, so after a
//! blank line every reported line would be one short. [`LineCounting`] wraps the reader the
//! CSV parser reads from, notes where each line break (`\r`, `\n`) passes, and answers the
//! 1-based line a record starts on from its `position().byte()` — which points at the blank
//! lines the parser skipped before the record, so those are stepped over first. It keeps
//! only the breaks the parser has buffered ahead of the last record asked about, so memory
//! stays flat whatever the file's size.
//!
//! Owns no storage and no CSV parsing: the contact import, the API's DNC import and the
//! console's DNC upload use it to number the rows they report.

use std::collections::VecDeque;
use std::io::Read;

/// A reader that remembers where its newlines were; see the module doc.
#[derive(Debug)]
pub struct LineCounting<R> {
    inner: R,
    /// Bytes handed to the parser so far.
    offset: u64,
    /// Offsets of the line breaks handed out but not yet behind an asked-about position,
    /// each with whether it is a `\n`.
    pending: VecDeque<(u64, bool)>,
    /// Newlines before the last asked-about position.
    lines_before: u64,
}

impl<R: Read> LineCounting<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> LineCounting<R> {
        LineCounting {
            inner,
            offset: 0,
            pending: VecDeque::new(),
            lines_before: 0,
        }
    }

    /// The 1-based line of the first byte at or after `byte` that is not a line break: the
    /// line a record whose position is `byte` starts on. Positions must be asked in file
    /// order (as a parser hands out its records); an earlier one answers the line of the
    /// latest asked.
    pub fn line_at(&mut self, byte: u64) -> u64 {
        let mut at = byte;
        while let Some(&(offset, lf)) = self.pending.front() {
            if offset > at {
                break;
            }
            if offset == at {
                at += 1;
            }
            self.pending.pop_front();
            self.lines_before += u64::from(lf);
        }
        self.lines_before + 1
    }
}

impl<R: Read> Read for LineCounting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' || *b == b'\r' {
                self.pending
                    .push_back((self.offset + i as u64, *b == b'\n'));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record's line, through the `csv` parser, as the readers use it.
    fn lines_of(text: &str) -> Vec<(u64, String)> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .buffer_capacity(8)
            .from_reader(LineCounting::new(text.as_bytes()));
        reader.headers().unwrap();
        let mut out = Vec::new();
        let mut rec = csv::StringRecord::new();
        while reader.read_record(&mut rec).unwrap() {
            let byte = rec.position().unwrap().byte();
            out.push((reader.get_mut().line_at(byte), rec[0].to_string()));
        }
        out
    }

    #[test]
    fn records_after_blank_lines_and_quoted_newlines_get_their_real_line() {
        let text = "number,name\n+1a,x\n\n+1b,y\r\n\r\n\n+1c,\"two\nlines\"\n+1d,z\n";
        assert_eq!(
            lines_of(text),
            [
                (2, "+1a".to_string()),
                (4, "+1b".to_string()),
                (7, "+1c".to_string()),
                (9, "+1d".to_string()),
            ]
        );
    }
}
