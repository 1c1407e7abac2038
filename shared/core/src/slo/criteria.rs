//! Criterion strings (§4.3) and the aggregation of previous values they are
//! compared with.

use super::go_float::parse_go_float;
use super::SloError;

/// A comparison operator of a criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `=`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Operator {
    /// `measured <op> target`, with IEEE semantics (NaN satisfies nothing).
    pub fn holds(self, measured: f64, target: f64) -> bool {
        match self {
            Operator::Le => measured <= target,
            Operator::Lt => measured < target,
            Operator::Eq => measured == target,
            Operator::Ge => measured >= target,
            Operator::Gt => measured > target,
        }
    }
}

/// A parsed criterion such as `<600`, `<=+10%`, `>-5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criterion {
    /// The operator.
    pub operator: Operator,
    /// The number after the operator, without its sign or `%`.
    pub value: f64,
    /// Relative to the aggregated previous value (a sign or `%` was given).
    pub relative: bool,
    /// `%`: `value` is a percentage of the aggregated previous value.
    pub percentage: bool,
    /// Direction of a relative criterion: `+` (and `%` without sign) raise the
    /// target, `-` lowers it.
    pub increase: bool,
}

impl Criterion {
    /// Parses a criterion the way Keptn does: all spaces removed; it must
    /// start with one of `<`, `|`, `=`, `>` (Keptn's regex is a character
    /// class and only anchors the start, so the rest is checked by the number
    /// parse); operators are tried in the order `<=`, `<`, `=`, `>=`, `>`;
    /// then a trailing `%`, a leading `-` or `+`, and a number as Go's
    /// `strconv.ParseFloat` reads it.
    ///
    /// Errors carry Keptn's texts: `invalid criteria string`, `could not parse
    /// criteria target value`. (Keptn's third, `no operator set`, cannot be
    /// reached: a criterion starting with `|` always fails the number parse.)
    pub fn parse(text: &str) -> Result<Criterion, SloError> {
        let compact: String = text.chars().filter(|c| *c != ' ').collect();
        if !compact.starts_with(['<', '|', '=', '>']) {
            return Err(SloError::new("invalid criteria string"));
        }
        let mut rest = compact.as_str();
        let mut operator = None;
        for (token, op) in [
            ("<=", Operator::Le),
            ("<", Operator::Lt),
            ("=", Operator::Eq),
            (">=", Operator::Ge),
            (">", Operator::Gt),
        ] {
            if let Some(r) = rest.strip_prefix(token) {
                operator = Some(op);
                rest = r;
                break;
            }
        }
        let mut c = Criterion {
            operator: Operator::Eq,
            value: 0.0,
            relative: false,
            percentage: false,
            increase: false,
        };
        // Keptn issue #1498: a criterion with `%` is always relative.
        if let Some(r) = rest.strip_suffix('%') {
            c.percentage = true;
            c.relative = true;
            c.increase = true;
            rest = r;
        }
        if let Some(r) = rest.strip_prefix('-') {
            c.relative = true;
            c.increase = false;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('+') {
            c.relative = true;
            c.increase = true;
            rest = r;
        }
        c.value = parse_go_float(rest)
            .ok_or_else(|| SloError::new("could not parse criteria target value"))?;
        c.operator = operator.ok_or_else(|| SloError::new("no operator set"))?;
        Ok(c)
    }

    /// The threshold for this criterion given the aggregated previous value
    /// `a`: the value itself for absolute criteria, else `a` raised or
    /// lowered by the value (or by that percentage of `a`).
    pub fn target(&self, a: f64) -> f64 {
        match (self.relative, self.percentage, self.increase) {
            (false, _, _) => self.value,
            (true, true, true) => (a * (100.0 + self.value)) / 100.0,
            (true, true, false) => (a * (100.0 - self.value)) / 100.0,
            (true, false, true) => a + self.value,
            (true, false, false) => a - self.value,
        }
    }
}

/// The aggregated previous value of one SLI (§4.3): `None` when there are no
/// successful previous values ("skip": relative criteria hold). An unknown
/// function aggregates to 0 without skipping, as in Keptn. Sums start at +0.0
/// as Go's do (`Iterator::sum` starts at -0.0, which would print as `-0`).
pub(crate) fn aggregate(successful: &[f64], function: &str) -> Option<f64> {
    if successful.is_empty() {
        return None;
    }
    Some(match function {
        "avg" => successful.iter().fold(0.0, |sum, v| sum + v) / successful.len() as f64,
        "p50" => percentile(successful, 0.5),
        "p90" => percentile(successful, 0.9),
        "p95" => percentile(successful, 0.95),
        _ => 0.0,
    })
}

/// Keptn's percentile: position `p * (n + 1)` in the sorted values, clamped
/// to the first and last, interpolated in between (0..=10 at p90 → 9.8).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    // Go's sort.Float64Slice puts NaN first; total_cmp would put it last.
    sorted.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = sorted.len();
    let Some((&first, &last)) = sorted.first().zip(sorted.last()) else {
        return 0.0;
    };
    let pos = p * (n as f64 + 1.0);
    if pos < 1.0 {
        first
    } else if pos >= n as f64 {
        last
    } else {
        // 1 <= pos < n, so both indices are in bounds.
        let i = pos as usize;
        let (lower, upper) = (sorted[i - 1], sorted[i]);
        lower + (pos - pos.floor()) * (upper - lower)
    }
}
