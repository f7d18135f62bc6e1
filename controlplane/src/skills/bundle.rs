//! A skill's uploaded files, checked as Anthropic checks them: every file in one top-level
//! directory, `SKILL.md` at its root with YAML front matter naming the skill (`name`,
//! kebab-case, at most 64 characters) and saying what it does (`description`, at most 1,024
//! characters). The files come one by one (their paths as the multipart file names) or as
//! one zip archive. A bundle is stored, downloaded and uploaded to providers as a zip.

use std::io::{Cursor, Read, Write};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Largest bundle, all files' contents together (Anthropic's limit on one upload).
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most files in one bundle.
const MAX_FILES: usize = 1_000;

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// `<directory>/<path inside it>`.
    pub path: String,
    pub content: Vec<u8>,
}

/// A checked bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The front matter's `name`.
    pub name: String,
    pub description: String,
    /// The top-level directory every file is in.
    pub directory: String,
    pub files: Vec<File>,
}

#[derive(Deserialize)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
}

fn invalid(m: impl Into<String>) -> StoreError {
    StoreError::Invalid(m.into())
}

impl Bundle {
    /// Checks an upload: `files` as they came, or one zip archive of them.
    pub fn from_upload(files: Vec<File>) -> Result<Self, StoreError> {
        let files = match files.as_slice() {
            [] => {
                return Err(invalid(
                    "files: upload the skill's files (SKILL.md at least)",
                ))
            }
            [one] if is_zip(one) => unzip(&one.content)?,
            _ => files,
        };
        if files.len() > MAX_FILES {
            return Err(invalid(format!(
                "files: {} files; a skill has at most {MAX_FILES}",
                files.len()
            )));
        }
        let total: usize = files.iter().map(|f| f.content.len()).sum();
        if total > MAX_BYTES {
            return Err(invalid(format!(
                "files: {total} bytes; a skill's files total at most {MAX_BYTES} bytes"
            )));
        }
        let mut directory: Option<&str> = None;
        let mut seen = std::collections::HashSet::new();
        for f in &files {
            let dir = top_directory(&f.path)?;
            match directory {
                None => directory = Some(dir),
                Some(d) if d == dir => {}
                Some(d) => {
                    return Err(invalid(format!(
                        "files: `{}` is outside `{d}/`: all files must be in the same top-level directory",
                        f.path
                    )))
                }
            }
            if !seen.insert(f.path.as_str()) {
                return Err(invalid(format!("files: `{}` is uploaded twice", f.path)));
            }
        }
        let directory = directory.unwrap_or_default().to_owned();
        let skill_md = format!("{directory}/SKILL.md");
        let manifest = files.iter().find(|f| f.path == skill_md).ok_or_else(|| {
            invalid(format!(
                "files: no `{skill_md}`: a skill has SKILL.md at the root of its directory"
            ))
        })?;
        let (name, description) = front_matter(&manifest.content)?;
        Ok(Self {
            name,
            description,
            directory,
            files,
        })
    }

    /// The bundle as a zip archive (deflated, the files in upload order).
    pub fn to_zip(&self) -> Result<Vec<u8>, StoreError> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let fail = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("skill zip: {e}"));
        for f in &self.files {
            w.start_file(f.path.as_str(), options)
                .map_err(|e| fail(&e))?;
            w.write_all(&f.content).map_err(|e| fail(&e))?;
        }
        Ok(w.finish().map_err(|e| fail(&e))?.into_inner())
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    routeiq_proto::hex(&Sha256::digest(bytes))
}

fn is_zip(f: &File) -> bool {
    f.content.starts_with(b"PK\x03\x04")
        || f.path
            .rsplit('.')
            .next()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("zip"))
}

/// The files of a zip archive, directories left out, read no further than [`MAX_BYTES`]
/// in all (whatever sizes the archive claims).
pub fn unzip(bytes: &[u8]) -> Result<Vec<File>, StoreError> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| invalid(format!("files: not a readable zip archive: {e}")))?;
    let mut files = Vec::new();
    let mut budget = MAX_BYTES;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(format!("files: zip entry {i}: {e}")))?;
        if entry.is_dir() {
            continue;
        }
        let path = entry
            .name()
            .map_err(|e| invalid(format!("files: zip entry {i}: {e}")))?
            .into_owned();
        let mut content = Vec::new();
        let read = (&mut entry)
            .take(budget as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|e| invalid(format!("files: zip entry `{path}`: {e}")))?;
        if read > budget {
            return Err(invalid(format!(
                "files: the archive unpacks to more than {MAX_BYTES} bytes"
            )));
        }
        budget -= read;
        files.push(File { path, content });
    }
    Ok(files)
}

/// The directory `path` is in: its first segment, after checking the path is relative,
/// has no `.` or `..` segments and names a file inside a directory.
fn top_directory(path: &str) -> Result<&str, StoreError> {
    let bad = |why: &str| invalid(format!("files: `{path}` {why}"));
    if path.contains('\0') || path.contains('\\') {
        return Err(bad("has a NUL or a backslash"));
    }
    if path.starts_with('/') {
        return Err(bad("is absolute"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(bad("has an empty, `.` or `..` segment"));
    }
    if segments.len() < 2 {
        return Err(bad(
            "is not in a directory: name files `<skill directory>/<file>`",
        ));
    }
    Ok(segments[0])
}

/// `name` and `description` from SKILL.md's front matter.
fn front_matter(skill_md: &[u8]) -> Result<(String, String), StoreError> {
    let text = std::str::from_utf8(skill_md)
        .map_err(|_| invalid("SKILL.md: not UTF-8 text"))?
        .trim_start_matches('\u{feff}');
    let body = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or_else(|| invalid("SKILL.md: starts with YAML front matter between `---` lines"))?;
    let end = body
        .match_indices("\n---")
        .map(|(i, _)| i)
        .find(|&i| {
            let rest = &body[i + 4..];
            rest.is_empty() || rest.starts_with('\n') || rest.starts_with("\r\n")
        })
        .ok_or_else(|| invalid("SKILL.md: its front matter has no closing `---` line"))?;
    let fm: FrontMatter = serde_norway::from_str(&body[..end])
        .map_err(|e| invalid(format!("SKILL.md: front matter: {e}")))?;
    let name = fm
        .name
        .ok_or_else(|| invalid("SKILL.md: the front matter has no `name`"))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(format!(
            "SKILL.md: name `{name}` must be 1 to 64 lowercase letters, digits and hyphens"
        )));
    }
    let description = fm
        .description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid("SKILL.md: the front matter has no `description`"))?;
    if description.contains('\0') {
        return Err(invalid("SKILL.md: the description holds U+0000"));
    }
    if description.chars().count() > 1024 {
        return Err(invalid(
            "SKILL.md: the description is longer than 1,024 characters",
        ));
    }
    Ok((name, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> File {
        File {
            path: path.into(),
            content: content.as_bytes().to_vec(),
        }
    }

    const MANIFEST: &str =
        "---\nname: report-writer\ndescription: Writes reports.\n---\n\n# Reports\n";

    #[test]
    fn files_in_one_directory_with_a_manifest() {
        let b = Bundle::from_upload(vec![
            file("report-writer/SKILL.md", MANIFEST),
            file("report-writer/scripts/run.py", "print(1)"),
        ])
        .unwrap();
        assert_eq!(b.name, "report-writer");
        assert_eq!(b.description, "Writes reports.");
        assert_eq!(b.directory, "report-writer");
        // The zip round-trips, and a zip upload is unpacked.
        let zip = b.to_zip().unwrap();
        let again = Bundle::from_upload(vec![File {
            path: "bundle.zip".into(),
            content: zip,
        }])
        .unwrap();
        assert_eq!(again.files, b.files);
    }

    #[test]
    fn refusals_say_why() {
        let cases: Vec<(Vec<File>, &str)> = vec![
            (vec![], "upload the skill's files"),
            (vec![file("SKILL.md", MANIFEST)], "not in a directory"),
            (
                vec![file("a/SKILL.md", MANIFEST), file("b/x.py", "")],
                "same top-level directory",
            ),
            (vec![file("a/README.md", "x")], "no `a/SKILL.md`"),
            (vec![file("a/../SKILL.md", MANIFEST)], "`..` segment"),
            (vec![file("/a/SKILL.md", MANIFEST)], "absolute"),
            (
                vec![file("a/SKILL.md", "# no front matter")],
                "front matter",
            ),
            (
                vec![file(
                    "a/SKILL.md",
                    "---\nname: Bad Name\ndescription: d\n---\n",
                )],
                "lowercase letters",
            ),
            (
                vec![file("a/SKILL.md", "---\nname: ok\n---\n")],
                "no `description`",
            ),
            (
                vec![file("a/SKILL.md", MANIFEST), file("a/SKILL.md", MANIFEST)],
                "uploaded twice",
            ),
            (
                vec![File {
                    path: "x.zip".into(),
                    content: b"PK\x03\x04 not really".to_vec(),
                }],
                "not a readable zip",
            ),
        ];
        for (files, want) in cases {
            let e = Bundle::from_upload(files).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn oversized_uploads_are_refused() {
        let big = File {
            path: "a/blob.bin".into(),
            content: vec![0; MAX_BYTES],
        };
        let e = Bundle::from_upload(vec![file("a/SKILL.md", MANIFEST), big])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most"), "{e}");
        // A zip that unpacks past the limit is cut off while it is read.
        let b = Bundle {
            name: "a".into(),
            description: "d".into(),
            directory: "a".into(),
            files: vec![File {
                path: "a/zeros".into(),
                content: vec![0; MAX_BYTES + 1],
            }],
        };
        let e = unzip(&b.to_zip().unwrap()).unwrap_err().to_string();
        assert!(e.contains("unpacks to more than"), "{e}");
    }
}
