//! A receiver's URL, checked: what to connect to, what to send, and what may be shown.

/// One receiver, from its URL.
pub(super) struct Receiver {
    pub(super) tls: bool,
    /// To connect to: a name or an address (an IPv6 one without brackets).
    pub(super) host: String,
    pub(super) port: u16,
    /// The Host header: the URL's authority.
    pub(super) authority: String,
    /// The request target: path and query (the secret part).
    pub(super) target: String,
    /// `scheme://host:port`: what logs and errors may show.
    pub(super) shown: String,
}

impl Receiver {
    /// The receiver of `url`, or why it cannot be one (never quoting the URL: its path and
    /// query may be a secret).
    pub(super) fn parse(url: &str) -> Result<Receiver, String> {
        let uri: hyper::Uri = url.trim().parse().map_err(|e| format!("not an http:// or https:// URL ({e})"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(_) | None => return Err("not an http:// or https:// URL".into()),
        };
        let Some(authority) = uri.authority() else { return Err("the URL has no host".into()) };
        if authority.as_str().contains('@') {
            return Err("a user or password in the URL is not supported".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = match authority.port() {
            Some(p) => p.as_u16(),
            None if tls => 443,
            None => 80,
        };
        if port == 0 {
            return Err("the URL's port is 0".into());
        }
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let target = if target.starts_with('/') { target } else { format!("/{target}") };
        let scheme = if tls { "https" } else { "http" };
        let shown = format!("{scheme}://{}:{port}", authority.host());
        Ok(Receiver { tls, host, port, authority: authority.as_str().to_string(), target, shown })
    }
}
