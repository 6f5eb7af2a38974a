//! Benchmark client for `tests/zmq/bench.py --client rust`: one CURVE
//! publisher and one subscriber in one thread, at most `window` messages in
//! flight (below every high-water mark, so nothing is dropped), printing
//! messages per second. Fast enough that the forwarder, not the client, is
//! the bottleneck.
//!
//! Usage: bench_client PUB_ENDPOINT SUB_ENDPOINT SERVER_PUBLIC_CERT
//!        PUB_SECRET_CERT SUB_SECRET_CERT MESSAGES SIZE

use std::path::Path;
use std::time::Instant;

use zmq_key_rotate::store::read_cert;

fn client(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    cert: &str,
    server: &[u8; 32],
) -> Result<zmq::Socket, String> {
    let c = read_cert(Path::new(cert)).map_err(|e| e.to_string())?;
    let secret = c.secret.ok_or(format!("{cert}: no secret key"))?;
    let s = ctx.socket(kind).map_err(|e| e.to_string())?;
    s.set_curve_publickey(c.public.as_bytes())
        .map_err(|e| e.to_string())?;
    s.set_curve_secretkey(secret.as_bytes())
        .map_err(|e| e.to_string())?;
    s.set_curve_serverkey(server).map_err(|e| e.to_string())?;
    s.set_sndhwm(0).map_err(|e| e.to_string())?;
    s.set_rcvhwm(0).map_err(|e| e.to_string())?;
    s.set_linger(0).map_err(|e| e.to_string())?;
    Ok(s)
}

fn run(args: &[String]) -> Result<f64, String> {
    let [pub_ep, sub_ep, server, pub_cert, sub_cert, n, size] = args else {
        return Err("usage: bench_client PUB SUB SERVER_CERT PUB_CERT SUB_CERT N SIZE".into());
    };
    let n: u64 = n.parse().map_err(|_| "N is not a number")?;
    let size: usize = size.parse().map_err(|_| "SIZE is not a number")?;
    let server = *read_cert(Path::new(server))
        .map_err(|e| e.to_string())?
        .public
        .as_bytes();
    let ctx = zmq::Context::new();
    let sub = client(&ctx, zmq::SUB, sub_cert, &server)?;
    sub.set_subscribe(b"").map_err(|e| e.to_string())?;
    sub.connect(sub_ep).map_err(|e| e.to_string())?;
    let publisher = client(&ctx, zmq::XPUB, pub_cert, &server)?;
    publisher.connect(pub_ep).map_err(|e| e.to_string())?;
    if publisher
        .poll(zmq::POLLIN, 5000)
        .map_err(|e| e.to_string())?
        == 0
    {
        return Err(format!("{pub_ep}: the forwarder never subscribed"));
    }
    publisher.recv_bytes(0).map_err(|e| e.to_string())?;
    // Warm up until the subscriber's path is live, then drain.
    while sub.poll(zmq::POLLIN, 10).map_err(|e| e.to_string())? == 0 {
        publisher.send(&b"w"[..], 0).map_err(|e| e.to_string())?;
    }
    while sub.poll(zmq::POLLIN, 100).map_err(|e| e.to_string())? > 0 {
        sub.recv_bytes(0).map_err(|e| e.to_string())?;
    }

    let body = vec![b'x'; size];
    let window = 500;
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    let mut msg = zmq::Message::new();
    while got < n {
        while sent < n && sent - got < window {
            publisher.send(&body[..], 0).map_err(|e| e.to_string())?;
            sent += 1;
        }
        if sub.poll(zmq::POLLIN, 2000).map_err(|e| e.to_string())? == 0 {
            return Err(format!("stalled at {got} of {n}"));
        }
        while sub.recv(&mut msg, zmq::DONTWAIT).is_ok() {
            got += 1;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(rate) => {
            println!("{rate:.0}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
