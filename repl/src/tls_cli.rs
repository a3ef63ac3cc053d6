//! `rayrepl tls init`: a cluster CA and certificate, for `--tls-*` and the
//! `RAYREPL_TLS_*` variables (see `ray_proto::tls`).
//!
//! TLS needs a CA that every process trusts and a certificate signed by it that
//! every process presents. Making those with openssl takes a page of flags; this
//! makes a set in one command. The certificate names [`ray_proto::tls::SERVER_NAME`],
//! which peers check instead of an address, so the same files serve every
//! machine of the cluster: copy the directory to each.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// `rayrepl tls` subcommands.
#[derive(clap::Subcommand)]
pub enum TlsCommand {
    /// Write a new cluster CA (ca.pem, ca.key) and a certificate it signed
    /// (cert.pem, key.pem) into DIR, keys 0600.
    Init {
        /// Where to write them; created if missing, and existing files are not
        /// overwritten.
        dir: PathBuf,
    },
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Init { dir } => init(&dir),
    }
}

fn init(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let names = ["ca.pem", "ca.key", "cert.pem", "key.pem"];
    if let Some(taken) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        anyhow::bail!("{} exists; choose an empty directory, or remove the old set first", taken.display());
    }
    ray_proto::private::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, "rayrepl cluster CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut member = CertificateParams::new(vec![ray_proto::tls::SERVER_NAME.to_string()])?;
    member.distinguished_name.push(DnType::CommonName, ray_proto::tls::SERVER_NAME);
    member.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let member_key = KeyPair::generate()?;
    let issuer = Issuer::new(ca, &ca_key);
    let member_cert = member.signed_by(&member_key, &issuer)?;

    write(dir, "ca.pem", &ca_cert.pem(), 0o644)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), 0o600)?;
    write(dir, "cert.pem", &member_cert.pem(), 0o644)?;
    write(dir, "key.pem", &member_key.serialize_pem(), 0o600)?;
    let show = |n: &str| dir.join(n).display().to_string();
    println!("Wrote a cluster CA and certificate to {}.", dir.display());
    println!("Copy the directory to every machine of the cluster, then start each node with");
    println!(
        "  rayrepl start ... --tls-cert {} --tls-key {} --tls-ca {}",
        show("cert.pem"),
        show("key.pem"),
        show("ca.pem")
    );
    println!("and give drivers and other commands the same files:");
    println!(
        "  export {}={} {}={} {}={}",
        ray_proto::tls::CERT_ENV,
        show("cert.pem"),
        ray_proto::tls::KEY_ENV,
        show("key.pem"),
        ray_proto::tls::CA_ENV,
        show("ca.pem")
    );
    println!("ca.key signs new certificates; it need not leave this machine.");
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}
