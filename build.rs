fn main() {
    // Only the Node addon build needs napi's linker setup; plain `cargo test`
    // builds the library without the `node` feature.
    if std::env::var_os("CARGO_FEATURE_NODE").is_some() {
        napi_build::setup();
    }
}
