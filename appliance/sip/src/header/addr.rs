//! Address headers: From, To, Contact, Route, Record-Route, P-Asserted-Identity. A value
//! is `[display-name] <URI>` or a bare URI, followed by header parameters. A bare URI ends
//! at the first `;`, so its parameters belong to the header (RFC 3261 §20), and it may not
//! carry `?`-headers.

use crate::cursor::{is_token, is_ws, write_quoted, Cursor};
use crate::param::{self, parse_header_params, Param};
use crate::uri::Uri;
use std::fmt;

/// `[display-name] <URI> *(;param)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted and unescaped.
    pub display_name: Option<String>,
    /// The address.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q`, `lr` on a Route URI lives in the URI).
    pub params: Vec<Param>,
}

impl NameAddr {
    /// An address with no display name and no parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Vec::new(),
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    /// Header parameter `name` (case-insensitive); `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param::find(&self.params, name)
    }

    /// Sets (or replaces) the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        self.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
        self.params.push(Param::new("tag", Some(tag)));
    }
}

impl NameAddr {
    /// Appends `["display name" ]<URI>*(;param)`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        if let Some(d) = &self.display_name {
            let mut q = String::new();
            write_quoted(&mut q, d);
            out.extend_from_slice(q.as_bytes());
            out.push(b' ');
        }
        out.push(b'<');
        self.uri.write_to(out);
        out.push(b'>');
        param::write_all(&self.params, out);
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}

/// A Contact value: an address, or `*` (REGISTER removing all bindings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `*`.
    Wildcard,
    /// An address.
    Address(NameAddr),
}

impl Contact {
    /// Appends `*` or the address.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Contact::Wildcard => out.push(b'*'),
            Contact::Address(a) => a.write_to(out),
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::wire::display(f, |out| self.write_to(out))
    }
}

/// Parses one address value at the cursor. `in_list` makes a bare URI stop at `,` too.
/// `require_brackets` is for Route/Record-Route, which only take `<URI>`.
pub(crate) fn parse_name_addr(
    c: &mut Cursor<'_>,
    in_list: bool,
    require_brackets: bool,
) -> Result<NameAddr, &'static str> {
    c.skip_ws();
    let mut display_name = None;
    let bracketed;
    if c.peek() == Some(b'"') {
        display_name = Some(
            c.quoted_string()
                .ok_or("unterminated quoted string in display name")?,
        );
        c.skip_ws();
        if c.peek() != Some(b'<') {
            return Err("quoted display name is not followed by `<URI>`");
        }
        bracketed = true;
    } else if c.peek() == Some(b'<') {
        bracketed = true;
    } else {
        // Either `token *(LWS token) <URI>` or a bare URI: read tokens and see what follows.
        let mut ahead = c.clone();
        let start = ahead.pos();
        let mut tokens = 0;
        let mut spaced = false;
        loop {
            if ahead.take_while(is_token).is_empty() {
                break;
            }
            tokens += 1;
            if ahead.skip_ws() {
                spaced = true;
            } else {
                break;
            }
        }
        match ahead.peek() {
            Some(b'<') if tokens > 0 => {
                let text = ahead.since(start).trim_end_matches([' ', '\t']);
                display_name = Some(text.to_owned());
                *c = ahead;
                bracketed = true;
            }
            Some(b':') if tokens == 1 && !spaced => bracketed = false,
            _ if tokens > 0 => {
                return Err("display name holds characters other than tokens and is not quoted")
            }
            _ => return Err("expected a display name, `<URI>` or a URI"),
        }
    }
    let uri = if bracketed {
        c.eat(b'<');
        if c.peek().is_some_and(is_ws) {
            return Err("whitespace after `<` inside the address");
        }
        let text = c.take_while(|b| b != b'>');
        if !c.eat(b'>') {
            return Err("`<URI>` is not closed by `>`");
        }
        if text.ends_with([' ', '\t']) {
            return Err("whitespace before `>` inside the address");
        }
        Uri::parse(text)?
    } else {
        if require_brackets {
            return Err("the URI must be enclosed in `<` and `>`");
        }
        let text = c.take_while(|b| !(b == b';' || is_ws(b) || (in_list && b == b',')));
        let uri = Uri::parse(text)?;
        if uri.as_sip().is_some_and(|u| u.headers.is_some()) {
            return Err("a URI with `?` headers must be enclosed in `<` and `>`");
        }
        uri
    };
    let params = parse_header_params(c)?;
    Ok(NameAddr {
        display_name,
        uri,
        params,
    })
}
