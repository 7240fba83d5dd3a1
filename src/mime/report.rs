//! `multipart/report` (RFC 6522): delivery status notifications (RFC 3464,
//! RFC 6533 for the "global" variants) and message disposition
//! notifications (RFC 8098).

use serde_json::{json, Map, Value};

use super::header::{self, HeaderBlock};
use super::source::Source;
use super::transfer;
use super::tree::Tree;
use super::MAX_REPORT_BYTES;

/// Builds the `report` object for a `multipart/report` root. Problems are
/// appended to `problems`.
pub fn parse(tree: &Tree, src: &dyn Source, problems: &mut Vec<String>) -> Value {
    let root = tree.root();
    let declared = root
        .ctype_params
        .plain("report-type")
        .map(|t| t.trim().to_ascii_lowercase());
    let children: Vec<usize> = root.children.clone();

    let status = children.iter().copied().find(|&c| {
        matches!(
            tree.parts[c].ctype.as_str(),
            "message/delivery-status"
                | "message/global-delivery-status"
                | "message/disposition-notification"
                | "message/global-disposition-notification"
        )
    });
    let original_id = children
        .iter()
        .copied()
        .find(|&c| {
            matches!(
                tree.parts[c].ctype.as_str(),
                "message/rfc822"
                    | "text/rfc822-headers"
                    | "message/global"
                    | "message/global-headers"
            )
        })
        .and_then(|c| {
            let part = &tree.parts[c];
            let bytes = transfer::decode_prefix(&part.cte, src, part.body, MAX_REPORT_BYTES);
            let (head, _) = header::split(&bytes);
            header::parse_block(head)
                .get("message-id")
                .map(header::report_text)
                .filter(|s| !s.is_empty())
        });

    let Some(status) = status else {
        problems.push(format!(
            "multipart/report (report-type {}) has no machine-readable status part",
            declared.as_deref().unwrap_or("missing")
        ));
        let mut m = Map::new();
        m.insert("type".into(), declared.map_or(Value::Null, Value::String));
        m.insert("original_message_id".into(), opt(original_id));
        return Value::Object(m);
    };
    let part = &tree.parts[status];
    let bytes = transfer::decode_prefix(&part.cte, src, part.body, MAX_REPORT_BYTES);
    let blocks = blocks(&bytes);
    let ty = part
        .ctype
        .strip_prefix("message/")
        .unwrap_or("delivery-status")
        .to_string();

    if ty.ends_with("disposition-notification") {
        let fields = blocks
            .first()
            .map(|b| header::parse_block(b))
            .unwrap_or_default();
        let get = |n: &str| opt(fields.get(n).map(header::report_text));
        let own_id = fields.get("original-message-id").map(header::report_text);
        let disposition = fields.get("disposition").map(header::report_text);
        let (dtype, modifiers) = disposition
            .as_deref()
            .map(disposition_parts)
            .unwrap_or_default();
        json!({
            "type": ty,
            "reporting_ua": get("reporting-ua"),
            "final_recipient": get("final-recipient"),
            "original_recipient": get("original-recipient"),
            "original_message_id": opt(own_id.or(original_id)),
            "disposition": opt(disposition),
            "disposition_type": opt(dtype),
            "disposition_modifiers": modifiers,
            "error": get("error"),
        })
    } else {
        let mut parsed = blocks.iter().map(|b| header::parse_block(b));
        let msg: HeaderBlock<'_> = parsed.next().unwrap_or_default();
        let recipients: Vec<Value> = parsed
            .filter(|b| !b.fields.is_empty())
            .map(|b| {
                let get = |n: &str| opt(b.get(n).map(header::report_text));
                json!({
                    "final_recipient": get("final-recipient"),
                    "original_recipient": get("original-recipient"),
                    "action": opt(b.get("action").map(|v| header::report_text(v).to_ascii_lowercase())),
                    "status": get("status"),
                    "diagnostic_code": get("diagnostic-code"),
                    "remote_mta": get("remote-mta"),
                })
            })
            .collect();
        if recipients.is_empty() {
            problems.push(format!("{}: no per-recipient fields", part.label()));
        }
        let get = |n: &str| opt(msg.get(n).map(header::report_text));
        json!({
            "type": ty,
            "reporting_mta": get("reporting-mta"),
            "arrival_date": get("arrival-date"),
            "original_envelope_id": get("original-envelope-id"),
            "recipients": recipients,
            "original_message_id": opt(original_id),
        })
    }
}

/// The disposition type (`processed`, `displayed`, `deleted`,
/// `dispatched`) and modifiers (`error`) of a Disposition field (RFC 8098
/// section 3.2.6: `mode; type[/modifier, ...]`), lowercased.
fn disposition_parts(v: &str) -> (Option<String>, Vec<String>) {
    let Some((_, rest)) = v.split_once(';') else {
        return (None, Vec::new());
    };
    let rest = header::strip_comment(rest).to_ascii_lowercase();
    let (ty, mods) = rest.split_once('/').unwrap_or((&rest, ""));
    let modifiers = mods
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let ty = ty.trim();
    ((!ty.is_empty()).then(|| ty.to_string()), modifiers)
}

fn opt(v: Option<String>) -> Value {
    v.filter(|s| !s.is_empty())
        .map_or(Value::Null, Value::String)
}

/// Splits a status body into its blank-line separated field groups.
fn blocks(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        // Skip blank lines between groups.
        while let Some(r) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            rest = r;
        }
        if rest.is_empty() {
            break;
        }
        let (head, body) = header::split_at_blank_line(rest);
        out.push(head);
        if body.len() == rest.len() {
            break;
        }
        rest = body;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::disposition_parts;

    #[test]
    fn disposition_fields() {
        let p = |v| disposition_parts(v);
        assert_eq!(
            p("automatic-action/MDN-sent-automatically; processed"),
            (Some("processed".into()), vec![])
        );
        assert_eq!(
            p("automatic-action/MDN-sent-automatically; Processed / Error, warning"),
            (
                Some("processed".into()),
                vec!["error".into(), "warning".into()]
            )
        );
        assert_eq!(
            p("manual-action/MDN-sent-manually;displayed (read)"),
            (Some("displayed".into()), vec![])
        );
        assert_eq!(p("nonsense"), (None, vec![]));
        assert_eq!(p("a/b;"), (None, vec![]));
    }
}
