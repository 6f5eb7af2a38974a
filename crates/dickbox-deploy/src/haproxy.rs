//! The front of `listen: tcp` services: HAProxy, switched through its
//! runtime API. The host's HAProxy config has, per service, a backend
//! `dickbox-<service>` with two servers `blue` and `green` at the service's
//! two ports (deploy.ports). The switch sets the new release's server to
//! `ready` and the old one to `drain`, so open connections finish and new
//! ones go to the new release; nothing is reloaded.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use capsule::names::{ReleaseId, ServiceName};

use crate::config::Settings;

/// Sends one runtime API command and returns the answer.
pub fn command(s: &Settings, cmd: &str) -> Result<String> {
    let path =
        s.raw.haproxy_socket.as_ref().context(
            "a listen: tcp service needs deploy.haproxy_socket (the HAProxy runtime API)",
        )?;
    let mut sock = UnixStream::connect(path)
        .with_context(|| format!("connect to the HAProxy runtime API at {}", path.display()))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    sock.take(64 * 1024).read_to_string(&mut out)?;
    Ok(out.trim().to_owned())
}

/// Points the service's backend at the port of release `id`.
pub fn switch(s: &Settings, svc: &ServiceName, id: &ReleaseId) -> Result<()> {
    let pair = s
        .raw
        .ports
        .get(svc.as_str())
        .with_context(|| format!("deploy.ports has no blue/green pair for {svc}"))?;
    let port = crate::state::ports(s, svc)
        .get(id.as_str())
        .copied()
        .with_context(|| format!("release {id} of {svc} has no port assigned"))?;
    let (on, off) = if port == pair[0] {
        ("blue", "green")
    } else {
        ("green", "blue")
    };
    let backend = format!("dickbox-{svc}");
    for (server, state) in [(on, "ready"), (off, "drain")] {
        let out = command(s, &format!("set server {backend}/{server} state {state}"))?;
        if !out.is_empty() {
            bail!("HAProxy refused `set server {backend}/{server} state {state}`: {out}");
        }
    }
    tracing::info!(service = %svc, release = %id, server = on, port, "HAProxy switched");
    Ok(())
}
