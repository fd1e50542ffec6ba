fn main() {
    // sqlx::migrate! embeds migrations/ at compile time; napi_build's
    // rerun-if-env-changed lines would otherwise stop cargo from noticing new ones.
    println!("cargo:rerun-if-changed=migrations");
    // Only the Node addon build needs napi's linker setup; plain `cargo test`
    // builds the library without the `node` feature.
    if std::env::var_os("CARGO_FEATURE_NODE").is_some() {
        napi_build::setup();
    }
}
