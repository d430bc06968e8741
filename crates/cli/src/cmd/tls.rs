//! How the CLI trusts an `https://` daemon (docs/tls.md): the CA file in
//! `SAFEHOUSE_CA_CERT`, the leaf certificate's SHA-256 in `SAFEHOUSE_TLS_FINGERPRINT` (a
//! pin: the name and issuer then do not matter), both (chain and pin must hold), or else the
//! system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured). Verification is never
//! skipped; a failure names the variable that fixes it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme, StreamOwned};
use sha2::{Digest, Sha256};

pub const ENV_CA: &str = "SAFEHOUSE_CA_CERT";
pub const ENV_FINGERPRINT: &str = "SAFEHOUSE_TLS_FINGERPRINT";

/// What to do when the daemon's certificate is refused.
const FIX: &str = "set SAFEHOUSE_CA_CERT to the CA certificate that issued the daemon's certificate \
     (DATA_DIR/tls/ca.crt for `serve --tls-self-signed`) or SAFEHOUSE_TLS_FINGERPRINT to the \
     SHA-256 fingerprint `safehouse serve` printed";

/// The client configuration the environment asks for.
pub fn client_config() -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pin = match std::env::var(ENV_FINGERPRINT).ok().filter(|v| !v.trim().is_empty()) {
        Some(v) => Some(parse_fingerprint(&v)?),
        None => None,
    };
    let ca = std::env::var_os(ENV_CA).filter(|v| !v.is_empty());
    let roots = match &ca {
        Some(path) => {
            let shown = std::path::Path::new(path).display().to_string();
            let pem = std::fs::read(path).with_context(|| format!("{ENV_CA}={shown}: cannot read it"))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| anyhow::anyhow!("{ENV_CA}={shown}: not a PEM certificate file: {e}"))?;
                roots.add(cert).map_err(|e| anyhow::anyhow!("{ENV_CA}={shown}: {e}"))?;
            }
            if roots.is_empty() {
                bail!("{ENV_CA}={shown}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
            }
            Some(roots)
        }
        None if pin.is_some() => None,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            Some(roots)
        }
    };
    let chain = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("no trusted CA certificate to verify the daemon with ({e}): {FIX}"))?,
        ),
        None => None,
    };
    let verifier = Arc::new(Verifier { chain, pin, provider: provider.clone() });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `AB:CD:...`, `abcd...` or `sha256:...`: 32 bytes.
fn parse_fingerprint(v: &str) -> Result<[u8; 32]> {
    let t = v.trim();
    let t = t.strip_prefix("sha256:").or_else(|| t.strip_prefix("SHA256:")).unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{ENV_FINGERPRINT}={v:?}: write the 64 hex digits of a SHA-256 fingerprint (AB:CD:... as `safehouse serve` prints it)");
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

fn colons(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[derive(Debug)]
struct Verifier {
    /// The chain and name check (a CA file or the system's roots).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// The leaf's SHA-256, when pinned.
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(pin) = &self.pin {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if &got != pin {
                return Err(rustls::Error::General(format!(
                    "the daemon's certificate fingerprint is {}, not the pinned {ENV_FINGERPRINT} {}",
                    colons(&got),
                    colons(pin)
                )));
            }
        }
        match &self.chain {
            Some(chain) => chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS failure, worded for the person at the CLI.
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// The handshake with the daemon at `host` over `sock`, completed before it returns, so
/// that a refused certificate is reported as such rather than as a failed request.
pub fn handshake<S: Read + Write>(
    config: &Arc<ClientConfig>,
    host: &str,
    mut sock: S,
) -> io::Result<StreamOwned<ClientConnection, S>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| io::Error::other(TlsFailure(format!("{host:?} is not a host name TLS can verify"))))?;
    let mut conn = ClientConnection::new(config.clone(), name).map_err(|e| io::Error::other(failure(&e)))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => io::Error::other(failure(tls)),
                None => e,
            });
        }
    }
    Ok(StreamOwned::new(conn, sock))
}

fn failure(e: &rustls::Error) -> TlsFailure {
    TlsFailure(match e {
        rustls::Error::InvalidMessage(_) => {
            format!("the daemon did not answer in TLS ({e}); if it serves plain HTTP, use http:// in SAFEHOUSE_URL")
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::General(_) => {
            format!("the daemon's TLS certificate is not trusted: {e}; {FIX}")
        }
        e => format!("the TLS handshake with the daemon failed: {e}"),
    })
}

/// ureq's TLS hook: rustls with [`client_config`]'s trust.
pub struct Connector(pub Arc<ClientConfig>);

impl ureq::TlsConnector for Connector {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> std::result::Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        Ok(Box::new(Stream(handshake(&self.0, dns_name, io)?)))
    }
}

struct Stream(StreamOwned<ClientConnection, Box<dyn ureq::ReadWrite>>);

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsStream")
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl ureq::ReadWrite for Stream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.sock.socket()
    }
}

/// The message of a [`TlsFailure`] somewhere in `e`'s sources.
pub fn failure_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err.downcast_ref::<TlsFailure>() {
            return Some(f.0.clone());
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(f) = io.get_ref().and_then(|i| i.downcast_ref::<TlsFailure>()) {
                return Some(f.0.clone());
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let colon = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colon).unwrap(), [0xAB; 32]);
        assert_eq!(parse_fingerprint(&format!("sha256:{}", "ab".repeat(32))).unwrap(), [0xAB; 32]);
        assert!(parse_fingerprint("AB:CD").unwrap_err().to_string().contains("64 hex digits"));
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert_eq!(colons(&[1, 0xfe]), "01:FE");
    }
}
