//! gRPC answers for denials: a gRPC client cannot read an HTTP error page, only a
//! `grpc-status` and a `grpc-message` (gRPC over HTTP/2, "Responses" and "HTTP to gRPC
//! status code mapping").

/// `UNAUTHENTICATED`: no or invalid credentials (HTTP 401).
pub const UNAUTHENTICATED: u32 = 16;
/// `PERMISSION_DENIED`: valid credentials that do not grant this call (HTTP 403).
pub const PERMISSION_DENIED: u32 = 7;
/// `INVALID_ARGUMENT`: the request itself is malformed (HTTP 400).
pub const INVALID_ARGUMENT: u32 = 3;
/// `UNAVAILABLE`: try again later (HTTP 503, e.g. keys that cannot be fetched).
pub const UNAVAILABLE: u32 = 14;
/// `INTERNAL`: the gateway failed (HTTP 500 and anything unexpected).
pub const INTERNAL: u32 = 13;

/// The gRPC status sent in place of an HTTP denial status.
pub fn status_for_http(status: u16) -> u32 {
    match status {
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        400 => INVALID_ARGUMENT,
        503 => UNAVAILABLE,
        _ => INTERNAL,
    }
}

/// Whether a request `content-type` is gRPC: `application/grpc`, optionally followed by
/// `+<codec>` or parameters (`application/grpc+proto`, `application/grpc;charset=...`), the
/// media type compared case-insensitively. gRPC-Web (`application/grpc-web...`) is not gRPC
/// here: its clients read HTTP statuses, as Envoy's own check also says.
pub fn is_grpc_content_type(value: &str) -> bool {
    let value = value.trim();
    let Some(prefix) = value.get(..16) else {
        return false;
    };
    if !prefix.eq_ignore_ascii_case("application/grpc") {
        return false;
    }
    matches!(value.as_bytes().get(16), None | Some(b'+' | b';' | b' '))
}

/// `grpc-message` encoding: percent-encodes every byte outside printable ASCII, and `%`.
pub fn percent_encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc;charset=utf-8",
            " application/grpc ",
        ] {
            assert!(is_grpc_content_type(yes), "{yes}");
        }
        for no in [
            "",
            "application/json",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpcx",
            "text/application/grpc",
            "application/gr",
        ] {
            assert!(!is_grpc_content_type(no), "{no}");
        }
    }

    #[test]
    fn statuses_follow_the_meaning_of_the_http_status() {
        assert_eq!(status_for_http(401), 16);
        assert_eq!(status_for_http(403), 7);
        assert_eq!(status_for_http(400), 3);
        assert_eq!(status_for_http(503), 14);
        assert_eq!(status_for_http(500), 13);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(
            percent_encode_message("invalid_token: token expired"),
            "invalid_token: token expired"
        );
        assert_eq!(percent_encode_message("100% é\n"), "100%25 %C3%A9%0A");
    }
}
