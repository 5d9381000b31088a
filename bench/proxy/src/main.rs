fn main() {
    eprintln!(
        "see README.md: ./run.sh for throughput, `cargo run --release --bin idle` for memory"
    );
}
