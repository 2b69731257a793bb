//! `sidekey`: see the library for everything.

fn main() -> std::process::ExitCode {
    sidekey_cli::main()
}
