use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = soliton_mps_keeper::cli::Cli::parse();
    soliton_mps_keeper::logging::init();
    let exit = soliton_mps_keeper::cli::main_with(cli);
    std::process::ExitCode::from(exit.code())
}
