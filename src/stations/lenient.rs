//! Reading a platform's payload with only the fields a station uses
//! (issue 14, item 9), and saying what was wrong with one that lacks them
//! without quoting it: serde's own words quote the wrong value (a
//! message's text, a token), these name the field and what was expected.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// `v` as a `T`, or why not: "missing field `chat` in message",
/// "message.chat.id is not i64".
pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| why(&e))
}

fn why(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let msg = e.inner().to_string();
    let place = if path == "." { "the payload" } else { &path };
    if msg.starts_with("missing field") {
        // serde names the field, not a value.
        return format!("{msg} in {place}");
    }
    // "invalid type: string \"…\", expected i64": what was expected comes
    // last (from the type, not the input), after the value it got.
    let standard = ["invalid type: ", "invalid value: ", "invalid length "];
    match msg.rsplit_once(", expected ") {
        Some((_, expected)) if standard.iter().any(|s| msg.starts_with(s)) => {
            format!("{place} is not {expected}")
        }
        _ => format!("{place} is not in the expected shape"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: i64,
    }

    #[test]
    fn the_field_is_named_and_the_value_is_not() {
        let e = decode::<Outer>(json!({"inner": {"n": "secret, expected words"}})).unwrap_err();
        assert_eq!(e, "inner.n is not i64");
        let e = decode::<Outer>(json!({"inner": {}})).unwrap_err();
        assert_eq!(e, "missing field `n` in inner");
        let e = decode::<Outer>(json!({})).unwrap_err();
        assert_eq!(e, "missing field `inner` in the payload");
    }
}
