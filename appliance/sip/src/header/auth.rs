//! WWW-Authenticate, Proxy-Authenticate, Authorization and Proxy-Authorization values:
//! `scheme auth-param *(, auth-param)`. Digest is what we act on; other schemes are parsed
//! generically so a request carrying them can be answered with a challenge.

use crate::cursor::{is_token, Cursor};
use crate::param::{self, unquote, Param};
use std::fmt;

/// A challenge or a credentials value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthValue {
    /// The scheme (`Digest`), as written.
    pub scheme: String,
    /// The parameters, values as written (quoted strings keep their quotes).
    pub params: Vec<Param>,
}

impl AuthValue {
    /// Parameter `name`, unquoted.
    pub fn param(&self, name: &str) -> Option<String> {
        param::find(&self.params, name).flatten().map(unquote)
    }

    /// Whether the scheme is Digest.
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("Digest")
    }

    pub(crate) fn parse(s: &str) -> Result<AuthValue, &'static str> {
        let mut c = Cursor::new(s);
        c.skip_ws();
        let scheme = c.take_while(is_token);
        if scheme.is_empty() {
            return Err("no authentication scheme");
        }
        let mut params = Vec::new();
        c.skip_ws();
        while !c.at_end() {
            c.skip_ws();
            let name = c.take_while(is_token);
            if name.is_empty() {
                return Err("empty auth parameter");
            }
            c.skip_ws();
            if !c.eat(b'=') {
                return Err("auth parameter has no `=value`");
            }
            c.skip_ws();
            let value = if c.peek() == Some(b'"') {
                let start = c.pos();
                c.quoted_string()
                    .ok_or("unterminated quoted string in auth parameter")?;
                c.since(start)
            } else {
                c.take_while(|b| is_token(b) || b == b'/' || b == b':')
            };
            if value.is_empty() {
                return Err("auth parameter has no value");
            }
            params.push(Param::new(name, Some(value)));
            c.skip_ws();
            if !c.eat(b',') && !c.at_end() {
                return Err("auth parameters are not separated by `,`");
            }
        }
        Ok(AuthValue {
            scheme: scheme.to_owned(),
            params,
        })
    }
}

impl fmt::Display for AuthValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        for (i, p) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            p.fmt(f)?;
        }
        Ok(())
    }
}
