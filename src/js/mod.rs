//! napi binding layer (placeholder).
