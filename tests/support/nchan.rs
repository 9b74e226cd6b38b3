//! Debian's nginx with libnginx-mod-nchan, started by a test with its own
//! configuration in a temporary directory, on a free loopback port: a
//! channel `/sub` (EventSource subscribers, every stored message from the
//! oldest) fed by HTTP POSTs to `/pub`.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

pub struct Nchan {
    _child: Child,
    _dir: tempfile::TempDir,
    pub base: String,
}

impl Nchan {
    pub async fn start() -> Nchan {
        assert!(
            std::path::Path::new(MODULE).exists(),
            "{MODULE} is missing: apt-get install nginx libnginx-mod-nchan (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        let conf = format!(
            "load_module {MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_buffer_size 1m;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /pub {{ nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 10000; }}
    location = /sub {{ nchan_subscriber eventsource; nchan_channel_id bench;
                       nchan_subscriber_first_message oldest; }}
  }}
}}
"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new("nginx")
            .args(["-e", "stderr", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx (Debian's nginx package, installed by .ci/run)");
        // Ready once it accepts connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited at start: {status}");
            }
            assert!(tokio::time::Instant::now() < deadline, "nginx did not listen in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Nchan { _child: child, _dir: dir, base: format!("http://127.0.0.1:{port}") }
    }

    /// Publishes one message by HTTP POST.
    pub async fn publish(&self, text: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/pub", self.base))
            .body(text.to_string())
            .send()
            .await
            .expect("publish to nchan");
        assert!(r.status().is_success(), "nchan publish: {}", r.status());
    }
}
