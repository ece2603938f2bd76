//! Survey: the disk's structure (partitions, logical volumes, filesystems), read through
//! before anything is written, so that a refused image leaves the library untouched.

use super::*;

/// Partitions and the filesystems read from them, before anything is written.
pub(super) struct Survey {
    pub(super) partitions: Vec<PartitionRow>,
    pub(super) indexed: Vec<IndexedFs>,
    pub(super) warnings: Vec<String>,
}

/// Reads the disk's structure. A bad structure refuses the image (the error says which
/// structure), or with `raw_on_error` leaves that part to be stored raw, with a warning.
pub(super) fn survey(disk: &Disk, raw_on_error: bool) -> std::result::Result<Survey, String> {
    let parts = partition::read(disk).map_err(|e| e.to_string())?;
    let mut survey = Survey { partitions: Vec::new(), indexed: Vec::new(), warnings: Vec::new() };
    let refuse_or_warn = |problem: String, warnings: &mut Vec<String>| {
        if raw_on_error {
            warnings.push(format!("{problem}; stored raw"));
            Ok(())
        } else {
            Err(format!("{problem} (--raw-on-error stores such parts as raw bytes)"))
        }
    };
    let mut volume_groups = Vec::new();
    for p in parts {
        let mut row = PartitionRow {
            image_id: 0,
            partition: i64::from(p.index),
            scheme: p.scheme.to_string(),
            r#type: p.type_id.clone(),
            name: p.name.clone(),
            start: p.start as i64,
            size: p.size as i64,
            fs_type: None,
            fs_uuid: None,
            fs_label: None,
            fs_error: None,
        };
        let end = p.start.saturating_add(p.size);
        let spans = vec![Span { offset: 0, disk_offset: p.start, len: p.size }];
        match Mapped::new(disk, spans.clone()) {
            Err(_) => {
                row.fs_error = Some(format!(
                    "partition {} spans bytes {}..{end}, past the end of the disk ({} bytes)",
                    p.index,
                    p.start,
                    disk.size()
                ))
            }
            Ok(volume) => {
                if let Some(fs) = index_volume(&volume, &mut row) {
                    survey.indexed.push(IndexedFs { partition: row.partition, spans, fs });
                } else if row.fs_type.as_deref() == Some("lvm2") {
                    match lvm::read(&volume) {
                        Ok(vg) => {
                            row.fs_label = Some(vg.name.clone());
                            volume_groups.push((p.start, vg));
                        }
                        Err(e) => row.fs_error = Some(format!("partition {}: {e}", p.index)),
                    }
                } else if row.scheme == "none" && row.fs_type.is_none() {
                    row.fs_error = Some(format!(
                        "not a disk image: no partition table and no filesystem found in its {} bytes",
                        disk.size()
                    ));
                }
            }
        }
        if let Some(problem) = &row.fs_error {
            refuse_or_warn(problem.clone(), &mut survey.warnings)?;
        }
        survey.partitions.push(row);
    }
    // Logical volumes are volumes like partitions, numbered after them. Each volume group
    // once, whichever of its physical volumes on this disk was read.
    let mut next = survey.partitions.iter().map(|p| p.partition).max().unwrap_or(0) + 1;
    let pv_starts: HashMap<String, u64> =
        volume_groups.iter().map(|(start, vg)| (vg.pv_uuid.clone(), *start)).collect();
    let pv_start = |uuid: &str| pv_starts.get(uuid).copied();
    let mut seen_groups = HashSet::new();
    for (_, vg) in volume_groups.iter().filter(|(_, vg)| seen_groups.insert(vg.name.clone())) {
        for lv in &vg.logical_volumes {
            let mut row = PartitionRow {
                image_id: 0,
                partition: next,
                scheme: "lvm".into(),
                r#type: lv.layout.clone(),
                name: format!("{}/{}", vg.name, lv.name),
                start: 0,
                size: lv.size as i64,
                fs_type: None,
                fs_uuid: None,
                fs_label: None,
                fs_error: None,
            };
            next += 1;
            let volume = vg.map(lv, &pv_start).map_err(|e| e.to_string()).and_then(|spans| {
                let volume =
                    Mapped::new(disk, spans.clone()).map_err(|e| format!("lvm2: {}/{}: {e}", vg.name, lv.name))?;
                Ok((spans, volume))
            });
            match volume {
                Ok((spans, volume)) => {
                    row.start = spans.first().map_or(0, |s| s.disk_offset as i64);
                    if let Some(fs) = index_volume(&volume, &mut row) {
                        survey.indexed.push(IndexedFs { partition: row.partition, spans, fs });
                    }
                }
                Err(e) => row.fs_error = Some(format!("logical volume {}: {e}", row.name)),
            }
            if let Some(problem) = &row.fs_error {
                refuse_or_warn(problem.clone(), &mut survey.warnings)?;
            }
            survey.partitions.push(row);
        }
    }
    Ok(survey)
}

/// Finds the filesystem of a volume by its signature and, where imagelake indexes that kind,
/// reads it; a filesystem that does not parse is recorded in `fs_error`.
fn index_volume(volume: &dyn ReadAt, row: &mut PartitionRow) -> Option<fs::Filesystem> {
    row.fs_type = partition::fs_type(volume).map(str::to_string);
    let read = match row.fs_type.as_deref() {
        Some("ext4") => ext4::read(volume).map_err(|e| e.to_string()),
        Some("vfat") => vfat::read(volume).map_err(|e| e.to_string()),
        Some("xfs") => xfs::read(volume).map_err(|e| e.to_string()),
        Some("btrfs") => btrfs::read(volume).map_err(|e| e.to_string()),
        _ => return None,
    };
    match read {
        Ok(fs) => {
            row.fs_type = Some(fs.fs_type.to_string());
            row.fs_uuid = Some(fs.uuid.clone());
            row.fs_label = Some(fs.label.clone());
            Some(fs)
        }
        Err(e) => {
            row.fs_error = Some(format!("partition {}: {e}", row.partition));
            None
        }
    }
}
