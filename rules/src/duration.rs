//! Durations as rule authors and operators write them: `60` (seconds) or `"60s"`, `"500ms"`, `"2m"`.

use rhai::Dynamic;

/// A duration that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: expected seconds as an integer or a string such as \"500ms\", \"60s\", \"2m\"")]
pub struct DurationError {
    /// What was given.
    pub input: String,
}

/// Parses `"60s"`, `"500ms"`, `"2m"`, `"1h 30m"` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, DurationError> {
    let err = || DurationError {
        input: text.to_owned(),
    };
    let parsed = humantime::parse_duration(text.trim()).map_err(|_| err())?;
    i64::try_from(parsed.as_millis()).map_err(|_| err())
}

/// Reads a Rhai value as a duration: an integer is seconds, a string is parsed with units.
pub fn duration_ms(value: &Dynamic) -> Result<i64, DurationError> {
    if let Ok(seconds) = value.as_int() {
        if seconds >= 0 {
            return seconds.checked_mul(1000).ok_or_else(|| DurationError {
                input: seconds.to_string(),
            });
        }
        return Err(DurationError {
            input: seconds.to_string(),
        });
    }
    if let Ok(seconds) = value.as_float() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok((seconds * 1000.0).round() as i64);
        }
        return Err(DurationError {
            input: seconds.to_string(),
        });
    }
    match value.clone().into_immutable_string() {
        Ok(text) => parse_duration_ms(&text),
        Err(type_name) => Err(DurationError {
            input: format!("<{type_name}>"),
        }),
    }
}
