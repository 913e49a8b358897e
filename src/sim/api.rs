//! The simulator's HTTP client: one typed call per endpoint it uses, each
//! failure reduced to the code the report counts it under.
//!
//! Codes are the server's own (`{"code": ...}` in error bodies), else
//! `HTTP_<status>` for a body without one, `CONNECT_FAILED` when the server
//! cannot be reached, `TIMEOUT`, and `BAD_RESPONSE` for a success body this
//! client cannot read.

use actors::domain::model::{DeliveryAddress, LatLon, MenuItem, Order, OrderStatus, Restaurant};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One request may take this long before it counts as `TIMEOUT`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `http://host:port` (plus any path prefix), without a trailing slash.
    base: String,
}

/// A failed call: the code it is counted under and what happened.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: String,
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user_id: i64,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
    user: UserId,
}

#[derive(Deserialize)]
struct UserId {
    id: i64,
}

#[derive(Deserialize)]
struct RestaurantList {
    restaurants: Vec<Restaurant>,
}

#[derive(Deserialize)]
struct RestaurantWithMenu {
    menu: Vec<MenuItem>,
}

#[derive(Deserialize)]
struct OrderBody {
    order: Order,
}

#[derive(Deserialize)]
struct OrderList {
    orders: Vec<Order>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<String>,
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    pub restaurant_id: i64,
    pub items: Vec<OrderLine>,
    pub delivery_address: DeliveryAddress,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub menu_item_id: i64,
    pub quantity: u32,
}

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, Failure> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Failure {
                code: "BAD_RESPONSE".into(),
                detail: format!("unreadable {status} body: {e}"),
            });
        }
        let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let (code, message) = match body {
            Some(ErrorBody {
                code: Some(code),
                error,
            }) => (code, error.unwrap_or_default()),
            _ => (
                format!("HTTP_{}", status.as_u16()),
                String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            ),
        };
        Err(Failure {
            code,
            detail: format!("{status}: {message}"),
        })
    }

    pub async fn healthz(&self) -> Result<(), Failure> {
        Self::send::<serde_json::Value>(self.request(Method::GET, "/healthz", None))
            .await
            .map(|_| ())
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Session, Failure> {
        let request = self
            .request(Method::POST, "/api/auth/login", None)
            .json(&serde_json::json!({ "email": email, "password": password }));
        let body: TokenBody = Self::send(request).await?;
        Ok(Session {
            token: body.token,
            user_id: body.user.id,
        })
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
        role: &str,
    ) -> Result<Session, Failure> {
        let mut body = serde_json::json!({
            "email": email, "password": password, "name": name, "role": role,
        });
        if role == "driver" {
            body["vehicleType"] = "car".into();
        }
        let request = self
            .request(Method::POST, "/api/auth/register", None)
            .json(&body);
        let body: TokenBody = Self::send(request).await?;
        Ok(Session {
            token: body.token,
            user_id: body.user.id,
        })
    }

    /// Open restaurants, nearest to `near` first.
    pub async fn open_restaurants(&self, near: LatLon) -> Result<Vec<Restaurant>, Failure> {
        let path = format!(
            "/api/restaurants?lat={}&lon={}&radiusKm=500&openOnly=true&limit=100",
            near.lat, near.lon
        );
        let body: RestaurantList = Self::send(self.request(Method::GET, &path, None)).await?;
        Ok(body.restaurants)
    }

    pub async fn menu(&self, restaurant_id: i64) -> Result<Vec<MenuItem>, Failure> {
        let path = format!("/api/restaurants/{restaurant_id}");
        let body: RestaurantWithMenu = Self::send(self.request(Method::GET, &path, None)).await?;
        Ok(body.menu)
    }

    pub async fn place_order(
        &self,
        token: &str,
        order: &NewOrder,
        idempotency_key: &str,
    ) -> Result<Order, Failure> {
        let request = self
            .request(Method::POST, "/api/orders", Some(token))
            .header("Idempotency-Key", idempotency_key)
            .json(order);
        let body: OrderBody = Self::send(request).await?;
        Ok(body.order)
    }

    /// The newest (at most 100) orders in `status` the caller may see.
    pub async fn orders(&self, token: &str, status: OrderStatus) -> Result<Vec<Order>, Failure> {
        let path = format!("/api/orders?status={status}&limit=100");
        let body: OrderList = Self::send(self.request(Method::GET, &path, Some(token))).await?;
        Ok(body.orders)
    }

    /// `PATCH /api/orders/{id}/status` with `action`.
    pub async fn act(&self, token: &str, order_id: i64, action: &str) -> Result<Order, Failure> {
        let request = self
            .request(
                Method::PATCH,
                &format!("/api/orders/{order_id}/status"),
                Some(token),
            )
            .json(&serde_json::json!({ "action": action }));
        let body: OrderBody = Self::send(request).await?;
        Ok(body.order)
    }

    /// Puts a registered driver on duty (as an admin).
    pub async fn approve_driver(&self, admin: &str, driver_id: i64) -> Result<(), Failure> {
        let request = self.request(
            Method::POST,
            &format!("/api/drivers/{driver_id}/approve"),
            Some(admin),
        );
        let _: serde_json::Value = Self::send(request).await?;
        Ok(())
    }

    /// One unlabelled gauge or counter from `/metrics`, if the server
    /// exports it.
    pub async fn metric(&self, name: &str, token: Option<&str>) -> Result<Option<f64>, Failure> {
        let response = self
            .request(Method::GET, "/metrics", token)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(Failure {
                code: format!("HTTP_{}", status.as_u16()),
                detail: "GET /metrics failed".into(),
            });
        }
        Ok(text.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        }))
    }
}

fn transport(error: reqwest::Error) -> Failure {
    let code = if error.is_timeout() {
        "TIMEOUT"
    } else if error.is_connect() {
        "CONNECT_FAILED"
    } else {
        "HTTP_FAILED"
    };
    Failure {
        code: code.into(),
        detail: error.to_string(),
    }
}
