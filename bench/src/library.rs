//! What bench-sql and bench-flight share: the fleet of real Debian images checked in from the
//! cached debootstrap tree, the README's questions, and answers as rows of text.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use imagelake_engine::Library;
use imagelake_tests::{cache_dir, debian_tree, mkfs_ext, repo_root, run, sh};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// The point question as the SQL issue words it; README question 1 asks the broader one.
pub const SHIP_MARIADB: &str = "SELECT i.name, i.version, p.version AS package_version \
     FROM images i JOIN packages p USING (image_id) \
     WHERE p.name = 'mariadb-server' ORDER BY i.name, i.version";

pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).expect("formatter"))
            .collect();
        rows.extend((0..b.num_rows()).map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect()));
    }
    rows
}

/// The SQL of README question `n`.
pub fn readme_question(n: u32) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let block = readme.split(&format!("\n### {n}. ")).nth(1).expect("question in README");
    block.split("```sql\n").nth(1).and_then(|s| s.split("```").next()).expect("sql block").trim().to_string()
}

/// Makes the next host's tree from the previous one, in place.
fn next_host(tree: &Path, host: usize, hosts: usize) {
    let t = tree.display();
    sh(&format!(
        "cd '{t}' && echo host-{host:02} > etc/hostname && echo {host:032x} > etc/machine-id \
         && echo 'role=web host={host}' > etc/imagelake-host"
    ));
    if host == 1 {
        let deb = sh(&format!("ls {}/debs/less_*.deb", cache_dir().display())).trim().to_string();
        run(Command::new("dpkg")
            .arg(format!("--root={t}"))
            .arg("-i")
            .arg(deb)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
    }
    if host == hosts / 2 {
        // dpkg --remove would run mariadb's maintainer scripts on this machine: remove its
        // files and its status entry instead, which is what the catalog sees of a removal.
        sh(&format!(
            r#"cd '{t}' && while read -r f; do [ -d ".$f" ] || rm -f ".$f"; done < var/lib/dpkg/info/mariadb-server.list
            rm var/lib/dpkg/info/mariadb-server.*
            awk 'BEGIN {{ RS = ""; ORS = "\n\n" }} index($0, "Package: mariadb-server\n") != 1' var/lib/dpkg/status > status.new
            mv status.new var/lib/dpkg/status"#
        ));
    }
}

/// `hosts` real images checked in from the cached Debian tree, each a variation of the last.
pub async fn real_library(work: &Path, hosts: usize) -> Arc<Library> {
    let tree = work.join("tree");
    run(Command::new("cp").arg("-a").arg(debian_tree()).arg(&tree));
    let library = Arc::new(Library::open(&work.join("lib")).await.expect("library"));
    let image = work.join("root.img");
    for host in 0..hosts {
        eprintln!("checking in host-{host:02} of {hosts}");
        if host > 0 {
            next_host(&tree, host, hosts);
        }
        mkfs_ext(&tree, &image, "ext4", "1G", &[]);
        library.checkin(&image, &format!("host-{host:02}"), Default::default()).await.expect("checkin");
    }
    std::fs::remove_file(&image).expect("rm image");
    std::fs::remove_dir_all(&tree).expect("rm tree");
    library
}
