//! Connecting to a bus that asks for credentials: user and password in the
//! URL are used, and no error ever shows the password.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use skald_tests::process::{NatsServer, free_port};
use skald_tests::token;
use skald_transport::BusOptions;

#[tokio::test]
async fn credentials_in_the_url_are_used_and_never_shown() {
    let dir = std::env::temp_dir().join(format!("skald-userbus-{}", token()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port().unwrap();
    let config = dir.join("nats-server.conf");
    std::fs::write(
        &config,
        format!(
            "host: \"127.0.0.1\"\nport: {port}\njetstream {{ store_dir: \"{}\" }}\n\
             authorization {{ users: [ {{ user: \"ledger\", password: \"s3cr3t-pw\" }} ] }}\n",
            dir.join("js").display()
        ),
    )
    .unwrap();
    let _server = NatsServer::with_config(port, &config, &dir).unwrap();

    let good = BusOptions::plain(&format!("nats://ledger:s3cr3t-pw@127.0.0.1:{port}"));
    let client = good.connect("test").await.expect("user and password from the URL");
    client.flush().await.unwrap();
    assert!(!format!("{good:?}").contains("s3cr3t-pw"));

    let wrong = BusOptions::plain(&format!("nats://ledger:not-the-pw@127.0.0.1:{port}"));
    let error = wrong.connect("test").await.expect_err("a wrong password is refused").to_string();
    assert!(!error.contains("not-the-pw"), "the error shows the password: {error}");
    assert!(error.contains(&format!("nats://127.0.0.1:{port}")), "{error}");
    assert!(error.contains("credentials"), "the hint names credentials: {error}");

    let anonymous = BusOptions::plain(&format!("nats://127.0.0.1:{port}"));
    assert!(anonymous.connect("test").await.is_err(), "an anonymous client connected");
}
