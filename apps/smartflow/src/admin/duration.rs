//! Ages in human output (`3h 12m`); on the command line (`--older-than 7d`) they parse as in
//! the admin HTTP API (`smartflow_service::admin::selection::parse_age`).

pub use smartflow_service::admin::selection::parse_age;

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
    fn ages_show_their_two_largest_units() {
        assert_eq!(show_age(950), "950ms");
        assert_eq!(show_age(61_000), "1m 1s");
        assert_eq!(show_age(3 * 86_400_000 + 7_200_000 + 5000), "3d 2h");
        assert_eq!(show_age(3_600_000), "1h 0m");
        assert_eq!(show_age(-5), "0ms");
    }
}
