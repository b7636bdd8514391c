//! Header hygiene: identity-bearing request headers a client must never be able to set.
//!
//! Auth proxies and gateways tell upstreams who the caller is through headers
//! (`x-forwarded-user`, `x-auth-request-email`, `x-consumer-id`, ...). An upstream that
//! trusts one would believe a value the client wrote itself, beside the exchanged token. The
//! filter removes them before forwarding (`strip_headers`, with a default list), or refuses
//! requests carrying them (`strip_headers_action: "refuse"`).

use std::fmt;

use super::syntax::is_http_token;

/// `strip_headers` when the policy does not set it: identity headers set by common auth
/// proxies (oauth2-proxy, Kong, Authelia, Google IAP, Azure App Service, AWS ALB, Cloudflare
/// Access, Pomerium) and generic ones. A trailing `*` matches any header with that prefix.
pub const DEFAULT_STRIP_HEADERS: &[&str] = &[
    // oauth2-proxy (`--pass-user-headers`, `--set-xauthrequest`) and generic
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
    "x-auth-request-*",
    "x-user",
    "x-user-id",
    "x-userid",
    "x-user-email",
    "x-user-name",
    "x-user-groups",
    "x-user-roles",
    "x-remote-user",
    "x-webauth-user",
    "x-authenticated-user",
    // Authelia and other forward-auth proxies
    "remote-user",
    "remote-groups",
    "remote-name",
    "remote-email",
    // Kong (authentication plugins, OpenID Connect), APISIX openid-connect
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-consumer-groups",
    "x-credential-identifier",
    "x-credential-username",
    "x-anonymous-consumer",
    "x-authenticated-userid",
    "x-authenticated-scope",
    "x-authenticated-groups",
    "x-userinfo",
    "x-id-token",
    "x-access-token",
    // Envoy jwt_authn's customary forward_payload_header
    "x-jwt-payload",
    // Google IAP, Azure App Service authentication, AWS ALB, Cloudflare Access, Pomerium
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-goog-iap-jwt-assertion",
    "x-ms-client-principal*",
    "x-ms-token-*",
    "x-amzn-oidc-*",
    "cf-access-authenticated-user-email",
    "cf-access-jwt-assertion",
    "x-pomerium-*",
];

/// Headers no pattern may remove: the credential itself, and what frames the request.
const PROTECTED: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
];

/// A `strip_headers` entry: an exact header name or a `prefix*`, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    /// This header.
    Exact(String),
    /// Every header starting with this (the entry without its trailing `*`).
    Prefix(String),
}

impl HeaderPattern {
    /// Parses an entry (case-insensitive), or says why it is not one.
    pub fn parse(entry: &str) -> Result<HeaderPattern, String> {
        let lower = entry.to_ascii_lowercase();
        let (name, pattern) = match lower.strip_suffix('*') {
            Some(prefix) => (prefix, HeaderPattern::Prefix(prefix.to_owned())),
            None => (lower.as_str(), HeaderPattern::Exact(lower.clone())),
        };
        if lower.starts_with(':') {
            return Err("cannot strip pseudo-headers".into());
        }
        if name.is_empty() || name.contains('*') || !is_http_token(name) {
            return Err(
                "is not a header name (a trailing '*' makes it a prefix; no other '*')".into(),
            );
        }
        if let Some(p) = PROTECTED.iter().find(|p| pattern.matches(p)) {
            return Err(format!(
                "cannot strip Authorization, Host or framing headers (this would strip {p:?})"
            ));
        }
        Ok(pattern)
    }

    /// Whether it matches `name` (lower case).
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderPattern::Exact(n) => n == name,
            HeaderPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for HeaderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderPattern::Exact(n) => f.write_str(n),
            HeaderPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// The request's headers (lower-case `names`) that `patterns` match, each once, in order.
pub fn identity_headers(patterns: &[HeaderPattern], names: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for name in names {
        // On every request's path: hosts mostly give lower-case names, copy only the others.
        let lower = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(name.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(*name)
        };
        if patterns.iter().any(|p| p.matches(&lower)) && !found.iter().any(|f| *f == *lower) {
            found.push(lower.into_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let exact = HeaderPattern::parse("X-Forwarded-User").unwrap();
        assert!(exact.matches("x-forwarded-user"));
        assert!(!exact.matches("x-forwarded-user-id"));
        let prefix = HeaderPattern::parse("x-auth-request-*").unwrap();
        assert!(prefix.matches("x-auth-request-email"));
        assert!(!prefix.matches("x-auth-request"));
        assert_eq!(prefix.to_string(), "x-auth-request-*");
        for bad in [
            "authorization",
            "Authorization",
            "auth*",
            "a*",
            "*",
            "host",
            "content-*",
            ":path",
            "x*y",
            "x**",
            "x y",
            "",
        ] {
            assert!(HeaderPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_list_parses_and_never_touches_the_credential() {
        for h in DEFAULT_STRIP_HEADERS {
            let p = HeaderPattern::parse(h).unwrap();
            for keep in [
                "authorization",
                "x-request-id",
                "x-forwarded-proto",
                "x-envoy-original-path",
                "cookie",
            ] {
                assert!(!p.matches(keep), "{h} matches {keep}");
            }
        }
    }

    #[test]
    fn present_headers_are_found_once() {
        let patterns: Vec<HeaderPattern> = ["x-forwarded-user", "x-auth-request-*"]
            .iter()
            .map(|h| HeaderPattern::parse(h).unwrap())
            .collect();
        let names = [
            "X-Forwarded-User",
            "accept",
            "x-auth-request-email",
            "x-forwarded-user",
        ];
        assert_eq!(
            identity_headers(&patterns, &names),
            vec!["x-forwarded-user", "x-auth-request-email"]
        );
    }
}
