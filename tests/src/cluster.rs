//! A Ballista cluster of `imagelake cluster` processes on loopback, for the cluster's tests and
//! bench-cluster: a scheduler and its executors over one library, killed when dropped.

use crate::imagelake_bin;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scheduler and its executors, killed when dropped.
pub struct Cluster {
    pub library: PathBuf,
    pub scheduler: String,
    /// The scheduler, then the executors.
    pub processes: Vec<Child>,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts a scheduler and `executors` executors (two tasks each) over `library`, with
    /// `env` set in each.
    pub fn start(library: &Path, executors: usize, env: &[(&str, &str)]) -> Cluster {
        let scheduler = format!("127.0.0.1:{}", free_port());
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut cluster =
            Cluster { library: library.to_path_buf(), scheduler: scheduler.clone(), processes: Vec::new(), env };
        cluster.spawn(&["scheduler", "--listen", &scheduler, "--executor-timeout", "4s"]);
        for _ in 0..executors {
            let (flight, grpc) = (format!("127.0.0.1:{}", free_port()), free_port().to_string());
            let args = ["executor", "--scheduler", &scheduler, "--listen", &flight, "--grpc-port", &grpc];
            cluster.spawn(&[&args[..], &["--tasks", "2", "--heartbeat", "1s"]].concat());
        }
        // Executors register with the scheduler once they listen.
        std::thread::sleep(Duration::from_secs(2));
        cluster
    }

    /// Starts `imagelake cluster ARGS` and waits for its `listening on` line.
    fn spawn(&mut self, args: &[&str]) {
        let mut child = Command::new(imagelake_bin())
            .arg("-L")
            .arg(&self.library)
            .arg("cluster")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on "), "cluster {args:?} printed {line:?}");
        self.processes.push(child);
    }

    pub fn ask(&self, sql: &str) -> Output {
        ask(&self.library, Some(&self.scheduler), sql).output().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// `imagelake sql --format csv -c SQL`, on the cluster at `scheduler` or in its own process.
pub fn ask(library: &Path, scheduler: Option<&str>, sql: &str) -> Command {
    let mut command = Command::new(imagelake_bin());
    command.arg("-L").arg(library).args(["sql", "--format", "csv"]);
    if let Some(scheduler) = scheduler {
        command.args(["--cluster", scheduler]);
    }
    command.args(["-c", sql]).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}
