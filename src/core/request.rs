//! A request's headers as the decision reads them: which header is the host, which carry
//! credentials, which one names the request, whether it is gRPC. The filter builds it from
//! the host's header map and the CLI from its arguments, so the two can never read a request
//! differently.

use super::decide::HttpRequest;
use super::grpc::is_grpc_content_type;

/// The request headers the decision needs, owned, read once from a list of header pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// `:method`, when the pairs carry it (Kong's map has no pseudo-headers).
    pub method: Option<String>,
    /// `:path`, query included, when the pairs carry it.
    pub path: Option<String>,
    /// `Host`, else `:authority`.
    pub host: Option<String>,
    /// The host's route name (Envoy `xds.route_name`): not a header, set by the caller.
    pub route_name: Option<String>,
    /// Every `Authorization` value, in order.
    pub authorization: Vec<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `content-type` says gRPC: denials are then sent as gRPC statuses.
    pub grpc: bool,
    /// Every header name but pseudo-headers, lower case (for header hygiene), one after
    /// another: one buffer instead of a `String` per header, which on the request path of
    /// every request in Wasm was one dlmalloc call per header.
    header_name_text: String,
    /// Where each name in `header_name_text` ends.
    header_name_ends: Vec<usize>,
}

impl RequestHead {
    /// Reads header pairs (names in any case; hosts differ in the casing they report). Only
    /// the values the decision reads are copied: this is on every request's path.
    pub fn from_headers<I, N, V>(pairs: I) -> RequestHead
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut head = RequestHead {
            // Enough for the names of a usual request: no growth on the common path.
            header_name_text: String::with_capacity(256),
            header_name_ends: Vec::with_capacity(16),
            ..RequestHead::default()
        };
        let mut host = None;
        let mut authority = None;
        for (name, value) in pairs {
            // Lower-cased in place at the end of the buffer; dropped again if a pseudo-header.
            let start = head.header_name_text.len();
            head.header_name_text.push_str(name.as_ref());
            let name = match head.header_name_text.get_mut(start..) {
                Some(name) => {
                    name.make_ascii_lowercase();
                    &*name
                }
                None => "",
            };
            let pseudo = name.starts_with(':');
            let value = value.as_ref();
            match name {
                "authorization" => head.authorization.push(value.to_owned()),
                ":method" => head.method = Some(value.to_owned()),
                ":path" => head.path = Some(value.to_owned()),
                ":authority" => authority = Some(value.to_owned()),
                "host" => host = Some(value.to_owned()),
                "x-request-id" => head.request_id = Some(value.to_owned()),
                "content-type" => head.grpc = is_grpc_content_type(value),
                _ => {}
            }
            if pseudo {
                head.header_name_text.truncate(start);
            } else {
                head.header_name_ends.push(head.header_name_text.len());
            }
        }
        head.host = host.or(authority);
        head
    }

    /// Every header name but pseudo-headers, lower case, in order.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.header_name_ends.iter().copied());
        starts
            .zip(&self.header_name_ends)
            .filter_map(|(start, &end)| self.header_name_text.get(start..end))
    }

    /// The request to decide on (an absent method or path is empty).
    pub fn request(&self) -> HttpRequest<'_> {
        HttpRequest {
            method: self.method.as_deref().unwrap_or_default(),
            path: self.path.as_deref().unwrap_or_default(),
            host: self.host.as_deref(),
            route_name: self.route_name.as_deref(),
            authorization: self.authorization.iter().map(String::as_str).collect(),
            request_id: self.request_id.as_deref(),
            header_names: self.header_names().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_headers_in_any_case_and_prefers_host_over_authority() {
        let head = RequestHead::from_headers([
            (":authority", "vm:18080"),
            (":method", "GET"),
            (":path", "/orders/1?x=1"),
            ("Host", "api.example.com"),
            ("Authorization", "Bearer a.b.c"),
            ("authorization", "Basic x"),
            ("X-Request-Id", "r-1"),
            ("Content-Type", "application/grpc+proto"),
            ("x-other", "ignored"),
        ]);
        assert_eq!(head.host.as_deref(), Some("api.example.com"));
        assert_eq!(head.authorization, ["Bearer a.b.c", "Basic x"]);
        let req = head.request();
        assert_eq!((req.method, req.path), ("GET", "/orders/1?x=1"));
        assert_eq!(req.request_id, Some("r-1"));
        assert!(head.grpc);
        assert_eq!(
            req.header_names,
            [
                "host",
                "authorization",
                "authorization",
                "x-request-id",
                "content-type",
                "x-other"
            ]
        );
        let head = RequestHead::from_headers([(":authority", "h"), ("content-type", "text/plain")]);
        assert_eq!(head.host.as_deref(), Some("h"));
        assert!(!head.grpc);
        assert_eq!(head.request().method, "");
        // A pseudo-header between names leaves no trace; non-ASCII stays as it came.
        let head = RequestHead::from_headers([("X-A", "1"), (":path", "/p"), ("Ä-B", "2")]);
        assert_eq!(head.header_names().collect::<Vec<_>>(), ["x-a", "Ä-b"]);
        assert_eq!(head.request().path, "/p");
        assert_eq!(
            RequestHead::from_headers([("", "")]).request().header_names,
            [""]
        );
    }
}
