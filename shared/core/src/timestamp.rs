//! Event timestamps, normalised to UTC with millisecond precision so that
//! their RFC 3339 text sorts in time order (the stores rely on it).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A point in time, UTC, millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// From an [`OffsetDateTime`], truncated to milliseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        Timestamp((dt.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// The same instant as an [`OffsetDateTime`] in UTC.
    pub fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Parses RFC 3339 (any offset) and Keptn's offset-less `2006-01-02T15:04:05[.000]` form (read as UTC).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(Self::from_datetime(dt));
        }
        // Keptn's CLI sends local-less "2006-01-02T15:04:05"; treat it as UTC.
        let with_z = format!("{s}Z");
        OffsetDateTime::parse(&with_z, &Rfc3339)
            .ok()
            .map(Self::from_datetime)
    }

    /// `self + d`.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.whole_milliseconds() as i64))
    }

    /// `self - d`.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.whole_milliseconds() as i64))
    }

    /// Text as `YYYY-MM-DDThh:mm:ss.mmmZ`.
    pub fn to_rfc3339(self) -> String {
        let dt = self.to_datetime().to_offset(UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            dt.year(),
            dt.month() as u8,
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond()
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_text_round_trips_and_sorts_in_time_order() {
        let a = Timestamp::parse("2023-01-01T10:00:00.5+01:00").unwrap();
        assert_eq!(a.to_rfc3339(), "2023-01-01T09:00:00.500Z");
        let b = Timestamp::parse("2023-01-01T09:00:01Z").unwrap();
        assert!(a < b);
        assert!(a.to_rfc3339() < b.to_rfc3339());
        assert_eq!(Timestamp::parse(&a.to_rfc3339()), Some(a));
    }

    #[test]
    fn keptn_cli_time_without_offset_is_read_as_utc() {
        let t = Timestamp::parse("2006-01-02T15:04:05").unwrap();
        assert_eq!(t.to_rfc3339(), "2006-01-02T15:04:05.000Z");
        assert_eq!(Timestamp::parse("yesterday"), None);
    }
}
