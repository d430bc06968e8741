//! Sizes ("512MiB", "1G", 4096) and durations ("15m", "1.5s", "250ms", 30).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A byte count, written in policies as an integer or a string with a binary or decimal unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration, written in policies as seconds (integer) or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

const SIZE_HINT: &str = "write a size like \"512MiB\", \"2GiB\", \"64M\" or a number of bytes";
const DUR_HINT: &str = "write a duration like \"30s\", \"15m\", \"1h30m\", \"250ms\" or a number of seconds";

pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("{text:?} is not a size; {SIZE_HINT}"));
    }
    let value: f64 = num.parse().map_err(|_| format!("{text:?} is not a size; {SIZE_HINT}"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "KB" | "k" | "kB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "Ti" | "TiB" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {text:?}; {SIZE_HINT}")),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(format!("{text:?} is out of range; {SIZE_HINT}"));
    }
    Ok(bytes.round() as u64)
}

/// A duration: one number with a unit (`"15m"`, `"1.5s"`, `"250ms"`), a plain number of
/// seconds, or several numbers with units added up (`"1h30m"`, `"2m 30s"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let out_of_range = || format!("{text:?} is out of range; {DUR_HINT}");
    let mut rest = t;
    let mut nanos: u128 = 0;
    let mut parts = 0;
    while parts == 0 || !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let split = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(split);
        if parts > 0 && unit.trim().is_empty() {
            return Err(format!(
                "{text:?}: {num:?} has no unit; every part of a duration made of several needs one, like \"1h30m\""
            ));
        }
        nanos = nanos.checked_add(duration_part(text, num, unit.trim())?).ok_or_else(out_of_range)?;
        parts += 1;
        rest = next.trim_start();
    }
    if nanos > 10 * 365 * 86_400 * 1_000_000_000 {
        return Err(out_of_range());
    }
    Ok(Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32))
}

/// Nanoseconds of one `NUMBER UNIT` part of `text`.
fn duration_part(text: &str, num: &str, unit: &str) -> Result<u128, String> {
    if num.is_empty() || num.parse::<f64>().is_err() {
        return Err(format!("{text:?} is not a duration; {DUR_HINT}"));
    }
    let unit_nanos: u128 = match unit {
        "" | "s" | "sec" => 1_000_000_000,
        "ms" => 1_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}; {DUR_HINT}")),
    };
    // Exact decimal arithmetic, so a duration printed as "1234ms" reads back as exactly that.
    let out_of_range = || format!("{text:?} is out of range; {DUR_HINT}");
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| out_of_range())? };
    let frac = &frac[..frac.len().min(18)];
    let frac_nanos = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().map_err(|_| out_of_range())?;
        (digits * unit_nanos + 10u128.pow(frac.len() as u32) / 2) / 10u128.pow(frac.len() as u32)
    };
    whole.checked_mul(unit_nanos).and_then(|n| n.checked_add(frac_nanos)).ok_or_else(out_of_range)
}

pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, size) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{name}", bytes / size);
        }
    }
    format!("{bytes}")
}

/// Prints a duration the way policies are serialised: whole seconds (`"900s"`), else
/// milliseconds (`"1500ms"`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        // Finer than a millisecond: decimal seconds, which read back exactly (printing it
        // in whole milliseconds lost the rest: found by the policy_parse fuzz target).
        format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

struct SizeVisitor;
impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SIZE_HINT)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| E::custom(format!("{v} is negative; {SIZE_HINT}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
        Err(E::custom(format!("{v} is not a whole number of bytes; {SIZE_HINT}")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        parse_size(v).map(ByteSize).map_err(E::custom)
    }
}
impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct DurVisitor;
impl Visitor<'_> for DurVisitor {
    type Value = Dur;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(DUR_HINT)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
        parse_duration(&v.to_string()).map(Dur).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
        if v < 0 {
            return Err(E::custom(format!("{v} is negative; {DUR_HINT}")));
        }
        parse_duration(&v.to_string()).map(Dur).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
        parse_duration(&v.to_string()).map(Dur).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
        parse_duration(v).map(Dur).map_err(E::custom)
    }
}
impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_back_exactly() {
        for text in ["30s", "250ms", "3333.3333334", "0.000001s", "1.5s", "90m"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text} -> {}", format_duration(d));
        }
        assert_eq!(format_duration(Duration::from_nanos(3_333_333_334_000)), "3333.333334000s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64M"), Ok(64_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert_eq!(parse_duration("12792246174ms"), Ok(Duration::from_millis(12_792_246_174)));
        assert_eq!(parse_duration("0.0000000005s"), Ok(Duration::from_nanos(1)));
        assert!(parse_duration("3651d").unwrap_err().contains("out of range"));
        // Several parts add up.
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m 30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("1m0.5s"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse_duration("1d1ms"), Ok(Duration::from_millis(86_400_001)));
        assert!(parse_duration("1h30").unwrap_err().contains("has no unit"));
        assert!(parse_duration("1h 5 fortnights").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("3650d1d").unwrap_err().contains("out of range"));
        assert!(parse_duration("h").is_err());
    }
}
