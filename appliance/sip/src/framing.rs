//! Stream framing for TCP and TLS: cuts a byte stream into messages by Content-Length and
//! recognises RFC 5626 CRLF keep-alives between them. Sans-IO: the driver pushes bytes as
//! they arrive and pulls items out. A framing error (no Content-Length, too large) means
//! the stream has lost sync: the driver must close the connection. A message that frames
//! but does not parse is reported and the stream carries on.

use crate::cursor::tick;
use crate::error::SipError;
use crate::message::SipMessage;
use crate::parse::parse_message;

/// What the stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// `\r\n\r\n`: the peer asks for a pong (answer `\r\n`).
    Ping,
    /// A lone `\r\n`: the answer to our ping.
    Pong,
    /// A message.
    Message(SipMessage),
    /// Framed bytes (by their Content-Length) that are not a message, and why: the stream
    /// goes on, and a request among them can still be answered (`respond_to_invalid`).
    Invalid {
        /// Why they did not parse.
        error: SipError,
        /// The framed bytes.
        bytes: Vec<u8>,
    },
}

/// Cuts a byte stream into SIP messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// How far the search for the end of the header section has got.
    scanned: usize,
    max_message: usize,
    broken: bool,
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            scanned: 0,
            max_message,
            broken: false,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if !self.broken {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held that do not yet form an item.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn fail(&mut self, e: SipError) -> Option<Result<StreamItem, SipError>> {
        self.broken = true;
        self.buf.clear();
        Some(Err(e))
    }

    /// The next complete item, `None` when more bytes are needed. `Some(Err(_))` is a
    /// framing error: the stream is unusable and yields nothing more.
    pub fn next_item(&mut self) -> Option<Result<StreamItem, SipError>> {
        if self.broken {
            return None;
        }
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            self.scanned = 0;
            return Some(Ok(StreamItem::Ping));
        }
        if self.buf.starts_with(b"\r\n") && self.buf.get(2) != Some(&b'\r') {
            self.buf.drain(..2);
            self.scanned = 0;
            return Some(Ok(StreamItem::Pong));
        }
        let from = self.scanned.saturating_sub(3);
        let found = self.buf[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| from + p + 4);
        tick(self.buf.len() - from);
        let head_end = match found {
            Some(h) => h,
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_message {
                    return self.fail(SipError::MessageTooLarge {
                        limit: self.max_message,
                    });
                }
                return None;
            }
        };
        let Some(len) = content_length(&self.buf[..head_end]) else {
            return self.fail(SipError::MissingContentLength);
        };
        let total = head_end.saturating_add(len);
        if total > self.max_message {
            return self.fail(SipError::MessageTooLarge {
                limit: self.max_message,
            });
        }
        if self.buf.len() < total {
            self.scanned = head_end - 4;
            return None;
        }
        let item = match parse_message(&self.buf[..total]) {
            Ok(m) => StreamItem::Message(m),
            Err(error) => StreamItem::Invalid {
                error,
                bytes: self.buf[..total].to_vec(),
            },
        };
        self.buf.drain(..total);
        self.scanned = 0;
        Some(Ok(item))
    }
}

/// Finds Content-Length (or `l`) in a header section, leniently; `None` when absent or
/// not a number.
fn content_length(head: &[u8]) -> Option<usize> {
    tick(head.len());
    head.split(|b| *b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            std::str::from_utf8(line[colon + 1..].trim_ascii())
                .ok()?
                .parse()
                .ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\n\
        From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n\
        Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";

    fn drain(f: &mut StreamFramer) -> Vec<Result<StreamItem, SipError>> {
        std::iter::from_fn(|| f.next_item()).collect()
    }

    #[test]
    fn messages_are_cut_by_content_length_with_keepalives_between() {
        let mut f = StreamFramer::new(64 * 1024);
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        f.push(&stream);
        let items = drain(&mut f);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], Ok(StreamItem::Ping));
        for it in &items[1..3] {
            let Ok(StreamItem::Message(m)) = it else {
                panic!("{it:?}")
            };
            assert_eq!(m.body(), b"abc");
        }
        assert_eq!(items[3], Ok(StreamItem::Pong));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn a_malformed_but_framed_message_is_reported_and_the_stream_goes_on() {
        let mut f = StreamFramer::new(64 * 1024);
        let bad = String::from_utf8_lossy(OPTIONS).replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS");
        f.push(bad.as_bytes());
        f.push(OPTIONS);
        let items = drain(&mut f);
        assert!(matches!(
            &items[0],
            Ok(StreamItem::Invalid {
                error: SipError::MalformedHeader {
                    header: "CSeq",
                    ..
                },
                bytes,
            }) if bytes == bad.as_bytes()
        ));
        assert!(matches!(&items[1], Ok(StreamItem::Message(_))));
    }

    #[test]
    fn a_message_without_content_length_breaks_the_stream() {
        let mut f = StreamFramer::new(64 * 1024);
        let no_len = String::from_utf8_lossy(OPTIONS).replace("Content-Length: 3\r\n", "");
        f.push(no_len.as_bytes());
        assert_eq!(f.next_item(), Some(Err(SipError::MissingContentLength)));
        f.push(OPTIONS);
        assert_eq!(f.next_item(), None, "a broken stream yields nothing more");
    }

    #[test]
    fn an_endless_header_section_is_refused_at_the_limit() {
        let mut f = StreamFramer::new(1024);
        f.push(b"OPTIONS sip:a@example.com SIP/2.0\r\n");
        for _ in 0..100 {
            f.push(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(
            f.next_item(),
            Some(Err(SipError::MessageTooLarge { limit: 1024 }))
        );
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_messages(cuts in proptest::collection::vec(0usize..400, 0..10)) {
            let mut stream = OPTIONS.to_vec();
            stream.extend_from_slice(OPTIONS);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % stream.len()).collect();
            cuts.sort_unstable();
            let mut f = StreamFramer::new(64 * 1024);
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                f.push(&stream[last..c]);
                last = c;
                got.extend(drain(&mut f));
            }
            prop_assert_eq!(got.len(), 2);
            for g in got {
                prop_assert!(matches!(g, Ok(StreamItem::Message(_))));
            }
        }
    }
}
