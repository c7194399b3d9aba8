//! TLS (feature `tls`): a `rediss://` server on loopback with certificates made for the test by
//! the `openssl` command: a CA, a server certificate for 127.0.0.1 and a client certificate
//! (the server asks for one). The server is `$RB_TLS_REDIS_SERVER`, else `redis-server` from
//! PATH; it must be built with TLS (Debian's is).
#![cfg(feature = "tls")]

mod support;

use redis_breaker::{Client, ClientConfig, Config, Error, State, StoreError, TlsOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::server::{Server, free_port, server_said, wait_until_ours};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!(
            "the TLS test makes its certificates with the openssl command ({e}); install it: apt-get install -y openssl"
        )
    });
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate `name` signed by `ca`, with the given extensions.
fn make_cert(dir: &Path, ca: &str, name: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    let (crt, key, csr, ext) =
        (format!("{name}.crt"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
    openssl(
        dir,
        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")],
    );
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

struct TlsRedis {
    _server: Server,
    tls_port: u16,
    certs: PathBuf,
}

impl TlsRedis {
    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.certs.join(file)).unwrap()
    }
    fn options(&self) -> TlsOptions {
        TlsOptions::new().ca_pem(self.read("ca.crt")).client_pem(self.read("client.crt"), self.read("client.key"))
    }
}

fn tls_redis() -> TlsRedis {
    let certs = std::env::temp_dir().join(format!("redis-breaker-tls-{}-{}", std::process::id(), support::unique("c")));
    std::fs::create_dir_all(&certs).unwrap();
    // The CAs' subject and extensions (openssl req would otherwise ask for a subject).
    std::fs::write(certs.join("openssl.cnf"), "[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=redis-breaker test CA\n[v3_ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n").unwrap();
    let with_cnf = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["-config", "openssl.cnf", "-extensions", "v3_ca"]);
        openssl(&certs, &v);
    };
    with_cnf(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"]);
    with_cnf(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other-ca.key",
        "-out",
        "other-ca.crt",
        "-days",
        "2",
    ]);
    make_cert(
        &certs,
        "ca",
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    make_cert(&certs, "ca", "client", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");

    let binary = std::env::var("RB_TLS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut last = String::new();
    for _ in 0..10 {
        let (port, tls_port) = (free_port().unwrap(), free_port().unwrap());
        let dir = std::env::temp_dir().join(format!("redis-breaker-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::fs::File::create(dir.join("server.out")).unwrap();
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &tls_port.to_string()])
            .arg("--tls-cert-file")
            .arg(certs.join("server.crt"))
            .arg("--tls-key-file")
            .arg(certs.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.join("ca.crt"))
            .args(["--tls-auth-clients", "yes"])
            .arg("--dir")
            .arg(&dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}; install redis-server (apt-get install -y redis-server)"));
        let mut server = Server { child, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            return TlsRedis { _server: server, tls_port, certs };
        }
        last = server_said(&server.dir);
    }
    panic!(
        "{binary} did not start with TLS; it said: {last}. The TLS test needs a server built with TLS \
         (Debian's redis-server is): set RB_TLS_REDIS_SERVER to one"
    );
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: still not true after 10s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config() -> ClientConfig {
    ClientConfig::builder().op_timeout(Duration::from_secs(2)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_work_over_tls_with_a_ca_and_a_client_certificate_of_our_own() {
    let redis = tls_redis();
    let a = Client::connect_tls(&redis.url(), config(), redis.options()).await.unwrap();
    let b = Client::connect_tls(&redis.url(), config(), redis.options()).await.unwrap();
    let name = support::unique("tls");
    let trips = Config::builder().failure_threshold(1).build().unwrap();
    let (ba, bb) = (a.breaker(&name, trips.clone()).unwrap(), b.breaker(&name, trips).unwrap());
    bb.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    eventually("the event subscription over TLS", async || bb.health().await.unwrap().events_subscribed).await;
    let mut events = bb.subscribe();
    assert!(matches!(ba.execute(|| async { Err::<(), _>("down") }).await, Err(Error::Inner(_))));
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event over TLS").unwrap();
    assert_eq!(e.to, State::Open);
    assert!(matches!(bb.execute(|| async { Ok::<(), ()>(()) }).await, Err(Error::Rejected(_))));
    assert_eq!(ba.status().await.unwrap().state, State::Open, "the state is in the TLS server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_an_error_that_names_tls_and_calls_still_flow() {
    let redis = tls_redis();
    let wrong = TlsOptions::new()
        .ca_pem(redis.read("other-ca.crt"))
        .client_pem(redis.read("client.crt"), redis.read("client.key"));
    let client = Client::connect_tls(&redis.url(), config(), wrong).await.unwrap();
    let b = client.breaker(&support::unique("tls-wrong-ca"), Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("the handshake fails");
    assert!(matches!(err, StoreError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(err.is_outage(), "calls are decided by the degraded mode meanwhile");
    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("calls flow without Redis");
    println!("figures: a wrong CA: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_wants_a_client_certificate_refuses_a_client_without_one() {
    let redis = tls_redis();
    let client =
        Client::connect_tls(&redis.url(), config(), TlsOptions::new().ca_pem(redis.read("ca.crt"))).await.unwrap();
    let b = client.breaker(&support::unique("tls-no-cert"), Config::default()).unwrap();
    let err = b.force_open(None).await.expect_err("the server wants a client certificate");
    assert!(err.is_outage(), "{err:?}");
    println!("figures: no client certificate: {err}");
}

#[tokio::test]
async fn bad_tls_input_is_refused_before_any_connection() {
    let tls = TlsOptions::new().ca_pem(b"not a certificate".to_vec());
    let plain = Client::connect_tls("redis://127.0.0.1:1", config(), tls.clone()).await;
    assert!(matches!(plain, Err(redis_breaker::ConfigError::Field { field: "url", .. })), "{plain:?}");
    let bad = Client::connect_tls("rediss://127.0.0.1:1", config(), tls).await;
    assert!(matches!(bad, Err(redis_breaker::ConfigError::Field { field: "tls", .. })), "{bad:?}");
    assert!(!format!("{:?}", TlsOptions::new().client_pem(b"c".to_vec(), b"secret".to_vec())).contains("secret"));
}

/// The CLI takes the same URLs and certificates.
#[cfg(feature = "cli")]
#[test]
fn the_cli_speaks_tls_with_the_same_certificates() {
    let redis = tls_redis();
    let name = support::unique("tls-cli");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
            .args(["--url", &redis.url()])
            .arg("--tls-ca")
            .arg(redis.certs.join("ca.crt"))
            .arg("--tls-cert")
            .arg(redis.certs.join("client.crt"))
            .arg("--tls-key")
            .arg(redis.certs.join("client.key"))
            .args(args)
            .env_remove("REDIS_URL")
            .output()
            .expect("the CLI runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(&["open", &name]);
    let status = cli(&["--json", "status", &name]);
    assert!(status.contains("forced_open"), "{status}");
    // Without the CA the handshake fails, and the CLI says it was TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_redis-breaker"))
        .args(["--url", &redis.url(), "status", &name])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("TLS"), "{said}");
}

/// Issue 22, item 5: a Sentinel deployment whose data nodes speak TLS only to clients with a
/// certificate, and want a password. [`SentinelOptions`] carries both to the primary the
/// sentinel names, for the commands and the event subscription. The sentinel itself listens in
/// plain TCP and reaches the primary over TLS (`tls-replication yes`).
#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_names_a_tls_primary_reached_with_the_certificates_and_the_password_given() {
    use redis_breaker::{SentinelOptions, StoreStatus};
    const PASSWORD: &str = "tls-sentinel-pw-1d2c";
    let redis = tls_redis();
    let plain = redis._server.port;
    let mut admin = redis::Client::open(format!("redis://127.0.0.1:{plain}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg(PASSWORD).query_async(&mut admin).await.unwrap();

    let binary = std::env::var("RB_TLS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let certs = &redis.certs;
    let mut last = String::new();
    let mut sentinel = None;
    for _ in 0..10 {
        let port = free_port().unwrap();
        let dir = std::env::temp_dir().join(format!("redis-breaker-tls-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        let file = |name: &str| certs.join(name).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel auth-pass mymaster {PASSWORD}\n\
                 tls-replication yes\ntls-cert-file {}\ntls-key-file {}\ntls-client-cert-file {}\ntls-client-key-file {}\ntls-ca-cert-file {}\n",
                dir.display(),
                redis.tls_port,
                file("server.crt"),
                file("server.key"),
                file("client.crt"),
                file("client.key"),
                file("ca.crt"),
            ),
        )
        .unwrap();
        let out = std::fs::File::create(dir.join("server.out")).unwrap();
        let child = Command::new(&binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{binary} --sentinel: {e}; install redis-server (apt-get install -y redis-server)")
            });
        let mut server = Server { child, port, dir };
        if wait_until_ours(&mut server, Duration::from_secs(5)) {
            sentinel = Some(server);
            break;
        }
        last = server_said(&server.dir);
    }
    let sentinel = sentinel.unwrap_or_else(|| panic!("{binary} --sentinel did not start with TLS; it said: {last}"));
    let url = format!("redis://127.0.0.1:{}", sentinel.port);
    let options = SentinelOptions::new().password(PASSWORD).tls(redis.options());
    let a = Client::connect_sentinel_with(&[url.as_str()], "mymaster", config(), options.clone()).await.unwrap();
    let b = Client::connect_sentinel_with(&[url.as_str()], "mymaster", config(), options).await.unwrap();
    let name = support::unique("tls-sentinel");
    let trips = Config::builder().failure_threshold(1).build().unwrap();
    let (ba, bb) = (a.breaker(&name, trips.clone()).unwrap(), b.breaker(&name, trips).unwrap());
    bb.execute(|| async { Ok::<(), ()>(()) }).await.unwrap();
    eventually("the event subscription over TLS", async || bb.health().await.is_ok_and(|h| h.events_subscribed)).await;
    let mut events = bb.subscribe();
    assert!(matches!(ba.execute(|| async { Err::<(), _>("down") }).await, Err(Error::Inner(_))));
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event over TLS").unwrap();
    assert_eq!(e.to, State::Open);
    assert!(matches!(bb.execute(|| async { Ok::<(), ()>(()) }).await, Err(Error::Rejected(_))));
    assert_eq!(a.store_status(), StoreStatus::Redis);
    let mut authed = redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{plain}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let state: String = redis::cmd("HGET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg("state")
        .query_async(&mut authed)
        .await
        .unwrap();
    assert_eq!(state, "open", "the state is in the TLS primary");
    // The commands and the events went over TLS: the plain port saw only this test's connections.
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut authed).await.unwrap();
    let over_plain = clients.lines().filter(|l| l.contains(&format!("laddr=127.0.0.1:{plain}"))).count();
    let over_tls = clients.lines().filter(|l| l.contains(&format!("laddr=127.0.0.1:{}", redis.tls_port))).count();
    assert!(over_tls >= 4, "both clients' commands and events over TLS: {clients}");
    println!(
        "figures: sentinel + TLS + password: {over_tls} connections over TLS, {over_plain} over plain TCP (the test's own)"
    );
}
