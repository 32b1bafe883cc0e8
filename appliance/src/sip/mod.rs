//! The appliance's side of SIP: the tokio driver that runs the sans-IO engine
//! (`callgate-sip`) on real sockets ([`udp`]), the `[sip]` config ([`config`]), and the
//! technician's tools ([`inspect`] backs `sip parse`, [`call`] backs `sip call`,
//! [`bench`] backs `sip bench`). This room owns no protocol logic (that lives in `callgate-sip`)
//! and must not touch other rooms' state.

pub mod bench;
pub mod call;
pub mod config;
pub mod inspect;
pub mod live_calls;
pub mod udp;
