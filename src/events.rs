//! Structured events for the host's logs and metrics (`onEvent` in JS): what
//! `stats()` counts, as it happens, with the key and the reason. The cache
//! prints nothing itself; without a sink an event costs one branch.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A tier failed a request (Redis: the call went on without it; the
    /// durable store: the call failed).
    TierError,
    /// The Redis circuit breaker opened: Redis is not asked until it answers.
    BreakerOpened,
    /// A probe got an answer: Redis is used again.
    BreakerClosed,
    /// A stored copy failed its checks (it is not served).
    CorruptEntry,
    /// A damaged durable row was regenerated, proven and rewritten.
    Repair,
    /// A call took at least `slowCallMs`.
    SlowCall,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TierError => "tierError",
            EventKind::BreakerOpened => "breakerOpened",
            EventKind::BreakerClosed => "breakerClosed",
            EventKind::CorruptEntry => "corruptEntry",
            EventKind::Repair => "repair",
            EventKind::SlowCall => "slowCall",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// `memory`, `redis` or `durable`, when one tier is concerned.
    pub tier: Option<&'static str>,
    pub key: Option<String>,
    /// What happened, in words (never with a password).
    pub message: Option<String>,
    /// A duration: the call's, for `SlowCall`.
    pub ms: Option<f64>,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Event {
            kind,
            tier: None,
            key: None,
            message: None,
            ms: None,
        }
    }

    pub fn tier(mut self, tier: &'static str) -> Self {
        self.tier = Some(tier);
        self
    }

    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self
    }

    pub fn message(mut self, message: impl fmt::Display) -> Self {
        self.message = Some(message.to_string());
        self
    }

    pub fn ms(mut self, ms: f64) -> Self {
        self.ms = Some(ms);
        self
    }
}

/// Where events go: nowhere by default. Called on whichever thread the event
/// happens, so the sink must be quick and must not block.
#[derive(Clone, Default)]
pub struct Events(Option<Arc<dyn Fn(Event) + Send + Sync>>);

impl Events {
    pub fn to(sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Events(Some(Arc::new(sink)))
    }

    pub fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = &self.0 {
            sink(event());
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events(sink)"
        } else {
            "Events(none)"
        })
    }
}
