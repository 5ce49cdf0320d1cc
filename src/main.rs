//! `bldst` (also installed as `bldst_cli`): chooses the front end by the name it was started
//! under and exits with the code that front end chose. Everything else lives in the libraries.
//!
//! The image (the root `Dockerfile`) installs this binary as `/opt/resource/check`, `in` and
//! `out` (the Concourse resource) and starts it as `/usr/local/bin/bldst-action` (its
//! ENTRYPOINT: the GitHub Action); any other name is the command line.

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    match buildstate::FrontEnd::for_program(&argv0) {
        buildstate::FrontEnd::Resource(command) => buildstate::resource_main(command),
        buildstate::FrontEnd::Cli => buildstate::cli::main(),
        buildstate::FrontEnd::Action => buildstate_action::main(),
    }
}
