//! Which `Host` the console answers: a guard against DNS rebinding, where a web page of another
//! origin whose name resolves to 127.0.0.1 reaches the loopback console from a browser with its
//! own name in `Host` (and reads what the console answers, with no token when reads need
//! none). On a loopback address only loopback names are answered (and `--allowed-host`);
//! any other `Host` gets 421 Misdirected Request, an HTTP/1.1 request without one 400.

use super::respond::error;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// A host as `Host` names it: lower-case, an IPv6 address in brackets, with its port when
/// given (`None`: any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostName {
    host: String,
    port: Option<u16>,
}

impl HostName {
    /// `name`, `name:port`, `a.b.c.d[:port]`, `[v6][:port]`; `None` for anything else
    /// (user info, an empty or non-numeric port, characters no host name has).
    fn parse(value: &str) -> Option<HostName> {
        let port = |p: &str| -> Option<u16> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        if let Some(rest) = value.strip_prefix('[') {
            let (ip, after) = rest.split_once(']')?;
            let ip: Ipv6Addr = ip.parse().ok()?;
            let port = match after {
                "" => None,
                p => Some(port(p.strip_prefix(':')?)?),
            };
            return Some(HostName { host: format!("[{ip}]"), port });
        }
        let (host, port) = match value.split_once(':') {
            Some((host, p)) => (host, Some(port(p)?)),
            None => (value, None),
        };
        let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
        if host.is_empty() || !host.bytes().all(name_byte) {
            return None;
        }
        Some(HostName { host: host.to_ascii_lowercase(), port })
    }

    fn of_ip(ip: IpAddr) -> HostName {
        let host = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        HostName { host, port: None }
    }

    /// Whether a request for `asked` is one for this host (any port when this names none).
    fn admits(&self, asked: &HostName) -> bool {
        self.host == asked.host && self.port.is_none_or(|p| asked.port == Some(p))
    }
}

/// `--allowed-host`'s parser.
pub(crate) fn parse_allowed(value: &str) -> Result<HostName, String> {
    HostName::parse(value).ok_or_else(|| "expected a host name or address, with :PORT or without".to_string())
}

/// The Host values the console answers.
pub(crate) struct Hosts {
    /// None: any (a non-loopback address with no `--allowed-host`).
    allowed: Option<Vec<HostName>>,
}

impl Hosts {
    pub(crate) fn new(listen: IpAddr, extra: &[HostName]) -> Hosts {
        if !listen.is_loopback() && extra.is_empty() {
            return Hosts { allowed: None };
        }
        let mut allowed: Vec<HostName> =
            ["127.0.0.1", "localhost", "[::1]"].iter().filter_map(|h| HostName::parse(h)).collect();
        if !listen.is_unspecified() {
            allowed.push(HostName::of_ip(listen));
        }
        allowed.extend(extra.iter().cloned());
        Hosts { allowed: Some(allowed) }
    }

    /// Whether every Host is answered.
    pub(crate) fn any(&self) -> bool {
        self.allowed.is_none()
    }

    fn admit(&self, value: &str) -> bool {
        let Some(allowed) = &self.allowed else { return true };
        HostName::parse(value).is_some_and(|asked| allowed.iter().any(|a| a.admits(&asked)))
    }
}

/// The middleware: answers 421 for a Host (or an absolute-form request's authority) the
/// console does not answer, 400 for an HTTP/1.1 request without a Host or with two; lets the
/// rest through. An HTTP/1.0 request may come without Host (no browser sends one so).
pub(crate) async fn check(State(hosts): State<Arc<Hosts>>, request: Request, next: Next) -> Response {
    let mut given = request.headers().get_all(header::HOST).iter();
    let (host, second) = (given.next(), given.next());
    if second.is_some() {
        return error(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    let host = match host.map(|h| h.to_str()) {
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "a Host header that is not text"),
        None => None,
    };
    let authority = request.uri().authority().map(|a| a.as_str());
    if host.is_none() && authority.is_none() && request.version() != Version::HTTP_10 {
        return error(StatusCode::BAD_REQUEST, "HTTP/1.1 requests need a Host header");
    }
    if !host.into_iter().chain(authority).all(|h| hosts.admit(h)) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "Misdirected Request: this console does not answer for this Host (it answers 127.0.0.1, \
             localhost, [::1] and the names given with --allowed-host; a guard against DNS rebinding)",
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_parse_strictly() {
        let h = |host: &str, port| Some(HostName { host: host.to_string(), port });
        assert_eq!(HostName::parse("LocalHost:9187"), h("localhost", Some(9187)));
        assert_eq!(HostName::parse("[::1]"), h("[::1]", None));
        assert_eq!(HostName::parse("[0:0::1]:80"), h("[::1]", Some(80)));
        for bad in ["", ":80", "a:", "a:+80", "a:http", "a:99999", "u@a", "a b", "[::1", "[x]", "[::1]80", "a:1:2"] {
            assert_eq!(HostName::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loopback_answers_loopback_names_and_the_allowed_ones() {
        let loopback = Hosts::new("127.0.0.1".parse().unwrap(), &[parse_allowed("ops.example:8443").unwrap()]);
        for ok in ["127.0.0.1", "127.0.0.1:1", "localhost:9187", "[::1]:9187", "ops.example:8443"] {
            assert!(loopback.admit(ok), "{ok}");
        }
        for refused in ["evil.example", "127.0.0.2", "ops.example", "ops.example:8444", "localhost.evil.example"] {
            assert!(!loopback.admit(refused), "{refused}");
        }
        assert!(Hosts::new("0.0.0.0".parse().unwrap(), &[]).any());
        let network = Hosts::new("10.0.0.5".parse().unwrap(), &[parse_allowed("console.example").unwrap()]);
        assert!(network.admit("10.0.0.5:9187") && network.admit("console.example") && !network.admit("evil.example"));
    }
}
