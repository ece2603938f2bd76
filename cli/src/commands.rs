//! One function per command's dispatch: open the library, call the engine, print the summary,
//! and turn what the command found wrong (damage, conflicts, refused entries) into a
//! [`exit::Error::problem`] (exit status 1).

use crate::args::{AdvisoryCommand, Cli, ClusterCommand, Command, UserCommand, VexCommand};
use crate::exit::{self, Stdout};
use crate::mount;
use crate::password;
use crate::print::{self, report};
use crate::progress;
use crate::repl;
use anyhow::Context;
use imagelake_engine::access::{Pattern, Right};
use imagelake_engine::{CheckinOptions, CheckoutOptions, ExportOptions, Library, RepackOptions};
use std::io::{IsTerminal, Write};
use std::sync::Arc;

/// Runs the command `cli` names, printing on standard output.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let library = Arc::new(Library::open_at(&cli.library.to_string_lossy()).await?);
    let mut stdout = Stdout::lock();
    match cli.command {
        Command::Checkin { file, name, raw_on_error, json } => {
            let progress = progress_bar(json);
            let options = CheckinOptions { raw_on_error, progress: progress.clone() };
            let summary = library.checkin(&file, &name, options).await;
            drop(progress);
            report(&mut stdout, json, &summary?, |out, s| print::print_checkin(out, &file, s))?;
        }
        Command::Checkout { image, out, format, force, update, json } => {
            let progress = progress_bar(json);
            let options = CheckoutOptions { format: Some(format), force, update, progress: progress.clone() };
            let summary = library.checkout(&image, &out, &options).await;
            drop((progress, options));
            report(&mut stdout, json, &summary?, print::print_checkout)?;
        }
        Command::Check { reclaim, rebuild_chunks, json } => {
            // Rows rebuilt from the packs first, so that the check sees them.
            let rebuilt = if rebuild_chunks { Some(library.rebuild_chunks().await?) } else { None };
            let report = library.check().await?;
            let reclaimed = if reclaim { Some(library.reclaim().await?) } else { None };
            if json {
                let value = match (&reclaimed, &rebuilt) {
                    (None, None) => serde_json::to_value(&report)?,
                    _ => {
                        let mut value = serde_json::json!({ "check": report });
                        if let Some(r) = &reclaimed {
                            value["reclaimed"] = serde_json::to_value(r)?;
                        }
                        if let Some(r) = &rebuilt {
                            value["rebuilt"] = serde_json::to_value(r)?;
                        }
                        value
                    }
                };
                writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                if let Some(r) = &rebuilt {
                    print::print_rebuilt(&mut stdout, r)?;
                }
                print::print_check(&mut stdout, &report)?;
                match &reclaimed {
                    Some(r) => print::print_reclaimed(&mut stdout, r)?,
                    None => {
                        for area in imagelake_mount::areas(library.tmp(), None, false) {
                            writeln!(
                                stdout,
                                "  unsaved   the writable mount on {0} ended without committing: `imagelake commit {0}` keeps its changes",
                                area.dir
                            )?;
                        }
                    }
                }
            }
            if !report.problems.is_empty() {
                return Err(exit::Error::problem(format!(
                    "the library is damaged: {} problems",
                    report.problems.len()
                )));
            }
        }
        Command::Repack { json } => {
            let progress = progress_bar(json);
            let summary = library.repack(RepackOptions { progress: progress.clone() }).await;
            drop(progress);
            report(&mut stdout, json, &summary?, print::print_repack)?;
        }
        Command::Verify { image, json } => {
            let verified = library.verify(image.as_deref()).await?;
            report(&mut stdout, json, &verified, print::print_verify)?;
            if !verified.intact() {
                return Err(exit::Error::problem(format!(
                    "the library is damaged: {} chunks, {} pack indexes, {} catalog files",
                    verified.damaged.len(),
                    verified.damaged_packs.len(),
                    verified.catalog.damaged.len()
                )));
            }
        }
        Command::Export { image, dir, partition, json } => {
            let progress = progress_bar(json);
            let options = ExportOptions { partition, progress: progress.clone() };
            let summary = library.export(&image, &dir, &options).await;
            drop((progress, options));
            let summary = summary?;
            report(&mut stdout, json, &summary, print::print_export)?;
            if !summary.refused.is_empty() || !summary.failed.is_empty() {
                return Err(exit::Error::problem(format!(
                    "{} entries refused, {} not written completely",
                    summary.refused.len(),
                    summary.failed.len()
                )));
            }
        }
        Command::ReplaceContent { image, path, host_file, json } => {
            let summary = library.replace_content(&image, &path, &host_file).await?;
            report(&mut stdout, json, &summary, print::print_edit)?;
        }
        Command::Import { image, host_dir, target_dir, json } => {
            let summary = library.import(&image, &host_dir, &target_dir).await?;
            report(&mut stdout, json, &summary, print::print_edit)?;
        }
        Command::Remove { image, path, json } => {
            let summary = library.remove(&image, &path).await?;
            report(&mut stdout, json, &summary, print::print_edit)?;
        }
        Command::SetMeta { image, path, mode, uid, gid, json } => {
            if mode.is_none() && uid.is_none() && gid.is_none() {
                return Err(exit::Error::usage("set-meta: give --mode, --uid or --gid"));
            }
            let summary = library.set_meta(&image, &path, mode, uid, gid).await?;
            report(&mut stdout, json, &summary, print::print_edit)?;
        }
        Command::Patch { target, from, to, on_conflict, json } => {
            let s = library.patch(&target, &from, &to, on_conflict.parse()?).await?;
            report(&mut stdout, json, &s, print::print_patch)?;
            if s.made.is_none() && s.conflicts > 0 {
                return Err(exit::Error::problem(format!("{} conflicts: nothing was written", s.conflicts)));
            }
        }
        Command::Delete { image } => {
            let i = library.delete(&image).await?;
            writeln!(stdout, "deleted {}@{} (undelete restores it until gc)", i.name, i.version)?;
        }
        Command::Undelete { image } => {
            let i = library.undelete(&image).await?;
            writeln!(stdout, "restored {}@{}", i.name, i.version)?;
        }
        Command::Gc { json } => {
            let s = library.gc().await?;
            report(&mut stdout, json, &s, print::print_gc)?;
        }
        Command::Clone { image, new_name, json } => {
            let s = library.clone_image(&image, &new_name).await?;
            report(&mut stdout, json, &s, print::print_clone)?;
        }
        Command::Sbom { image, format, spec_version, output } => {
            let session = imagelake_sql::Session::open(library.clone()).await?;
            let q = imagelake_sql::quote;
            let spec = spec_version.map(|v| format!(", {}", q(&v))).unwrap_or_default();
            let sql = format!("SELECT document FROM sbom({}, {}{spec})", q(&image), q(&format));
            let answer = session.run(&sql).await.map_err(exit::sql)?;
            let document = answer.batches.first().filter(|b| b.num_rows() == 1).map(|b| b.column(0));
            let document = document.and_then(|c| c.as_any().downcast_ref::<datafusion::arrow::array::StringArray>());
            let document = document.context("sbom() returned no document")?.value(0);
            match output {
                Some(path) => write_replacing(&path, document.as_bytes())?,
                None => stdout.write_all(document.as_bytes())?,
            }
        }
        Command::Advisories { action: AdvisoryCommand::Load { path, json } } => {
            let summary = library.load_advisories(&path).await?;
            report(&mut stdout, json, &summary, print::print_advisories_loaded)?;
        }
        Command::Vex { action: VexCommand::Add { advisory, image, package, state, justification, detail, json } } => {
            let statement = imagelake_engine::vex::Statement { advisory, image, package, state, justification, detail };
            let row = library.add_vex(&statement).await?;
            report(&mut stdout, json, &row, |out, row| print::print_vex(out, std::slice::from_ref(row)))?;
        }
        Command::Vex { action: VexCommand::List { all, json } } => {
            let rows: Vec<_> = library.vex().await?.into_iter().filter(|r| all || r.revoked_at.is_none()).collect();
            report(&mut stdout, json, &rows, |out, rows| print::print_vex(out, rows))?;
        }
        Command::Vex { action: VexCommand::Revoke { id, json } } => {
            let row = library.revoke_vex(&id).await?;
            report(&mut stdout, json, &row, |out, row| print::print_vex(out, std::slice::from_ref(row)))?;
        }
        Command::SbomDiff { old, new, json } => {
            let session = imagelake_sql::Session::open(library.clone()).await?;
            let q = imagelake_sql::quote;
            let sql = format!("SELECT * FROM sbom_diff({}, {})", q(&old), q(&new));
            let answer = session.run(&sql).await.map_err(exit::sql)?;
            let diff = imagelake_sql::sbom::diff_json(&answer.batches)?;
            match json {
                true => writeln!(stdout, "{}", serde_json::to_string_pretty(&diff)?)?,
                false => print::print_sbom_diff(&mut stdout, &diff)?,
            }
        }
        Command::Log { name, json } => {
            let family = library.family(&name).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string_pretty(&family)?)?;
            } else {
                write!(stdout, "{}", print::draw_versions(&family, &name))?;
            }
        }
        Command::Cat { image, path } => {
            let data = library.read_file(&image, &path).await?;
            stdout.write_all(&data)?;
        }
        Command::Mount { image, dir, partition, writable, allow_other, foreground } => {
            let how = mount::How { partition, writable, allow_other };
            match foreground {
                true => mount::foreground(library.clone(), &image, &dir, how, &mut stdout).await?,
                false => writeln!(stdout, "{}", mount::background(&cli.library, &image, &dir, how)?)?,
            }
        }
        Command::Commit { dir } => match imagelake_mount::ask(library.tmp(), &dir, imagelake_mount::Ask::Commit)? {
            Some(answer) => writeln!(stdout, "{answer}")?,
            None => {
                if mount::unsaved(&library, &dir, false, &mut stdout).await? == 0 {
                    return Err(exit::Error::usage(format!(
                        "{} holds no writable mount of this library (imagelake mount --writable), nor did one that ended without committing",
                        dir.display()
                    )));
                }
            }
        },
        Command::Unmount { dir, discard } => {
            let ask = if discard { imagelake_mount::Ask::Discard } else { imagelake_mount::Ask::Commit };
            let unmounted = match imagelake_mount::ask(library.tmp(), &dir, ask)? {
                Some(answer) => {
                    writeln!(stdout, "{answer}")?;
                    imagelake_mount::unmount(&dir)
                }
                None => match mount::unsaved(&library, &dir, discard, &mut stdout).await? {
                    0 => imagelake_mount::unmount(&dir),
                    // The mount that ended may have been unmounted already.
                    _ => {
                        let _ = imagelake_mount::unmount(&dir);
                        Ok(())
                    }
                },
            };
            unmounted?;
            writeln!(stdout, "unmounted {}", dir.display())?;
        }
        Command::User { action } => user(&library, action, &mut stdout)?,
        Command::Grant { user, right, on, pattern } => {
            let (right, pattern) = grant_words(&right, &on, &pattern)?;
            library.grant(&user, right, &pattern)?;
            writeln!(stdout, "granted {user} {right} on '{pattern}'")?;
        }
        Command::Revoke { user, right, on, pattern } => {
            let (right, pattern) = grant_words(&right, &on, &pattern)?;
            if !library.revoke(&user, right, &pattern)? {
                let theirs: Vec<String> = library
                    .grants()?
                    .iter()
                    .filter(|g| g.user == user)
                    .map(|g| format!("{} on '{}'", g.right, g.pattern))
                    .collect();
                let theirs = if theirs.is_empty() { "none".to_string() } else { theirs.join(", ") };
                return Err(exit::Error::problem(format!(
                    "{user} has no grant of {right} on '{pattern}' to revoke (their grants: {theirs})"
                )));
            }
            writeln!(stdout, "revoked {user} {right} on '{pattern}'")?;
        }
        Command::Sql { command, file, format, cluster } => {
            let session = match cluster {
                Some(scheduler) => {
                    imagelake_cluster::session(library.clone(), imagelake_sql::Access::owner(), &scheduler).await?
                }
                None => imagelake_sql::Session::open(library.clone()).await?,
            };
            let session = Arc::new(session);
            let input = match (command, file) {
                (Some(command), _) => repl::Input::Command(command),
                (None, Some(file)) => repl::Input::File(file),
                (None, None) if std::io::stdin().is_terminal() => repl::Input::Terminal,
                (None, None) => repl::Input::Stdin,
            };
            repl::run(session, input, format, &cli.library, &mut stdout).await?;
        }
        Command::Cluster { role } => cluster(library.clone(), role, &mut stdout).await?,
        Command::Serve { listen, data_roots, tls_cert, tls_key, tls_client_ca, token_ttl, cluster } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(imagelake_server::Tls { cert, key, client_ca: tls_client_ca }),
                _ => None,
            };
            let options = imagelake_server::Options { listen, data_roots, tls, token_ttl, cluster };
            let server = imagelake_server::bind(library.clone(), options).await?;
            // The one line a supervisor or a test waits for, out before the first request.
            writeln!(stdout, "listening on {}", server.url())?;
            stdout.flush()?;
            server.run().await?;
        }
    }
    // Buffered output reaches the pipe now, so that a closed one is seen as such.
    stdout.flush()?;
    Ok(())
}

/// `imagelake cluster ...`: runs until stopped.
async fn cluster(library: Arc<Library>, role: ClusterCommand, stdout: &mut Stdout) -> anyhow::Result<()> {
    let liveness = imagelake_cluster::Liveness::default();
    let level = std::env::var("IMAGELAKE_CLUSTER_LOG").ok().and_then(|l| l.parse().ok());
    imagelake_cluster::log_to_stderr(level.unwrap_or(log::LevelFilter::Warn));
    match role {
        ClusterCommand::Scheduler { listen, executor_timeout } => {
            let liveness = imagelake_cluster::Liveness { timeout: executor_timeout, ..liveness };
            let run = imagelake_cluster::scheduler(library, listen, liveness);
            announce(run, listen, stdout).await
        }
        ClusterCommand::Executor { scheduler, listen, grpc_port, tasks, heartbeat } => {
            let liveness = imagelake_cluster::Liveness { heartbeat, ..liveness };
            let ports = imagelake_cluster::ExecutorPorts { flight: listen, grpc_port };
            let run = imagelake_cluster::executor(library, &scheduler, ports, tasks, liveness);
            announce(run, listen, stdout).await
        }
    }
}

/// Runs a cluster process, printing `listening on ADDRESS` once `address` accepts connections
/// (Ballista binds inside `run` and says nothing a supervisor could wait for).
async fn announce(
    run: impl std::future::Future<Output = datafusion::common::Result<()>>,
    address: std::net::SocketAddr,
    stdout: &mut Stdout,
) -> anyhow::Result<()> {
    // Another process on the address would answer the probe below: refuse it first.
    drop(std::net::TcpListener::bind(address).with_context(|| format!("cannot listen on {address}"))?);
    tokio::pin!(run);
    loop {
        tokio::select! {
            ran = &mut run => return Ok(ran?),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {
                if tokio::net::TcpStream::connect(address).await.is_ok() {
                    break;
                }
            }
        }
    }
    writeln!(stdout, "listening on {address}")?;
    stdout.flush()?;
    Ok(run.await?)
}

/// `imagelake user ...`.
fn user(library: &Library, action: UserCommand, stdout: &mut Stdout) -> anyhow::Result<()> {
    match action {
        UserCommand::Add { name, admin } => {
            // A bad name is refused before the password is asked for.
            imagelake_engine::access::check_user_name(&name)?;
            if library.users()?.iter().any(|u| u.name == name) {
                return Err(exit::Error::usage(format!("user {name} already exists")));
            }
            let password = password::new_password(&name)?;
            library.add_user(&name, &password, admin)?;
            writeln!(stdout, "added user {name}{}", if admin { " (admin)" } else { "" })?;
        }
        UserCommand::Remove { name } => {
            library.remove_user(&name)?;
            writeln!(stdout, "removed user {name}, with their grants and tokens")?;
        }
        UserCommand::List { json } => {
            let (users, grants) = (library.users()?, library.grants()?);
            if json {
                #[derive(serde::Serialize)]
                struct Listed<'a> {
                    name: &'a str,
                    admin: bool,
                    created_at: i64,
                    grants: Vec<serde_json::Value>,
                }
                let users: Vec<Listed> = users
                    .iter()
                    .map(|u| Listed {
                        name: &u.name,
                        admin: u.admin,
                        created_at: u.created_at,
                        grants: grants
                            .iter()
                            .filter(|g| g.user == u.name)
                            .map(|g| serde_json::json!({ "right": g.right.to_string(), "pattern": g.pattern.as_str() }))
                            .collect(),
                    })
                    .collect();
                writeln!(stdout, "{}", serde_json::to_string_pretty(&users)?)?;
            } else {
                print::print_users(stdout, &users, &grants)?;
            }
        }
        UserCommand::Passwd { name } => {
            imagelake_engine::access::check_user_name(&name)?;
            if !library.users()?.iter().any(|u| u.name == name) {
                return Err(exit::Error::usage(format!("no user {name:?} in the library")));
            }
            let password = password::new_password(&name)?;
            library.set_password(&name, &password)?;
            writeln!(stdout, "set the password of {name}; their tokens are revoked")?;
        }
        UserCommand::RevokeTokens { name } => {
            let n = library.revoke_tokens(&name)?;
            writeln!(stdout, "revoked {n} tokens of {name}")?;
        }
    }
    Ok(())
}

/// RIGHT ON PATTERN of `grant` and `revoke`.
/// Writes `bytes` to `path` whole or not at all: into a file beside it, then renamed over it.
fn write_replacing(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.imagelake-tmp", name.to_string_lossy()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    let renamed = written.and_then(|_| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.with_context(|| format!("writing {}", path.display()))
}

fn grant_words(right: &str, on: &str, pattern: &str) -> anyhow::Result<(Right, Pattern)> {
    if !on.eq_ignore_ascii_case("on") {
        return Err(exit::Error::usage(format!(
            "expected the word 'on' after the right, not {on:?}: grant USER RIGHT on PATTERN"
        )));
    }
    Ok((Right::parse(right)?, Pattern::parse(pattern)?))
}

/// A progress bar on standard error, when that is a terminal and the summary is not JSON.
fn progress_bar(json: bool) -> Option<Arc<dyn imagelake_engine::Progress>> {
    (!json && std::io::stderr().is_terminal())
        .then(|| Arc::new(progress::Bar::default()) as Arc<dyn imagelake_engine::Progress>)
}
