//! The pacing benchmark: a discrete-event simulation of a site in virtual time.
//!
//! Owns scenario files ([`scenario`]), the baseline strategies ([`baseline`]), the engine
//! that runs one scenario under one strategy ([`engine`]) and the report table
//! ([`report`]). It drives the [`crate::PredictivePacer`] through its public inputs only,
//! exactly as the dialer's driver does. Runs in seconds; the same seed gives the same
//! figures. Reads no file and no clock: the benchmark binary does the reading.

pub mod baseline;
pub mod engine;
pub mod report;
pub mod rng;
pub mod scenario;

pub use engine::{run, RunReport, SimError, Strategy};
pub use scenario::{Scenario, ScenarioError};

#[cfg(test)]
mod tests;
