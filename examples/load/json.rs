//! The one JSON line each run prints, written by hand (flat objects of numbers and strings).

use std::fmt::Write as _;

/// A JSON object under construction.
pub struct Obj(String);

impl Obj {
    pub fn new() -> Self {
        Self(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_str(&mut self.0, key);
        self.0.push(':');
    }

    pub fn u(mut self, key: &str, v: u64) -> Self {
        self.key(key);
        let _ = write!(self.0, "{v}");
        self
    }

    /// A float rounded to `decimals`, or `null` when absent or not finite.
    pub fn f(mut self, key: &str, v: Option<f64>, decimals: usize) -> Self {
        self.key(key);
        match v {
            Some(v) if v.is_finite() => {
                let _ = write!(self.0, "{v:.decimals$}");
            }
            _ => self.0.push_str("null"),
        }
        self
    }

    pub fn s(mut self, key: &str, v: &str) -> Self {
        self.key(key);
        push_str(&mut self.0, v);
        self
    }

    pub fn b(mut self, key: &str, v: bool) -> Self {
        self.key(key);
        self.0.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn o(mut self, key: &str, v: Obj) -> Self {
        self.key(key);
        self.0.push_str(&v.finish());
        self
    }

    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_valid_json() {
        let line = Obj::new()
            .s("mode", "echo \"x\"\n")
            .u("n", 3)
            .f("rate", Some(1.26), 1)
            .f("none", None, 1)
            .b("ok", true)
            .o("inner", Obj::new().u("a", 1))
            .finish();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["mode"], "echo \"x\"\n");
        assert_eq!(v["rate"], 1.3);
        assert!(v["none"].is_null());
        assert_eq!(v["inner"]["a"], 1);
    }
}
