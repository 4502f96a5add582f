//! Ages on the command line (`--older-than 7d`) and in human output (`3h 12m`).

use std::time::Duration;

/// `30s`, `15m`, `2h`, `7d` or `2w`: a whole number and one unit.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("bad duration `{text}`: write a whole number and a unit, such as 30s, 15m, 2h, 7d or 2w")
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// An age of `millis` milliseconds as its two largest units: `2d 3h`, `4m 10s`, `950ms`.
pub fn show_age(millis: i64) -> String {
    let millis = millis.max(0);
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = millis / 1000;
    let units = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (name, size) in units {
        if rest >= size || !parts.is_empty() {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_one_unit() {
        assert_eq!(parse_age("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("1w"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "1.5h",
            "-3d",
            "7 days",
            "99999999999999999999d",
        ] {
            let err = parse_age(bad).unwrap_err();
            assert!(err.contains("bad duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn ages_show_their_two_largest_units() {
        assert_eq!(show_age(950), "950ms");
        assert_eq!(show_age(61_000), "1m 1s");
        assert_eq!(show_age(3 * 86_400_000 + 7_200_000 + 5000), "3d 2h");
        assert_eq!(show_age(3_600_000), "1h 0m");
        assert_eq!(show_age(-5), "0ms");
    }
}
