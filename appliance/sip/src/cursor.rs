//! The scanning primitives every parser in this crate uses: a forward-only cursor over a
//! string, and the character classes of RFC 3261's grammar. Nothing here allocates or
//! backtracks, which is what keeps parsing linear. In test builds every byte a primitive
//! examines is counted, so the tests can assert on work done instead of wall time.

#[cfg(test)]
thread_local! {
    static WORK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts `n` bytes of scanning work (test builds only).
#[inline]
pub(crate) fn tick(n: usize) {
    #[cfg(test)]
    WORK.with(|w| w.set(w.get() + n as u64));
    #[cfg(not(test))]
    let _ = n;
}

/// Bytes examined by the primitives on this thread since the last reset (test builds).
#[cfg(test)]
pub(crate) fn take_work() -> u64 {
    WORK.with(|w| w.replace(0))
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// RFC 3261 `word` characters (Call-ID).
pub(crate) fn is_word(b: u8) -> bool {
    is_token(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// RFC 3261 `unreserved` (alphanum / mark).
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A forward-only cursor over a `&str`. It only ever stops on ASCII bytes or at the end,
/// so every slice it hands out lies on character boundaries.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The text from `start` (an earlier [`Cursor::pos`]) to the cursor.
    pub(crate) fn since(&self, start: usize) -> &'a str {
        self.s.get(start..self.pos).unwrap_or("")
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        tick(1);
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the longest run of bytes matching `f`. `f` must treat every byte >= 0x80
    /// the same way, so the run never ends inside a UTF-8 sequence.
    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let bytes = self.s.as_bytes();
        while self.pos < bytes.len() && f(bytes[self.pos]) {
            self.pos += 1;
        }
        tick(self.pos - start + 1);
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// Skips spaces and tabs (values are unfolded before parsing, so this is SWS/LWS).
    pub(crate) fn skip_ws(&mut self) -> bool {
        !self.take_while(is_ws).is_empty()
    }

    /// A quoted string starting at the cursor (which must be on `"`); returns the
    /// unescaped content. `None` when it is unterminated.
    pub(crate) fn quoted_string(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = String::new();
        loop {
            let run = self.take_while(|b| b != b'"' && b != b'\\');
            out.push_str(run);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Some(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    // quoted-pair: the next character (any but CR/LF, which unfolding
                    // already turned into spaces) stands for itself.
                    let ch = self.rest().chars().next()?;
                    tick(ch.len_utf8());
                    self.pos += ch.len_utf8();
                    out.push(ch);
                }
                _ => return None,
            }
        }
    }
}

/// Writes `s` as a quoted string, escaping what qdtext may not hold.
pub(crate) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c if (c as u32) < 0x20 && c != '\t' || c == '\u{7f}' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses decimal digits into a u64 with overflow checking; `None` when empty, not all
/// digits, or too large.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}
