//! Cron expressions of schedules: the standard five-field form users write, translated for the
//! `cron` crate, and the fire times of an expression in a time zone.
//!
//! The crate wants a seconds field first and numbers weekdays Quartz-style (1 = Sunday … 7 =
//! Saturday, no 0), while the five-field form is POSIX (0 or 7 = Sunday, 1 = Monday … 6 =
//! Saturday). Five-field expressions therefore get `0` seconds prepended and their numeric
//! weekdays rewritten; six- and seven-field expressions are the crate's own syntax, taken as
//! written.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed cron expression with its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    zone: Tz,
}

impl CronSchedule {
    /// Parses `expression` (five fields, or the crate's six or seven with seconds first) in
    /// `zone` (an IANA name; UTC if absent). The error says which forms are expected.
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let crate_form = match fields.len() {
            5 => {
                let weekdays = posix_weekdays_to_quartz(fields[4])?;
                format!("0 {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], weekdays)
            }
            6 | 7 => expression.to_string(),
            count => {
                return Err(format!(
                    "'{expression}' has {count} field(s); expected the standard five (minute hour day-of-month \
                     month day-of-week, like \"*/15 * * * *\") or six/seven with seconds first (like \"0 */15 * * * *\")"
                ))
            }
        };
        let schedule = cron::Schedule::from_str(&crate_form)
            .map_err(|error| format!("'{expression}' is not a valid cron expression: {error}"))?;
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name)
                .map_err(|_| format!("'{name}' is not a time zone name (use an IANA name like \"Europe/Paris\")"))?,
        };
        Ok(CronSchedule { schedule, zone })
    }

    /// The fire times strictly after `after_ms` (ms since the Unix epoch), in order.
    pub fn fires_after(&self, after_ms: u64) -> impl Iterator<Item = u64> + '_ {
        let after: DateTime<Utc> = Utc
            .timestamp_millis_opt(after_ms as i64)
            .single()
            .unwrap_or_else(Utc::now);
        self.schedule
            .after(&after.with_timezone(&self.zone))
            .map(|fire| fire.timestamp_millis().max(0) as u64)
    }
}

/// Rewrites a POSIX day-of-week field (0 or 7 = Sunday … 6 = Saturday) for the crate (1 =
/// Sunday … 7 = Saturday). Wildcards and names are kept; numbers, ranges and steps over numbers
/// are expanded into an explicit list.
fn posix_weekdays_to_quartz(field: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in field.split(',') {
        let (base, step) = match part.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (part, None),
        };
        if base == "*" || base.chars().any(|character| character.is_ascii_alphabetic()) {
            parts.push(part.to_string());
            continue;
        }
        let number = |text: &str| -> Result<u32, String> {
            text.parse::<u32>()
                .ok()
                .filter(|day| *day <= 7)
                .ok_or_else(|| format!("day-of-week '{text}' is not 0-7 (0 and 7 are Sunday) or a name like MON"))
        };
        let (first, last) = match base.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => {
                let day = number(base)?;
                (day, if step.is_some() { 7 } else { day })
            }
        };
        let step = match step {
            None => 1,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|step| *step > 0)
                .ok_or_else(|| format!("day-of-week step '{text}' is not a positive number"))?,
        };
        if first > last {
            return Err(format!("day-of-week range '{base}' runs backwards"));
        }
        for day in (first..=last).step_by(step as usize) {
            parts.push((day % 7 + 1).to_string());
        }
    }
    parts.dedup();
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, Timelike, Weekday};

    use super::*;

    fn ms(text: &str) -> u64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis() as u64
    }

    fn weekdays(expression: &str) -> Vec<Weekday> {
        let schedule = CronSchedule::parse(expression, None).unwrap();
        // From Saturday 2026-08-01 00:00 UTC, one week of daily 09:00 fires.
        schedule
            .fires_after(ms("2026-08-01T00:00:00Z"))
            .take_while(|fire| *fire < ms("2026-08-08T00:00:00Z"))
            .map(|fire| Utc.timestamp_millis_opt(fire as i64).unwrap().weekday())
            .collect()
    }

    #[test]
    fn five_field_weekdays_mean_what_crontab_means() {
        use Weekday::*;
        assert_eq!(weekdays("0 9 * * 1-5"), vec![Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 9 * * 0"), vec![Sun]);
        assert_eq!(weekdays("0 9 * * 7"), vec![Sun]);
        assert_eq!(weekdays("0 9 * * 5-7"), vec![Sat, Sun, Fri]);
        assert_eq!(weekdays("0 9 * * 1,3"), vec![Mon, Wed]);
        assert_eq!(weekdays("0 9 * * MON-FRI"), vec![Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 9 * * */2").len(), 4);
    }

    #[test]
    fn every_fifteen_minutes_fires_on_the_quarter_hours() {
        let schedule = CronSchedule::parse("*/15 * * * *", None).unwrap();
        let fires: Vec<u64> = schedule.fires_after(ms("2026-11-23T10:07:00Z")).take(3).collect();
        assert_eq!(
            fires,
            vec![
                ms("2026-11-23T10:15:00Z"),
                ms("2026-11-23T10:30:00Z"),
                ms("2026-11-23T10:45:00Z")
            ]
        );
    }

    #[test]
    fn a_zone_shifts_the_wall_clock_time() {
        let schedule = CronSchedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        let fire = schedule.fires_after(ms("2026-11-23T00:00:00Z")).next().unwrap();
        let utc = Utc.timestamp_millis_opt(fire as i64).unwrap();
        assert_eq!(
            (utc.hour(), utc.minute()),
            (8, 0),
            "09:00 in Paris in winter is 08:00 UTC"
        );
    }

    #[test]
    fn the_seconds_form_is_taken_as_written() {
        let schedule = CronSchedule::parse("30 0 * * * *", None).unwrap();
        let fire = schedule.fires_after(ms("2026-11-23T10:00:31Z")).next().unwrap();
        assert_eq!(fire, ms("2026-11-23T11:00:30Z"));
    }

    #[test]
    fn errors_say_which_form_was_expected() {
        let error = CronSchedule::parse("* * *", None).unwrap_err();
        assert!(error.contains("has 3 field(s); expected the standard five"), "{error}");
        let error = CronSchedule::parse("0 9 * * 8", None).unwrap_err();
        assert!(error.contains("day-of-week '8' is not 0-7"), "{error}");
        let error = CronSchedule::parse("61 * * * *", None).unwrap_err();
        assert!(error.contains("not a valid cron expression"), "{error}");
        let error = CronSchedule::parse("0 9 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(error.contains("not a time zone name"), "{error}");
    }
}
