//! Lexical rules from the HTTP and OAuth RFCs, shared by the configuration reader and the
//! request path (so neither has to import the other).

/// RFC 9110 `token` (header names, auth-schemes): 1*tchar.
pub fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 6749 §3.3 scope-token: 1*( %x21 / %x23-5B / %x5D-7E ).
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_tokens() {
        assert!(is_http_token("Bearer"));
        assert!(is_http_token("x-forwarded-user"));
        for bad in ["", "Bearer:", "a b", "a\tb", "é"] {
            assert!(!is_http_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn scope_tokens() {
        assert!(is_scope_token("orders:read"));
        assert!(is_scope_token(
            "https://www.googleapis.com/auth/cloud-platform"
        ));
        assert!(is_scope_token("Orders.Read.All"));
        for bad in ["", "a b", "a\"b", "a\\b", "a\tb", "é"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
