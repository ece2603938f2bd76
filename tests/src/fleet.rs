//! A synthetic fleet for bench-sql and the cluster's tests: N image versions made from the
//! manifests of real images (bench-sql: the five of the corpus, `bench/corpus.sh`), varied the
//! way fleets vary, written straight into the catalog and marked `state = 'synthetic'` (they
//! have no disk: checkout refuses them).
//!
//! Each host takes one of the five systems as its base (base 35%, nginx 25%, curl 15%,
//! mariadb 15%, postgresql 10%) and then:
//! - an update level (0, 1 or 2: 30/40/30%): at level k > 0 the files of one path in 50, and
//!   libssl/libcrypto, have the content of update k (hashes shared by every host at that
//!   level), and the packages of one name in 20, and openssl and libssl3, gain `+deb12u<k>`;
//! - one host in ten removes one to three packages; one in ten adds a monitoring agent
//!   (one of four releases: a package row and two files);
//! - edited configuration: `/etc/ssh/sshd_config` and nginx's configuration in one of a few
//!   variants;
//! - per-host files: `/etc/hostname` and `/etc/machine-id` of its own, and a new
//!   `/etc/imagelake-host`.

use crate::dice::Dice;
use crate::{cache_dir, repo_root, run};
use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take_record_batch};
use imagelake_engine::Library;
use imagelake_engine::catalog::{FileRow, ImageRow, PackageRow, PartitionRow, Table};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Hosts written per Lance commit: few, large fragments.
const GROUP: usize = 100;

fn hash_of(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// One of the five real images: its rows, and which of them a variation touches.
struct Base {
    image: ImageRow,
    files: Vec<FileRow>,
    packages: RecordBatch,
    partitions: RecordBatch,
    /// Rows of `files` that updates change.
    updated: Vec<usize>,
    /// Rows of configuration files with variants, and of per-host files.
    configs: Vec<usize>,
    per_host: Vec<usize>,
    /// The `/etc/hostname` row (or the first regular file), the template of added files.
    hostname: usize,
}

/// Every column of `T`'s rows of one image.
async fn scan<T: Table>(library: &Library, image_id: i64) -> RecordBatch {
    let batches = library.catalog().rows_of(T::NAME, image_id).await.expect("scan");
    concat_batches(&T::schema(), &batches).expect("concat")
}

fn strings<'a>(batch: &'a RecordBatch, column: &str) -> &'a StringArray {
    batch.column_by_name(column).expect("column").as_string::<i32>()
}

fn with_column(batch: &RecordBatch, column: &str, values: ArrayRef) -> RecordBatch {
    let i = batch.schema().index_of(column).expect("column");
    let mut columns = batch.columns().to_vec();
    columns[i] = values;
    RecordBatch::try_new(batch.schema(), columns).expect("batch")
}

impl Base {
    async fn load(library: &Library, image: ImageRow) -> Base {
        let columns: Vec<String> = FileRow::schema().fields().iter().map(|f| f.name().clone()).collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut files = library.catalog().files(image.image_id, None, &columns).await.expect("files");
        // In the order a version's rows are cut in, so that each host's sort finds them sorted.
        files.sort_by(|a, b| (a.partition, &a.path).cmp(&(b.partition, &b.path)));
        let packages = scan::<PackageRow>(library, image.image_id).await;
        let partitions = scan::<PartitionRow>(library, image.image_id).await;
        let first_file = files.iter().position(|f| f.content_hash.is_some()).expect("a regular file");
        let mut base = Base {
            image,
            files: files.clone(),
            packages,
            partitions,
            updated: Vec::new(),
            configs: Vec::new(),
            per_host: Vec::new(),
            hostname: first_file,
        };
        for (r, file) in files.iter().enumerate() {
            if file.content_hash.is_none() {
                continue;
            }
            let path = file.path.as_str();
            let bucket = blake3::hash(path.as_bytes()).as_bytes()[0] as usize;
            if bucket.is_multiple_of(50) || path.contains("libssl.so") || path.contains("libcrypto.so") {
                base.updated.push(r);
            }
            if path == "/etc/ssh/sshd_config" || path.starts_with("/etc/nginx/") && path.ends_with(".conf") {
                base.configs.push(r);
            }
            if path == "/etc/hostname" || path == "/etc/machine-id" {
                base.per_host.push(r);
            }
            if path == "/etc/hostname" {
                base.hostname = r;
            }
        }
        base
    }
}

/// Writes `hosts` synthetic image versions, ids from `first_id`, named `host-00000`...
pub async fn generate(library: &Library, bases: &[ImageRow], hosts: usize, first_id: i64) {
    let mut loaded = Vec::new();
    for b in bases {
        loaded.push(Base::load(library, b.clone()).await);
    }
    let weights = [35, 25, 15, 15, 10];
    let mut dice = Dice(0x1357_9bdf_2468_ace0);
    let (mut files, mut packages, mut partitions, mut images) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for host in 0..hosts {
        let id = first_id + host as i64;
        let pick = dice.percent();
        let which = weights.iter().scan(0, |sum, w| {
            *sum += w;
            Some(*sum)
        });
        let b = which.take_while(|&edge| edge <= pick).count().min(loaded.len() - 1);
        let base = &loaded[b];
        let level = match dice.percent() {
            0..30 => 0,
            30..70 => 1,
            _ => 2,
        };
        let host_name = format!("host-{host:05}");

        // Files: the base's rows, some contents replaced, a few rows added.
        let mut host_files = base.files.clone();
        let hash = |r: usize| base.files[r].content_hash.clone().unwrap_or_default();
        if level > 0 {
            for &r in &base.updated {
                host_files[r].content_hash = Some(hash_of(&format!("{}/update {level}", hash(r))));
            }
        }
        for &r in &base.configs {
            host_files[r].content_hash = Some(hash_of(&format!("{}/variant {}", hash(r), dice.below(4))));
        }
        for &r in &base.per_host {
            host_files[r].content_hash = Some(hash_of(&format!("{}/{host_name}", hash(r))));
        }
        let mut added: Vec<(String, String)> = vec![("/etc/imagelake-host".into(), hash_of(&host_name))];
        let agent = (dice.percent() < 10).then(|| dice.below(4));
        if let Some(release) = agent {
            for file in ["/opt/agent/bin/agent", "/opt/agent/etc/agent.conf"] {
                added.push((file.into(), hash_of(&format!("agent 1.{release} {file}"))));
            }
        }
        for (path, content) in added {
            let template = &base.files[base.hostname];
            host_files.push(FileRow { path, content_hash: Some(content), ..template.clone() });
        }
        host_files.iter_mut().for_each(|f| f.image_id = id);
        files.push((id, host_files));

        // Packages: versions of updated ones, a few removed, the agent added.
        let names = strings(&base.packages, "name");
        let versions = strings(&base.packages, "version");
        let new_versions: Vec<String> = (0..base.packages.num_rows())
            .map(|r| {
                let name = names.value(r);
                let bucket = blake3::hash(name.as_bytes()).as_bytes()[0] as usize;
                let updated = bucket.is_multiple_of(20) || name == "openssl" || name == "libssl3";
                if level > 0 && updated {
                    format!("{}+deb12u{level}", versions.value(r))
                } else {
                    versions.value(r).to_string()
                }
            })
            .collect();
        let mut host_packages = with_column(&base.packages, "version", Arc::new(StringArray::from(new_versions)));
        if dice.percent() < 10 {
            let drop: Vec<usize> =
                (0..1 + dice.below(3)).map(|_| dice.below(host_packages.num_rows() as u64) as usize).collect();
            let keep: arrow::array::BooleanArray =
                (0..host_packages.num_rows()).map(|r| Some(!drop.contains(&r))).collect();
            host_packages = filter_record_batch(&host_packages, &keep).expect("filter");
        }
        if let Some(release) = agent {
            let row = take_record_batch(&base.packages, &UInt32Array::from(vec![0u32])).expect("take");
            let row = with_column(&row, "name", Arc::new(StringArray::from(vec!["imagelake-agent"])));
            let row = with_column(&row, "version", Arc::new(StringArray::from(vec![format!("1.{release}")])));
            host_packages = concat_batches(&host_packages.schema(), [&host_packages, &row]).expect("concat");
        }
        packages.push(with_column(
            &host_packages,
            "image_id",
            Arc::new(Int64Array::from_value(id, host_packages.num_rows())),
        ));
        partitions.push(with_column(
            &base.partitions,
            "image_id",
            Arc::new(Int64Array::from_value(id, base.partitions.num_rows())),
        ));
        images.push(ImageRow {
            image_id: id,
            name: host_name,
            version: 1,
            parent_id: None,
            state: imagelake_engine::catalog::ImageState::Synthetic,
            source_format: "synthetic".into(),
            stored_bytes_new: 0,
            hostname: None,
            ..base.image.clone()
        });

        if images.len() == GROUP || host + 1 == hosts {
            eprintln!("fleet: {} of {hosts} hosts", host + 1);
            let catalog = library.catalog();
            catalog.append_manifests(std::mem::take(&mut files)).await.expect("append files");
            for (table, batches) in [("packages", &mut packages), ("partitions", &mut partitions)] {
                catalog.append_batches(table, std::mem::take(batches)).await.expect("append");
            }
            catalog.append(&std::mem::take(&mut images)).await.expect("append images");
        }
    }
}

/// The five real corpus images, then `hosts` synthetic versions made from their manifests.
pub async fn corpus_library(work: &Path, hosts: usize) -> Arc<Library> {
    let corpus = std::path::PathBuf::from(
        run(Command::new("bash").arg(repo_root().join("bench/corpus.sh")).arg(cache_dir())).trim(),
    );
    let library = Arc::new(Library::open(&work.join("lib")).await.expect("library"));
    for name in ["base", "nginx", "curl", "mariadb", "postgresql"] {
        eprintln!("checking in {name}");
        let image = corpus.join(format!("{name}.qcow2"));
        library.checkin(&image, name, Default::default()).await.expect("checkin");
    }
    let mut real = library.images().await.expect("images");
    real.sort_by_key(|i| i.image_id);
    let started = Instant::now();
    let first = real.iter().map(|i| i.image_id).max().unwrap_or(0) + 1;
    generate(&library, &real, hosts, first).await;
    eprintln!("fleet written in {:.1} s; indexing", started.elapsed().as_secs_f64());
    let started = Instant::now();
    library.catalog().maintain(imagelake_engine::catalog::Maintenance::FULL).await.expect("indexes");
    library.prune().await.expect("prune");
    eprintln!("indexed in {:.1} s", started.elapsed().as_secs_f64());
    library
}
