//! The `kafkactor` command (feature `cli`): dead letters listed, shown
//! and replayed, a group's lag, a topic's tail, against Apache Kafka.
//! `kafkactor --help` says how.

fn main() -> std::process::ExitCode {
    kafkactor::cli::main()
}
