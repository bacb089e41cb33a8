//! The proto3 JSON mapping of recur's messages, from the descriptor set
//! built into the crate (prost-reflect), so files and `-o json|yaml` follow
//! the mapping exactly (both field-name spellings on input, `60s`
//! durations, RFC 3339 times, base64 bytes, enum names) without serde code
//! written per message.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use recur::pb::v1 as pb;

use super::errors::CliError;

/// The descriptors of `recur.v1`, decoded once. Decoding only fails if the
/// build produced a broken descriptor set, which every call then reports.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(recur::pb::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
});

/// The descriptor of `recur.v1.<name>`.
fn descriptor(name: &str) -> Result<MessageDescriptor, CliError> {
    let pool = POOL
        .as_ref()
        .map_err(|e| CliError::Internal(format!("the built-in descriptor set is unusable: {e}")))?;
    pool.get_message_by_name(&format!("recur.v1.{name}"))
        .ok_or_else(|| CliError::Internal(format!("recur.v1.{name} is not in the descriptor set")))
}

/// A TaskSpec from its JSON mapping. The error is the mapping's own
/// message (an unknown field, a malformed duration), for the caller to
/// prefix with where the value came from.
pub fn spec_from_value(value: serde_json::Value) -> Result<pb::TaskSpec, CliError> {
    let desc = descriptor("TaskSpec")?;
    let dynamic = DynamicMessage::deserialize(desc, value).map_err(|e| {
        let mut message = e.to_string();
        if message.contains("duration") {
            // The mapping's durations are not the flags' (`1m30s`).
            message.push_str(" (durations in the JSON mapping are seconds with an s suffix, like \"90s\" or \"0.5s\")");
        }
        CliError::Usage(message)
    })?;
    pb::TaskSpec::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| CliError::Internal(format!("TaskSpec did not round-trip: {e}")))
}

/// A message of `recur.v1` ready to serialize in its JSON mapping, with
/// proto field names (`task_id`, as task files spell them), defaults left
/// out, and fields in the proto's order (a `serde_json::Value` would sort
/// them by name).
pub struct Reflected(DynamicMessage);

impl serde::Serialize for Reflected {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let options = SerializeOptions::new().use_proto_field_name(true);
        self.0.serialize_with_options(serializer, &options)
    }
}

/// `message`, a `recur.v1.<name>`, for serializing.
pub fn reflect<M: Message>(name: &str, message: &M) -> Result<Reflected, CliError> {
    let mut dynamic = DynamicMessage::new(descriptor(name)?);
    dynamic
        .merge(message.encode_to_vec().as_slice())
        .map_err(|e| CliError::Internal(format!("{name} did not decode: {e}")))?;
    Ok(Reflected(dynamic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_spellings_and_the_wire_forms_are_read() {
        let spec = spec_from_value(json!({
            "schedule": {"every": "60s", "timeZone": "UTC"},
            "action": {"http": {"url": "http://x/", "secret_headers": {"a": "B"}}},
            "overlap": "OVERLAP_POLICY_ALLOW",
        }));
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(spec.overlap, pb::OverlapPolicy::Allow as i32);
        let schedule = spec.schedule.unwrap_or_default();
        assert_eq!(schedule.time_zone, "UTC");
        assert!(spec_from_value(json!({"schedul": {}})).is_err());
        assert!(spec_from_value(json!({"schedule": {"every": "soon"}})).is_err());
    }
}
