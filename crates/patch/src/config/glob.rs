//! Namespace patterns (`excludedNamespaces`, `environments[].namespaces`):
//! their syntax and whole-name matching where `*` matches any run of
//! characters.

use crate::quote::Q;

/// A namespace glob: lower-case letters, digits, `-` and `*`.
pub(super) fn check_glob(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("the namespace pattern is empty".into());
    }
    if p.len() > 63 {
        return Err(format!(
            "the namespace pattern {} is longer than 63 characters",
            Q(p)
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '*')))
    {
        return Err(format!(
            "the namespace pattern {} has {}: a pattern is lower-case letters, digits, '-' and \
             '*' (any run of characters), matched against the whole namespace name",
            Q(p),
            Q(&c.to_string())
        ));
    }
    Ok(())
}

/// Whole-string match where `*` matches any run of characters (also none).
pub(super) fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("pr-*", "pr-12"));
        assert!(glob("pr-*", "pr-"));
        assert!(!glob("pr-*", "xpr-1"));
        assert!(glob("*-dev", "alice-dev"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("prod", "prod"));
        assert!(!glob("prod", "prod2"));
        assert!(glob("*", ""));
    }
}
