//! # Predictive pacing: how many attempts to start now
//!
//! This crate owns the appliance dialer's pacing decision as a sans-IO state machine
//! ([`PredictivePacer`]) and the discrete-event simulator that benchmarks it ([`sim`]). It
//! reads no clock, opens no socket and never touches tokio: the dialer's driver reports agent
//! state changes and attempt events with the time they happened, and asks
//! [`PredictivePacer::poll_dial`] how many attempts to start on which trunk. Compliance
//! (DNC, calling windows, leases), routing and the call itself belong to the dialer, not here.
//!
//! ## The model
//!
//! **What must hold.** A person who answers must find a free agent within the safe-harbour
//! time (2 s) or the call is abandoned. The abandon rate (abandoned ÷ answered by a person)
//! over the campaign's window must stay under its cap; within that, agents should be busy.
//!
//! **Answers (learned online, per trunk and hour of day).** For every trunk the pacer keeps
//! exponentially forgotten counts of outcomes: answered by a person, by a machine,
//! unanswered (busy, failed, no answer), with one-second histograms of the ring time to
//! answer and of the time unanswered attempts take to end (the `answer` module). Two
//! memories: a *slow* one (half-life 25 min) and an *hour-of-day profile* (half-life a week,
//! one per local hour) that, shrunk toward a weak prior, anchors the slow one. Forgetting
//! alone would follow a change in tens of minutes, so two CUSUM detectors watch the
//! person-answer rate minute by minute (one tuned to a fall by a third, one to a rise by a
//! third, threshold 5 in log-likelihood). When one fires, the slow memory restarts from the
//! attempts since the change began (the CUSUM's own change-point estimate): a step from 30 %
//! to 20 % at 40 attempts a minute is followed within about ten minutes, while steady traffic
//! keeps the low-noise estimate (false alarms: a few per day of such traffic). From these,
//! for an attempt that has rung `a` seconds without outcome,
//! `P(person answers within τ | still ringing at a) = p_h·(G(a+τ) − G(a)) / S(a)`, with `G`
//! the ring-time CDF of answers and `S(a)` the probability of still ringing at `a` (answers
//! and unanswered endings both leave). Long-ringing attempts thus count less and less.
//!
//! **Agents (learned online).** A ready agent is free now. An agent in wrap-up is free
//! when its timer runs out. A talking agent who has talked `e` seconds is free by `τ` with
//! probability `P(T ≤ e + τ − W | T > e)`, with `T` the learned talk-time distribution
//! (two-second histogram) and `W` the learned mean wrap-up. Reserved, paused and logged-out
//! agents are not free within the horizon.
//!
//! **The decision.** A new attempt is answered by a person at ring time `τ ~ G` with
//! probability `p_h`. Take the horizons `τ` at the 10/30/50/70/90 % quantiles of `G`. At
//! each, `D(τ) = free agents by τ − human answers by τ` is a constant (ready agents and
//! expiring wrap-ups, minus answered calls already waiting) plus independent Bernoulli
//! terms (+1 per agent that may free up, −1 per in-flight attempt that may answer) plus
//! `−Binomial(k, p_h·G(τ))` for `k` other new attempts. The *marginal abandon risk* of the
//! `(k+1)`-th new attempt is the average over horizons of `P(D(τ) − B_k ≤ 0)`: the chance
//! that, if a person answers it, every agent is already taken. It is computed exactly
//! (Poisson-binomial convolution) for up to 60 uncertain terms — so three agents are modelled
//! as precisely as thirty — and with a skewness-corrected normal approximation above
//! (the `risk` module). The pacer starts the largest `n` such that every one of the `n` new
//! attempts has marginal risk at most `θ`. Risk grows with `n`, so `n` is found by bisection.
//! This is the Erlang-style question "will a server be free when the customer arrives",
//! asked per attempt over a non-stationary, partly known future instead of a steady state.
//!
//! **The abandon-risk controller.** `θ` is the price of occupancy in abandons. Because
//! marginal attempts are the riskiest, the average abandon rate sits below `θ`; and the
//! model can be biased (correlated answers, agents slow to press ready). So `θ` is an
//! integral controller's output: every 15 s of virtual time,
//! `log θ += gain · (target − observed) / target` (gain 0.05, θ kept within
//! `[target / 50, min(10 · target, 0.5)]`, loosening only while the limit is what actually
//! held dialling back, so it does not wind up in quiet hours). `target = cap · (1 − margin)`
//! is the budget less an engineered margin (default 20 %); `observed` is the abandon rate
//! over a 30-minute half-life, shrunk toward the target with 100 pseudo-answers so a single
//! abandon among few calls does not swing it. Over the campaign's own window (e.g. 24 h or 30 days),
//! when the realised rate eats into the margin `θ` is scaled down linearly, reaching almost
//! zero (progressive dialling) at the cap.
//!
//! **Limits.** The answer is clipped to the trunks' free channels and per-minute rates and
//! to the pacing grant's concurrency, per-minute rate and expiry; new attempts fill trunks in
//! the order they were configured, and are modelled with the first trunk's answer profile.
//!
//! ## Driving it
//!
//! Report every event as it happens, in time order (an event stamped before the pacer's
//! clock is taken at the clock); poll after events and at [`PredictivePacer::poll_timeout`].
//! Each plan's attempts are reported `Started` before the next poll; a plan not carried out
//! is simply superseded.
//!
//! ```
//! use callgate_common::{ids::{AgentId, AttemptId, TrunkId}, time::UnixMillis};
//! use callgate_pacing::*;
//!
//! let mut pacer = PredictivePacer::new(PacingConfig::default(), AbandonBudget::default(),
//!     GrantLimits::unlimited()).unwrap();
//! let trunk = TrunkId::new("carrier-a").unwrap();
//! pacer.set_trunk(trunk.clone(), TrunkLimits { max_concurrent: 30, max_per_minute: 120 });
//! let t0 = UnixMillis(1_700_000_000_000);
//! pacer.handle_agent(t0, AgentId(1), AgentState::Ready).unwrap();
//! let plan = pacer.poll_dial(t0);
//! assert!(plan.total() >= 1);
//! // The driver starts the attempts and reports them before polling again.
//! pacer.handle_attempt(t0, AttemptId(uuid::Uuid::from_u128(1)),
//!     AttemptEvent::Started { trunk }).unwrap();
//! ```

mod agents;
pub mod answer;
mod error;
mod pacer;
mod risk;
pub mod sim;

pub use error::PacingError;
pub use pacer::{
    AbandonBudget, AgentState, AttemptEvent, DialPlan, GrantLimits, PacingConfig, PredictivePacer,
    TrunkLimits,
};
