//! The introspection request (RFC 7662 §2.1): `POST`, a form body
//! `token=…&token_type_hint=access_token`, and the gateway's client credentials as HTTP
//! Basic, each form-urlencoded before Base64 (RFC 6749 §2.3.1).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::core::config::Introspection;

/// One introspection call: what the host's `dispatch_http_call` needs. `Debug` hides the
/// credentials and the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionCall {
    /// The host's name for the endpoint (an Envoy cluster, Kong's `host:port`).
    pub upstream: String,
    /// `:authority`, from the endpoint's URL.
    pub authority: String,
    /// `:path`, from the endpoint's URL.
    pub path: String,
    /// `:scheme`, from the endpoint's URL.
    pub scheme: &'static str,
    /// `Basic <credentials>`.
    authorization: String,
    /// The form body (it holds the token).
    body: String,
    /// The deadline, in milliseconds (also enforced by the caller).
    pub timeout_ms: u64,
    /// The largest answer accepted.
    pub max_bytes: usize,
}

impl IntrospectionCall {
    /// The headers, pseudo-headers first.
    pub fn headers(&self) -> Vec<(&str, String)> {
        vec![
            (":method", "POST".to_owned()),
            (":path", self.path.clone()),
            (":authority", self.authority.clone()),
            (":scheme", self.scheme.to_owned()),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            // Sent explicitly: without it a host may send the body chunked, which some
            // endpoints refuse.
            ("content-length", self.body.len().to_string()),
            ("accept", "application/json".to_owned()),
            ("authorization", self.authorization.clone()),
        ]
    }

    /// The form body.
    pub fn body(&self) -> &[u8] {
        self.body.as_bytes()
    }
}

impl fmt::Debug for IntrospectionCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionCall")
            .field("upstream", &self.upstream)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("scheme", &self.scheme)
            .field("authorization", &"<redacted>")
            .field("body", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// The call asking `endpoint` about `token`.
pub fn introspection_call(endpoint: &Introspection, token: &str) -> IntrospectionCall {
    let credentials = format!(
        "{}:{}",
        form_urlencode(&endpoint.client_id),
        form_urlencode(&endpoint.client_secret)
    );
    IntrospectionCall {
        upstream: endpoint.upstream.clone(),
        authority: endpoint.endpoint.authority.clone(),
        path: endpoint.endpoint.path.clone(),
        scheme: endpoint.endpoint.scheme(),
        authorization: format!("Basic {}", STANDARD.encode(credentials)),
        body: format!(
            "token={}&token_type_hint=access_token",
            form_urlencode(token)
        ),
        timeout_ms: endpoint.timeout_ms,
        max_bytes: endpoint.max_bytes,
    }
}

/// `application/x-www-form-urlencoded` (the WHATWG URL standard's serializer, which RFC 6749
/// Appendix B refers to): ASCII letters, digits and `*-._` stay, space is `+`, every other
/// byte of the UTF-8 is `%XX`.
pub fn form_urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::url::HttpUrl;

    fn endpoint(id: &str, secret: &str) -> Introspection {
        Introspection {
            endpoint: HttpUrl::parse("https://idp.test:8443/oauth2/introspect?v=1").unwrap(),
            upstream: "idp_introspection".into(),
            client_id: id.into(),
            client_secret: secret.into(),
            timeout_ms: 1500,
            max_bytes: 4096,
            cache_seconds: 60,
            negative_cache_seconds: 10,
            cache_max_entries: 100,
        }
    }

    fn header<'a>(h: &'a [(&str, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn posts_a_form_with_basic_credentials() {
        let call = introspection_call(&endpoint("gateway", "s3cret"), "2YotnFZFEjr1zCsicMWpAA");
        let h = call.headers();
        assert_eq!(header(&h, ":method"), "POST");
        assert_eq!(header(&h, ":path"), "/oauth2/introspect?v=1");
        assert_eq!(header(&h, ":authority"), "idp.test:8443");
        assert_eq!(header(&h, ":scheme"), "https");
        assert_eq!(
            header(&h, "content-type"),
            "application/x-www-form-urlencoded"
        );
        assert_eq!(header(&h, "accept"), "application/json");
        // base64("gateway:s3cret")
        assert_eq!(header(&h, "authorization"), "Basic Z2F0ZXdheTpzM2NyZXQ=");
        assert_eq!(
            call.body(),
            b"token=2YotnFZFEjr1zCsicMWpAA&token_type_hint=access_token"
        );
        assert_eq!(header(&h, "content-length"), call.body().len().to_string());
        assert_eq!(call.upstream, "idp_introspection");
        assert_eq!((call.timeout_ms, call.max_bytes), (1500, 4096));
    }

    #[test]
    fn credentials_are_form_urlencoded_before_base64() {
        // RFC 6749 §2.3.1: a ':' in the id must not split the pair; '+', '%', space, UTF-8.
        let call = introspection_call(&endpoint("my:client id", "p+w%d é"), "t");
        let h = call.headers();
        let basic = header(&h, "authorization").strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(basic).unwrap()).unwrap();
        assert_eq!(decoded, "my%3Aclient+id:p%2Bw%25d+%C3%A9");
        // The token's '+', '/' and '=' (b64token characters) are encoded in the body.
        let call = introspection_call(&endpoint("a", "b"), "ab+/c~=");
        assert_eq!(
            call.body(),
            b"token=ab%2B%2Fc%7E%3D&token_type_hint=access_token"
        );
    }

    #[test]
    fn debug_shows_neither_secret_nor_token() {
        let call = introspection_call(&endpoint("gateway", "s3cret-value"), "opaque-token-value");
        let shown = format!("{call:?} {:?}", endpoint("gateway", "s3cret-value"));
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(!shown.contains("opaque-token-value"), "{shown}");
        assert!(!shown.contains(&STANDARD.encode("gateway:s3cret-value")));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_urlencode("aZ09*-._"), "aZ09*-._");
        assert_eq!(form_urlencode("a b&c=d"), "a+b%26c%3Dd");
        assert_eq!(form_urlencode("~!"), "%7E%21");
    }
}
