//! `bldst_cli`: the same program as `bldst`, under the name the framework guide's pipeline
//! examples use. A file of its own (not a second target on `src/main.rs`) keeps cargo from
//! warning about one file in two targets.

fn main() -> std::process::ExitCode {
    buildstate::cli::main()
}
