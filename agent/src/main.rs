//! `sidekey-agent`: see the library for everything.

fn main() -> std::process::ExitCode {
    sidekey_agent::main()
}
