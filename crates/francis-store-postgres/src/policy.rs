//! The PostgreSQL provider's decisions as plain functions: which table prefixes are safe to
//! put into SQL, how a connection URL is shown, which database errors are retried or reported
//! as "unavailable", and the advisory-lock keys.

/// Longest table prefix: the longest object name the schema derives from it
/// (`<prefix>placements_by_host_type`, `<prefix>placements_host_id_fkey`) must stay within
/// PostgreSQL's 63-byte identifier limit.
pub(crate) const MAX_PREFIX_LEN: usize = 40;

/// Checks a table prefix before it is interpolated into SQL: empty, or a lowercase letter or
/// `_` followed by lowercase letters, digits and `_`, at most [`MAX_PREFIX_LEN`] bytes.
/// Lowercase only, so the unquoted names PostgreSQL folds are the names the provider queries.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "table prefix {prefix:?} is longer than {MAX_PREFIX_LEN} bytes"
        ));
    }
    let mut chars = prefix.chars();
    let first_ok = chars
        .next()
        .is_none_or(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "table prefix {prefix:?} may only hold lowercase letters, digits and '_', \
             and must not start with a digit"
        ))
    }
}

/// Whether `url` names a PostgreSQL database: it starts with `postgres://` or
/// `postgresql://` (the scheme in any case).
pub(crate) fn is_postgres_url(url: &str) -> bool {
    let lower = |n: usize| url.get(..n).map(str::to_ascii_lowercase);
    lower(11).as_deref() == Some("postgres://") || lower(13).as_deref() == Some("postgresql://")
}

/// The URL with any password replaced by `***` (in the authority and in a `password=` query
/// parameter), for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| authority_start + i);
        // userinfo ends at the last '@' of the authority (a password may contain '@')
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = authority_start + colon + 1;
                out.replace_range(start..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// The passwords a URL carries (in its authority, in a `password=` query parameter), to scrub
/// them from messages that might echo them.
pub(crate) fn passwords_in_url(url: &str) -> Vec<&str> {
    let mut found = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let authority = &url[scheme_end + 3..];
        let authority = &authority[..authority.find(['/', '?', '#']).unwrap_or(authority.len())];
        if let Some(at) = authority.rfind('@')
            && let Some((_, password)) = authority[..at].split_once(':')
        {
            found.push(password);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some((key, value)) = pair.split_once('=')
                && key.eq_ignore_ascii_case("password")
            {
                found.push(value);
            }
        }
    }
    found.retain(|p| !p.is_empty());
    found
}

/// How a failed statement is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// A serialization failure or deadlock: the statement changed nothing; run it again.
    Conflict,
    /// The server or the connection is going away or refusing work: report
    /// [`crate::StoreError::Unavailable`] (retryable by the caller).
    Unavailable,
    /// Anything else: a real error.
    Other,
}

/// Classifies a PostgreSQL SQLSTATE code.
pub(crate) fn classify_sqlstate(code: &str) -> ErrorClass {
    match code {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => ErrorClass::Conflict,
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
        // configuration_limit_exceeded (e.g. out of connection slots), read-only standby
        "57P01" | "57P02" | "57P03" | "53300" | "53400" | "25006" => ErrorClass::Unavailable,
        // connection_exception and its subclasses
        c if c.starts_with("08") => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

/// A 64-bit key for `pg_advisory_xact_lock`: FNV-1a over `namespace`, a NUL and `value`.
/// Stable across builds and processes (every host must derive the same key).
pub(crate) fn lock_key(namespace: &str, value: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain([0]).chain(value.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_identifier_characters_only() {
        for ok in [
            "",
            "francis_",
            "_x",
            "a",
            "t1_2_",
            &"a".repeat(MAX_PREFIX_LEN),
        ] {
            assert_eq!(validate_prefix(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "1abc",
            "Francis_",
            "fr-ancis",
            "x; DROP TABLE y; --",
            "a b",
            "\"q\"",
            "é",
            "a.b",
            &"a".repeat(MAX_PREFIX_LEN + 1),
        ] {
            let err = validate_prefix(bad).unwrap_err();
            assert!(err.contains("table prefix"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn postgres_urls_are_recognised_by_scheme() {
        for url in [
            "postgres://h/d",
            "postgresql://u:p@h:1/d",
            "POSTGRES://h",
            "PostgreSQL://h",
        ] {
            assert!(is_postgres_url(url), "{url}");
        }
        for url in [
            "mysql://h/d",
            "postgres:/h",
            "postgres",
            "sqlite:x.db",
            "data.db",
            "",
        ] {
            assert!(!is_postgres_url(url), "{url}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            (
                "postgres://francis:s3cret@db.example:5432/app",
                "postgres://francis:***@db.example:5432/app",
            ),
            (
                "postgresql://u:p@ss@h/d?sslmode=disable",
                "postgresql://u:***@h/d?sslmode=disable",
            ),
            (
                "postgres://u@h:5433/d?password=hunter2&application_name=x",
                "postgres://u@h:5433/d?password=***&application_name=x",
            ),
            ("postgres://h/d", "postgres://h/d"),
            ("postgres://u@h", "postgres://u@h"),
            ("postgres://u:@h", "postgres://u:***@h"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
        // nothing of a password survives
        let shown = redact_url("postgres://a:b%40c:d@host/db?PASSWORD=e");
        for secret in ["b%40c", ":d@", "=e"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn passwords_are_found_for_scrubbing() {
        assert_eq!(
            passwords_in_url("postgres://u:p@ss@h/d?password=q&x=1"),
            ["p@ss", "q"]
        );
        assert!(passwords_in_url("postgres://u@h/d?user=x").is_empty());
        assert!(passwords_in_url("postgres://u:@h/d").is_empty());
        assert!(passwords_in_url("garbage").is_empty());
    }

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(classify_sqlstate("40001"), ErrorClass::Conflict);
        assert_eq!(classify_sqlstate("40P01"), ErrorClass::Conflict);
        for code in ["08000", "08003", "08006", "57P01", "57P03", "53300"] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Unavailable, "{code}");
        }
        for code in ["23505", "42P01", "22021", "40002", "XX000"] {
            assert_eq!(classify_sqlstate(code), ErrorClass::Other, "{code}");
        }
    }

    #[test]
    fn lock_keys_are_stable_and_separate_namespaces() {
        // fixed value: every build and host must agree on it
        assert_eq!(lock_key("", ""), 0xaf63_bd4c_8601_b7df_u64 as i64);
        assert_eq!(lock_key("a", "b"), lock_key("a", "b"));
        assert_ne!(lock_key("a", "b"), lock_key("ab", ""));
        assert_ne!(lock_key("migrate", "x_"), lock_key("address", "x_"));
    }
}
