//! The payload merge of Keptn's shipyard-controller (spec §2.4).
//!
//! `merge(a, b)` layers `b` (later) over `a` (earlier): objects merge key by
//! key, recursively; two lists give `b`'s items followed by `a`'s (Keptn's
//! order, kept for compatibility); any other later value replaces the earlier
//! one. Keptn never let a later number or boolean overwrite an earlier one
//! (quirk 2.11-b), which froze `get-action.actionIndex` in remediation loops;
//! Keelson lets the later value win (docs/compatibility.md). A later `null`
//! leaves the earlier value in place.

use serde_json::Value;

/// Deep-merges `b` into `a` in place (b wins, lists concatenate `b ++ a`).
pub fn merge_into(a: &mut Value, b: &Value) {
    match (a, b) {
        (_, Value::Null) => {}
        (Value::Object(am), Value::Object(bm)) => {
            for (k, bv) in bm {
                match am.get_mut(k) {
                    Some(av) => merge_into(av, bv),
                    None => {
                        if !bv.is_null() {
                            am.insert(k.clone(), bv.clone());
                        }
                    }
                }
            }
        }
        (Value::Array(aa), Value::Array(ba)) => {
            let mut out = ba.clone();
            out.append(aa);
            *aa = out;
        }
        (a, b) => *a = b.clone(),
    }
}

/// `merge(a, b)` as a new value.
pub fn merge(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    merge_into(&mut out, b);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_rules_table() {
        let cases = [
            // maps merge key by key, recursively
            (
                json!({"a":{"x":1,"y":"s"}}),
                json!({"a":{"y":"t","z":true}}),
                json!({"a":{"x":1,"y":"t","z":true}}),
            ),
            // later numbers and booleans win (Keptn froze them: quirk 2.11-b, fixed)
            (
                json!({"get-action":{"actionIndex":0}}),
                json!({"get-action":{"actionIndex":1}}),
                json!({"get-action":{"actionIndex":1}}),
            ),
            (
                json!({"flag":true}),
                json!({"flag":false}),
                json!({"flag":false}),
            ),
            // lists: later items first, then earlier items, no de-duplication
            (
                json!({"l":[1,2]}),
                json!({"l":[3,2]}),
                json!({"l":[3,2,1,2]}),
            ),
            // a value of another type replaces
            (json!({"v":"s"}), json!({"v":{"k":1}}), json!({"v":{"k":1}})),
            (json!({"v":{"k":1}}), json!({"v":[1]}), json!({"v":[1]})),
            // null leaves the earlier value
            (json!({"v":"s"}), json!({"v":null}), json!({"v":"s"})),
            (json!({}), json!({"v":null}), json!({})),
        ];
        for (a, b, want) in cases {
            assert_eq!(merge(&a, &b), want, "merge({a}, {b})");
        }
    }
}
