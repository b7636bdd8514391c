//! `http(s)` URLs of key endpoints (`jwks_uri`, OIDC discovery), parsed strictly into the
//! three parts an outgoing call needs: scheme, authority and path.
//!
//! Only what a key endpoint can be is accepted: an `http` or `https` scheme, a host (a DNS
//! name, an IPv4 address or a bracketed IPv6 address) with an optional port, and a path with
//! an optional query. No user information (it would be a credential in configuration and
//! logs), no fragment, no whitespace or control characters, nothing outside printable ASCII.

use std::fmt;

/// A parsed `http`/`https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Whether the scheme is `https`.
    pub https: bool,
    /// `host[:port]`, the host lower-cased, as sent in `:authority`.
    pub authority: String,
    /// The path and query (`/` when the URL has no path), as sent in `:path`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `url`, or says what is wrong with it.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        if !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".into());
        }
        let (https, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            _ => return Err("must be an http:// or https:// URL".into()),
        };
        if url.contains('#') {
            return Err("must not have a fragment".into());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err("must not contain user information".into());
        }
        let authority = parse_authority(authority)?;
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(HttpUrl {
            https,
            authority,
            path,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The origin, `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// `host[:port]` with a non-empty host and a port in 1..=65535; the host lower-cased.
fn parse_authority(authority: &str) -> Result<String, String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| "has an unclosed IPv6 bracket".to_owned())?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err("has an invalid IPv6 address".into());
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| "has characters after the IPv6 address".to_owned())?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let plain_host = !host.starts_with('[');
    if host.is_empty() {
        return Err("must name a host".into());
    }
    if plain_host
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("has an invalid host".into());
    }
    let host = host.to_ascii_lowercase();
    match port {
        None => Ok(host),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(format!("{host}:{n}")),
            _ => Err("has an invalid port".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_endpoints() {
        let u = HttpUrl::parse("https://Login.Example.com/tenant/keys?x=1").unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "login.example.com");
        assert_eq!(u.path, "/tenant/keys?x=1");
        assert_eq!(u.to_string(), "https://login.example.com/tenant/keys?x=1");
        let u = HttpUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.https, u.authority.as_str(), u.path.as_str()),
            (false, "127.0.0.1:8080", "/")
        );
        let u = HttpUrl::parse("HTTP://[::1]:9/j").unwrap();
        assert_eq!(u.authority, "[::1]:9");
        assert_eq!(HttpUrl::parse("http://h?q").unwrap().path, "/?q");
    }

    #[test]
    fn refuses_what_a_key_endpoint_cannot_be() {
        for bad in [
            "",
            "ftp://h/x",
            "https:/h/x",
            "//h/x",
            "https://",
            "https:///x",
            "https://user:pw@h/x",
            "https://h/x#frag",
            "https://h:0/x",
            "https://h:99999/x",
            "https://h:80a/x",
            "https://h:/x",
            "https://h x/y",
            "https://h/\u{e9}",
            "https://h\t/x",
            "https://[::1/x",
            "https://[zz]/x",
            "https://[::1]x/y",
            "https://h_1/x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
