//! Redis tier. STUB.
