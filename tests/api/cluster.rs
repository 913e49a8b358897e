//! Cluster mode: real `dispatchd` nodes on one fresh Postgres database and
//! one fresh JetStream key-value bucket per test, on the machine's NATS.

use crate::helpers::*;
use std::process::{Command, Stdio};

#[test]
fn cluster_mode_refuses_to_start_on_sqlite_and_says_why() {
    let path = std::env::temp_dir().join(format!(
        "dispatchd-cluster-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--database-url", &format!("sqlite:{}", path.display())])
        .env("DISPATCH__AUTH__JWT_SECRET", JWT_SECRET)
        .env("DISPATCH__CLUSTER__NATS_URL", "nats://127.0.0.1:4222")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run dispatchd");
    assert!(
        !output.status.success(),
        "started on SQLite in cluster mode"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cluster mode (cluster.nats_url) needs Postgres"),
        "{stderr}"
    );
    // Refused before it listened or touched the file.
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening on"));
    assert!(!path.exists());
}
