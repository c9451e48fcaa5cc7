//! Accept-path benchmarks.
fn main() {}
