//! The status page (`GET /` on the admin listener) in a real browser: Debian's chromium, headless,
//! driven over the DevTools protocol (`e2e::cdp`), against a real Consul agent and the real
//! gateway. The page must follow instances as they go, live (server-sent events), within a second
//! and without reloading.
//!
//! Needs chromium: `bash scripts/install-chromium.sh` (`scripts/test.sh` runs it). Without it the
//! test fails and says so.

// Test helpers outside #[test] functions may unwrap: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::cdp::{Browser, Page};
use e2e::{get_json, http, wait_for, Consul, Echo, Gateway};
use serde_json::json;

/// How soon a deregistration must show on the page.
const LIVE_WITHIN: Duration = Duration::from_secs(1);

/// Registers an instance of `name` on 127.0.0.1:`port` with `tags`, without a check (passing).
fn register(consul: &Consul, name: &str, id: &str, port: u16, tags: &[&str]) {
    consul.register_json(json!({"ID": id, "Name": name, "Address": "127.0.0.1", "Port": port, "Tags": tags}));
}

/// Waits until `/routes` shows `route` with `n` instances.
fn wait_route(gw: &Gateway, route: &str, n: u64) {
    let client = http();
    wait_for(Duration::from_secs(15), &format!("{route} with {n} instances on /routes"), || {
        let (_, v) = get_json(&client, &gw.admin("/routes")).ok()?;
        v["routes"].as_array()?.iter().any(|r| r["route"] == route && r["instances"] == n).then_some(())
    });
}

/// A headless chromium on the gateway's status page, loaded.
fn open_page(gw: &Gateway) -> (Browser, Page) {
    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let mut page = browser.page().unwrap_or_else(|e| panic!("{e}\nchromium's stderr:\n{}", browser.stderr()));
    page.navigate(&gw.admin("/")).unwrap();
    (browser, page)
}

/// The JavaScript expression: the addresses of `service`'s instance rows on the page.
fn addresses_js(service: &str) -> String {
    format!(
        "Array.from(document.querySelectorAll('table[data-service=\"{service}\"] tbody tr[data-instance] th'))\
         .map(th => th.textContent)"
    )
}

/// The elements whose own text has a contrast with its background below WCAG 2.x AA (4.5:1; 3:1
/// for large text), as `"text: ratio"`: the colours as computed, the background the first opaque
/// one up the tree.
const CONTRAST_JS: &str = r#"(() => {
  const rgb = s => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = e => {
    for (; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const e of document.body.querySelectorAll('*')) {
    const own = Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || e.closest('script')) continue;
    const style = getComputedStyle(e);
    const a = lum(rgb(style.color)), b = lum(background(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) low.push(e.textContent.trim().slice(0, 40) + ': ' + ratio.toFixed(2));
  }
  return low;
})()"#;

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

#[test]
fn the_status_page_follows_instances_live_without_reloading() {
    // First, so a missing chromium fails at once, naming the install script.
    let browser_check = e2e::cdp::chromium_bin();
    assert!(browser_check.is_ok(), "{}", browser_check.unwrap_err());

    let consul = Consul::start();
    let echoes = [Echo::start(), Echo::start(), Echo::start()];
    for (i, e) in echoes.iter().enumerate() {
        register(&consul, "web", &format!("web-{i}"), e.port, &["gateway"]);
    }
    let gw = Gateway::start(&consul, "", &[]);
    wait_route(&gw, "/web", 3);

    let (_browser, mut page) = open_page(&gw);
    // The page loads, shows the three instances, the route, and Consul's state.
    let all: Vec<String> = echoes.iter().map(|e| format!("127.0.0.1:{}", e.port)).collect();
    let shown = page
        .wait_eval(Duration::from_secs(5), &addresses_js("web"), |v| v.as_array().is_some_and(|a| a.len() == 3))
        .unwrap();
    let mut shown: Vec<String> = serde_json::from_value(shown).unwrap();
    shown.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(shown, want, "the page shows the three instances");
    let route = page
        .eval("Array.from(document.querySelectorAll('#routes tbody tr')).map(tr => Array.from(tr.cells).map(c => c.textContent))")
        .unwrap();
    assert_eq!(route, json!([["/web", "web", "3", "–"]]), "the route table");
    let consul_state = page.eval("document.getElementById('consul-watcher').textContent").unwrap();
    assert_eq!(consul_state, "✓ connected");
    let lang = page.eval("document.documentElement.lang").unwrap();
    assert_eq!(lang, "en");
    // Accessible: one h1, real headings, header cells with a scope, and text contrast (WCAG AA).
    let headings = page.eval("[document.querySelectorAll('h1').length, Array.from(document.querySelectorAll('h2')).map(h => h.textContent)]").unwrap();
    assert_eq!(headings, json!([1, ["Consul", "Routes", "Services", "Recent changes"]]));
    let unscoped = page.eval("document.querySelectorAll('th:not([scope])').length").unwrap();
    assert_eq!(unscoped, 0, "every th has a scope");
    let low = page.eval(CONTRAST_JS).unwrap();
    assert_eq!(low, json!([]), "text below WCAG AA contrast");
    let changes = page.eval("document.querySelector('#changes tbody').textContent").unwrap();
    assert!(changes.as_str().unwrap().contains("route added: /web -> web"), "the change log: {changes}");

    // The states every second redraw only what changed: the same rows stay.
    page.eval("window.rowBefore = document.querySelector('table[data-service=\"web\"] tbody tr'); window.statesAt = window.statusPage.states; true").unwrap();
    page.wait_eval(Duration::from_secs(3), "window.statusPage.states >= window.statesAt + 2", |v| v == true).unwrap();
    let kept =
        page.eval("window.rowBefore === document.querySelector('table[data-service=\"web\"] tbody tr')").unwrap();
    assert_eq!(kept, true, "an unchanged instance table was redrawn");

    // Remember this document, and have the page tell when it shows two instances.
    page.eval(&format!(
        "window.sameDocument = 'yes'; window.statesBefore = window.statusPage.states;
         window.twoShownAt = new Promise(resolve => {{
           const two = () => {addresses}.length === 2;
           const seen = new MutationObserver(() => {{ if (two()) {{ seen.disconnect(); resolve(Date.now()); }} }});
           seen.observe(document.body, {{subtree: true, childList: true, characterData: true}});
           setTimeout(() => resolve(-1), 5000);
         }}); true",
        addresses = addresses_js("web")
    ))
    .unwrap();

    let (t, t_ms) = (Instant::now(), now_ms());
    consul.deregister("web-1");
    let shown_at = page.eval("window.twoShownAt").unwrap().as_f64().unwrap();
    let wall = t.elapsed();
    assert!(shown_at > 0.0, "the page did not show two instances within 5 s of the deregistration");
    let propagation = Duration::from_secs_f64((shown_at - t_ms).max(0.0) / 1000.0);
    println!("deregistration -> page shows 2 instances: {propagation:?} (test saw it after {wall:?})");
    assert!(propagation < LIVE_WITHIN, "the page took {propagation:?} to show the deregistration");

    let after: Vec<String> = serde_json::from_value(page.eval(&addresses_js("web")).unwrap()).unwrap();
    assert!(!after.contains(&all[1]), "{} still shown: {after:?}", all[1]);
    assert_eq!(after.len(), 2);
    // Without a reload: the same document, which applied more states.
    let same = page.eval("[window.sameDocument, window.statusPage.states > window.statesBefore]").unwrap();
    assert_eq!(same, json!(["yes", true]), "the page was reloaded");
    let navigations = page.eval("performance.getEntriesByType('navigation').length").unwrap();
    assert_eq!(navigations, 1);
    // The change log shows the change, and the route its new count.
    page.wait_eval(Duration::from_secs(2), "document.querySelector('#changes tbody').textContent", |v| {
        v.as_str().is_some_and(|s| s.contains(&format!("web: 3 -> 2 instances, removed {}", all[1])))
    })
    .unwrap();
    page.wait_eval(
        Duration::from_secs(2),
        "document.querySelector('#routes tbody tr td:nth-child(3)').textContent",
        |v| v == "2",
    )
    .unwrap();
}

/// Refreshes `docs/status-page.png`, the README's screenshot: a few services, some traffic.
/// Services whose names differ only in characters an HTML id cannot hold (`a.b`, `a_b`) each get a
/// heading of their own that labels their instance table, and what Consul says (an instance ID
/// with markup in it) is shown as text, never interpreted.
#[test]
fn names_alike_get_their_own_heading_and_markup_stays_text() {
    let browser_check = e2e::cdp::chromium_bin();
    assert!(browser_check.is_ok(), "{}", browser_check.unwrap_err());

    let consul = Consul::start();
    let echo = Echo::start();
    register(&consul, "a.b", "dot", echo.port, &["gateway"]);
    register(&consul, "a_b", "<b id=\"injected\">x</b>", echo.port, &["gateway"]);
    let gw = Gateway::start(&consul, "", &[]);
    wait_route(&gw, "/a.b", 1);
    wait_route(&gw, "/a_b", 1);

    let (_browser, mut page) = open_page(&gw);
    page.wait_eval(Duration::from_secs(5), "document.querySelectorAll('#instances table').length", |v| v == 2).unwrap();
    let labels = page
        .eval(
            "Array.from(document.querySelectorAll('#instances table')).map(t => \
             [t.dataset.service, document.getElementById(t.getAttribute('aria-labelledby')).textContent])",
        )
        .unwrap();
    assert_eq!(labels, json!([["a.b", "a.b (1 instance)"], ["a_b", "a_b (1 instance)"]]), "each table's heading");
    let ids = page.eval("Array.from(document.querySelectorAll('[id]')).map(e => e.id)").unwrap();
    let ids: Vec<String> = serde_json::from_value(ids).unwrap();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids are unique: {ids:?}");
    let shown = page
        .eval("Array.from(document.querySelectorAll('tr[data-instance] td.mono')).map(td => td.textContent)")
        .unwrap();
    assert_eq!(shown, json!(["dot", "<b id=\"injected\">x</b>"]), "instance IDs as text");
    assert_eq!(page.eval("document.getElementById('injected') === null").unwrap(), true, "markup interpreted");
}

/// The page reconnects after any failure, not only after those the browser retries by itself: a
/// non-200 answer to `/events` (a reverse proxy's 502 or 503 while the gateway restarts) closes an
/// `EventSource` for good, and the page must open a new one.
#[test]
fn the_page_reconnects_after_an_error_answer() {
    let browser_check = e2e::cdp::chromium_bin();
    assert!(browser_check.is_ok(), "{}", browser_check.unwrap_err());

    let consul = Consul::start();
    let echo = Echo::start();
    register(&consul, "web", "web-0", echo.port, &["gateway"]);
    let gw = Gateway::start(&consul, "", &[]);
    wait_route(&gw, "/web", 1);
    let (port, admin_port) = (gw.port, gw.admin_port);
    let (_browser, mut page) = open_page(&gw);
    let live = "document.getElementById('live').textContent";
    page.wait_eval(Duration::from_secs(5), live, |v| v == "● Live").unwrap();

    // The gateway goes; what answers on its admin port meanwhile says 503 to everything.
    drop(gw);
    let stub = wait_for(Duration::from_secs(5), "the admin port free", || {
        std::net::TcpListener::bind(("127.0.0.1", admin_port)).ok()
    });
    stub.set_nonblocking(true).unwrap();
    let mut answered = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        match stub.accept() {
            Ok((mut conn, _)) => {
                use std::io::{Read, Write};
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut head = [0u8; 2048];
                let n = conn.read(&mut head).unwrap_or(0);
                if String::from_utf8_lossy(&head[..n]).starts_with("GET /events") {
                    answered += 1;
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    drop(stub);
    assert!(answered >= 1, "the page asked for /events while the gateway was away");
    let shown = page.eval(live).unwrap();
    assert!(shown.as_str().unwrap().contains("Disconnected"), "{shown}");

    // A gateway on the same admin port again: the page follows it without a reload.
    let args: Vec<String> = ["--consul", consul.addr().as_str(), "--listen"]
        .into_iter()
        .map(String::from)
        .chain([format!("127.0.0.1:{port}"), "--admin-listen".into(), format!("127.0.0.1:{admin_port}")])
        .collect();
    let _gw = Gateway { proc: e2e::procs::Proc::spawn("gateway", &args, &[]), port, admin_port };
    page.eval("window.statesAt = window.statusPage.states; true").unwrap();
    page.wait_eval(
        Duration::from_secs(15),
        &format!("{live} === '● Live' && window.statusPage.states > window.statesAt"),
        |v| v == true,
    )
    .unwrap_or_else(|e| panic!("the page did not reconnect: {e}"));
}

#[test]
#[ignore = "writes docs/status-page.png: run to refresh the README's screenshot"]
fn screenshot_for_the_readme() {
    let consul = Consul::start();
    let web = [Echo::start(), Echo::start(), Echo::start()];
    let api = [Echo::start(), Echo::start()];
    let hello = Echo::start();
    for (i, e) in web.iter().enumerate() {
        register(&consul, "web", &format!("web-{i}"), e.port, &["gateway"]);
    }
    for (i, e) in api.iter().enumerate() {
        consul.register_json(json!({"ID": format!("api-{i}"), "Name": "api", "Address": "127.0.0.1", "Port": e.port,
            "Tags": ["urlprefix-/api/v1 strip=/api"], "Weights": {"Passing": 1 + 2 * i, "Warning": 1}}));
    }
    register(&consul, "hello", "hello-0", hello.port, &["urlprefix-hello.localhost/"]);
    // Registered, passing, but nothing listens: every request to it is a 502, for the error rate.
    register(&consul, "billing", "billing-0", e2e::free_port(), &["gateway"]);
    let gw = Gateway::start(&consul, "", &[]);
    wait_route(&gw, "/web", 3);
    wait_route(&gw, "/api/v1", 2);
    wait_route(&gw, "hello.localhost/", 1);
    wait_route(&gw, "/billing", 1);
    // A change for the log: an instance comes and goes.
    let extra = Echo::start();
    register(&consul, "web", "web-3", extra.port, &["gateway"]);
    wait_route(&gw, "/web", 4);
    consul.deregister("web-3");
    wait_route(&gw, "/web", 3);

    // Some traffic, for the rates.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, urls) = (stop.clone(), [gw.url("/web/x"), gw.url("/api/v1/y"), gw.url("/web/z")]);
        let billing = gw.url("/billing/invoices");
        std::thread::spawn(move || {
            let client = http();
            for i in 0usize.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                for url in &urls {
                    let _ = client.get(url).send();
                }
                if i % 4 == 0 {
                    let _ = client.get(&billing).send();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (_browser, mut page) = open_page(&gw);
    page.set_viewport(1280, 900, 1.0).unwrap();
    page.navigate(&gw.admin("/")).unwrap();
    // A few seconds of states, so the rates have settled.
    page.wait_eval(Duration::from_secs(8), "window.statusPage.states", |v| v.as_u64().is_some_and(|n| n >= 4)).unwrap();
    let png = page.screenshot(true).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    println!("wrote {} ({} bytes)", path.display(), png.len());
}

/// The contrast check above finds what it should (so its empty answer means something).
#[test]
fn the_contrast_check_finds_low_contrast_text() {
    let browser = Browser::launch().unwrap_or_else(|e| panic!("{e}"));
    let mut page = browser.page().unwrap();
    let html = "<!doctype html><p style='color:#999'>grey on white</p><p style='background:#000'>black on black</p>\
                <p style='color:#555'>fine</p><h1 style='color:#888;font-size:30px'>large</h1>";
    page.navigate(&format!("data:text/html,{}", html.replace(' ', "%20").replace('#', "%23"))).unwrap();
    let low = page.eval(CONTRAST_JS).unwrap();
    assert_eq!(low, json!(["grey on white: 2.85", "black on black: 1.00"]));
}
