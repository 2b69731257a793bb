//! Which registries the lookup may contact, and the connections it makes
//! to them (server-side request forgery: the pod's author picks the
//! registry host, so without a guard the injector connects wherever a pod
//! says).
//!
//! - `allow` (`--registry-allow`): when not empty, only hosts matching one
//!   of its patterns are contacted: `host` (any port), `host:port`, or
//!   `*.example.com` (any subdomain of example.com, not example.com itself;
//!   `*.example.com:5000` for one port).
//! - Whatever `allow` says, a host that is, or resolves to, a loopback,
//!   private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7),
//!   link-local (169.254/16, fe80::/10), unspecified, multicast or
//!   broadcast address is refused, unless that exact `host:port` is named
//!   in `allow` or in the insecure list (a registry on loopback in tests, a
//!   private registry on a private address).
//! - Every connection of the registry client goes through a proxy inside
//!   the process (on loopback, an HTTP `CONNECT` proxy): it resolves the
//!   host once, checks every address, and connects to a checked address,
//!   so a name that resolves to a public address when checked and to a
//!   private one when connected (DNS rebinding) cannot get through. The
//!   same proxy sees the registry's redirects (blob downloads redirect to
//!   storage hosts) and token realms (the `WWW-Authenticate` realm names
//!   another host): they are checked by the same rules, so a storage or
//!   token host must match `allow` too when `allow` is set.
//! - Plain HTTP goes only to the insecure list's registries (loopback
//!   only): a redirect from a registry to an `http://` URL elsewhere is
//!   refused.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// The longest wait for a request head, and for a connection upstream.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals kept for the lookups to read (oldest dropped past it).
const MAX_REFUSALS: usize = 1024;

/// One `--registry-allow` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `host` or `host:port`.
    Host { host: String, port: Option<u16> },
    /// `*.suffix` or `*.suffix:port`: `suffix` kept with its leading dot.
    Subdomains { suffix: String, port: Option<u16> },
}

impl Rule {
    fn matches(&self, host: &str, port: u16) -> bool {
        match self {
            Rule::Host { host: h, port: p } => h == host && p.is_none_or(|p| p == port),
            Rule::Subdomains { suffix, port: p } => {
                host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && p.is_none_or(|p| p == port)
            }
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets); the host lowercased without
/// brackets. `None`: not a host.
pub(crate) fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (h, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port,
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
    {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

fn show(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses one `--registry-allow` pattern.
fn parse_rule(pattern: &str) -> Result<(Rule, Option<String>), String> {
    let p = pattern.trim();
    if p.contains("://") || p.contains('/') {
        return Err("a pattern is host, host:port or *.domain, without a scheme or path".into());
    }
    let (wild, rest) = match p.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, p),
    };
    if rest.contains('*') {
        return Err("* may only start a pattern, as in *.example.com".into());
    }
    let explicit_port = rest.starts_with('[') && rest.contains("]:")
        || !rest.starts_with('[') && rest.matches(':').count() == 1;
    let Some((host, port)) = split_host_port(rest, 0).or_else(|| {
        // A bare IPv6 address.
        rest.parse::<Ipv6Addr>().ok().map(|ip| (ip.to_string(), 0))
    }) else {
        return Err("not a host, host:port or *.domain".into());
    };
    let port = explicit_port.then_some(port);
    if wild {
        if host.parse::<IpAddr>().is_ok() {
            return Err("*. must be followed by a domain".into());
        }
        return Ok((
            Rule::Subdomains {
                suffix: format!(".{host}"),
                port,
            },
            None,
        ));
    }
    let exact = port.map(|port| show(&host, port));
    Ok((Rule::Host { host, port }, exact))
}

/// Why an address may not be contacted, if it may not.
pub(crate) fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4).map(|_| "an IPv4-mapped address of a non-public range");
            }
            let s = v6.segments();
            // The IPv4 address in two segments of an address that carries one.
            let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            if v6.is_loopback() {
                Some("a loopback address (::1)")
            } else if v6.is_unspecified() {
                Some("the unspecified address (::)")
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // A NAT64 gateway (RFC 6052; AWS VPCs offer one) connects
                // to the IPv4 address in the last 32 bits.
                forbidden_v4(v4(s[6], s[7]))
                    .map(|_| "a NAT64 address (64:ff9b::/96) of a non-public IPv4 range")
            } else if s[..3] == [0x64, 0xff9b, 1] {
                Some("a local-use NAT64 address (64:ff9b:1::/48)")
            } else if s[0] == 0x2002 {
                forbidden_v4(v4(s[1], s[2]))
                    .map(|_| "a 6to4 address (2002::/16) of a non-public IPv4 range")
            } else if s[..6] == [0; 6] {
                Some("an IPv4-compatible address (::/96, deprecated)")
            } else if s[..2] == [0x2001, 0] {
                Some("a Teredo address (2001::/32), which tunnels to an IPv4 address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a private address (fc00::/7)")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address (fe80::/10)")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("a site-local address (fec0::/10, deprecated)")
            } else if v6.is_multicast() {
                Some("a multicast address (ff00::/8)")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address (127.0.0.0/8)")
    } else if o[0] == 10 {
        Some("a private address (10.0.0.0/8)")
    } else if o[0] == 172 && (16..32).contains(&o[1]) {
        Some("a private address (172.16.0.0/12)")
    } else if o[0] == 192 && o[1] == 168 {
        Some("a private address (192.168.0.0/16)")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("a shared (carrier-grade NAT) address (100.64.0.0/10)")
    } else if o[0] == 169 && o[1] == 254 {
        Some("a link-local address (169.254.0.0/16, cloud metadata among them)")
    } else if o[0] == 0 {
        Some("an unspecified address (0.0.0.0/8)")
    } else if ip.is_multicast() {
        Some("a multicast address (224.0.0.0/4)")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else {
        None
    }
}

/// A check that did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The rules refuse the host (the message names it and the rule).
    Refused(String),
    /// The host does not resolve.
    Unresolved(String),
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Refused(m) | Denied::Unresolved(m) => f.write_str(m),
        }
    }
}

/// The rules, and the proxy that applies them to every connection.
#[derive(Debug)]
pub(crate) struct Guard {
    rules: Vec<Rule>,
    patterns: Vec<String>,
    /// Exact `host:port`s named in `allow` or the insecure list.
    exempt: HashSet<String>,
    /// The insecure list (`host:port`): the only plain-HTTP targets.
    insecure: HashSet<String>,
    /// The proxy's listener until its accept loop starts.
    listener: Mutex<Option<std::net::TcpListener>>,
    addr: SocketAddr,
    /// The last refusal per proxy user (one per registry client); `None`:
    /// a request without the user (a plain-HTTP redirect to another host
    /// loses its `Proxy-Authorization`).
    refusals: Mutex<HashMap<Option<u64>, (Instant, Refusal)>>,
    next_user: AtomicU64,
    /// The proxy password of this process's clients: no other local
    /// process can tunnel through the proxy.
    token: String,
}

/// What the proxy answered a connection it did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The rules refused the host.
    Refused(String),
    /// The host was allowed but no address answered.
    Unreachable(String),
}

impl Guard {
    /// Checks `allow` and binds the proxy's loopback port.
    pub(crate) fn new(allow: &[String], insecure: &[String]) -> Result<Guard, (String, String)> {
        let mut rules = Vec::new();
        let mut exempt = HashSet::new();
        for p in allow {
            let (rule, exact) = parse_rule(p).map_err(|why| (p.clone(), why))?;
            rules.push(rule);
            exempt.extend(exact);
        }
        let mut insecure_set = HashSet::new();
        for h in insecure {
            if let Some((host, port)) = split_host_port(h, 80) {
                exempt.insert(show(&host, port));
                insecure_set.insert(show(&host, port));
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                (
                    "proxy".to_owned(),
                    format!("cannot listen on loopback: {e}"),
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ("proxy".to_owned(), e.to_string()))?;
        Ok(Guard {
            rules,
            patterns: allow.to_vec(),
            exempt,
            insecure: insecure_set,
            listener: Mutex::new(Some(listener)),
            addr,
            refusals: Mutex::new(HashMap::new()),
            next_user: AtomicU64::new(1),
            token: random_token(),
        })
    }

    /// The proxy URL for a new registry client, and the user it is known
    /// by (starts the proxy, on a thread of its own, on first use).
    pub(crate) fn proxy_for_client(self: &Arc<Self>) -> (String, u64) {
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(l) = taken {
            // A thread and runtime of its own: the proxy outlives the
            // runtime of whoever asked first.
            let me = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("registry-guard".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "registry guard proxy did not start");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => me.serve(l).await,
                            Err(e) => {
                                tracing::error!(error = %e, "registry guard proxy did not start")
                            }
                        }
                    });
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "registry guard proxy did not start");
            }
        }
        let user = self.next_user.fetch_add(1, Ordering::Relaxed);
        (format!("http://c{user}:{}@{}", self.token, self.addr), user)
    }

    /// The refusal the proxy answered to `user` last, taken; else one
    /// answered to a request without a user since `since` (concurrent
    /// lookups may then see each other's: the message of a lookup that
    /// failed anyway).
    pub(crate) fn take_refusal(&self, user: u64, since: Instant) -> Option<Refusal> {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = r.remove(&Some(user)) {
            return Some(m);
        }
        match r.get(&None) {
            Some((at, m)) if *at >= since => Some(m.clone()),
            _ => None,
        }
    }

    fn record(&self, user: Option<u64>, refusal: Refusal) {
        match &refusal {
            Refusal::Refused(m) => {
                tracing::warn!(refused = m.as_str(), "registry connection refused")
            }
            Refusal::Unreachable(m) => tracing::info!(error = m.as_str(), "registry unreachable"),
        }
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() >= MAX_REFUSALS {
            r.clear();
        }
        r.insert(user, (Instant::now(), refusal));
    }

    /// Whether `host:port` may be contacted; the addresses to connect to
    /// (all of them checked) when it may.
    pub(crate) async fn check(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Denied> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let hp = show(&host, port);
        if !self.rules.is_empty() && !self.rules.iter().any(|r| r.matches(&host, port)) {
            return Err(Denied::Refused(format!(
                "{hp} is not matched by --registry-allow ({})",
                self.patterns.join(", ")
            )));
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    return Err(Denied::Unresolved(format!("cannot resolve {host}: {e}")));
                }
            },
        };
        if addrs.is_empty() {
            return Err(Denied::Unresolved(format!("{host} resolves to no address")));
        }
        if self.exempt.contains(&hp) {
            return Ok(addrs);
        }
        for a in &addrs {
            if let Some(why) = forbidden(a.ip()) {
                let what = if host.parse::<IpAddr>().is_ok() {
                    format!("{hp} is {why}")
                } else {
                    format!("{hp} resolves to {}, {why}", a.ip())
                };
                return Err(Denied::Refused(format!(
                    "{what}: loopback, private, link-local, unspecified and multicast addresses are contacted only when that exact HOST:PORT is named in --registry-allow or --registry-insecure"
                )));
            }
        }
        Ok(addrs)
    }

    async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let me = Arc::clone(&self);
                    tokio::spawn(async move {
                        let _ = me.handle(stream).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "registry guard proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(&self, mut client: TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let end = tokio::time::timeout(HEAD_TIMEOUT, async {
            loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    return Ok::<_, std::io::Error>(Some(i + 4));
                }
                if buf.len() > MAX_HEAD {
                    return Ok(None);
                }
                let mut chunk = [0u8; 2048];
                let n = client.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or(Ok(None))?;
        let Some(end) = end else { return Ok(()) };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let rest = buf[end..].to_vec();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let user = lines
            .clone()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("proxy-authorization")
                    .then(|| v.trim().to_owned())
            })
            .and_then(|v| proxy_user(&v, &self.token));

        if method == "CONNECT" {
            // Tunnels are for this process's clients only (their CONNECT
            // always carries the proxy password).
            if user.is_none() {
                return refuse(&mut client, "407 Proxy Authentication Required").await;
            }
            let Some((host, port)) = split_host_port(target, 443) else {
                return refuse(&mut client, "400 Bad Request").await;
            };
            let mut upstream = match self.connect(&host, port, user).await {
                Ok(s) => s,
                Err(_) => return refuse(&mut client, "403 Forbidden").await,
            };
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            if !rest.is_empty() {
                upstream.write_all(&rest).await?;
            }
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            return Ok(());
        }

        // Plain HTTP in absolute form: only to the insecure list.
        let Some(authority) = target
            .strip_prefix("http://")
            .map(|t| t.split('/').next().unwrap_or(""))
        else {
            return refuse(&mut client, "400 Bad Request").await;
        };
        let Some((host, port)) = split_host_port(authority, 80) else {
            return refuse(&mut client, "400 Bad Request").await;
        };
        let hp = show(&host, port);
        if !self.insecure.contains(&hp) {
            self.record(
                user,
                Refusal::Refused(format!(
                    "plain HTTP to {hp} refused: only the registries named in --registry-insecure are spoken to without TLS (a redirect to an http:// URL is refused)"
                )),
            );
            return refuse(&mut client, "502 Bad Gateway").await;
        }
        let mut upstream = match self.connect(&host, port, user).await {
            Ok(s) => s,
            Err(_) => return refuse(&mut client, "502 Bad Gateway").await,
        };
        let forwarded: String = head
            .split("\r\n")
            .filter(|l| {
                !l.split_once(':')
                    .is_some_and(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        upstream.write_all(forwarded.as_bytes()).await?;
        upstream.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    /// Checks `host:port` and connects to one of the checked addresses.
    async fn connect(&self, host: &str, port: u16, user: Option<u64>) -> Result<TcpStream, ()> {
        let addrs = match self.check(host, port).await {
            Ok(a) => a,
            Err(Denied::Refused(m)) => {
                self.record(user, Refusal::Refused(m));
                return Err(());
            }
            Err(Denied::Unresolved(m)) => {
                self.record(user, Refusal::Unreachable(m));
                return Err(());
            }
        };
        let mut last = None;
        for a in addrs {
            match tokio::time::timeout(HEAD_TIMEOUT, TcpStream::connect(a)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some("connect timed out".to_owned()),
            }
        }
        self.record(
            user,
            Refusal::Unreachable(format!(
                "cannot connect to {}: {}",
                show(host, port),
                last.unwrap_or_default()
            )),
        );
        Err(())
    }
}

async fn refuse(client: &mut TcpStream, status: &str) -> std::io::Result<()> {
    client
        .write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    client.shutdown().await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The client number in `Basic base64(c<N>:<token>)`, when the token is
/// this proxy's.
fn proxy_user(value: &str, token: &str) -> Option<u64> {
    let b64 = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    if password != token {
        return None;
    }
    user.strip_prefix('c')?.parse().ok()
}

/// 128 random bits as hex (from the standard library's per-process
/// random hash keys and the clock: a proxy password, not a key).
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        for (ip, class) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
            ("64:ff9b::a9fe:a9fe", "NAT64"),
            ("64:ff9b::10.0.0.5", "NAT64"),
            ("64:ff9b:1::8.8.8.8", "local-use NAT64"),
            ("2002:a9fe:a9fe::1", "6to4"),
            ("2002:c0a8:0101::", "6to4"),
            ("::169.254.169.254", "IPv4-compatible"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ] {
            let why = forbidden(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip} allowed"));
            assert!(why.contains(class), "{ip}: {why}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "192.169.0.1",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2600:1f18::1",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn patterns() {
        let (r, exact) = parse_rule("ghcr.io").unwrap();
        assert!(r.matches("ghcr.io", 443) && r.matches("ghcr.io", 5000));
        assert!(!r.matches("evil-ghcr.io", 443) && exact.is_none());
        let (r, exact) = parse_rule("Registry.Local:5000").unwrap();
        assert!(r.matches("registry.local", 5000) && !r.matches("registry.local", 443));
        assert_eq!(exact.as_deref(), Some("registry.local:5000"));
        let (r, _) = parse_rule("*.example.com").unwrap();
        assert!(r.matches("a.example.com", 443) && r.matches("b.a.example.com", 1));
        assert!(!r.matches("example.com", 443) && !r.matches("badexample.com", 443));
        let (_, exact) = parse_rule("[::1]:5000").unwrap();
        assert_eq!(exact.as_deref(), Some("[::1]:5000"));
        for bad in [
            "https://ghcr.io",
            "ghcr.io/x",
            "a.*.com",
            "",
            "host:notaport",
            "*.",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_proxy_tunnels_only_for_its_own_clients() {
        let g = Arc::new(Guard::new(&[], &[]).unwrap());
        let (url, user) = g.proxy_for_client();
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
        // With this process's password: the rules apply (a private
        // address, no connection).
        let token = url.split_once(':').unwrap().1.split_once(':').unwrap().1;
        let token = token.split_once('@').unwrap().0;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("c{user}:{token}"));
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(
            format!("CONNECT 10.1.2.3:443 HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        match g.take_refusal(user, Instant::now()) {
            Some(Refusal::Refused(m)) => {
                assert!(m.contains("10.1.2.3:443 is a private address"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn proxy_users() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("c42:t0k")
        );
        assert_eq!(proxy_user(&v, "t0k"), Some(42));
        assert_eq!(proxy_user(&v, "other"), None);
        assert_eq!(proxy_user("Bearer x", "t0k"), None);
    }
}
