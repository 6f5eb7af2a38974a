//! Entry point: parse arguments, set up logging, run, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = zmq_key_rotate::Cli::parse();
    zmq_key_rotate::logging::init();
    std::process::ExitCode::from(zmq_key_rotate::run(cli) as u8)
}
