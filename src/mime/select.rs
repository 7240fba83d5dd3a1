//! Body-part selection (README, "The spool", as the BizTalk POP3 adapter does it)
//! and the attachment plan that follows from it.

use super::tree::Tree;
use super::Options;

/// The leaf chosen as body. `Ok(None)`: the default cascade found no part at
/// all (an empty multipart), which is not a quarantine case. `Err(reason)`:
/// the configured index or type matches nothing, so the message goes to
/// quarantine.
pub fn select(tree: &Tree, opts: &Options) -> Result<Option<usize>, String> {
    let leaves = &tree.leaves;
    let wanted = opts
        .body_part_content_type
        .as_deref()
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty());
    let index = opts.body_part_index as usize;
    let ctype = |i: usize| tree.parts[i].ctype.as_str();

    match (index, wanted) {
        (0, None) => {
            let described = leaves
                .iter()
                .copied()
                .find(|&i| tree.parts[i].described_as_body);
            Ok(described
                .or_else(|| leaves.iter().copied().find(|&i| ctype(i) == "text/xml"))
                .or_else(|| leaves.iter().copied().find(|&i| ctype(i) == "text/plain"))
                .or_else(|| {
                    leaves
                        .iter()
                        .copied()
                        .find(|&i| ctype(i).starts_with("text/"))
                })
                .or_else(|| leaves.first().copied()))
        }
        (0, Some(t)) => leaves
            .iter()
            .copied()
            .find(|&i| ctype(i) == t)
            .map(Some)
            .ok_or_else(|| format!("body part selection: no part of type {t}")),
        (n, None) => leaves.get(n - 1).copied().map(Some).ok_or_else(|| {
            format!(
                "body part selection: no part number {n} (the message has {} leaf parts)",
                leaves.len()
            )
        }),
        (n, Some(t)) => {
            let of_type: Vec<usize> = leaves.iter().copied().filter(|&i| ctype(i) == t).collect();
            of_type.get(n - 1).copied().map(Some).ok_or_else(|| {
                format!(
                    "body part selection: no part number {n} of type {t} (the message has {})",
                    of_type.len()
                )
            })
        }
    }
}

/// Leaves that become attachments, in order: every leaf except the body and
/// except the other branches of a `multipart/alternative` (they are the same
/// content in another form; consumers want one body). In an alternative that
/// does not hold the body, the first branch stands for the group. A part in
/// a dropped branch is still kept when it carries a file name or
/// `Content-Disposition: attachment` (Apple Mail nests real attachments in
/// the HTML branch).
pub fn attachments(tree: &Tree, body: Option<usize>) -> Vec<usize> {
    // The branch kept in each multipart/alternative, computed once: the
    // child on the body's path, else the first child.
    let mut on_body_path = vec![false; tree.parts.len()];
    let mut cur = body;
    while let Some(p) = cur {
        on_body_path[p] = true;
        cur = tree.parts[p].parent;
    }
    let kept: Vec<Option<usize>> = tree
        .parts
        .iter()
        .map(|p| {
            (p.ctype == "multipart/alternative").then(|| {
                p.children
                    .iter()
                    .copied()
                    .find(|&c| on_body_path[c])
                    .or_else(|| p.children.first().copied())
            })?
        })
        .collect();
    let dropped = |leaf: usize| {
        let mut child = leaf;
        while let Some(parent) = tree.parts[child].parent {
            if let Some(k) = kept[parent] {
                if k != child {
                    return true;
                }
            }
            child = parent;
        }
        false
    };
    tree.leaves
        .iter()
        .copied()
        .filter(|&leaf| Some(leaf) != body)
        .filter(|&leaf| {
            !dropped(leaf)
                || tree.parts[leaf].filename().is_some()
                || tree.parts[leaf].is_attachment_disposition()
        })
        .collect()
}
