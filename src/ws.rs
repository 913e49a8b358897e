//! The WebSocket gateway (`/ws`): authenticates the upgrade, then runs one
//! connection as a reader and a writer around its `SessionActor`.
//!
//! The reader bounds everything a client can send before it reaches an
//! actor: frame size (1009), a per-connection rate (RATE_LIMITED), bad
//! messages (ten in a row: 1008). The writer drains the session's bounded
//! outbox to the socket, keeps the peer alive with pings, and sends the
//! close frame the outbox says (1013 slow reader, 1001 shutdown, ...).
//! JSON is decoded only through `actors::wire`.

use crate::http::{ApiError, AppState};
use actors::domain::model::{Caller, Role};
use actors::engine::driver::DriverHandle;
use actors::engine::outbox::{CloseReason, Outbox, next_session_id};
use actors::engine::session::{SessionHandle, forward_location};
use actors::metrics as m;
use actors::wire::{self, ClientMessage, ServerMessage};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Close code for a missing, malformed or expired token (CONTRACT.md).
const UNAUTHORIZED: u16 = 4001;
/// A driver no admin approved yet: no socket (and so no offers) until then.
const PENDING_APPROVAL: u16 = 4003;
/// Ten rejected messages in a row close the connection.
const MAX_BAD_IN_A_ROW: u32 = 10;
/// How long a closing peer gets to answer our close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(3);
/// Frames the writer takes from the outbox for one flush.
const MAX_FRAMES_PER_WRITE: usize = 32;

pub async fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // A plain GET (a browser tab, a health checker) gets the contract's
    // error shape, not axum's plain-text rejection.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return not_an_upgrade(rejection),
    };
    let token = crate::http::bearer(&headers)
        .map(str::to_string)
        .or_else(|| query_token(query.as_deref()));
    let verified = token.and_then(|token| state.tokens.verify_until(&token));
    // Counted from before the upgrade, so the cap holds against a burst of
    // handshakes; the count goes with the closure if the upgrade fails.
    let seat = match &verified {
        Some((caller, _)) => match SocketSeat::take(&state, caller.user_id) {
            Some(seat) => Some(seat),
            None => {
                metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => "sockets").increment(1);
                return axum::response::IntoResponse::into_response(
                    crate::http::ApiError::RateLimited,
                );
            }
        },
        None => None,
    };
    let settings = &state.settings.ws;
    ws.read_buffer_size(settings.read_buffer_bytes)
        .write_buffer_size(settings.write_buffer_bytes)
        .max_write_buffer_size(
            settings.write_buffer_bytes + 2 * settings.max_frame_bytes.max(64 * 1024),
        )
        .max_frame_size(settings.max_frame_bytes)
        .max_message_size(settings.max_frame_bytes)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| run(Box::new(socket), verified, seat, state))
}

fn not_an_upgrade(rejection: WebSocketUpgradeRejection) -> Response {
    use axum::response::IntoResponse;
    let message = rejection.body_text();
    tracing::debug!(%message, "Not a WebSocket upgrade");
    ApiError::field(
        "headers",
        format!("{message}: /ws answers only a WebSocket upgrade (RFC 6455)"),
    )
    .into_response()
}

/// One of a user's `ws.max_sockets_per_user` sockets, given back on drop.
pub struct SocketSeat {
    user_id: i64,
    counts: Arc<dashmap::DashMap<i64, usize>>,
}

impl SocketSeat {
    fn take(state: &AppState, user_id: i64) -> Option<SocketSeat> {
        let mut open = state.sockets_per_user.entry(user_id).or_insert(0);
        if *open >= state.settings.ws.max_sockets_per_user {
            return None;
        }
        *open += 1;
        Some(SocketSeat {
            user_id,
            counts: state.sockets_per_user.clone(),
        })
    }
}

impl Drop for SocketSeat {
    fn drop(&mut self) {
        // The last socket of a user removes its entry: the map holds only
        // users with open sockets.
        self.counts.remove_if_mut(&self.user_id, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned())
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// One connection, from upgrade to close.
async fn run(
    socket: Box<WebSocket>,
    verified: Option<(Caller, u64)>,
    seat: Option<SocketSeat>,
    state: AppState,
) {
    let _seat = seat;
    let caller = verified.map(|(caller, _)| caller);
    let expires_at = verified.map_or_else(tokio::time::Instant::now, |(_, exp)| {
        let now = jsonwebtoken::get_current_timestamp();
        tokio::time::Instant::now() + Duration::from_secs(exp.saturating_sub(now))
    });
    // A task's future is as large as its largest await and lives as long
    // as the connection. Opening (actor spawns, close frames) is the
    // largest part, so it runs boxed and its memory is freed once done.
    // The socket comes boxed for the same reason (an argument keeps its
    // room in the future after it is moved out), and the box goes into the
    // opening, to be freed with it. Measured: the future of an open session
    // went from 3,576 to 1,184 bytes.
    let Some(open) = Box::pin(open(socket, caller, &state)).await else {
        return;
    };
    read(
        open.stream,
        &open.outbox,
        &open.session,
        open.driver.as_ref(),
        state.zones.as_ref(),
        &open.last_heard,
        &open.done,
        &state.shutdown,
        &open.settings,
        expires_at,
    )
    .await;
    // The client left (or the writer closed): stop the writer if it is not done.
    open.outbox.close(CloseReason::PeerClosed);
    let _ = open.writer.await;
    open.session.stop();
}

/// A connection past its opening: what the reader loop needs.
struct Open {
    stream: futures::stream::SplitStream<WebSocket>,
    outbox: Arc<Outbox>,
    session: SessionHandle,
    driver: Option<DriverHandle>,
    last_heard: Arc<AtomicI64>,
    done: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    settings: crate::settings::WsSettings,
    /// Shutdown waits (briefly) for every session to send its 1001.
    _live: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// Authenticates, starts the session's actors and its writer; `None` when
/// the socket was closed instead (4001, or 1011 when an actor is missing).
async fn open(socket: Box<WebSocket>, caller: Option<Caller>, state: &AppState) -> Option<Open> {
    let mut socket = *socket;
    let Some(caller) = caller else {
        metrics::counter!(m::WS_CLOSES_TOTAL, "code" => "4001").increment(1);
        let _ = socket
            .send(close_message(UNAUTHORIZED, "unauthorized"))
            .await;
        return None;
    };
    let live = state.live_sessions.token();
    let settings = state.settings.ws.clone();
    let outbox = Arc::new(Outbox::new(next_session_id(), settings.outbound_queue));

    // A driver's actor holds its socket: offers and its orders' updates go
    // there, and a newer connection of the same driver replaces this one.
    let driver = if caller.role == Role::Driver {
        match state
            .engine
            .drivers()
            .attach(caller.user_id, outbox.clone())
            .await
        {
            Ok(driver) => Some(driver),
            Err(actors::engine::driver::DriverError::Pending) => {
                metrics::counter!(m::WS_CLOSES_TOTAL, "code" => "4003").increment(1);
                let _ = socket
                    .send(close_message(PENDING_APPROVAL, "driver not approved yet"))
                    .await;
                return None;
            }
            Err(actors::engine::driver::DriverError::NotFound) => {
                metrics::counter!(m::WS_CLOSES_TOTAL, "code" => "4001").increment(1);
                let _ = socket
                    .send(close_message(UNAUTHORIZED, "unauthorized"))
                    .await;
                return None;
            }
            Err(error) => {
                tracing::warn!(driver_id = caller.user_id, %error, "Driver actor unavailable");
                let _ = socket.send(close_message(1011, "driver unavailable")).await;
                return None;
            }
        }
    } else {
        None
    };
    let session = match state
        .engine
        .open_session(caller, outbox.clone(), driver.clone())
        .await
    {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%error, "Session actor failed to start");
            let _ = socket.send(close_message(1011, "internal error")).await;
            return None;
        }
    };

    let (sink, stream) = socket.split();
    let last_heard = Arc::new(AtomicI64::new(now_ms()));
    let done = CancellationToken::new();
    let writer = tokio::spawn(write(
        sink,
        outbox.clone(),
        last_heard.clone(),
        done.clone(),
        settings.clone(),
    ));
    Some(Open {
        stream,
        outbox,
        session,
        driver,
        last_heard,
        done,
        writer,
        settings,
        _live: live,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[allow(clippy::too_many_arguments)]
async fn read(
    mut stream: futures::stream::SplitStream<WebSocket>,
    outbox: &Outbox,
    session: &SessionHandle,
    driver: Option<&DriverHandle>,
    zones: Option<&crate::zones::Zones>,
    last_heard: &AtomicI64,
    done: &CancellationToken,
    shutdown: &CancellationToken,
    settings: &crate::settings::WsSettings,
    expires_at: tokio::time::Instant,
) {
    let per_second = NonZeroU32::new(settings.messages_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = per_second.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
    let limiter = RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst));
    let mut bad_in_a_row = 0u32;
    loop {
        let frame = tokio::select! {
            _ = done.cancelled() => return drain(stream).await,
            _ = shutdown.cancelled() => {
                outbox.close(CloseReason::Shutdown);
                // Wait for the writer to send 1001, then finish the handshake.
                done.cancelled().await;
                return drain(stream).await;
            }
            // A socket lives no longer than the token that opened it.
            _ = tokio::time::sleep_until(expires_at) => {
                outbox.close(CloseReason::TokenExpired);
                done.cancelled().await;
                return drain(stream).await;
            }
            frame = stream.next() => frame,
        };
        let text = match frame {
            None => return,
            Some(Err(error)) => {
                if is_too_big(&error) {
                    metrics::counter!(m::WS_CLOSES_TOTAL, "code" => "1009").increment(1);
                    outbox.close(CloseReason::TooBig);
                    done.cancelled().await;
                    return drain(stream).await;
                }
                return;
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                last_heard.store(now_ms(), Ordering::Relaxed);
                reject(
                    outbox,
                    &mut bad_in_a_row,
                    "BAD_MESSAGE",
                    "binary frames are not part of the protocol",
                    None,
                );
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                last_heard.store(now_ms(), Ordering::Relaxed);
                continue;
            }
            Some(Ok(Message::Close(_))) => return,
        };
        last_heard.store(now_ms(), Ordering::Relaxed);
        let received_at = Instant::now();
        if limiter.check().is_err() {
            metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => "ws").increment(1);
            outbox.push(wire::error_frame(
                "RATE_LIMITED",
                "too many messages; slow down",
                None,
            ));
            continue;
        }
        let decoded = wire::decode(&text);
        match decoded.message {
            Err(error) => {
                metrics::counter!(m::WS_MESSAGES_IN_TOTAL, "type" => "invalid").increment(1);
                reject(
                    outbox,
                    &mut bad_in_a_row,
                    error.code(),
                    error.message(),
                    decoded.reference,
                );
            }
            Ok(message) => {
                bad_in_a_row = 0;
                metrics::counter!(m::WS_MESSAGES_IN_TOTAL, "type" => message.kind()).increment(1);
                if let ClientMessage::Ping { id } = message {
                    outbox.push(ServerMessage::Pong { id }.encode());
                    continue;
                }
                // The hot path: a driver's position goes straight to its
                // actor, one hop fewer than through the session (measured:
                // each hop is a task wake-up, the dominant cost at 30k/s).
                if let (ClientMessage::Location(input), Some(driver)) = (&message, driver) {
                    if let (Some(zones), Ok(fix)) = (zones, input.parse()) {
                        zones.observe_driver(driver.driver_id(), fix.at);
                    }
                    forward_location(driver, input, decoded.reference, received_at, outbox);
                    continue;
                }
                if !session.client(message, decoded.reference, received_at) {
                    // The session actor is gone: the app reconnects.
                    outbox.close(CloseReason::Restarting);
                }
            }
        }
    }
}

/// After our close frame: read (and ignore) what the peer still sends until
/// its close, for a bounded time. Dropping a socket with unread input makes
/// the kernel reset it, and the peer would lose our close frame with it.
async fn drain(mut stream: futures::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(frame)) = stream.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn reject(
    outbox: &Outbox,
    bad_in_a_row: &mut u32,
    code: &str,
    message: &str,
    reference: Option<serde_json::Value>,
) {
    *bad_in_a_row += 1;
    outbox.push(wire::error_frame(code, message, reference));
    if *bad_in_a_row >= MAX_BAD_IN_A_ROW {
        metrics::counter!(m::WS_CLOSES_TOTAL, "code" => "1008").increment(1);
        outbox.close(CloseReason::Abuse);
    }
}

/// Whether a read failed because the peer sent a frame over the limit.
fn is_too_big(error: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(WsError::Capacity(_)) = current.downcast_ref::<WsError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// The `type` of an encoded server frame, for the metrics label, without
/// parsing it: every frame starts with `{"type":"...`.
fn frame_type(frame: &[u8]) -> &'static str {
    const TYPES: [&str; 8] = [
        "ops",
        "snapshot",
        "order_update",
        "driver_location",
        "offer_result",
        "offer",
        "pong",
        "error",
    ];
    let rest = frame.strip_prefix(b"{\"type\":\"").unwrap_or_default();
    TYPES
        .into_iter()
        .find(|t| rest.starts_with(t.as_bytes()) && rest.get(t.len()) == Some(&b'"'))
        .unwrap_or("other")
}

async fn write(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    last_heard: Arc<AtomicI64>,
    done: CancellationToken,
    settings: crate::settings::WsSettings,
) {
    let send_timeout = Duration::from_secs(settings.send_timeout_secs);
    let idle_timeout_ms = (settings.idle_timeout_secs * 1000) as i64;
    let mut keepalive = tokio::time::interval(Duration::from_secs(settings.ping_interval_secs));
    keepalive.tick().await;
    loop {
        let next = tokio::select! {
            next = outbox.next() => next,
            _ = keepalive.tick() => {
                if now_ms() - last_heard.load(Ordering::Relaxed) > idle_timeout_ms {
                    outbox.close(CloseReason::Dead);
                    continue;
                }
                if !matches!(tokio::time::timeout(send_timeout, sink.send(Message::Ping(Default::default()))).await, Ok(Ok(()))) {
                    break;
                }
                continue;
            }
        };
        match next {
            Ok(out) => {
                // Whatever else is already queued goes out with it, in one
                // flush: under load, one wake-up and one write for many
                // frames. A close stops the draw; the next `outbox.next()`
                // sees it again. Frames are serde_json output, always UTF-8;
                // anything else is skipped rather than sent broken.
                let queued = std::iter::from_fn(|| outbox.try_next()?.ok());
                let batch: Vec<_> = std::iter::once(out)
                    .chain(queued)
                    .take(MAX_FRAMES_PER_WRITE)
                    .filter_map(|out| {
                        let kind = frame_type(&out.frame);
                        let text = Utf8Bytes::try_from(out.frame).ok()?;
                        Some((text, kind, out.received_at))
                    })
                    .collect();
                let written = tokio::time::timeout(send_timeout, async {
                    for (text, _, _) in &batch {
                        sink.feed(Message::Text(text.clone())).await?;
                    }
                    sink.flush().await
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    // The peer is gone or will not read: drop the connection.
                    break;
                }
                for (_, kind, received_at) in batch {
                    metrics::counter!(m::WS_MESSAGES_OUT_TOTAL, "type" => kind).increment(1);
                    if let Some(received_at) = received_at {
                        metrics::histogram!(m::FANOUT_LATENCY_SECONDS)
                            .record(received_at.elapsed().as_secs_f64());
                    }
                }
            }
            Err(CloseReason::PeerClosed) => {
                let _ = tokio::time::timeout(send_timeout, sink.close()).await;
                break;
            }
            Err(reason) => {
                metrics::counter!(m::WS_CLOSES_TOTAL, "code" => reason.code().to_string())
                    .increment(1);
                let _ = tokio::time::timeout(
                    send_timeout,
                    sink.send(close_message(reason.code(), reason.text())),
                )
                .await;
                let _ = tokio::time::timeout(send_timeout, sink.close()).await;
                break;
            }
        }
    }
    done.cancel();
}
