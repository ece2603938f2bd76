//! The catalog tables: their Arrow schemas and rows. Column names are the user interface
//! (SQL sees them as they are here); ARCHITECTURE.md lists them with their meaning.

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampNanosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use std::sync::Arc;

use super::columns::{Columns, int, opt_int, opt_text, opt_time, text, time};

/// A catalog table: a name, a schema, and rows that turn into a record batch.
pub trait Table: Sized {
    const NAME: &'static str;
    fn schema() -> SchemaRef;
    /// The schema of the table's dataset: its schema, but for the tables stored in segments.
    fn stored_schema() -> SchemaRef {
        Self::schema()
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError>;
}

/// A table whose rows are read back: each column the batch holds is found by its name and
/// checked for its type; a column the scan did not read takes its default (see
/// `columns.rs`).
pub trait Decode: Table {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>>;
}

/// Every table SQL sees, in the order a checkin writes them (the `images` row last: the
/// commit point).
pub const TABLES: [&str; 9] =
    ["chunks", "partitions", "files", "packages", "extents", "provenance", "advisories", "vex", "images"];

/// Every Lance dataset of the catalog: the tables, `files` and `extents` stored in segments
/// (see `segments.rs`), and `segments`, the lists of the segments of each version.
pub const DATASETS: [&str; 10] =
    ["chunks", "partitions", "files", "packages", "extents", "segments", "provenance", "advisories", "vex", "images"];

fn i64_col(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}
fn opt_i64_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(v))
}
fn str_col<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from(v.into_iter().collect::<Vec<_>>()))
}
fn opt_str_col<'a>(v: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(v))
}
/// The type of a list of strings.
fn str_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false)))
}
/// A list of strings.
fn str_list_col<'a>(v: impl IntoIterator<Item = &'a [String]>) -> ArrayRef {
    str_lists(v.into_iter().map(Some), false)
}
/// A nullable list of strings.
fn opt_str_list_col<'a>(v: impl IntoIterator<Item = Option<&'a [String]>>) -> ArrayRef {
    str_lists(v, true)
}
fn str_lists<'a>(v: impl IntoIterator<Item = Option<&'a [String]>>, nullable: bool) -> ArrayRef {
    let (mut offsets, mut values, mut valid) = (vec![0i32], Vec::new(), Vec::new());
    for list in v {
        valid.push(list.is_some());
        values.extend(list.unwrap_or_default().iter().map(String::as_str));
        offsets.push(values.len() as i32);
    }
    let values: ArrayRef = Arc::new(StringArray::from(values));
    let nulls = nullable.then(|| arrow::buffer::NullBuffer::from(valid));
    let item = Arc::new(Field::new_list_field(DataType::Utf8, false));
    Arc::new(ListArray::new(item, OffsetBuffer::new(offsets.into()), values, nulls))
}
fn time_col(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(v).with_timezone("UTC"))
}
fn opt_time_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter(v).with_timezone("UTC"))
}
fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}
fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

/// A text column's values as an enum: the same words in SQL, in JSON and on screen.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// `images.state`: whether names and SQL see a version.
    ImageState {
        Active = "active",
        /// Hidden by `delete`, restorable until `gc`.
        Deleted = "deleted",
        /// Its rows removed by `gc`; the `images` row stays, for history.
        Purged = "purged",
        /// Made of manifests only, with no disk to check out (the SQL benchmark's fleet).
        Synthetic = "synthetic",
    }
}

impl ImageState {
    /// Deleted or purged: names and SQL no longer see the version.
    pub fn is_hidden(self) -> bool {
        matches!(self, ImageState::Deleted | ImageState::Purged)
    }
}

/// `files.kind`: what a path is (the connectors' word for it, shown in SQL as it is).
pub use imagelake_connectors::fs::FileKind;

/// One committed image version. Written last: its presence is what makes a checkin visible.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub image_id: i64,
    pub name: String,
    pub version: i64,
    pub parent_id: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub state: ImageState,
    pub source_format: String,
    pub virtual_size: i64,
    pub stored_bytes_new: i64,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub hostname: Option<String>,
    pub description: Option<String>,
}

impl Table for ImageRow {
    const NAME: &'static str = "images";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("image_id", DataType::Int64, false),
            field("name", DataType::Utf8, false),
            field("version", DataType::Int64, false),
            field("parent_id", DataType::Int64, true),
            field("created_at", time_type(), false),
            field("created_by", DataType::Utf8, false),
            field("state", DataType::Utf8, false),
            field("source_format", DataType::Utf8, false),
            field("virtual_size", DataType::Int64, false),
            field("stored_bytes_new", DataType::Int64, false),
            field("os_name", DataType::Utf8, true),
            field("os_version", DataType::Utf8, true),
            field("hostname", DataType::Utf8, true),
            field("description", DataType::Utf8, true),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                i64_col(rows.iter().map(|r| r.image_id)),
                str_col(rows.iter().map(|r| r.name.as_str())),
                i64_col(rows.iter().map(|r| r.version)),
                opt_i64_col(rows.iter().map(|r| r.parent_id)),
                time_col(rows.iter().map(|r| r.created_at)),
                str_col(rows.iter().map(|r| r.created_by.as_str())),
                str_col(rows.iter().map(|r| r.state.as_str())),
                str_col(rows.iter().map(|r| r.source_format.as_str())),
                i64_col(rows.iter().map(|r| r.virtual_size)),
                i64_col(rows.iter().map(|r| r.stored_bytes_new)),
                opt_str_col(rows.iter().map(|r| r.os_name.as_deref())),
                opt_str_col(rows.iter().map(|r| r.os_version.as_deref())),
                opt_str_col(rows.iter().map(|r| r.hostname.as_deref())),
                opt_str_col(rows.iter().map(|r| r.description.as_deref())),
            ],
        )
    }
}

impl Decode for ImageRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (image_id, name, version, parent_id) =
            (c.i64("image_id")?, c.str("name")?, c.i64("version")?, c.i64("parent_id")?);
        let (created_at, created_by, state) =
            (c.time("created_at")?, c.str("created_by")?, c.words("state", ImageState::parse)?);
        let (source_format, virtual_size, stored) =
            (c.str("source_format")?, c.i64("virtual_size")?, c.i64("stored_bytes_new")?);
        let (os_name, os_version, hostname, description) =
            (c.str("os_name")?, c.str("os_version")?, c.str("hostname")?, c.str("description")?);
        Ok((0..c.rows())
            .map(|r| ImageRow {
                image_id: int(image_id, r),
                name: text(name, r),
                version: int(version, r),
                parent_id: opt_int(parent_id, r),
                created_at: time(created_at, r),
                created_by: text(created_by, r),
                state: state.as_ref().map_or(ImageState::Active, |s| s[r]),
                source_format: text(source_format, r),
                virtual_size: int(virtual_size, r),
                stored_bytes_new: int(stored, r),
                os_name: opt_text(os_name, r),
                os_version: opt_text(os_version, r),
                hostname: opt_text(hostname, r),
                description: opt_text(description, r),
            })
            .collect())
    }
}

/// The disk manifest: one row per partition (or one for a bare filesystem).
#[derive(Debug, Clone)]
pub struct PartitionRow {
    pub image_id: i64,
    pub partition: i64,
    pub scheme: String,
    pub r#type: String,
    pub name: String,
    pub start: i64,
    pub size: i64,
    pub fs_type: Option<String>,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
    /// Why the filesystem was not indexed (it is then stored raw), if it was not.
    pub fs_error: Option<String>,
}

impl Table for PartitionRow {
    const NAME: &'static str = "partitions";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("image_id", DataType::Int64, false),
            field("partition", DataType::Int64, false),
            field("scheme", DataType::Utf8, false),
            field("type", DataType::Utf8, false),
            field("name", DataType::Utf8, false),
            field("start", DataType::Int64, false),
            field("size", DataType::Int64, false),
            field("fs_type", DataType::Utf8, true),
            field("fs_uuid", DataType::Utf8, true),
            field("fs_label", DataType::Utf8, true),
            field("fs_error", DataType::Utf8, true),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                i64_col(rows.iter().map(|r| r.image_id)),
                i64_col(rows.iter().map(|r| r.partition)),
                str_col(rows.iter().map(|r| r.scheme.as_str())),
                str_col(rows.iter().map(|r| r.r#type.as_str())),
                str_col(rows.iter().map(|r| r.name.as_str())),
                i64_col(rows.iter().map(|r| r.start)),
                i64_col(rows.iter().map(|r| r.size)),
                opt_str_col(rows.iter().map(|r| r.fs_type.as_deref())),
                opt_str_col(rows.iter().map(|r| r.fs_uuid.as_deref())),
                opt_str_col(rows.iter().map(|r| r.fs_label.as_deref())),
                opt_str_col(rows.iter().map(|r| r.fs_error.as_deref())),
            ],
        )
    }
}

impl Decode for PartitionRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (image_id, partition, scheme, r#type, name) =
            (c.i64("image_id")?, c.i64("partition")?, c.str("scheme")?, c.str("type")?, c.str("name")?);
        let (start, size, fs_type, fs_uuid, fs_label, fs_error) = (
            c.i64("start")?,
            c.i64("size")?,
            c.str("fs_type")?,
            c.str("fs_uuid")?,
            c.str("fs_label")?,
            c.str("fs_error")?,
        );
        Ok((0..c.rows())
            .map(|r| PartitionRow {
                image_id: int(image_id, r),
                partition: int(partition, r),
                scheme: text(scheme, r),
                r#type: text(r#type, r),
                name: text(name, r),
                start: int(start, r),
                size: int(size, r),
                fs_type: opt_text(fs_type, r),
                fs_uuid: opt_text(fs_uuid, r),
                fs_label: opt_text(fs_label, r),
                fs_error: opt_text(fs_error, r),
            })
            .collect())
    }
}

/// One piece of a file's physical extent map: `length` bytes of content at `file_offset`
/// lie at `disk_offset` (absolute, from the start of the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    pub file_offset: i64,
    pub disk_offset: i64,
    pub length: i64,
    /// Preallocated, never written: reads as zeros through the file.
    pub unwritten: bool,
}

/// Every `files` column a tree needs: all but the extent map (export and mount read contents
/// through the disk map instead).
pub const TREE_COLUMNS: [&str; 15] = [
    "partition",
    "path",
    "kind",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime",
    "inode",
    "nlink",
    "link_target",
    "dev_major",
    "dev_minor",
    "xattrs",
    "content_hash",
];

/// The filesystem manifest: one row per path.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub image_id: i64,
    pub partition: i64,
    pub path: String,
    pub kind: FileKind,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    pub mtime: i64,
    pub inode: i64,
    pub nlink: i64,
    pub link_target: Option<String>,
    pub dev_major: Option<i64>,
    pub dev_minor: Option<i64>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub content_hash: Option<String>,
    pub extent_map: Vec<FileExtent>,
}

fn xattr_fields() -> Fields {
    Fields::from(vec![field("name", DataType::Utf8, false), field("value", DataType::Binary, false)])
}
fn extent_fields() -> Fields {
    Fields::from(vec![
        field("file_offset", DataType::Int64, false),
        field("disk_offset", DataType::Int64, false),
        field("length", DataType::Int64, false),
        field("unwritten", DataType::Boolean, false),
    ])
}
fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(field("item", DataType::Struct(fields), false)))
}
/// A list column from per-row item counts and the flattened item columns.
fn list_col(fields: Fields, counts: impl Iterator<Item = usize>, items: Vec<ArrayRef>) -> Result<ArrayRef, ArrowError> {
    let values = StructArray::try_new(fields.clone(), items, None)?;
    let item = Arc::new(field("item", DataType::Struct(fields), false));
    Ok(Arc::new(ListArray::try_new(item, OffsetBuffer::from_lengths(counts), Arc::new(values), None)?))
}

impl Table for FileRow {
    const NAME: &'static str = "files";
    fn stored_schema() -> SchemaRef {
        super::segments::stored_schema(Self::schema())
    }
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("image_id", DataType::Int64, false),
            field("partition", DataType::Int64, false),
            field("path", DataType::Utf8, false),
            field("kind", DataType::Utf8, false),
            field("mode", DataType::Int64, false),
            field("uid", DataType::Int64, false),
            field("gid", DataType::Int64, false),
            field("size", DataType::Int64, false),
            field("mtime", time_type(), false),
            field("inode", DataType::Int64, false),
            field("nlink", DataType::Int64, false),
            field("link_target", DataType::Utf8, true),
            field("dev_major", DataType::Int64, true),
            field("dev_minor", DataType::Int64, true),
            field("xattrs", list_of(xattr_fields()), false),
            field("content_hash", DataType::Utf8, true),
            field("extent_map", list_of(extent_fields()), false),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        let xattrs = rows.iter().flat_map(|r| &r.xattrs);
        let xattrs = list_col(
            xattr_fields(),
            rows.iter().map(|r| r.xattrs.len()),
            vec![
                str_col(xattrs.clone().map(|x| x.0.as_str())),
                Arc::new(BinaryArray::from(xattrs.map(|x| x.1.as_slice()).collect::<Vec<_>>())),
            ],
        )?;
        let extents = rows.iter().flat_map(|r| &r.extent_map);
        let extent_map = list_col(
            extent_fields(),
            rows.iter().map(|r| r.extent_map.len()),
            vec![
                i64_col(extents.clone().map(|e| e.file_offset)),
                i64_col(extents.clone().map(|e| e.disk_offset)),
                i64_col(extents.clone().map(|e| e.length)),
                Arc::new(BooleanArray::from_iter(extents.map(|e| Some(e.unwritten)))),
            ],
        )?;
        RecordBatch::try_new(
            Self::schema(),
            vec![
                i64_col(rows.iter().map(|r| r.image_id)),
                i64_col(rows.iter().map(|r| r.partition)),
                str_col(rows.iter().map(|r| r.path.as_str())),
                str_col(rows.iter().map(|r| r.kind.as_str())),
                i64_col(rows.iter().map(|r| r.mode)),
                i64_col(rows.iter().map(|r| r.uid)),
                i64_col(rows.iter().map(|r| r.gid)),
                i64_col(rows.iter().map(|r| r.size)),
                time_col(rows.iter().map(|r| r.mtime)),
                i64_col(rows.iter().map(|r| r.inode)),
                i64_col(rows.iter().map(|r| r.nlink)),
                opt_str_col(rows.iter().map(|r| r.link_target.as_deref())),
                opt_i64_col(rows.iter().map(|r| r.dev_major)),
                opt_i64_col(rows.iter().map(|r| r.dev_minor)),
                xattrs,
                opt_str_col(rows.iter().map(|r| r.content_hash.as_deref())),
                extent_map,
            ],
        )
    }
}

impl Decode for FileRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (image_id, partition, path, kind) =
            (c.i64("image_id")?, c.i64("partition")?, c.str("path")?, c.words("kind", FileKind::parse)?);
        let (mode, uid, gid, size, mtime) =
            (c.i64("mode")?, c.i64("uid")?, c.i64("gid")?, c.i64("size")?, c.time("mtime")?);
        let (inode, nlink, link_target) = (c.i64("inode")?, c.i64("nlink")?, c.str("link_target")?);
        let (dev_major, dev_minor, content_hash) = (c.i64("dev_major")?, c.i64("dev_minor")?, c.str("content_hash")?);
        let (xattrs, extent_map) = (c.list("xattrs")?, c.list("extent_map")?);
        let mut rows = Vec::with_capacity(c.rows());
        for r in 0..c.rows() {
            let mut row = FileRow {
                image_id: int(image_id, r),
                partition: int(partition, r),
                path: text(path, r),
                kind: kind.as_ref().map_or(FileKind::File, |k| k[r]),
                mode: int(mode, r),
                uid: int(uid, r),
                gid: int(gid, r),
                size: int(size, r),
                mtime: time(mtime, r),
                inode: int(inode, r),
                nlink: int(nlink, r),
                link_target: opt_text(link_target, r),
                dev_major: opt_int(dev_major, r),
                dev_minor: opt_int(dev_minor, r),
                xattrs: Vec::new(),
                content_hash: opt_text(content_hash, r),
                extent_map: Vec::new(),
            };
            if let Some(list) = xattrs.filter(|l| l.is_valid(r)) {
                let items = c.items(list, "xattrs", r)?;
                let names: &StringArray = c.field(&items, "name")?;
                let values: &BinaryArray = c.field(&items, "value")?;
                row.xattrs = (0..items.len()).map(|i| (names.value(i).to_string(), values.value(i).to_vec())).collect();
            }
            if let Some(list) = extent_map.filter(|l| l.is_valid(r)) {
                let items = c.items(list, "extent_map", r)?;
                let number = |name: &str| c.field::<Int64Array>(&items, name);
                let (file_offset, disk_offset, length) =
                    (number("file_offset")?, number("disk_offset")?, number("length")?);
                let unwritten: &BooleanArray = c.field(&items, "unwritten")?;
                row.extent_map = (0..items.len())
                    .map(|i| FileExtent {
                        file_offset: file_offset.value(i),
                        disk_offset: disk_offset.value(i),
                        length: length.value(i),
                        unwritten: unwritten.value(i),
                    })
                    .collect();
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// One installed package. The columns after `status` came with library format 5: rows of
/// images checked in before hold NULL there.
#[derive(Debug, Clone)]
pub struct PackageRow {
    pub image_id: i64,
    pub manager: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub source: String,
    pub installed_size: Option<i64>,
    pub status: String,
    pub source_version: Option<String>,
    pub epoch: Option<i64>,
    pub release: Option<String>,
    pub source_rpm: Option<String>,
    pub licenses: Option<Vec<String>>,
}

impl Table for PackageRow {
    const NAME: &'static str = "packages";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("image_id", DataType::Int64, false),
            field("manager", DataType::Utf8, false),
            field("name", DataType::Utf8, false),
            field("version", DataType::Utf8, false),
            field("arch", DataType::Utf8, false),
            field("source", DataType::Utf8, false),
            field("installed_size", DataType::Int64, true),
            field("status", DataType::Utf8, false),
            field("source_version", DataType::Utf8, true),
            field("epoch", DataType::Int64, true),
            field("release", DataType::Utf8, true),
            field("source_rpm", DataType::Utf8, true),
            field("licenses", str_list_type(), true),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                i64_col(rows.iter().map(|r| r.image_id)),
                str_col(rows.iter().map(|r| r.manager.as_str())),
                str_col(rows.iter().map(|r| r.name.as_str())),
                str_col(rows.iter().map(|r| r.version.as_str())),
                str_col(rows.iter().map(|r| r.arch.as_str())),
                str_col(rows.iter().map(|r| r.source.as_str())),
                opt_i64_col(rows.iter().map(|r| r.installed_size)),
                str_col(rows.iter().map(|r| r.status.as_str())),
                opt_str_col(rows.iter().map(|r| r.source_version.as_deref())),
                opt_i64_col(rows.iter().map(|r| r.epoch)),
                opt_str_col(rows.iter().map(|r| r.release.as_deref())),
                opt_str_col(rows.iter().map(|r| r.source_rpm.as_deref())),
                opt_str_list_col(rows.iter().map(|r| r.licenses.as_deref())),
            ],
        )
    }
}

/// One security advisory (an OSV record) and one package it affects, of a distribution
/// imagelake matches (`advisories.rs`): library-wide, not any image's.
#[derive(Debug, Clone)]
pub struct AdvisoryRow {
    pub id: String,
    pub modified: i64,
    pub published: Option<i64>,
    pub withdrawn: Option<i64>,
    pub aliases: Vec<String>,
    pub summary: Option<String>,
    /// `CRITICAL`, `HIGH`, `MEDIUM`, `LOW`, `NONE` (from the CVSS vector), or the record's word.
    pub severity: Option<String>,
    pub cvss_score: Option<f64>,
    pub cvss_vector: Option<String>,
    /// As the record says (`Debian:12`), and what imagelake reads in it: the os-release `ID`
    /// and release of the systems it is about, the manager whose order its versions are in,
    /// and whether it names source packages.
    pub ecosystem: String,
    pub os: String,
    pub release: String,
    pub manager: String,
    pub by_source: bool,
    pub package: String,
    pub purl: Option<String>,
    /// The ECOSYSTEM and SEMVER ranges, as JSON: `[[{"introduced": "0"}, {"fixed": "1.2-3"}]]`.
    pub ranges: String,
    pub versions: Vec<String>,
    /// The load that wrote the row: when it ran, in nanoseconds since the epoch.
    pub load: i64,
}

impl Table for AdvisoryRow {
    const NAME: &'static str = "advisories";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("id", DataType::Utf8, false),
            field("modified", time_type(), false),
            field("published", time_type(), true),
            field("withdrawn", time_type(), true),
            field("aliases", str_list_type(), false),
            field("summary", DataType::Utf8, true),
            field("severity", DataType::Utf8, true),
            field("cvss_score", DataType::Float64, true),
            field("cvss_vector", DataType::Utf8, true),
            field("ecosystem", DataType::Utf8, false),
            field("os", DataType::Utf8, false),
            field("release", DataType::Utf8, false),
            field("manager", DataType::Utf8, false),
            field("by_source", DataType::Boolean, false),
            field("package", DataType::Utf8, false),
            field("purl", DataType::Utf8, true),
            field("ranges", DataType::Utf8, false),
            field("versions", str_list_type(), false),
            field("load", DataType::Int64, false),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                str_col(rows.iter().map(|r| r.id.as_str())),
                time_col(rows.iter().map(|r| r.modified)),
                opt_time_col(rows.iter().map(|r| r.published)),
                opt_time_col(rows.iter().map(|r| r.withdrawn)),
                str_list_col(rows.iter().map(|r| r.aliases.as_slice())),
                opt_str_col(rows.iter().map(|r| r.summary.as_deref())),
                opt_str_col(rows.iter().map(|r| r.severity.as_deref())),
                Arc::new(arrow::array::Float64Array::from_iter(rows.iter().map(|r| r.cvss_score))),
                opt_str_col(rows.iter().map(|r| r.cvss_vector.as_deref())),
                str_col(rows.iter().map(|r| r.ecosystem.as_str())),
                str_col(rows.iter().map(|r| r.os.as_str())),
                str_col(rows.iter().map(|r| r.release.as_str())),
                str_col(rows.iter().map(|r| r.manager.as_str())),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.by_source)))),
                str_col(rows.iter().map(|r| r.package.as_str())),
                opt_str_col(rows.iter().map(|r| r.purl.as_deref())),
                str_col(rows.iter().map(|r| r.ranges.as_str())),
                str_list_col(rows.iter().map(|r| r.versions.as_slice())),
                i64_col(rows.iter().map(|r| r.load)),
            ],
        )
    }
}

words! {
    /// `extents.kind`: what fills a range of a version's disk.
    ExtentKind {
        /// Zeros: stored nowhere.
        Zero = "zero",
        /// Bytes of a regular file's content (stored as that content's chunks).
        File = "file",
        /// Bytes no file owns: filesystem metadata, partition tables, free space, unknown
        /// partitions.
        Raw = "raw",
    }
}

/// The disk map: the extents of a version tile its disk exactly, in `disk_offset` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentRow {
    pub image_id: i64,
    pub disk_offset: i64,
    pub length: i64,
    pub kind: ExtentKind,
    /// The chunk holding these bytes (none for zeros) and where in it they start.
    pub chunk_hash: Option<String>,
    pub chunk_offset: i64,
    /// For file extents: the file content and the offset in it.
    pub content_hash: Option<String>,
    pub content_offset: Option<i64>,
}

impl Table for ExtentRow {
    const NAME: &'static str = "extents";
    fn stored_schema() -> SchemaRef {
        super::segments::stored_schema(Self::schema())
    }
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("image_id", DataType::Int64, false),
            field("disk_offset", DataType::Int64, false),
            field("length", DataType::Int64, false),
            field("kind", DataType::Utf8, false),
            field("chunk_hash", DataType::Utf8, true),
            field("chunk_offset", DataType::Int64, false),
            field("content_hash", DataType::Utf8, true),
            field("content_offset", DataType::Int64, true),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                i64_col(rows.iter().map(|r| r.image_id)),
                i64_col(rows.iter().map(|r| r.disk_offset)),
                i64_col(rows.iter().map(|r| r.length)),
                str_col(rows.iter().map(|r| r.kind.as_str())),
                opt_str_col(rows.iter().map(|r| r.chunk_hash.as_deref())),
                i64_col(rows.iter().map(|r| r.chunk_offset)),
                opt_str_col(rows.iter().map(|r| r.content_hash.as_deref())),
                opt_i64_col(rows.iter().map(|r| r.content_offset)),
            ],
        )
    }
}

impl Decode for ExtentRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (image_id, disk_offset, length, kind) =
            (c.i64("image_id")?, c.i64("disk_offset")?, c.i64("length")?, c.words("kind", ExtentKind::parse)?);
        let (chunk_hash, chunk_offset, content_hash, content_offset) =
            (c.str("chunk_hash")?, c.i64("chunk_offset")?, c.str("content_hash")?, c.i64("content_offset")?);
        Ok((0..c.rows())
            .map(|r| ExtentRow {
                image_id: int(image_id, r),
                disk_offset: int(disk_offset, r),
                length: int(length, r),
                kind: kind.as_ref().map_or(ExtentKind::Raw, |k| k[r]),
                chunk_hash: opt_text(chunk_hash, r),
                chunk_offset: int(chunk_offset, r),
                content_hash: opt_text(content_hash, r),
                content_offset: opt_int(content_offset, r),
            })
            .collect())
    }
}

/// The store's index: where each chunk lives (`size` bytes at `frame_offset` of the zstd
/// frame at `pack_offset` of `pack`, `frame_size` bytes there), and its share of the frame's
/// stored bytes.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub chunk_hash: String,
    pub size: i64,
    pub stored_size: i64,
    pub pack: String,
    pub pack_offset: i64,
    pub frame_size: i64,
    pub frame_offset: i64,
}

impl From<&crate::store::StoredChunk> for ChunkRow {
    fn from(c: &crate::store::StoredChunk) -> ChunkRow {
        ChunkRow {
            chunk_hash: crate::store::hex(&c.hash),
            size: i64::from(c.location.size),
            stored_size: i64::from(c.stored_size),
            pack: c.location.pack.clone(),
            pack_offset: c.location.offset as i64,
            frame_size: i64::from(c.location.frame_size),
            frame_offset: i64::from(c.location.frame_offset),
        }
    }
}

impl Table for ChunkRow {
    const NAME: &'static str = "chunks";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("chunk_hash", DataType::Utf8, false),
            field("size", DataType::Int64, false),
            field("stored_size", DataType::Int64, false),
            field("pack", DataType::Utf8, false),
            field("pack_offset", DataType::Int64, false),
            field("frame_size", DataType::Int64, false),
            field("frame_offset", DataType::Int64, false),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                str_col(rows.iter().map(|r| r.chunk_hash.as_str())),
                i64_col(rows.iter().map(|r| r.size)),
                i64_col(rows.iter().map(|r| r.stored_size)),
                str_col(rows.iter().map(|r| r.pack.as_str())),
                i64_col(rows.iter().map(|r| r.pack_offset)),
                i64_col(rows.iter().map(|r| r.frame_size)),
                i64_col(rows.iter().map(|r| r.frame_offset)),
            ],
        )
    }
}

impl Decode for ChunkRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (chunk_hash, size, stored_size, pack) =
            (c.str("chunk_hash")?, c.i64("size")?, c.i64("stored_size")?, c.str("pack")?);
        let (pack_offset, frame_size, frame_offset) =
            (c.i64("pack_offset")?, c.i64("frame_size")?, c.i64("frame_offset")?);
        Ok((0..c.rows())
            .map(|r| ChunkRow {
                chunk_hash: text(chunk_hash, r),
                size: int(size, r),
                stored_size: int(stored_size, r),
                pack: text(pack, r),
                pack_offset: int(pack_offset, r),
                frame_size: int(frame_size, r),
                frame_offset: int(frame_offset, r),
            })
            .collect())
    }
}

impl ChunkRow {
    /// The chunk's hash and where its bytes are, if its hash is well formed.
    pub fn location(&self) -> Option<(crate::store::ChunkHash, crate::store::ChunkLocation)> {
        let hash = crate::store::parse_hex(&self.chunk_hash)?;
        let location = crate::store::ChunkLocation {
            pack: self.pack.clone(),
            offset: self.pack_offset as u64,
            frame_size: self.frame_size as u32,
            frame_offset: self.frame_offset as u32,
            size: self.size as u32,
        };
        Some((hash, location))
    }
}

/// A VEX statement: the advisory `advisory` (its id or any alias) does not affect the images
/// `image` names (a name or glob; one version of them if `version` says), or only their
/// package `package` (binary or source name), as `actor` said at `at`. A statement is never
/// deleted: revoking it records who did and when, and `vulnerabilities` honours the statements
/// not revoked (the engine's `vex.rs`). Library-wide, as advisories are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VexRow {
    /// 16 random hex digits.
    pub id: String,
    pub advisory: String,
    pub image: String,
    pub version: Option<i64>,
    pub package: Option<String>,
    /// CycloneDX's analysis state: `not_affected` or `false_positive`.
    pub state: String,
    /// CycloneDX's justification (`code_not_reachable`, ...); required for `not_affected`.
    pub justification: Option<String>,
    pub detail: Option<String>,
    pub actor: String,
    pub at: i64,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<i64>,
}

impl Table for VexRow {
    const NAME: &'static str = "vex";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("id", DataType::Utf8, false),
            field("advisory", DataType::Utf8, false),
            field("image", DataType::Utf8, false),
            field("version", DataType::Int64, true),
            field("package", DataType::Utf8, true),
            field("state", DataType::Utf8, false),
            field("justification", DataType::Utf8, true),
            field("detail", DataType::Utf8, true),
            field("actor", DataType::Utf8, false),
            field("at", time_type(), false),
            field("revoked_by", DataType::Utf8, true),
            field("revoked_at", time_type(), true),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                str_col(rows.iter().map(|r| r.id.as_str())),
                str_col(rows.iter().map(|r| r.advisory.as_str())),
                str_col(rows.iter().map(|r| r.image.as_str())),
                opt_i64_col(rows.iter().map(|r| r.version)),
                opt_str_col(rows.iter().map(|r| r.package.as_deref())),
                str_col(rows.iter().map(|r| r.state.as_str())),
                opt_str_col(rows.iter().map(|r| r.justification.as_deref())),
                opt_str_col(rows.iter().map(|r| r.detail.as_deref())),
                str_col(rows.iter().map(|r| r.actor.as_str())),
                time_col(rows.iter().map(|r| r.at)),
                opt_str_col(rows.iter().map(|r| r.revoked_by.as_deref())),
                opt_time_col(rows.iter().map(|r| r.revoked_at)),
            ],
        )
    }
}

impl Decode for VexRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (id, advisory, image, version) = (c.str("id")?, c.str("advisory")?, c.str("image")?, c.i64("version")?);
        let (package, state, justification) = (c.str("package")?, c.str("state")?, c.str("justification")?);
        let (detail, actor, at) = (c.str("detail")?, c.str("actor")?, c.time("at")?);
        let (revoked_by, revoked_at) = (c.str("revoked_by")?, c.time("revoked_at")?);
        Ok((0..c.rows())
            .map(|r| VexRow {
                id: text(id, r),
                advisory: text(advisory, r),
                image: text(image, r),
                version: opt_int(version, r),
                package: opt_text(package, r),
                state: text(state, r),
                justification: opt_text(justification, r),
                detail: opt_text(detail, r),
                actor: text(actor, r),
                at: time(at, r),
                revoked_by: opt_text(revoked_by, r),
                revoked_at: opt_time(revoked_at, r),
            })
            .collect())
    }
}

/// What made each version: one row per operation.
#[derive(Debug, Clone)]
pub struct ProvenanceRow {
    pub image_id: i64,
    pub parent_id: Option<i64>,
    pub operation: String,
    /// The operation's arguments as a JSON object.
    pub arguments: String,
    pub actor: String,
    pub at: i64,
}

impl Table for ProvenanceRow {
    const NAME: &'static str = "provenance";
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("image_id", DataType::Int64, false),
            field("parent_id", DataType::Int64, true),
            field("operation", DataType::Utf8, false),
            field("arguments", DataType::Utf8, false),
            field("actor", DataType::Utf8, false),
            field("at", time_type(), false),
        ]))
    }
    fn batch(rows: &[Self]) -> Result<RecordBatch, ArrowError> {
        RecordBatch::try_new(
            Self::schema(),
            vec![
                i64_col(rows.iter().map(|r| r.image_id)),
                opt_i64_col(rows.iter().map(|r| r.parent_id)),
                str_col(rows.iter().map(|r| r.operation.as_str())),
                str_col(rows.iter().map(|r| r.arguments.as_str())),
                str_col(rows.iter().map(|r| r.actor.as_str())),
                time_col(rows.iter().map(|r| r.at)),
            ],
        )
    }
}

impl Decode for ProvenanceRow {
    fn decode(batch: &RecordBatch) -> crate::Result<Vec<Self>> {
        let c = Columns::new(Self::NAME, batch);
        let (image_id, parent_id, operation) = (c.i64("image_id")?, c.i64("parent_id")?, c.str("operation")?);
        let (arguments, actor, at) = (c.str("arguments")?, c.str("actor")?, c.time("at")?);
        Ok((0..c.rows())
            .map(|r| ProvenanceRow {
                image_id: int(image_id, r),
                parent_id: opt_int(parent_id, r),
                operation: text(operation, r),
                arguments: text(arguments, r),
                actor: text(actor, r),
                at: time(at, r),
            })
            .collect())
    }
}
