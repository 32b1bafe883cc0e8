//! Asking the person at the box: "is the power LED lit?", "press the button now".

use std::io::{BufRead, Write};

/// Someone (or nobody) who can confirm what the suite cannot observe itself.
pub trait Operator {
    /// Asks a yes/no question; `None` when nobody is there to answer.
    fn confirm(&mut self, question: &str) -> Option<bool>;
    /// Tells the operator to do something now (press the button).
    fn instruct(&mut self, instruction: &str);
}

/// Nobody: unattended runs (CI, the factory line without a station).
#[derive(Debug, Default)]
pub struct Unattended;

impl Operator for Unattended {
    fn confirm(&mut self, _question: &str) -> Option<bool> {
        None
    }
    fn instruct(&mut self, _instruction: &str) {}
}

/// A person at a terminal answering `y`/`n`.
#[derive(Debug)]
pub struct Terminal<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Terminal<R, W> {
    /// A terminal operator over `input`/`output` (stdin/stdout in the binary).
    pub fn new(input: R, output: W) -> Self {
        Terminal { input, output }
    }
}

impl<R: BufRead, W: Write> Operator for Terminal<R, W> {
    fn confirm(&mut self, question: &str) -> Option<bool> {
        loop {
            let _ = write!(self.output, "{question} [y/n] ");
            let _ = self.output.flush();
            let mut line = String::new();
            match self.input.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => match line.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => return Some(true),
                    "n" | "no" => return Some(false),
                    _ => continue,
                },
            }
        }
    }

    fn instruct(&mut self, instruction: &str) {
        let _ = writeln!(self.output, "{instruction}");
        let _ = self.output.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_operator_asks_again_until_answered_and_eof_means_nobody() {
        let mut out = Vec::new();
        let mut op = Terminal::new(&b"maybe\nY\n"[..], &mut out);
        assert_eq!(op.confirm("lit?"), Some(true));
        assert_eq!(
            String::from_utf8(out)
                .unwrap()
                .matches("lit? [y/n]")
                .count(),
            2
        );
        let mut op = Terminal::new(&b""[..], Vec::new());
        assert_eq!(op.confirm("lit?"), None);
    }
}
