//! The CLI an operator trusts, and shutdown: a server with a change-feed
//! follower stops within its grace period (the follower sees UNAVAILABLE,
//! reconnects to the restarted library and resumes after its last event, or
//! gives up with exit 1); a closed stdout ends a command quietly; exit codes
//! follow the README's table (0 yes, 1 cannot run, 2 usage, 3 the answer is
//! no); and messages say what is wrong once, and where the feed ends.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, issue, published_type};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_testkit::{TestDb, binary};

/// Generous bound for anything that should happen in about a second.
const PATIENCE: Duration = Duration::from_secs(60);

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `zhengzhao ARGS` against `server` with `token` (none when `None`).
fn zhengzhao(server: &str, token: Option<&str>, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary("zhengzhao"));
    cmd.current_dir(dir).env("ZHENGZHAO_SERVER", server).env_remove("ZHENGZHAO_TOKEN").kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("ZHENGZHAO_TOKEN", t);
    }
    cmd
}

async fn run(server: &str, token: Option<&str>, dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(zhengzhao(server, token, dir).args(args).output().await?)
}

async fn ok(server: &str, token: Option<&str>, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = run(server, token, dir, args).await?;
    if !out.status.success() {
        bail!("zhengzhao {args:?} failed ({}): {}", out.status, text(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The next line of a child's output, within [`PATIENCE`].
async fn next_line<R: tokio::io::AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>) -> anyhow::Result<String> {
    tokio::time::timeout(PATIENCE, lines.next_line()).await.context("no line within 60s")??.context("output ended")
}

/// A `zhengzhao serve` process we can signal.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    async fn start(data: &Path, config: &Path, listen: &str) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(binary("zhengzhao"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("run `cargo build --workspace --bins` first")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = next_line(&mut lines).await?;
        let addr = line.strip_prefix("listening on ").with_context(|| format!("unexpected {line:?}"))?.to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, addr })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM and waits (at most 60 s) for the process to end.
    async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("the server already exited")?;
        let kill = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        assert!(kill.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .context("the server was still running 60 s after SIGTERM (grace 2 s)")?
            .context("wait")
    }
}

/// Issues the example licence through the CLI; returns its identifier.
async fn issue_by_cli(server: &str, dir: &Path, admin: &str, issuer: &str) -> anyhow::Result<String> {
    let code = match std::fs::read_to_string(dir.join("type.code")) {
        Ok(code) => code,
        Err(_) => {
            std::fs::write(dir.join("type.json"), ok(server, None, dir, &["catalog", "example"]).await?)?;
            let code = ok(server, Some(admin), dir, &["catalog", "create", "--file", "type.json"]).await?;
            std::fs::write(dir.join("type.code"), &code)?;
            code
        }
    };
    let licence = ok(server, Some(issuer), dir, &["licence", "example", "--type", &code]).await?;
    std::fs::write(dir.join("licence.json"), licence)?;
    ok(server, Some(issuer), dir, &["licence", "issue", "--file", "licence.json"]).await
}

fn sequence(line: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    v["sequence"].as_u64().with_context(|| format!("no sequence: {line}"))
}

/// Reads stderr lines until one contains `needle`; returns all read.
async fn stderr_until(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> anyhow::Result<String> {
    let mut seen = String::new();
    loop {
        let line = next_line(lines).await.with_context(|| format!("waiting for {needle:?}; stderr so far: {seen}"))?;
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            return Ok(seen);
        }
    }
}

#[tokio::test]
async fn sigterm_stops_a_server_with_a_follower_which_resumes_or_gives_up() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let dir = work.path();
    let data = dir.join("data");
    let config = dir.join("zhengzhao.toml");
    std::fs::write(&config, "shutdown_grace_seconds = 2\n")?;
    let server = Server::start(&data, &config, "127.0.0.1:0").await?;
    let addr = server.addr.clone();
    let d = data.display().to_string();
    let token = |role: &str, agency: &str| {
        let d = d.clone();
        let (role, agency) = (role.to_owned(), agency.to_owned());
        async move {
            ok("http://unused", None, dir, &["token", "--data-dir", &d, "--role", &role, "--agency", &agency]).await
        }
    };
    let (admin, issuer, sync) =
        (token("admin", ADMIN).await?, token("issuer", ISSUER).await?, token("sync", ADMIN).await?);
    let first = issue_by_cli(&server.url(), dir, &admin, &issuer).await?;

    let mut follower = zhengzhao(&server.url(), Some(&sync), dir)
        .args(["licence", "watch", "--follow", "--retry-for", "15"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(follower.stdout.take().context("stdout")?).lines();
    let mut err = BufReader::new(follower.stderr.take().context("stderr")?).lines();
    let line = next_line(&mut out).await?;
    assert!(line.contains(&first), "{line}");
    let last = sequence(&line)?;

    // SIGTERM: the server ends the follower's stream and exits, well within
    // the 60 s bound (grace 2 s); the follower says the library went away.
    let status = server.terminate().await?;
    assert!(status.success(), "the server exited with {status}");
    let said = stderr_until(&mut err, "the library is unavailable").await?;
    assert!(said.contains("shutting down"), "the follower was not told the server is shutting down: {said}");

    // The library comes back on the same address: the follower resumes
    // after the last event it printed, without repeating it.
    let server = Server::start(&data, &config, &addr).await?;
    let second = issue_by_cli(&server.url(), dir, &admin, &issuer).await?;
    let line = next_line(&mut out).await?;
    assert!(line.contains(&second), "the follower resumed with {line}, not the new licence {second}");
    assert_eq!(sequence(&line)?, last + 1, "{line}");
    stderr_until(&mut err, "the library is back").await?;

    // Gone for good: the follower gives up with exit 1 and says where to resume.
    let status = server.terminate().await?;
    assert!(status.success(), "the server exited with {status}");
    let said = stderr_until(&mut err, "gave up reconnecting").await?;
    assert!(said.contains(&format!("resume with --after {}", last + 1)), "{said}");
    let status = tokio::time::timeout(PATIENCE, follower.wait()).await??;
    assert_eq!(status.code(), Some(1), "the follower exited with {status}");
    Ok(())
}

/// Runs `zhengzhao ARGS` with its stdout a pipe whose reader is closed
/// before the command writes anything.
async fn with_stdout_closed(lib: &Library, token: &str, args: &[&str]) -> anyhow::Result<Output> {
    let dir = lib.data.path();
    let mut child = zhengzhao(&format!("http://{}", lib.addr), Some(token), dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout: ChildStdout = child.stdout.take().context("stdout")?;
    drop(stdout);
    Ok(tokio::time::timeout(PATIENCE, child.wait_with_output()).await??)
}

#[tokio::test]
async fn a_closed_stdout_ends_a_command_quietly() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let code = published_type(&lib).await?;
    let a = issue(&lib, draft(&code)).await?;
    issue(&lib, draft(&code)).await?;
    lib.issuance(Role::Issuer, ISSUER)
        .record_event(issuance::RecordEventRequest {
            identifier: a.identifier.clone(),
            kind: issuance::EventKind::Cancel as i32,
            reason: "企业申请注销".into(),
            ..Default::default()
        })
        .await?;
    let sync = lib.token(Role::Sync, ADMIN);
    let admin = lib.token(Role::Admin, ADMIN);
    for (token, args) in [
        (&sync, &["licence", "watch", "--after", "0"][..]),
        (&sync, &["licence", "watch", "--follow"][..]),
        (&admin, &["catalog", "changes"][..]),
        (&admin, &["catalog", "get", &code][..]),
    ] {
        let out = with_stdout_closed(&lib, token, args).await?;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?} said: {}", text(&out));
    }
    // A command whose exit code is its answer keeps it.
    let consumer = lib.token(Role::Consumer, CONSUMER);
    let out = with_stdout_closed(&lib, &consumer, &["verify", &a.identifier]).await?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    Ok(())
}

#[tokio::test]
async fn exit_codes_follow_the_table() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let server = format!("http://{}", lib.addr);
    let dir = lib.data.path();
    let code = published_type(&lib).await?;
    let a = issue(&lib, draft(&code)).await?;
    let consumer = lib.token(Role::Consumer, CONSUMER);
    let auditor = lib.token(Role::Auditor, ADMIN);
    let c = Some(consumer.as_str());

    // 0: valid.
    let out = run(&server, c, dir, &["verify", &a.identifier]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // 2: the command line itself is wrong (clap's own, values included).
    for args in [
        &["verify", "--bogus"][..],
        &["licence", "watch", "--after", "minus-one"][..],
        &["licence", "seize", &a.identifier, "--reason", "暂扣", "--occurred-at", "yesterday"][..],
        &["outage", "record", "--start", "2026-13-01", "--cause", "断电"][..],
    ] {
        let out = run(&server, c, dir, args).await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }

    // 3: the check ran and the answer is no — a malformed identifier or
    // document cannot be any licence.
    std::fs::write(dir.join("empty.jws"), "")?;
    std::fs::write(dir.join("garbage.jws"), "garbage")?;
    for args in [
        &["verify", "NOT-AN-IDENTIFIER"][..],
        &["verify", "--document", "empty.jws"][..],
        &["verify", "--document", "garbage.jws"][..],
    ] {
        let out = run(&server, c, dir, args).await?;
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("malformed:"), "{args:?}: {}", text(&out));
    }

    // 1: it could not run — an unreadable file, no server, no token.
    let out = run(&server, c, dir, &["verify", "--document", "missing.jws"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.jws"), "{}", text(&out));
    let out = run("http://127.0.0.1:1", c, dir, &["verify", &a.identifier]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"), "{}", text(&out));
    let out = run(&server, None, dir, &["verify", &a.identifier, "--token", ""]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("no token given") && !stderr.contains("malformed"), "{stderr}");

    // The auditor's own files: an error (1), never an audit failure.
    let checkpoint = ok(&server, Some(&auditor), dir, &["log", "checkpoint"]).await?;
    std::fs::write(dir.join("checkpoint.jws"), &checkpoint)?;
    std::fs::write(dir.join("licences.txt"), format!("{}\n\nnot-an-id\n", a.identifier))?;
    std::fs::write(dir.join("good.txt"), format!("{}\n", a.identifier))?;
    for (args, says) in [
        (&["audit", "--from", "missing.jws"][..], "cannot read missing.jws"),
        (&["audit", "--from", "garbage.jws"][..], "--from garbage.jws: not a checkpoint"),
        (&["audit", "--from", "empty.jws"][..], "--from empty.jws: the file is empty"),
        (&["audit", "--from", "checkpoint.jws", "--licences", "licences.txt"][..], "licences.txt line 3"),
        (&["audit", "--from", "checkpoint.jws", "--library-jwk", "garbage.jws"][..], "--library-jwk garbage.jws"),
    ] {
        let out = run(&server, Some(&auditor), dir, args).await?;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8(out.stderr)?;
        assert!(stderr.starts_with("error: ") && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("AUDIT FAILED") && !stderr.contains("do not trust"), "{args:?}: {stderr}");
    }
    let out =
        run(&server, Some(&auditor), dir, &["audit", "--from", "checkpoint.jws", "--licences", "good.txt"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}

#[tokio::test]
async fn messages_say_what_is_wrong_once_and_where_the_feed_ends() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let server = format!("http://{}", lib.addr);
    let dir = lib.data.path();
    let code = published_type(&lib).await?;
    let a = issue(&lib, draft(&code)).await?;
    issue(&lib, draft(&code)).await?;
    let issuer = lib.token(Role::Issuer, ISSUER);
    let sync = lib.token(Role::Sync, ADMIN);
    let admin = lib.token(Role::Admin, ADMIN);

    // A time that is not RFC 3339: the format wanted, said once.
    for flag in ["--occurred-at", "--since", "--start"] {
        let args: Vec<&str> = match flag {
            "--occurred-at" => vec!["licence", "seize", &a.identifier, "--reason", "暂扣", flag, "2026/11/27 09:30"],
            "--since" => vec!["keys", "compromise", "k1", "--reason", "泄露", flag, "yesterday"],
            _ => vec!["outage", "record", "--cause", "断电", flag, "yesterday"],
        };
        let out = run(&server, Some(&issuer), dir, &args).await?;
        let stderr = String::from_utf8(out.stderr)?;
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(&format!("for '{flag} ")) && stderr.contains("not an RFC 3339 time"), "{stderr}");
        assert!(stderr.contains("e.g. 2026-11-27T09:30:00+08:00"), "{stderr}");
        // The parser's reason, once (it used to come twice: "X: X").
        let reason = stderr.split_once("time (").and_then(|(_, r)| r.split_once(')')).map(|(r, _)| r);
        let reason = reason.with_context(|| format!("no reason given: {stderr}"))?;
        assert_eq!(stderr.matches(reason).count(), 1, "{stderr}");
    }

    // The feed: two issues. Past its end is an error naming the end; at its
    // end, nothing to print and a note where it ends.
    let out = run(&server, Some(&sync), dir, &["licence", "watch", "--after", "7"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("error: --after 7 is past the end of the feed, which ends at sequence 2"),
        "{}",
        text(&out)
    );
    let out = run(&server, Some(&sync), dir, &["licence", "watch", "--after", "2"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the feed ends at sequence 2"), "{}", text(&out));
    let out = ok(&server, Some(&sync), dir, &["licence", "watch", "--after", "1"]).await?;
    assert_eq!(out.lines().count(), 1, "{out}");

    // `--limit 0` means the default, as page_size 0 does in the API.
    // (Refused uses — nothing on this consumer's list — are logged too.)
    let mut ex = lib.exchange(Role::Consumer, CONSUMER);
    for _ in 0..3 {
        let refused = ex
            .fetch_licence(exchange::FetchLicenceRequest {
                identifier: a.identifier.clone(),
                r#use: Some(exchange::UseContext {
                    use_cause: "办理食品经营许可延续".into(),
                    service_item_code: "11100000000013338W3000111005000".into(),
                    case_number: "2026-0003".into(),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }
    let zero = ok(&server, Some(&admin), dir, &["usage-log", "--limit", "0"]).await?;
    let default = ok(&server, Some(&admin), dir, &["usage-log"]).await?;
    assert_eq!(zero.lines().count(), 3, "{zero}");
    assert_eq!(zero, default);
    let one = ok(&server, Some(&admin), dir, &["usage-log", "--limit", "1"]).await?;
    assert_eq!(one.lines().count(), 1, "{one}");
    let changes = ok(&server, Some(&admin), dir, &["catalog", "changes", "--limit", "0"]).await?;
    assert!(changes.lines().count() >= 2, "{changes}");
    Ok(())
}
