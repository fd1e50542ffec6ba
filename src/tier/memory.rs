//! In-process memory tier. STUB.
