//! A `rediss://` server on loopback with certificates made for the test by the `openssl`
//! command: a CA, a server certificate for 127.0.0.1 and a client certificate (the server asks
//! for one).

use crate::server::{Server, free_port, server_said, wait_until_ours};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// A `rediss://` server on loopback that asks for a client certificate, with the certificates
/// made for it in `certs`: `ca.crt`/`ca.key`, `other-ca.crt`, `server.crt`/`server.key`,
/// `client.crt`/`client.key`.
pub struct TlsRedis {
    server: Server,
    /// The TLS port (the plain one is also open).
    pub tls_port: u16,
    /// The directory of the certificates.
    pub certs: PathBuf,
}

impl TlsRedis {
    /// The plain (non-TLS) port, for set-up by hand.
    pub fn plain_port(&self) -> u16 {
        self.server.port
    }
    /// `rediss://127.0.0.1:<tls_port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
    /// The bytes of one file of `certs`.
    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.certs.join(file)).unwrap()
    }
}

/// Makes certificates with the `openssl` command and starts `$RB_TLS_REDIS_SERVER` (else
/// `redis-server` from PATH; it must be built with TLS, as Debian's is) on them.
pub fn tls_redis() -> TlsRedis {
    let certs = std::env::temp_dir().join(format!("redis-breaker-tls-{}-{}", std::process::id(), crate::unique("c")));
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
            return TlsRedis { server, tls_port, certs };
        }
        last = server_said(&server.dir);
    }
    panic!(
        "{binary} did not start with TLS; it said: {last}. The TLS test needs a server built with TLS \
         (Debian's redis-server is): set RB_TLS_REDIS_SERVER to one"
    );
}

/// A Sentinel (plain TCP on loopback) monitoring `redis` as `mymaster`, reaching it over TLS
/// with the certificates of `redis` (`tls-replication yes`) and the given password.
pub fn tls_sentinel(redis: &TlsRedis, password: &str) -> Server {
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
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\nsentinel auth-pass mymaster {password}\n\
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
    sentinel.unwrap_or_else(|| panic!("{binary} --sentinel did not start with TLS; it said: {last}"))
}
