//! The steady state allocates nothing per message: a counting global allocator counts the
//! allocations made on the server's thread while clients echo and publish.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use emberws::{Config, Ctx, Decision, Handler, HttpRequest, Kind, Message, Server};
use util::raw::{self, Event, RawClient};

/// Counts allocations made by threads that opted in, each in its own counter (tests run in
/// parallel, each with its server thread).
struct Counting;

thread_local! {
    // `const` and without a destructor: reading it never allocates.
    static COUNTER: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

fn count() {
    if let Some(counter) = COUNTER.with(Cell::get) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Echoes, except `sub` subscribes to "t" and `pub:…` publishes the rest to "t"; a plain
/// `GET` is an event stream subscribed to "t".
struct EchoOrPublish;

impl Handler for EchoOrPublish {
    type State = ();

    fn on_upgrade(&mut self, _req: &HttpRequest<'_>) -> Decision<()> {
        Decision::Accept(())
    }

    fn on_event_stream(&mut self, _req: &HttpRequest<'_>) -> Option<Decision<()>> {
        Some(Decision::Accept(()))
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, _state: &mut ()) {
        if ctx.kind() == Kind::EventStream {
            ctx.subscribe("t");
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, _state: &mut (), msg: Message<'_>) {
        match msg {
            Message::Text("sub") => {
                ctx.subscribe("t");
                ctx.send_text("subscribed");
            }
            Message::Text(t) if t.starts_with("pub:") => {
                ctx.publish("t", Message::Text(&t[4..]));
            }
            other => {
                ctx.send(other);
            }
        }
    }
}

/// Runs the server on a thread whose allocations are counted; its address and counter.
fn spawn_counted() -> (std::net::SocketAddr, &'static AtomicU64) {
    util::init();
    let counter: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            EchoOrPublish,
        )
        .unwrap();
        tx.send(server.local_addr()).unwrap();
        COUNTER.with(|c| c.set(Some(counter)));
        server.run().unwrap();
    });
    (rx.recv().unwrap(), counter)
}

fn message(client: &mut RawClient) -> Vec<u8> {
    loop {
        match client.read_event().expect("read") {
            Event::Message { payload, .. } => return payload,
            Event::Ping(_) | Event::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn round_trips(client: &mut RawClient, n: usize, sizes: &[usize]) {
    for i in 0..n {
        let size = sizes[i % sizes.len()];
        let payload = vec![b'a' + (i % 26) as u8; size];
        client
            .send(&raw::client_frame(true, raw::op::TEXT, &payload))
            .unwrap();
        assert_eq!(message(client).len(), size);
    }
}

#[test]
fn steady_state_echo_and_publish_allocate_nothing_per_message() {
    let (addr, allocations) = spawn_counted();
    let mut echo = RawClient::connect(addr).unwrap();
    let sizes = [0, 1, 64, 125, 126, 1000, 4096, 60_000];

    // Warm-up: pools, scratch buffers and tables reach their working size.
    round_trips(&mut echo, 200, &sizes);
    let before = allocations.load(Ordering::SeqCst);
    round_trips(&mut echo, 2000, &sizes);
    let echo_allocs = allocations.load(Ordering::SeqCst) - before;
    assert_eq!(echo_allocs, 0, "{echo_allocs} allocations in 2000 echoes");

    let mut subscribers: Vec<RawClient> =
        (0..10).map(|_| RawClient::connect(addr).unwrap()).collect();
    for s in &mut subscribers {
        s.send(&raw::client_frame(true, raw::op::TEXT, b"sub"))
            .unwrap();
        assert_eq!(message(s), b"subscribed");
    }
    let mut publisher = RawClient::connect(addr).unwrap();
    let publish = |publisher: &mut RawClient, subscribers: &mut [RawClient], n: usize| {
        for i in 0..n {
            let text = format!("pub:reading {i}");
            publisher
                .send(&raw::client_frame(true, raw::op::TEXT, text.as_bytes()))
                .unwrap();
            for s in subscribers.iter_mut() {
                assert_eq!(message(s), text.as_bytes()[4..].to_vec());
            }
        }
    };
    publish(&mut publisher, &mut subscribers, 100);
    let before = allocations.load(Ordering::SeqCst);
    publish(&mut publisher, &mut subscribers, 1000);
    let publish_allocs = allocations.load(Ordering::SeqCst) - before;
    assert_eq!(
        publish_allocs, 0,
        "{publish_allocs} allocations in 1000 publishes to 10"
    );
}

#[test]
fn steady_state_publish_to_websockets_and_event_streams_allocates_nothing() {
    let (addr, allocations) = spawn_counted();
    let mut sockets: Vec<RawClient> = (0..5).map(|_| RawClient::connect(addr).unwrap()).collect();
    for s in &mut sockets {
        s.send(&raw::client_frame(true, raw::op::TEXT, b"sub"))
            .unwrap();
        assert_eq!(message(s), b"subscribed");
    }
    let mut streams: Vec<_> = (0..5)
        .map(|_| {
            let mut stream = util::sse::connect(addr, "/events");
            assert_eq!(stream.next(), Some(util::sse::Item::Retry(2000)));
            stream
        })
        .collect();
    let mut publisher = RawClient::connect(addr).unwrap();
    // The streams subscribed in on_open, before their head was read: a first publish
    // reaches them all.
    let mut publish = |n: usize| {
        for i in 0..n {
            let text = format!("pub:reading {i}\nsecond line");
            publisher
                .send(&raw::client_frame(true, raw::op::TEXT, text.as_bytes()))
                .unwrap();
            for s in sockets.iter_mut() {
                assert_eq!(message(s), text.as_bytes()[4..].to_vec());
            }
            for s in streams.iter_mut() {
                let data = text[4..].to_owned();
                assert_eq!(s.next(), Some(util::sse::Item::Event { id: None, data }));
            }
        }
    };
    publish(100);
    let before = allocations.load(Ordering::SeqCst);
    publish(1000);
    let allocs = allocations.load(Ordering::SeqCst) - before;
    assert_eq!(
        allocs, 0,
        "{allocs} allocations in 1000 publishes to 5 WebSockets and 5 event streams"
    );
}
