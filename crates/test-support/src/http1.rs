//! A minimal blocking HTTP/1.1 client for moto's control API (`/moto-api/`), so that
//! [`crate::Moto`] works without a tokio runtime.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits `http://host:port[/]` into `host:port`.
pub(crate) fn authority(endpoint: &str) -> anyhow::Result<&str> {
    let rest = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("endpoint {endpoint:?} must start with http://"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("endpoint {endpoint:?} must be http://host:port with no path");
    }
    Ok(authority)
}

/// Sends one request with `Connection: close` and returns the status code.
pub(crate) fn request(endpoint: &str, method: &str, path: &str) -> anyhow::Result<u16> {
    let authority = authority(endpoint)?;
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .with_context(|| format!("reading the answer to {method} {path} from {authority}"))?;
    let line_end = response
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(response.len());
    let status_line = String::from_utf8_lossy(&response[..line_end]);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?} from {authority}"))?;
    Ok(status)
}
