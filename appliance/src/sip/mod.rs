//! The appliance's side of SIP: glue between the sans-IO engine (`callgate-sip`) and the
//! daemon. [`inspect`] backs the technician's `sip parse` command. This room owns no
//! protocol logic (that lives in `callgate-sip`) and must not touch other rooms' state.

pub mod inspect;
