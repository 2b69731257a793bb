//! Kubernetes quantities (`10m`, `0.5`, `16Mi`, `1G`) for the configured
//! resources and `filesSizeLimit`.

/// The value of a Kubernetes quantity in base units: decimal digits with an
/// optional fraction and an optional suffix (`n u m k M G T P E Ki Mi Gi Ti
/// Pi Ei`). Signs and exponents are not accepted here.
pub(crate) fn parse_quantity(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mut parts = num.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    if int.is_empty() && frac.is_none_or(str::is_empty) {
        return None;
    }
    if frac.is_some_and(|f| f.contains('.')) {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10m"), Some(0.01));
        assert_eq!(parse_quantity("16Mi"), Some(16.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("0.5"), Some(0.5));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        for bad in ["", "Mi", "1.2.3", "-1", "1 Mi", "1mi", ".", "1e3"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }
}
