//! Budget windows (`budget_duration`) as LiteLLM writes them: `30s`, `30m`, `24h`, `30d`,
//! `1mo`. The next reset is the current time plus the window, computed by PostgreSQL's
//! interval arithmetic (so `1mo` is a calendar month).

use crate::error::StoreError;

/// A validated `budget_duration`, as a PostgreSQL interval literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// What the user wrote, stored back unchanged.
    pub text: String,
    /// `"30 days"`, `"1 months"`, ...
    pub interval: String,
}

pub fn parse(text: &str) -> Result<Window, StoreError> {
    let bad = || {
        StoreError::Invalid(format!(
            "budget_duration `{text}`: expected a number and a unit: s, m, h, d or mo (e.g. 30d)"
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u32 = n.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    let unit = match unit {
        "s" => "seconds",
        "m" => "minutes",
        "h" => "hours",
        "d" => "days",
        "mo" => "months",
        _ => return Err(bad()),
    };
    Ok(Window {
        text: t.to_owned(),
        interval: format!("{n} {unit}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litellm_units() {
        assert_eq!(parse("30d").unwrap().interval, "30 days");
        assert_eq!(parse("1mo").unwrap().interval, "1 months");
        assert_eq!(parse(" 90s ").unwrap().interval, "90 seconds");
        for bad in ["", "d", "30", "30x", "0d", "-1d", "1.5h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
