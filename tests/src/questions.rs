//! The README's questions and the images they are asked of (`sql/tests/questions.rs` checks
//! each answer against an independent tool; the cluster's tests ask them of a cluster).
//!
//! Images: `web@1` (debootstrap bookworm + mariadb-server), `web@2` (the same tree with `less`
//! installed by dpkg, an nginx site, a setuid helper, a world-writable file, a second uid-0
//! account, a packaged file edited and one removed) and `plain@1` (a small tree with a copy of
//! libssl and an nginx site on another port).

use crate::{debian_tree, mkfs_ext, run, sh};
use imagelake_engine::Library;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The SQL of each numbered question in README.md's "Questions" section.
pub fn readme_questions() -> BTreeMap<u32, String> {
    let readme = std::fs::read_to_string(crate::repo_root().join("README.md")).unwrap();
    let section = readme.split("\n## Questions\n").nth(1).expect("README has a Questions section");
    let section = section.split("\n## ").next().unwrap();
    let mut questions = BTreeMap::new();
    for part in section.split("\n### ").skip(1) {
        let number: u32 = part.split('.').next().unwrap().trim().parse().expect("numbered question");
        let sql = part.split("```sql\n").nth(1).and_then(|s| s.split("```").next()).expect("an sql block");
        questions.insert(number, sql.trim().to_string());
    }
    questions
}

/// The source trees of the three images.
pub struct Trees {
    pub web1: PathBuf,
    pub web2: PathBuf,
    pub plain: PathBuf,
}

fn make_trees(dir: &Path) -> Trees {
    let web1 = debian_tree();
    let web2 = dir.join("web2");
    run(Command::new("cp").arg("-a").arg(&web1).arg(&web2));
    let deb = sh(&format!("ls {}/debs/less_*.deb", crate::cache_dir().display())).trim().to_string();
    let install = Command::new("dpkg")
        .arg(format!("--root={}", web2.display()))
        .arg("-i")
        .arg(&deb)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(install.status.success(), "dpkg -i: {}", String::from_utf8_lossy(&install.stderr));
    sh(&format!(
        r#"cd '{w}'
        mkdir -p etc/nginx/sites-enabled
        printf 'server {{\n    listen 80 default_server;\n    root /var/www;\n}}\n' > etc/nginx/sites-enabled/default
        printf '#!/bin/sh\nid\n' > usr/local/bin/helper && chmod 4755 usr/local/bin/helper
        mkdir -p srv && printf 'shared\n' > srv/drop.txt && chmod 0666 srv/drop.txt
        echo 'toor:x:0:0:second root:/root:/bin/sh' >> etc/passwd
        echo '# edited by hand' >> usr/share/base-files/dot.bashrc
        rm etc/motd"#,
        w = web2.display()
    ));
    let plain = dir.join("plain");
    let libssl = web1.join("usr/lib/x86_64-linux-gnu/libssl.so.3");
    sh(&format!(
        r#"mkdir -p '{p}/etc/nginx/sites-enabled' '{p}/opt/app' '{p}/tmp'
        cd '{p}'
        printf 'ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n' > etc/os-release
        printf 'server {{\n    listen 8080;\n}}\n' > etc/nginx/sites-enabled/default
        cp '{ssl}' opt/app/libssl.so.3
        printf 'scratch\n' > tmp/scratch && chmod 0666 tmp/scratch"#,
        p = plain.display(),
        ssl = libssl.display()
    ));
    Trees { web1, web2, plain }
}

/// A library under `dir` with `web@1`, `web@2` and `plain@1` checked in, and their trees.
pub async fn library(dir: &Path) -> (Arc<Library>, Trees) {
    let trees = make_trees(dir);
    let library = Arc::new(Library::open(&dir.join("lib")).await.unwrap());
    for (tree_dir, name, size) in
        [(&trees.web1, "web", "1G"), (&trees.web2, "web", "1G"), (&trees.plain, "plain", "16M")]
    {
        let img = dir.join(format!("{name}.img"));
        mkfs_ext(tree_dir, &img, "ext4", size, &[]);
        library.checkin(&img, name, Default::default()).await.unwrap();
        std::fs::remove_file(&img).unwrap();
    }
    (library, trees)
}
