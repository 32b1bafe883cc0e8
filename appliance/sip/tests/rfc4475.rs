//! RFC 4475 torture tests, table-driven: every one of the 49 messages in
//! `testdata/rfc4475/` gets the outcome its RFC section prescribes. Valid messages parse
//! to the right values; invalid ones give the specific typed error and, where a response
//! is possible, the 400 (or the status the RFC names) with a reason phrase; application
//! layer messages parse and are then answered as §3.3 says.

use callgate_sip::admission::{admit_request, rejection, uac_accepts_response, UasCapabilities};
use callgate_sip::header::{Contact, Header, Transport};
use callgate_sip::uri::Host;
use callgate_sip::{parse_datagram, respond_to_invalid, Incoming, Method, SipError, SipMessage};
use std::path::PathBuf;

fn load(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/rfc4475")
        .join(format!("{name}.dat"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn message(name: &str) -> SipMessage {
    match parse_datagram(&load(name)) {
        Ok(Incoming::Message(m)) => m,
        other => panic!("{name}: expected a message, got {other:?}"),
    }
}

fn request(name: &str) -> callgate_sip::Request {
    match message(name) {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("{name}: expected a request"),
    }
}

/// What a valid message must parse to.
fn check_valid(name: &str) {
    let m = message(name);
    let h = m.headers();
    match name {
        "wsinv" => {
            let SipMessage::Request(r) = &m else { panic!() };
            assert_eq!(r.method, Method::Invite);
            assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
            let from = h.from().unwrap();
            assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
            assert_eq!(from.tag(), Some("98asjd8"));
            assert_eq!(h.max_forwards(), Some(&68));
            assert_eq!(h.cseq().unwrap().seq, 9);
            assert_eq!(h.cseq().unwrap().method, Method::Invite);
            let vias: Vec<_> = h.vias().collect();
            assert_eq!(vias.len(), 3);
            assert_eq!(vias[0].branch(), Some("390skdjuw"));
            assert_eq!(vias[1].transport, Transport::Tcp);
            assert_eq!(vias[1].host, Host::Name("spindle.example.com".into()));
            assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
            let Some(Contact::Address(c)) = h.contacts().next() else {
                panic!()
            };
            assert_eq!(c.display_name.as_deref(), Some("Quoted string \"\""));
            assert_eq!(c.param("newparam"), Some(Some("newvalue")));
            assert_eq!(c.param("secondparam"), Some(None));
            assert_eq!(c.param("q"), Some(Some("0.33")));
            let route = h.routes().next().unwrap().uri.as_sip().unwrap().clone();
            assert_eq!(route.param("lr"), Some(None));
            assert_eq!(route.param("unknownwith"), Some(Some("value")));
            // Unknown headers are kept byte for byte, folding included.
            assert_eq!(
                h.get("NewFangledHeader").unwrap(),
                "newfangled value\r\n continued newfangled value"
            );
            assert_eq!(h.get("UnknownHeaderWithUnusualValue").unwrap(), ";;,,;;,;");
            assert_eq!(h.get("s").unwrap(), "");
            assert_eq!(m.body().len(), 150);
        }
        "intmeth" => {
            let SipMessage::Request(r) = &m else { panic!() };
            assert_eq!(
                r.method.as_str(),
                "!interesting-Method0123456789_*+`.%indeed'~"
            );
            let u = r.uri.as_sip().unwrap();
            assert_eq!(
                u.user.as_deref(),
                Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
            );
            assert_eq!(
                u.password.as_deref(),
                Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
            );
            assert_eq!(
                h.to().unwrap().display_name.as_deref(),
                Some("BEL:\x07 NUL:\0 DEL:\x7f")
            );
            assert_eq!(
                h.from().unwrap().display_name.as_deref(),
                Some("token1~` token2'+_ token3*%!.-")
            );
            assert_eq!(h.from().unwrap().tag(), Some("_token~1'+`*%!-."));
            assert_eq!(
                h.call_id().unwrap(),
                "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
            );
            assert_eq!(h.cseq().unwrap().method, r.method);
            assert_eq!(
                h.get("extensionHeader-!.%*+_`'~").unwrap(),
                "\u{FEFF}\u{5927}\u{505C}\u{96FB}"
            );
        }
        "esc01" => {
            let SipMessage::Request(r) = &m else { panic!() };
            let u = r.uri.as_sip().unwrap();
            assert_eq!(u.user_unescaped().unwrap(), b"sips:user@example.com");
            assert_eq!(u.host, Host::Name("example.net".into()));
            assert_eq!(
                h.to()
                    .unwrap()
                    .uri
                    .as_sip()
                    .unwrap()
                    .user_unescaped()
                    .unwrap(),
                b"user"
            );
            let from_user = h.from().unwrap().uri.as_sip().unwrap().user_unescaped();
            assert_eq!(from_user.unwrap(), b"I have spaces");
            assert_eq!(h.call_id().unwrap(), "esc01.239409asdfakjkn23onasd0-3234");
        }
        "escnull" => {
            let users: Vec<Vec<u8>> = h
                .contacts()
                .map(|c| match c {
                    Contact::Address(a) => a.uri.as_sip().unwrap().user_unescaped().unwrap(),
                    Contact::Wildcard => panic!(),
                })
                .collect();
            assert_eq!(users, vec![vec![0u8], vec![0u8, 0u8]]);
            assert_eq!(
                h.to()
                    .unwrap()
                    .uri
                    .as_sip()
                    .unwrap()
                    .user_unescaped()
                    .unwrap(),
                b"null-\0-null"
            );
        }
        "esc02" => {
            let SipMessage::Request(r) = &m else { panic!() };
            // An escaped method is a different (unknown) method, not REGISTER.
            assert_eq!(r.method.as_str(), "RE%47IST%45R");
            assert_eq!(h.from().unwrap().display_name.as_deref(), Some("%Z%45"));
            assert_eq!(h.contacts().count(), 2);
            assert_eq!(
                h.get("C%6Fntact").unwrap(),
                "<sip:alias2@host2.example.com>"
            );
        }
        "lwsdisp" => {
            assert_eq!(h.from().unwrap().display_name.as_deref(), Some("caller"));
            assert_eq!(h.from().unwrap().tag(), Some("323"));
        }
        "longreq" => {
            assert_eq!(h.vias().count(), 34);
            let to = h.to().unwrap();
            assert!(to
                .display_name
                .as_deref()
                .unwrap()
                .starts_with("I have a user name"));
            assert_eq!(to.uri.as_sip().unwrap().port, Some(6000));
            assert_eq!(m.body().len(), 150);
        }
        "dblreq" => {
            let SipMessage::Request(r) = &m else { panic!() };
            assert_eq!(r.method, Method::Register);
            assert!(
                r.body.is_empty(),
                "the second request is not taken as a body"
            );
        }
        "semiuri" => {
            let SipMessage::Request(r) = &m else { panic!() };
            let u = r.uri.as_sip().unwrap();
            assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
            assert_eq!(u.host, Host::Name("example.com".into()));
            assert!(u.params.is_empty());
            assert_eq!(h.accept().flatten().count(), 6);
        }
        "transports" => {
            let t: Vec<Transport> = h.vias().map(|v| v.transport.clone()).collect();
            assert_eq!(
                t,
                vec![
                    Transport::Udp,
                    Transport::Sctp,
                    Transport::Tls,
                    Transport::Other("UNKNOWN".into()),
                    Transport::Tcp
                ]
            );
        }
        "mpart01" => {
            let ct = h.content_type().unwrap();
            assert!(ct.is("multipart", "mixed"));
            assert!(ct.params.iter().any(|p| p.name == "boundary"));
            assert_eq!(m.body().len(), 553);
        }
        "unreason" => {
            let SipMessage::Response(r) = &m else {
                panic!()
            };
            assert_eq!(r.status, 200);
            assert!(r.reason.starts_with("= 2**3 * 5**2 но сто"));
            assert!(r.reason.ends_with("простое"));
        }
        "noreason" => {
            let SipMessage::Response(r) = &m else {
                panic!()
            };
            assert_eq!(r.status, 100);
            assert_eq!(r.reason, "");
        }
        other => panic!("no expectations written for {other}"),
    }
}

/// The typed error each invalid message must give.
fn expected_error(name: &str, e: &SipError) -> bool {
    use SipError::*;
    match name {
        "badinv01" => matches!(e, MalformedHeader { header: "Via", .. }),
        "clerr" => matches!(e, BodyTruncated { declared: 9999, .. }),
        "ncl" => matches!(
            e,
            MalformedHeader {
                header: "Content-Length",
                ..
            }
        ),
        "scalar02" => matches!(e, MalformedHeader { header: "CSeq", .. }),
        "scalarlg" => matches!(e, MalformedHeader { header: "CSeq", .. }),
        "quotbal" => {
            matches!(e, MalformedHeader { header: "To", reason } if reason.contains("unterminated"))
        }
        "ltgtruri" => matches!(e, BadRequestUri(_)),
        "lwsruri" | "lwsstart" | "trws" => matches!(e, MalformedStartLine(_)),
        "escruri" => matches!(e, BadRequestUri(r) if r.contains("headers")),
        "baddate" => matches!(e, MalformedHeader { header: "Date", .. }),
        "regbadct" => {
            matches!(e, MalformedHeader { header: "Contact", reason } if reason.contains("angle") || reason.contains('<'))
        }
        "badaspec" => {
            matches!(e, MalformedHeader { header: "To", reason } if reason.contains("whitespace"))
        }
        "baddn" => {
            matches!(e, MalformedHeader { header: "From", reason } if reason.contains("display name"))
        }
        "badvers" => matches!(e, UnsupportedVersion(v) if v == "SIP/7.0"),
        "mismatch01" => {
            matches!(e, CSeqMethodMismatch { request, cseq } if request == "OPTIONS" && cseq == "INVITE")
        }
        "mismatch02" => matches!(e, CSeqMethodMismatch { request, .. } if request == "NEWMETHOD"),
        "bigcode" => matches!(e, BadStatusCode(c) if c == "4294967301"),
        // §3.3 messages that the RFC wants refused as malformed.
        "insuf" => matches!(e, MissingHeader(_)),
        "multi01" => matches!(e, DuplicateHeader(_)),
        "mcl01" => matches!(e, DuplicateHeader("Content-Length")),
        _ => false,
    }
}

/// Invalid: parse fails with the expected error; a request is answered with `status`, a
/// response is dropped (`None`).
fn check_invalid(name: &str, status: Option<u16>) {
    let bytes = load(name);
    let err = match parse_datagram(&bytes) {
        Err(e) => e,
        Ok(m) => panic!("{name}: parsed but must be rejected: {m:?}"),
    };
    assert!(
        expected_error(name, &err),
        "{name}: unexpected error {err:?}"
    );
    let resp = respond_to_invalid(&bytes, &err, "srv1");
    match (status, resp) {
        (None, None) => {}
        (Some(s), Some(resp)) => {
            let text = String::from_utf8_lossy(&resp).into_owned();
            let status_line = text.lines().next().unwrap();
            let prefix = format!("SIP/2.0 {s} ");
            assert!(status_line.starts_with(&prefix), "{name}: {status_line}");
            assert!(
                status_line.len() > prefix.len() + 12,
                "{name}: the reason phrase names the problem: {status_line}"
            );
            // Via is copied as received (even when it is the malformed part), so the
            // answer reaches the sender and matches its transaction.
            let req_text = String::from_utf8_lossy(&bytes).into_owned();
            let req_via = req_text
                .lines()
                .find(|l| l.starts_with("Via") || l.starts_with("v:"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap();
            assert!(
                text.contains(&format!("\r\nVia: {req_via}\r\n")),
                "{name}: {text}"
            );
            assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{name}");
            if let Some(to) = text.lines().find(|l| l.starts_with("To: ")) {
                assert!(to.contains("tag="), "{name}: To tag added: {to}");
            }
            // The response parses, unless a header copied from the request is itself the
            // malformed part: then it fails on that header, never on our own lines.
            match parse_datagram(&resp) {
                Ok(Incoming::Message(SipMessage::Response(r))) => assert_eq!(r.status, s),
                Err(SipError::MalformedHeader { .. } | SipError::MissingHeader(_)) => {}
                other => panic!("{name}: our own response is broken: {other:?}\n{text}"),
            }
        }
        (want, got) => panic!(
            "{name}: expected response {want:?}, got {:?}",
            got.map(|g| String::from_utf8_lossy(&g).into_owned())
        ),
    }
}

/// §3.3 messages that parse: what the application layer answers (None = process it).
fn check_application(name: &str, expected: Option<u16>) {
    let m = message(name);
    match m {
        SipMessage::Request(r) => {
            let outcome = admit_request(&r, &UasCapabilities::default());
            match (expected, outcome) {
                (None, Ok(())) => {}
                (Some(s), Err(e)) => {
                    assert_eq!(e.status(), Some(s), "{name}: {e:?}");
                    let resp = rejection(&r, &e, "srv1").unwrap();
                    assert_eq!(resp.status, s);
                    let bytes = resp.to_bytes();
                    assert!(parse_datagram(&bytes).is_ok(), "{name}: response parses");
                    if s == 420 {
                        assert!(resp.headers.0.iter().any(|h| matches!(h,
                            Header::Unsupported(t) if t == &["nothingSupportsThis", "nothingSupportsThisEither"])));
                    }
                    if s == 415 {
                        assert!(resp.headers.accept().next().is_some());
                    }
                }
                (want, got) => panic!("{name}: expected {want:?}, got {got:?}"),
            }
        }
        SipMessage::Response(r) => {
            // bcast: a UAC discards a response with more than one Via.
            assert_eq!(expected, None);
            assert!(!uac_accepts_response(&r), "{name}: must be discarded");
        }
    }
}

#[test]
fn every_rfc4475_message_gets_the_outcome_its_section_prescribes() {
    // 3.1.1: valid, must parse to the right values.
    let valid = [
        "wsinv",
        "intmeth",
        "esc01",
        "escnull",
        "esc02",
        "lwsdisp",
        "longreq",
        "dblreq",
        "semiuri",
        "transports",
        "mpart01",
        "unreason",
        "noreason",
    ];
    // 3.1.2: invalid. Requests are answered 400 (505 for the version), responses dropped.
    let invalid: [(&str, Option<u16>); 19] = [
        ("badinv01", Some(400)),
        ("clerr", Some(400)),
        ("ncl", Some(400)),
        ("scalar02", Some(400)),
        ("scalarlg", None),
        ("quotbal", Some(400)),
        ("ltgtruri", Some(400)),
        ("lwsruri", Some(400)),
        ("lwsstart", Some(400)),
        ("trws", Some(400)),
        ("escruri", Some(400)),
        ("baddate", Some(400)),
        ("regbadct", Some(400)),
        ("badaspec", Some(400)),
        ("baddn", Some(400)),
        ("badvers", Some(505)),
        ("mismatch01", Some(400)),
        ("mismatch02", Some(400)),
        ("bigcode", None),
    ];
    // 3.3 messages the RFC wants answered 400 as malformed.
    let app_invalid: [(&str, Option<u16>); 3] = [
        ("insuf", Some(400)),
        ("multi01", Some(400)),
        ("mcl01", Some(400)),
    ];
    // 3.2, 3.3, 3.4: parse, then act as the RFC says.
    let application: [(&str, Option<u16>); 14] = [
        ("badbranch", None),
        ("unkscm", Some(416)),
        ("novelsc", Some(416)),
        ("unksm2", None),
        ("bext01", Some(420)),
        ("invut", Some(415)),
        ("regaut01", Some(401)),
        ("bcast", None),
        ("zeromf", None),
        ("cparam01", None),
        ("cparam02", None),
        ("regescrt", None),
        ("sdp01", Some(406)),
        ("inv2543", None),
    ];
    let mut covered: Vec<&str> = valid.to_vec();
    covered.extend(invalid.iter().map(|(n, _)| *n));
    covered.extend(app_invalid.iter().map(|(n, _)| *n));
    covered.extend(application.iter().map(|(n, _)| *n));
    covered.sort_unstable();
    let mut on_disk: Vec<String> =
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/rfc4475"))
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().into_string().unwrap();
                n.strip_suffix(".dat").map(str::to_owned)
            })
            .collect();
    on_disk.sort_unstable();
    assert_eq!(covered.len(), 49);
    assert_eq!(covered, on_disk, "the table covers exactly the 49 files");

    for n in valid {
        check_valid(n);
    }
    for (n, s) in invalid.iter().chain(app_invalid.iter()) {
        check_invalid(n, *s);
    }
    for (n, s) in application {
        check_application(n, s);
    }
}

#[test]
fn application_layer_messages_parse_to_the_values_the_rfc_discusses() {
    // badbranch: the bare cookie is a branch that cannot identify a transaction.
    let r = request("badbranch");
    assert_eq!(r.headers.top_via().unwrap().branch(), Some("z9hG4bK"));
    assert!(!r.headers.top_via().unwrap().has_rfc3261_branch());
    // cparam01: without <>, the parameter belongs to the Contact header, not the URI.
    let r = request("cparam01");
    let Some(Contact::Address(c)) = r.headers.contacts().next() else {
        panic!()
    };
    assert_eq!(c.param("unknownparam"), Some(None));
    assert!(c.uri.as_sip().unwrap().params.is_empty());
    // cparam02: inside <>, it belongs to the URI.
    let r = request("cparam02");
    let Some(Contact::Address(c)) = r.headers.contacts().next() else {
        panic!()
    };
    assert!(c.params.is_empty());
    assert_eq!(c.uri.as_sip().unwrap().param("unknownparam"), Some(None));
    // regescrt: escaped headers inside <> are part of the Contact URI.
    let r = request("regescrt");
    let Some(Contact::Address(c)) = r.headers.contacts().next() else {
        panic!()
    };
    assert_eq!(
        c.uri.as_sip().unwrap().headers.as_deref(),
        Some("Route=%3Csip:sip.example.com%3E")
    );
    // unksm2: unknown schemes in To/From/Contact are kept opaque.
    let r = request("unksm2");
    assert_eq!(r.headers.to().unwrap().uri.to_string(), "isbn:2983792873");
    assert_eq!(r.headers.from().unwrap().uri.scheme(), "http");
    // novelsc: an atypical scheme in the Request-URI is parsed, not rejected by the parser.
    assert_eq!(request("novelsc").uri.scheme(), "soap.beep");
    // zeromf: Max-Forwards 0 parses as 0 (a UAS still answers it).
    assert_eq!(request("zeromf").headers.max_forwards(), Some(&0));
    // inv2543: no Max-Forwards, no branch, no Content-Length: body runs to the end.
    let r = request("inv2543");
    assert!(r.headers.max_forwards().is_none());
    assert!(r.headers.top_via().unwrap().branch().is_none());
    assert!(r.body.starts_with(b"v=0"));
    // regaut01: the unknown authorization scheme is parsed generically.
    let r = request("regaut01");
    let a = r.headers.authorization().next().unwrap();
    assert_eq!(a.scheme, "NoOneKnowsThisScheme");
    assert_eq!(a.param("opaque-data").as_deref(), Some("here"));
}

#[test]
fn valid_rfc4475_messages_survive_serialize_and_reparse() {
    for n in [
        "wsinv",
        "intmeth",
        "esc01",
        "escnull",
        "esc02",
        "lwsdisp",
        "longreq",
        "semiuri",
        "transports",
        "mpart01",
        "unreason",
        "noreason",
        "unksm2",
        "cparam01",
        "regescrt",
    ] {
        let m = message(n);
        let again = match parse_datagram(&m.to_bytes()) {
            Ok(Incoming::Message(x)) => x,
            other => panic!("{n}: reparse failed: {other:?}"),
        };
        assert_eq!(m, again, "{n}");
    }
}
