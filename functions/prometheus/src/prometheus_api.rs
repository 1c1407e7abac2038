//! Prometheus's HTTP API: one instant query, and turning its answer into one
//! value the way prometheus-service did (through client_golang's `Query`).

use keelson_core::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// Why an indicator got no value. The texts are prometheus-service's, so SLI
/// messages read as they did under Keptn.
#[derive(Debug, Error)]
pub enum QueryError {
    /// Prometheus answered `status: error`, or an HTTP error status
    /// (client_golang's `<errorType>: <message>`).
    #[error("unable to query prometheus api: {error_type}: {message}")]
    Api {
        /// `bad_data`, `execution`, `timeout`, `client_error`, `server_error`, `bad_response`, …
        error_type: String,
        /// Prometheus's message.
        message: String,
    },
    /// The request did not complete (connection refused, timeout, …).
    #[error("unable to query prometheus api: {}", chain(.0))]
    Transport(#[source] reqwest::Error),
    /// A result type that is neither a vector nor a scalar.
    #[error("prometheus api response is not a Vector: {0} result")]
    NotAVector(String),
    /// An empty vector.
    #[error("query did not return any values")]
    NoValues,
    /// More than one series.
    #[error("query did return multiple values")]
    MultipleValues,
    /// NaN, ±Inf, a histogram sample or an unparseable number.
    #[error("query did not return valid values")]
    InvalidData,
}

/// An error with its sources, `: `-separated (reqwest's own text names only the outermost).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The `time` parameter: Unix seconds, fractional only when needed
/// (client_golang's `formatTime`).
pub fn time_param(t: Timestamp) -> String {
    let ms = t.millis();
    let (secs, frac) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    if frac == 0 {
        secs.to_string()
    } else {
        format!("{secs}.{frac:03}")
            .trim_end_matches('0')
            .to_string()
    }
}

/// Runs `query` at `at` against the Prometheus at `base` (which may carry a path
/// prefix). Like client_golang, a form POST first, and a GET when the server
/// refuses POST with 405 or 501.
pub async fn instant_query(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    at: Timestamp,
) -> Result<f64, QueryError> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let time = time_param(at);
    let params = [("query", query), ("time", time.as_str())];
    let mut resp = client
        .post(&url)
        .form(&params)
        .send()
        .await
        .map_err(QueryError::Transport)?;
    if matches!(resp.status().as_u16(), 405 | 501) {
        resp = client
            .get(&url)
            .query(&params)
            .send()
            .await
            .map_err(QueryError::Transport)?;
    }
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(QueryError::Transport)?;
    parse_response(status, &body)
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    #[serde(default)]
    status: String,
    #[serde(default)]
    data: Value,
    #[serde(default, rename = "errorType")]
    error_type: String,
    #[serde(default)]
    error: String,
}

/// The single value of an answer with HTTP status `status` and `body`.
pub fn parse_response(status: u16, body: &[u8]) -> Result<f64, QueryError> {
    // client_golang reads a JSON body from 2xx and from the statuses
    // Prometheus documents as carrying one (400, 422, 503); anything else is
    // reported by its status class.
    let json_status = matches!(status, 400 | 422 | 503);
    if status / 100 != 2 && !json_status {
        let (error_type, message) = match status / 100 {
            4 => ("client_error", format!("client error: {status}")),
            5 => ("server_error", format!("server error: {status}")),
            _ => ("bad_response", format!("bad response code {status}")),
        };
        return Err(QueryError::Api {
            error_type: error_type.into(),
            message,
        });
    }
    let bad = |message: String| QueryError::Api {
        error_type: "bad_response".into(),
        message,
    };
    let r: ApiResponse = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if r.status == "error" {
        return Err(QueryError::Api {
            error_type: r.error_type,
            message: r.error,
        });
    }
    if json_status {
        return Err(bad("inconsistent body for response code".into()));
    }
    let result_type = r.data.get("resultType").and_then(Value::as_str);
    let result = r.data.get("result").unwrap_or(&Value::Null);
    match (result_type, result) {
        (Some("vector"), Value::Array(samples)) => match samples.as_slice() {
            [] => Err(QueryError::NoValues),
            [one] => sample_value(one.get("value")),
            _ => Err(QueryError::MultipleValues),
        },
        // prometheus-service refused scalars ("not a Vector"); a scalar is one
        // unambiguous value (`scalar(...)`, `vector(1) * 0 + 1`), so Keelson takes it.
        (Some("scalar"), v) => sample_value(Some(v)),
        (Some(other), _) => Err(QueryError::NotAVector(other.to_string())),
        (None, _) => Err(bad("no resultType in the query result".into())),
    }
}

/// `[<unix time>, "<value>"]` → a finite number.
fn sample_value(pair: Option<&Value>) -> Result<f64, QueryError> {
    let v = pair
        .and_then(|p| p.get(1))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or(QueryError::InvalidData)?;
    // Go's ParseFloat accepted ±Inf; JSON cannot carry it, so it is invalid here too.
    if v.is_finite() {
        Ok(v)
    } else {
        Err(QueryError::InvalidData)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(data: &str) -> Vec<u8> {
        format!(r#"{{"status":"success","data":{data}}}"#).into_bytes()
    }

    #[test]
    fn result_parsing_table() {
        let vector1 = ok(
            r#"{"resultType":"vector","result":[{"metric":{"job":"carts"},"value":[1767225900,"2.5"]}]}"#,
        );
        let vector0 = ok(r#"{"resultType":"vector","result":[]}"#);
        let vector2 = ok(
            r#"{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}"#,
        );
        let scalar = ok(r#"{"resultType":"scalar","result":[1767225900,"42"]}"#);
        let nan = ok(r#"{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}"#);
        let inf = ok(r#"{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}"#);
        let histogram = ok(
            r#"{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"1","sum":"1"}]}]}"#,
        );
        let matrix = ok(r#"{"resultType":"matrix","result":[]}"#);
        let string = ok(r#"{"resultType":"string","result":[1,"x"]}"#);
        let bad_data = br#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:8: parse error: unclosed left parenthesis"}"#.to_vec();
        let cases: Vec<(u16, Vec<u8>, Result<f64, &str>)> = vec![
            (200, vector1, Ok(2.5)),
            (200, scalar, Ok(42.0)),
            (200, vector0, Err("query did not return any values")),
            (200, vector2, Err("query did return multiple values")),
            (200, nan, Err("query did not return valid values")),
            (200, inf, Err("query did not return valid values")),
            (200, histogram, Err("query did not return valid values")),
            (200, matrix, Err("prometheus api response is not a Vector: matrix result")),
            (200, string, Err("prometheus api response is not a Vector: string result")),
            (
                400,
                bad_data,
                Err("unable to query prometheus api: bad_data: invalid parameter \"query\": 1:8: parse error: unclosed left parenthesis"),
            ),
            (
                422,
                br#"{"status":"error","errorType":"execution","error":"expanding series: too many"}"#.to_vec(),
                Err("unable to query prometheus api: execution: expanding series: too many"),
            ),
            (
                503,
                br#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#.to_vec(),
                Err("unable to query prometheus api: timeout: query timed out in expression evaluation"),
            ),
            (
                404,
                b"404 page not found".to_vec(),
                Err("unable to query prometheus api: client_error: client error: 404"),
            ),
            (
                502,
                b"<html>bad gateway</html>".to_vec(),
                Err("unable to query prometheus api: server_error: server error: 502"),
            ),
            (
                200,
                b"<html>not prometheus</html>".to_vec(),
                Err("unable to query prometheus api: bad_response: expected value at line 1 column 1"),
            ),
            (
                400,
                ok(r#"{"resultType":"scalar","result":[1,"1"]}"#),
                Err("unable to query prometheus api: bad_response: inconsistent body for response code"),
            ),
        ];
        for (status, body, want) in cases {
            let got = parse_response(status, &body).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn time_parameter_is_unix_seconds_with_only_the_needed_fraction() {
        let cases = [
            (1_767_225_900_000, "1767225900"),
            (1_767_225_900_500, "1767225900.5"),
            (1_767_225_900_667, "1767225900.667"),
            (1_767_225_900_010, "1767225900.01"),
            (0, "0"),
        ];
        for (ms, want) in cases {
            assert_eq!(time_param(Timestamp::from_millis(ms)), want);
        }
    }
}
