//! `bldst` (also installed as `bldst_cli`): parses the command line and exits with the code
//! `cli::run` chose. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    buildstate::cli::main()
}
