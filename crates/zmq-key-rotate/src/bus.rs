//! `zmq-key-rotate bus`: the CURVE publish/subscribe forwarder services use,
//! and the relay of rotation events.
//!
//! Per key generation the bus owns one XSUB socket (publishers connect to
//! `<runtime>/bus/<gen>/pub.sock`) and one XPUB socket (subscribers connect to
//! `…/sub.sock`), both CURVE servers with that generation's secret key. A
//! socket has one server key, so a rotation adds a second pair of sockets
//! instead of changing keys in place; established sessions are untouched.
//! Every message read from any XSUB goes to every XPUB, so a subscriber on
//! either generation sees the same stream in the same order, which is what
//! lets a client hand over from the old endpoint to the new one without loss.
//!
//! The generations listening are always: `current`, plus `previous` until its
//! `grace_until`. When a generation leaves that set its sockets are unbound,
//! drained and closed, which cuts the clients still using its key.
//!
//! Every CURVE handshake goes to the ZAP handler here, which accepts only keys
//! found in `<keys_dir>/<identity>/clients/`. Without a handler libzmq would
//! accept any client key, so the handler is bound before any server socket.
//!
//! The bus watches the store (the `current` link and the index) every
//! `watch_interval`; after it listens on a new generation it relays the
//! signed event that `rotate` stored, on the events socket, so a client told
//! of the rotation can connect at once. It repeats each identity's current
//! event every `announce_interval` for clients that missed it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::events::TOPIC;
use crate::metrics::{self, BusCounters};
use crate::rotate::require_curve;
use crate::store::{Generation, Identity, Link, Store, StoreError};

/// journald MESSAGE_ID of "bus retired a key generation".
pub const MESSAGE_RETIRED: &str = "7d2f4a9c1b3e4f5a8c6d0e2f4a1b3c5d";
/// journald MESSAGE_ID of "bus refused a client key".
pub const MESSAGE_REFUSED: &str = "a41c7e2b9d3f4a6c8e0b2d4f6a8c0e1b";

const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
const ZAP_DOMAIN: &str = "dickbox-bus";
/// Messages taken from one socket before the others get a turn.
const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Curve(#[from] crate::rotate::RotateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{step} {endpoint}: {source}")]
    Socket {
        step: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("another bus holds {path} ({holder}); one bus per runtime folder")]
    Busy { path: PathBuf, holder: String },
    #[error("refusing to start: {0}")]
    Unsafe(String),
    #[error("create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn sock_err(step: &'static str, endpoint: &str) -> impl FnOnce(zmq::Error) -> BusError + use<> {
    let endpoint = endpoint.to_string();
    move |source| BusError::Socket {
        step,
        endpoint,
        source,
    }
}

/// The sockets of one key generation.
struct Listening {
    generation: u64,
    grace_until: Option<u64>,
    xsub: zmq::Socket,
    xpub: zmq::Socket,
    endpoints: Vec<(bool, String)>,
    dir: PathBuf,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("generation", &self.generation)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// The running bus.
pub struct Bus {
    ctx: zmq::Context,
    config: Config,
    store: Store,
    id: Identity,
    zap: zmq::Socket,
    events: zmq::Socket,
    listening: Vec<Listening>,
    relayed: BTreeMap<Identity, u64>,
    /// Previous generations whose secret could not be loaded (logged once).
    unusable: BTreeSet<u64>,
    /// Unreadable files in `clients/` already warned about.
    warned_clients: BTreeSet<PathBuf>,
    counters: BusCounters,
    /// `<runtime_dir>/bus/bus.lock`, flocked while the bus runs.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("identity", &self.id)
            .field("listening", &self.listening)
            .finish()
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Bus {
    /// Binds the ZAP handler, the events socket and the sockets of every
    /// generation that should listen now.
    pub fn start(config: Config) -> Result<Self, BusError> {
        require_curve()?;
        let problems = Store::new(&config.keys_dir).permission_problems(&config.bus_identity);
        if !problems.is_empty() {
            return Err(BusError::Unsafe(problems.join("; ")));
        }
        let ctx = zmq::Context::new();
        let zap = ctx
            .socket(zmq::REP)
            .map_err(sock_err("create", ZAP_ENDPOINT))?;
        zap.bind(ZAP_ENDPOINT)
            .map_err(sock_err("bind", ZAP_ENDPOINT))?;

        let bus_dir = config.runtime_dir.join("bus");
        std::fs::create_dir_all(&bus_dir).map_err(|source| BusError::Dir {
            path: bus_dir.clone(),
            source,
        })?;
        // Before any bind: binding an ipc endpoint replaces the socket file
        // of a bus already running there.
        let lock = lock_runtime(&bus_dir)?;
        let events_endpoint = format!("ipc://{}", config.events_socket.display());
        let events = ctx
            .socket(zmq::PUB)
            .map_err(sock_err("create", &events_endpoint))?;
        events
            .set_linger(1000)
            .map_err(sock_err("set linger", &events_endpoint))?;
        events
            .bind(&events_endpoint)
            .map_err(sock_err("bind", &events_endpoint))?;

        let store = Store::new(&config.keys_dir);
        let id = config.bus_identity.clone();
        let mut bus = Self {
            ctx,
            store,
            id,
            zap,
            events,
            listening: Vec::new(),
            relayed: BTreeMap::new(),
            unusable: BTreeSet::new(),
            warned_clients: BTreeSet::new(),
            counters: BusCounters::default(),
            _lock: lock,
            config,
        };
        bus.sync()?;
        if bus.listening.is_empty() {
            return Err(StoreError::NoCurrent {
                identity: bus.id.clone(),
                dir: bus.store.identity_dir(&bus.id),
            }
            .into());
        }
        // Rotations made before this start are not announced again: a client
        // starting now reads the store.
        for id in bus.config.identities.clone() {
            if let Ok(index) = bus.store.index(&id)
                && let Ok(Some(g)) = bus.store.linked(&id, Link::Current, &index)
            {
                bus.relayed.insert(id, g);
            }
        }
        Ok(bus)
    }

    /// Endpoints of every generation listening now, newest last.
    pub fn endpoints(&self) -> Vec<(u64, Vec<String>)> {
        self.listening
            .iter()
            .map(|l| {
                (
                    l.generation,
                    l.endpoints.iter().map(|(_, e)| e.clone()).collect(),
                )
            })
            .collect()
    }

    /// Brings the listening set in line with the store.
    fn sync(&mut self) -> Result<(), BusError> {
        let index = self.store.index(&self.id)?;
        let current = self.store.linked(&self.id, Link::Current, &index)?;
        let previous = self.store.linked(&self.id, Link::Previous, &index)?;
        let find = |n: Option<u64>| index.generations.iter().find(|g| Some(g.generation) == n);
        let now = now_secs();
        let mut wanted: Vec<&Generation> = Vec::new();
        if let Some(p) = find(previous)
            && previous != current
            && p.grace_until.is_some_and(|g| (g as f64) > now)
        {
            wanted.push(p);
        }
        if let Some(c) = find(current) {
            wanted.push(c);
        }

        // Retire first: the TCP port pair of a retired generation may be the
        // one the new generation needs.
        let mut keep = Vec::new();
        for l in std::mem::take(&mut self.listening) {
            if wanted.iter().any(|g| g.generation == l.generation) {
                keep.push(l);
            } else {
                self.retire(l, &keep);
            }
        }
        self.listening = keep;
        for g in wanted {
            match self
                .listening
                .iter_mut()
                .find(|l| l.generation == g.generation)
            {
                Some(l) => l.grace_until = g.grace_until,
                None => match self.listen(g) {
                    Ok(l) => {
                        self.unusable.remove(&g.generation);
                        self.listening.push(l);
                    }
                    // A damaged previous key must not take the current one
                    // down with it: serve current, say loudly what is lost.
                    Err(e) if Some(g.generation) != current => {
                        if self.unusable.insert(g.generation) {
                            tracing::error!(
                                identity = %self.id,
                                generation = g.generation,
                                path = %self.store.identity_dir(&self.id).join(&g.secret_file).display(),
                                error = %e,
                                "previous key generation is unusable; its clients are not served until they move to the current key"
                            );
                        }
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        self.listening.sort_by_key(|l| l.generation);
        if let Some(newest) = self.listening.last() {
            let link = self.config.runtime_dir.join("bus").join("current");
            let target = PathBuf::from(newest.generation.to_string());
            if std::fs::read_link(&link).ok().as_ref() != Some(&target) {
                crate::atomic::switch_link(&link, &target)
                    .map_err(|source| BusError::Dir { path: link, source })?;
            }
            self.counters.current_generation = newest.generation;
        }
        self.counters.generations_listening = self.listening.len();
        Ok(())
    }

    fn listen(&mut self, g: &Generation) -> Result<Listening, BusError> {
        let cert = self.store.load_secret(&self.id, g)?;
        let secret = cert
            .secret
            .as_ref()
            .map(|k| *k.as_bytes())
            .unwrap_or_default();
        let dir = self
            .config
            .runtime_dir
            .join("bus")
            .join(g.generation.to_string());
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            })
            .map_err(|source| BusError::Dir {
                path: dir.clone(),
                source,
            })?;
        let mut endpoints = vec![
            (false, format!("ipc://{}", dir.join("pub.sock").display())),
            (true, format!("ipc://{}", dir.join("sub.sock").display())),
        ];
        if let Some(tcp) = &self.config.bus_tcp {
            let (p, s) = tcp.pairs[(g.generation % 2) as usize];
            endpoints.push((false, format!("tcp://{}:{p}", tcp.address)));
            endpoints.push((true, format!("tcp://{}:{s}", tcp.address)));
        }

        let make = |kind: zmq::SocketType, what: &'static str| -> Result<zmq::Socket, BusError> {
            let s = self.ctx.socket(kind).map_err(sock_err("create", what))?;
            s.set_curve_server(true)
                .map_err(sock_err("set curve server", what))?;
            s.set_curve_secretkey(&secret)
                .map_err(sock_err("set curve key", what))?;
            s.set_zap_domain(ZAP_DOMAIN)
                .map_err(sock_err("set zap domain", what))?;
            s.set_linger(0).map_err(sock_err("set linger", what))?;
            Ok(s)
        };
        let xsub = make(zmq::XSUB, "publisher socket")?;
        let xpub = make(zmq::XPUB, "subscriber socket")?;
        // Publishers send everything; subscribers' filters apply at the XPUB.
        xsub.send(&[1u8][..], 0)
            .map_err(sock_err("subscribe", "publisher socket"))?;
        for (is_sub, endpoint) in &endpoints {
            let socket = if *is_sub { &xpub } else { &xsub };
            bind_retrying(socket, endpoint)?;
        }
        tracing::info!(
            identity = %self.id,
            generation = g.generation,
            public_key = %g.public_key,
            endpoints = ?endpoints.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
            "bus listening on key generation"
        );
        Ok(Listening {
            generation: g.generation,
            grace_until: g.grace_until,
            xsub,
            xpub,
            endpoints,
            dir,
        })
    }

    /// Stops accepting a generation: unbind (no new sessions), forward what its
    /// publishers already sent, then close (cutting its sessions).
    fn retire(&mut self, l: Listening, others: &[Listening]) {
        for (is_sub, endpoint) in &l.endpoints {
            let socket = if *is_sub { &l.xpub } else { &l.xsub };
            if let Err(e) = socket.unbind(endpoint) {
                tracing::warn!(endpoint, error = %e, "unbind failed while retiring");
            }
        }
        let outs: Vec<&zmq::Socket> = others.iter().map(|o| &o.xpub).collect();
        self.counters.forwarded += drain(&l.xsub, &outs, usize::MAX);
        tracing::info!(
            message_id = MESSAGE_RETIRED,
            identity = %self.id,
            generation = l.generation,
            "bus retired key generation; its clients are cut off"
        );
        let dir = l.dir.clone();
        drop(l);
        // libzmq removes the socket files it created; an error here only
        // leaves an empty folder behind.
        let _ = std::fs::remove_dir(&dir);
    }

    fn handle_zap(&mut self) {
        let frames = match self.zap.recv_multipart(zmq::DONTWAIT) {
            Ok(f) => f,
            Err(zmq::Error::EAGAIN) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading a ZAP request failed");
                return;
            }
        };
        let request_id = frames.get(1).cloned().unwrap_or_default();
        let address = frames
            .get(3)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default();
        let key = match frames.as_slice() {
            [v, _, _, _, _, mech, key, ..]
                if v == b"1.0" && mech == b"CURVE" && key.len() == 32 =>
            {
                let mut k = [0u8; 32];
                k.copy_from_slice(key);
                Some(k)
            }
            _ => None,
        };
        let clients = self.store.client_keys(&self.id);
        if let Ok(c) = &clients {
            // Warn once per bad file, not on every handshake; a file that
            // becomes readable and breaks again is reported again.
            let bad: BTreeSet<PathBuf> = c.unreadable.iter().map(|(p, _)| p.clone()).collect();
            for (path, e) in &c.unreadable {
                if !self.warned_clients.contains(path) {
                    tracing::warn!(error = %e, "skipping unreadable client certificate");
                }
            }
            self.warned_clients = bad;
        }
        let allowed = match (key, clients) {
            (Some(k), Ok(c)) => c.keys.iter().find(|(_, c)| *c == k).map(|(p, _)| p.clone()),
            (_, Err(e)) => {
                tracing::error!(error = %e, "cannot read allowed client keys; refusing");
                None
            }
            (None, _) => None,
        };
        let client = key
            .map(|k| crate::z85::CurveKey::from_bytes(k).to_z85())
            .unwrap_or_else(|| "(not CURVE)".into());
        let (status, text, user): (&[u8], &[u8], String) = match &allowed {
            Some(path) => {
                self.counters.zap_accepted += 1;
                let user = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tracing::debug!(client_key = %client, address, user, "client accepted");
                (b"200", b"OK", user)
            }
            None => {
                self.counters.zap_refused += 1;
                tracing::warn!(
                    message_id = MESSAGE_REFUSED,
                    client_key = %client,
                    address,
                    "client key refused: not in the allowed clients folder"
                );
                (b"400", b"client key not allowed", String::new())
            }
        };
        let reply: [&[u8]; 6] = [b"1.0", &request_id, status, text, user.as_bytes(), b""];
        if let Err(e) = self.zap.send_multipart(reply, 0) {
            tracing::error!(error = %e, "answering a ZAP request failed");
        }
    }

    /// Relays stored events of rotations not announced yet; with `again`,
    /// announces each identity's current event once more. Repeating is what
    /// lets a client that missed an event (it was down, or the bus restarted
    /// after a rotation made while it was down, or it joined late) learn the
    /// key; clients ignore events that are not newer than their key.
    fn relay_events(&mut self, again: bool) {
        for id in self.config.identities.clone() {
            let Ok(index) = self.store.index(&id) else {
                continue;
            };
            let Ok(Some(current)) = self.store.linked(&id, Link::Current, &index) else {
                continue;
            };
            let repeat = self.relayed.get(&id) == Some(&current);
            if repeat && !again {
                continue;
            }
            let (json, sig) = self.store.event_paths(&id, current);
            match (std::fs::read(&json), std::fs::read(&sig)) {
                (Ok(j), Ok(s)) => {
                    let frames: [&[u8]; 3] = [TOPIC.as_bytes(), &j, &s];
                    match self.events.send_multipart(frames, 0) {
                        Ok(()) if repeat => {
                            tracing::debug!(identity = %id, generation = current, "announced current key again")
                        }
                        Ok(()) => {
                            tracing::info!(identity = %id, generation = current, "relayed rotation event")
                        }
                        Err(e) => {
                            tracing::error!(identity = %id, error = %e, "relaying rotation event failed")
                        }
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(identity = %id, generation = current, error = %e, "rotation event missing in the store")
                }
            }
            self.relayed.insert(id, current);
        }
    }

    /// Runs until `stop` is set. Sends READY=1 once listening.
    pub fn run(&mut self, stop: Arc<AtomicBool>) -> Result<(), BusError> {
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!(
                "listening on generation {}",
                self.counters.current_generation
            )),
        ]);
        tracing::info!(endpoints = ?self.endpoints(), "bus ready");
        let watch = self.config.watch_interval;
        let mut next_check = Instant::now() + watch;
        let mut next_metrics = Instant::now();
        // The first repeat comes soon after start, once clients that lost
        // their connection when the bus went down have reconnected.
        let mut next_announce = Instant::now() + Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            let mut timeout = next_check.saturating_duration_since(Instant::now());
            let now = now_secs();
            for l in &self.listening {
                if let Some(g) = l.grace_until.filter(|_| self.listening.len() > 1) {
                    let left = Duration::from_secs_f64(((g as f64) - now).max(0.0));
                    timeout = timeout.min(left);
                }
            }
            self.poll_once(timeout)?;
            let grace_over = self.listening.len() > 1
                && self.listening[..self.listening.len() - 1]
                    .iter()
                    .any(|l| l.grace_until.is_some_and(|g| (g as f64) <= now_secs()));
            if Instant::now() >= next_check || grace_over {
                next_check = Instant::now() + watch;
                match self.sync() {
                    Ok(()) => {
                        let again = Instant::now() >= next_announce;
                        if again {
                            next_announce = Instant::now() + self.config.announce_interval;
                        }
                        self.relay_events(again);
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    // Keep serving the generations already listening; without
                    // watchdog pings systemd restarts the bus if this persists.
                    Err(e) => tracing::error!(error = %e, "following the key store failed"),
                }
            }
            if Instant::now() >= next_metrics {
                next_metrics = Instant::now() + Duration::from_secs(10);
                metrics::write_bus(&self.config, &self.counters);
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(forwarded = self.counters.forwarded, "bus stopping");
        metrics::write_bus(&self.config, &self.counters);
        Ok(())
    }

    fn poll_once(&mut self, timeout: Duration) -> Result<(), BusError> {
        let n = self.listening.len();
        let (zap_ready, ready) = {
            let mut items = Vec::with_capacity(1 + 2 * n);
            items.push(self.zap.as_poll_item(zmq::POLLIN));
            for l in &self.listening {
                items.push(l.xsub.as_poll_item(zmq::POLLIN));
                items.push(l.xpub.as_poll_item(zmq::POLLIN));
            }
            match zmq::poll(&mut items, timeout.as_millis().max(1) as i64) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => return Ok(()),
                Err(e) => return Err(sock_err("poll", "bus sockets")(e)),
            }
            let ready: Vec<(bool, bool)> = (0..n)
                .map(|i| {
                    (
                        items[1 + 2 * i].is_readable(),
                        items[2 + 2 * i].is_readable(),
                    )
                })
                .collect();
            (items[0].is_readable(), ready)
        };
        if zap_ready {
            self.handle_zap();
        }
        let outs: Vec<&zmq::Socket> = self.listening.iter().map(|l| &l.xpub).collect();
        // Oldest generation first: a publisher handing over to the new key
        // sent its last old-key messages before its first new-key ones.
        for (i, (from_pub, from_sub)) in ready.iter().enumerate() {
            if *from_pub {
                self.counters.forwarded += drain(&self.listening[i].xsub, &outs, BATCH);
            }
            if *from_sub {
                // Subscription frames: filtering happens in the XPUB itself,
                // the publishers get everything, so nothing to pass upstream.
                while self.listening[i].xpub.recv_msg(zmq::DONTWAIT).is_ok() {}
            }
        }
        Ok(())
    }
}

/// Takes `bus.lock` in the runtime folder without waiting and writes our pid
/// in it; a second bus is told the holder's pid.
fn lock_runtime(bus_dir: &std::path::Path) -> Result<std::fs::File, BusError> {
    use std::io::{Read, Seek, Write};
    let path = bus_dir.join("bus.lock");
    let fail = |source| BusError::Dir {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(BusError::Busy { path, holder });
        }
        Err(e) => return Err(fail(e.into())),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(fail)?;
    Ok(file)
}

/// Forwards up to `max` whole messages from `from` to every socket in `to`.
fn drain(from: &zmq::Socket, to: &[&zmq::Socket], max: usize) -> u64 {
    let mut count = 0;
    let mut parts: Vec<zmq::Message> = Vec::with_capacity(4);
    while (count as usize) < max {
        parts.clear();
        match from.recv_msg(zmq::DONTWAIT) {
            Ok(m) => parts.push(m),
            Err(_) => break,
        }
        while parts.last().is_some_and(|m| m.get_more()) {
            match from.recv_msg(0) {
                Ok(m) => parts.push(m),
                Err(_) => break,
            }
        }
        let Some((last, others)) = to.split_last() else {
            count += 1;
            continue;
        };
        let last_part = parts.len() - 1;
        // An XPUB never blocks: a subscriber over its high-water mark loses
        // messages (which the client's sequence check reports).
        for socket in others {
            for (p, part) in parts.iter().enumerate() {
                let flags = if p < last_part { zmq::SNDMORE } else { 0 };
                if let Err(e) = socket.send(&part[..], flags) {
                    tracing::debug!(error = %e, "forward failed");
                }
            }
        }
        for (p, part) in parts.drain(..).enumerate() {
            let flags = if p < last_part { zmq::SNDMORE } else { 0 };
            if let Err(e) = last.send(part, flags) {
                tracing::debug!(error = %e, "forward failed");
            }
        }
        count += 1;
    }
    count
}

fn bind_retrying(socket: &zmq::Socket, endpoint: &str) -> Result<(), BusError> {
    // An immediate TCP rebind of a just-closed port can fail with "address in
    // use" for a few milliseconds.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match socket.bind(endpoint) {
            Ok(()) => return Ok(()),
            Err(zmq::Error::EADDRINUSE) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(sock_err("bind", endpoint)(e)),
        }
    }
}
