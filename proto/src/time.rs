//! Unix time ⇄ calendar dates and the ISO 8601 texts LiteLLM's API uses (UTC), without a
//! date library: the proleptic Gregorian calendar, by whole days.

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `2026-11-23T10:00:00Z`.
pub fn iso(unix_secs: i64) -> String {
    let (y, m, d) = civil_from_days(unix_secs.div_euclid(86_400));
    let s = unix_secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Unix seconds of `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ`, exactly (the
/// admin API's `DATE_PATTERN`).
pub fn parse(text: &str) -> Option<i64> {
    let number = |from: usize, to: usize| {
        text.get(from..to)
            .filter(|part| part.bytes().all(|b| b.is_ascii_digit()))?
            .parse::<u32>()
            .ok()
    };
    let at = |i: usize, c: u8| text.as_bytes().get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-')) {
        return None;
    }
    let (y, m, d) = (i64::from(number(0, 4)?), number(5, 7)?, number(8, 10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return None; // February 30th and the like.
    }
    let secs = match text.len() {
        10 => 0,
        20 if at(10, b'T') && at(13, b':') && at(16, b':') && at(19, b'Z') => {
            let (h, mi, s) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
            if h > 23 || mi > 59 || s > 59 {
                return None;
            }
            i64::from(h * 3600 + mi * 60 + s)
        }
        _ => return None,
    };
    Some(days * 86_400 + secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_795_428_000), "2026-11-23T10:00:00Z");
        assert_eq!(iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(parse("2026-11-23T10:00:00Z"), Some(1_795_428_000));
        assert_eq!(parse("2000-02-29"), Some(951_782_400));
        assert_eq!(parse("0000-02-29"), Some(-62_162_121_600));
        assert_eq!(parse("9999-12-31T23:59:59Z"), Some(253_402_300_799));
        for bad in [
            "",
            "2026-02-30",
            "2100-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-1-05",
            "+2026-11-23",
            "yesterday",
            "2026-11-23T25:00:00Z",
            "2026-11-23T10:00:60Z",
            "2026-11-23T10:00:00",
            "2026-11-23 10:00:00Z",
            "2026-11-23T10:00Z",
            "2026-11-23T10:00:00.5Z",
            " 2026-11-23",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        for day in (-719_528..2_932_897).step_by(997) {
            let secs = day * 86_400 + 3_723;
            assert_eq!(parse(&iso(secs)), Some(secs));
        }
    }
}
