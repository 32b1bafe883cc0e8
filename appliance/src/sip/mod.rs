//! The appliance's side of SIP: the handles on the engine (the sans-IO cores of
//! `callgate-sip` run by the transports of `callgate-sip-net`: [`engine`], also under
//! their older names in [`udp`]), the `[sip]` config ([`config`]), and the
//! technician's tools ([`inspect`] backs `sip parse`, [`call`] backs `sip call`,
//! [`bench`] backs `sip bench`). This room owns no protocol logic (that lives in `callgate-sip`)
//! and must not touch other rooms' state.

pub mod bench;
pub mod call;
pub mod config;
pub mod engine;
pub mod inspect;
pub mod live_calls;
pub mod udp;
