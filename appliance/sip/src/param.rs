//! `;name[=value]` parameters, as they follow URIs and header values. Values are kept as
//! written (a quoted-string keeps its quotes) so they serialize byte for byte.

use crate::cursor::{is_token, Cursor};
use std::fmt;

/// One parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name as written.
    pub name: String,
    /// The value as written (quoted strings keep their quotes); `None` for a flag.
    pub value: Option<String>,
}

impl Param {
    /// A `name=value` parameter.
    pub fn new(name: &str, value: Option<&str>) -> Param {
        Param {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }
    }
}

impl Param {
    /// Appends `name[=value]`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        if let Some(v) = &self.value {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// Appends `;name[=value]` for each parameter.
pub(crate) fn write_all(params: &[Param], out: &mut Vec<u8>) {
    for p in params {
        out.push(b';');
        p.write_to(out);
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}

/// Finds parameter `name` (case-insensitive): `Some(None)` for a flag.
pub(crate) fn find<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.as_deref())
}

/// Removes surrounding quotes and quoted-pair escapes from a parameter value.
pub fn unquote(v: &str) -> String {
    if v.starts_with('"') {
        let mut c = Cursor::new(v);
        if let Some(s) = c.quoted_string() {
            return s;
        }
    }
    v.to_owned()
}

fn is_value_char(b: u8) -> bool {
    is_token(b) || matches!(b, b':' | b'[' | b']')
}

/// Parses header parameters (`*( SEMI generic-param )`) at the cursor. Stops before
/// anything that is not `;` after optional whitespace.
pub(crate) fn parse_header_params(c: &mut Cursor<'_>) -> Result<Vec<Param>, &'static str> {
    let mut params = Vec::new();
    loop {
        let save = c.clone();
        c.skip_ws();
        if !c.eat(b';') {
            *c = save;
            return Ok(params);
        }
        c.skip_ws();
        let name = c.take_while(is_token);
        if name.is_empty() {
            return Err("empty parameter (`;` with no name)");
        }
        let save = c.clone();
        c.skip_ws();
        let value = if c.eat(b'=') {
            c.skip_ws();
            if c.peek() == Some(b'"') {
                let start = c.pos();
                c.quoted_string()
                    .ok_or("unterminated quoted string in parameter")?;
                Some(c.since(start).to_owned())
            } else {
                let v = c.take_while(is_value_char);
                if v.is_empty() {
                    return Err("parameter has `=` but no value");
                }
                Some(v.to_owned())
            }
        } else {
            *c = save;
            None
        };
        params.push(Param {
            name: name.to_owned(),
            value,
        });
    }
}
