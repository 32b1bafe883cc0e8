//! The routing core driven packet by packet, without sockets.

use super::*;
use crate::enroll::pki::COORDINATOR_IDENTITY;
use rumqttc::{PubAck, Subscribe};

const COORD: ConnId = 1;
const BOX1: ConnId = 2;

fn router() -> Router {
    Router::new(
        Acl::new(["branch-1".to_string(), "branch-2".to_string()]),
        4,
        100,
    )
}

fn connect(id: &str, clean: bool) -> Connect {
    let mut c = Connect::new(id);
    c.clean_session = clean;
    c
}

fn drain(r: &mut Router) -> Vec<Output> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

fn publishes_to(out: &[Output], conn: ConnId) -> Vec<Publish> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(c, Packet::Publish(p)) if *c == conn => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn up(app: &str, payload: &'static [u8], pkid: u16) -> Packet {
    let mut p = Publish::new(format!("callgate/v1/{app}/up"), QoS::AtLeastOnce, payload);
    p.pkid = pkid;
    Packet::Publish(p)
}

fn coordinator_subscribed(r: &mut Router, clean: bool) {
    r.handle_connect(
        COORD,
        COORDINATOR_IDENTITY,
        connect("coordinator.callgate", clean),
    );
    r.handle_packet(
        COORD,
        Packet::Subscribe(Subscribe::new("callgate/v1/+/up", QoS::AtLeastOnce)),
    );
}

#[test]
fn an_unknown_or_revoked_subject_is_refused_not_authorized() {
    let mut r = router();
    r.handle_connect(9, "branch-9", connect("branch-9", true));
    let out = drain(&mut r);
    assert_eq!(
        out,
        vec![
            Output::Send(
                9,
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false))
            ),
            Output::Close(9)
        ]
    );
    r.handle_connect(BOX1, "branch-1", connect("branch-1", false));
    drain(&mut r);
    r.set_acl(Acl::new(["branch-2".to_string()]));
    assert_eq!(drain(&mut r), vec![Output::Close(BOX1)]);
    assert_eq!(r.connected(), 0);
}

#[test]
fn an_appliance_reaches_the_coordinator_and_cannot_publish_as_another() {
    let mut r = router();
    coordinator_subscribed(&mut r, true);
    r.handle_connect(BOX1, "branch-1", connect("branch-1", false));
    drain(&mut r);
    r.handle_packet(BOX1, up("branch-1", b"mine", 7));
    r.handle_packet(BOX1, up("branch-2", b"forged", 8));
    let out = drain(&mut r);
    let got: Vec<Bytes> = publishes_to(&out, COORD)
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(got, vec![Bytes::from_static(b"mine")]);
    // Both are acknowledged (MQTT 3.1.1 has no refusal), only one was routed.
    let acks = out
        .iter()
        .filter(|o| matches!(o, Output::Send(BOX1, Packet::PubAck(_))))
        .count();
    assert_eq!(acks, 2);
    assert_eq!(r.stats().denied_publishes, 1);
    // Nor subscribe to anyone's uplink.
    r.handle_packet(
        BOX1,
        Packet::Subscribe(Subscribe::new("callgate/v1/+/up", QoS::AtLeastOnce)),
    );
    let out = drain(&mut r);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Send(BOX1, Packet::SubAck(s)) if s.return_codes == vec![SubscribeReasonCode::Failure]
    )));
}

#[test]
fn a_persistent_session_gets_unacked_and_queued_messages_after_reconnecting() {
    let mut r = router();
    coordinator_subscribed(&mut r, false);
    r.handle_connect(BOX1, "branch-1", connect("branch-1", false));
    drain(&mut r);
    r.handle_packet(BOX1, up("branch-1", b"1", 1));
    r.handle_packet(BOX1, up("branch-1", b"2", 2));
    let first = publishes_to(&drain(&mut r), COORD);
    assert_eq!(first.len(), 2);
    r.handle_packet(COORD, Packet::PubAck(PubAck::new(first[0].pkid)));
    r.handle_closed(COORD);
    r.handle_packet(BOX1, up("branch-1", b"3", 3));
    drain(&mut r);
    // The coordinator comes back on a new connection with the same session.
    r.handle_connect(
        10,
        COORDINATOR_IDENTITY,
        connect("coordinator.callgate", false),
    );
    let out = drain(&mut r);
    assert!(matches!(
        &out[0],
        Output::Send(10, Packet::ConnAck(a)) if a.session_present
    ));
    let again: Vec<(Bytes, bool)> = publishes_to(&out, 10)
        .into_iter()
        .map(|p| (p.payload, p.dup))
        .collect();
    assert_eq!(
        again,
        vec![
            (Bytes::from_static(b"2"), true),
            (Bytes::from_static(b"3"), false)
        ]
    );
}

#[test]
fn a_clean_session_starts_empty_and_session_present_says_so() {
    let mut r = router();
    coordinator_subscribed(&mut r, false);
    r.handle_closed(COORD);
    drain(&mut r);
    r.handle_connect(
        11,
        COORDINATOR_IDENTITY,
        connect("coordinator.callgate", true),
    );
    let out = drain(&mut r);
    assert!(matches!(
        &out[0],
        Output::Send(11, Packet::ConnAck(a)) if !a.session_present
    ));
}

#[test]
fn the_will_is_published_and_retained_on_an_abrupt_close_but_not_after_disconnect() {
    let mut r = router();
    let mut c = connect("branch-1", false);
    c.last_will = Some(LastWill::new(
        "callgate/v1/branch-1/status",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    r.handle_connect(BOX1, "branch-1", c.clone());
    r.handle_closed(BOX1);
    r.handle_connect(
        COORD,
        COORDINATOR_IDENTITY,
        connect("coordinator.callgate", true),
    );
    r.handle_packet(
        COORD,
        Packet::Subscribe(Subscribe::new("callgate/v1/+/status", QoS::AtLeastOnce)),
    );
    let got = publishes_to(&drain(&mut r), COORD);
    assert_eq!(got.len(), 1, "the retained will reaches a later subscriber");
    assert_eq!(got[0].payload, Bytes::from_static(b"offline"));
    assert!(got[0].retain);

    r.handle_connect(BOX1, "branch-1", c);
    r.handle_packet(BOX1, Packet::Disconnect);
    r.handle_closed(BOX1);
    assert!(publishes_to(&drain(&mut r), COORD).is_empty());
}

#[test]
fn a_shared_subscription_gives_each_message_to_one_member() {
    let mut r = router();
    for (conn, id) in [(20, "replica-a"), (21, "replica-b")] {
        r.handle_connect(conn, COORDINATOR_IDENTITY, connect(id, true));
        r.handle_packet(
            conn,
            Packet::Subscribe(Subscribe::new(
                "$share/callgate/callgate/v1/+/up",
                QoS::AtLeastOnce,
            )),
        );
    }
    r.handle_connect(BOX1, "branch-1", connect("branch-1", true));
    drain(&mut r);
    for n in 0..4 {
        r.handle_packet(BOX1, up("branch-1", b"x", n + 1));
    }
    let out = drain(&mut r);
    let (a, b) = (publishes_to(&out, 20).len(), publishes_to(&out, 21).len());
    assert_eq!((a, b), (2, 2));
}

#[test]
fn the_in_flight_window_holds_the_rest_until_acks_arrive() {
    let mut r = router();
    coordinator_subscribed(&mut r, true);
    r.handle_connect(BOX1, "branch-1", connect("branch-1", true));
    drain(&mut r);
    for n in 0..6 {
        r.handle_packet(BOX1, up("branch-1", b"x", n + 1));
    }
    let sent = publishes_to(&drain(&mut r), COORD);
    assert_eq!(sent.len(), 4, "window of 4");
    r.handle_packet(COORD, Packet::PubAck(PubAck::new(sent[0].pkid)));
    assert_eq!(publishes_to(&drain(&mut r), COORD).len(), 1);
}

fn down(app: &str, pkid: u16) -> Packet {
    let mut p = Publish::new(
        format!("callgate/v1/{app}/down"),
        QoS::AtLeastOnce,
        &b"d"[..],
    );
    p.pkid = pkid;
    Packet::Publish(p)
}

#[test]
fn among_many_boxes_a_downlink_reaches_only_its_box_also_after_unsubscribe_and_clean_reconnects() {
    let names: Vec<String> = (0..200).map(|i| format!("b-{i}")).collect();
    let mut r = Router::new(Acl::new(names.iter().cloned()), 4, 100);
    r.handle_connect(COORD, COORDINATOR_IDENTITY, connect("c", true));
    for (i, name) in names.iter().enumerate() {
        let conn = 10 + i as ConnId;
        r.handle_connect(conn, name, connect(name, i % 2 == 0));
        let filter = format!("callgate/v1/{name}/down");
        r.handle_packet(
            conn,
            Packet::Subscribe(Subscribe::new(&filter, QoS::AtLeastOnce)),
        );
    }
    drain(&mut r);
    // Every box gets its own downlink and nobody else's.
    for (i, name) in names.iter().enumerate() {
        r.handle_packet(COORD, down(name, 1));
        let out = drain(&mut r);
        let to: Vec<ConnId> = out
            .iter()
            .filter_map(|o| match o {
                Output::Send(c, Packet::Publish(_)) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(to, vec![10 + i as ConnId], "downlink of {name}");
    }
    // b-1 unsubscribes: its downlink goes nowhere; b-3 keeps its own.
    r.handle_packet(
        11,
        Packet::Unsubscribe(rumqttc::Unsubscribe::new("callgate/v1/b-1/down")),
    );
    drain(&mut r);
    r.handle_packet(COORD, down("b-1", 2));
    assert!(publishes_to(&drain(&mut r), 11).is_empty());
    r.handle_packet(COORD, down("b-3", 2));
    assert_eq!(publishes_to(&drain(&mut r), 13).len(), 1);
    // b-0 had a clean session: once it is gone and back (clean), it has no subscription.
    r.handle_closed(10);
    r.handle_connect(500, "b-0", connect("b-0", true));
    drain(&mut r);
    r.handle_packet(COORD, down("b-0", 3));
    assert!(publishes_to(&drain(&mut r), 500).is_empty());
    // b-2 reconnects with a clean session on a new connection: its old filter is gone too.
    r.handle_connect(501, "b-2", connect("b-2", true));
    drain(&mut r);
    r.handle_packet(COORD, down("b-2", 4));
    assert!(publishes_to(&drain(&mut r), 501).is_empty());
    // b-5 keeps a persistent session across a reconnect: its downlink still reaches it.
    r.handle_closed(15);
    r.handle_connect(502, "b-5", connect("b-5", false));
    drain(&mut r);
    r.handle_packet(COORD, down("b-5", 5));
    assert_eq!(publishes_to(&drain(&mut r), 502).len(), 1);
}
