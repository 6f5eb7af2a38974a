//! Sizes (`4G`) and durations (`30s`, `5m`) as written in manifests and config.
//!
//! Sizes use powers of 1024 as systemd does for `MemoryMax=`; durations take
//! `ms`, `s`, `m`, `h` and `d`, and a plain number means seconds.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}: {rule}")]
pub struct QuantityError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

/// Parses a size such as `512M`, `4G`, `4GiB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, QuantityError> {
    let err = |rule| QuantityError {
        what: "size",
        value: s.to_owned(),
        rule,
    };
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(err("expected a number followed by K, M, G or T"));
    }
    let n: u64 = t[..digits_end]
        .parse()
        .map_err(|_| err("number is too large"))?;
    let unit = t[digits_end..].trim();
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(err("unit must be one of K, M, G, T (powers of 1024)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| err("size is too large"))
}

/// Parses a duration such as `30s`, `5m`, `1h30m`, `250ms` or a plain number of
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, QuantityError> {
    let err = |rule| QuantityError {
        what: "duration",
        value: s.to_owned(),
        rule,
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(err("must not be empty"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t.parse().map_err(|_| err("number is too large"))?;
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(err("expected a number followed by ms, s, m, h or d"));
        }
        let n: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| err("number is too large"))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_end].trim();
        rest = rest[unit_end..].trim_start();
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(err("unit must be one of ms, s, m, h, d")),
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| err("duration is too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("4G", Some(4 << 30)),
            ("512M", Some(512 << 20)),
            ("3GiB", Some(3 << 30)),
            ("100", Some(100)),
            ("1K", Some(1024)),
            ("4X", None),
            ("G", None),
            ("-1G", None),
            ("99999999999T", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s).ok(), *want, "case {s:?}");
        }
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("30s", Some(30_000)),
            ("30", Some(30_000)),
            ("5m", Some(300_000)),
            ("1h30m", Some(5_400_000)),
            ("250ms", Some(250)),
            ("2d", Some(172_800_000)),
            ("5 m", Some(300_000)),
            ("s", None),
            ("5y", None),
            ("", None),
            ("-5s", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_duration(s).ok().map(|d| d.as_millis() as u64),
                *want,
                "case {s:?}"
            );
        }
    }
}
