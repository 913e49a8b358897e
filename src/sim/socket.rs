//! The simulator's end of `/ws`: connecting (optionally from a chosen source
//! address), and the client's mirror of the wire messages (CONTRACT.md
//! "WebSocket"). Nothing else in the simulator builds or parses socket JSON.
//!
//! `actors::wire` has the server's side of these types (decode client
//! messages, encode server ones); a client needs the opposite directions,
//! so they are mirrored here with only the fields the simulator reads.

use super::stats::Stats;
use actors::domain::model::{DriverLocation, LatLon, Order};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

pub type Socket = WebSocketStream<TcpStream>;
pub type Sink = SplitSink<Socket, Message>;
pub type Stream = SplitStream<Socket>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Linux's errno for "too many open files".
const EMFILE: i32 = 24;

/// Where the server is, for sockets.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's resolved address.
    pub addr: SocketAddr,
    /// `ws://host:port/ws` (with any path prefix of `--server`).
    pub ws_url: String,
}

/// Messages the simulator sends: the protocol's own client messages.
pub use actors::wire::ClientMessage as Outgoing;

/// A position as the simulator sends it.
pub fn location(lat: f64, lon: f64, heading: f64, speed_mps: f64, timestamp: i64) -> Outgoing {
    Outgoing::Location(actors::domain::input::LocationInput {
        lat: Some(lat),
        lon: Some(lon),
        heading: Some(heading),
        speed_mps: Some(speed_mps),
        // When the fix was sent (ms since the epoch); the server echoes it
        // in `driver_location`, which is how fan-out latency is measured.
        timestamp: Some(timestamp),
    })
}

/// Messages the simulator reads; other types are ignored.
#[derive(Debug, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Incoming {
    Snapshot {
        order: Box<Order>,
    },
    OrderUpdate {
        order: Box<Order>,
    },
    DriverLocation {
        order_id: i64,
        location: DriverLocation,
    },
    /// `orderIds` / `dropoffs` name every order of a bundle, in drop-off
    /// sequence (a server without bundles sends only the first).
    Offer {
        offer_id: i64,
        order_id: i64,
        pickup: LatLon,
        dropoff: LatLon,
        #[serde(default)]
        dropoffs: Vec<OfferDropoff>,
    },
    OfferResult {
        offer_id: i64,
        order_id: i64,
        result: String,
    },
    Error {
        code: String,
        message: String,
    },
    #[serde(other)]
    Other,
}

/// One drop-off of a (bundled) offer.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferDropoff {
    pub order_id: i64,
    pub lat: f64,
    pub lon: f64,
}

/// What reading a socket produced.
pub enum Event {
    Message(Incoming),
    /// A control frame or a message type the simulator does not use.
    Nothing,
    /// The socket ended: the code the report counts it under, and why.
    Ended {
        code: String,
        detail: String,
    },
}

/// Opens `/ws` as `token`, from `source` when given (the connection-capacity
/// mode spreads its sockets over loopback addresses so that ephemeral ports
/// do not run out). The error is the code the failure is counted under, and
/// why.
pub async fn connect(
    target: &Target,
    token: &str,
    source: Option<IpAddr>,
) -> Result<Socket, (String, String)> {
    let attempt = async {
        let socket = match target.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(io_failure)?;
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(io_failure)?;
        }
        let stream = socket.connect(target.addr).await.map_err(io_failure)?;
        // Location frames are tiny; Nagle would add its delay to every
        // fan-out latency sample.
        stream.set_nodelay(true).map_err(io_failure)?;
        // Small buffers: tungstenite's defaults (128 KiB each way) would
        // cost gigabytes over tens of thousands of idle sockets.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let url = format!("{}?token={token}", target.ws_url);
        let (socket, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Io(e) => io_failure(e),
                tungstenite::Error::Http(response) => (
                    "CONNECT_FAILED".to_string(),
                    format!("upgrade refused: HTTP {}", response.status()),
                ),
                other => ("CONNECT_FAILED".to_string(), other.to_string()),
            })?;
        Ok(socket)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err((
            "CONNECT_FAILED".into(),
            format!("no WebSocket within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

fn io_failure(error: std::io::Error) -> (String, String) {
    if error.raw_os_error() == Some(EMFILE) {
        return (
            "EMFILE".into(),
            format!("{error}: out of file descriptors; raise `ulimit -n`"),
        );
    }
    ("CONNECT_FAILED".into(), error.to_string())
}

/// Counts an open connection in `stats.connections` for as long as it lives.
pub struct Held(Arc<Stats>);

impl Held {
    pub fn new(stats: Arc<Stats>) -> Held {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        Held(stats)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends one message; false (and counted) when the socket is unusable.
pub async fn send(sink: &mut Sink, message: &Outgoing, stats: &Stats) -> bool {
    // Serialising these plain structs cannot fail.
    let text = serde_json::to_string(message).unwrap_or_default();
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            stats.error("WS_SEND_FAILED", || e.to_string());
            false
        }
        Err(_) => {
            stats.error("WS_SEND_FAILED", || {
                format!("server did not take a frame within {SEND_TIMEOUT:?}")
            });
            false
        }
    }
}

/// Turns what the stream yielded into an [`Event`]. `error` messages and
/// unreadable text frames (`BAD_FRAME`) are counted here; an ending is left
/// to the caller, which knows whether it asked for it.
pub fn event(frame: Option<Result<Message, tungstenite::Error>>, stats: &Stats) -> Event {
    match frame {
        None => Event::Ended {
            code: "WS_DROPPED".into(),
            detail: "the connection ended without a close frame".into(),
        },
        Some(Err(e)) => Event::Ended {
            code: "WS_DROPPED".into(),
            detail: e.to_string(),
        },
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<Incoming>(&text) {
            Ok(Incoming::Error { code, message }) => {
                stats.error(&code, || message.clone());
                Event::Message(Incoming::Error { code, message })
            }
            Ok(message) => Event::Message(message),
            Err(e) => {
                stats.error("BAD_FRAME", || format!("{e}: {text}"));
                Event::Nothing
            }
        },
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            Event::Ended {
                code: format!("WS_CLOSED_{code}"),
                detail: format!("server closed the socket: {code} {reason}"),
            }
        }
        Some(Ok(_)) => Event::Nothing,
    }
}

/// Ends a socket the simulator is done with: a normal close, then a short
/// wait for the server's reply so neither side resets the connection.
pub async fn close(mut sink: Sink, mut stream: Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if sink.send(Message::Close(None)).await.is_err() {
            return;
        }
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Milliseconds since the Unix epoch, with sub-millisecond precision.
pub fn now_ms() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_messages_use_the_contract_shapes() {
        let v = serde_json::to_value(location(30.0, -97.0, 90.0, 9.0, 1_700_000_000_000)).unwrap();
        assert_eq!(v["type"], "location");
        assert_eq!(v["speedMps"], 9.0);
        assert_eq!(v["timestamp"], 1_700_000_000_000i64);
        let v = serde_json::to_value(Outgoing::OfferResponse {
            offer_id: 4,
            accept: true,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "offer_response", "offerId": 4, "accept": true})
        );
        let v = serde_json::to_value(Outgoing::SubscribeRestaurant { restaurant_id: 2 }).unwrap();
        assert_eq!(v["type"], "subscribe_restaurant");
        assert_eq!(v["restaurantId"], 2);
    }

    #[test]
    fn incoming_messages_parse_and_unknown_types_are_ignored() {
        let stats = Stats::default();
        let text = r#"{"type":"offer","offerId":9,"orderId":3,
            "pickup":{"restaurantId":1,"name":"Tacos","lat":30.1,"lon":-97.1},
            "dropoff":{"lat":30.2,"lon":-97.2},"distanceKm":1.5,"expiresAt":"2026-01-01T00:00:00Z"}"#;
        let Event::Message(Incoming::Offer {
            offer_id, pickup, ..
        }) = event(Some(Ok(Message::Text(text.into()))), &stats)
        else {
            panic!("not an offer");
        };
        assert_eq!((offer_id, pickup.lat), (9, 30.1));
        let pong = event(Some(Ok(Message::Text(r#"{"type":"pong"}"#.into()))), &stats);
        assert!(matches!(pong, Event::Message(Incoming::Other)));
        let bad = event(Some(Ok(Message::Text("{}".into()))), &stats);
        assert!(matches!(bad, Event::Nothing));
        assert_eq!(stats.errors()["BAD_FRAME"], 1);
    }
}
