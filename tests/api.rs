//! The application API, driven through `emberws::testing::Harness`: the real server with
//! in-memory peers and time passed in — per-connection state, subprotocols, send statuses,
//! backpressure and drain, close codes, the bounded inbox, and fair turns.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use emberws::testing::{client_frame, Frame, Harness};
use emberws::{
    CloseCode, Config, ConnId, Ctx, Decision, HandleError, Handler, HttpRequest, Message,
    SendStatus, SlowConsumer,
};

/// Counts live states, to show each is dropped when its connection ends.
#[derive(Clone, Default)]
struct Live(Rc<RefCell<i32>>);

/// A chat member: the room comes from the URL path, `/chat/ROOM`.
struct Member {
    room: String,
    said: usize,
    _live: Guard,
}

struct Guard(Live);

impl Drop for Guard {
    fn drop(&mut self) {
        *self.0 .0.borrow_mut() -= 1;
    }
}

#[derive(Default)]
struct Chat {
    live: Live,
    closed: Vec<(String, usize, u16)>,
}

impl Handler for Chat {
    type State = Member;

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<Member> {
        let Some(room) = req.path().strip_prefix("/chat/").filter(|r| !r.is_empty()) else {
            return Decision::Reject(404);
        };
        *self.live.0.borrow_mut() += 1;
        let member = Member {
            room: room.to_owned(),
            said: 0,
            _live: Guard(self.live.clone()),
        };
        match req.offered("chat.v1") {
            Some(p) => Decision::AcceptProtocol(member, p),
            None => Decision::Accept(member),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, state: &mut Member) {
        ctx.subscribe(&state.room);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, state: &mut Member, msg: Message<'_>) {
        state.said += 1;
        let room = state.room.as_str();
        ctx.publish(room, msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, state: Member, code: CloseCode, _: &str) {
        self.closed
            .push((state.room.clone(), state.said, code.as_u16()));
    }
}

#[test]
fn state_comes_from_the_request_lives_with_the_connection_and_is_dropped_at_close() {
    let cfg = Config::default().protocols(vec!["chat.v1".into()]);
    let mut h = Harness::new(cfg, Chat::default());
    let mut a = h.connect("/chat/kitchen").unwrap();
    let mut b = h.connect("/chat/kitchen").unwrap();
    let mut c = h.connect("/chat/garden").unwrap();
    assert_eq!(h.connect("/nowhere").unwrap_err(), 404);
    assert_eq!(*h.handler().live.0.borrow(), 3);

    h.send(&a, Message::Text("hello kitchen"));
    assert_eq!(h.received(&mut a), [Frame::Text("hello kitchen".into())]);
    assert_eq!(h.received(&mut b), [Frame::Text("hello kitchen".into())]);
    assert_eq!(h.received(&mut c), []);
    assert_eq!(h.state(&a).map(|m| m.said), Some(1));
    assert_eq!(h.state(&c).map(|m| m.room.clone()), Some("garden".into()));

    h.close(&a, 1000, "bye");
    h.disconnect(&c);
    assert_eq!(
        h.handler().closed,
        [("kitchen".into(), 1, 1000), ("garden".into(), 0, 1006)]
    );
    assert!(h.state(&a).is_none());
    assert_eq!(
        *h.handler().live.0.borrow(),
        1,
        "a's and c's states are dropped"
    );
}

/// Sends whatever it is told to, and reports every send status and drain.
#[derive(Default)]
struct Probe {
    statuses: Vec<SendStatus>,
    drains: usize,
    buffered: Vec<usize>,
}

impl Handler for Probe {
    type State = ();

    fn on_upgrade(&mut self, _: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
        let text = std::str::from_utf8(msg.as_bytes()).unwrap_or_default();
        if let Some(n) = text.strip_prefix("burst ") {
            let (count, size) = n.split_once('x').unwrap();
            let payload = vec![b'z'; size.parse().unwrap()];
            for _ in 0..count.parse::<usize>().unwrap() {
                let status = ctx.send(Message::Binary(&payload));
                self.statuses.push(status);
                self.buffered.push(ctx.buffered_amount());
            }
        } else if text == "wake" {
            ctx.notify_drained();
        } else if let Some(code) = text.strip_prefix("close ") {
            let code = match code {
                "1006" => CloseCode::ABNORMAL,
                "1005" => CloseCode::NO_STATUS,
                n => CloseCode::new(n.parse().unwrap()).unwrap(),
            };
            self.statuses.push(ctx.close(code, "asked"));
        }
    }

    fn on_drain(&mut self, _: &mut Ctx<'_>, _: &mut ()) {
        self.drains += 1;
    }
}

#[test]
fn sends_report_sent_and_dropped_and_drain_follows_the_reader() {
    let cfg = Config::default()
        .max_backpressure(8 * 1024)
        .drain_low_water(2 * 1024)
        .slow_consumer(SlowConsumer::Drop);
    let mut h = Harness::new(cfg, Probe::default());
    let mut peer = h.connect("/").unwrap();
    // The peer's socket takes 1 KiB, then it is full.
    h.set_window(&peer, 1024);
    h.send(&peer, Message::Text("burst 20x1000"));
    let s = h.handler().statuses.clone();
    // The connection being served: frames go into its batch until the batch reaches the
    // bound, then what the socket did not take is queued and the rest is dropped.
    let sent = s.iter().take_while(|&&x| x == SendStatus::Sent).count();
    assert!((8..=9).contains(&sent), "{s:?}");
    assert!(s[sent..].iter().all(|&x| x == SendStatus::Dropped), "{s:?}");
    assert!(h.handler().buffered.iter().all(|&b| b <= 8 * 1024 + 1004));
    assert_eq!(h.stats().slow_drops as usize, 20 - sent);
    assert_eq!(h.handler().drains, 0);
    // The reader catches up: the queue drains below the low-water mark, once.
    h.set_window(&peer, usize::MAX);
    assert_eq!(h.received(&mut peer).len(), sent, "what was sent arrives");
    assert_eq!(h.handler().drains, 1);
}

#[test]
fn notify_drained_calls_on_drain_once_nothing_is_queued() {
    let cfg = Config::default().max_backpressure(64 * 1024);
    let mut h = Harness::new(cfg, Probe::default());
    let mut peer = h.connect("/").unwrap();
    // Nothing queued: on_drain follows the callback, once.
    h.send(&peer, Message::Text("wake"));
    assert_eq!(h.handler().drains, 1);
    h.send(&peer, Message::Text("burst 1x10"));
    assert_eq!(h.handler().drains, 1, "only when asked");
    // A few bytes queued, below the low-water mark: no low-water notice will come, the
    // empty queue brings it.
    h.set_window(&peer, 100);
    h.send(&peer, Message::Text("burst 2x1000"));
    assert!(h.buffered_amount(&peer) > 0);
    h.send(&peer, Message::Text("wake"));
    assert_eq!(h.handler().drains, 1, "still queued");
    h.set_window(&peer, usize::MAX);
    h.received(&mut peer);
    assert_eq!(h.buffered_amount(&peer), 0);
    assert_eq!(h.handler().drains, 2);
    // From outside a callback, with nothing queued: in the next turn, once.
    h.server_mut().visit_open(|_, ctx, _| ctx.notify_drained());
    assert_eq!(h.handler().drains, 2);
    h.turn();
    assert_eq!(h.handler().drains, 3);
    h.turn();
    assert_eq!(h.handler().drains, 3, "once");
}

#[test]
fn sends_to_another_connection_report_queued_behind_a_full_socket() {
    let cfg = Config::default().max_backpressure(4 * 1024);
    let mut h = Harness::new(cfg.slow_consumer(SlowConsumer::Drop), Probe::default());
    let mut peer = h.connect("/").unwrap();
    h.set_window(&peer, 1500);
    let id = peer.id();
    let statuses: Vec<SendStatus> = (0..8)
        .map(|_| h.server_mut().send(id, Message::Binary(&[1; 1000])))
        .collect();
    assert_eq!(
        statuses,
        [
            SendStatus::Sent,
            SendStatus::Queued,
            SendStatus::Queued,
            SendStatus::Queued,
            SendStatus::Queued,
            SendStatus::Dropped,
            SendStatus::Dropped,
            SendStatus::Dropped,
        ]
    );
    h.set_window(&peer, usize::MAX);
    assert_eq!(h.received(&mut peer).len(), 5);
}

#[test]
fn a_slow_consumer_is_closed_with_1008_and_sends_say_closed() {
    let cfg = Config::default().max_backpressure(4 * 1024);
    let mut h = Harness::new(cfg, Probe::default());
    let mut peer = h.connect("/").unwrap();
    h.set_window(&peer, 512);
    h.send(&peer, Message::Text("burst 20x1000"));
    let s = &h.handler().statuses;
    let first_closed = s.iter().position(|&x| x == SendStatus::Closed).unwrap();
    assert!(
        s[first_closed..].iter().all(|&x| x == SendStatus::Closed),
        "{s:?}"
    );
    h.set_window(&peer, usize::MAX);
    let frames = h.received(&mut peer);
    assert_eq!(
        frames.last(),
        Some(&Frame::Close(Some(1008), "slow consumer".into()))
    );
    assert_eq!(h.stats().slow_closes, 1);
}

#[test]
fn forbidden_close_codes_cannot_be_made_or_sent() {
    for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000] {
        assert_eq!(CloseCode::new(code), None, "{code}");
    }
    let mut h = Harness::new(Config::default(), Probe::default());
    let mut peer = h.connect("/").unwrap();
    h.send(&peer, Message::Text("close 1006"));
    h.send(&peer, Message::Text("close 1005"));
    assert_eq!(
        h.handler().statuses,
        [SendStatus::Closed, SendStatus::Closed]
    );
    assert_eq!(h.received(&mut peer), [], "nothing went on the wire");
    h.send(&peer, Message::Text("close 4000"));
    assert_eq!(
        h.received(&mut peer),
        [Frame::Close(Some(4000), "asked".into())]
    );
}

#[test]
fn messages_over_max_send_size_are_refused_whole() {
    let cfg = Config::default().max_message_size(1024).max_send_size(2048);
    let mut h = Harness::new(cfg, Probe::default());
    let mut peer = h.connect("/").unwrap();
    h.send(&peer, Message::Text("burst 1x2049"));
    h.send(&peer, Message::Text("burst 1x2048"));
    assert_eq!(
        h.handler().statuses,
        [SendStatus::TooLarge, SendStatus::Sent]
    );
    assert_eq!(h.received(&mut peer).len(), 1);
    let handle = h.handle();
    assert_eq!(
        handle.try_broadcast(Message::Binary(&[0; 2049])),
        Err(HandleError::TooLarge)
    );
}

#[test]
fn the_inbox_is_bounded_in_bytes_and_drained_in_turns() {
    let cfg = Config::default().max_inbox_bytes(16 * 1024);
    let mut h = Harness::new(cfg, Probe::default());
    let mut peer = h.connect("/").unwrap();
    let handle = h.handle();
    let id: ConnId = peer.id();
    // From another thread, while the loop does not turn: 1 KiB messages fill 16 KiB.
    let sent = std::thread::spawn(move || {
        let mut ok = 0;
        loop {
            match handle.try_send(id, Message::Binary(&[7; 1000])) {
                Ok(()) => ok += 1,
                Err(HandleError::Full) => return ok,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .join()
    .unwrap();
    // Each command costs its frame (1004 B) and 64 B of record.
    assert_eq!(sent, 16 * 1024 / 1068);
    h.turn();
    assert_eq!(h.received(&mut peer).len(), sent);
    // On the loop's own thread a plain send never waits: it answers Full.
    let handle = h.handle();
    while handle.try_send(id, Message::Binary(&[7; 1000])).is_ok() {}
    assert_eq!(
        handle.send(id, Message::Binary(&[7; 1000])),
        Err(HandleError::Full)
    );
}

/// Logs which connection each message came from, in the order the handler saw them.
#[derive(Default)]
struct Order(Vec<u32>);

impl Handler for Order {
    type State = u32;

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<u32> {
        Decision::Accept(req.path().trim_start_matches('/').parse().unwrap())
    }

    fn on_message(&mut self, _: &mut Ctx<'_>, who: &mut u32, _: Message<'_>) {
        self.0.push(*who);
    }
}

#[test]
fn a_flooding_connection_cannot_take_a_second_turn_before_a_waiting_one_has_its_first() {
    let cfg = Config::default().read_budget(16 * 1024);
    let mut h = Harness::new(cfg, Order::default());
    let flooder = h.connect("/1").unwrap();
    let waiter = h.connect("/2").unwrap();
    let late = h.connect("/3").unwrap();
    // 100 KiB of 1000-byte messages from the flooder, one message from the waiter, all
    // there before the turn.
    let frame = client_frame(0x2, &[0u8; 1000]);
    for _ in 0..100 {
        h.queue_bytes(&flooder, &frame);
    }
    h.queue_bytes(&waiter, &frame);
    assert_eq!(
        h.turn(),
        Some(Duration::ZERO),
        "work is left: the next turn comes at once"
    );
    let log = &h.handler().0;
    let first_turn = log.len();
    // One budget of the flooder's (16 KiB: 16 whole messages), then the waiter's one.
    assert_eq!(log.iter().filter(|&&w| w == 1).count(), 16, "{log:?}");
    assert_eq!(log.last(), Some(&2), "{log:?}");
    // A third connection that becomes ready now waits behind the flooder's leftover only
    // once: the flooder gets one more budget, then it.
    h.queue_bytes(&late, &frame);
    h.turn();
    let log = &h.handler().0;
    assert_eq!(
        &log[first_turn..],
        [[1; 16].as_slice(), &[3]].concat(),
        "{log:?}"
    );
    while h.turn() == Some(Duration::ZERO) {}
    assert_eq!(h.handler().0.iter().filter(|&&w| w == 1).count(), 100);
}

#[test]
fn a_ping_flood_is_answered_within_the_frame_budget_per_read() {
    let cfg = Config::default().read_budget(600).frame_budget(10);
    let mut h = Harness::new(cfg, Order::default());
    let mut flooder = h.connect("/1").unwrap();
    let waiter = h.connect("/2").unwrap();
    // 6-byte pings: 100 per 600-byte read; the read in progress finishes, then it waits.
    for _ in 0..1000 {
        h.queue_bytes(&flooder, &client_frame(0x9, b""));
    }
    h.queue_bytes(&waiter, &client_frame(0x1, b"me"));
    h.turn();
    assert_eq!(h.handler().0, [2], "the waiter is served in the first turn");
    // A pong replaces a waiting pong: a flooder that never reads cannot grow its queue.
    h.set_window(&flooder, 0);
    while h.turn() == Some(Duration::ZERO) {}
    // At most one read's pongs (100 of 2 bytes) in the queue, plus the one waiting pong.
    assert!(
        h.stats().queued_bytes <= 200 + 2,
        "{}",
        h.stats().queued_bytes
    );
    h.set_window(&flooder, usize::MAX);
    assert!(h
        .received(&mut flooder)
        .iter()
        .all(|f| *f == Frame::Pong(vec![])));
}

#[test]
fn deadlines_run_on_the_time_passed_in() {
    let cfg = Config::default()
        .ping_interval(Some(Duration::from_secs(30)))
        .pong_timeout(Duration::from_secs(10));
    let mut h = Harness::new(cfg, Order::default());
    let mut peer = h.connect("/1").unwrap();
    h.advance(Duration::from_millis(29_999));
    assert_eq!(h.received(&mut peer), []);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.received(&mut peer), [Frame::Ping(vec![])]);
    h.advance(Duration::from_secs(10));
    assert_eq!(h.conn_state(&peer), emberws::conn::State::Closed);
    assert_eq!(h.stats().timeouts, 1);
}

#[test]
fn a_finished_shutdown_leaves_nothing_to_wake_for() {
    let cfg = Config::default().close_timeout(Duration::from_secs(5));
    let mut h = Harness::new(cfg, Order::default());
    let mut peer = h.connect("/1").unwrap();
    h.server_mut().shutdown();
    h.turn();
    let got = h.received(&mut peer);
    assert!(
        matches!(got.as_slice(), [Frame::Close(Some(1001), _)]),
        "{got:?}"
    );
    // The peer never answers: the loop waits for the close timeout, no longer.
    let wait = h.turn().expect("the close timeout is due");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    assert!(!h.server_mut().is_finished());
    h.advance(Duration::from_secs(5));
    assert!(h.server_mut().is_finished());
    // Finished: no deadline and no work, so a loop that polls on sleeps instead of spinning.
    for _ in 0..3 {
        assert_eq!(h.turn(), None);
        h.advance(Duration::from_secs(60));
    }
}

/// Refuses `/locked` with a full response, and tells the time it saw.
#[derive(Default)]
struct Gate {
    upgrades_at: Vec<Duration>,
}

impl Handler for Gate {
    type State = u32;

    fn on_upgrade(&mut self, req: &HttpRequest<'_>) -> Decision<u32> {
        self.upgrades_at.push(req.now());
        if req.path() == "/locked" {
            let mut res = emberws::Response::status(429);
            res.headers.push(("Retry-After", "7".to_owned()));
            res.body = b"slow down\n".to_vec().into();
            return Decision::Refuse(res);
        }
        Decision::Accept(0)
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, said: &mut u32, _: Message<'_>) {
        *said += 1;
        let ms = ctx.now().as_millis().to_string();
        ctx.send(Message::Text(&ms));
    }
}

#[test]
fn a_refusal_carries_its_headers_and_callbacks_see_the_loops_clock() {
    let mut h = Harness::new(Config::default(), Gate::default());
    let refused = h.upgrade("/locked", &[]).err().unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused
        .headers
        .iter()
        .any(|(n, v)| n == "Retry-After" && v == "7"));
    assert_eq!(refused.body, b"slow down\n");
    h.advance(Duration::from_millis(1500));
    let mut peer = h.connect("/").unwrap();
    h.advance(Duration::from_millis(250));
    h.send(&peer, Message::Text("what time is it"));
    assert_eq!(h.received(&mut peer), [Frame::Text("1750".into())]);
    assert_eq!(
        h.handler().upgrades_at,
        [Duration::ZERO, Duration::from_millis(1500)]
    );
}

#[test]
fn visit_open_reaches_every_open_connection_with_its_state_and_close_ends_one() {
    let mut h = Harness::new(Config::default(), Gate::default());
    let mut a = h.connect("/").unwrap();
    let mut b = h.connect("/").unwrap();
    h.send(&a, Message::Text("1"));
    h.received(&mut a);
    let mut seen = Vec::new();
    h.server_mut().visit_open(|_, ctx, said| {
        seen.push(*said);
        if *said == 0 {
            ctx.send(Message::Text("you said nothing"));
        }
    });
    seen.sort_unstable();
    assert_eq!(seen, [0, 1]);
    assert_eq!(h.received(&mut b), [Frame::Text("you said nothing".into())]);
    let status = h.server_mut().close(a.id(), CloseCode::POLICY, "removed");
    assert_eq!(status, SendStatus::Sent);
    assert_eq!(
        h.received(&mut a),
        [Frame::Close(Some(1008), "removed".into())]
    );
    let mut open = 0;
    h.server_mut().visit_open(|_, _, _| open += 1);
    assert_eq!(open, 1, "a closing connection is not open");
}

/// `sub PATTERN` subscribes, `pub TOPIC TEXT` publishes.
struct PubSub;

impl Handler for PubSub {
    type State = ();

    fn on_upgrade(&mut self, _: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _: &mut (), msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        match text.split_once(' ') {
            Some(("sub", pattern)) => {
                ctx.subscribe(pattern);
            }
            Some(("pub", rest)) => {
                if let Some((topic, body)) = rest.split_once(' ') {
                    ctx.publish(topic, Message::Text(body));
                }
            }
            _ => {}
        }
    }
}

fn exported(h: &mut Harness<PubSub>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    h.server_mut().drain_exports(|topic, msg| {
        let body = String::from_utf8_lossy(msg.as_bytes()).into_owned();
        out.push((topic.to_owned(), body));
    });
    out
}

#[test]
fn local_publishes_are_exported_in_order_and_imports_are_delivered_but_not_exported() {
    let mut cfg = Config::default();
    cfg.max_export_bytes = 200;
    let mut h = Harness::new(cfg, PubSub);
    let mut sub = h.connect("/").unwrap();
    let publisher = h.connect("/").unwrap();
    h.send(&sub, Message::Text("sub s/#"));
    h.send(&publisher, Message::Text("pub s/1 first"));
    h.send(&publisher, Message::Text("pub other second"));
    h.handle()
        .publish("s/2", Message::Text("from a thread"))
        .unwrap();
    h.turn();
    h.server_mut().publish("s/3", Message::Text("from the app"));
    assert_eq!(
        exported(&mut h),
        [
            ("s/1".to_owned(), "first".to_owned()),
            ("other".to_owned(), "second".to_owned()),
            ("s/2".to_owned(), "from a thread".to_owned()),
            ("s/3".to_owned(), "from the app".to_owned()),
        ],
        "every local publish, in order, subscribed to or not"
    );
    assert!(exported(&mut h).is_empty(), "drained once");
    let d = h
        .server_mut()
        .import("s/remote", Message::Text("from elsewhere"));
    assert_eq!(d.delivered(), 1);
    assert!(exported(&mut h).is_empty(), "an import is never exported");
    let got = h.received(&mut sub);
    assert_eq!(
        got,
        ["first", "from a thread", "from the app", "from elsewhere"].map(|t| Frame::Text(t.into()))
    );
    // 200 bytes hold a few publishes of 60; the rest are counted, not kept.
    let body = "x".repeat(50);
    for _ in 0..5 {
        h.send(&publisher, Message::Text(&format!("pub t {body}")));
    }
    assert_eq!(exported(&mut h).len(), 3);
    assert_eq!(h.stats().exports_dropped, 2);
    // Off by default.
    let mut h = Harness::new(Config::default(), PubSub);
    let publisher = h.connect("/").unwrap();
    h.send(&publisher, Message::Text("pub t x"));
    assert!(exported(&mut h).is_empty());
}
