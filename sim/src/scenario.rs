//! The scenario file: plain TOML, every key documented here, unknown keys refused, every
//! value checked with its key named. A scenario says how the simulated carrier treats
//! calls and which simulated agents work the appliance's desk. Owns parsing and
//! validation only.
//!
//! ```toml
//! seed = 42
//! [carrier]
//! listen = "127.0.0.1:5090"
//! answer_probability = 0.45      # a person or a machine picks up
//! machine_share = 0.25           # of the answered calls, answering machines
//! busy_share = 0.4               # of the unanswered calls, busy (486); the rest ring out
//! ring_seconds = { dist = "uniform", min = 2, max = 9 }
//! talk_seconds = { dist = "lognormal", median = 25, sigma = 0.6 }
//! greeting_seconds = { dist = "uniform", min = 8, max = 14 }
//! ```

use crate::dist::Seconds;
use crate::SimError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random draw: the same seed gives the same sequence of call fates.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The simulated carrier.
    #[serde(default)]
    pub carrier: CarrierScenario,
    /// Simulated agents (none when absent).
    #[serde(default)]
    pub agents: Option<AgentsScenario>,
}

fn default_seed() -> u64 {
    1
}

/// `[carrier]`: how the simulated carrier treats each INVITE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarrierScenario {
    /// The SIP/UDP address it listens on (loopback only).
    pub listen: SocketAddr,
    /// Probability that somebody (a person or a machine) answers.
    pub answer_probability: f64,
    /// Of the answered calls, the share answered by a machine.
    pub machine_share: f64,
    /// Of the unanswered calls, the share that are busy (486); the rest ring without answer.
    pub busy_share: f64,
    /// How long a call rings before it is answered or found busy.
    pub ring_seconds: Seconds,
    /// How long a person talks before hanging up (from the answer).
    pub talk_seconds: Seconds,
    /// How long an answering machine's greeting lasts before its beep.
    pub greeting_seconds: Seconds,
    /// After the beep a machine records this long, then hangs up.
    pub machine_record_seconds: f64,
    /// A call nobody answers is given up with 480 after this long (unless the caller
    /// cancels first, as a dialer's ring timeout does).
    pub no_answer_after_seconds: f64,
    /// Calls carried at once; more get 503.
    pub max_calls: usize,
    /// Audio level of the voices (peak sample, up to 32767).
    pub voice_level: i16,
}

impl Default for CarrierScenario {
    fn default() -> Self {
        CarrierScenario {
            listen: SocketAddr::from(([127, 0, 0, 1], 5090)),
            answer_probability: 0.45,
            machine_share: 0.2,
            busy_share: 0.35,
            ring_seconds: Seconds::Uniform { min: 2.0, max: 9.0 },
            talk_seconds: Seconds::Lognormal {
                median: 25.0,
                sigma: 0.6,
            },
            greeting_seconds: Seconds::Uniform {
                min: 8.0,
                max: 14.0,
            },
            machine_record_seconds: 20.0,
            no_answer_after_seconds: 40.0,
            max_calls: 500,
            voice_level: 9000,
        }
    }
}

/// `[agents]`: people working the appliance's agent desk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsScenario {
    /// The appliance's local web UI (`https://127.0.0.1:9443`); the agent page is `/agent`.
    pub web: String,
    /// The appliance's web certificate (`<data_dir>/web/cert.pem`) to trust; without it
    /// any certificate is accepted (the address is loopback, checked below).
    #[serde(default)]
    pub web_certificate: Option<std::path::PathBuf>,
    /// The appliance's registrar for desk phones (SIP/UDP, loopback).
    pub registrar: SocketAddr,
    /// Time from the end of a call to the saved disposition.
    #[serde(default = "default_wrap_up")]
    pub wrap_up_seconds: Seconds,
    /// Codes to pick from (uniformly); each must be one the campaign allows.
    pub dispositions: Vec<String>,
    /// The people, one phone each.
    pub people: Vec<SimPerson>,
}

fn default_wrap_up() -> Seconds {
    Seconds::Uniform { min: 1.0, max: 4.0 }
}

/// `[[agents.people]]`: one simulated agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPerson {
    /// Login on the agent page.
    pub login: String,
    /// Its password.
    pub password: String,
    /// The desk phone's SIP account on the appliance's registrar.
    pub phone: String,
    /// The phone's SIP password.
    pub phone_password: String,
    /// The phone's SIP/UDP address (loopback; port 0 for any free port).
    #[serde(default = "any_loopback")]
    pub phone_listen: SocketAddr,
}

fn any_loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn probability(key: &str, p: f64) -> Result<(), SimError> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(SimError::invalid(
            key,
            format!("must be a probability between 0 and 1, got {p}"),
        ))
    }
}

fn loopback(key: &str, addr: SocketAddr) -> Result<(), SimError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(SimError::invalid(
            key,
            format!("must be a loopback address (127.0.0.0/8 or ::1), got {addr}"),
        ))
    }
}

fn seconds(key: &str, s: f64) -> Result<(), SimError> {
    if s.is_finite() && (0.0..=86_400.0).contains(&s) {
        Ok(())
    } else {
        Err(SimError::invalid(
            key,
            format!("must be between 0 and 86400 seconds, got {s}"),
        ))
    }
}

impl CarrierScenario {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        loopback("carrier.listen", self.listen)?;
        probability("carrier.answer_probability", self.answer_probability)?;
        probability("carrier.machine_share", self.machine_share)?;
        probability("carrier.busy_share", self.busy_share)?;
        self.ring_seconds.validate("carrier.ring_seconds")?;
        self.talk_seconds.validate("carrier.talk_seconds")?;
        self.greeting_seconds.validate("carrier.greeting_seconds")?;
        seconds(
            "carrier.machine_record_seconds",
            self.machine_record_seconds,
        )?;
        seconds(
            "carrier.no_answer_after_seconds",
            self.no_answer_after_seconds,
        )?;
        if self.max_calls == 0 {
            return Err(SimError::invalid("carrier.max_calls", "must be at least 1"));
        }
        if self.voice_level <= 0 {
            return Err(SimError::invalid(
                "carrier.voice_level",
                format!("must be between 1 and 32767, got {}", self.voice_level),
            ));
        }
        Ok(())
    }
}

impl AgentsScenario {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        let host = self
            .web
            .strip_prefix("https://")
            .or_else(|| self.web.strip_prefix("http://"))
            .and_then(|rest| rest.split('/').next())
            .and_then(|hp| hp.parse::<SocketAddr>().ok());
        match host {
            Some(addr) => loopback("agents.web", addr)?,
            None => {
                return Err(SimError::invalid(
                    "agents.web",
                    format!(
                        "must be https://<loopback ip>:<port> of the appliance, got {:?}",
                        self.web
                    ),
                ))
            }
        }
        loopback("agents.registrar", self.registrar)?;
        self.wrap_up_seconds.validate("agents.wrap_up_seconds")?;
        if self.dispositions.is_empty() {
            return Err(SimError::invalid(
                "agents.dispositions",
                "must name at least one disposition code",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.people.iter().enumerate() {
            let key = |f: &str| format!("agents.people[{i}].{f}");
            if p.login.is_empty() {
                return Err(SimError::invalid(key("login"), "must not be empty"));
            }
            if !seen.insert(p.login.clone()) {
                return Err(SimError::invalid(
                    key("login"),
                    format!("{:?} is used by another agent", p.login),
                ));
            }
            if p.phone.is_empty() {
                return Err(SimError::invalid(key("phone"), "must not be empty"));
            }
            loopback(&key("phone_listen"), p.phone_listen)?;
        }
        Ok(())
    }
}

impl Scenario {
    /// Parses and validates scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, SimError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| SimError::Syntax {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        scenario.carrier.validate()?;
        if let Some(agents) = &scenario.agents {
            agents.validate()?;
        }
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// The scenario as TOML (what `callgate-sim check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_scenario_and_the_shipped_example_parses() {
        let s = Scenario::parse("", "<text>").unwrap();
        assert_eq!(s.carrier, CarrierScenario::default());
        assert!(s.agents.is_none());
        let example = include_str!("../scenarios/branch.toml");
        let s = Scenario::parse(example, "branch.toml").unwrap();
        assert_eq!(s.seed, 42);
        assert!(s.agents.is_some());
    }

    #[test]
    fn bad_input_is_refused_with_the_key_named() {
        let cases = [
            (
                "[carrier]\nanswer_probability = 1.5\n",
                "scenario key carrier.answer_probability: must be a probability between 0 and 1, got 1.5",
            ),
            (
                "[carrier]\nlisten = \"192.0.2.1:5060\"\n",
                "scenario key carrier.listen: must be a loopback address (127.0.0.0/8 or ::1), got 192.0.2.1:5060",
            ),
            (
                "[carrier]\nring_seconds = { dist = \"uniform\", min = 9, max = 2 }\n",
                "scenario key carrier.ring_seconds.max: must not be below min (9), got 2",
            ),
            (
                "[carrier]\nmax_calls = 0\n",
                "scenario key carrier.max_calls: must be at least 1",
            ),
        ];
        for (text, want) in cases {
            let e = Scenario::parse(text, "<text>").unwrap_err();
            assert_eq!(e.to_string(), want, "for {text:?}");
        }
        // Unknown keys and wrong types are refused with the line.
        let e = Scenario::parse("[carrier]\nanswer_probabilty = 0.3\n", "s.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("scenario s.toml:"), "{msg}");
        assert!(msg.contains("answer_probabilty"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        let e = Scenario::parse("[carrier]\nring_seconds = { dist = \"gamma\" }\n", "s.toml")
            .unwrap_err();
        assert!(e.to_string().contains("gamma"), "{e}");
        let e = Scenario::parse("seed = \"x\"\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn agents_are_checked_by_key() {
        let base = "[agents]\nweb = \"https://127.0.0.1:9443\"\nregistrar = \"127.0.0.1:5062\"\n";
        let e =
            Scenario::parse(&format!("{base}dispositions = []\npeople = []\n"), "s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "scenario key agents.dispositions: must name at least one disposition code"
        );
        let two = "[[agents.people]]\nlogin = \"a\"\npassword = \"p\"\nphone = \"x\"\nphone_password = \"pppppppp\"\n";
        let e = Scenario::parse(&format!("{base}dispositions = [\"sale\"]\n{two}{two}"), "s")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "scenario key agents.people[1].login: \"a\" is used by another agent"
        );
    }
}
