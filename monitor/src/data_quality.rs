//! Data-quality checks, apart from drift (as Evidently and NannyML keep them): per feature, the share of a window's
//! cells that are missing, outside the reference's range (numbers), categories the reference never had, or of the
//! wrong type (text where a number belongs, anything but 0 or 1 in a binary column). A feature can drift with clean
//! data, and a broken upstream join can empty a column without moving its distribution: these need a different
//! person to act, so they have their own section, gauges and alert (a ticket naming the feature, the share and an
//! example value). Examples do not depend on row order (the farthest out of range, the most frequent unseen category
//! or wrong value), except a live window's wrong-typed example: the window keeps no wrong values, so it is the
//! latest one seen.

use std::collections::HashSet;

use serde::Serialize;

use crate::drift::{ColumnKind, Values};

/// Longest example value kept, in bytes (cut at a character boundary): an example names the problem, it does not
/// carry the request.
pub const EXAMPLE_BYTES: usize = 64;

/// How many cells failed a check, their share of the window, and one of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Share {
    /// Cells that failed.
    pub count: u64,
    /// count / rows (0 without rows).
    pub share: f64,
    /// One failing value, as text (missing cells have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

/// One feature's checks over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureQuality {
    /// Rows checked.
    pub rows: u64,
    /// Missing cells (wrong-typed ones are counted apart).
    pub missing: Share,
    /// Numbers outside [min, max] of the reference (numeric features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_range: Option<Share>,
    /// Categories the reference never had (categorical features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_category: Option<Share>,
    /// Cells of the wrong type.
    pub wrong_type: Share,
}

impl FeatureQuality {
    /// A check's share by its name: missing, out_of_range, unseen_category or wrong_type.
    pub fn share(&self, check: &str) -> Option<f64> {
        self.check(check).map(|s| s.share)
    }

    /// A check by its name.
    pub fn check(&self, check: &str) -> Option<&Share> {
        match check {
            "missing" => Some(&self.missing),
            "out_of_range" => self.out_of_range.as_ref(),
            "unseen_category" => self.unseen_category.as_ref(),
            "wrong_type" => Some(&self.wrong_type),
            _ => None,
        }
    }
}

/// The checks, by name.
pub const CHECKS: [&str; 4] = ["missing", "out_of_range", "unseen_category", "wrong_type"];

/// What the reference allows for one feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// Numbers from min to max (`None`: the reference has none, so nothing is out of range).
    Range(Option<(f64, f64)>),
    /// The reference's categories.
    Categories(HashSet<String>),
    /// 0 and 1.
    Binary,
}

impl Domain {
    /// The domain of a reference column.
    pub fn of(kind: ColumnKind, reference: &Values) -> Self {
        match (kind, reference) {
            (ColumnKind::Binary, _) => Domain::Binary,
            (_, Values::Numeric(v)) => Domain::Range(v.iter().flatten().fold(None, |range, &x| match range {
                None => Some((x, x)),
                Some((lo, hi)) => Some((f64::min(lo, x), f64::max(hi, x))),
            })),
            (_, Values::Categorical(v)) => Domain::Categories(v.counts().map(|(c, _)| c.to_owned()).collect()),
        }
    }
}

/// Cuts `text` to [`EXAMPLE_BYTES`] at a character boundary.
pub fn example(text: &str) -> String {
    let mut end = text.len().min(EXAMPLE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The most frequent value (the smallest on a tie) and how many values there were in all.
pub fn most_frequent<'a>(values: impl Iterator<Item = &'a str>) -> (Option<&'a str>, u64) {
    let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut all = 0;
    for value in values {
        *counts.entry(value).or_default() += 1;
        all += 1;
    }
    // max_by_key keeps the last of equal maxima; iterating in reverse makes that the smallest value.
    (counts.iter().rev().max_by_key(|(_, n)| **n).map(|(v, _)| *v), all)
}

/// A check's count over `rows`, with its example.
pub(crate) fn share(count: u64, rows: u64, example: Option<String>) -> Share {
    Share { count, share: if rows == 0 { 0.0 } else { count as f64 / rows as f64 }, example }
}

/// Checks a window's values of one feature. `wrong_type` cells are among the missing (`None`) values (a cell of
/// the wrong type is kept out of the statistics as missing) and are counted apart, with an example if known.
pub fn check(domain: &Domain, current: &Values, wrong_type: (u64, Option<String>)) -> FeatureQuality {
    let (wrong, wrong_example) = wrong_type;
    let (rows, absent) = (current.len() as u64, current.missing() as u64);
    let (mut out_of_range, mut unseen_category) = (None, None);
    match (domain, current) {
        // Examples do not depend on row order: the value farthest outside the range, the most frequent unseen
        // category (the smallest on a tie).
        (Domain::Range(range), Values::Numeric(v)) => {
            let (mut count, mut farthest) = (0u64, None::<(f64, f64)>);
            if let Some((lo, hi)) = range {
                for &x in v.iter().flatten().filter(|x| **x < *lo || **x > *hi) {
                    count += 1;
                    let distance = if x < *lo { lo - x } else { x - hi };
                    if farthest.is_none_or(|(d, f)| distance > d || (distance == d && x < f)) {
                        farthest = Some((distance, x));
                    }
                }
            }
            out_of_range = Some(share(count, rows, farthest.map(|(_, x)| format!("{x}"))));
        }
        (Domain::Categories(seen), Values::Categorical(v)) => {
            // Counted per distinct value, so each row costs a code, not a lookup.
            let unseen: Vec<(&str, u64)> = v.counts().filter(|(c, _)| !seen.contains(*c)).collect();
            let count = unseen.iter().map(|(_, n)| n).sum();
            let most = unseen.iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0))).map(|(c, _)| *c);
            unseen_category = Some(share(count, rows, most.map(example)));
        }
        // A binary column's typed values are 0 and 1; anything else arrived wrong-typed and is counted as such.
        _ => {}
    }
    FeatureQuality {
        rows,
        missing: share(absent.saturating_sub(wrong), rows, None),
        out_of_range,
        unseen_category,
        wrong_type: share(wrong, rows, wrong_example),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(v: &[Option<f64>]) -> Values {
        Values::Numeric(v.to_vec())
    }

    fn texts(v: &[Option<&str>]) -> Values {
        Values::Categorical(v.iter().copied().collect())
    }

    #[test]
    fn a_hand_made_numeric_window() {
        let domain = Domain::of(ColumnKind::Numeric, &numbers(&[Some(0.0), Some(10.0), None]));
        assert_eq!(domain, Domain::Range(Some((0.0, 10.0))));
        // 10 rows: 2 missing, 1 wrong-typed (stored as missing), 3 outside [0, 10], 4 fine.
        let window = numbers(&[
            None,
            None,
            None,
            Some(-1.0),
            Some(11.0),
            Some(12.5),
            Some(0.0),
            Some(10.0),
            Some(5.0),
            Some(7.0),
        ]);
        let q = check(&domain, &window, (1, Some("abc".to_owned())));
        assert_eq!(q.rows, 10);
        assert_eq!((q.missing.count, q.missing.share), (2, 0.2));
        let out = q.out_of_range.unwrap();
        // -1 is 1 below the range, 11 is 1 above it (a tie: the smaller), 12.5 is 2.5 above: the farthest.
        assert_eq!((out.count, out.share, out.example.as_deref()), (3, 0.3, Some("12.5")));
        assert_eq!((q.wrong_type.count, q.wrong_type.example.as_deref()), (1, Some("abc")));
        assert_eq!(q.unseen_category, None);
    }

    #[test]
    fn a_hand_made_categorical_window_and_a_binary_one() {
        let domain = Domain::of(ColumnKind::Categorical, &texts(&[Some("red"), Some("blue")]));
        let q = check(&domain, &texts(&[Some("red"), Some("teal"), Some("green"), None]), (0, None));
        let unseen = q.unseen_category.unwrap();
        assert_eq!(
            (unseen.count, unseen.share, unseen.example.as_deref()),
            (2, 0.5, Some("green")),
            "a tie: the smaller"
        );
        assert_eq!((q.missing.count, q.wrong_type.count, q.out_of_range), (1, 0, None));

        // A binary window: the live window stores a 0.5 as missing and counts it as wrong-typed.
        let binary = Domain::of(ColumnKind::Binary, &texts(&[Some("0"), Some("1")]));
        let q = check(&binary, &texts(&[Some("0"), Some("1"), None, None]), (1, Some("0.5".to_owned())));
        assert_eq!((q.wrong_type.count, q.wrong_type.share, q.wrong_type.example.as_deref()), (1, 0.25, Some("0.5")));
        assert_eq!((q.missing.count, q.unseen_category, q.out_of_range), (1, None, None));
        assert_eq!(example(&"é".repeat(40)).len(), 64);
    }
}
