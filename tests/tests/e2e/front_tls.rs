//! TLS termination at the gateway's front (issue 11): certificates made by the test (rcgen), curl
//! and openssl as clients, and a rustls client that tells which certificate the gateway
//! presented.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::certs::{replace, TestCa, TlsClient};
use e2e::{free_port, wait_for, Proc};

use crate::front::{curl, setup};

/// Consul, an echo instance of `web` and a gateway terminating TLS with one certificate for
/// `a.test`, written under the CA's directory as `gw.crt` / `gw.key`.
fn tls_gateway(ca: &TestCa, extra: &[&str]) -> (e2e::Consul, e2e::Echo, e2e::Gateway) {
    let (cert, key) = ca.issue(&["a.test"], "first").write(ca.dir.path(), "gw");
    let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    args.extend(extra);
    setup(&args)
}

fn https(port: u16, path: &str) -> String {
    format!("https://a.test:{port}{path}")
}

#[test]
fn tls_serves_http2_and_http1_by_alpn_and_tells_the_instance() {
    let ca = TestCa::new();
    let (_consul, echo, gw) = tls_gateway(&ca, &[]);
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    let resolve = format!("a.test:{}:127.0.0.1", gw.port);
    let url = https(gw.port, "/web/x?y=1");

    let h2 = curl(&["--http2", "--cacert", &ca_file, "--resolve", &resolve, &url]);
    assert_eq!((h2.version.as_str(), h2.status), ("2", 200), "{h2:?}");
    let seen = h2.echo();
    assert_eq!((seen.port, seen.path.as_str()), (echo.port, "/x?y=1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some(format!("a.test:{}", gw.port).as_str()));
    assert_eq!(seen.header("host"), Some(format!("127.0.0.1:{}", echo.port).as_str()));

    let h1 = curl(&["--http1.1", "--cacert", &ca_file, "--resolve", &resolve, &url]);
    assert_eq!((h1.version.as_str(), h1.status), ("1.1", 200), "{h1:?}");
    assert_eq!(h1.echo().header("x-forwarded-proto"), Some("https"));

    // Without ALPN, HTTP/1.1; with h2 offered, h2 is chosen.
    let client = TlsClient::connect(ca.client_config(&[]), gw.port, "a.test").unwrap();
    assert_eq!(client.alpn(), None);
    let client = TlsClient::connect(ca.client_config(&["http/1.1", "h2"]), gw.port, "a.test").unwrap();
    assert_eq!(client.alpn().as_deref(), Some("h2"));

    // Cleartext on the TLS port is not served.
    let plain = Command::new("curl").args(["-sS", "--max-time", "5", &gw.url("/web/x")]).output().unwrap();
    assert!(!plain.status.success(), "plain HTTP on the TLS port must fail");
}

/// Runs `openssl s_client` against the port with `args`: whether the handshake succeeded, and
/// what it printed.
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "a.test"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed for this test (apt-get install openssl)");
    // Close stdin: s_client ends after the handshake.
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "openssl s_client did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    (status.success() && out.contains("Verify return code: 0"), out)
}

#[test]
fn tls_1_2_and_1_3_are_accepted_and_1_1_is_refused() {
    let ca = TestCa::new();
    let (_consul, _echo, gw) = tls_gateway(&ca, &[]);
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    for version in ["-tls1_3", "-tls1_2"] {
        let (ok, out) = s_client(gw.port, &[version, "-CAfile", &ca_file]);
        assert!(ok, "{version} must be accepted: {out}");
    }
    // SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all, so a refusal is the gateway's.
    let (ok, out) = s_client(gw.port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", &ca_file]);
    assert!(!ok, "TLS 1.1 must be refused: {out}");
    // The refusal is an alert from the gateway (rustls answers a TLS 1.1-only hello with
    // handshake_failure), not the client giving up before sending.
    assert!(out.contains("SSL alert number"), "refused by the server with an alert: {out}");
    let resolve = format!("a.test:{}:127.0.0.1", gw.port);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--tlsv1.0", "--tls-max", "1.1", "--cacert", &ca_file, "--resolve", &resolve])
        .arg(https(gw.port, "/web/x"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "curl --tls-max 1.1 must fail");
}

#[test]
fn sni_picks_the_certificate_of_the_name_and_others_get_the_default() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let a = ca.issue(&["a.test"], "a");
    let wild = ca.issue(&["*.b.test", "b.test"], "b");
    let default = ca.issue(&["default.test"], "default");
    a.write(dir.path(), "a");
    wild.write(dir.path(), "b");
    default.write(dir.path(), "default");
    std::fs::write(dir.path().join("README"), "ignored").unwrap();
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let (_consul, _echo, gw) = setup(&["--tls-dir", &dir_arg]);
    let config = ca.client_config(&["http/1.1"]);
    let presented = |name: &str| TlsClient::connect(config.clone(), gw.port, name).map(|c| c.peer_cert());

    assert_eq!(presented("a.test").unwrap(), a.der, "exact name");
    assert_eq!(presented("x.b.test").unwrap(), wild.der, "wildcard");
    assert_eq!(presented("b.test").unwrap(), wild.der, "second name of the same certificate");
    // The default certificate is valid for neither an unknown name nor an IP address, so a
    // verifying client fails: openssl reads the certificate whatever it is.
    assert!(presented("c.test").is_err());
    assert!(subject(gw.port, Some("c.test")).contains("default"), "an unknown name gets default.crt");
    assert!(subject(gw.port, None).contains("default"), "no SNI gets default.crt");
    assert!(subject(gw.port, Some("a.test")).contains("CN = a"), "openssl agrees on the exact name");

    // Served over that TLS connection, too.
    let mut client = TlsClient::connect(config, gw.port, "a.test").unwrap();
    let (status, body) = client.get("a.test", "/web/hello").unwrap();
    assert_eq!(status, 200, "{body}");
}

/// The subject line of the certificate the gateway presents to openssl, sending `name` as SNI
/// (or none).
fn subject(port: u16, name: Option<&str>) -> String {
    let sni = match name {
        Some(n) => vec!["-servername", n],
        None => vec!["-noservername"],
    };
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(sni)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is needed for this test (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or_else(|| panic!("no subject: {text}")).to_string()
}

#[test]
fn a_replaced_certificate_is_served_to_new_connections_while_open_ones_keep_working() {
    let ca = TestCa::new();
    let (_consul, _echo, gw) = tls_gateway(&ca, &[]);
    let config = ca.client_config(&["http/1.1"]);
    let first = std::fs::read_to_string(ca.dir.path().join("gw.crt")).unwrap();

    let mut open = TlsClient::connect(config.clone(), gw.port, "a.test").unwrap();
    let first_der = open.peer_cert();
    assert_eq!(open.get("a.test", "/web/1").unwrap().0, 200);

    let second = ca.issue(&["a.test"], "second");
    second.write(ca.dir.path(), "gw");
    let swapped = std::time::Instant::now();
    wait_for(Duration::from_secs(5), "new connections to get the new certificate", || {
        let c = TlsClient::connect(config.clone(), gw.port, "a.test").ok()?;
        (c.peer_cert() == second.der).then_some(())
    });
    println!("new certificate served {:?} after the files were replaced", swapped.elapsed());
    gw.proc.wait_for_log("TLS certificates reloaded", 0, Duration::from_secs(5));

    // The connection opened before keeps its certificate and keeps working.
    assert_eq!(open.get("a.test", "/web/2").unwrap().0, 200, "the open connection survives the reload");
    assert_eq!(open.peer_cert(), first_der);
    assert_ne!(first_der, second.der);

    // A broken file at reload: the previous certificate stays, with a warning.
    replace(&ca.dir.path().join("gw.crt"), "not a certificate\n");
    gw.proc.wait_for_log("cannot reload the TLS certificates", 0, Duration::from_secs(5));
    let c = TlsClient::connect(config.clone(), gw.port, "a.test").unwrap();
    assert_eq!(c.peer_cert(), second.der, "the last good certificate stays");
    assert_eq!(open.get("a.test", "/web/3").unwrap().0, 200);
    drop(first);
}

#[test]
fn bad_certificate_files_stop_the_start_with_a_clear_error() {
    let ca = TestCa::new();
    let good = ca.issue(&["a.test"], "good");
    let (cert, key) = good.write(ca.dir.path(), "gw");
    let missing = ca.dir.path().join("missing.crt");
    let garbage = ca.dir.path().join("garbage.crt");
    std::fs::write(&garbage, "hello").unwrap();
    let other_key = ca.dir.path().join("other.key");
    std::fs::write(&other_key, ca.issue(&["b.test"], "other").key_pem).unwrap();
    for (c, k, says) in
        [(&missing, &key, "missing.crt"), (&garbage, &key, "garbage.crt"), (&cert, &other_key, "other.key")]
    {
        let args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--consul",
            "127.0.0.1:1",
            "--services",
            "web",
            "--tls-cert",
            &c.to_string_lossy(),
            "--tls-key",
            &k.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut gw = Proc::spawn("gateway", &args, &[]);
        let status = gw.wait_exit(Duration::from_secs(10)).expect("the gateway refuses to start");
        assert!(!status.success());
        let log = gw.log_text();
        assert!(log.contains("TLS certificates") && log.contains(says), "names {says}: {log}");
    }
}

/// Sends `request` to 127.0.0.1:`port` and reads the status line and headers.
fn raw(port: u16, request: &str) -> (u16, Vec<(String, String)>) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let Some((n, v)) = h.trim_end().split_once(':') else { break };
        headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
    (status, headers)
}

#[test]
fn redirect_http_sends_every_request_to_https_on_the_tls_port() {
    let ca = TestCa::new();
    let plain = free_port();
    let redirect = format!("127.0.0.1:{plain}");
    let (_consul, echo, gw) = tls_gateway(&ca, &["--redirect-http", &redirect]);
    let location = |headers: &[(String, String)]| headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());

    let (status, headers) = raw(plain, "GET /web/a/b?c=1&d HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 301);
    assert_eq!(location(&headers), Some(format!("https://a.test:{}/web/a/b?c=1&d", gw.port)));
    let req = "POST /web/form HTTP/1.1\r\nHost: a.test:80\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    let (status, headers) = raw(plain, req);
    assert_eq!(status, 308, "a POST keeps its method");
    assert_eq!(location(&headers), Some(format!("https://a.test:{}/web/form", gw.port)));
    let (status, _) = raw(plain, "GET /web/a HTTP/1.0\r\n\r\n");
    assert_eq!(status, 400, "no Host, no redirect");
    assert_eq!(echo.served(), 0, "nothing reached the instance over plain HTTP");

    // curl follows it to the TLS listener.
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    let resolve = format!("a.test:{}:127.0.0.1", gw.port);
    let resolve_plain = format!("a.test:{plain}:127.0.0.1");
    let followed = curl(&[
        "-L",
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve,
        "--resolve",
        &resolve_plain,
        &format!("http://a.test:{plain}/web/followed"),
    ]);
    assert_eq!(followed.status, 200, "{followed:?}");
    assert_eq!(followed.echo().header("x-forwarded-proto"), Some("https"));
}
