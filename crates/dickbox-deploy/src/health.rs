//! Health checks of a new instance, asked of the instance itself: an HTTP
//! GET of the manifest's `health_check_url` over its own socket (or at
//! `127.0.0.1:<its PORT>`) until it answers 2xx, within `startup_timeout`.
//! Without a URL, the socket or port accepting a connection is the check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp(port) => write!(f, "127.0.0.1:{port}"),
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(t: &Target, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
    match t {
        Target::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Ok(Box::new(s))
        }
        Target::Tcp(port) => {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
            let s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            Ok(Box::new(s))
        }
    }
}

/// One probe: `Ok(status)` with the HTTP status, or an error.
pub fn probe(t: &Target, url: Option<&str>, timeout: Duration) -> Result<u16, String> {
    let mut s = connect(t, timeout).map_err(|e| format!("connect {t}: {e}"))?;
    let Some(url) = url else {
        return Ok(200);
    };
    let req =
        format!("GET {url} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: dickbox-deploy\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {t}: {e}"))?;
    let mut buf = Vec::new();
    // The status line is all we need; cap what we read.
    s.take(8192)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read from {t}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!(
            "{t} did not answer HTTP (got {:?})",
            line.chars().take(60).collect::<String>()
        )),
    }
}

/// Probes until a 2xx answer or `deadline`; `alive` is asked between probes
/// and ends the wait early when the instance died.
pub fn wait_healthy(
    t: &Target,
    url: Option<&str>,
    timeout: Duration,
    alive: &mut dyn FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    let mut delay = Duration::from_millis(50);
    while start.elapsed() < timeout {
        match probe(t, url, Duration::from_secs(2)) {
            Ok(code) if (200..300).contains(&code) => return Ok(start.elapsed()),
            Ok(code) => last = format!("{} answered HTTP {code}", url.unwrap_or("/")),
            Err(e) => last = e,
        }
        if !alive() {
            return Err(format!("the instance stopped running ({last})"));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    Err(format!("not healthy within {timeout:?}: {last}"))
}
