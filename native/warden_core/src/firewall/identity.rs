//! Who a client is when it is not the CONNECT username: the certificate
//! identity, and the decoy checked for a name no user has.

use super::*;

/// The identity in a DER client certificate, read from `from`.
pub fn cert_identity_name(der: &[u8], from: CertField) -> Result<Vec<u8>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| "client certificate is not valid DER X.509".to_string())?;
    if from == CertField::Cn {
        let cn = cert.subject().iter_common_name().next().ok_or("client certificate has no subject CN")?;
        let s = cn.as_str().map_err(|_| "client certificate CN is not a string")?;
        return Ok(s.as_bytes().to_vec());
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "client certificate has a malformed subjectAltName")?
        .ok_or("client certificate has no subjectAltName")?;
    for name in &san.value.general_names {
        let v = match (from, name) {
            (CertField::SanDns | CertField::San, GeneralName::DNSName(s)) => s,
            (CertField::SanEmail | CertField::San, GeneralName::RFC822Name(s)) => s,
            (CertField::SanUri | CertField::San, GeneralName::URI(s)) => s,
            _ => continue,
        };
        return Ok(v.as_bytes().to_vec());
    }
    Err("client certificate has no subjectAltName of the configured kind".to_string())
}

/// Stand-ins for the hash of a name no user has (`unknown_user = deny`):
/// one decoy per cost class of the known users' hashes (same scheme and
/// cost, random salt and value). A name picks its class by a keyed hash,
/// weighted like the known users, so an unknown name takes the path and
/// the time of a known user of that class, the same class every time.
pub(super) struct Decoys {
    /// (known users of this class and all classes before it, decoy)
    classes: Vec<(u64, PasswordHash)>,
    hasher: ahash::RandomState,
}

impl Decoys {
    /// `hasher` is the firewall's, kept across reloads: a name keeps its
    /// class for as long as the classes stay.
    pub(super) fn new<'a>(known: impl Iterator<Item = &'a PasswordHash>, hasher: ahash::RandomState) -> Decoys {
        let mut counts: Vec<(String, u64, &PasswordHash)> = Vec::new();
        for h in known {
            let class = h.cost_class();
            match counts.iter_mut().find(|(c, _, _)| *c == class) {
                Some(entry) => entry.1 += 1,
                None => counts.push((class, 1, h)),
            }
        }
        // Deterministic order, whatever the maps' iteration order.
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut total = 0;
        let classes = counts
            .into_iter()
            .map(|(_, n, h)| {
                total += n;
                (total, h.decoy())
            })
            .collect();
        Decoys { classes, hasher }
    }

    pub(super) fn pick(&self, name: &[u8]) -> PasswordHash {
        let Some(&(total, _)) = self.classes.last() else {
            return credentials::hash::default_decoy();
        };
        let at = self.hasher.hash_one(name) % total;
        let i = self.classes.partition_point(|(upto, _)| *upto <= at);
        self.classes[i].1.clone()
    }
}

