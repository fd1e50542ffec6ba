// Criterion benchmark: to be written.
fn main() {}
