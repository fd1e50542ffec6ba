//! Matrix codec: checksummed envelope around byte-shuffled zstd, and legacy zlib.
//! STUB: to be implemented.

use crate::error::Result;

/// Encodes a row-major f32 matrix into the envelope.
pub fn encode(_matrix: &[f32], _num_scenarios: u32, _num_buckets: u32) -> Result<Vec<u8>> {
    todo!()
}
