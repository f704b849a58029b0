//! The seed protocol's messages: a service's [`Registration`] and the [`Patch`] the registry
//! sends to tell a service which providers appeared and disappeared.
//!
//! Decoding follows Go's `encoding/json`, because Go services produce these bodies: object keys
//! match field names case-insensitively (a later key overwrites an earlier one), unknown keys
//! are ignored, and `null` stands for an empty list or an empty string. Encoding always writes
//! Go's exact field names and `[]` (never `null`) for lists.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::check::Check;
use crate::go_json::{key_matches, nullable};

/// What a service tells the registry about itself: `POST /services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Registration {
    /// The logical service name dependents ask for, e.g. `GradingService`.
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    /// The instance's base URL; it identifies the instance.
    #[serde(rename = "ServiceURL")]
    pub service_url: String,
    /// Names of the services this instance needs; it is sent their providers.
    #[serde(rename = "RequiredServices")]
    pub required_services: Vec<String>,
    /// Where the registry POSTs [`Patch`]es about required services.
    #[serde(rename = "ServiceUpdateURL")]
    pub service_update_url: String,
    /// Where the registry probes the instance's health.
    #[serde(rename = "HeartbeatURL")]
    pub heartbeat_url: String,
}

/// The body of `POST /v1/instances`: a [`Registration`] (same fields, same decoding) plus
/// optional `Metadata` labels and an optional [`Check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct InstanceRegistration {
    /// What a seed registration carries.
    #[serde(flatten)]
    pub registration: Registration,
    /// Free-form string labels (version, zone, ...), shown in listings.
    #[serde(rename = "Metadata")]
    pub metadata: BTreeMap<String, String>,
    /// How the registry checks the instance; absent, an HTTP check with the registry's defaults.
    #[serde(rename = "Check", skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
    /// Where the registry POSTs each configuration release the instance is to run, for a
    /// service that holds no configuration stream (absent: none is sent).
    #[serde(rename = "ConfigUpdateURL", skip_serializing_if = "Option::is_none")]
    pub config_update_url: Option<String>,
}

impl<'de> Deserialize<'de> for InstanceRegistration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor { metadata: true })
    }
}

/// One provider in a [`Patch`]: an instance `URL` of service `Name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatchEntry {
    /// The service the instance provides.
    #[serde(rename = "Name")]
    pub name: String,
    /// The instance's ServiceURL.
    #[serde(rename = "URL")]
    pub url: String,
}

/// A change to the providers a service holds: the registry POSTs it to `ServiceUpdateURL`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Patch {
    /// Providers the receiver should add.
    #[serde(rename = "Added")]
    pub added: Vec<PatchEntry>,
    /// Providers the receiver should forget.
    #[serde(rename = "Removed")]
    pub removed: Vec<PatchEntry>,
}

impl Patch {
    /// True when the patch changes nothing for its receiver.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl<'de> Deserialize<'de> for Registration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = deserializer.deserialize_map(FieldsVisitor { metadata: false })?;
        Ok(fields.registration)
    }
}

/// Reads a Registration's fields the way Go does, and `Metadata` and `Check` too when asked to
/// (for `/v1/instances`); a seed Registration ignores them like any unknown key.
struct FieldsVisitor {
    metadata: bool,
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = InstanceRegistration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Registration object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InstanceRegistration, A::Error> {
        let mut fields = InstanceRegistration::default();
        let reg = &mut fields.registration;
        while let Some(key) = map.next_key::<String>()? {
            if key_matches(&key, "ServiceName") {
                reg.service_name = nullable(&mut map)?;
            } else if key_matches(&key, "ServiceURL") {
                reg.service_url = nullable(&mut map)?;
            } else if key_matches(&key, "RequiredServices") {
                reg.required_services = nullable(&mut map)?;
            } else if key_matches(&key, "ServiceUpdateURL") {
                reg.service_update_url = nullable(&mut map)?;
            } else if key_matches(&key, "HeartbeatURL") {
                reg.heartbeat_url = nullable(&mut map)?;
            } else if self.metadata && key_matches(&key, "Metadata") {
                fields.metadata = nullable(&mut map)
                    .map_err(|e: A::Error| de::Error::custom(format!("Metadata must be an object of strings: {e}")))?;
            } else if self.metadata && key_matches(&key, "Check") {
                fields.check = map.next_value()?;
            } else if self.metadata && key_matches(&key, "ConfigUpdateURL") {
                fields.config_update_url = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

impl<'de> Deserialize<'de> for Patch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PatchVisitor;

        impl<'de> Visitor<'de> for PatchVisitor {
            type Value = Patch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Patch object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Patch, A::Error> {
                let mut patch = Patch::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key_matches(&key, "Added") {
                        patch.added = nullable(&mut map)?;
                    } else if key_matches(&key, "Removed") {
                        patch.removed = nullable(&mut map)?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(patch)
            }
        }

        deserializer.deserialize_map(PatchVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_body_with_trailing_newline_decodes() {
        let body = "{\"ServiceName\":\"GradingService\",\"ServiceURL\":\"http://localhost:6000\",\"RequiredServices\":[\"LogService\"],\"ServiceUpdateURL\":\"http://localhost:6000/services\",\"HeartbeatURL\":\"http://localhost:6000/heartbeat\"}\n";
        let reg: Registration = serde_json::from_str(body).expect("decodes");
        assert_eq!(reg.service_name, "GradingService");
        assert_eq!(reg.required_services, vec!["LogService".to_owned()]);
        assert_eq!(reg.heartbeat_url, "http://localhost:6000/heartbeat");
    }

    #[test]
    fn keys_match_case_insensitively_and_null_lists_are_empty() {
        let body = r#"{"servicename":"A","SERVICEURL":"http://x","requiredservices":null,"serviceupdateurl":"http://x/services","heartbeaturl":"http://x/heartbeat","Extra":{"n":[1]}}"#;
        let reg: Registration = serde_json::from_str(body).expect("decodes");
        assert_eq!(reg.service_name, "A");
        assert_eq!(reg.service_url, "http://x");
        assert!(reg.required_services.is_empty());
    }

    #[test]
    fn encoding_uses_go_field_names() {
        let json = serde_json::to_string(&Patch {
            added: vec![PatchEntry {
                name: "LogService".into(),
                url: "http://localhost:4000".into(),
            }],
            removed: vec![],
        })
        .expect("encodes");
        assert_eq!(
            json,
            r#"{"Added":[{"Name":"LogService","URL":"http://localhost:4000"}],"Removed":[]}"#
        );
    }

    #[test]
    fn null_patch_lists_decode_as_empty() {
        let patch: Patch = serde_json::from_str(r#"{"Added":null,"Removed":null}"#).expect("decodes");
        assert!(patch.is_empty());
    }

    #[test]
    fn an_instance_registration_is_a_registration_plus_metadata() {
        let body = r#"{"ServiceName":"A","ServiceURL":"http://x","RequiredServices":null,"ServiceUpdateURL":"http://x/services","HeartbeatURL":"http://x/heartbeat","metadata":{"zone":"eu-1"}}"#;
        let reg: InstanceRegistration = serde_json::from_str(body).expect("decodes");
        assert_eq!(reg.registration.service_name, "A");
        assert_eq!(reg.metadata.get("zone").map(String::as_str), Some("eu-1"));
        let without: InstanceRegistration = serde_json::from_str(r#"{"ServiceName":"A"}"#).expect("decodes");
        assert!(without.metadata.is_empty());
        assert!(serde_json::from_str::<InstanceRegistration>(r#"{"Metadata":{"n":1}}"#).is_err());
    }

    #[test]
    fn an_instance_registration_may_carry_a_check_and_a_seed_one_ignores_it() {
        let body = r#"{"ServiceName":"A","check":{"Kind":"ttl","TTL":"5s"}}"#;
        let v1: InstanceRegistration = serde_json::from_str(body).expect("decodes");
        assert_eq!(v1.check, Some(Check::ttl(std::time::Duration::from_secs(5))));
        let seed: Registration = serde_json::from_str(body).expect("decodes");
        assert_eq!(seed.service_name, "A");
        let null: InstanceRegistration = serde_json::from_str(r#"{"Check":null}"#).expect("decodes");
        assert_eq!(null.check, None);
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        assert!(serde_json::from_str::<Registration>(r#"{"ServiceName":5}"#).is_err());
        assert!(serde_json::from_str::<Registration>("[]").is_err());
        assert!(serde_json::from_str::<Registration>("{bad json").is_err());
    }
}
