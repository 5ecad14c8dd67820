//! What a board gets: `emberws --version`, and the systemd unit in `dist/` checked against the
//! real binary (its `ExecStart` flags exist and accept the shipped example config as it is)
//! and against `systemd-analyze verify` (Debian's `systemd`; `.ci/run` installs it).
//! No systemd needs to be running.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use util::binary::binary_path;
use util::tls::TempDir;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn emberws(args: &[&str]) -> Output {
    Command::new(binary_path())
        .args(args)
        .output()
        .expect("run emberws")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A unit file's `(section, key, value)` entries in order; comments and blank lines left out.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("dist/emberws.service:{}: not KEY=VALUE: {line}", n + 1));
        entries.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    entries
}

/// The unit as shipped.
fn unit() -> (String, Vec<(String, String, String)>) {
    let path = repo("dist/emberws.service");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entries = unit_entries(&text);
    (text, entries)
}

/// The values of `key` in `[section]`.
fn values<'u>(entries: &'u [(String, String, String)], section: &str, key: &str) -> Vec<&'u str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

#[test]
fn version_prints_the_crate_version_and_the_features_built_in() {
    for flag in ["--version", "-V"] {
        let out = emberws(&[flag]);
        assert!(out.status.success(), "{flag}: {:?}", out.status);
        let stdout = text(&out.stdout);
        let mut lines = stdout.lines();
        assert_eq!(
            lines.next(),
            Some(concat!("emberws ", env!("CARGO_PKG_VERSION"))),
            "{flag}"
        );
        // The tests are built with every feature (`cargo test --all-features`).
        assert_eq!(lines.next(), Some("features: tls, redis"), "{flag}");
        assert_eq!(lines.next(), None, "{flag}: {stdout}");
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out.stderr));
    }
    let help = text(&emberws(&["--help"]).stdout);
    assert!(help.contains("-V, --version"), "{help}");
}

#[test]
fn the_unit_sandboxes_the_service() {
    let (_, u) = unit();
    let one = |key: &str| {
        let v = values(&u, "Service", key);
        assert_eq!(v.len(), 1, "[Service] {key}: {v:?}");
        v[0].to_owned()
    };
    for (key, want) in [
        ("Type", "simple"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        // Empty: no capability at all (the default ports are above 1024).
        ("CapabilityBoundingSet", ""),
        ("StateDirectory", "emberws"),
        ("ConfigurationDirectory", "emberws"),
    ] {
        assert_eq!(one(key), want, "[Service] {key}");
    }
    // The relay reads /proc/loadavg and /proc/meminfo for $SYS: not hidden by ProcSubset.
    assert!(values(&u, "Service", "ProcSubset").is_empty());
    assert_eq!(values(&u, "Install", "WantedBy"), ["multi-user.target"]);
}

#[test]
fn the_units_command_line_is_accepted_with_the_shipped_config_as_it_is() {
    let (_, u) = unit();
    let exec = values(&u, "Service", "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/emberws");
    assert_eq!(args[1..], ["--config", "/etc/emberws/emberws.toml"]);
    // The config file is in the directory systemd makes readable for the service.
    let dir = values(&u, "Service", "ConfigurationDirectory")[0];
    assert!(args[2].starts_with(&format!("/etc/{dir}/")), "{}", args[2]);

    // The README's installation copies emberws.example.toml there unchanged: the same
    // command line, with the file where a test can put it, starts as it is.
    let tmp = TempDir::new("dist");
    let installed = tmp.0.join("emberws.toml");
    std::fs::copy(repo("emberws.example.toml"), &installed).unwrap();
    let mut run: Vec<&str> = args[1..].to_vec();
    run[1] = installed.to_str().unwrap();
    run.push("--print-config");
    let out = emberws(&run);
    assert!(
        out.status.success(),
        "emberws {run:?}: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    // As shipped it listens on loopback only: no clients file is needed to start.
    let printed = text(&out.stdout);
    for line in ["listen = [\"127.0.0.1:9001\"]", "tls_listen = []"] {
        assert!(printed.lines().any(|l| l == line), "{line}:\n{printed}");
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    if analyze.is_err() {
        panic!(
            "systemd-analyze is missing: install Debian's `systemd` (`apt-get install systemd`; \
             .ci/run does); no systemd needs to be running"
        );
    }
    // The unit as shipped, with ExecStart pointed at the binary under test (verify checks
    // that the program exists and is executable).
    let (text_of_unit, _) = unit();
    let unit = text_of_unit.replace("/usr/local/bin/emberws", binary_path());
    let tmp = TempDir::new("dist-verify");
    let path = tmp.0.join("emberws.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}{}",
        out.status,
        text(&out.stdout)
    );
}
