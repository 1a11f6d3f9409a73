"""Points a copy of a2 0.10.0 at a chosen APNs endpoint and CA.

a2 hard-codes api.push.apple.com and trusts only the webpki roots. The benchmark needs
it to reach the local stand-in, so two spots change, both driven by environment
variables read once per client:
- `Endpoint`'s host becomes `A2_ENDPOINT_HOST` (host:port) when set;
- the default connector also trusts the PEM certificates in `A2_EXTRA_CA_FILE`, and
  sets `TCP_NODELAY` when `A2_TCP_NODELAY` is set (a2 as shipped leaves Nagle on).
The provider token's base64 alphabet changes too (see the end of this file). The HTTP
client, its pool, TCP settings (Nagle left on, as a2 ships) and payload code stay
exactly as published.
"""
import sys
path = sys.argv[1]
src = open(path).read()

old_display = '''        write!(f, "{}", host)'''
new_display = '''        match std::env::var("A2_ENDPOINT_HOST") {
            Ok(custom) => write!(f, "{}", custom),
            Err(_) => write!(f, "{}", host),
        }'''
assert old_display in src
src = src.replace(old_display, new_display)

old_connector = '''fn default_connector() -> HyperConnector {
    HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_only()'''
new_connector = '''fn default_connector() -> HyperConnector {
    if let Ok(ca_file) = std::env::var("A2_EXTRA_CA_FILE") {
        let pem = std::fs::read(&ca_file).expect("A2_EXTRA_CA_FILE");
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.expect("PEM certificate")).expect("root certificate");
        }
        let config = rustls::client::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http2();
        // A2_TCP_NODELAY=1: the one TCP setting a2 leaves at the kernel's default.
        if std::env::var("A2_TCP_NODELAY").is_ok() {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http.enforce_http(false);
            return builder.wrap_connector(http);
        }
        return builder.build();
    }
    HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_only()'''
assert old_connector in src
src = src.replace(old_connector, new_connector)
open(path, 'w').write(src)

# a2 encodes the provider token's three parts in standard base64 with padding. Apple
# accepts that in practice; the stand-in checks for the base64url-without-padding
# that RFC 7515 (JWS) prescribes, and would answer InvalidProviderToken. Only the
# alphabet of the (cached, once-per-55-minutes) token changes: no effect on speed.
signer = path.replace('client.rs', 'signer.rs')
s = open(signer).read()
count = s.count('BASE64_STANDARD.encode(')
assert count == 3, count
s = s.replace('BASE64_STANDARD.encode(', 'base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(')
open(signer, 'w').write(s)
