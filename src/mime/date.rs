//! The Date header field to RFC 3339 UTC (`date_iso` in meta.json, README,
//! "The spool"): RFC 5322 section 3.3 dates, obsolete forms (section 4.3)
//! included.

use super::header::strip_comment;

/// RFC 3339 UTC form of an RFC 5322 date (obsolete forms included), or None.
///
/// Parsed here rather than by mailparse::dateparse, which returns `Ok(0)`
/// for text without a day number, rejects times without seconds (which RFC
/// 5322 allows), accepts 31 February, and fails on the unknown alphabetic
/// zones that RFC 5322 section 4.3 says to read as -0000. (The tests check
/// this parser against dateparse on the canonical form of each date.)
pub fn date_iso(date: &str) -> Option<String> {
    Some(format_utc(
        DateTime::parse(strip_comment(date))?.timestamp(),
    ))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 5322 section 4.3 zone names and their offsets in hours; any other
/// alphabetic zone reads as -0000.
const ZONES: [(&str, i64); 11] = [
    ("UT", 0),
    ("UTC", 0),
    ("GMT", 0),
    ("EST", -5),
    ("EDT", -4),
    ("CST", -6),
    ("CDT", -5),
    ("MST", -7),
    ("MDT", -6),
    ("PST", -8),
    ("PDT", -7),
];

/// Days in `month` (0 for January) of `year`, proleptic Gregorian.
fn days_in_month(year: i64, month: usize) -> i64 {
    const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    DAYS[month] + i64::from(month == 1 && leap)
}

/// A date's fields, checked: a real calendar day, 00:00:00 to 23:59:60.
struct DateTime {
    year: i64,
    /// 0 for January.
    month: usize,
    day: i64,
    hms: [i64; 3],
    /// East of UTC.
    offset_minutes: i64,
}

impl DateTime {
    fn parse(date: &str) -> Option<DateTime> {
        let mut tokens = date
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .skip_while(|t| !(t.len() <= 2 && t.bytes().all(|c| c.is_ascii_digit())));
        let day: i64 = tokens.next()?.parse().ok()?;
        let month = tokens.next()?.as_bytes();
        let month = MONTHS.iter().position(|m| {
            month
                .get(..3)
                .is_some_and(|p| p.eq_ignore_ascii_case(m.as_bytes()))
        })?;
        let year_tok = tokens.next()?;
        if !(year_tok.len() == 2 || year_tok.len() == 4) {
            return None;
        }
        let mut year: i64 = year_tok.parse().ok()?;
        // RFC 5322 section 4.3: two-digit years 00-49 are 20xx, 50-99 are 19xx.
        if year < 50 && year_tok.len() == 2 {
            year += 2000;
        } else if year < 100 && year_tok.len() == 2 {
            year += 1900;
        }
        if year < 1970 {
            return None;
        }
        if day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let mut hms = [0i64; 3];
        let mut parts = 0;
        for (k, part) in tokens.next()?.split(':').enumerate() {
            let limit = *[23, 59, 60].get(k)?;
            if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            hms[k] = part.parse().ok()?;
            if hms[k] > limit {
                return None;
            }
            parts += 1;
        }
        if parts < 2 {
            return None;
        }
        let offset_minutes = match tokens.next().map(str::as_bytes) {
            Some(&[sign @ (b'+' | b'-'), h1, h2, m1, m2])
                if [h1, h2, m1, m2].iter().all(u8::is_ascii_digit) =>
            {
                let n = |a: u8, b: u8| i64::from(a - b'0') * 10 + i64::from(b - b'0');
                let minutes = n(h1, h2) * 60 + n(m1, m2);
                if sign == b'-' {
                    -minutes
                } else {
                    minutes
                }
            }
            Some(z) => ZONES
                .iter()
                .find(|(name, _)| z.eq_ignore_ascii_case(name.as_bytes()))
                .map_or(0, |(_, hours)| hours * 60),
            None => 0,
        };
        Some(DateTime {
            year,
            month,
            day,
            hms,
            offset_minutes,
        })
    }

    /// Seconds since the epoch (a leap second counts as the next minute's
    /// first, as dateparse has it).
    fn timestamp(&self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let m = self.month as i64 + 1;
        let y = self.year - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let [h, mi, s] = self.hms;
        days * 86_400 + h * 3600 + mi * 60 + s - self.offset_minutes * 60
    }
}

/// Seconds since the epoch to `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
pub fn format_utc(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            date_iso("Sun, 02 Oct 2016 07:06:22 -0700 (PDT)").as_deref(),
            Some("2016-10-02T14:06:22Z")
        );
        assert_eq!(
            date_iso("2 Oct 16 07:06 GMT").as_deref(),
            Some("2016-10-02T07:06:00Z")
        );
        assert_eq!(
            date_iso("Mon, 1 Jun 2026 10:00:00 +0200 (CEST)").as_deref(),
            Some("2026-06-01T08:00:00Z")
        );
        // Unknown alphabetic zone: -0000 (RFC 5322 section 4.3).
        assert_eq!(
            date_iso("1 Jun 2026 10:00:00 CEST").as_deref(),
            Some("2026-06-01T10:00:00Z")
        );
        assert_eq!(
            date_iso("Fri, 21 Nov 97 09:55:06 GMT").as_deref(),
            Some("1997-11-21T09:55:06Z")
        );
        assert_eq!(date_iso("hello"), None);
        assert_eq!(date_iso("12 Foo 2020 10:00:00"), None);
        assert_eq!(date_iso("31 Feb 2020 00:00:00 +0000"), None);
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(date_iso("1 Jan 2026 10:00:00:00"), None);
        assert_eq!(date_iso("1 Jan 2026 10"), None);
        assert_eq!(date_iso("1 Jan 1969 10:00"), None);
        assert_eq!(
            date_iso("29 Feb 2024 23:59:60 +0000").as_deref(),
            Some("2024-03-01T00:00:00Z")
        );
    }

    /// The parser agrees with mailparse::dateparse on the canonical form of
    /// every date: each month and zone, leap years, both year forms, leap
    /// seconds, times without seconds.
    #[test]
    fn dates_agree_with_dateparse() {
        let zones = [
            "+0000", "-0000", "+0530", "-1100", "+1400", "GMT", "ut", "Est", "PDT",
        ];
        let mut n = 0u64;
        for year in [
            "1970", "99", "00", "49", "2000", "2024", "2100", "2400", "2099",
        ] {
            for (month, name) in MONTHS.iter().enumerate() {
                for day in [1, 28, 29, 30, 31] {
                    for time in ["00:00", "23:59:60", "12:34:56"] {
                        n += 1;
                        let zone = zones[(n % zones.len() as u64) as usize];
                        let text = format!("{day} {name} {year} {time} {zone}");
                        let ours = DateTime::parse(&text);
                        let y = year.parse::<i64>().unwrap();
                        let full = match (year.len(), y) {
                            (2, 0..=49) => y + 2000,
                            (2, _) => y + 1900,
                            _ => y,
                        };
                        let valid = day <= days_in_month(full, month);
                        assert_eq!(ours.is_some(), valid, "{text}");
                        let Some(ours) = ours else { continue };
                        let seconds = if time.len() == 5 { ":00" } else { "" };
                        let canonical = format!(
                            "{day} {name} {full} {time}{seconds} {}",
                            zone.to_uppercase()
                        );
                        let theirs = mailparse::dateparse(&canonical).unwrap();
                        assert_eq!(ours.timestamp(), theirs, "{text} / {canonical}");
                    }
                }
            }
        }
    }
}
