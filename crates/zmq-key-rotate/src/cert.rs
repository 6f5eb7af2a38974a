//! CURVE certificates in the ZPL "zcert" text format.
//!
//! CZMQ's `zcert` and pyzmq's `zmq.auth` both read and write this format: a
//! `metadata` section of `name = "value"` lines and a `curve` section holding
//! `public-key` and, in the `_secret` file only, `secret-key`, each in Z85.
//! The reader accepts what both implementations write (quoted or bare values,
//! comments, blank lines, CRLF) and refuses anything else with the line number.
//! The writer never puts a secret key into a public certificate.

use crate::z85::{CurveKey, Z85Error};

/// A certificate as read from or written to a zcert file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub public: CurveKey,
    pub secret: Option<CurveKey>,
    /// `metadata` entries in file order.
    pub metadata: Vec<(String, String)>,
}

/// Why a certificate text was refused; `line` is 1-based.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("line {line}: indentation must be a multiple of 4 spaces (ZPL)")]
    Indent { line: usize },
    #[error("line {line}: tab characters are not allowed in ZPL indentation")]
    Tab { line: usize },
    #[error("line {line}: indented deeper than its parent section")]
    Orphan { line: usize },
    #[error("line {line}: malformed name or value: {text:?}")]
    Syntax { line: usize, text: String },
    #[error("line {line}: {key} is not a valid CURVE key: {source}")]
    Key {
        line: usize,
        key: &'static str,
        source: Z85Error,
    },
    #[error("line {line}: {key} appears twice")]
    Duplicate { line: usize, key: String },
    #[error("no curve/public-key in the certificate")]
    MissingPublic,
    #[error(
        "metadata {name:?} cannot be written: names are [A-Za-z0-9_-] and values have no quotes or newlines"
    )]
    BadMetadata { name: String },
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "$-_@.&+/".contains(c)
}

/// Parses a zcert file's text.
pub fn parse(text: &str) -> Result<Cert, CertError> {
    let mut stack: Vec<String> = Vec::new();
    let mut public = None;
    let mut secret = None;
    let mut metadata = Vec::new();

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let body = raw.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if body.starts_with('\t') {
            return Err(CertError::Tab { line });
        }
        let indent = raw.len() - body.len();
        if indent % 4 != 0 {
            return Err(CertError::Indent { line });
        }
        let level = indent / 4;
        if level > stack.len() {
            return Err(CertError::Orphan { line });
        }
        stack.truncate(level);

        let syntax = || CertError::Syntax {
            line,
            text: body.to_string(),
        };
        let name_end = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
        let name = &body[..name_end];
        if name.is_empty() {
            return Err(syntax());
        }
        let rest = body[name_end..].trim();
        let value = if rest.is_empty() || rest.starts_with('#') {
            None
        } else if let Some(v) = rest.strip_prefix('=') {
            Some(parse_value(v.trim()).ok_or_else(syntax)?)
        } else {
            return Err(syntax());
        };

        let path = if stack.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", stack.join("/"))
        };
        match (path.as_str(), value) {
            ("curve/public-key", Some(v)) => {
                let key = CurveKey::from_z85(&v).map_err(|source| CertError::Key {
                    line,
                    key: "public-key",
                    source,
                })?;
                if public.replace(key).is_some() {
                    return Err(CertError::Duplicate { line, key: path });
                }
            }
            ("curve/secret-key", Some(v)) => {
                let key = CurveKey::from_z85(&v).map_err(|source| CertError::Key {
                    line,
                    key: "secret-key",
                    source,
                })?;
                if secret.replace(key).is_some() {
                    return Err(CertError::Duplicate { line, key: path });
                }
            }
            (_, Some(v)) if stack.len() == 1 && stack[0] == "metadata" => {
                metadata.push((name.to_string(), v));
            }
            // Other sections and values are legal ZPL that zcert ignores too.
            (_, Some(_)) => {}
            (_, None) => stack.push(name.to_string()),
        }
    }

    Ok(Cert {
        public: public.ok_or(CertError::MissingPublic)?,
        secret,
        metadata,
    })
}

/// A ZPL value: `"quoted"`, `'quoted'` or a bare token, then an optional comment.
fn parse_value(text: &str) -> Option<String> {
    for quote in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(quote) {
            let end = inner.find(quote)?;
            let after = inner[end + 1..].trim();
            return (after.is_empty() || after.starts_with('#')).then(|| inner[..end].to_string());
        }
    }
    let token = text.split('#').next()?.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| token.to_string())
}

/// Which of the two files of a certificate to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Public,
    Secret,
}

/// Renders a certificate file. `Part::Secret` fails if the cert has no secret.
pub fn render(cert: &Cert, part: Part) -> Result<String, CertError> {
    let mut out = String::new();
    match part {
        Part::Public => {
            out.push_str("#   ZeroMQ CURVE Public Certificate\n");
            out.push_str("#   Written by zmq-key-rotate. Public: safe to copy to peers.\n");
        }
        Part::Secret => {
            out.push_str("#   ZeroMQ CURVE **Secret** Certificate\n");
            out.push_str("#   Written by zmq-key-rotate. Keep mode 0600; never copy it.\n");
        }
    }
    out.push('\n');
    out.push_str("metadata\n");
    for (name, value) in &cert.metadata {
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let value_ok = !value.contains(['"', '\n', '\r']);
        if !name_ok || !value_ok {
            return Err(CertError::BadMetadata { name: name.clone() });
        }
        out.push_str(&format!("    {name} = \"{value}\"\n"));
    }
    out.push_str("curve\n");
    out.push_str(&format!("    public-key = \"{}\"\n", cert.public.to_z85()));
    if part == Part::Secret {
        let secret = cert.secret.as_ref().ok_or(CertError::MissingPublic)?;
        out.push_str(&format!("    secret-key = \"{}\"\n", secret.to_z85()));
    }
    Ok(out)
}

impl Cert {
    /// The value of a metadata entry.
    pub fn meta(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYZMQ_STYLE: &str = concat!(
        "#   ****  Generated on 2026-12-04 by pyzmq  ****\n",
        "#   ZeroMQ CURVE **Secret** Certificate\n",
        "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n",
        "\n",
        "metadata\n",
        "    name = test-only-peer\n",
        "curve\n",
        "    public-key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n",
        "    secret-key = \"JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6\"\r\n",
    );

    #[test]
    fn reads_pyzmq_style_secret_certificate() {
        let cert = parse(PYZMQ_STYLE).unwrap();
        assert_eq!(
            cert.public.to_z85(),
            "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        );
        assert_eq!(
            cert.secret.unwrap().to_z85(),
            "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
        );
        assert_eq!(
            cert.metadata,
            vec![("name".into(), "test-only-peer".into())]
        );
    }

    #[test]
    fn round_trips_both_parts() {
        let cert = Cert {
            public: CurveKey::from_bytes([3; 32]),
            secret: Some(CurveKey::from_bytes([4; 32])),
            metadata: vec![("generation".into(), "7".into())],
        };
        let public = parse(&render(&cert, Part::Public).unwrap()).unwrap();
        assert_eq!(public.secret, None, "public file must not hold the secret");
        assert_eq!(public.public, cert.public);
        let secret = parse(&render(&cert, Part::Secret).unwrap()).unwrap();
        assert_eq!(secret, cert);
    }

    #[test]
    fn refuses_malformed_certificates_naming_the_line() {
        let key = CurveKey::from_bytes([5; 32]).to_z85();
        let cases = [
            (
                "curve\n  public-key = \"x\"\n",
                "indentation",
                "two-space indent",
            ),
            ("curve\n\tpublic-key = \"x\"\n", "tab", "tab indent"),
            ("metadata\n", "no curve/public-key", "no key"),
            (
                "curve\n    public-key = \"abc\"\n",
                "line 2: public-key",
                "short key",
            ),
            (
                "curve\n    public-key = \"abc\n",
                "malformed",
                "unterminated quote",
            ),
            ("curve\n        deep = 1\n", "deeper", "orphan"),
        ];
        for (text, want, what) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "case {what}: {err}");
        }
        let twice = format!("curve\n    public-key = \"{key}\"\n    public-key = \"{key}\"\n");
        assert!(parse(&twice).unwrap_err().to_string().contains("twice"));
    }
}
