//! The state file (`--state FILE`): the retained values and history, with the epoch and the
//! last `seq`, kept across restarts.
//!
//! In: the relay, to [`encode`], and those bytes, to [`write_file`]; a file, to [`load`]
//! (its text, to [`parse`]). Out: one JSON document, written whole to a temporary file
//! beside the target, synced, then renamed over it, so a reader (or a crash) finds the old
//! file or the new one, never half of one. It holds what was published (never a
//! token or a hash) and is created readable by its owner only.
//!
//! A file written at a clean shutdown says so (`"clean":true`), and the relay that loads it
//! keeps its epoch and `seq`: ids go on where they stopped, and a client's `since` still
//! counts. Any other file (written while running, then the relay died) may miss the last
//! messages, so its ids cannot be trusted to be unique any more: the relay takes a new epoch
//! (clients are told `gap`), keeps the retained values under new ids and drops the history.
//! The loaded file is rewritten at once as not clean, so a crash after this start is seen as
//! one. A file that does not read whole is reported and ignored; what is loaded stays within
//! the relay's limits.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::history::History;
use super::id::Epoch;
use super::{data_in, deeper_than, is_publish_topic, json_string, message_frame, reserved, Relay};

/// The file format's version.
const VERSION: u32 = 1;

/// The highest count a file may hold: the largest integer a browser's number holds exactly
/// (`emberws.js` compares ids by it), far beyond what a relay publishes in its life, and far
/// enough below `u64::MAX` that counting on from it cannot overflow.
const MAX_SEQ: u64 = (1 << 53) - 1;

/// What [`load`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Written at a clean shutdown: the epoch and `seq` go on.
    pub clean: bool,
    pub retained: usize,
    pub history: usize,
    /// Entries left out: past a limit of this relay, or (not clean) the history.
    pub left_out: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File<'a> {
    version: u32,
    clean: bool,
    #[serde(borrow)]
    epoch: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    retained: Vec<Entry<'a>>,
    #[serde(borrow)]
    history: Vec<Entry<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<'a> {
    seq: u64,
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Writes the relay's state to `path` atomically; `clean` at shutdown. `buf` is reused.
/// (The program encodes on the loop thread and writes on the keeper's: `crate::keeper`.)
///
/// # Errors
/// As [`write_file`].
#[cfg(test)]
pub fn save(relay: &Relay, path: &Path, clean: bool, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    encode(relay, clean, buf);
    write_file(path, buf)
}

/// Writes `bytes` (an [`encode`]d state) to `path` atomically: a temporary file beside it,
/// synced, renamed over it, and the directory synced.
///
/// # Errors
/// Creating, writing, syncing or renaming the temporary file failed; `path` is unchanged.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temporary(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_owner_only()
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename itself reaches the disk with the directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// `DIR/.NAME.tmp` for `DIR/NAME`: in the same directory, so the rename stays on one file
/// system.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.tmp"))
}

trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for OpenOptions {
    fn mode_owner_only(&mut self) -> &mut Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            self.mode(0o600)
        }
        #[cfg(not(unix))]
        self
    }
}

/// The state as the file holds it: one entry a line (what [`save`] writes, appended to `out`).
pub fn encode(relay: &Relay, clean: bool, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "{{\"version\":{VERSION},\"clean\":{clean},\"epoch\":\"{}\",\"seq\":{},\n\"retained\":[",
        relay.epoch, relay.seq
    );
    let mut first = true;
    // The relay's own `$` topics are not kept: each run publishes its own.
    for (topic, value) in relay.retained.map.iter().filter(|(t, _)| !reserved(t)) {
        if let Some(data) = data_in(&value.frame) {
            entry(out, &mut first, value.seq, topic, data);
        }
    }
    out.extend_from_slice(b"],\n\"history\":[");
    first = true;
    for m in relay.history.after(0) {
        if let Some(data) = data_in(m.frame) {
            entry(out, &mut first, m.seq, m.topic, data);
        }
    }
    out.extend_from_slice(b"]}\n");
}

fn entry(out: &mut Vec<u8>, first: &mut bool, seq: u64, topic: &str, data: &str) {
    use std::io::Write as _;
    if !*first {
        out.push(b',');
    }
    *first = false;
    let _ = write!(out, "\n{{\"seq\":{seq},\"topic\":");
    json_string(out, topic);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
}

/// Loads `path` into `relay` (which must be fresh): `Ok(None)` when there is no such file.
/// Entries past the relay's limits are left out and counted.
///
/// # Errors
/// The file cannot be read, or does not read whole as a state file (not JSON, another
/// version, a bad epoch, an entry that cannot be right); `relay` is then unchanged.
pub fn load(relay: &mut Relay, path: &Path) -> Result<Option<Loaded>, String> {
    // What this relay could have written, generously (limits may have shrunk since): a file
    // far larger is not one of its own, and is not read into memory.
    let p = &relay.policy;
    let most = 4 * (p.max_retained_bytes as u64 + p.history_bytes as u64) + (16 << 20);
    match std::fs::metadata(path) {
        Ok(m) if m.len() > most => {
            return Err(format!("{} bytes, more than this relay writes", m.len()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    parse(relay, &text).map(Some)
}

/// Loads a state file's text into `relay` (which must be fresh), as [`load`] does once it
/// has read the file: the same checks, the same limits.
///
/// # Errors
/// The text does not read whole as a state file; `relay` is then unchanged.
pub fn parse(relay: &mut Relay, text: &str) -> Result<Loaded, String> {
    let file: File<'_> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "version {} (this relay reads {VERSION})",
            file.version
        ));
    }
    let epoch = Epoch::parse(&file.epoch).ok_or("a bad epoch")?;
    if file.seq > MAX_SEQ {
        return Err(format!("seq {} past {MAX_SEQ}", file.seq));
    }
    let mut last = 0;
    for e in &file.history {
        if e.seq <= last || e.seq > file.seq {
            return Err(format!("history entry {} out of order", e.seq));
        }
        last = e.seq;
    }
    if let Some(e) = file
        .retained
        .iter()
        .find(|e| e.seq == 0 || e.seq > file.seq)
    {
        return Err(format!("retained entry {} ahead of the file's seq", e.seq));
    }
    // One id is one message: a retained value is the message that set it, the same one where
    // history holds it too, and two retained values are two messages.
    let mut seqs: Vec<u64> = file.retained.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    if let Some(pair) = seqs.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("two retained entries with id {}", pair[0]));
    }
    for e in &file.retained {
        let held = file
            .history
            .binary_search_by_key(&e.seq, |h| h.seq)
            .ok()
            .and_then(|i| file.history.get(i));
        if held.is_some_and(|h| h.topic != e.topic || h.data.get() != e.data.get()) {
            return Err(format!(
                "retained entry {} is another message in history",
                e.seq
            ));
        }
    }
    Ok(apply(relay, &file, epoch))
}

/// Puts a read file's state into `relay`, within its limits.
fn apply(relay: &mut Relay, file: &File<'_>, epoch: Epoch) -> Loaded {
    let p = &relay.policy;
    let (max_frame, depth, cap) = (p.max_frame, p.max_json_depth, p.max_retained_bytes);
    relay.epoch = epoch;
    relay.seq = file.seq;
    relay.history = History::new(p.history_messages, p.history_bytes);
    let usable =
        |e: &Entry<'_>| is_publish_topic(&e.topic) && !deeper_than(e.data.get().as_bytes(), depth);
    let mut loaded = Loaded {
        clean: file.clean,
        retained: 0,
        history: 0,
        left_out: 0,
    };
    for e in &file.retained {
        message_frame(&mut relay.out, &e.topic, e.data.get(), epoch, e.seq);
        let frame = std::str::from_utf8(&relay.out).unwrap_or_default();
        let fits = usable(e)
            && frame.len() <= max_frame
            && relay.retained.set(&e.topic, frame, e.seq, cap).is_ok();
        if fits {
            loaded.retained += 1;
        }
    }
    for e in &file.history {
        if !usable(e) || e.topic.starts_with('$') {
            continue;
        }
        message_frame(&mut relay.out, &e.topic, e.data.get(), epoch, e.seq);
        let frame = std::str::from_utf8(&relay.out).unwrap_or_default();
        if frame.len() <= max_frame {
            // Past its caps, history drops the oldest, as it would have while running.
            relay.history.push(e.seq, &e.topic, frame);
        }
    }
    if file.clean {
        loaded.history = relay.history.len();
    } else {
        relay.forget_epoch();
    }
    loaded.left_out = file.retained.len() - loaded.retained + file.history.len() - loaded.history;
    relay.changes += 1;
    loaded
}

#[cfg(test)]
mod tests {
    use emberws::testing::Harness;
    use emberws::{Config, Message};
    use serde_json::{json, Value};

    use super::super::Policy;
    use super::*;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir()
                .join(format!("emberws-state-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A relay with a few retained values and some history, published through a client.
    fn busy(policy: Policy) -> Harness<Relay> {
        let mut h = Harness::new(Config::default(), Relay::new(policy));
        let p = h.connect("/").unwrap();
        for (topic, data, retain) in [
            ("a/1", json!(1), true),
            ("a/2", json!({"v": [1, 2.50], "s": "x\"y\\u00e9"}), true),
            ("b", json!("plain"), false),
            ("a/1", json!(3), true),
            ("c", json!(null), true),
        ] {
            let req = json!({"type":"publish","topic":topic,"data":data,"retain":retain});
            h.send(&p, Message::Text(&req.to_string()));
        }
        Relay::publish_from_loop(h.server_mut(), "$SYS/x", "1", true)
            .1
            .unwrap();
        h
    }

    /// The retained frames and the held history of a relay, as JSON.
    fn contents(relay: &Relay) -> (Vec<Value>, Vec<Value>) {
        let retained = relay
            .retained
            .map
            .values()
            .map(|r| serde_json::from_str(&r.frame).unwrap())
            .collect();
        let history = relay
            .history
            .after(0)
            .map(|m| serde_json::from_str(m.frame).unwrap())
            .collect();
        (retained, history)
    }

    #[test]
    fn a_clean_file_brings_back_everything_with_the_same_ids() {
        let dir = Dir::new("clean");
        let path = dir.0.join("state.json");
        let mut h = busy(Policy::default());
        let mut buf = Vec::new();
        save(h.handler(), &path, true, &mut buf).unwrap();
        let before = contents(h.handler());
        assert_eq!(before.0.len(), 3, "a/1, a/2 and $SYS/x: {:?}", before.0);
        assert_eq!(before.1.len(), 5, "no $ topic in history");
        // The file keeps no `$` topic: each run has its own.
        let before = (before.0[1..].to_vec(), before.1);
        let mut back = Relay::new(Policy::default());
        let loaded = load(&mut back, &path).unwrap().unwrap();
        assert_eq!(
            loaded,
            Loaded {
                clean: true,
                retained: 2,
                history: 5,
                left_out: 0
            }
        );
        assert_eq!(contents(&back), before, "byte for byte the same frames");
        assert_eq!(back.epoch, h.handler().epoch);
        assert_eq!(back.seq, 6);
        // Written again from what was loaded: the same file.
        let first = std::fs::read(&path).unwrap();
        save(&back, &path, true, &mut buf).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first);
        let _ = h.server_mut();
        // Nothing is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(names.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_file_not_written_at_a_clean_stop_keeps_the_retained_values_under_a_new_epoch() {
        let dir = Dir::new("unclean");
        let path = dir.0.join("state.json");
        let h = busy(Policy::default());
        save(h.handler(), &path, false, &mut Vec::new()).unwrap();
        let mut back = Relay::new(Policy::default());
        let loaded = load(&mut back, &path).unwrap().unwrap();
        assert!(!loaded.clean);
        assert_eq!(
            (loaded.retained, loaded.history, loaded.left_out),
            (2, 0, 5)
        );
        assert_ne!(back.epoch, h.handler().epoch);
        let (retained, history) = contents(&back);
        assert!(history.is_empty());
        let ids: Vec<&str> = retained.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let epoch = back.epoch;
        assert_eq!(ids, [format!("{epoch}-1"), format!("{epoch}-2")]);
        // In topic order: a/1, a/2.
        assert_eq!(
            retained[1]["data"],
            json!({"v": [1, 2.50], "s": "x\"y\\u00e9"})
        );
        assert_eq!(back.seq, 2);
    }

    #[test]
    fn what_is_loaded_stays_within_the_limits() {
        let dir = Dir::new("limits");
        let path = dir.0.join("state.json");
        let h = busy(Policy::default());
        save(h.handler(), &path, true, &mut Vec::new()).unwrap();
        let small = Policy {
            history_messages: 1,
            max_retained_bytes: 100 + super::super::RETAINED_ENTRY_BYTES,
            ..Policy::default()
        };
        let mut back = Relay::new(small);
        let loaded = load(&mut back, &path).unwrap().unwrap();
        // History: one message per topic (a/1, a/2, b, c); retained: what fits in 100 B
        // beside one entry's overhead (a/1, the first in topic order).
        assert_eq!(loaded.history, 4);
        assert_eq!(loaded.retained, 1);
        assert_eq!(loaded.left_out, 1 + 1);
        assert!(back.retained.bytes <= 100 + super::super::RETAINED_ENTRY_BYTES);
    }

    #[test]
    fn a_corrupt_or_truncated_file_is_refused_and_changes_nothing() {
        let dir = Dir::new("corrupt");
        let path = dir.0.join("state.json");
        let h = busy(Policy::default());
        save(h.handler(), &path, true, &mut Vec::new()).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let epoch = h.handler().epoch.to_string();
        let bad = [
            good[..good.len() / 2].to_owned(),
            String::new(),
            "not json".to_owned(),
            good.replace("\"version\":1", "\"version\":2"),
            good.replace(&epoch, "NOTHEX!!"),
            good.replace("\"seq\":6", "\"seq\":2"),
            good.replace("\"clean\":true", "\"clean\":true,\"extra\":1"),
        ];
        for text in bad {
            std::fs::write(&path, &text).unwrap();
            let mut relay = Relay::new(Policy::default());
            let epoch = relay.epoch;
            assert!(load(&mut relay, &path).is_err(), "{text}");
            assert_eq!(relay.epoch, epoch);
            assert_eq!((relay.seq, relay.history.len()), (0, 0));
            assert!(relay.retained.map.is_empty());
        }
        let mut relay = Relay::new(Policy::default());
        assert_eq!(load(&mut relay, &dir.0.join("absent.json")), Ok(None));
    }

    /// Found by the `state` fuzz target: a file whose retained value and history message
    /// of one id differ was loaded, and the relay then had two messages with one id.
    #[test]
    fn a_file_with_two_messages_of_one_id_is_refused() {
        let file = |retained: &str, history: &str| {
            format!(
                "{{\"version\":1,\"clean\":true,\"epoch\":\"3fa2c9e1\",\"seq\":3,\n\
                 \"retained\":[{retained}],\n\"history\":[{history}]}}\n"
            )
        };
        let a2 = r#"{"seq":2,"topic":"a","data":[1]}"#;
        let good = file(a2, &format!(r#"{{"seq":1,"topic":"a","data":0}},{a2}"#));
        let mut relay = Relay::new(Policy::default());
        let loaded = parse(&mut relay, &good).unwrap();
        assert_eq!((loaded.retained, loaded.history), (1, 2));
        for bad in [
            file(a2, r#"{"seq":2,"topic":"b","data":[1]}"#),
            file(a2, r#"{"seq":2,"topic":"a","data":[2]}"#),
            file(&format!(r#"{a2},{{"seq":2,"topic":"b","data":[1]}}"#), ""),
        ] {
            let mut relay = Relay::new(Policy::default());
            let err = parse(&mut relay, &bad).unwrap_err();
            assert!(err.contains("entr"), "{err}");
            assert!(relay.retained.map.is_empty() && relay.history.len() == 0);
        }
    }

    /// Found with the `state` fuzz target: a clean file whose count was at `u64::MAX` was
    /// loaded, and the next publish overflowed it (a panic where overflow is checked, id
    /// `EPOCH-0` and repeated ids where not).
    #[test]
    fn a_file_counted_past_what_a_browser_compares_is_refused() {
        let file = |seq: u64| {
            format!(
                "{{\"version\":1,\"clean\":true,\"epoch\":\"3fa2c9e1\",\"seq\":{seq},\n\
                 \"retained\":[{{\"seq\":{seq},\"topic\":\"a\",\"data\":1}}],\n\"history\":[]}}\n"
            )
        };
        for seq in [u64::MAX, MAX_SEQ + 1] {
            let mut relay = Relay::new(Policy::default());
            assert!(parse(&mut relay, &file(seq)).is_err(), "{seq}");
            assert_eq!(relay.seq, 0);
        }
        let mut h = Harness::new(Config::default(), Relay::new(Policy::default()));
        parse(h.handler_mut(), &file(MAX_SEQ)).unwrap();
        let mut p = h.connect("/").unwrap();
        h.send(&p, Message::Text(r#"{"type":"subscribe","topic":"a"}"#));
        h.send(
            &p,
            Message::Text(r#"{"type":"publish","topic":"a","data":2}"#),
        );
        let frames = h.received(&mut p);
        let emberws::testing::Frame::Text(last) = frames.last().unwrap() else {
            panic!("{frames:?}")
        };
        let v: Value = serde_json::from_str(last).unwrap();
        assert_eq!(
            v["id"],
            format!("3fa2c9e1-{}", MAX_SEQ + 1),
            "counting on from it"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = Dir::new("fail");
        let path = dir.0.join("state.json");
        let h = busy(Policy::default());
        save(h.handler(), &path, true, &mut Vec::new()).unwrap();
        let before = std::fs::read(&path).unwrap();
        // The temporary file's name is taken by a directory: the write fails.
        std::fs::create_dir(temporary(&path)).unwrap();
        assert!(save(h.handler(), &path, false, &mut Vec::new()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
