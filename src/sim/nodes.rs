//! The nodes `--server` names: parsing the list, checking that each one
//! answers, which node each party calls home, and moving a party to
//! another node when its own dies.
//!
//! One URL is today's single server: every party is at home there and a
//! socket that ends stays ended (counted), as it always did. With several,
//! parties are spread round-robin (drivers from the first node, customers
//! and restaurants shifted along the list, so that a customer and the
//! driver who carries its order are often on different nodes), and a party
//! whose socket ends opens one on the next node and picks up where it was.

use super::api::Api;
use super::socket::{self, Socket, Target};
use super::stats::Stats;
use anyhow::{Context as _, bail};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A reconnecting party tries this many times (the next node each time,
/// round the list) before it gives up (`RECONNECT_FAILED`).
const RECONNECT_ATTEMPTS: usize = 6;
/// The wait before the n-th attempt is n times this, at most
/// [`MAX_BACKOFF`]: short, so a failover is measured rather than waited out.
const BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The kinds of party, each spread over the nodes from its own offset.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Driver,
    Customer,
    Restaurant,
}

impl Kind {
    fn offset(self) -> usize {
        match self {
            Kind::Driver => 0,
            Kind::Customer => 1,
            Kind::Restaurant => 2,
        }
    }
}

/// One dispatchd node.
pub struct Node {
    /// As given in `--server`.
    pub url: String,
    pub api: Api,
    pub target: Target,
}

pub struct Nodes {
    list: Vec<Node>,
    /// Driver id -> the node its socket is on now, so a customer can tell
    /// a cross-node position from a same-node one.
    drivers: RwLock<HashMap<i64, usize>>,
}

/// A party's current node, shared with the requests it starts (so a
/// request after a reconnection goes to the new node).
#[derive(Clone)]
pub struct Home(Arc<AtomicUsize>);

impl Home {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, node: usize) {
        self.0.store(node, Ordering::Relaxed);
    }
}

impl Nodes {
    /// Parses `--server` (one URL or a comma-separated list) and checks that
    /// every node answers `/healthz`; the error names the first that does not.
    pub async fn connect(server: &str) -> anyhow::Result<Nodes> {
        let urls = parse_list(server)?;
        let mut list = Vec::with_capacity(urls.len());
        for url in urls {
            let target = resolve(&url).await?;
            let api = Api::new(&url)?;
            api.healthz()
                .await
                .map_err(|failure| anyhow::anyhow!("{url} does not answer /healthz: {failure}"))?;
            list.push(Node { url, api, target });
        }
        Ok(Nodes {
            list,
            drivers: RwLock::default(),
        })
    }

    /// More than one node: reconnections and cross-node figures apply.
    pub fn several(&self) -> bool {
        self.list.len() > 1
    }

    /// The first node: setup (the restaurant list, the admin) and the
    /// connection-capacity mode use it.
    pub fn first(&self) -> &Node {
        // `connect` refuses an empty list.
        &self.list[0]
    }

    pub fn node(&self, home: &Home) -> &Node {
        &self.list[home.get() % self.list.len()]
    }

    pub fn api(&self, home: &Home) -> &Api {
        &self.node(home).api
    }

    /// Where the `i`-th party of `kind` starts.
    pub fn home(&self, kind: Kind, i: usize) -> Home {
        Home(Arc::new(AtomicUsize::new(
            (i + kind.offset()) % self.list.len(),
        )))
    }

    pub fn driver_is_at(&self, driver_id: i64, home: &Home) {
        self.drivers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(driver_id, home.get());
    }

    pub fn driver_node(&self, driver_id: i64) -> Option<usize> {
        self.drivers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&driver_id)
            .copied()
    }

    /// After a party's socket ended: with several nodes, opens a socket on
    /// the next ones in turn (a short backoff before each try, a bounded
    /// number of tries) and moves `home` there. `None` with one node (as
    /// before clusters: the party stops), when the run stops, or when every
    /// try failed (counted once as `RECONNECT_FAILED`).
    pub async fn reconnect(
        &self,
        home: &Home,
        token: &str,
        stop: &CancellationToken,
        stats: &Stats,
    ) -> Option<Socket> {
        if !self.several() {
            return None;
        }
        let mut last = String::new();
        for attempt in 1..=RECONNECT_ATTEMPTS {
            let backoff = (BACKOFF * attempt as u32).min(MAX_BACKOFF);
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            let next = (home.get() + attempt) % self.list.len();
            match socket::connect(&self.list[next].target, token, None).await {
                Ok(socket) => {
                    home.set(next);
                    Stats::add(&stats.reconnections);
                    return Some(socket);
                }
                Err((code, detail)) => last = format!("{}: {code} {detail}", self.list[next].url),
            }
        }
        stats.error("RECONNECT_FAILED", || {
            format!("no node took the socket after {RECONNECT_ATTEMPTS} tries; last: {last}")
        });
        None
    }
}

/// `--server`'s URLs, trimmed; refuses an empty entry and a repeated one.
fn parse_list(server: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = server
        .split(',')
        .map(|url| url.trim().trim_end_matches('/').to_string())
        .collect();
    if urls.iter().any(String::is_empty) {
        bail!("--server {server:?} has an empty entry; give URL1,URL2,... without blanks");
    }
    for (i, url) in urls.iter().enumerate() {
        if urls[..i].contains(url) {
            bail!("--server names {url} twice");
        }
    }
    Ok(urls)
}

/// A node's socket address and WebSocket URL.
async fn resolve(server: &str) -> anyhow::Result<Target> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!(
            "--server {server:?} must be an http:// URL (the simulator speaks plain http and ws)"
        );
    }
    let host = uri
        .host()
        .with_context(|| format!("--server {server:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<_> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("cannot resolve {host} (of {server})"))?
        .collect();
    // Sockets connect to one address; take the first that answers (a
    // server on 127.0.0.1 is not on ::1, though `localhost` is both).
    let mut answering = None;
    for addr in &addrs {
        let attempt = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            answering = Some(*addr);
            break;
        }
    }
    let addr = answering
        .with_context(|| format!("nothing answers at {server} ({host}:{port}, {addrs:?})"))?;
    let prefix = uri.path().trim_end_matches('/');
    Ok(Target {
        addr,
        ws_url: format!("ws://{host}:{port}{prefix}/ws"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_trimmed_and_checked() {
        assert_eq!(
            parse_list("http://a:1, http://b:2/").unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(parse_list("http://a:1").unwrap(), ["http://a:1"]);
        let empty = parse_list("http://a:1,,http://b:2").unwrap_err();
        assert!(empty.to_string().contains("empty entry"), "{empty}");
        let twice = parse_list("http://a:1,http://a:1/").unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
    }
}
