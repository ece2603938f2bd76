//! Whether a version lies in an OSV package's ranges, by the package manager's own order
//! (`packages::versions`), as the OSV schema's evaluation says: events sorted by version
//! (`introduced: "0"` before all), a version is affected from an `introduced` up to a `fixed`
//! (excluded) or a `last_affected` (included), and below any `limit`; or when the package's
//! `versions` list it. The fixed version reported for an affected version is the first
//! `fixed` above it.

use crate::packages::versions;
use serde_json::Value;
use std::cmp::Ordering;

/// One event of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl Event {
    fn version(&self) -> &str {
        match self {
            Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
        }
    }
}

/// An ECOSYSTEM or SEMVER range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub events: Vec<Event>,
}

impl Range {
    /// A range of the record; `None` for a GIT range (commits, not versions).
    pub fn parse(range: &Value) -> Result<Option<Range>, String> {
        match range.get("type").and_then(Value::as_str) {
            Some("ECOSYSTEM" | "SEMVER") => {}
            Some("GIT") => return Ok(None),
            Some(other) => return Err(format!("unknown range type {other:?}")),
            None => return Err("a range has no type".into()),
        }
        let events = range.get("events").and_then(Value::as_array).ok_or("a range has no events")?;
        let mut out = Vec::new();
        for event in events {
            let object = event.as_object().ok_or("an event is not an object")?;
            for (key, value) in object {
                let v = value.as_str().ok_or_else(|| format!("event {key} is not a string"))?.to_string();
                out.push(match key.as_str() {
                    "introduced" => Event::Introduced(v),
                    "fixed" => Event::Fixed(v),
                    "last_affected" => Event::LastAffected(v),
                    "limit" => Event::Limit(v),
                    other => return Err(format!("unknown event {other:?}")),
                });
            }
        }
        Ok(Some(Range { events: out }))
    }

    /// The range as JSON (`[{"introduced": "0"}, {"fixed": "1.2-3"}]`), as the catalog keeps it.
    pub fn to_json(ranges: &[Range]) -> String {
        let list: Vec<Value> = ranges
            .iter()
            .map(|r| {
                let events: Vec<Value> = r
                    .events
                    .iter()
                    .map(|e| {
                        let key = match e {
                            Event::Introduced(_) => "introduced",
                            Event::Fixed(_) => "fixed",
                            Event::LastAffected(_) => "last_affected",
                            Event::Limit(_) => "limit",
                        };
                        serde_json::json!({ key: e.version() })
                    })
                    .collect();
                Value::Array(events)
            })
            .collect();
        Value::Array(list).to_string()
    }

    /// The ranges [`Range::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Vec<Range>, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("ranges are not JSON: {e}"))?;
        let lists = value.as_array().ok_or("ranges are not a list")?;
        lists
            .iter()
            .map(|events| {
                let range = serde_json::json!({ "type": "ECOSYSTEM", "events": events });
                Range::parse(&range).map(|r| r.unwrap_or(Range { events: Vec::new() }))
            })
            .collect()
    }

    /// `Some(fixed)` if `version` lies in the range (`fixed` the first fix above it, if any).
    pub fn affects(&self, manager: &str, version: &str) -> Option<Option<String>> {
        let cmp = |a: &str, b: &str| versions::compare(manager, a, b).unwrap_or_else(|| a.cmp(b));
        // "0" is before every version, whatever the order says of it.
        fn key(e: &Event) -> (bool, &str) {
            (!(matches!(e, Event::Introduced(v) if v == "0")), e.version())
        }
        let mut events: Vec<&Event> = self.events.iter().collect();
        events.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then_with(|| if ka.0 { cmp(ka.1, kb.1) } else { Ordering::Equal })
        });
        for limit in events.iter().filter_map(|e| if let Event::Limit(l) = e { Some(l) } else { None }) {
            if cmp(version, limit) != Ordering::Less {
                return None;
            }
        }
        let mut affected = false;
        let mut index = 0;
        for (i, event) in events.iter().enumerate() {
            let at_or_below = |v: &str| !key(event).0 || cmp(v, version) != Ordering::Greater;
            match event {
                Event::Limit(_) => {}
                Event::Introduced(v) if at_or_below(v) => affected = true,
                Event::Fixed(v) if at_or_below(v) => affected = false,
                Event::LastAffected(v) if cmp(v, version) == Ordering::Less => affected = false,
                // The first event above the version: the state up to here is the version's.
                Event::Introduced(_) | Event::Fixed(_) | Event::LastAffected(_) => break,
            }
            index = i + 1;
        }
        if !affected {
            return None;
        }
        let fixed = events[index..].iter().find_map(|e| if let Event::Fixed(v) = e { Some(v.clone()) } else { None });
        Some(fixed)
    }
}

/// Whether `version` is affected by a package's `ranges` or `versions`: `Some(fixed)` (the
/// fixed version, if the range containing it has one) or `None`.
pub fn affects(manager: &str, ranges: &[Range], listed: &[&str], version: &str) -> Option<Option<String>> {
    let mut found: Option<Option<String>> = None;
    for range in ranges {
        if let Some(fixed) = range.affects(manager, version) {
            // Of several ranges that hold it, one with a fix is the more useful answer.
            if found.as_ref().is_none_or(|f| f.is_none()) {
                found = Some(fixed);
            }
        }
    }
    if found.is_none() && listed.contains(&version) {
        found = Some(None);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(events: &[(&str, &str)]) -> Range {
        let events = events
            .iter()
            .map(|(k, v)| match *k {
                "introduced" => Event::Introduced(v.to_string()),
                "fixed" => Event::Fixed(v.to_string()),
                "last_affected" => Event::LastAffected(v.to_string()),
                _ => Event::Limit(v.to_string()),
            })
            .collect();
        Range { events }
    }

    #[test]
    fn ranges_by_the_managers_order() {
        let fixed = range(&[("introduced", "0"), ("fixed", "2.36-9+deb12u4")]);
        assert_eq!(fixed.affects("dpkg", "2.36-9+deb12u3"), Some(Some("2.36-9+deb12u4".into())));
        assert_eq!(fixed.affects("dpkg", "2.36-9"), Some(Some("2.36-9+deb12u4".into())));
        assert_eq!(fixed.affects("dpkg", "2.36-9+deb12u4"), None);
        assert_eq!(fixed.affects("dpkg", "2.36-10"), None);
        // As text "2.36-9+deb12u10" < "2.36-9+deb12u4"; by dpkg's order it is newer.
        assert_eq!(fixed.affects("dpkg", "2.36-9+deb12u10"), None);
        let inclusive = range(&[("introduced", "1.0"), ("last_affected", "1.4")]);
        assert_eq!(inclusive.affects("dpkg", "1.4"), Some(None));
        assert_eq!(inclusive.affects("dpkg", "1.4.1"), None);
        assert_eq!(inclusive.affects("dpkg", "0.9"), None);
        // Two windows, out of order in the record.
        let windows = range(&[("fixed", "1.5"), ("introduced", "2.0"), ("introduced", "1.0"), ("fixed", "2.3")]);
        assert_eq!(windows.affects("rpm", "1.2-1"), Some(Some("1.5".into())));
        assert_eq!(windows.affects("rpm", "1.7"), None);
        assert_eq!(windows.affects("rpm", "2.1"), Some(Some("2.3".into())));
        let limited = range(&[("introduced", "0"), ("limit", "3.0")]);
        assert_eq!((limited.affects("apk", "2.9-r0"), limited.affects("apk", "3.1-r0")), (Some(None), None));
        assert_eq!(affects("dpkg", &[], &["1.2-3"], "1.2-3"), Some(None));
        assert_eq!(affects("dpkg", &[], &["1.2-3"], "1.2-4"), None);
        let json = Range::to_json(std::slice::from_ref(&windows));
        assert_eq!(Range::from_json(&json).unwrap(), vec![windows]);
    }
}
