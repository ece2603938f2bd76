//! Files derived from others, rebuilt after an edit rather than merged: `/etc/ld.so.cache`,
//! the dynamic linker's index of the libraries a system has, made by `ldconfig`.
//!
//! The libraries of the edited filesystem are written into a scratch root (only what ldconfig
//! reads: the `ld.so.conf` files and the `*.so*` entries of the directories they and the
//! linker's trusted directories name, with the symbolic links of those paths), from the host
//! files the edit writes or else from the parent version's contents in the store, and
//! `ldconfig -r ROOT -X` (no links changed) writes the new cache there. As root it runs
//! directly; otherwise in a user namespace (`unshare --user --map-root-user`), where its
//! chroot is allowed.

use crate::catalog::ExtentRow;
use crate::catalog::FileKind;
use crate::tree::Tree;
use crate::{Error, IoContext, Library, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const LD_CACHE: &str = "/etc/ld.so.cache";

/// The directories the linker trusts without being told (Debian's multiarch layout first).
const TRUSTED: [&str; 6] =
    ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/// Where the content of each file of an edit's result is: the host file an edit writes there
/// (`sources`, by path), or else the parent version's content (by the tree's content hash).
pub(crate) struct Contents<'a> {
    pub library: &'a Library,
    pub parent: i64,
    /// The parent's disk map with contents.
    pub extents: &'a [ExtentRow],
    pub sources: &'a HashMap<String, PathBuf>,
    /// A folder of the parent's contents by hash, some perhaps written there already (a
    /// patch fetches the libraries of its target while it fetches the rest).
    pub stored: &'a Path,
}

/// The regular files a rebuild reads that are known before any configuration is read: the
/// configuration, and the libraries in the linker's trusted directories of `tree`; as
/// (content hash, size).
pub(crate) fn known_inputs(tree: &Tree) -> Vec<(String, u64)> {
    let dirs: BTreeSet<String> = TRUSTED.iter().map(|d| d.to_string()).collect();
    let (mut files, _) = libraries_in(tree, &dirs);
    files.extend(configuration(tree));
    files.iter().filter_map(|p| tree.get(p).and_then(|e| Some((e.content_hash.clone()?, e.size)))).collect()
}

/// `/etc/ld.so.conf` and the `.conf` files of `/etc/ld.so.conf.d`, as far as `tree` has them.
fn configuration(tree: &Tree) -> Vec<String> {
    let mut conf: Vec<String> = vec!["/etc/ld.so.conf".into()];
    conf.extend(tree.keys().filter(|p| p.starts_with("/etc/ld.so.conf.d/") && p.ends_with(".conf")).cloned());
    conf.retain(|p| tree.get(p).is_some_and(|e| e.kind == FileKind::File));
    conf
}

/// The `*.so*` entries directly in `dirs` of `tree` (through links): regular files and links.
fn libraries_in(tree: &Tree, dirs: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let (mut files, mut links) = (Vec::new(), Vec::new());
    for dir in dirs {
        let Some(real) = resolve(tree, dir) else { continue };
        let prefix = if real == "/" { "/".to_string() } else { format!("{real}/") };
        for (path, e) in tree.range(prefix.clone()..).take_while(|(p, _)| p.starts_with(&prefix)) {
            let name = &path[prefix.len()..];
            if name.contains('/') || !name.contains(".so") || name == ".." {
                continue;
            }
            match e.kind {
                FileKind::File => files.push(path.clone()),
                FileKind::Symlink => links.push(path.clone()),
                _ => {}
            }
        }
    }
    (files, links)
}

/// Rebuilds the cache of the filesystem whose tree is `tree` into `scratch`; returns the new
/// cache file.
pub(crate) async fn rebuild_ld_cache(
    where_: &str,
    tree: &Tree,
    contents: &Contents<'_>,
    scratch: &Path,
) -> Result<PathBuf> {
    let root = scratch.join("ldroot");
    std::fs::create_dir_all(root.join("etc")).io_context(|| format!("creating {}", root.display()))?;
    // First the configuration, to learn the directories it names.
    let conf = configuration(tree);
    fetch(contents, &root, &conf, tree).await?;
    let mut dirs: BTreeSet<String> = TRUSTED.iter().map(|d| d.to_string()).collect();
    for file in &conf {
        let text = std::fs::read_to_string(root.join(file.trim_start_matches('/'))).unwrap_or_default();
        dirs.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| l.starts_with('/'))
                .map(str::to_string),
        );
    }
    // The libraries: every `*.so*` entry directly in those directories (through links).
    let (libraries, links) = libraries_in(tree, &dirs);
    for path in &links {
        let at = place(&root, path, tree)?;
        let target = tree.get(path).and_then(|e| e.link_target.clone()).unwrap_or_default();
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(&target, &at).io_context(|| format!("linking {}", at.display()))?;
    }
    // Each directory's own path, with its links, so ldconfig walks what the system does.
    for dir in &dirs {
        if resolve(tree, dir).is_some() {
            place(&root, &format!("{dir}/x"), tree)?;
        }
    }
    fetch(contents, &root, &libraries, tree).await?;

    let ldconfig = ["ldconfig", "-r", &root.to_string_lossy(), "-X"];
    // SAFETY: geteuid has no preconditions.
    let out = if unsafe { libc::geteuid() } == 0 {
        Command::new(ldconfig[0]).args(&ldconfig[1..]).output()
    } else {
        Command::new("unshare").args(["--user", "--map-root-user"]).args(ldconfig).output()
    }
    .io_context(|| "running ldconfig (libc-bin) to rebuild /etc/ld.so.cache".into())?;
    let cache = root.join("etc/ld.so.cache");
    if !out.status.success() || !cache.is_file() {
        return Err(Error::Image {
            image: where_.to_string(),
            message: format!(
                "ldconfig could not rebuild /etc/ld.so.cache: {}; nothing was committed",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(cache)
}

/// `path` with every link in it followed, if all of it exists.
fn resolve(tree: &Tree, path: &str) -> Option<String> {
    let real = crate::tree::follow_links(tree, path, true);
    tree.contains_key(&real).then_some(real)
}

/// Makes the parents of `path` under `root` as the tree has them (directories, or the links
/// the tree has there); returns where `path` goes.
fn place(root: &Path, path: &str, tree: &Tree) -> Result<PathBuf> {
    let mut at = root.to_path_buf();
    let mut image_path = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        image_path = format!("{image_path}/{part}");
        at = at.join(part);
        if std::fs::symlink_metadata(&at).is_ok() {
            continue;
        }
        // A link among the parents is made to point at where it resolves in the image, as a
        // path relative to the scratch root: the image's own target could lead out of it.
        match (tree.get(&image_path), resolve(tree, &image_path)) {
            (Some(e), Some(real)) if e.kind == FileKind::Symlink && real != image_path => {
                let depth = image_path.matches('/').count() - 1;
                let target = format!("{}{}", "../".repeat(depth), real.trim_start_matches('/'));
                std::os::unix::fs::symlink(&target, &at).io_context(|| format!("linking {}", at.display()))?;
            }
            _ => std::fs::create_dir_all(&at).io_context(|| format!("creating {}", at.display()))?,
        }
    }
    Ok(at.join(parts.last().copied().unwrap_or_default()))
}

/// Writes the files `paths` of the result under `root`, where the tree has them.
async fn fetch(contents: &Contents<'_>, root: &Path, paths: &[String], tree: &Tree) -> Result<()> {
    let stored = contents.stored;
    let mut wanted = Vec::new();
    let mut links = Vec::new();
    let mut placed = std::collections::HashSet::new();
    for path in paths {
        let to = place(root, path, tree)?;
        // A file named twice (by a directory reached through a link, say) is written once.
        let real = to.parent().and_then(|p| p.canonicalize().ok()).map(|p| p.join(to.file_name().unwrap_or_default()));
        if to.symlink_metadata().is_ok() || !placed.insert(real.unwrap_or_else(|| to.clone())) {
            continue;
        }
        if let Some(source) = contents.sources.get(path) {
            std::fs::copy(source, &to).io_context(|| format!("copying {} to {}", source.display(), to.display()))?;
        } else if let Some(e) = tree.get(path)
            && let Some(hash) = &e.content_hash
        {
            if !stored.join(hash).exists() {
                wanted.push((hash.clone(), e.size));
            }
            links.push((stored.join(hash), to));
        }
    }
    wanted.sort();
    wanted.dedup();
    contents.library.materialize(contents.parent, Some(contents.extents), &wanted, stored).await?;
    for (from, to) in links {
        std::fs::hard_link(&from, &to).io_context(|| format!("linking {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}
