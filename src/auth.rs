//! Credentials: argon2 password hashes and HS256 JWTs that carry the caller.
//!
//! Hashing is deliberately slow, so it runs on the blocking pool and never
//! stalls the async workers.

use actors::domain::model::{Caller, Role};
use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token says about its holder. `rid` is set for restaurant staff.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rid: Option<i64>,
    iat: u64,
    exp: u64,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        // A token dated for later is not valid yet (jsonwebtoken skips
        // `nbf` unless asked).
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    pub fn issue(&self, caller: &Caller) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: caller.user_id.to_string(),
            role: caller.role,
            rid: caller.restaurant_id,
            iat: now,
            exp: now + self.ttl_secs,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The caller a token names, if it is ours, well formed and unexpired.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        self.verify_until(token).map(|(caller, _)| caller)
    }

    /// The caller and the token's expiry (seconds since the epoch), for a
    /// socket that must close when its token does.
    pub fn verify_until(&self, token: &str) -> Option<(Caller, u64)> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()?
            .claims;
        let user_id: i64 = claims.sub.parse().ok().filter(|id| *id > 0)?;
        if claims.role == Role::Restaurant && claims.rid.is_none() {
            return None;
        }
        Some((caller(user_id, claims.role, claims.rid), claims.exp))
    }
}

/// The `Caller` for a user; a driver's driver id is its user id.
pub fn caller(user_id: i64, role: Role, restaurant_id: Option<i64>) -> Caller {
    Caller {
        user_id,
        role,
        restaurant_id: if role == Role::Restaurant {
            restaurant_id
        } else {
            None
        },
        driver_id: (role == Role::Driver).then_some(user_id),
    }
}

/// Why a hashing job did not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing thread is busy and the queue is full: shed the request.
    #[error("too many password checks in flight")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Password work waiting for a hashing thread; more is refused (`Busy`).
const HASH_QUEUE: usize = 256;

type HashJob = Box<dyn FnOnce() + Send>;

/// A few dedicated threads, one per core, do every argon2 hash and check.
///
/// Each hash takes 19 MiB of working memory. On tokio's blocking pool it
/// would run on whichever of up to 512 threads is free, and the allocator
/// keeps such buffers per thread: a burst of logins grew the process by a
/// gigabyte. On a fixed pool, memory stays near threads x 19 MiB, and a
/// flood of logins queues (boundedly) instead of fanning out.
static HASH_POOL: std::sync::LazyLock<std::sync::mpsc::SyncSender<HashJob>> =
    std::sync::LazyLock::new(|| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<HashJob>(HASH_QUEUE);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take the next job.
                        let job = match receiver.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "Could not start a password hashing thread");
            }
        }
        sender
    });

/// Runs `work` on the hashing pool and waits for its result.
async fn on_hash_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashError> {
    let (reply, result) = tokio::sync::oneshot::channel();
    let job: HashJob = Box::new(move || {
        let _ = reply.send(work());
    });
    HASH_POOL.try_send(job).map_err(|_| HashError::Busy)?;
    result
        .await
        .map_err(|_| HashError::Failed("hashing thread gone".into()))
}

/// Hashes a password with argon2id and a fresh salt (on the hashing pool).
pub async fn hash_password(password: String) -> Result<String, HashError> {
    on_hash_pool(move || hash_password_blocking(&password))
        .await?
        .map_err(|e| HashError::Failed(e.to_string()))
}

pub fn hash_password_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// Checks a password against a stored hash (on the hashing pool). With no
/// stored hash (unknown email) it still does the work, so response time does
/// not tell which emails exist.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool, HashError> {
    on_hash_pool(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await
}

/// The hash of a random password, checked against for unknown emails so that
/// they cost the same time as known ones.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let password = uuid::Uuid::new_v4().to_string();
    hash_password_blocking(&password).unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_keeps_the_caller() {
        let tokens = Tokens::new(b"secret-for-tests-only", 60);
        let staff = caller(7, Role::Restaurant, Some(3));
        let token = tokens.issue(&staff).unwrap();
        assert_eq!(tokens.verify(&token), Some(staff));
        let driver = caller(9, Role::Driver, None);
        assert_eq!(
            tokens
                .verify(&tokens.issue(&driver).unwrap())
                .unwrap()
                .driver_id,
            Some(9)
        );
    }

    #[test]
    fn foreign_expired_and_garbled_tokens_are_refused() {
        let ours = Tokens::new(b"ours", 60);
        let theirs = Tokens::new(b"theirs", 60);
        let token = theirs.issue(&caller(1, Role::Admin, None)).unwrap();
        assert_eq!(ours.verify(&token), None);
        assert_eq!(ours.verify("not.a.jwt"), None);
        assert_eq!(ours.verify(""), None);
        let long_expired = Claims {
            sub: "1".into(),
            role: Role::Admin,
            rid: None,
            iat: 1,
            exp: 2,
        };
        let claims_token =
            jsonwebtoken::encode(&Header::default(), &long_expired, &ours.encoding).unwrap();
        assert_eq!(ours.verify(&claims_token), None);
    }

    #[test]
    fn password_hashes_verify() {
        let hash = hash_password_blocking("correct horse").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(
            rt.block_on(verify_password("correct horse".into(), Some(hash.clone())))
                .unwrap()
        );
        assert!(
            !rt.block_on(verify_password("wrong horse".into(), Some(hash)))
                .unwrap()
        );
        assert!(
            !rt.block_on(verify_password("correct horse".into(), None))
                .unwrap()
        );
    }
}
