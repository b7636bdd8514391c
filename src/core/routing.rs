//! Which rule a request falls under: the request as the core sees it, one rule's match
//! conditions ([`RouteMatch::matches`], the reference semantics), and the index compiled at
//! load ([`RuleIndex`]) that finds the first matching rule without walking every rule.
//!
//! The index only narrows the candidates: every candidate is still checked with
//! [`RouteMatch::matches`], and the smallest index wins, so first-match-wins is exactly the
//! linear matcher's answer (a property test compares both on random rules and requests).

use super::names::NameIndex;

/// What the filter needs to know about a request.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `Host`, else `:authority`.
    pub host: Option<&'a str>,
    /// The host's route name (Envoy `xds.route_name`), when it exposes one.
    pub route_name: Option<&'a str>,
    /// Every `Authorization` header value (names compared case-insensitively by the caller).
    pub authorization: Vec<&'a str>,
    /// `x-request-id`, when present.
    pub request_id: Option<&'a str>,
    /// The names of all request headers (for `strip_headers`; any case).
    pub header_names: Vec<&'a str>,
}

/// Which requests a rule applies to; every present condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Segment-aware path prefix (`/orders` matches `/orders` and `/orders/1`, not `/ordersX`).
    pub path_prefix: Option<String>,
    /// Exact path (query string excluded).
    pub path: Option<String>,
    /// Allowed methods (upper case); empty means any.
    pub methods: Vec<String>,
    /// Host (lower case), compared without the port unless it names one.
    pub host: Option<String>,
    /// The gateway's route name (Envoy `xds.route_name`).
    pub route: Option<String>,
}

impl RouteMatch {
    /// Whether this request (with `path` stripped of its query) is in scope.
    pub fn matches(&self, req: &HttpRequest<'_>, path: &str) -> bool {
        if let Some(exact) = &self.path {
            if path != exact {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !is_under_prefix(path, prefix) {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return false;
        }
        if let Some(host) = &self.host {
            let Some(actual) = req.host else {
                return false;
            };
            if !host_matches(host, actual) {
                return false;
            }
        }
        if let Some(route) = &self.route {
            if req.route_name != Some(route.as_str()) {
                return false;
            }
        }
        true
    }
}

/// Segment-aware prefix match: `/orders` takes `/orders` and `/orders/1`, not `/orders-admin`.
pub(crate) fn is_under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// A rule's `host` (lower case) against the request's: case-insensitive, the port ignored
/// unless the rule names one. Compared without allocating.
pub(crate) fn host_matches(rule_host: &str, actual: &str) -> bool {
    let compared = if rule_host.contains(':') {
        actual
    } else {
        strip_port(actual)
    };
    compared.eq_ignore_ascii_case(rule_host)
}

/// `host` without its `:port` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// One node of the path-prefix tree: a path segment.
#[derive(Debug, Default)]
struct PrefixNode {
    /// The next segments: their nodes' positions in `RuleIndex::nodes`.
    children: NameIndex,
    /// Rules whose prefix ends here without a `/` (`/orders`): they match a path whose
    /// segments start with this node's.
    here: Vec<usize>,
    /// Rules whose prefix ends here with a `/` (`/orders/`): they match a path that has at
    /// least one more segment.
    below: Vec<usize>,
}

/// The rules' match conditions compiled at load: exact paths and route names in maps, path
/// prefixes in a segment tree, the rest in one list; each candidate list ascending.
#[derive(Debug)]
pub struct RuleIndex {
    matchers: Vec<RouteMatch>,
    /// Exact path → position in `lists`.
    exact: NameIndex,
    /// Route name → position in `lists`.
    routes: NameIndex,
    /// Candidate lists (rule indices, ascending).
    lists: Vec<Vec<usize>>,
    /// The prefix tree; `nodes[0]` is the root.
    nodes: Vec<PrefixNode>,
    anywhere: Vec<usize>,
    needs_route_name: bool,
}

impl Default for RuleIndex {
    fn default() -> Self {
        RuleIndex {
            matchers: Vec::new(),
            exact: NameIndex::default(),
            routes: NameIndex::default(),
            lists: Vec::new(),
            nodes: vec![PrefixNode::default()],
            anywhere: Vec::new(),
            needs_route_name: false,
        }
    }
}

impl RuleIndex {
    /// Compiles the match conditions of the rules, in policy order.
    pub fn new<'a>(matchers: impl IntoIterator<Item = &'a RouteMatch>) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (i, m) in matchers.into_iter().enumerate() {
            index.needs_route_name |= m.route.is_some();
            // Each rule is filed once, under its most selective condition; the full
            // `matches` check decides, so any filing that keeps it a candidate is correct.
            if let Some(exact) = &m.path {
                let list = index.list_for(exact, false);
                index.push(list, i);
            } else if let Some(prefix) = &m.path_prefix {
                let (segments, below) = match prefix.strip_suffix('/') {
                    Some(head) => (head, true),
                    None => (prefix.as_str(), false),
                };
                let mut node = 0;
                for seg in segments.split('/') {
                    node = index.child(node, seg);
                }
                if let Some(n) = index.nodes.get_mut(node) {
                    if below {
                        n.below.push(i);
                    } else {
                        n.here.push(i);
                    }
                }
            } else if let Some(route) = &m.route {
                let list = index.list_for(route, true);
                index.push(list, i);
            } else {
                index.anywhere.push(i);
            }
            index.matchers.push(m.clone());
        }
        index
    }

    /// The candidate list of an exact path (or a route name), created when new.
    fn list_for(&mut self, name: &str, route: bool) -> usize {
        let next = self.lists.len();
        let map = if route {
            &mut self.routes
        } else {
            &mut self.exact
        };
        let at = map.insert_first(name, next);
        if at == next {
            self.lists.push(Vec::new());
        }
        at
    }

    fn push(&mut self, list: usize, rule: usize) {
        if let Some(l) = self.lists.get_mut(list) {
            l.push(rule);
        }
    }

    /// The child of node `node` for segment `seg`, created when new.
    fn child(&mut self, node: usize, seg: &str) -> usize {
        let next = self.nodes.len();
        let Some(n) = self.nodes.get_mut(node) else {
            return 0;
        };
        let at = n.children.insert_first(seg, next);
        if at == next {
            self.nodes.push(PrefixNode::default());
        }
        at
    }

    /// Whether any rule matches on the route name (otherwise the host need not be asked).
    pub fn needs_route_name(&self) -> bool {
        self.needs_route_name
    }

    /// The index of the first rule (in policy order) matching the request, as
    /// `rules.iter().position(|r| r.matches(req, path))` would find it.
    pub fn first_match(&self, req: &HttpRequest<'_>, path: &str) -> Option<usize> {
        let mut best = usize::MAX;
        let mut consider = |candidates: &[usize]| {
            // Ascending: the first that matches is this list's best, and none past `best`
            // can improve on it.
            for &i in candidates {
                if i >= best {
                    break;
                }
                if self.matchers.get(i).is_some_and(|m| m.matches(req, path)) {
                    best = i;
                    break;
                }
            }
        };
        let list = |map: &NameIndex, name: &str| {
            map.get(name)
                .and_then(|l| self.lists.get(l))
                .map_or(&[][..], Vec::as_slice)
        };
        consider(list(&self.exact, path));
        let mut node = self.nodes.first();
        let mut segments = path.split('/').peekable();
        while let (Some(seg), Some(n)) = (segments.next(), node) {
            let Some(child) = n.children.get(seg).and_then(|c| self.nodes.get(c)) else {
                break;
            };
            consider(&child.here);
            if segments.peek().is_some() {
                consider(&child.below);
            }
            node = Some(child);
        }
        if let Some(route) = req.route_name {
            consider(list(&self.routes, route));
        }
        consider(&self.anywhere);
        (best != usize::MAX).then_some(best)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn route_matching() {
        let m = RouteMatch {
            path_prefix: Some("/orders".into()),
            methods: vec!["GET".into()],
            host: Some("api.example.com".into()),
            ..Default::default()
        };
        let req = |method, path, host| HttpRequest {
            method,
            path,
            host,
            ..Default::default()
        };
        assert!(m.matches(&req("GET", "", Some("api.example.com")), "/orders"));
        assert!(m.matches(&req("GET", "", Some("API.example.com:8443")), "/orders/1"));
        assert!(!m.matches(&req("GET", "", Some("api.example.com")), "/orders-admin"));
        assert!(!m.matches(&req("POST", "", Some("api.example.com")), "/orders"));
        assert!(!m.matches(&req("GET", "", Some("evil.com")), "/orders"));
        assert!(!m.matches(&req("GET", "", None), "/orders"));
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("h:80"), "h");
    }

    /// xorshift64*: deterministic, so a failure names its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    /// Paths from a small alphabet, so that prefixes, exact paths and requests often meet
    /// (empty segments, trailing slashes, prefixes of segments, no leading slash).
    fn random_path(rng: &mut Rng, for_request: bool) -> String {
        const SEGS: &[&str] = &["a", "b", "ab", "", "a-b", "A"];
        if for_request && rng.chance(3) {
            return rng.pick(&["", "*", "a", "a/b"]).to_owned();
        }
        let n = rng.below(4);
        let mut p = String::new();
        for _ in 0..n {
            p.push('/');
            p.push_str(rng.pick(SEGS));
        }
        if p.is_empty() || rng.chance(20) {
            p.push('/');
        }
        p
    }

    fn random_rule(rng: &mut Rng) -> RouteMatch {
        RouteMatch {
            path_prefix: rng.chance(55).then(|| random_path(rng, false)),
            path: rng.chance(20).then(|| random_path(rng, false)),
            methods: if rng.chance(40) {
                let mut m = vec![rng.pick(&["GET", "POST", "PUT"]).to_owned()];
                if rng.chance(30) {
                    m.push("DELETE".into());
                }
                m
            } else {
                vec![]
            },
            host: rng.chance(25).then(|| {
                rng.pick(&["api.test", "api.test:8443", "[::1]", "other.test"])
                    .to_owned()
            }),
            route: rng
                .chance(25)
                .then(|| rng.pick(&["r1", "r2", "r3"]).to_owned()),
        }
    }

    #[test]
    fn the_index_finds_what_the_linear_matcher_finds() {
        let mut compared = 0usize;
        let mut matched = 0usize;
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let rules: Vec<RouteMatch> = (0..rng.below(12) + 1)
                .map(|_| random_rule(&mut rng))
                .collect();
            let index = RuleIndex::new(&rules);
            for _ in 0..200 {
                let path = random_path(&mut rng, true);
                let host = rng.chance(85).then(|| {
                    rng.pick(&[
                        "api.test",
                        "API.test:8443",
                        "api.test:80",
                        "[::1]:9",
                        "other.test",
                        "x",
                    ])
                });
                let route = rng.chance(60).then(|| rng.pick(&["r1", "r2", "r3", "r4"]));
                let req = HttpRequest {
                    method: rng.pick(&["GET", "POST", "PUT", "DELETE", "get"]),
                    path: &path,
                    host,
                    route_name: route,
                    ..Default::default()
                };
                let linear = rules.iter().position(|r| r.matches(&req, &path));
                assert_eq!(
                    index.first_match(&req, &path),
                    linear,
                    "seed {seed}: {req:?} against {rules:#?}"
                );
                compared += 1;
                matched += usize::from(linear.is_some());
            }
        }
        // The generator must exercise both outcomes substantially.
        assert!(
            matched > compared / 5 && matched < compared * 4 / 5,
            "{matched} of {compared}"
        );
    }

    #[test]
    fn first_match_wins_across_kinds_of_condition() {
        let rules = [
            RouteMatch {
                methods: vec!["POST".into()],
                ..Default::default()
            },
            RouteMatch {
                path_prefix: Some("/orders".into()),
                ..Default::default()
            },
            RouteMatch {
                path: Some("/orders/1".into()),
                ..Default::default()
            },
            RouteMatch {
                path_prefix: Some("/".into()),
                ..Default::default()
            },
        ];
        let index = RuleIndex::new(&rules);
        let req = |method, path| HttpRequest {
            method,
            path,
            ..Default::default()
        };
        assert_eq!(index.first_match(&req("POST", ""), "/orders/1"), Some(0));
        assert_eq!(index.first_match(&req("GET", ""), "/orders/1"), Some(1));
        assert_eq!(index.first_match(&req("GET", ""), "/ordersx"), Some(3));
        assert_eq!(index.first_match(&req("GET", ""), "orders"), None);
        assert!(!index.needs_route_name());
    }
}
