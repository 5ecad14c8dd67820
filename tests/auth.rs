//! Who may do what on the relay, end to end against the real `emberws` binary: tokens and
//! the clients file, lockouts, topic rules, anonymous access, rate limits, the JSON depth
//! limit, SIGHUP reloads of the clients file, and the status routes with their counters.
//!
//! Real WebSocket clients (tungstenite) where the relay's answers matter, hand-written
//! requests where the HTTP answer does (status, `WWW-Authenticate`, `Retry-After`). Nothing
//! waits a fixed time: rate limits refill at near-zero rates and are counted, lockouts and
//! reloads are polled with a deadline, and a check that depends on the machine being quick
//! (a 1 s lockout still running) is made only when the client measured that it was.

mod util;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;
use util::binary::{run_to_exit, ServerProcess};
use util::relay::{
    bearer, clients_toml, http_get, metric, raw_upgrade, ws_refused, ws_status, Entry, Files, Peer,
};
use util::DEADLINE;

/// How long a reload, or the end of a lockout, may take to show.
const POLL: Duration = Duration::from_secs(15);

const NOT_ALLOWED: &str = "not allowed";
const TOO_MANY_PUBLISHES: &str = "rate limit: too many publishes";
const TOO_MANY_BYTES: &str = "rate limit: too many bytes";
const TOO_DEEP: &str = "data is nested deeper than the relay allows";

/// Another host, as far as the relay's per-address lockouts can tell (127.0.0.0/8 is all
/// loopback on Linux).
const OTHER_HOST: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));

/// Starts the relay with a config file, reached at 127.0.0.1: with a clients file on a
/// public listener (`0.0.0.0`: a loopback listener lets clients without a token in),
/// without one on loopback. `top` holds top-level keys, `tables` the `[tables]` after them.
fn relay(files: &Files, top: &str, tables: &str) -> ServerProcess {
    let listen = if tables.contains("clients =") {
        "0.0.0.0:0"
    } else {
        "127.0.0.1:0"
    };
    let config = files.write_config(&format!("listen = [\"{listen}\"]\n{top}\n{tables}"));
    ServerProcess::spawn(&["--config", &config])
}

/// `[auth]` naming the clients file, with more keys.
fn auth_table(files: &Files, more: &str) -> String {
    format!("[auth]\nclients = '{}'\n{more}\n", files.clients_str())
}

/// Sends SIGHUP and waits for the relay's next `SIGHUP:` line, which it returns.
fn sighup(server: &mut ServerProcess) -> String {
    let seen = server.count_stderr("SIGHUP:");
    server.signal(libc::SIGHUP);
    server.wait_for_stderr("SIGHUP:", seen + 1, POLL)
}

/// Sends SIGHUP and asserts that the clients file was reloaded with `clients` clients.
#[track_caller]
fn reload(server: &mut ServerProcess, clients: usize) {
    let line = sighup(server);
    assert!(
        line.contains("SIGHUP: reloaded") && line.contains(&format!("({clients} clients)")),
        "expected a reload of {clients} clients, got: {line}"
    );
}

/// Sends SIGHUP and asserts that the relay kept its clients (a warning names the problem).
#[track_caller]
fn reload_refused(server: &mut ServerProcess, why: &str) {
    let line = sighup(server);
    assert!(
        line.contains("SIGHUP: kept the current clients") && line.contains(why),
        "expected the current clients to be kept because of {why:?}, got: {line}"
    );
}

/// The first answer that was not 429, when its request was sent and when it came.
struct Unlocked {
    status: u16,
    sent: Instant,
    received: Instant,
}

/// Polls the upgrade status of `headers` until it is not 429 (at most [`POLL`]); every
/// answer before must be 429.
#[track_caller]
fn until_not_locked(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Unlocked {
    let deadline = Instant::now() + POLL;
    loop {
        let sent = Instant::now();
        let status = raw_upgrade(addr, None, target, headers).status;
        let at = Instant::now();
        if status != 429 {
            return Unlocked {
                status,
                sent,
                received: at,
            };
        }
        assert!(at < deadline, "still locked out after {} s", POLL.as_secs());
        thread::sleep(Duration::from_millis(20));
    }
}

/// `/metrics` by a client's token (from `from`, or this host), asserting 200.
#[track_caller]
fn metrics(addr: SocketAddr, from: Option<IpAddr>, token: Option<&str>) -> String {
    let header = token.map(bearer);
    let headers: Vec<(&str, &str)> = header.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let answer = http_get(addr, from, "/metrics", &headers);
    assert_eq!(answer.status(), 200, "/metrics: {}", answer.response.head);
    answer.text()
}

fn refused(reason: &str) -> String {
    format!("emberws_relay_refused_total{{reason=\"{reason}\"}}")
}

fn closed(reason: &str) -> String {
    format!("emberws_relay_closed_total{{reason=\"{reason}\"}}")
}

fn auth_refused(reason: &str) -> String {
    format!("emberws_auth_refused_total{{reason=\"{reason}\"}}")
}

// ---------------------------------------------------------------------------------
// 1. Starting off loopback
// ---------------------------------------------------------------------------------

#[test]
fn a_listener_off_loopback_needs_a_clients_file_and_then_a_token() {
    let files = Files::new("auth-offloop");
    // The clients file is what `emberws token alice` prints after the token.
    let made = run_to_exit(&["token", "alice"], DEADLINE);
    assert!(made.status.success(), "emberws token: {}", made.stderr);
    let (token, entry) = made.stdout.split_once('\n').expect("a token line");
    files.write_clients(entry);
    let clients = files.clients_str();

    let no_auth = files.write_config("listen = [\"0.0.0.0:0\"]\n");
    for args in [
        &["--listen", "0.0.0.0:0"][..],
        &["--config", &no_auth],
        // The echo server has no clients: a clients file does not make it authenticated.
        &["echo", "--listen", "0.0.0.0:0", "--clients", &clients],
    ] {
        let exit = run_to_exit(args, DEADLINE);
        assert_eq!(exit.status.code(), Some(2), "emberws {args:?}: {exit:?}");
        assert!(
            exit.stderr
                .contains("refusing to listen on 0.0.0.0:0 without authentication"),
            "emberws {args:?}: the refusal says why: {}",
            exit.stderr
        );
    }

    // With the clients file, by flag or by the config key, it listens: on every interface
    // (only loopback is used here), and a client without a token is refused there.
    let by_key = files.write_config(&format!(
        "listen = [\"0.0.0.0:0\"]\n\n[auth]\nclients = '{clients}'\n"
    ));
    for args in [
        &["--listen", "0.0.0.0:0", "--clients", &clients][..],
        &["--config", &by_key],
    ] {
        let mut server = ServerProcess::spawn(args);
        // On every interface: the log names 0.0.0.0 (the tests reach it on 127.0.0.1).
        server.wait_for_stderr("listening on ws://0.0.0.0:", 1, POLL);
        let addr = SocketAddr::from(([127, 0, 0, 1], server.addr().port()));
        let refused = raw_upgrade(addr, None, "/", &[]);
        assert_eq!(refused.status, 401, "{args:?}: {}", refused.head);
        assert_eq!(
            refused.header("WWW-Authenticate"),
            Some("Bearer realm=\"emberws\""),
            "{}",
            refused.head
        );
        assert_eq!(ws_refused(addr, None, "/", &[]), 401);

        // The token works, with the rules of the printed entry (devices/{name}/#).
        let mut alice = Peer::with_token(addr, token, "alice");
        let mut watch = Peer::with_token(addr, token, "alice (subscriber)");
        watch.subscribe("devices/alice/#");
        assert_eq!(alice.publish("devices/alice/temp", json!(21)), 1);
        watch.expect_message("devices/alice/temp", json!(21));
        alice.send(&json!({"type": "publish", "topic": "devices/bob/temp", "data": 1, "id": 1}));
        alice.expect_error(json!(1), NOT_ALLOWED);
        watch.nothing_pending();
    }
}

/// Local sensors on a loopback listener and token holders on a public one, in one relay:
/// loopback needs no token (and gets the `[anonymous]` rules), the public listener does.
#[test]
fn a_loopback_listener_lets_local_clients_in_without_a_token_and_a_public_one_does_not() {
    let files = Files::new("auth-two-listeners");
    files.write_clients(&clients_toml(&[Entry {
        name: "dash",
        token: "dash-token-0123456789",
        publish: &[],
        subscribe: &["sensors/#"],
    }]));
    let config = files.write_config(&format!(
        "listen = [\"127.0.0.1:0\", \"0.0.0.0:0\"]\n\n[auth]\nclients = '{}'\n\n\
         [anonymous]\npublish = [\"sensors/#\"]\nsubscribe = []\n",
        files.clients_str()
    ));
    let mut server = ServerProcess::spawn(&["--config", &config]);
    let local = server.addr();
    let line = server.wait_for_stderr("listening on ws://0.0.0.0:", 1, POLL);
    let port: u16 = line
        .split("listening on ws://0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let public = SocketAddr::from(([127, 0, 0, 1], port));
    assert_ne!(local, public);
    assert_eq!(
        ws_refused(public, None, "/", &[]),
        401,
        "the public listener needs a token"
    );
    let mut dash = Peer::with_token(public, "dash-token-0123456789", "dash");
    dash.send(&json!({"type":"subscribe","topic":"#","id":1}));
    assert_eq!(dash.recv(), json!({"type":"ack","id":1}));
    let mut sensor = Peer::anonymous(local, "sensor");
    sensor.send(&json!({"type":"publish","topic":"sensors/t","data":21,"id":2}));
    assert_eq!(sensor.recv(), json!({"type":"ack","id":2,"delivered":1}));
    assert_eq!(
        util::relay::without_id(dash.recv()),
        json!({"type":"message","topic":"sensors/t","data":21})
    );
    sensor.send(&json!({"type":"publish","topic":"elsewhere","data":1,"id":3}));
    assert_eq!(
        sensor.recv(),
        json!({"type":"error","reason":NOT_ALLOWED,"id":3}),
        "anonymous clients get the [anonymous] rules"
    );
}

// ---------------------------------------------------------------------------------
// 2. Tokens, 401 and 429
// ---------------------------------------------------------------------------------

const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";
const BOB_TOKEN: &str = "bob-token-fedcba9876543210";

#[test]
fn tokens_are_checked_and_repeated_failures_lock_the_address_out() {
    let files = Files::new("auth-tokens");
    let alice = Entry {
        name: "alice",
        token: ALICE_TOKEN,
        publish: &["#"],
        subscribe: &["#"],
    };
    let bob = Entry {
        name: "bob",
        token: BOB_TOKEN,
        ..alice
    };
    files.write_clients(&clients_toml(&[alice, bob]));
    let mut server = relay(
        &files,
        "",
        &auth_table(&files, "failures = 3\nlockout = 1.0\nlockout_max = 8.0"),
    );
    let addr = server.addr();
    let (auth, alice_bearer) = bearer(ALICE_TOKEN);
    let right: &[(&str, &str)] = &[(auth, &alice_bearer)];
    let wrong: &[(&str, &str)] = &[("Authorization", "Bearer not-a-token-of-anyone")];

    // No token: 401 with the scheme to use, and no WebSocket. (Not a failed attempt.)
    for _ in 0..5 {
        let none = raw_upgrade(addr, None, "/", &[]);
        assert_eq!(none.status, 401, "{}", none.head);
        assert_eq!(
            none.header("WWW-Authenticate"),
            Some("Bearer realm=\"emberws\"")
        );
        assert!(
            none.header("Sec-WebSocket-Accept").is_none(),
            "{}",
            none.head
        );
    }
    // A wrong token, by header or by query: 401, invalid_token. Two failures of three.
    for (target, headers) in [("/", wrong), ("/?token=not-a-token-of-anyone", &[])] {
        let bad = raw_upgrade(addr, None, target, headers);
        assert_eq!(bad.status, 401, "{target} {headers:?}: {}", bad.head);
        assert_eq!(
            bad.header("WWW-Authenticate"),
            Some("Bearer realm=\"emberws\", error=\"invalid_token\""),
            "{}",
            bad.head
        );
    }
    // The right token, by header or by query (among other parameters), opens; it also
    // clears the address's failures.
    Peer::open(addr, "/", right, "alice by header").nothing_pending();
    Peer::open(
        addr,
        &format!("/?token={ALICE_TOKEN}"),
        &[],
        "alice by query",
    )
    .nothing_pending();
    Peer::open(
        addr,
        &format!("/dash?x=1&token={BOB_TOKEN}"),
        &[],
        "bob by query",
    )
    .nothing_pending();
    // Another scheme is not a token.
    let basic = raw_upgrade(addr, None, "/", &[("Authorization", "Basic YWxpY2U6eA==")]);
    assert_eq!(basic.status, 401, "{}", basic.head);

    // A client removed by a reload: its token is refused from then on.
    let mut bob_open = Peer::with_token(addr, BOB_TOKEN, "bob");
    files.write_clients(&clients_toml(&[alice]));
    reload(&mut server, 1);
    bob_open.expect_close(1008, "client removed");
    let (name, bob_bearer) = bearer(BOB_TOKEN);
    let removed = raw_upgrade(addr, None, "/", &[(name, &bob_bearer)]);
    assert_eq!(removed.status, 401, "{}", removed.head);
    assert!(
        removed
            .header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Bearer ")),
        "{}",
        removed.head
    );
    assert_eq!(
        ws_refused(addr, None, &format!("/?token={BOB_TOKEN}"), &[]),
        401
    );
    Peer::open(addr, "/", right, "alice").nothing_pending();

    // Three wrong tokens lock the address out for 1 s: then everything from it, the right
    // token too, is 429 with Retry-After; other addresses go on; after the wait the right
    // token opens. Whether the lockout is still running when the next request arrives is
    // judged only when the client measured that it came within 0.9 s (it always does on a
    // machine that is not stalled); otherwise the round is repeated.
    let mut judged = false;
    for round in 0..3 {
        for _ in 0..2 {
            assert_eq!(raw_upgrade(addr, None, "/", wrong).status, 401);
        }
        let third_sent = Instant::now();
        let third = raw_upgrade(addr, None, "/", wrong);
        assert_eq!(
            third.status, 401,
            "the failure that starts a lockout is still answered 401"
        );
        let locked = raw_upgrade(addr, None, "/", right);
        let wrong_locked = raw_upgrade(addr, None, "/", wrong).status;
        let ws_locked = ws_status(addr, None, "/", right);
        let status_locked = http_get(addr, None, "/healthz", right).status();
        let quick = third_sent.elapsed() < Duration::from_millis(900);
        // Another host is not locked out (whatever the timing).
        Peer::open_from(addr, OTHER_HOST, right, "alice from 127.0.0.2").nothing_pending();
        if quick {
            assert_eq!(locked.status, 429, "the right token waits: {}", locked.head);
            assert_eq!(locked.header("Retry-After"), Some("1"), "{}", locked.head);
            assert_eq!(wrong_locked, 429);
            assert_eq!(ws_locked, 429, "a real client is refused too");
            assert_eq!(status_locked, 429, "the status routes too");
        }
        let open = until_not_locked(addr, "/", right);
        assert_eq!(open.status, 101, "the right token after the lockout");
        assert!(
            open.received - third_sent >= Duration::from_millis(990),
            "the lockout ended {:?} after the failure that started it, before its 1 s",
            open.received - third_sent
        );
        if quick {
            judged = true;
            break;
        }
        eprintln!("lockout round {round}: too slow to judge, once more");
    }
    assert!(
        judged,
        "the machine was too slow three times to judge a 1 s lockout"
    );

    // A failure after a lockout doubles it: 2 s, announced in Retry-After.
    let mut judged = false;
    for round in 0..3 {
        for _ in 0..2 {
            assert_eq!(raw_upgrade(addr, None, "/", wrong).status, 401);
        }
        let third_sent = Instant::now();
        assert_eq!(raw_upgrade(addr, None, "/", wrong).status, 401);
        // Wrong tokens while locked out are 429 and do not count; the first one after the
        // lockout is the fourth failure: 401, and a lockout of 2 s.
        let fourth = until_not_locked(addr, "/", wrong);
        assert_eq!(fourth.status, 401, "the fourth failure");
        assert!(fourth.received - third_sent >= Duration::from_millis(990));
        let again = raw_upgrade(addr, None, "/", wrong);
        let locked = raw_upgrade(addr, None, "/", right);
        let quick = fourth.sent.elapsed() < Duration::from_millis(900);
        if quick {
            assert_eq!(
                again.status, 429,
                "the fourth failure locked again: {}",
                again.head
            );
            assert_eq!(locked.status, 429, "{}", locked.head);
            assert_eq!(locked.header("Retry-After"), Some("2"), "{}", locked.head);
        }
        let open = until_not_locked(addr, "/", right);
        assert_eq!(open.status, 101);
        assert!(
            open.received - fourth.sent >= Duration::from_millis(1990),
            "a doubled lockout ended after {:?}",
            open.received - fourth.sent
        );
        if quick {
            judged = true;
            break;
        }
        eprintln!("doubling round {round}: too slow to judge, once more");
    }
    assert!(
        judged,
        "the machine was too slow three times to judge a 2 s lockout"
    );
}

// ---------------------------------------------------------------------------------
// 3. Topic rules
// ---------------------------------------------------------------------------------

#[test]
fn every_rule_kind_allows_and_denies_with_real_clients() {
    let files = Files::new("auth-acl");
    let alice = Entry {
        name: "alice",
        token: ALICE_TOKEN,
        publish: &["devices/{name}/#", "public/+/temp", "hello"],
        subscribe: &["devices/{name}/#", "public/+/temp", "alerts"],
    };
    let carol = Entry {
        name: "carol",
        token: "carol-token-31415926",
        ..alice
    };
    let bob = Entry {
        name: "bob",
        token: BOB_TOKEN,
        publish: &["#"],
        subscribe: &["#"],
    };
    files.write_clients(&clients_toml(&[alice, bob, carol]));
    let server = relay(&files, "", &auth_table(&files, ""));
    let addr = server.addr();

    // bob (a second connection) watches everything; alice publishes.
    let mut watch = Peer::with_token(addr, BOB_TOKEN, "bob (watching #)");
    watch.subscribe("#");
    let mut a = Peer::with_token(addr, ALICE_TOKEN, "alice");
    let cases = [
        ("devices/alice/temp", true),   // {name} and #
        ("devices/alice", true),        // # takes the level above it too
        ("devices/alice/a/b/c", true),  // # is every level below
        ("devices/bob/temp", false),    // another client's name
        ("devices/{name}/temp", false), // {name} is not a literal
        ("public/kitchen/temp", true),  // + is one level
        ("public/kitchen/hum", false),  // the level after + differs
        ("public/a/b/temp", false),     // + is exactly one level
        ("public/temp", false),         // and not none
        ("hello", true),                // exact
        ("hello/x", false),             // exact is not a prefix
        ("hell", false),
        ("alerts", false), // a subscribe rule gives no right to publish
        ("secret", false), // no rule
    ];
    for (i, (topic, allowed)) in cases.iter().enumerate() {
        let request = json!({"type": "publish", "topic": topic, "data": {"n": i}, "id": i});
        if *allowed {
            let got = a.request(request);
            assert_eq!(
                got,
                json!({"type": "ack", "id": i, "delivered": 1}),
                "{topic}: allowed"
            );
            watch.expect_message(topic, json!({"n": i}));
        } else {
            a.send(&request);
            a.expect_error(json!(i), NOT_ALLOWED);
        }
        // Nothing else reached the watcher; alice's connection is open and served.
        watch.nothing_pending();
        a.nothing_pending();
    }
    // A denied publish is not retained either.
    a.send(
        &json!({"type": "publish", "topic": "devices/bob/x", "data": 1, "retain": true, "id": "r"}),
    );
    a.expect_error(json!("r"), NOT_ALLOWED);

    // {name} is each client's own name: carol, with alice's rules, has devices/carol/#.
    let mut c = Peer::with_token(addr, "carol-token-31415926", "carol");
    c.send(&json!({"type": "publish", "topic": "devices/alice/temp", "data": 0, "id": "c"}));
    c.expect_error(json!("c"), NOT_ALLOWED);
    assert_eq!(c.publish("devices/carol/temp", json!("c")), 1);
    watch.expect_message("devices/carol/temp", json!("c"));
    watch.nothing_pending();

    // Subscriptions: outside every rule, the error with the request's id; with wildcards,
    // only the overlap with the rules.
    let mut s = Peer::with_token(addr, ALICE_TOKEN, "alice (subscribing)");
    for (id, topic) in [
        (1, "devices/bob/temp"),
        (2, "devices/bob/#"),
        (3, "alerts/x"),
        (4, "hello"), // a publish rule gives no right to subscribe
        (5, "secret/#"),
        (6, "public/kitchen/hum"),
        (7, "public/+/+/temp"),
    ] {
        s.send(&json!({"type": "subscribe", "topic": topic, "id": id}));
        s.expect_error(json!(id), NOT_ALLOWED);
        s.nothing_pending();
    }
    s.subscribe("alerts"); // exact
    s.subscribe("devices/+/temp"); // stands for devices/alice/temp
    s.subscribe("public/#"); // stands for public/+/temp
    let mut b = Peer::with_token(addr, BOB_TOKEN, "bob");
    for (topic, to_alice) in [
        ("devices/bob/temp", false), // a denied subscribe changed nothing
        ("devices/alice/temp", true),
        ("devices/alice/hum", false), // not under devices/+/temp
        ("alerts", true),
        ("alerts/x", false),
        ("hello", false),
        ("public/k/temp", true),
        ("public/k/hum", false),
        ("secret/a", false),
    ] {
        let delivered = b.publish(topic, json!(topic));
        assert_eq!(delivered, 1 + u64::from(to_alice), "{topic}: delivered");
        watch.expect_message(topic, json!(topic));
        if to_alice {
            s.expect_message(topic, json!(topic));
        }
        s.nothing_pending();
    }
    watch.nothing_pending();

    // Retained messages: a `#` subscriber gets only those its rules allow.
    for (topic, to_alice) in [
        ("devices/bob/r", false),
        ("devices/alice/r", false),
        ("public/k/temp", true),
        ("public/k/hum", false),
        ("alerts", true),
        ("secret", false),
    ] {
        let delivered = b.retain(topic, json!(format!("kept {topic}")));
        assert_eq!(delivered, 1 + u64::from(to_alice), "{topic}: delivered");
        watch.expect_message(topic, json!(format!("kept {topic}")));
        if to_alice {
            s.expect_message(topic, json!(format!("kept {topic}")));
        }
    }
    s.nothing_pending();
    drop(s);
    let mut late = Peer::with_token(addr, ALICE_TOKEN, "alice (late, #)");
    late.subscribe("#");
    let kept = |t: &str| (t.to_owned(), json!(format!("kept {t}")));
    assert_eq!(
        late.messages(3),
        [
            kept("alerts"),
            kept("devices/alice/r"),
            kept("public/k/temp")
        ],
        "the retained messages alice may read"
    );
    late.nothing_pending();
    // Live ones too.
    for (topic, to_alice) in [
        ("devices/bob/live", false),
        ("devices/alice/live", true),
        ("public/x/temp", true),
        ("public/x/y", false),
        ("news", false),
    ] {
        b.send(&json!({"type": "publish", "topic": topic, "data": 0}));
        watch.expect_message(topic, json!(0));
        if to_alice {
            late.expect_message(topic, json!(0));
        }
    }
    b.nothing_pending();
    watch.nothing_pending();
    late.nothing_pending();
    // bob's rules read everything: his own retained one, not alice's denied one.
    let mut bob_late = Peer::with_token(addr, BOB_TOKEN, "bob (late)");
    bob_late.subscribe("devices/bob/#");
    assert_eq!(bob_late.messages(1), [kept("devices/bob/r")]);
    bob_late.nothing_pending();
}

// ---------------------------------------------------------------------------------
// 4. Anonymous access
// ---------------------------------------------------------------------------------

#[test]
fn anonymous_clients_get_the_anonymous_rules_where_allowed() {
    let files = Files::new("auth-anon");
    let alice = Entry {
        name: "alice",
        token: ALICE_TOKEN,
        publish: &["#"],
        subscribe: &["#"],
    };
    files.write_clients(&clients_toml(&[alice]));
    let server = relay(
        &files,
        "allow_anonymous = true",
        &(auth_table(&files, "")
            + "[anonymous]\npublish = [\"public/in/#\"]\nsubscribe = [\"public/#\"]\n"),
    );
    let addr = server.addr();

    let mut watch = Peer::with_token(addr, ALICE_TOKEN, "alice (watching #)");
    watch.subscribe("#");
    let mut anon = Peer::anonymous(addr, "anonymous");
    assert_eq!(anon.publish("public/in/x", json!("hi")), 1);
    watch.expect_message("public/in/x", json!("hi"));
    for (id, topic) in [(1, "public/out"), (2, "public"), (3, "devices/alice/x")] {
        anon.send(&json!({"type": "publish", "topic": topic, "data": 0, "id": id}));
        anon.expect_error(json!(id), NOT_ALLOWED);
    }
    watch.nothing_pending();
    for (id, topic) in [(4, "devices/#"), (5, "private")] {
        anon.send(&json!({"type": "subscribe", "topic": topic, "id": id}));
        anon.expect_error(json!(id), NOT_ALLOWED);
    }
    anon.subscribe("#"); // stands for public/#
    let mut a = Peer::with_token(addr, ALICE_TOKEN, "alice");
    for (topic, to_anon) in [
        ("public/news", true),
        ("public", true),
        ("devices/alice/x", false),
        ("private", false),
    ] {
        // alice's own rules, not the anonymous ones.
        assert_eq!(
            a.publish(topic, json!(topic)),
            1 + u64::from(to_anon),
            "{topic}"
        );
        watch.expect_message(topic, json!(topic));
        if to_anon {
            anon.expect_message(topic, json!(topic));
        }
    }
    anon.nothing_pending();
    watch.nothing_pending();
    // A wrong token is not anonymous.
    assert_eq!(ws_refused(addr, None, "/?token=wrong", &[]), 401);

    // Without allow_anonymous, a clients file means no token, no connection.
    let closed_files = Files::new("auth-anon-off");
    closed_files.write_clients(&clients_toml(&[alice]));
    let closed = relay(
        &closed_files,
        "",
        &(auth_table(&closed_files, "") + "[anonymous]\npublish = [\"#\"]\nsubscribe = [\"#\"]\n"),
    );
    assert_eq!(ws_refused(closed.addr(), None, "/", &[]), 401);
    Peer::with_token(closed.addr(), ALICE_TOKEN, "alice").nothing_pending();

    // Anonymous rules cannot use {name}: refused at start.
    let bad = Files::new("auth-anon-name");
    let config = bad.write_config(
        "listen = [\"127.0.0.1:0\"]\n\n[anonymous]\npublish = [\"d/{name}\"]\nsubscribe = []\n",
    );
    let exit = run_to_exit(&["--config", &config], DEADLINE);
    assert_eq!(exit.status.code(), Some(2), "{exit:?}");
    assert!(exit.stderr.contains("{name}"), "{}", exit.stderr);
}

// ---------------------------------------------------------------------------------
// 5. Rate limits
// ---------------------------------------------------------------------------------

/// What a rate-limited connection got after its burst: refusals (each checked to be the
/// error `reason` with its request's id), then the close.
struct Refusals {
    count: u64,
    /// When the close came.
    closed: Instant,
}

/// Sends `next(i)` (a request with id `i`) one at a time until the relay closes the
/// connection; every answer before the close must be `reason` with its id, and the close
/// 1008 "rate limit exceeded".
#[track_caller]
fn refuse_until_closed(peer: &mut Peer, reason: &str, next: impl Fn(u64) -> String) -> Refusals {
    for i in 0..200 {
        peer.send_text(&next(i));
        loop {
            match peer.ws.read() {
                Ok(Message::Text(t)) => {
                    let got: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    assert_eq!(
                        got,
                        json!({"type": "error", "reason": reason, "id": i}),
                        "refusal {i}"
                    );
                    assert!(reason.starts_with("rate limit:"));
                    break;
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(frame)) => {
                    let frame = frame.expect("a close code");
                    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
                    assert_eq!(frame.reason.as_str(), "rate limit exceeded");
                    let closed = Instant::now();
                    loop {
                        match peer.ws.read() {
                            Ok(_) => {}
                            Err(tungstenite::Error::ConnectionClosed) => break,
                            Err(e) => panic!("the close did not complete: {e}"),
                        }
                    }
                    return Refusals { count: i, closed };
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => panic!("refusal {i}: read failed: {e}"),
            }
        }
    }
    panic!("still not closed after 200 refusals");
}

/// `strikes` refusals, then the close: exactly, when it all took less than a second from
/// the first refused request (one strike is forgiven per second); otherwise at most as many
/// more as seconds went by.
#[track_caller]
fn assert_strikes(refusals: u64, took: Duration, strikes: u64) {
    if took < Duration::from_secs(1) {
        assert_eq!(refusals, strikes, "refusals before the close");
    } else {
        let forgiven = took.as_secs() + 1;
        assert!(
            (strikes..=strikes + forgiven).contains(&refusals),
            "{refusals} refusals in {took:?} with {strikes} strikes"
        );
    }
}

#[test]
fn publishes_past_the_burst_are_refused_then_the_connection_is_closed() {
    let files = Files::new("auth-rate-publish");
    // Near-zero refill: the burst is all a connection gets during the test.
    let server = relay(
        &files,
        "",
        "[rate]\npublishes = 0.001\npublish_burst = 3\nbytes = 0\nstrikes = 3\nloopback = true\n",
    );
    let addr = server.addr();
    let mut bystander = Peer::anonymous(addr, "bystander");
    bystander.subscribe("t");
    let mut spam = Peer::anonymous(addr, "publisher");
    for i in 0..3 {
        assert_eq!(spam.publish("t", json!(i)), 1);
        bystander.expect_message("t", json!(i));
    }
    // Other requests are not publishes.
    spam.nothing_pending();
    let first_refused = Instant::now();
    let got = refuse_until_closed(&mut spam, TOO_MANY_PUBLISHES, |i| {
        json!({"type": "publish", "topic": "t", "data": "refused", "id": i}).to_string()
    });
    assert_strikes(got.count, got.closed - first_refused, 3);

    // Nothing refused reached the bystander, which is still served with a burst of its own;
    // so is a new connection.
    bystander.nothing_pending();
    for i in 0..3 {
        assert_eq!(bystander.publish("u", json!(i)), 0);
    }
    let mut again = Peer::anonymous(addr, "a new connection");
    for i in 0..3 {
        assert_eq!(again.publish("t", json!(i)), 1);
        bystander.expect_message("t", json!(i));
    }
    bystander.nothing_pending();

    let text = metrics(addr, None, None);
    assert_eq!(metric(&text, &refused("rate_publishes")), got.count);
    assert_eq!(metric(&text, &refused("rate_bytes")), 0);
    assert_eq!(metric(&text, &closed("rate_abuse")), 1);
}

/// A publish on topic `t` of exactly `len` bytes of JSON text, with id `id`.
fn sized_publish(id: u64, len: usize) -> String {
    let bare = json!({"type": "publish", "topic": "t", "id": id, "data": ""}).to_string();
    let pad = "x".repeat(len - bare.len());
    let text = json!({"type": "publish", "topic": "t", "id": id, "data": pad}).to_string();
    assert_eq!(text.len(), len, "{text}");
    text
}

#[test]
fn published_bytes_past_the_burst_are_refused_then_the_connection_is_closed() {
    let files = Files::new("auth-rate-bytes");
    let server = relay(
        &files,
        "",
        "[rate]\npublishes = 0\nbytes = 0.001\nbytes_burst = 1100\nstrikes = 2\nloopback = true\n",
    );
    let addr = server.addr();
    let mut bystander = Peer::anonymous(addr, "bystander");
    bystander.subscribe("t");
    let mut spam = Peer::anonymous(addr, "publisher");
    // 5 × 200 bytes fit the 1100 of the burst; a sixth does not, but 60 more bytes do:
    // bytes are counted, not messages.
    for i in 0..5 {
        spam.send_text(&sized_publish(i, 200));
        assert_eq!(spam.recv(), json!({"type": "ack", "id": i, "delivered": 1}));
    }
    let first_refused = Instant::now();
    spam.send_text(&sized_publish(5, 200));
    spam.expect_error(json!(5), TOO_MANY_BYTES);
    spam.send_text(&sized_publish(6, 60));
    assert_eq!(spam.recv(), json!({"type": "ack", "id": 6, "delivered": 1}));
    let delivered = bystander.messages(6);
    assert!(
        delivered.iter().all(|(topic, _)| topic == "t"),
        "{delivered:?}"
    );
    bystander.nothing_pending();

    // One strike is used; the next refusal is the second and last.
    let got = refuse_until_closed(&mut spam, TOO_MANY_BYTES, |i| sized_publish(i, 200));
    assert_strikes(got.count + 1, got.closed - first_refused, 2);
    bystander.nothing_pending();
    let mut again = Peer::anonymous(addr, "a new connection");
    again.send_text(&sized_publish(1, 200));
    assert_eq!(
        again.recv(),
        json!({"type": "ack", "id": 1, "delivered": 1})
    );
    bystander.messages(1);
    bystander.nothing_pending();

    let text = metrics(addr, None, None);
    assert_eq!(metric(&text, &refused("rate_bytes")), got.count + 1);
    assert_eq!(metric(&text, &refused("rate_publishes")), 0);
    assert_eq!(metric(&text, &closed("rate_abuse")), 1);
}

// ---------------------------------------------------------------------------------
// 6. JSON depth
// ---------------------------------------------------------------------------------

fn arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn objects(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// Reads the next text message as it came (no JSON parsing on the way).
#[track_caller]
fn next_text(peer: &mut Peer) -> String {
    loop {
        match peer.ws.read() {
            Ok(Message::Text(t)) => return t.as_str().to_owned(),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("{}: expected a text message, got {other:?}", peer.label),
        }
    }
}

#[test]
fn data_nested_deeper_than_the_limit_is_refused_and_the_limit_passes_intact() {
    let files = Files::new("auth-depth");
    let server = relay(&files, "", "[limits]\nmax_message = 1048576\n");
    let addr = server.addr();
    let mut sub = Peer::anonymous(addr, "subscriber");
    sub.subscribe("deep");
    let mut p = Peer::anonymous(addr, "publisher");

    let publish = |data: &str, id: u32| {
        format!(r#"{{"type":"publish","topic":"deep","data":{data},"id":{id}}}"#)
    };
    for (id, data) in [(1, arrays(100_000)), (2, arrays(65)), (3, objects(65))] {
        p.send_text(&publish(&data, id));
        p.expect_error(json!(id), TOO_DEEP);
        p.nothing_pending();
    }
    sub.nothing_pending();
    // 64 levels, and brackets inside strings (not nesting), arrive byte for byte.
    let in_string = format!("{{\"s\":\"{}\\\"[{{\"}}", "[".repeat(300));
    for (id, data) in [(4, arrays(64)), (5, objects(64)), (6, in_string)] {
        p.send_text(&publish(&data, id));
        assert_eq!(p.recv(), json!({"type": "ack", "id": id, "delivered": 1}));
        let text = next_text(&mut sub);
        let head = format!(r#"{{"type":"message","topic":"deep","data":{data},"id":""#);
        assert!(
            text.starts_with(&head) && text.ends_with("\"}"),
            "the data byte for byte, then the id: {text}"
        );
    }
    sub.nothing_pending();
    let text = metrics(addr, None, None);
    assert_eq!(metric(&text, &refused("json_too_deep")), 3);

    // The limit is a setting.
    let server = ServerProcess::spawn(&["--listen", "127.0.0.1:0", "--max-json-depth", "8"]);
    let mut p = Peer::anonymous(server.addr(), "publisher (depth 8)");
    p.send_text(&publish(&arrays(9), 7));
    p.expect_error(json!(7), TOO_DEEP);
    p.send_text(&publish(&arrays(8), 8));
    assert_eq!(p.recv(), json!({"type": "ack", "id": 8, "delivered": 0}));
}

// ---------------------------------------------------------------------------------
// 7. SIGHUP
// ---------------------------------------------------------------------------------

#[test]
fn sighup_reloads_the_clients_file_for_open_connections_and_a_bad_file_changes_nothing() {
    let files = Files::new("auth-sighup");
    let everything: &[&str] = &["#"];
    let bob = Entry {
        name: "bob",
        token: BOB_TOKEN,
        publish: everything,
        subscribe: everything,
    };
    let alice_a = Entry {
        name: "alice",
        token: ALICE_TOKEN,
        publish: &["a/#"],
        subscribe: &["a/#"],
    };
    let alice_b = Entry {
        publish: &["b/#"],
        subscribe: &["b/#"],
        ..alice_a
    };
    let carol = Entry {
        name: "carol",
        token: "carol-token-31415926",
        ..bob
    };
    let dave_old = Entry {
        name: "dave",
        token: "dave-token-old-2718",
        ..bob
    };
    let dave_new = Entry {
        token: "dave-token-new-1618",
        ..dave_old
    };
    files.write_clients(&clients_toml(&[alice_a, bob, carol, dave_old]));
    let mut server = relay(&files, "", &auth_table(&files, "failures = 100"));
    let addr = server.addr();

    let mut alice_sub = Peer::with_token(addr, ALICE_TOKEN, "alice (subscribed to #)");
    alice_sub.subscribe("#");
    let mut alice = Peer::with_token(addr, ALICE_TOKEN, "alice");
    let mut b = Peer::with_token(addr, BOB_TOKEN, "bob");
    let mut c = Peer::with_token(addr, carol.token, "carol");
    c.subscribe("#");
    let mut d = Peer::with_token(addr, dave_old.token, "dave");
    d.subscribe("#");
    let publish_denied = |peer: &mut Peer, topic: &str| {
        peer.send(&json!({"type": "publish", "topic": topic, "data": 0, "id": "denied"}));
        peer.expect_error(json!("denied"), NOT_ALLOWED);
    };
    // Under the first rules: alice reads and writes a/.
    assert_eq!(b.publish("a/1", json!(1)), 3);
    assert_eq!(b.publish("b/1", json!(1)), 2);
    alice_sub.expect_message("a/1", json!(1));
    alice_sub.nothing_pending();
    assert_eq!(alice.publish("a/x", json!("x")), 3);
    publish_denied(&mut alice, "b/x");
    for peer in [&mut c, &mut d] {
        peer.messages(3);
        peer.nothing_pending();
    }
    alice_sub.expect_message("a/x", json!("x"));

    // carol removed, dave's token changed, alice's rules now b/: carol's and dave's
    // connections are closed with 1008, the others go on under the new rules.
    files.write_clients(&clients_toml(&[alice_b, bob, dave_new]));
    reload(&mut server, 3);
    c.expect_close(1008, "client removed");
    d.expect_close(1008, "client removed");
    let under_b = |alice: &mut Peer, alice_sub: &mut Peer, b: &mut Peer, n: u64| {
        // The open `#` subscription now stands for b/# only.
        b.send(&json!({"type": "publish", "topic": "a/2", "data": n}));
        b.send(&json!({"type": "publish", "topic": "b/2", "data": n}));
        b.nothing_pending();
        alice_sub.expect_message("b/2", json!(n));
        alice_sub.nothing_pending();
        // The new publish rules apply at once.
        publish_denied(alice, "a/y");
        publish_denied(alice, "c/y");
        assert_eq!(alice.publish("b/y", json!(n)), 1);
        alice_sub.expect_message("b/y", json!(n));
        alice_sub.nothing_pending();
    };
    under_b(&mut alice, &mut alice_sub, &mut b, 2);
    let check_tokens = || {
        assert_eq!(
            ws_refused(addr, None, &format!("/?token={}", carol.token), &[]),
            401
        );
        assert_eq!(
            ws_refused(addr, None, &format!("/?token={}", dave_old.token), &[]),
            401
        );
        Peer::open(
            addr,
            &format!("/?token={}", dave_new.token),
            &[],
            "dave, new token",
        )
        .nothing_pending();
    };
    check_tokens();

    // A bad file keeps the current clients: one whose first entry would change alice (to
    // c/#) and whose second is wrong, and one that is not TOML; and a missing file.
    let half_good = clients_toml(&[Entry {
        publish: &["c/#"],
        subscribe: &["c/#"],
        ..alice_a
    }]) + "[eve]\ntoken_sha256 = \"not hex\"\npublish = [\"#\"]\n";
    files.write_clients(&half_good);
    reload_refused(&mut server, "token_sha256 of 'eve' must be 64 hex digits");
    files.write_clients("[alice\ntoken_sha256 = ");
    reload_refused(&mut server, "clients.toml:1");
    std::fs::remove_file(files.clients()).unwrap();
    reload_refused(&mut server, "cannot read it");
    alice_sub.nothing_pending();
    alice.nothing_pending();
    under_b(&mut alice, &mut alice_sub, &mut b, 3);
    check_tokens();

    // And a good file after the bad ones is read again: carol is back.
    files.write_clients(&clients_toml(&[alice_b, bob, dave_new, carol]));
    reload(&mut server, 4);
    Peer::with_token(addr, carol.token, "carol, back").nothing_pending();
    under_b(&mut alice, &mut alice_sub, &mut b, 5);
}

// ---------------------------------------------------------------------------------
// 8. The status routes and their counters
// ---------------------------------------------------------------------------------

#[test]
fn status_routes_need_a_token_and_count_every_refusal() {
    let files = Files::new("auth-status");
    let alice = Entry {
        name: "alice",
        token: ALICE_TOKEN,
        publish: &["a/#"],
        subscribe: &["a/#"],
    };
    let bob = Entry {
        name: "bob",
        token: BOB_TOKEN,
        publish: &["#"],
        subscribe: &["#"],
    };
    files.write_clients(&clients_toml(&[alice, bob]));
    // A lockout that cannot end during the test; rates that refill at near zero.
    let mut server = relay(
        &files,
        "",
        &(auth_table(&files, "failures = 3\nlockout = 3600\nlockout_max = 3600")
            + "[rate]\npublishes = 0.001\npublish_burst = 5\nbytes = 0\nstrikes = 100\nloopback = true\n"),
    );
    let addr = server.addr();
    let (auth, alice_bearer) = bearer(ALICE_TOKEN);
    let right: &[(&str, &str)] = &[(auth, &alice_bearer)];
    let wrong: &[(&str, &str)] = &[("Authorization", "Bearer wrong")];

    // Without a token: 401 (missing_token 2); a wrong one: 401 (wrong_token 1).
    for path in ["/metrics", "/healthz"] {
        let answer = http_get(addr, None, path, &[]);
        assert_eq!(answer.status(), 401, "{path}: {}", answer.response.head);
        assert_eq!(
            answer.header("WWW-Authenticate"),
            Some("Bearer realm=\"emberws\""),
            "{path}"
        );
        assert!(
            !answer.text().contains("emberws_"),
            "{path}: {}",
            answer.text()
        );
    }
    let answer = http_get(addr, None, "/metrics", wrong);
    assert_eq!(answer.status(), 401);
    assert!(answer
        .header("WWW-Authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
    // With a client's token: 200.
    let health = http_get(addr, None, "/healthz", right);
    assert_eq!(health.status(), 200, "{}", health.response.head);
    let health: Value = serde_json::from_slice(&health.body).expect("/healthz is JSON");
    assert!(health["connections_open"].is_u64(), "{health}");
    let text = metrics(addr, None, Some(BOB_TOKEN));
    assert_eq!(metric(&text, &auth_refused("missing_token")), 2);
    assert_eq!(metric(&text, &auth_refused("wrong_token")), 1);
    assert_eq!(metric(&text, &auth_refused("locked_out")), 0);

    // Upgrades: missing_token 3, wrong_token 2.
    assert_eq!(ws_refused(addr, None, "/", &[]), 401);
    assert_eq!(ws_refused(addr, None, "/?token=wrong", &[]), 401);
    // Requests: publish_not_allowed 2, subscribe_not_allowed 1, json_too_deep 1; the five
    // publishes are the burst, the next two rate_publishes.
    let mut a = Peer::with_token(addr, ALICE_TOKEN, "alice");
    for (id, request) in [
        (
            1,
            json!({"type": "publish", "topic": "b/x", "data": 0, "id": 1}),
        ),
        (
            2,
            json!({"type": "publish", "topic": "c", "data": 0, "id": 2}),
        ),
        (3, json!({"type": "subscribe", "topic": "b/#", "id": 3})),
    ] {
        a.send(&request);
        a.expect_error(json!(id), NOT_ALLOWED);
    }
    a.send_text(&format!(
        r#"{{"type":"publish","topic":"a/deep","data":{},"id":4}}"#,
        arrays(65)
    ));
    a.expect_error(json!(4), TOO_DEEP);
    assert_eq!(a.publish("a/ok", json!(1)), 0);
    assert_eq!(a.publish("a/ok", json!(2)), 0);
    for id in [5, 6] {
        a.send(&json!({"type": "publish", "topic": "a/ok", "data": 3, "id": id}));
        a.expect_error(json!(id), TOO_MANY_PUBLISHES);
    }
    a.nothing_pending();
    // A reload that removes bob: client_removed 1.
    let mut b = Peer::with_token(addr, BOB_TOKEN, "bob");
    files.write_clients(&clients_toml(&[alice]));
    reload(&mut server, 1);
    b.expect_close(1008, "client removed");
    // A lockout: wrong_token 5, then locked_out 2 (an upgrade with the right token, and
    // /metrics with it).
    for _ in 0..3 {
        assert_eq!(ws_refused(addr, None, "/?token=wrong", &[]), 401);
    }
    assert_eq!(ws_refused(addr, None, "/", right), 429);
    let locked = http_get(addr, None, "/metrics", right);
    assert_eq!(locked.status(), 429, "{}", locked.response.head);
    assert!(
        locked.header("Retry-After").is_some(),
        "{}",
        locked.response.head
    );

    // Read from another address, which is not locked out.
    let text = metrics(addr, OTHER_HOST, Some(ALICE_TOKEN));
    for (sample, want) in [
        (auth_refused("missing_token"), 3),
        (auth_refused("wrong_token"), 5),
        (auth_refused("locked_out"), 2),
        (refused("publish_not_allowed"), 2),
        (refused("subscribe_not_allowed"), 1),
        (refused("rate_publishes"), 2),
        (refused("rate_bytes"), 0),
        (refused("json_too_deep"), 1),
        (refused("too_large"), 0),
        (closed("rate_abuse"), 0),
        (closed("client_removed"), 1),
    ] {
        assert_eq!(metric(&text, &sample), want, "{sample}");
    }
    let health = http_get(addr, OTHER_HOST, "/healthz", right);
    assert_eq!(health.status(), 200, "{}", health.response.head);
    a.nothing_pending();

    // protect_status = false: the counters are public.
    let open_files = Files::new("auth-status-open");
    open_files.write_clients(&clients_toml(&[alice]));
    let open = relay(
        &open_files,
        "",
        &auth_table(&open_files, "protect_status = false"),
    );
    for path in ["/metrics", "/healthz"] {
        let answer = http_get(open.addr(), None, path, &[]);
        assert_eq!(answer.status(), 200, "{path}: {}", answer.response.head);
    }
    assert_eq!(
        ws_refused(open.addr(), None, "/", &[]),
        401,
        "upgrades still need one"
    );
}
