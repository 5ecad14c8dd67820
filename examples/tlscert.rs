//! `tlscert`: a throwaway self-signed ECDSA P-256 certificate and its key, for TLS tests and
//! benchmarks on this machine (`benches/compare.sh`'s TLS workloads).
//!
//! ```text
//! cargo run --release --example tlscert -- DIR     # writes DIR/cert.pem and DIR/key.pem
//! ```
//!
//! The certificate names `localhost`, `127.0.0.1` and `::1`, is valid from now for 30 days and
//! is no CA, so a client can trust the file itself (`load … --ca DIR/cert.pem`). The key is
//! PKCS#8 PEM. Made with `rcgen` (ring), a dev-dependency: nothing of this is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: tlscert DIR   (writes DIR/cert.pem and DIR/key.pem)");
        return ExitCode::from(2);
    };
    match write(PathBuf::from(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tlscert: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let mut params = rcgen::CertificateParams::new(names)?;
    // Valid from a minute ago (clock skew) for 30 days.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(60));
    params.not_after = epoch + now + Duration::from_secs(30 * 86_400);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "emberws test certificate");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    eprintln!(
        "tlscert: wrote {} and {} (ECDSA P-256; localhost, 127.0.0.1, ::1; 30 days)",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}
