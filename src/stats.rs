//! Cache statistics: lock-free counters and per-source latency histograms,
//! cheap to update on every call and cheap to read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::tier::memory::MemoryStats;
use crate::tier::redis::BreakerSnapshot;
use crate::tier::Source;

/// Hits, misses, errors and bytes served by one tier.
#[derive(Default)]
pub struct TierCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
    /// Payload bytes returned by this tier's hits.
    pub bytes: AtomicU64,
}

impl TierCounters {
    pub fn hit(&self, bytes: usize) {
        self.hits.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    fn snapshot(&self) -> TierSnapshot {
        TierSnapshot {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

/// Log-scale latency histogram: 20 buckets per decade from 1 µs to 1000 s.
/// Quantiles are read as the upper edge of their bucket (within 12%).
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    /// Total recorded time, for Prometheus' `_sum`.
    sum_nanos: AtomicU64,
}

const PER_DECADE: f64 = 20.0;
const DECADES: usize = 9;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..PER_DECADE as usize * DECADES + 1)
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let micros = (d.as_nanos() as f64 / 1000.0).max(1.0);
        let i = ((micros.log10() * PER_DECADE).ceil() as usize).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// For each of `edges` (seconds, ascending), how many recorded values
    /// fell in buckets whose upper edge is at most that edge (so a value
    /// within one bucket, 12%, below an edge may be counted above it), then
    /// the total count and the sum in seconds.
    fn cumulative(&self, edges: &[f64]) -> (Vec<u64>, u64, f64) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let upper_seconds = |i: usize| 10f64.powf(i as f64 / PER_DECADE) / 1e6;
        let below = edges
            .iter()
            .map(|&e| {
                counts
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| upper_seconds(i) <= e * (1.0 + 1e-9))
                    .map(|(_, c)| c)
                    .sum()
            })
            .collect();
        let total = counts.iter().sum();
        (below, total, self.sum_nanos.load(Relaxed) as f64 / 1e9)
    }

    /// Returns (count, p50, p95, p99) in milliseconds.
    fn quantiles(&self) -> (u64, f64, f64, f64) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let q = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let rank = (p * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return 10f64.powf(i as f64 / PER_DECADE) / 1000.0;
                }
            }
            unreachable!("rank is at most the total")
        };
        (total, q(0.50), q(0.95), q(0.99))
    }
}

#[derive(Default)]
pub struct Stats {
    pub memory: TierCounters,
    pub redis: TierCounters,
    pub durable: TierCounters,
    pub generations: AtomicU64,
    pub single_flight_joins: AtomicU64,
    /// Stored payloads that failed verification (then treated as misses).
    pub corrupt_entries: AtomicU64,
    /// Legacy (TypeScript-era) values re-encoded and written back in the new format.
    pub legacy_rewrites: AtomicU64,
    /// Legacy copies of several buckets, never served: the TypeScript code
    /// recorded no column order, so their columns cannot be attributed to
    /// buckets. The key is generated afresh (replacing a legacy durable row).
    pub legacy_unattributable: AtomicU64,
    /// Damaged durable rows regenerated, proven equal through their
    /// surviving checksums, and rewritten.
    pub repairs: AtomicU64,
    /// Durable hits answered by regenerating the matrix and proving it
    /// equal to the stored row (`regenerateMinBytes`).
    pub regenerated_hits: AtomicU64,
    /// Regenerations for such a hit that did not match the stored row
    /// (another writer version or generator, or a damaged header): the row
    /// was then read whole.
    pub regenerations_unproven: AtomicU64,
    /// Every call's latency, under its outcome ([`Outcome::ALL`] order).
    latency: [Histogram; Outcome::ALL.len()],
    /// Answered calls from the binding: from the call to the result handed
    /// to JS, copy included, by the result's source ([`Source::ALL`] order).
    to_caller: [Histogram; Source::ALL.len()],
}

/// How a lookup call (`get_or_generate`, `get_matrix`, `get`) ended. Every
/// call is counted once, under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by a tier (`Source::Generated` is not one: see `Generated`).
    Hit(Source),
    /// Ran the generation (one call per generation in this process).
    Generated,
    /// Waited for a generation another call ran.
    Joined,
    /// A lookup by key that no tier could answer.
    NotFound,
    /// Rejected with an error.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Hit(Source::Memory),
        Outcome::Hit(Source::Redis),
        Outcome::Hit(Source::Postgres),
        Outcome::Hit(Source::Sqlite),
        Outcome::Generated,
        Outcome::Joined,
        Outcome::NotFound,
        Outcome::Failed,
    ];

    /// The name `stats().latency` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit(Source::Generated) | Outcome::Generated => "generated",
            Outcome::Hit(s) => s.as_str(),
            Outcome::Joined => "joined",
            Outcome::NotFound => "notFound",
            Outcome::Failed => "failed",
        }
    }

    fn slot(self) -> usize {
        let this = match self {
            Outcome::Hit(Source::Generated) => Outcome::Generated,
            other => other,
        };
        Outcome::ALL
            .iter()
            .position(|x| *x == this)
            .expect("every outcome is listed")
    }

    fn is_hit(self) -> bool {
        matches!(self, Outcome::Hit(s) if s != Source::Generated)
    }
}

impl Stats {
    pub fn record_call(&self, outcome: Outcome, took: Duration) {
        self.latency[outcome.slot()].record(took);
    }

    pub fn record_to_caller(&self, source: Source, took: Duration) {
        let slot = Source::ALL
            .iter()
            .position(|s| *s == source)
            .expect("every source is listed");
        self.to_caller[slot].record(took);
    }

    pub fn snapshot(
        &self,
        memory: Option<MemoryStats>,
        redis_breaker: Option<BreakerSnapshot>,
    ) -> StatsSnapshot {
        let latency: Vec<LatencySnapshot> = Outcome::ALL
            .iter()
            .map(|o| {
                let (count, p50_ms, p95_ms, p99_ms) = self.latency[o.slot()].quantiles();
                LatencySnapshot {
                    outcome: *o,
                    count,
                    p50_ms,
                    p95_ms,
                    p99_ms,
                }
            })
            .collect();
        let latency_to_caller = Source::ALL
            .iter()
            .zip(&self.to_caller)
            .map(|(s, h)| {
                let (count, p50_ms, p95_ms, p99_ms) = h.quantiles();
                LatencySnapshot {
                    outcome: Outcome::Hit(*s),
                    count,
                    p50_ms,
                    p95_ms,
                    p99_ms,
                }
            })
            .collect();
        let duration_buckets = Outcome::ALL
            .iter()
            .map(|o| {
                let (below, count, sum_seconds) =
                    self.latency[o.slot()].cumulative(&DURATION_EDGES_SECONDS);
                DurationHistogram {
                    outcome: *o,
                    below,
                    count,
                    sum_seconds,
                }
            })
            .collect();
        let calls: u64 = latency.iter().map(|l| l.count).sum();
        let hits: u64 = latency
            .iter()
            .filter(|l| l.outcome.is_hit())
            .map(|l| l.count)
            .sum();
        StatsSnapshot {
            memory: self.memory.snapshot(),
            redis: self.redis.snapshot(),
            durable: self.durable.snapshot(),
            memory_tier: memory,
            redis_breaker,
            generations: self.generations.load(Relaxed),
            single_flight_joins: self.single_flight_joins.load(Relaxed),
            corrupt_entries: self.corrupt_entries.load(Relaxed),
            legacy_rewrites: self.legacy_rewrites.load(Relaxed),
            legacy_unattributable: self.legacy_unattributable.load(Relaxed),
            repairs: self.repairs.load(Relaxed),
            regenerated_hits: self.regenerated_hits.load(Relaxed),
            regenerations_unproven: self.regenerations_unproven.load(Relaxed),
            calls,
            hit_rate: if calls == 0 {
                0.0
            } else {
                hits as f64 / calls as f64
            },
            latency,
            latency_to_caller,
            duration_buckets,
        }
    }
}

/// The `le` edges (seconds) of the request-duration histogram that
/// `metrics()` exposes: 1-2-5 steps from 100 µs to 100 s.
pub const DURATION_EDGES_SECONDS: [f64; 19] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    10.0, 20.0, 50.0, 100.0,
];

/// One outcome's call durations in Prometheus' cumulative form.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationHistogram {
    pub outcome: Outcome,
    /// Calls at most `DURATION_EDGES_SECONDS[i]` long (cumulative).
    pub below: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySnapshot {
    pub outcome: Outcome,
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    pub memory: TierSnapshot,
    pub redis: TierSnapshot,
    pub durable: TierSnapshot,
    /// Occupancy of the memory tier; None when it is off.
    pub memory_tier: Option<MemoryStats>,
    /// The Redis circuit breaker; None without Redis.
    pub redis_breaker: Option<BreakerSnapshot>,
    pub generations: u64,
    pub single_flight_joins: u64,
    pub corrupt_entries: u64,
    pub legacy_rewrites: u64,
    pub legacy_unattributable: u64,
    pub repairs: u64,
    pub regenerated_hits: u64,
    pub regenerations_unproven: u64,
    /// Lookup calls (getOrGenerate, getMatrix, get) that finished, each
    /// counted once by its outcome: the sum of the latency counts.
    pub calls: u64,
    /// Share of those calls a tier answered (memory, Redis or durable).
    pub hit_rate: f64,
    pub latency: Vec<LatencySnapshot>,
    /// Calls through the binding answered with a result, from the call to
    /// the result handed to JS (copy included), by the result's source.
    pub latency_to_caller: Vec<LatencySnapshot>,
    /// Every call's duration by outcome, as `metrics()` exposes it.
    pub duration_buckets: Vec<DurationHistogram>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(50));
        }
        let (n, p50, p95, p99) = h.quantiles();
        assert_eq!(n, 100);
        assert!((0.1..0.113).contains(&p50), "{p50}");
        assert!((50.0..56.3).contains(&p95), "{p95}");
        assert!((50.0..56.3).contains(&p99), "{p99}");
        let (below, total, sum) = h.cumulative(&[0.0001, 0.001, 0.05, 0.1]);
        // 100 µs is a bucket edge, so those 90 count at le=0.0001; the 50 ms
        // calls land in the bucket ending at 56.2 ms, counted from le=0.1.
        assert_eq!(below, [90, 90, 90, 100]);
        assert_eq!(total, 100);
        assert!((sum - (0.009 + 0.5)).abs() < 1e-9, "{sum}");
    }
}
