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
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut cluster =
            Cluster { library: library.to_path_buf(), scheduler: String::new(), processes: Vec::new(), env };
        cluster.scheduler = cluster.spawn(|| {
            let scheduler = format!("127.0.0.1:{}", free_port());
            let args = vec!["scheduler".into(), "--listen".into(), scheduler.clone()];
            (args.into_iter().chain(["--executor-timeout".into(), "4s".into()]).collect(), scheduler)
        });
        for _ in 0..executors {
            let scheduler = cluster.scheduler.clone();
            cluster.spawn(|| {
                let (flight, grpc) = (format!("127.0.0.1:{}", free_port()), free_port().to_string());
                let args = ["executor", "--scheduler", &scheduler, "--listen", &flight, "--grpc-port", &grpc];
                let args = args.into_iter().chain(["--tasks", "2", "--heartbeat", "1s"]);
                (args.map(String::from).collect(), flight)
            });
        }
        // Executors register with the scheduler once they listen.
        std::thread::sleep(Duration::from_secs(2));
        cluster
    }

    /// Starts `imagelake cluster ARGS` and waits for its `listening on` line; returns the
    /// address `args` gave. A port free when picked can be taken before the process binds it
    /// (by any outgoing connection: they draw from the same range), so a process that cannot
    /// listen (exit 4) is started again on ports picked anew.
    fn spawn(&mut self, args: impl Fn() -> (Vec<String>, String)) -> String {
        for _ in 0..5 {
            let (args, address) = args();
            let mut child = Command::new(imagelake_bin())
                .arg("-L")
                .arg(&self.library)
                .arg("cluster")
                .args(&args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            if line.starts_with("listening on ") {
                self.processes.push(child);
                return address;
            }
            let status = child.wait().unwrap();
            assert_eq!(status.code(), Some(4), "cluster {args:?} printed {line:?} and ended with {status}");
        }
        panic!("no free port could be listened on in 5 tries")
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
