//! How one setting's value is read and checked, whatever group it belongs to: durations in the
//! unit the variable's name says, counts that must not be 0, URLs, browser origins, a writable
//! directory; and how a URL is shown without its password.

use std::{
    ffi::OsStr,
    num::{IntErrorKind, ParseIntError},
    str::FromStr,
    time::Duration,
};

use clap::builder::TypedValueParser;

/// How a duration setting is read: a whole number in the unit its name says
/// (`PING_INTERVAL_SECS=25`), or a number with a unit (`500ms`, `30s`, `5m`, `2h`, `7d`) that is a
/// whole number of the setting's unit, so what reads it in that unit (the JWT leeway, a TTL in
/// whole seconds) never rounds it. A refused value becomes clap's error, which names the flag and
/// so the variable ([`super::describe_parse_error`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct DurationSetting {
    /// What a bare number counts, and the granularity of every value.
    unit: Duration,
    unit_name: &'static str,
    positive: bool,
    at_most: Option<(Duration, &'static str)>,
}

impl DurationSetting {
    pub(super) const MILLISECONDS: Self = Self::counting(Duration::from_millis(1), "milliseconds");
    pub(super) const SECONDS: Self = Self::counting(Duration::from_secs(1), "seconds");
    pub(super) const DAYS: Self = Self::counting(Duration::from_secs(86_400), "days");

    const fn counting(unit: Duration, unit_name: &'static str) -> Self {
        Self { unit, unit_name, positive: false, at_most: None }
    }

    /// Refuses 0, for the settings where no time at all means nothing (a ping every 0 seconds).
    pub(super) const fn positive(self) -> Self {
        Self { positive: true, ..self }
    }

    /// Refuses more than `limit`; `why` ends the message.
    pub(super) const fn at_most(self, limit: Duration, why: &'static str) -> Self {
        Self { at_most: Some((limit, why)), ..self }
    }

    /// The duration `value` names, or why it is refused.
    pub(super) fn parse(&self, value: &str) -> Result<Duration, String> {
        let unit_name = self.unit_name;
        let expected = || {
            format!(
                "{value:?} is not a duration: a whole number of {unit_name}, or one with a unit (500ms, 30s, 5m, \
                 2h, 7d)"
            )
        };
        let (number, suffix) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
        let number: u64 = number.parse().map_err(|_| expected())?;
        let unit = match suffix {
            "" => self.unit,
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(expected()),
        };
        // At most a day's nanoseconds times u64::MAX: far inside u128.
        let nanos = unit.as_nanos() * u128::from(number);
        if nanos % self.unit.as_nanos() != 0 {
            return Err(format!("{value} is not a whole number of {unit_name}"));
        }
        const NANOS_PER_SECOND: u128 = 1_000_000_000;
        let seconds = u64::try_from(nanos / NANOS_PER_SECOND).map_err(|_| format!("{value} is too long"))?;
        // The remainder is less than a second's nanoseconds, so the cast keeps it whole.
        let duration = Duration::from_secs(seconds) + Duration::from_nanos((nanos % NANOS_PER_SECOND) as u64);
        if self.positive && duration.is_zero() {
            return Err("must be greater than 0".into());
        }
        if let Some((limit, why)) = self.at_most.filter(|(limit, _)| duration > *limit) {
            return Err(format!("must be at most {} {unit_name}: {why}", limit.as_nanos() / self.unit.as_nanos()));
        }
        Ok(duration)
    }
}

impl TypedValueParser for DurationSetting {
    type Value = Duration;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let setting = *self;
        // Through clap's parser for functions, so a refusal is clap's own "invalid value" error.
        (move |text: &str| setting.parse(text)).parse_ref(command, arg, value)
    }
}

/// Parses a setting that must be greater than 0 into its `NonZero*` type, saying so when it is 0
/// (the standard library's "number would be zero for non-zero type" names no rule).
pub(super) fn greater_than_zero<T: FromStr<Err = ParseIntError>>(value: &str) -> Result<T, String> {
    value.parse().map_err(|error: ParseIntError| match error.kind() {
        IntErrorKind::Zero => "must be greater than 0".to_owned(),
        _ => error.to_string(),
    })
}

/// An http(s) URL with a host (queue URLs, endpoints).
pub(super) fn check_http_url(value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|error| format!("{value:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{value:?} is not an http:// or https:// URL with a host"));
    }
    Ok(())
}

/// A browser origin exactly as browsers send it: `scheme://host[:port]`, nothing after.
pub fn check_origin(value: &str) -> Result<(), String> {
    let expected = "an origin such as https://dashboard.example.com (scheme, host and port only)";
    let url = url::Url::parse(value).map_err(|_| format!("{value:?} is not {expected}"))?;
    if url.origin().ascii_serialization() != value {
        return Err(format!("{value:?} is not {expected}"));
    }
    Ok(())
}

/// An ALLOWED_ORIGINS entry: an origin, or one whose host starts with `*.` (any subdomain).
pub(super) fn check_origin_pattern(value: &str) -> Result<(), String> {
    match value.split_once("://*.") {
        Some((scheme, rest)) => check_origin(&format!("{scheme}://wildcard.{rest}"))
            .map_err(|_| format!("{value:?} is not an origin pattern such as https://*.example.com")),
        None => check_origin(value),
    }
}

/// Creates the directory if needed and checks a file can be written in it.
pub(super) fn check_writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {shown}: {error}"))?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|error| format!("{shown} is not writable: {error}"))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Networks from CIDRs (`10.0.0.0/16`) or single addresses (`10.0.0.7`); blank entries skipped.
pub(crate) fn parse_networks(entries: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    entries
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{entry:?} is neither a CIDR (10.0.0.0/16) nor an IP address"))
        })
        .collect()
}

/// Query parameters whose value is a credential (`redis+unix:///run/redis.sock?pass=...`, a
/// presigned URL's signature), compared without regard to case.
const SECRET_QUERY_PARAMETERS: &[&str] = &[
    "pass",
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "access_token",
    "key",
    "api_key",
    "apikey",
    "auth",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-security-token",
    "x-amz-credential",
];

/// A URL with its credentials replaced by `***`, for logs and messages: the userinfo's password
/// (a user name alone is taken for a token, as `redis://TOKEN@host` is), and the values of
/// query parameters that carry secrets ([`SECRET_QUERY_PARAMETERS`]). A value that does not parse
/// as a URL is shown only up to its scheme when it holds an `@` or a `?`, since where its
/// password would be cannot be told.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        if !url.contains(['@', '?']) {
            return url.to_owned();
        }
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => "***".to_owned(),
        };
    };
    let mut redacted = false;
    // Setting the userinfo fails only for URLs that cannot have one (no host), which then have none.
    if parsed.password().is_some() {
        redacted |= parsed.set_password(Some("***")).is_ok();
    } else if !parsed.username().is_empty() {
        redacted |= parsed.set_username("***").is_ok();
    }
    let is_secret = |name: &str| SECRET_QUERY_PARAMETERS.iter().any(|secret| name.eq_ignore_ascii_case(secret));
    if parsed.query_pairs().any(|(name, _)| is_secret(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret(&name) { "***".into() } else { value };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        redacted = true;
    }
    // Unchanged, the text is shown as given rather than as the parser normalizes it.
    if redacted {
        parsed.into()
    } else {
        url.to_owned()
    }
}

/// A string setting, with an empty variable counted as unset (clap counts it as set).
pub(super) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|value| !value.is_empty())
}
