//! Who is calling: the bearer token against the gateway's own config file.
//!
//! Only `[auth]`, `[admin]` and the route and variant names of `[[routes]]`
//! are read (a lenient parse that ignores every other key): the
//! dashboards need no providers, and the gateway crate's full loader
//! would pull in its whole proxy stack for three tables. The meaning is
//! the gateway's: an API key (its SHA-256 in `auth.keys[].sha256`) is its
//! tenant, and the admin token hashes to `admin.token_sha256`; both are
//! compared in constant time (`flywheel_api::keys`).

use std::{fmt, path::Path};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use flywheel_api::keys::{bearer, digest, digests_equal, parse_sha256_hex};
use serde::Deserialize;

use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("gateway config: {0}")]
    Parse(String),
    #[error("gateway config: {key} is not 64 hex digits")]
    BadDigest { key: String },
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    admin: AdminFile,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    keys: Vec<KeyFile>,
}

#[derive(Debug, Deserialize)]
struct KeyFile {
    tenant: String,
    sha256: String,
    #[serde(default)]
    pin_variants: bool,
}

#[derive(Debug, Default, Deserialize)]
struct AdminFile {
    token_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RouteFile {
    name: String,
    #[serde(default)]
    variants: Vec<VariantFile>,
}

#[derive(Debug, Deserialize)]
struct VariantFile {
    name: String,
}

#[derive(Debug, Clone)]
struct Key {
    tenant: String,
    sha256: [u8; 32],
    pin_variants: bool,
}

/// A route of the gateway and its variants (the playground's menu).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteVariants {
    pub route: String,
    pub variants: Vec<String>,
}

/// The keys, the admin token's digest and the routes.
#[derive(Debug, Clone, Default)]
pub struct Access {
    admin: Option<[u8; 32]>,
    keys: Vec<Key>,
    routes: Vec<RouteVariants>,
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant {
        tenant: String,
        /// The caller's own API key: the playground calls the gateway with
        /// it, so the gateway applies that key's limits and permissions.
        key: String,
        pin_variants: bool,
    },
}

impl fmt::Debug for Caller {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("Admin"),
            Self::Tenant { tenant, .. } => write!(f, "Tenant({tenant})"),
        }
    }
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin)
    }

    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Tenant { tenant, .. } => Some(tenant),
        }
    }

    /// 403 unless admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this call needs the admin token".into(),
            ))
        }
    }

    /// The tenant filter of a read: the admin's `tenant=` as given (empty:
    /// all), a tenant's own always; a tenant naming another is a 403.
    pub fn tenant_filter(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        let requested = requested.filter(|t| !t.is_empty());
        match self {
            Self::Admin => Ok(requested.map(str::to_owned)),
            Self::Tenant { tenant, .. } => match requested {
                Some(t) if t != tenant => Err(ApiError::Forbidden(format!(
                    "this key may only read tenant {tenant:?}"
                ))),
                _ => Ok(Some(tenant.clone())),
            },
        }
    }
}

impl Access {
    pub fn load(path: &Path) -> Result<Self, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let file: File = toml::from_str(text).map_err(|e| AccessError::Parse(e.to_string()))?;
        let admin = match file.admin.token_sha256 {
            Some(h) => Some(parse_sha256_hex(&h).ok_or_else(|| AccessError::BadDigest {
                key: "admin.token_sha256".into(),
            })?),
            None => None,
        };
        let keys = file
            .auth
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                Ok(Key {
                    sha256: parse_sha256_hex(&k.sha256).ok_or_else(|| AccessError::BadDigest {
                        key: format!("auth.keys[{i}].sha256"),
                    })?,
                    tenant: k.tenant,
                    pin_variants: k.pin_variants,
                })
            })
            .collect::<Result<Vec<_>, AccessError>>()?;
        let routes = file
            .routes
            .into_iter()
            .map(|r| RouteVariants {
                route: r.name,
                variants: r.variants.into_iter().map(|v| v.name).collect(),
            })
            .collect();
        Ok(Self {
            admin,
            keys,
            routes,
        })
    }

    pub fn routes(&self) -> &[RouteVariants] {
        &self.routes
    }

    /// The caller of an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let token = authorization
            .and_then(bearer)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::MissingToken)?;
        let d = digest(token);
        if self.admin.is_some_and(|a| digests_equal(&a, &d)) {
            return Ok(Caller::Admin);
        }
        // Every key is compared, so the time taken does not say which one
        // matched.
        let mut found: Option<&Key> = None;
        for k in &self.keys {
            if digests_equal(&k.sha256, &d) && found.is_none() {
                found = Some(k);
            }
        }
        let k = found.ok_or(ApiError::UnknownToken)?;
        Ok(Caller::Tenant {
            tenant: k.tenant.clone(),
            key: token.to_owned(),
            pin_variants: k.pin_variants,
        })
    }
}

/// The `/api/` layer: authenticates the bearer token (401) and inserts the
/// [`Caller`] extension the handlers read.
pub async fn require_caller(
    State(access): State<std::sync::Arc<Access>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match access.authenticate(header) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use flywheel_api::keys::sha256_hex;

    use super::*;

    fn access() -> Access {
        Access::parse(&format!(
            r#"
[server]
listen = "127.0.0.1:8080"
[admin]
token_sha256 = "{}"
[[auth.keys]]
tenant = "a"
sha256 = "{}"
pin_variants = true
[[auth.keys]]
tenant = "b"
sha256 = "{}"
requests_per_minute = 10
[providers.p]
base_url = "http://127.0.0.1:1/v1"
[[routes]]
name = "demo"
[[routes.variants]]
name = "incumbent"
targets = [{{ provider = "p", model = "m" }}]
[[routes.variants]]
name = "slot-a"
weight = 0
targets = [{{ provider = "p", model = "m2" }}]
"#,
            sha256_hex("adm"),
            sha256_hex("ka"),
            sha256_hex("kb")
        ))
        .unwrap()
    }

    #[test]
    fn tokens_map_to_callers() {
        let a = access();
        assert_eq!(a.authenticate(Some("Bearer adm")).unwrap(), Caller::Admin);
        let ka = a.authenticate(Some("bearer ka")).unwrap();
        assert_eq!(ka.tenant(), Some("a"));
        assert!(matches!(
            ka,
            Caller::Tenant {
                pin_variants: true,
                ..
            }
        ));
        assert!(matches!(
            a.authenticate(Some("Bearer kb")).unwrap(),
            Caller::Tenant {
                pin_variants: false,
                ..
            }
        ));
        assert!(matches!(
            a.authenticate(Some("Bearer nope")),
            Err(ApiError::UnknownToken)
        ));
        assert!(matches!(a.authenticate(None), Err(ApiError::MissingToken)));
        assert!(matches!(
            a.authenticate(Some("Basic adm")),
            Err(ApiError::MissingToken)
        ));
        assert_eq!(
            a.routes(),
            &[RouteVariants {
                route: "demo".into(),
                variants: vec!["incumbent".into(), "slot-a".into()]
            }]
        );
        assert!(
            !format!("{ka:?}").contains("ka\""),
            "the key is never printed"
        );
    }

    #[test]
    fn tenants_are_held_to_their_own_rows() {
        let t = Caller::Tenant {
            tenant: "a".into(),
            key: "k".into(),
            pin_variants: false,
        };
        assert_eq!(t.tenant_filter(None).unwrap(), Some("a".into()));
        assert_eq!(t.tenant_filter(Some("")).unwrap(), Some("a".into()));
        assert_eq!(t.tenant_filter(Some("a")).unwrap(), Some("a".into()));
        assert!(matches!(
            t.tenant_filter(Some("b")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(t.require_admin().is_err());
        assert_eq!(
            Caller::Admin.tenant_filter(Some("b")).unwrap(),
            Some("b".into())
        );
        assert_eq!(Caller::Admin.tenant_filter(None).unwrap(), None);
    }

    #[test]
    fn a_bad_digest_names_its_key() {
        let e = Access::parse("[[auth.keys]]\ntenant = \"a\"\nsha256 = \"zz\"\n").unwrap_err();
        assert!(e.to_string().contains("auth.keys[0].sha256"), "{e}");
    }
}
