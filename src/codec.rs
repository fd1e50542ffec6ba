//! Matrix codec: checksummed envelope around byte-shuffled zstd, and legacy zlib.
//! STUB: to be implemented.

use crate::error::Result;

/// Encodes a row-major f32 matrix into the envelope.
pub fn encode(_matrix: &[f32], _num_scenarios: u32, _num_buckets: u32) -> Result<Vec<u8>> {
    todo!()
}

pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Zlib,
    None,
}

pub fn decode_labelled(_bytes: &[u8], _label: Codec, _rows: u32, _cols: u32) -> Result<Vec<f32>> {
    todo!()
}

pub struct Header {
    pub num_scenarios: u32,
    pub num_buckets: u32,
}

pub fn read_header(_bytes: &[u8]) -> Result<Header> {
    todo!()
}
