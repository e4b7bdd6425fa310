//! Key generation: `mqseal keygen ID --out DIR [--alg ed25519|p256]`.

use std::path::PathBuf;

use anyhow::Context;
use mqseal_core::formats::identity::DeviceDir;
use mqseal_core::formats::keys::SignAlg;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AlgArg {
    /// Ed25519 (COSE alg -19); the default.
    Ed25519,
    /// ECDSA P-256 with SHA-256 (COSE alg -9, ESP256).
    P256,
}

impl From<AlgArg> for SignAlg {
    fn from(a: AlgArg) -> SignAlg {
        match a {
            AlgArg::Ed25519 => SignAlg::Ed25519,
            AlgArg::P256 => SignAlg::P256,
        }
    }
}

#[derive(clap::Subcommand)]
pub enum Commands {
    /// Create a device identity: ID.pub (public), ID.sign.pem and ID.kx.pem
    /// (private, mode 0600) and the sequence counter, in DIR. Never overwrites.
    Keygen {
        /// Device id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
        id: String,
        /// Device directory (created with mode 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Signature algorithm.
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: AlgArg,
        /// Make the broker's audit-signing key instead of a device: writes
        /// ID.sign.pem (Ed25519, private, 0600) for plugin_opt_broker_key and
        /// ID.pub.pem (public, PEM) for `mqseal audit verify --broker-key`.
        #[arg(long, conflicts_with = "alg")]
        broker: bool,
    },
}

pub fn run(command: Commands) -> anyhow::Result<()> {
    match command {
        Commands::Keygen { id, out, broker: true, .. } => broker_keygen(&id, &out),
        Commands::Keygen { id, out, alg, .. } => keygen(&id, &out, alg.into()),
    }
}

fn keygen(id: &str, out: &std::path::Path, alg: SignAlg) -> anyhow::Result<()> {
    let device = DeviceDir::keygen(out, id, alg).with_context(|| format!("cannot create device {id:?} in {}", out.display()))?;
    let identity = device.identity();
    println!("created device {} ({} signing, X25519 key agreement)", identity.id, identity.sign.alg());
    println!("  public identity:  {}", device.identity_path().display());
    println!("  signing key:      {} (private, 0600)", device.sign_key_path().display());
    println!("  key agreement:    {} (private, 0600)", device.kx_key_path().display());
    println!("  sequence counter: {}", device.seq_path().display());
    println!("fingerprint: {}", identity.fingerprint());
    Ok(())
}

/// The broker's checkpoint-signing key: Ed25519 only (C2SP signed notes), PEM files.
fn broker_keygen(id: &str, out: &std::path::Path) -> anyhow::Result<()> {
    use mqseal_core::formats::keys::{write_atomic, Overwrite, SigningKey};
    use mqseal_core::formats::signed_doc::AuthorityPublicKey;
    mqseal_core::formats::ids::validate_id("broker key", id)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let key = SigningKey::generate(SignAlg::Ed25519);
    let private_path = out.join(format!("{id}.sign.pem"));
    let public_path = out.join(format!("{id}.pub.pem"));
    key.save(&private_path, Overwrite::Refuse).with_context(|| format!("cannot write {}", private_path.display()))?;
    // The same SPKI PEM encoding as the realm's authority.pub.
    let public = AuthorityPublicKey::from_raw(&key.verifying_key().to_raw()).map_err(anyhow::Error::msg)?;
    let pem = public.to_pem()?;
    write_atomic(&public_path, pem.as_bytes(), 0o644, Overwrite::Refuse)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!("created broker key {id} (Ed25519, signs audit checkpoints)");
    println!("  private key: {} (0600; plugin_opt_broker_key)", private_path.display());
    println!("  public key:  {} (mqseal audit verify --broker-key)", public_path.display());
    println!("fingerprint: {}", public.fingerprint());
    Ok(())
}
