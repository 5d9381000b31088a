//! Empty: this package only hosts the benchmarks in `benches/`.
