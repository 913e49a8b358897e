//! Connection-capacity mode (`--idle-connections N`): open N idle WebSocket
//! sessions, hold them for `--duration`, and report what they cost the
//! server in resident memory.
//!
//! One machine runs out of ephemeral ports long before the server runs out
//! of memory, so against a loopback server the sockets are spread over
//! source addresses 127.0.0.2, 127.0.0.3, ... (all of 127/8 is local on
//! Linux), [`PER_SOURCE`] each.

use super::Ctx;
use super::accounts;
use super::socket::{self, Event, Held};
use super::stats::IdleReport;
use futures::StreamExt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sockets per source address; the ephemeral range is about 28,000 ports.
pub const PER_SOURCE: usize = 20_000;
/// Handshakes in flight at once.
const CONNECTING: usize = 256;
/// The server's resident memory gauge.
const RSS_METRIC: &str = "process_resident_memory_bytes";

pub async fn run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let args = &ctx.args;
    let stats = ctx.stats.clone();
    let wanted = args.idle_connections;
    // Any customer may open any number of sockets; one token serves all.
    // Idle sockets all go to the first node of `--server`.
    let node = ctx.nodes.first();
    let who = accounts::people("customer", 1)
        .into_iter()
        .map(|who| (&node.api, who))
        .collect();
    let session = accounts::sign_in_all(who, 1, &stats)
        .await
        .into_iter()
        .flatten()
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!("no customer could sign in: {:?}", stats.error_examples())
        })?;
    let rss_before = rss(&ctx).await;
    eprintln!(
        "sim: opening {wanted} idle connections to {}",
        node.target.ws_url
    );

    let loopback = matches!(node.target.addr.ip(), IpAddr::V4(ip) if ip.is_loopback());
    // Set on the first failure that further attempts would only repeat.
    let exhausted = Arc::new(AtomicBool::new(false));
    let opening = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    let mut attempts = futures::stream::iter(0..wanted)
        .map(|i| {
            let ctx = ctx.clone();
            let token = session.token.clone();
            let exhausted = exhausted.clone();
            async move {
                if exhausted.load(Ordering::Relaxed) || ctx.stop.is_cancelled() {
                    return;
                }
                let source = loopback.then(|| source_address(i)).flatten();
                match socket::connect(&node.target, &token, source).await {
                    Ok(socket) => {
                        let held = Held::new(ctx.stats.clone());
                        ctx.requests.spawn(hold(ctx.clone(), socket, held));
                    }
                    Err((code, detail)) => {
                        if code == "EMFILE" {
                            exhausted.store(true, Ordering::Relaxed);
                        }
                        ctx.stats.error(&code, || detail);
                    }
                }
            }
        })
        .buffer_unordered(CONNECTING);
    loop {
        tokio::select! {
            next = attempts.next() => if next.is_none() { break },
            _ = progress.tick() => eprintln!(
                "sim: {:>5.0}s opening: {} open, {} errors",
                opening.elapsed().as_secs_f64(),
                stats.connections_now(),
                stats.error_total()
            ),
        }
    }
    drop(attempts);
    if exhausted.load(Ordering::Relaxed) {
        eprintln!(
            "sim: out of file descriptors (EMFILE) after {} sockets; raise `ulimit -n` and retry",
            stats.connections_now()
        );
    }
    eprintln!(
        "sim: {} of {wanted} connections open after {:.1}s; holding for {}s",
        stats.connections_now(),
        opening.elapsed().as_secs_f64(),
        args.duration
    );

    let holding = Instant::now();
    let deadline = holding + Duration::from_secs(args.duration);
    while Instant::now() < deadline && !ctx.stop.is_cancelled() {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        tokio::select! {
            _ = ctx.stop.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        eprintln!(
            "sim: {:>5.0}s holding {} connections, {} errors",
            holding.elapsed().as_secs_f64(),
            stats.connections_now(),
            stats.error_total()
        );
    }
    // Read while the sockets are still open. The server refreshes the gauge
    // every few seconds; a hold shorter than that may read a stale value.
    let rss_after = rss(&ctx).await;
    let held = stats.connections_now();
    let duration_secs = holding.elapsed().as_secs_f64();
    ctx.stop.cancel();
    ctx.requests.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), ctx.requests.wait()).await;

    let bytes_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if held > 0 => {
            Some(((after as f64 - before as f64) / held as f64).round())
        }
        _ => None,
    };
    let report = IdleReport {
        server: args.server.clone(),
        duration_secs: (duration_secs * 1000.0).round() / 1000.0,
        connections_requested: wanted,
        connections_held: held,
        connections: held,
        server_rss_bytes_before: rss_before,
        server_rss_bytes_after: rss_after,
        bytes_per_connection,
        errors: stats.errors(),
    };
    let mb = |b: Option<u64>| {
        b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "-".into())
    };
    println!("dispatchd sim (idle connections) against {}", args.server);
    println!("  connections requested  {wanted}");
    println!("  connections held       {held}  (for {duration_secs:.1} s)");
    println!("  server RSS before      {}", mb(rss_before));
    println!("  server RSS after       {}", mb(rss_after));
    println!(
        "  bytes per connection   {}",
        bytes_per_connection
            .map(|b| format!("{b:.0}"))
            .unwrap_or_else(|| "-".into())
    );
    super::print_errors(&stats);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// The i-th socket's source address: 127.0.0.2 upwards, [`PER_SOURCE`] per
/// address; none past 127.0.0.254 (the OS picks).
fn source_address(i: usize) -> Option<IpAddr> {
    let host = 2 + i / PER_SOURCE;
    let host = u8::try_from(host).ok().filter(|h| *h < 255)?;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
}

async fn rss(ctx: &Ctx) -> Option<u64> {
    match ctx
        .nodes
        .first()
        .api
        .metric(RSS_METRIC, ctx.args.metrics_token.as_deref())
        .await
    {
        Ok(Some(bytes)) => Some(bytes as u64),
        Ok(None) => {
            eprintln!("sim: the server does not export {RSS_METRIC}");
            None
        }
        Err(failure) => {
            ctx.stats
                .error(&failure.code, || format!("GET /metrics: {failure}"));
            None
        }
    }
}

/// Keeps one idle socket open (answering the server's pings, which the
/// socket does while it is read) until the run stops.
async fn hold(ctx: Arc<Ctx>, socket: socket::Socket, held: Held) {
    let _held = held;
    let (sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            frame = stream.next() => {
                if let Event::Ended { code, detail } = socket::event(frame, &ctx.stats) {
                    if !ctx.stop.is_cancelled() {
                        ctx.stats.error(&code, || format!("idle socket: {detail}"));
                    }
                    return;
                }
            }
        }
    }
    socket::close(sink, stream).await;
}

/// Raises this process's soft open-file limit to its hard limit (each
/// socket is a descriptor); returns the limit now in force. Going past the
/// hard limit is the operator's `ulimit -n`.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub fn raise_open_file_limit() -> Option<u64> {
    // `struct rlimit` and RLIMIT_NOFILE as Linux defines them on these
    // 64-bit targets; declared here rather than adding a libc dependency
    // for two calls.
    #[repr(C)]
    struct RLimit {
        current: u64,
        max: u64,
    }
    const RLIMIT_NOFILE: i32 = 7;
    unsafe extern "C" {
        fn getrlimit(resource: i32, limit: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, limit: *const RLimit) -> i32;
    }
    let mut limit = RLimit { current: 0, max: 0 };
    // SAFETY: `limit` is a valid, writable `struct rlimit` for the call.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.current < limit.max {
        let raised = RLimit {
            current: limit.max,
            max: limit.max,
        };
        // SAFETY: `raised` is a valid `struct rlimit`; the call only reads it.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.current);
        }
    }
    Some(limit.current)
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_spread_over_loopback_addresses() {
        assert_eq!(
            source_address(0),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_address(PER_SOURCE - 1),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_address(PER_SOURCE),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
        assert_eq!(source_address(PER_SOURCE * 253), None);
    }

    #[test]
    fn the_open_file_limit_can_be_raised_to_the_hard_limit() {
        if cfg!(target_os = "linux") {
            assert!(raise_open_file_limit().is_some_and(|n| n > 0));
        }
    }
}
