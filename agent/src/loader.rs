//! Variables that change how a process loads or runs code: the agent
//! refuses to set them from secrets unless the environment's configuration
//! names them in `SIDEKEY_ALLOW_LOADER_ENV`.
//!
//! A secret becomes an environment variable of the app (`exec`). Most
//! variables are data; these are instructions to the dynamic loader or to
//! an interpreter's start-up, so whoever can write one key of an
//! environment could otherwise run code in every pod of it. sidekey's
//! envelopes already stop writers without KMS rights; this check also
//! stops a mistaken or malicious key from a writer who has them, and
//! keeps "what the app runs" in the image and the pod spec.
//!
//! Applied to `exec` (environment delivery, including the environment half
//! of `both`). Not to files: a file is not any process's environment (an
//! app that sources a dotenv file into its own shell chooses to).

/// Names refused exactly.
pub const LOADER_VARIABLES: &[&str] = &[
    // Which program runs: the agent itself resolves the command through it.
    "PATH",
    // glibc's iconv modules and locale data, loaded by every C program.
    "GCONV_PATH",
    "LOCPATH",
    // Shells: a file sourced by every non-interactive bash/sh, shell options.
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    // Node.js.
    "NODE_OPTIONS",
    "NODE_PATH",
    // Python.
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONBREAKPOINT",
    "PYTHONPLATLIBDIR",
    // Perl.
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5DB",
    // Ruby.
    "RUBYOPT",
    "RUBYLIB",
    "GEM_HOME",
    "GEM_PATH",
    // The JVM.
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    // .NET.
    "DOTNET_STARTUP_HOOKS",
    "DOTNET_ADDITIONAL_DEPS",
    // PHP.
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    // Lua.
    "LUA_INIT",
    "LUA_PATH",
    "LUA_CPATH",
    // OpenSSL's configuration can load engines and providers.
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
];

/// Prefixes refused: the dynamic loaders (`LD_PRELOAD`, `LD_LIBRARY_PATH`,
/// `LD_AUDIT`, ...; macOS's `DYLD_*`), bash's exported functions
/// (`BASH_FUNC_name%%` replaces a command in every bash script), and the
/// .NET profiler (`CORECLR_PROFILER_PATH`, ...).
pub const LOADER_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_", "CORECLR_"];

/// Whether `name` changes how a process loads code.
pub fn is_loader_variable(name: &str) -> bool {
    LOADER_VARIABLES.contains(&name) || LOADER_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Parses `SIDEKEY_ALLOW_LOADER_ENV`: a comma-separated list of variable
/// names (blank entries ignored). Each must be one of the refused names.
pub fn parse_allow_list(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !is_loader_variable(name) {
            return Err(format!(
                "{name:?} is not a variable the agent refuses (see the agent's loader list): \
                 list only names such as LD_PRELOAD or NODE_OPTIONS"
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_allowed_names() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "NODE_OPTIONS",
            "PATH",
            "BASH_FUNC_ls%%",
        ] {
            assert!(is_loader_variable(name), "{name}");
        }
        for name in ["DATABASE_URL", "PATHS", "MY_PATH", "LDAP_URL", "NODE_ENV"] {
            assert!(!is_loader_variable(name), "{name}");
        }
        assert_eq!(
            parse_allow_list(" LD_PRELOAD, ,NODE_OPTIONS,LD_PRELOAD").unwrap(),
            ["LD_PRELOAD", "NODE_OPTIONS"]
        );
        assert!(parse_allow_list("DATABASE_URL").is_err());
    }
}
