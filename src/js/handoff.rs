//! A bound on the caller copies made off the JS thread and not yet handed to
//! it. Each answer is the caller's own copy (a `Buffer` or `Float32Array` it
//! may mutate), made on the runtime's threads, which can copy faster than the
//! one JS thread takes results: under load, the copies for every caller of a
//! finished flight piled up in the callback queue (in `npm run load`, about a
//! third of the peak resident memory, per `heaptrack`). A copy now waits for
//! room in this budget before it is made, and gives the room back once JS
//! holds it; from then on V8's collector decides when it goes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of copies that may wait for the JS thread at once.
const BUDGET_BYTES: usize = 64 << 20;
/// Permits are counted in KiB so the budget fits a semaphore's permit count.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct Handoff(Arc<Semaphore>);

impl Handoff {
    pub fn new() -> Self {
        Handoff(Arc::new(Semaphore::new(BUDGET_BYTES / UNIT)))
    }

    /// Waits for room for a copy of `bytes` (a copy larger than the whole
    /// budget waits for all of it). Dropping the permit gives the room back.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let units = bytes.div_ceil(UNIT).clamp(1, BUDGET_BYTES / UNIT) as u32;
        self.0
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the hand-off semaphore is never closed")
    }
}
