//! The appliance's side of SIP: the tokio driver that runs the sans-IO engine
//! (`callgate-sip`) on real sockets ([`udp`]), and the technician's tools ([`inspect`]
//! backs `sip parse`). This room owns no protocol logic (that lives in `callgate-sip`)
//! and must not touch other rooms' state.

pub mod inspect;
pub mod udp;
