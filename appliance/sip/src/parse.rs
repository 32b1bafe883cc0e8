//! Parsing one SIP message from bytes: start line, header lines (folding, compact names,
//! typed values, unknown headers byte for byte), Content-Length and body. Also the lenient
//! scan that lets a server answer a request it could not parse with a 400 (RFC 3261
//! §8.2.6 copies Via, From, To, Call-ID and CSeq). Works on a complete message; stream
//! framing is `framing.rs`'s job.

use crate::cursor::{is_token, tick};
use crate::error::SipError;
use crate::header::{parse_typed, Header, Kind, OtherHeader};
use crate::message::{Headers, Method, Request, Response, SipMessage};
use crate::uri::Uri;

/// What a UDP datagram held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Only CRLFs: an RFC 5626 keep-alive (`\r\n\r\n` ping or `\r\n` pong).
    KeepAlive,
    /// A message.
    Message(SipMessage),
}

/// Parses a UDP datagram: a keep-alive, or one message. Bytes after the Content-Length
/// body are ignored (RFC 4475 `dblreq`); a body shorter than Content-Length is an error.
pub fn parse_datagram(buf: &[u8]) -> Result<Incoming, SipError> {
    if !buf.is_empty() && buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
        tick(buf.len());
        return Ok(Incoming::KeepAlive);
    }
    parse_message(buf).map(Incoming::Message)
}

/// One line of the header section: `start..end` excludes the line terminator.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
}

/// The header section's lines.
struct Section {
    /// Non-empty lines (start line first), without terminators.
    lines: Vec<Line>,
    /// Offset just past the empty line (the body's start), or the end of the buffer.
    body_start: usize,
    /// Whether an empty line ended the section (otherwise the input ran out).
    terminated: bool,
}

/// Splits `buf` into lines up to the first empty one. When the input ends first, the
/// lines read so far are still returned, so their own errors can be reported first.
fn header_lines(buf: &[u8], from: usize) -> Section {
    // Room for a usual message's lines, so the list is not regrown on every message.
    let mut lines = Vec::with_capacity(32);
    let mut pos = from;
    loop {
        let nl = match find_newline(&buf[pos..]) {
            Some(i) => pos + i,
            None => {
                tick(buf.len() - pos);
                if pos < buf.len() {
                    lines.push(Line {
                        start: pos,
                        end: buf.len(),
                    });
                }
                return Section {
                    lines,
                    body_start: buf.len(),
                    terminated: false,
                };
            }
        };
        tick(nl - pos + 1);
        let end = if nl > pos && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        if end == pos {
            return Section {
                lines,
                body_start: nl + 1,
                terminated: true,
            };
        }
        lines.push(Line { start: pos, end });
        pos = nl + 1;
    }
}

/// The index of the first `\n` in `bytes`, looked for eight bytes at a time (every
/// header section is cut into lines with it; a byte at a time was ~4 % of a bridged
/// call's instructions).
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A byte of `x` is zero where the chunk holds `\n`; the lowest flagged byte is
        // the first zero (borrows only flag bytes above a real zero).
        let x = u64::from_le_bytes(word) ^ NEWLINES;
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(offset + (zeros.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|b| *b == b'\n')
        .map(|i| offset + i)
}

fn trim_ws(buf: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && matches!(buf[s], b' ' | b'\t' | b'\r' | b'\n') {
        s += 1;
    }
    while e > s && matches!(buf[e - 1], b' ' | b'\t' | b'\r' | b'\n') {
        e -= 1;
    }
    tick(e - s);
    (s, e)
}

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

/// Whether `s` starts with `SIP/` in any case. Compared as bytes: slicing the `str` at 4
/// would panic when a multi-byte character straddles it (a datagram of death, found by
/// the `parse_datagram` fuzz target). When it does start so, 4 is a character boundary.
fn starts_with_sip_slash(s: &str) -> bool {
    s.as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

fn parse_version(v: &str) -> Result<(), SipError> {
    let ok_form = v.len() > 4
        && starts_with_sip_slash(v)
        && v[4..].split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|x| x.is_ascii_digit())
                && b.bytes().all(|x| x.is_ascii_digit())
        });
    if !ok_form {
        return Err(SipError::MalformedStartLine(
            "SIP version is not `SIP/major.minor`",
        ));
    }
    if &v[4..] != "2.0" {
        return Err(SipError::UnsupportedVersion(v.to_owned()));
    }
    Ok(())
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, SipError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| SipError::MalformedStartLine("start line is not UTF-8"))?;
    tick(line.len());
    if starts_with_sip_slash(line) {
        let (version, rest) = line.split_once(' ').ok_or(SipError::MalformedStartLine(
            "status line has no status code",
        ))?;
        parse_version(version)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
            .then(|| code.parse::<u16>().ok())
            .flatten()
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| SipError::BadStatusCode(code.chars().take(32).collect()))?;
        if reason.bytes().any(|b| b < 0x20 && b != b'\t') {
            return Err(SipError::MalformedStartLine(
                "reason phrase holds a control character",
            ));
        }
        return Ok(StartLine::Response(status, reason.to_owned()));
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v), None) => (m, u, v),
        _ => {
            return Err(SipError::MalformedStartLine(
                "request line is not exactly `Method SP Request-URI SP SIP/2.0` \
                 (extra, missing or trailing whitespace)",
            ))
        }
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(SipError::MalformedStartLine("method is not a token"));
    }
    if uri.is_empty() {
        return Err(SipError::MalformedStartLine(
            "request line holds two spaces in a row",
        ));
    }
    parse_version(version)?;
    let uri = Uri::parse(uri).map_err(SipError::BadRequestUri)?;
    if uri.as_sip().is_some_and(|u| u.headers.is_some()) {
        return Err(SipError::BadRequestUri(
            "a Request-URI may not carry `?` headers",
        ));
    }
    Ok(StartLine::Request(Method::from_token(method), uri))
}

/// A header line group (first line plus continuation lines) split into name and value.
struct RawHeader<'a> {
    name: &'a [u8],
    /// Value bytes as received: trimmed, folding CRLFs kept.
    value: &'a [u8],
}

/// Groups lines into header fields: a line starting with SP/HTAB continues the previous.
fn raw_headers<'a>(
    buf: &'a [u8],
    lines: &[Line],
    mut each: impl FnMut(RawHeader<'a>) -> Result<(), SipError>,
) -> Result<(), SipError> {
    let mut i = 0;
    while i < lines.len() {
        let first = lines[i];
        if matches!(buf[first.start], b' ' | b'\t') {
            return Err(SipError::MalformedHeaderLine(
                "a continuation line follows the start line",
            ));
        }
        let mut last = first;
        i += 1;
        while i < lines.len() && matches!(buf[lines[i].start], b' ' | b'\t') {
            last = lines[i];
            i += 1;
        }
        let colon = buf[first.start..first.end]
            .iter()
            .position(|b| *b == b':')
            .map(|p| first.start + p)
            .ok_or(SipError::MalformedHeaderLine("header line has no colon"))?;
        tick(colon - first.start);
        let (ns, ne) = trim_ws(buf, first.start, colon);
        let name = &buf[ns..ne];
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) || ns != first.start {
            return Err(SipError::MalformedHeaderLine(
                "header name is empty or not a token",
            ));
        }
        let (vs, ve) = trim_ws(buf, colon + 1, last.end);
        each(RawHeader {
            name,
            value: &buf[vs..ve],
        })?;
    }
    Ok(())
}

/// Replaces folding CR/LF with spaces (same length, linear).
fn unfold(v: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    tick(v.len());
    // `contains` on bytes searches a word at a time (a byte-at-a-time `any` over every
    // header value was ~1 % of a bridged call).
    if v.contains(&b'\r') || v.contains(&b'\n') {
        std::borrow::Cow::Owned(
            v.iter()
                .map(|b| if *b == b'\r' || *b == b'\n' { b' ' } else { *b })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

/// Parses exactly one message (datagram rules: the body runs to Content-Length, or to the
/// end of `buf` when there is none; trailing bytes beyond Content-Length are ignored).
pub fn parse_message(buf: &[u8]) -> Result<SipMessage, SipError> {
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\r' || buf[start] == b'\n') {
        start += 1;
    }
    tick(start);
    if start == buf.len() {
        return Err(SipError::MalformedStartLine("message is empty"));
    }
    let Section {
        lines,
        body_start,
        terminated,
    } = header_lines(buf, start);
    let start_line = parse_start_line(&buf[lines[0].start..lines[0].end])?;
    let mut headers = Vec::with_capacity(lines.len());
    let mut seen: u64 = 0;
    raw_headers(buf, &lines[1..], |raw| {
        let name = std::str::from_utf8(raw.name)
            .map_err(|_| SipError::MalformedHeaderLine("header name is not UTF-8"))?;
        match Kind::of(name) {
            Some(kind) => {
                if kind.single() {
                    let bit = 1u64 << (kind as u32);
                    if seen & bit != 0 {
                        return Err(SipError::DuplicateHeader(kind.name()));
                    }
                    seen |= bit;
                }
                let unfolded = unfold(raw.value);
                let text =
                    std::str::from_utf8(&unfolded).map_err(|_| SipError::MalformedHeader {
                        header: kind.name(),
                        reason: "value is not UTF-8",
                    })?;
                parse_typed(kind, text, &mut headers)
            }
            None => {
                headers.push(Header::Other(OtherHeader {
                    name: name.to_owned(),
                    value: raw.value.to_vec(),
                }));
                Ok(())
            }
        }
    })?;
    if !terminated {
        return Err(SipError::UnterminatedHeaders);
    }
    let headers = Headers(headers);
    let available = buf.len() - body_start;
    let body_len = match headers.0.iter().find_map(|h| match h {
        Header::ContentLength(n) => Some(*n),
        _ => None,
    }) {
        Some(n) if n > available => {
            return Err(SipError::BodyTruncated {
                declared: n,
                available,
            })
        }
        Some(n) => n,
        None => available,
    };
    let body = buf[body_start..body_start + body_len].to_vec();
    for (kind, present) in [
        (Kind::Via, headers.top_via().is_some()),
        (Kind::From, headers.from().is_some()),
        (Kind::To, headers.to().is_some()),
        (Kind::CallId, headers.call_id().is_some()),
        (Kind::CSeq, headers.cseq().is_some()),
    ] {
        if !present {
            return Err(SipError::MissingHeader(kind.name()));
        }
    }
    Ok(match start_line {
        StartLine::Request(method, uri) => {
            if let Some(cseq) = headers.cseq() {
                if cseq.method != method {
                    return Err(SipError::CSeqMethodMismatch {
                        request: method.to_string(),
                        cseq: cseq.method.to_string(),
                    });
                }
            }
            SipMessage::Request(Request {
                method,
                uri,
                headers,
                body,
            })
        }
        StartLine::Response(status, reason) => SipMessage::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    })
}

/// Builds the response a server sends for a request it could not accept because of `err`
/// (400 for a parse error, 505 for a version, ...), copying Via, From, To, Call-ID and
/// CSeq from the raw bytes leniently and adding `to_tag` to To. `None` when no response
/// is possible: the bytes are a response, have no Via to answer to, or the error has no
/// status.
pub fn respond_to_invalid(buf: &[u8], err: &SipError, to_tag: &str) -> Option<Vec<u8>> {
    let status = err.status()?;
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\r' || buf[start] == b'\n') {
        start += 1;
    }
    let rest = &buf[start..];
    if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let lines = header_lines(buf, start).lines;
    let mut copied: Vec<(Kind, Vec<u8>)> = Vec::new();
    let _ = raw_headers(buf, lines.get(1..).unwrap_or(&[]), |raw| {
        if let Some(kind) = std::str::from_utf8(raw.name).ok().and_then(Kind::of) {
            let wanted = matches!(
                kind,
                Kind::Via | Kind::From | Kind::To | Kind::CallId | Kind::CSeq
            );
            let first = kind == Kind::Via || copied.iter().all(|(k, _)| *k != kind);
            if wanted && first {
                copied.push((kind, unfold(raw.value).into_owned()));
            }
        }
        Ok(())
    });
    if !copied.iter().any(|(k, _)| *k == Kind::Via) {
        return None;
    }
    let mut out = format!("SIP/2.0 {status} {}\r\n", err.reason_phrase()).into_bytes();
    for kind in [Kind::Via, Kind::From, Kind::To, Kind::CallId, Kind::CSeq] {
        for (_, v) in copied.iter().filter(|(k, _)| *k == kind) {
            out.extend_from_slice(kind.name().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            if kind == Kind::To
                && !String::from_utf8_lossy(v)
                    .to_ascii_lowercase()
                    .contains("tag=")
            {
                out.extend_from_slice(b";tag=");
                out.extend_from_slice(to_tag.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::take_work;
    use crate::header::{Contact, Transport};
    use crate::uri::Host;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    const INVITE: &str = "INVITE sip:+4930123@[2001:db8::10]:5070;transport=udp SIP/2.0\r\n\
        v: SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKabc;rport;received=2001:db8::9:255\r\n\
        Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK1, SIP/2.0/TLS b.example.com:5061;branch=z9hG4bK2\r\n\
        f: \"Alice\" <sip:alice@example.com>;tag=a1\r\n\
        t: <sip:+4930123@example.com>\r\n\
        i: call-1@example.com\r\n\
        CSeq: 1 INVITE\r\n\
        m: <sip:alice@[2001:db8::9:1]:5060>;expires=60\r\n\
        Max-Forwards: 70\r\n\
        k: 100rel, timer\r\n\
        x: 1800;refresher=uac\r\n\
        P-Asserted-Identity: <sip:+4930999@example.com>, <tel:+4930999>\r\n\
        X-Custom:  keep   these\tbytes ;;, \r\n\
        c: application/sdp\r\n\
        l: 5\r\n\r\nv=0\r\n";

    fn parse(s: &[u8]) -> SipMessage {
        match parse_datagram(s) {
            Ok(Incoming::Message(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_multi_byte_character_across_the_fourth_byte_is_an_error_not_a_panic() {
        // Found by the `parse_datagram` and `respond_to_invalid` fuzz targets: the start
        // line (and the version of a request line) was sliced as a str at byte 4.
        for input in [
            &b"\x01\x01\x00\xc9\xaa"[..],
            &b"\r\x00F\r\xdc\x81\x00\x00"[..],
            "SIP\u{26a} 200 OK\r\n\r\n".as_bytes(),
            "INVITE sip:a@b SIP\u{26a}2.0\r\nVia: x\r\n\r\n".as_bytes(),
        ] {
            let err = parse_datagram(input).expect_err("not a SIP message");
            assert!(
                matches!(
                    err,
                    SipError::MalformedStartLine(_) | SipError::BadStatusCode(_)
                ),
                "{input:?}: {err:?}"
            );
            let _ = crate::respond_to_invalid(input, &err, "tag");
        }
    }

    #[test]
    fn compact_forms_ipv6_and_comma_joined_vias_parse_to_typed_values() {
        let m = parse(INVITE.as_bytes());
        let SipMessage::Request(r) = &m else { panic!() };
        let u = r.uri.as_sip().unwrap();
        assert_eq!(
            u.host,
            Host::V6("2001:db8::10".parse::<Ipv6Addr>().unwrap())
        );
        assert_eq!(u.port, Some(5070));
        let vias: Vec<_> = r.headers.vias().collect();
        assert_eq!(vias.len(), 3, "one line plus two comma-joined");
        assert_eq!(vias[0].rport(), Some(None));
        assert_eq!(vias[0].received(), Some("2001:db8::9:255"));
        assert_eq!(vias[2].transport, Transport::Tls);
        assert_eq!(vias[2].port, Some(5061));
        assert_eq!(r.headers.from().unwrap().tag(), Some("a1"));
        assert_eq!(r.headers.supported(), vec!["100rel", "timer"]);
        let Some(Contact::Address(c)) = r.headers.contacts().next() else {
            panic!()
        };
        assert_eq!(c.param("expires"), Some(Some("60")));
        assert_eq!(r.body, b"v=0\r\n");
        let pai = r
            .headers
            .0
            .iter()
            .filter(|h| matches!(h, Header::PAssertedIdentity(_)));
        assert_eq!(pai.count(), 2);
    }

    #[test]
    fn unknown_headers_serialize_byte_for_byte() {
        let m = parse(INVITE.as_bytes());
        let out = m.to_bytes();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains("\r\nX-Custom: keep   these\tbytes ;;,\r\n"),
            "{text}"
        );
        assert_eq!(parse(&out), m);
    }

    #[test]
    fn repeated_and_comma_joined_headers_are_the_same_list() {
        let joined = INVITE.replace(
            "Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK1, SIP/2.0/TLS",
            "Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK1\r\nVia: SIP/2.0/TLS",
        );
        assert_eq!(parse(joined.as_bytes()), parse(INVITE.as_bytes()));
    }

    #[test]
    fn crlf_datagrams_are_keepalives_and_leading_crlfs_are_skipped() {
        assert_eq!(parse_datagram(b"\r\n\r\n"), Ok(Incoming::KeepAlive));
        assert_eq!(parse_datagram(b"\r\n"), Ok(Incoming::KeepAlive));
        let mut with_crlf = b"\r\n\r\n".to_vec();
        with_crlf.extend_from_slice(INVITE.as_bytes());
        assert_eq!(parse(&with_crlf), parse(INVITE.as_bytes()));
    }

    #[test]
    fn a_bad_header_value_names_the_header_and_the_problem() {
        let bad = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 256");
        let e = parse_datagram(bad.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            SipError::MalformedHeader {
                header: "Max-Forwards",
                reason: "not a number in 0-255"
            }
        );
        assert_eq!(e.status(), Some(400));
        assert!(e
            .reason_phrase()
            .starts_with("Bad Request (malformed Max-Forwards"));
        let resp = respond_to_invalid(bad.as_bytes(), &e, "t9").unwrap();
        let SipMessage::Response(r) = parse(&resp) else {
            panic!()
        };
        assert_eq!(r.status, 400);
        assert_eq!(r.headers.to().unwrap().tag(), Some("t9"));
        assert_eq!(r.headers.vias().count(), 3);
        assert_eq!(r.headers.call_id().unwrap(), "call-1@example.com");
    }

    #[test]
    fn a_response_is_never_answered() {
        let e = SipError::MissingHeader("Call-ID");
        assert!(
            respond_to_invalid(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", &e, "x").is_none()
        );
    }

    fn long_line_message(value_len: usize) -> Vec<u8> {
        let mut m = INVITE.replace("l: 5\r\n", "").into_bytes();
        let at = m.len() - b"\r\nv=0\r\n".len();
        let mut line = b"X-Long: ".to_vec();
        line.extend(std::iter::repeat_n(b'a', value_len));
        line.extend_from_slice(b"\r\n");
        m.splice(at..at, line);
        m
    }

    fn many_headers_message(n: usize) -> Vec<u8> {
        let mut m = INVITE.replace("l: 5\r\n", "").into_bytes();
        let at = m.len() - b"\r\nv=0\r\n".len();
        let mut extra = Vec::new();
        for i in 0..n {
            if i % 2 == 0 {
                extra.extend_from_slice(format!("X-H{i}: value {i}\r\n").as_bytes());
            } else {
                extra.extend_from_slice(
                    format!("Contact: <sip:u{i}@192.0.2.1:5060>;q=0.5\r\n").as_bytes(),
                );
            }
        }
        m.splice(at..at, extra);
        m
    }

    /// Bytes of scanning work per input byte, and the message.
    fn work_for(input: &[u8]) -> (f64, SipMessage) {
        take_work();
        let m = parse(input);
        (take_work() as f64 / input.len() as f64, m)
    }

    #[test]
    fn a_64_kib_header_line_parses_in_linear_work() {
        let (w1, m) = work_for(&long_line_message(64 * 1024));
        assert_eq!(m.headers().get("X-Long").unwrap().len(), 64 * 1024);
        let (w2, _) = work_for(&long_line_message(128 * 1024));
        assert!(w1 < 8.0, "work per byte {w1}");
        assert!(
            w2 < w1 * 1.1,
            "doubling the line must not raise work per byte: {w1} -> {w2}"
        );
        // The same for a typed header: a 64 KiB comma-joined Contact line.
        let contacts: Vec<String> = (0..2000).map(|i| format!("<sip:u{i}@192.0.2.1>")).collect();
        let joined = contacts.join(", ");
        assert!(joined.len() > 40_000);
        let msg = INVITE.replace(
            "m: <sip:alice@[2001:db8::9:1]:5060>;expires=60",
            &format!("m: {joined}"),
        );
        let (w3, m) = work_for(msg.as_bytes());
        assert_eq!(m.headers().contacts().count(), 2000);
        assert!(w3 < 8.0, "work per byte {w3}");
    }

    #[test]
    fn ten_thousand_headers_parse_in_linear_work() {
        let (w1, m) = work_for(&many_headers_message(10_000));
        assert_eq!(m.headers().contacts().count(), 5_000 + 1);
        assert_eq!(m.headers().get("X-H9998").unwrap(), "value 9998");
        let (w2, _) = work_for(&many_headers_message(20_000));
        assert!(w1 < 40.0, "work per byte {w1}");
        assert!(
            w2 < w1 * 1.1,
            "doubling the header count must not raise work per byte: {w1} -> {w2}"
        );
    }

    #[test]
    fn a_typed_value_folded_with_lf_or_crlf_or_holding_a_bare_cr_is_unfolded() {
        for fold in ["\n ", "\r\n\t", "\r "] {
            let m = format!(
                "OPTIONS sip:b@example.com SIP/2.0\n\
                 Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKlf\n\
                 From: <sip:a@example.com>;tag=f1\n\
                 To: <sip:b@example.com>{fold};tag=t1\n\
                 Call-ID: lf@192.0.2.1\n\
                 CSeq: 1 OPTIONS\n\
                 Content-Length: 0\n\n"
            );
            let m = parse(m.as_bytes());
            assert_eq!(m.headers().to().unwrap().tag(), Some("t1"), "{fold:?}");
        }
    }

    #[test]
    fn a_newline_is_found_at_every_offset_and_among_every_byte_value() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b'\n';
                assert_eq!(find_newline(&bytes), Some(at), "len {len} at {at}");
                if at + 1 < len {
                    bytes[at + 1] = b'\n';
                    assert_eq!(find_newline(&bytes), Some(at), "two in a row");
                }
            }
            assert_eq!(find_newline(&vec![b'a'; len]), None);
        }
        // Bytes next to 0x0a (0x0b, 0x09, 0x8a) and every other value are not newlines.
        let all: Vec<u8> = (0..=255u8).filter(|b| *b != b'\n').collect();
        assert_eq!(find_newline(&all), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn newlines_are_found_where_a_byte_scan_finds_them(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..64)
        ) {
            prop_assert_eq!(find_newline(&bytes), bytes.iter().position(|b| *b == b'\n'));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_datagram(&bytes);
            let e = SipError::MalformedStartLine("x");
            let _ = respond_to_invalid(&bytes, &e, "t");
        }

        #[test]
        fn mutated_messages_never_panic_and_serialize_to_a_fixed_point(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8)
        ) {
            let mut bytes = INVITE.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len().max(1));
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i.min(bytes.len()), byte),
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => {}
                }
            }
            if let Ok(Incoming::Message(m)) = parse_datagram(&bytes) {
                // Serializing normalizes once (Content-Length is always written); after
                // that, parse and serialize are each other's inverse.
                let once = m.to_bytes();
                let Ok(Incoming::Message(again)) = parse_datagram(&once) else {
                    return Err(TestCaseError::fail("our own serialization does not parse"));
                };
                prop_assert_eq!(again.to_bytes(), once);
                let mut without_length = again.headers().0.clone();
                without_length.retain(|h| !matches!(h, Header::ContentLength(_)));
                let mut original = m.headers().0.clone();
                original.retain(|h| !matches!(h, Header::ContentLength(_)));
                prop_assert_eq!(without_length, original);
                prop_assert_eq!(again.body(), m.body());
            }
        }
    }
}
