//! JSON the way Go's `encoding/json` treats lighthouse's structs: `null` and
//! missing fields are zero values, a field of the wrong type is an error,
//! object keys match field names case-insensitively, and integral floats are
//! written without a fraction (`100`, not `100.0`).

use serde::{Deserialize, Deserializer, Serializer};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

/// serde helper: `null` reads as the type's default, as Go leaves the zero value.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// serde helper: an `f64` written as Go writes a `float64`.
pub(crate) fn serialize_f64<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    match number(*v) {
        Value::Number(n) => match n.as_i64() {
            Some(i) => s.serialize_i64(i),
            None => s.serialize_f64(*v),
        },
        _ => s.serialize_none(),
    }
}

/// A JSON number for `v`: integral values within ±2^53 as integers (Go prints
/// `100`), others as floats. Go cannot encode NaN or ±Inf at all (its
/// `json.Marshal` fails); they become `null` here rather than losing the event.
pub(crate) fn number(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.is_finite() && v.fract() == 0.0 && v.abs() <= EXACT {
        return Value::from(v as i64);
    }
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// The field `name` of `obj`: the exact key, else the first key equal to it
/// ignoring ASCII case (Go prefers the exact match, then folds case).
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Decodes values with Go's rules, remembering the first type error and
/// going on with zero values, as `json.Unmarshal` does.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    error: Option<String>,
}

impl Decoder {
    /// The first type error met, in a Go-like wording.
    pub(crate) fn into_error(self) -> Option<String> {
        self.error
    }

    fn mismatch(&mut self, v: &Value, path: impl std::fmt::Display, ty: &str) {
        if self.error.is_none() {
            let what = match v {
                Value::Number(n) => format!("number {n}"),
                other => kind(other).to_string(),
            };
            self.error = Some(format!(
                "json: cannot unmarshal {what} into field {path} of type {ty}"
            ));
        }
    }

    pub(crate) fn string(&mut self, v: Option<&Value>, path: impl std::fmt::Display) -> String {
        match v {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.mismatch(other, path, "string");
                String::new()
            }
        }
    }

    pub(crate) fn float(&mut self, v: Option<&Value>, path: impl std::fmt::Display) -> f64 {
        match v {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => match n.as_f64().filter(|f| f.is_finite()) {
                Some(f) => f,
                None => {
                    self.mismatch(&Value::Number(n.clone()), path, "float64");
                    0.0
                }
            },
            Some(other) => {
                self.mismatch(other, path, "float64");
                0.0
            }
        }
    }

    pub(crate) fn boolean(&mut self, v: Option<&Value>, path: impl std::fmt::Display) -> bool {
        match v {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.mismatch(other, path, "bool");
                false
            }
        }
    }

    /// An object, or `None` for `null`/missing (and, after recording the
    /// error, for anything else).
    pub(crate) fn object<'a>(
        &mut self,
        v: Option<&'a Value>,
        path: impl std::fmt::Display,
        ty: &str,
    ) -> Option<&'a Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.mismatch(other, path, ty);
                None
            }
        }
    }

    pub(crate) fn array<'a>(
        &mut self,
        v: Option<&'a Value>,
        path: impl std::fmt::Display,
        ty: &str,
    ) -> &'a [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.mismatch(other, path, ty);
                &[]
            }
        }
    }

    pub(crate) fn string_map(
        &mut self,
        v: Option<&Value>,
        path: impl std::fmt::Display,
    ) -> BTreeMap<String, String> {
        let Some(obj) = self.object(v, &path, "map[string]string") else {
            return BTreeMap::new();
        };
        obj.iter()
            .map(|(k, v)| (k.clone(), self.string(Some(v), format_args!("{path}.{k}"))))
            .collect()
    }

    /// An indicator value (`SLIResult`); `None` for `null`.
    pub(crate) fn indicator_value(
        &mut self,
        v: &Value,
        path: impl std::fmt::Display,
    ) -> Option<crate::slo::IndicatorValue> {
        let obj = self.object(Some(v), &path, "SLIResult")?;
        Some(crate::slo::IndicatorValue {
            metric: self.string(field(obj, "metric"), format_args!("{path}.metric")),
            value: self.float(field(obj, "value"), format_args!("{path}.value")),
            compared_value: self.float(
                field(obj, "comparedValue"),
                format_args!("{path}.comparedValue"),
            ),
            success: self.boolean(field(obj, "success"), format_args!("{path}.success")),
            message: self.string(field(obj, "message"), format_args!("{path}.message")),
        })
    }
}
