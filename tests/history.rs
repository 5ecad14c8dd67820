//! Message ids, history and `since`, the state file, and paced replays, against the real
//! `emberws` binary with tungstenite clients.

mod util;

use std::path::Path;

use serde_json::{json, Value};
use util::binary::ServerProcess;
use util::relay::{is_message_id, Files, Peer};
use util::DEADLINE;

/// `emberws --listen 127.0.0.1:0 EXTRA...`.
fn relay(extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    ServerProcess::spawn(&args)
}

/// A relay with `--state PATH` (and `extra`).
fn relay_with_state(path: &Path, extra: &[&str]) -> ServerProcess {
    let path = path.to_str().expect("a UTF-8 path");
    let mut args = vec!["--state", path];
    args.extend_from_slice(extra);
    relay(&args)
}

/// SIGTERM, then waits for a clean exit.
fn stop(server: &mut ServerProcess) {
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", server.stderr_tail(20)));
    assert!(status.success(), "{status}:\n{}", server.stderr_tail(20));
}

/// The id of a message, checked.
#[track_caller]
fn id_of(m: &Value) -> String {
    let id = m["id"].as_str().unwrap_or_default();
    assert!(is_message_id(id), "not a message with an id: {m}");
    id.to_owned()
}

fn epoch_of(id: &str) -> &str {
    id.split('-').next().unwrap_or_default()
}

fn seq_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Subscribes with `since` and expects the ack with `gap`.
#[track_caller]
fn subscribe_since(peer: &mut Peer, topic: &str, since: &str, gap: bool) {
    let got = peer.request(json!({"type": "subscribe", "topic": topic, "since": since, "id": "s"}));
    assert_eq!(
        got,
        json!({"type": "ack", "id": "s", "gap": gap}),
        "{}: subscribe {topic} since {since}",
        peer.label
    );
}

/// The next `n` messages, in the order they came.
#[track_caller]
fn next(peer: &mut Peer, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let m = peer.recv();
            assert_eq!(m["type"], "message", "{}: {m}", peer.label);
            m
        })
        .collect()
}

/// Publishes `data` on `topic` and returns the id the subscriber `watch` sees for it.
#[track_caller]
fn publish_seen(p: &mut Peer, watch: &mut Peer, topic: &str, data: Value) -> String {
    p.publish(topic, data.clone());
    let m = watch.recv();
    assert_eq!((&m["topic"], &m["data"]), (&json!(topic), &data), "{m}");
    id_of(&m)
}

#[test]
fn since_after_a_disconnect_replays_exactly_the_missed_messages_in_order_then_live() {
    let server = relay(&[]);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("t/#");
    for i in 0..100 {
        p.publish(&format!("t/{}", i % 3), json!(i));
    }
    let got = next(&mut sub, 100);
    let ids: Vec<String> = got.iter().map(id_of).collect();
    let epoch = epoch_of(&ids[0]).to_owned();
    assert!(ids.iter().all(|i| epoch_of(i) == epoch));
    let seqs: Vec<u64> = ids.iter().map(|i| seq_of(i)).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ids grow: {seqs:?}");
    let last = ids[99].clone();
    drop(sub);
    for i in 100..150 {
        p.publish(&format!("t/{}", i % 3), json!(i));
    }
    p.publish("elsewhere", json!("not asked for"));
    let mut back = Peer::anonymous(server.addr(), "back");
    subscribe_since(&mut back, "t/#", &last, false);
    let got = next(&mut back, 50);
    let data: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
    let want: Vec<Value> = (100..150).map(|i| json!(i)).collect();
    assert_eq!(data, want, "exactly the 50 missed, in order");
    let seqs: Vec<u64> = got.iter().map(|m| seq_of(&id_of(m))).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    back.nothing_pending();
    // Then live.
    p.publish("t/0", json!("live"));
    let m = back.recv();
    assert_eq!(m["data"], "live");
    assert!(seq_of(&id_of(&m)) > seqs[49]);
    back.nothing_pending();
}

#[test]
fn gap_when_history_was_exceeded() {
    let server = relay(&["--history-messages", "10"]);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("s");
    let since = publish_seen(&mut p, &mut sub, "s", json!(0));
    drop(sub);
    for i in 1..=30 {
        p.publish("s", json!(i));
    }
    let mut back = Peer::anonymous(server.addr(), "back");
    subscribe_since(&mut back, "s", &since, true);
    let data: Vec<Value> = next(&mut back, 10)
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    let want: Vec<Value> = (21..=30).map(|i| json!(i)).collect();
    assert_eq!(data, want, "what history holds is replayed");
    back.nothing_pending();
    // A since that does not read is an error; the connection stays.
    back.send(&json!({"type": "subscribe", "topic": "s", "since": "yesterday", "id": 9}));
    back.expect_error(json!(9), "invalid since");
    back.nothing_pending();
}

#[test]
fn the_epoch_changes_after_a_restart_without_state() {
    // Without the relay's own $SYS figures, which take ids too: the count is exact.
    let quiet = ["--sys-interval", "0"];
    let mut server = relay(&quiet);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("e");
    let before = publish_seen(&mut p, &mut sub, "e", json!(1));
    p.retain("kept", json!("only until the restart"));
    drop((p, sub));
    stop(&mut server);
    let server = relay(&quiet);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("e");
    let after = publish_seen(&mut p, &mut sub, "e", json!(2));
    assert_ne!(epoch_of(&before), epoch_of(&after));
    assert_eq!(seq_of(&after), 1, "a new epoch counts from 1");
    // The old id is of another epoch: a gap, and the retained values (none survived).
    let mut back = Peer::anonymous(server.addr(), "back");
    subscribe_since(&mut back, "#", &before, true);
    back.nothing_pending();
}

#[test]
fn with_state_the_epoch_history_and_retained_values_survive_a_sigterm() {
    let files = Files::new("history-state");
    let path = files.path("state.json");
    // Without the relay's own $SYS figures, which take ids too: the count is exact.
    let quiet = ["--sys-interval", "0"];
    let mut server = relay_with_state(&path, &quiet);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("h/#");
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(publish_seen(
            &mut p,
            &mut sub,
            &format!("h/{}", i % 2),
            json!(i),
        ));
    }
    p.retain("cfg/mode", json!({"mode": "eco"}));
    let since = ids[9].clone();
    drop((p, sub));
    stop(&mut server);
    let text = std::fs::read_to_string(&path).expect("the state file was written");
    assert!(text.contains("\"clean\":true"), "{text}");
    assert!(!text.contains("token"), "nothing but published data");

    let server = relay_with_state(&path, &quiet);
    let mut back = Peer::anonymous(server.addr(), "back");
    subscribe_since(&mut back, "h/#", &since, false);
    let got = next(&mut back, 10);
    let data: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
    let want: Vec<Value> = (10..20).map(|i| json!(i)).collect();
    assert_eq!(data, want, "exactly the ones after since, in order");
    let replayed: Vec<String> = got.iter().map(id_of).collect();
    assert_eq!(replayed, ids[10..], "with the ids they had");
    back.nothing_pending();
    // Ids go on in the same epoch.
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let next_id = publish_seen(&mut p, &mut back, "h/0", json!("after"));
    assert_eq!(epoch_of(&next_id), epoch_of(&since));
    assert_eq!(
        seq_of(&next_id),
        seq_of(&ids[19]) + 2,
        "after the retained publish"
    );
    // The retained value, with its id.
    let mut late = Peer::anonymous(server.addr(), "late");
    late.subscribe("cfg/#");
    let m = late.recv();
    assert_eq!(m["data"], json!({"mode": "eco"}));
    assert_eq!(seq_of(&id_of(&m)), seq_of(&ids[19]) + 1);
    late.nothing_pending();
}

#[test]
fn after_a_kill_the_retained_values_survive_under_a_new_epoch() {
    let files = Files::new("history-kill");
    let path = files.path("state.json");
    let mut server = relay_with_state(&path, &[]);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("k");
    let before = publish_seen(&mut p, &mut sub, "k", json!("history"));
    p.retain("r", json!("retained"));
    // Written shortly after the change, while running.
    util::eventually("the state file holds the retained value", || {
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains("\"topic\":\"r\",\"data\":\"retained\"")
            .then_some(())
    });
    server.kill();

    let server = relay_with_state(&path, &[]);
    let mut back = Peer::anonymous(server.addr(), "back");
    // The old epoch's ids may have been given again: a gap, and the retained values.
    let got = back.request(json!({"type": "subscribe", "topic": "#", "since": before}));
    assert_eq!(got, json!({"type": "ack", "gap": true}));
    let m = back.recv();
    assert_eq!((&m["topic"], &m["data"]), (&json!("r"), &json!("retained")));
    assert_ne!(epoch_of(&id_of(&m)), epoch_of(&before));
    back.nothing_pending();
}

#[test]
fn a_corrupt_state_file_is_ignored_with_one_log_line() {
    let files = Files::new("history-corrupt");
    let path = files.path("state.json");
    std::fs::write(
        &path,
        "{\"version\":1,\"clean\":true,\"epoch\":\"0011aabb\",\"se",
    )
    .unwrap();
    let server = relay_with_state(&path, &[]);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("#");
    sub.nothing_pending();
    let id = publish_seen(&mut p, &mut sub, "x", json!(1));
    assert_ne!(epoch_of(&id), "0011aabb");
    let lines = server.stderr_lines_with("state.json");
    assert_eq!(lines.len(), 1, "one line about the file: {lines:?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("ignored, starting empty"),
        "{}",
        lines[0]
    );
}

#[test]
fn retained_values_of_about_870_kib_reach_a_prompt_subscriber_without_1008() {
    // The issue's case: 870 retained values of 1 KiB matching one wildcard, against the
    // default max_backpressure of 64 KiB; the kernel's send buffer capped so that it cannot
    // absorb what the relay would have queued at once.
    let server = relay(&["--socket-send-buffer", "16384"]);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    // 980 B of data: with the frame around it and each value's 128 B of entry overhead, the
    // 870 values fit within the default max_retained_bytes (1 MiB).
    let value = "v".repeat(980);
    for i in 0..870 {
        p.retain(&format!("sensors/{i:03}"), json!(value));
    }
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("sensors/#");
    let got = next(&mut sub, 870);
    let topics: Vec<String> = got
        .iter()
        .map(|m| m["topic"].as_str().unwrap_or_default().to_owned())
        .collect();
    let want: Vec<String> = (0..870).map(|i| format!("sensors/{i:03}")).collect();
    assert_eq!(topics, want, "every value once, in topic order");
    assert!(got.iter().all(|m| m["data"] == json!(value)));
    sub.nothing_pending();
    let metrics = util::relay::http_get(server.addr(), None, "/metrics", &[]).text();
    assert_eq!(
        util::relay::metric(&metrics, "emberws_slow_consumer_closes_total"),
        0,
        "{metrics}"
    );
}

#[test]
fn messages_from_another_relay_get_local_ids_and_enter_history() {
    let redis = util::redis::Redis::start();
    let a = relay(&["--redis", &redis.url()]);
    let b = relay(&["--redis", &redis.url()]);
    for server in [&a, &b] {
        util::eventually("both links to Redis up", || {
            let text = util::relay::http_get(server.addr(), None, "/metrics", &[]).text();
            (util::relay::metric(&text, "emberws_redis_link_up") == 1).then_some(())
        });
    }
    let mut on_a = Peer::anonymous(a.addr(), "subscriber on A");
    let mut on_b = Peer::anonymous(b.addr(), "subscriber on B");
    on_a.subscribe("x/#");
    on_b.subscribe("x/#");
    let mut p = Peer::anonymous(a.addr(), "publisher on A");
    p.publish("x/1", json!("first"));
    let (from_a, from_b) = (id_of(&on_a.recv()), id_of(&on_b.recv()));
    assert_ne!(epoch_of(&from_a), epoch_of(&from_b), "each relay's own ids");
    drop(on_b);
    for i in 0..5 {
        p.publish("x/1", json!(i));
    }
    for _ in 0..5 {
        on_a.recv();
    }
    // B kept what came from A in its own history.
    let mut back = Peer::anonymous(b.addr(), "back on B");
    util::eventually("B has the five", || {
        let got = back.request(json!({"type": "subscribe", "topic": "x/#", "since": from_b}));
        assert_eq!(got, json!({"type": "ack", "gap": false}));
        let mut data = Vec::new();
        back.send(&json!({"type": "ping", "id": "end"}));
        loop {
            let m = back.recv();
            if m["type"] == "pong" {
                break;
            }
            data.push(m["data"].clone());
        }
        back.send(&json!({"type": "unsubscribe", "topic": "x/#", "id": "u"}));
        assert_eq!(back.recv()["type"], "ack");
        let want: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        (data == want).then_some(())
    });
}

/// Makes a FIFO where the relay writes its state file's temporary file (`.NAME.tmp` beside
/// it): opening it for writing waits for a reader, as a write to a disk that stopped
/// answering waits for the disk.
fn stuck_disk(path: &Path) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let c = std::ffi::CString::new(tmp.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo reads it and keeps nothing.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", tmp.display());
    tmp
}

/// Waits until one of the server's threads waits to open a FIFO, and returns that thread's
/// id.
fn thread_waiting_on_the_disk(server: &ServerProcess) -> u32 {
    let pid = server.pid();
    util::eventually("a thread of the relay waits to open the state file", || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
            .find_map(|task| {
                let wchan = std::fs::read_to_string(task.path().join("wchan")).ok()?;
                (wchan.trim() == "wait_for_partner")
                    .then(|| task.file_name().to_string_lossy().parse().ok())
                    .flatten()
            })
    })
}

#[test]
fn a_state_write_that_never_returns_leaves_the_relay_serving_and_the_changes_wait_for_it() {
    let files = Files::new("history-stuck-disk");
    let path = files.path("state.json");
    let quiet = ["--sys-interval", "0"];
    let mut server = relay_with_state(&path, &quiet);
    assert!(
        path.is_file(),
        "the file is marked as in use before anyone is served"
    );
    let tmp = stuck_disk(&path);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    p.retain("r/1", json!("first"));
    let waiting = thread_waiting_on_the_disk(&server);
    assert_ne!(
        waiting,
        server.pid(),
        "the loop thread is not the one waiting"
    );

    // The write does not return; the relay serves on: messages, a retained publish, a new
    // connection and its replay.
    let mut sub = Peer::anonymous(server.addr(), "subscriber");
    sub.subscribe("live/#");
    for i in 0..5 {
        publish_seen(&mut p, &mut sub, "live/x", json!(i));
    }
    p.retain("r/2", json!("second"));
    let mut late = Peer::anonymous(server.addr(), "late");
    late.subscribe("r/#");
    let got: Vec<Value> = (0..2).map(|_| late.recv()["data"].clone()).collect();
    assert_eq!(got, [json!("first"), json!("second")]);

    // A write this long is reported, once.
    server.wait_for_stderr("a write has taken more than 10 s", 1, util::DEADLINE);

    // The disk answers, here with an error (a FIFO cannot be synced): the write on its way
    // is reported once, and the changes made meanwhile are written after it.
    let held = std::fs::read_to_string(&tmp).expect("the write on its way");
    assert!(
        held.contains("\"first\"") && !held.contains("\"second\""),
        "{held}"
    );
    let text = util::eventually("the changes made meanwhile are written", || {
        let text = std::fs::read_to_string(&path).ok()?;
        text.contains("\"second\"").then_some(text)
    });
    assert!(text.contains("\"clean\":false"), "{text}");
    server.wait_for_stderr("state.json: written again", 1, util::DEADLINE);
    stop(&mut server);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("\"clean\":true") && text.contains("\"second\""),
        "{text}"
    );
    let warnings = server.stderr_lines_with("WARN");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("the disk may be failing"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("cannot write the state file"),
        "{warnings:?}"
    );
}

#[test]
fn at_shutdown_a_state_write_that_never_returns_is_given_up_and_the_file_stays_not_clean() {
    let files = Files::new("history-stuck-stop");
    let path = files.path("state.json");
    let mut server = relay_with_state(&path, &["--sys-interval", "0"]);
    let _tmp = stuck_disk(&path);
    let mut p = Peer::anonymous(server.addr(), "publisher");
    p.retain("r", json!("kept"));
    thread_waiting_on_the_disk(&server);
    drop(p);
    // The shutdown waits for the disk for a bounded time (10 s), then exits.
    stop(&mut server);
    let lines = server.stderr_lines_with("WARN");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("state.json") && lines[0].contains("not written at this stop"),
        "{}",
        lines[0]
    );
    // The file is the one written at start: not clean, so the next start takes a new epoch.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"clean\":false"), "{text}");
}
