//! The `ws://` or `wss://` URL to load and the source addresses to load it from: loopback only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where the connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority as written.
    pub host: String,
    /// The request target: path and query, at least `/`.
    pub path: String,
    /// `wss://`: TLS to the server.
    pub tls: bool,
    /// The host alone (no port, no brackets): the name the server's certificate must carry.
    pub name: String,
}

const LOOPBACK_ONLY: &str =
    "only loopback targets are allowed on this machine (127.x.x.x, localhost or [::1])";

impl Target {
    /// Parses `ws://host[:port][/path][?query]` (port 80 by default) or the same with `wss://`
    /// (port 443), refusing any host that is not loopback.
    ///
    /// # Errors
    /// A message naming what is wrong with `url`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let scheme = |s: &str| {
            url.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        };
        let (rest, tls) = if scheme("ws://") {
            (&url[5..], false)
        } else if scheme("wss://") {
            (&url[6..], true)
        } else {
            return Err(format!("{url}: not a ws:// or wss:// URL"));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let path = match tail.split('#').next().unwrap_or("") {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url}: user information in the URL is not supported"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("{url}: bad host or port"))?;
        let ip = loopback_ip(host)
            .ok_or_else(|| format!("{url}: refusing host '{host}': {LOOPBACK_ONLY}"))?;
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            path,
            tls,
            name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        })
    }
}

/// Splits `host[:port]` or `[v6][:port]`; the port defaults to `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']')?;
        let after = &v6[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
    };
    (!host.is_empty()).then_some((host, port))
}

/// The address of a loopback host, or `None` for anything else.
fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if host == "[::1]" {
        return Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    match host.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() => Some(IpAddr::V4(ip)),
        _ => None,
    }
}

/// `--sources a,b,c`: each an IPv4 loopback address (all of 127.0.0.0/8 routes to `lo`).
///
/// # Errors
/// The first entry that is not an IPv4 loopback address.
pub fn parse_sources(list: &str) -> Result<Vec<IpAddr>, String> {
    list.split(',')
        .map(|s| match s.trim().parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_loopback() => Ok(IpAddr::V4(ip)),
            _ => Err(format!("--sources: '{s}' is not a 127.x.x.x address")),
        })
        .collect()
}

/// `--source-count K`: 127.0.0.1 … 127.0.0.K.
///
/// # Errors
/// K outside 1..=254.
pub fn counted_sources(k: usize) -> Result<Vec<IpAddr>, String> {
    if !(1..=254).contains(&k) {
        return Err(format!("--source-count: {k} is not in 1..=254"));
    }
    Ok((1..=k as u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let t = Target::parse("ws://127.0.0.1:9001/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!((t.host.as_str(), t.path.as_str()), ("127.0.0.1:9001", "/"));
        let t = Target::parse("WS://localhost:8080?x=1").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (8080, "/?x=1"));
        let t = Target::parse("ws://[::1]:9/chat#frag").unwrap();
        assert_eq!(
            (t.addr, t.path.as_str()),
            ("[::1]:9".parse().unwrap(), "/chat")
        );
        assert_eq!(Target::parse("ws://127.8.9.10").unwrap().addr.port(), 80);
        assert!(!t.tls);
    }

    #[test]
    fn wss_urls_are_accepted_on_loopback() {
        let t = Target::parse("wss://127.0.0.1:9443/chat?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(
            (t.host.as_str(), t.path.as_str(), t.tls, t.name.as_str()),
            ("127.0.0.1:9443", "/chat?x=1", true, "127.0.0.1")
        );
        let t = Target::parse("WSS://localhost/").unwrap();
        assert_eq!(
            (t.addr.port(), t.name.as_str(), t.tls),
            (443, "localhost", true)
        );
        let t = Target::parse("wss://[::1]:9443").unwrap();
        assert_eq!(
            (t.addr, t.name.as_str(), t.path.as_str()),
            ("[::1]:9443".parse().unwrap(), "::1", "/")
        );
        assert_eq!(
            Target::parse("ws://localhost:1/").unwrap().name,
            "localhost"
        );
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "ws://10.0.0.1:9001/",
            "ws://192.168.1.2/",
            "ws://example.com/",
            "ws://[::2]:80/",
            "ws://128.0.0.1/",
            "ws://127.0.0.1.evil.com/",
            "wss://10.0.0.1:9443/",
            "wss://example.com/",
            "wss://127.0.0.1:0/",
            "wss:/127.0.0.1/",
            "https://127.0.0.1/",
            "http://127.0.0.1/",
            "ws://user@127.0.0.1/",
            "ws://127.0.0.1:0/",
        ] {
            assert!(Target::parse(url).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn sources_must_be_loopback() {
        assert_eq!(parse_sources("127.0.0.1,127.0.0.2").unwrap().len(), 2);
        assert!(parse_sources("127.0.0.1,10.0.0.1").is_err());
        assert_eq!(
            counted_sources(3).unwrap()[2],
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))
        );
        assert!(counted_sources(0).is_err());
    }
}
