//! UTC times as RFC 3339 text (`2026-11-26T10:00:00.123Z`), written and
//! read without a formatting or date library.
//!
//! Written: [`write_millis`] (the audit record's `ts`, one per record) and
//! [`format_seconds`]; both give the bytes `humantime`'s
//! `format_rfc3339_millis` / `format_rfc3339_seconds` give, and refuse a
//! time outside 1970-01-01 to 9999-12-31 instead of writing a wrong one.
//!
//! Read: [`parse`] takes `YYYY-MM-DDTHH:MM:SS`, a space allowed for the
//! `T`, an optional fraction of one or more digits, and an optional `Z` or
//! `+00:00`: UTC only (a time in another offset is refused, not read as
//! UTC). A leap second (`:60`) reads as `:59`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first second that cannot be written: 10000-01-01T00:00:00Z.
pub const END_SECS: u64 = 253_402_300_800;

/// A time before 1970 or after 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the time is outside 1970-01-01..9999-12-31")
    }
}

impl std::error::Error for OutOfRange {}

/// Why a text is not an RFC 3339 UTC time. Names the rule, never the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not `YYYY-MM-DDTHH:MM:SS[.fraction][Z|+00:00]`.
    Format,
    /// A field out of its range (month 13, day 31 of a 30-day month, hour
    /// 24...), or a year before 1970.
    Range,
    /// An offset other than `Z` or `+00:00`.
    NotUtc,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Format => "not of the form YYYY-MM-DDTHH:MM:SS[.fraction][Z]",
            ParseError::Range => "a date or time field is out of range",
            ParseError::NotUtc => "only UTC (Z or +00:00) is accepted",
        })
    }
}

impl std::error::Error for ParseError {}

fn split(t: SystemTime) -> Result<Duration, OutOfRange> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() < END_SECS => Ok(d),
        _ => Err(OutOfRange),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, into `buf[..19]`.
fn put_seconds(buf: &mut [u8], secs: u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    put(buf, 0, 4, year);
    put(buf, 5, 2, month);
    put(buf, 8, 2, day);
    put(buf, 11, 2, rem / 3600);
    put(buf, 14, 2, rem % 3600 / 60);
    put(buf, 17, 2, rem % 60);
}

fn put(buf: &mut [u8], at: usize, width: usize, mut v: u64) {
    for i in (at..at + width).rev() {
        // Each digit is below 10: the cast cannot truncate.
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends `t` with milliseconds (`2026-11-26T10:00:00.123Z`, what
/// `humantime::format_rfc3339_millis` writes). On an error `out` is left
/// as it was.
pub fn write_millis(out: &mut String, t: SystemTime) -> Result<(), OutOfRange> {
    let d = split(t)?;
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    put_seconds(&mut buf, d.as_secs());
    put(&mut buf, 20, 3, u64::from(d.subsec_millis()));
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    Ok(())
}

/// `t` with milliseconds, as [`write_millis`] writes it.
pub fn format_millis(t: SystemTime) -> Result<String, OutOfRange> {
    let mut out = String::with_capacity(24);
    write_millis(&mut out, t)?;
    Ok(out)
}

/// `t` to the second (`2026-11-26T10:00:00Z`, what
/// `humantime::format_rfc3339_seconds` writes; the fraction is dropped).
pub fn format_seconds(t: SystemTime) -> Result<String, OutOfRange> {
    let d = split(t)?;
    let mut buf = *b"0000-00-00T00:00:00Z";
    put_seconds(&mut buf, d.as_secs());
    Ok(std::str::from_utf8(&buf).unwrap_or_default().to_owned())
}

/// [`format_seconds`] for text people read (tables, messages, pages): a
/// time outside the range shows as `(the time is outside
/// 1970-01-01..9999-12-31)`, never as a wrong date.
pub fn seconds_text(t: SystemTime) -> String {
    format_seconds(t).unwrap_or_else(|e| format!("({e})"))
}

/// [`seconds_text`] of a count of seconds since the Unix epoch.
pub fn unix_seconds_text(secs: u64) -> String {
    seconds_text(UNIX_EPOCH + Duration::from_secs(secs))
}

/// (year, month, day) of `days` since 1970-01-01 in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to `year`-`month`-`day` (H. Hinnant's
/// `days_from_civil`, for dates after the epoch).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Reads an RFC 3339 UTC time (see the module docs for what is taken).
pub fn parse(s: &str) -> Result<SystemTime, ParseError> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(ParseError::Format);
    }
    let number = |at: usize, width: usize| -> Result<u64, ParseError> {
        b[at..at + width].iter().try_fold(0u64, |n, &c| {
            if c.is_ascii_digit() {
                Ok(n * 10 + u64::from(c - b'0'))
            } else {
                Err(ParseError::Format)
            }
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return Err(ParseError::Range),
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return Err(ParseError::Range);
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(ParseError::Format);
        }
        let mut scale = 100_000_000;
        for &c in &fraction[..digits.min(9)] {
            nanos += scale * u32::from(c - b'0');
            scale /= 10;
        }
        rest = &fraction[digits..];
    }
    match rest {
        b"" | b"Z" | b"+00:00" => {}
        [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            return Err(ParseError::NotUtc)
        }
        _ => return Err(ParseError::Format),
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59);
    if secs >= END_SECS {
        return Err(ParseError::Range);
    }
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn times_are_written_as_humantime_writes_them() {
        for ms in [
            0,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000,     // 2000-02-29
            1_764_151_200_123,   // 2025-11-26T10:00:00.123Z
            4_107_542_400_000,   // 2100-03-01
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(
                format_millis(t).unwrap(),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
            assert_eq!(
                format_seconds(t).unwrap(),
                humantime::format_rfc3339_seconds(t).to_string(),
                "{ms}"
            );
        }
        for t in [
            UNIX_EPOCH - Duration::from_millis(1),
            UNIX_EPOCH + Duration::from_secs(END_SECS),
        ] {
            assert_eq!(format_millis(t), Err(OutOfRange));
            assert_eq!(format_seconds(t), Err(OutOfRange));
            let mut out = "kept".to_owned();
            assert_eq!(write_millis(&mut out, t), Err(OutOfRange));
            assert_eq!(out, "kept");
        }
    }

    #[test]
    fn parses_utc_and_refuses_the_rest() {
        let at = |s: &str| parse(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap());
        assert_eq!(at("1970-01-01T00:00:00Z"), Ok(Duration::ZERO));
        assert_eq!(
            at("2000-02-29 12:00:00.5"),
            Ok(Duration::new(951_825_600, 500_000_000))
        );
        assert_eq!(
            at("2000-02-29T12:00:00.123456789123+00:00"),
            Ok(Duration::new(951_825_600, 123_456_789))
        );
        assert_eq!(at("2016-12-31T23:59:60Z"), at("2016-12-31T23:59:59Z"));
        for (s, e) in [
            ("2026-11-26", ParseError::Format),
            ("2026-11-26T10:00", ParseError::Format),
            ("2026-11-26T10:00:00.Z", ParseError::Format),
            ("2026-11-26T10:00:00ZZ", ParseError::Format),
            ("2026-11-26t10:00:00Z", ParseError::Format),
            ("２026-11-26T10:00:00Z", ParseError::Format),
            ("2026-13-01T00:00:00Z", ParseError::Range),
            ("2026-02-29T00:00:00Z", ParseError::Range),
            ("2026-04-31T00:00:00Z", ParseError::Range),
            ("2026-11-26T24:00:00Z", ParseError::Range),
            ("1969-12-31T23:59:59Z", ParseError::Range),
            ("10000-01-01T00:00:00Z", ParseError::Format),
            ("2026-11-26T10:00:00+02:00", ParseError::NotUtc),
            ("2026-11-26T10:00:00.5+02:00", ParseError::NotUtc),
            ("2026-11-26T10:00:00-00:00", ParseError::NotUtc),
        ] {
            assert_eq!(parse(s), Err(e), "{s}");
        }
    }

    /// Texts near the format: fields of any digits, separators and tails
    /// drawn from what the format allows and what it does not.
    fn near_rfc3339() -> impl Strategy<Value = String> {
        (
            (1960u64..10_010, 0u64..14, 0u64..33),
            (0u64..26, 0u64..61, 0u64..62),
            prop::sample::select(vec!["T", " ", "t", "_"]),
            prop::option::of("[0-9]{0,12}"),
            prop::sample::select(vec![
                "", "Z", "+00:00", "+02:00", "-00:00", "z", "Z ", "+0000",
            ]),
        )
            .prop_map(|((y, mo, d), (h, mi, s), sep, fraction, tail)| {
                let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{fraction}{tail}")
            })
    }

    proptest! {
        #[test]
        fn any_time_in_range_is_written_as_humantime_writes_it(
            ms in 0..END_SECS * 1000,
            nanos in 0u32..1_000_000,
        ) {
            let t = UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_nanos(u64::from(nanos));
            prop_assert_eq!(format_millis(t).unwrap(), humantime::format_rfc3339_millis(t).to_string());
            prop_assert_eq!(format_seconds(t).unwrap(), humantime::format_rfc3339_seconds(t).to_string());
        }

        /// Written, then read: the same time (to the millisecond).
        #[test]
        fn written_times_read_back(ms in 0..END_SECS * 1000) {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            prop_assert_eq!(parse(&format_millis(t).unwrap()), Ok(t));
        }

        /// Against humantime's `parse_rfc3339_weak`: every time read is
        /// the time it reads; where only humantime reads one, the text has
        /// an empty fraction or an offset other than UTC after a fraction
        /// (which humantime takes as UTC).
        #[test]
        fn reads_as_humantime_reads(s in near_rfc3339()) {
            let theirs = humantime::parse_rfc3339_weak(&s);
            match parse(&s) {
                Ok(t) => prop_assert_eq!(theirs, Ok(t), "{}", s),
                Err(e) => {
                    if theirs.is_ok() {
                        // humantime takes any tail after a `Z` in the
                        // 26 bytes it looks at.
                        let z_tail = !s.contains('.') && s.as_bytes().get(19) == Some(&b'Z');
                        let lenient = s.contains(".Z") || s.ends_with('.') || s.contains(".+")
                            || (s.contains('.') && e == ParseError::NotUtc) || z_tail;
                        prop_assert!(lenient, "{} refused ({:?}) but humantime reads it", s, e);
                    }
                }
            }
        }

        #[test]
        fn any_text_is_read_or_refused(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }
    }
}
