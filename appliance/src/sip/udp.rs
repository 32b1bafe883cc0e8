//! The engine's handles under the names the dialer, the agents and their tests were written
//! against (from when the driver spoke UDP only). They are the same types as in
//! [`super::engine`] and carry UDP, TCP and TLS; new code uses the `engine` names.

pub use super::engine::{
    AgentSipControl, DriverError, SipAgent as UdpAgent, SipTrunkRouter as UdpTrunkRouter,
    TrunkControl, WireRecord,
};
