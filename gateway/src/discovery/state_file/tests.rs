use super::*;
use crate::discovery::direct::StaticRead;
use crate::discovery::tag::TagRules;

fn state() -> State {
    let mut a = Instance::new("web-1", "n1", "127.0.0.1", 8001);
    a.tags = vec!["urlprefix-/web".into()];
    a.meta.insert("version".into(), "1.2".into());
    let b = Instance { weight: 3, ..Instance::new("web-2", "n1", "127.0.0.1", 8002) };
    State {
        written_at: "2026-12-01T08:00:00.000Z".into(),
        source: "consul".into(),
        services: vec![StoredService {
            service: "web".into(),
            index: 42,
            tags: vec!["gateway".into(), "urlprefix-/web".into()],
            instances: vec![a, b],
        }],
    }
}

fn services(statics: &[&str]) -> Services {
    Services::new(
        statics.iter().map(|s| s.to_string()),
        TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() },
        Arc::new(StaticRead::default()),
    )
}

/// The files in `dir`, by name.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

#[test]
fn a_state_round_trips_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    assert!(load(&path).unwrap().is_none(), "a missing file is no state, not an error");
    store(&path, &state()).unwrap();
    assert_eq!(load(&path).unwrap(), Some(state()));
    let bytes = std::fs::read(&path).unwrap();
    let header = String::from_utf8_lossy(&bytes[..bytes.iter().position(|b| *b == b'\n').unwrap()]).to_string();
    assert!(header.starts_with("gateway-state-file 1 sha256:"), "{header}");
    assert_eq!(names(dir.path()), vec!["state"], "no temporary file left");
}

#[test]
fn a_corrupt_file_is_refused() {
    let bytes = encode(&state()).unwrap();
    // Every byte of the payload, flipped, is caught (the checksum, or the length for a newline
    // that moves the header's end).
    let header_end = bytes.iter().position(|b| *b == b'\n').unwrap();
    for i in (header_end + 1..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x20;
        assert!(matches!(decode(&bad), Err(StateFileError::Checksum)), "byte {i}: {:?}", decode(&bad));
    }
    // A byte of the checksum itself.
    let mut bad = bytes.clone();
    bad[header_end - 10] = if bad[header_end - 10] == b'0' { b'1' } else { b'0' };
    assert!(decode(&bad).is_err());
    // A payload that checks out but is not a state.
    let payload = br#"{"written_at":"x"}"#;
    let mut forged = format!("{MAGIC} {VERSION} sha256:{} {}\n", sha256_hex(payload), payload.len()).into_bytes();
    forged.extend_from_slice(payload);
    assert!(matches!(decode(&forged), Err(StateFileError::Json(_))), "{:?}", decode(&forged));
}

#[test]
fn a_foreign_file_is_refused() {
    for foreign in
        [&br#"{"hello":1}"#[..], b"", b"\n", b"\x00\x9f\x92\x96 random bytes\xff\n\x01", b"gateway-state-file\n{}"]
    {
        let e = decode(foreign).unwrap_err();
        assert!(matches!(e, StateFileError::Foreign(_)), "{:?}: {e:?}", String::from_utf8_lossy(foreign));
    }
    let mut other = encode(&state()).unwrap();
    other[MAGIC.len() + 1] = b'2';
    let e = decode(&other).unwrap_err();
    assert!(matches!(e, StateFileError::Version(ref v) if v == "2"), "{e:?}");
    assert_eq!(e.to_string(), "format version 2, this gateway reads version 1");
}

#[test]
fn a_truncated_file_is_refused() {
    let bytes = encode(&state()).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 40, 10, 0] {
        let e = decode(&bytes[..cut]).unwrap_err();
        assert!(matches!(e, StateFileError::Length { .. } | StateFileError::Foreign(_)), "cut at {cut}: {e:?}");
    }
    let mut padded = bytes.clone();
    padded.extend_from_slice(b"{}");
    assert!(matches!(decode(&padded), Err(StateFileError::Length { .. })));
}

#[test]
fn an_unreadable_file_is_an_error_not_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    // A directory at the path: it exists, and cannot be read as a file.
    assert!(matches!(load(dir.path()), Err(StateFileError::Read(_))));
}

/// A write that fails after the new bytes are on disk but before the rename (where a crash would
/// stop it) leaves the old file whole; a temporary file a crash left behind changes nothing.
#[test]
fn a_write_that_stops_midway_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    store(&path, &state()).unwrap();
    let before = std::fs::read(&path).unwrap();

    let mut next = state();
    next.services.clear();
    let mut seen_tmp = None;
    let e = write_atomic(&path, &encode(&next).unwrap(), |tmp| {
        seen_tmp = Some(tmp.to_path_buf());
        assert_eq!(tmp.parent(), Some(dir.path()), "the temporary file is beside the target (same filesystem)");
        Err(std::io::Error::other("crash"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("crash"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the old file is untouched");
    assert!(!seen_tmp.unwrap().exists(), "the temporary file is removed");

    // What a killed writer leaves: half a temporary file beside the state.
    std::fs::write(dir.path().join(".state.abc123.tmp"), &encode(&next).unwrap()[..20]).unwrap();
    assert_eq!(load(&path).unwrap(), Some(state()));
    store(&path, &next).unwrap();
    assert_eq!(load(&path).unwrap(), Some(next));
    // Removed at the next start; other files are not touched.
    std::fs::write(dir.path().join("other.tmp"), b"x").unwrap();
    assert_eq!(remove_leftovers(&path), 1);
    assert_eq!(names(dir.path()), vec!["other.tmp", "state"]);
}

#[test]
fn a_write_to_a_missing_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = store(&dir.path().join("nope/state"), &state()).unwrap_err();
    assert!(e.to_string().starts_with("cannot write it:"), "{e}");
}

#[tokio::test]
async fn the_stored_state_is_served_stale_until_the_watcher_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let mut s = state();
    // A tagged service the registry no longer has: it must not survive the watcher's list.
    s.services.push(StoredService {
        service: "old".into(),
        index: 3,
        tags: vec!["gateway".into()],
        instances: vec![Instance::new("old-1", "n1", "127.0.0.1", 9001)],
    });
    store(&path, &s).unwrap();

    let services = services(&["web"]);
    restore(&path, &services).await;
    let web = services.slots().into_iter().find(|s| s.service == "web").unwrap().set().unwrap();
    assert_eq!((web.origin, web.endpoints.len(), web.index), (Origin::StateFile, 2, 42));
    assert_eq!(services.slots().len(), 2);
    let routes: Vec<String> = services.table().routes().iter().map(|r| r.shown()).collect();
    assert!(routes.contains(&"/web".to_string()) && routes.contains(&"/old".to_string()), "{routes:?}");
    let reason = ready_reason(&services).unwrap();
    assert!(
        reason.starts_with("serving 2 services from the state file ") && reason.contains("2026-12-01T08:00:00.000Z"),
        "{reason}"
    );
    assert!(!is_confirmed(&services), "state from the file is never written back as confirmed");

    // The watcher connects: its full state (one instance fewer, the same tags) replaces the file's.
    services.freshness().set_watcher_connected(true);
    services.begin_batch();
    let one = vec![s.services[0].instances[0].clone()];
    services.apply_snapshot("web", 50, one, s.services[0].tags.clone());
    services.apply_list(&["web".to_string()]);
    services.end_batch();
    let web = services.slots()[0].set().unwrap();
    assert_eq!((web.origin, web.endpoints.len(), services.slots().len()), (Origin::Watcher, 1, 1));
    assert_eq!(ready_reason(&services), None);
    assert!(is_confirmed(&services));
}

#[tokio::test]
async fn an_identical_snapshot_still_confirms_the_stored_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    store(&path, &state()).unwrap();
    let services = services(&["web"]);
    restore(&path, &services).await;
    let s = state();
    services.apply_snapshot("web", 42, s.services[0].instances.clone(), s.services[0].tags.clone());
    assert_eq!(services.slots()[0].set().unwrap().origin, Origin::Watcher);
}

#[tokio::test]
async fn a_file_of_another_registry_or_a_bad_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let mut s = state();
    s.source = "etcd".into();
    store(&path, &s).unwrap();
    let services = services(&["web"]);
    restore(&path, &services).await;
    assert!(services.slots()[0].set().is_none());
    std::fs::write(&path, br#"{"hello":1}"#).unwrap();
    restore(&path, &services).await;
    assert!(services.slots()[0].set().is_none());
    assert_eq!(ready_reason(&services), None);
}

#[tokio::test]
async fn only_confirmed_changes_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let good = encode(&state()).unwrap();
    std::fs::write(&path, &good).unwrap();
    let services = Arc::new(services(&["web"]));
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(keep_written(path.clone(), services.clone(), stop_rx));

    // Nothing known yet (no watcher): the good file is not replaced by an empty state.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(std::fs::read(&path).unwrap(), good);

    // Fresh state from the watcher: written within a period.
    services.freshness().set_watcher_connected(true);
    services.begin_batch();
    services.apply_snapshot("web", 7, vec![Instance::new("w", "n", "127.0.0.1", 1234)], vec![]);
    services.apply_list(&["web".to_string()]);
    services.end_batch();
    let mut written = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Some(s)) = load(&path) {
            if s.services.first().is_some_and(|s| s.index == 7) {
                written = Some(s);
                break;
            }
        }
    }
    let written = written.expect("the confirmed state is written");
    assert_eq!(written.services[0].instances[0].port, 1234);

    // A change just before the stop is written at the stop.
    services.apply_snapshot("web", 8, vec![Instance::new("w", "n", "127.0.0.1", 1235)], vec![]);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), writer).await.unwrap().unwrap();
    assert_eq!(load(&path).unwrap().unwrap().services[0].instances[0].port, 1235);
}
