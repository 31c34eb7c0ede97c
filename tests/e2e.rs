//! End-to-end: the README's CLI tour, run twice against real processes —
//! the all-in-one `zhengzhao serve` on SQLite, and the six services as
//! separate processes on PostgreSQL behind the gateway — with the signed
//! licence checked by an independent JOSE implementation (Python jwcrypto).

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{Context, bail};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER};
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

struct Cli {
    data_dir: PathBuf,
    work: PathBuf,
}

impl Cli {
    fn run(&self, server: &str, token: Option<&str>, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = std::process::Command::new(binary("zhengzhao"));
        cmd.args(args).current_dir(&self.work).env("ZHENGZHAO_SERVER", server).env_remove("ZHENGZHAO_TOKEN");
        if let Some(t) = token {
            cmd.env("ZHENGZHAO_TOKEN", t);
        }
        Ok(cmd.output()?)
    }

    /// Runs and requires success; returns trimmed stdout.
    fn ok(&self, server: &str, token: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(server, token, args)?;
        if !out.status.success() {
            bail!("zhengzhao {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    fn token(&self, role: &str, agency: &str) -> anyhow::Result<String> {
        let d = self.data_dir.display().to_string();
        self.ok("http://unused", None, &["token", "--data-dir", &d, "--role", role, "--agency", agency, "--ttl", "30m"])
    }

    fn write(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let p = self.work.join(name);
        std::fs::write(&p, contents)?;
        Ok(p)
    }
}

/// Where each step of the tour is sent.
struct Servers {
    catalog: String,
    issuance: String,
    signing: String,
    exchange: String,
    front: String,
}

fn python() -> String {
    std::env::var("JOSE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn jose_verify(jwks: &Path, jws: &Path) -> anyhow::Result<Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/jose_verify.py");
    std::process::Command::new(python())
        .arg(script)
        .arg(jwks)
        .arg(jws)
        .output()
        .context("cannot run python (scripts/test sets JOSE_PYTHON to a venv with jwcrypto)")
}

fn tour(cli: &Cli, s: &Servers) -> anyhow::Result<()> {
    let admin = cli.token("admin", ADMIN)?;
    let issuer = cli.token("issuer", ISSUER)?;
    let consumer = cli.token("consumer", CONSUMER)?;

    let definition = cli.ok(&s.catalog, None, &["catalog", "example"])?;
    let def_file = cli.write("type.json", &definition)?;
    let code = cli.ok(&s.catalog, Some(&admin), &["catalog", "create", "--file", &def_file.display().to_string()])?;
    assert_eq!(code.len(), 21, "type code: {code}");
    // An issuer cannot define types: one line on stderr, non-zero exit.
    let refused =
        cli.run(&s.catalog, Some(&issuer), &["catalog", "create", "--file", &def_file.display().to_string()])?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr)?;
    assert!(stderr.starts_with("error: permission denied"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    // The catalogue exports as one document; importing it back changes nothing.
    let exported = cli.ok(&s.catalog, Some(&admin), &["catalog", "export"])?;
    let export_file = cli.write("catalog.json", &exported)?;
    let imported =
        cli.ok(&s.catalog, Some(&admin), &["catalog", "import", "--file", &export_file.display().to_string()])?;
    assert_eq!(imported, "created 0, updated 0, unchanged 1");
    let listed = cli.ok(&s.catalog, Some(&issuer), &["catalog", "list", "--status", "published"])?;
    assert!(listed.starts_with(&format!("{code}\tpublished\tv1\t")), "{listed}");

    let licence = cli.ok(&s.catalog, Some(&issuer), &["licence", "example", "--type", &code])?;
    let licence_file = cli.write("licence.json", &licence)?;
    let id =
        cli.ok(&s.issuance, Some(&issuer), &["licence", "issue", "--file", &licence_file.display().to_string()])?;
    zhengzhao_core::LicenceId::parse(&id).with_context(|| format!("issued identifier {id}"))?;

    let got: serde_json::Value = serde_json::from_str(&cli.ok(&s.front, Some(&issuer), &["licence", "get", &id])?)?;
    assert_eq!(got["status"], "valid");
    assert_eq!(got["document"]["identifier"], id.as_str());
    let jws = cli.ok(&s.front, Some(&issuer), &["licence", "get", &id, "--jws"])?;
    let jws_file = cli.write("licence.jws", &jws)?;
    let jwks = cli.ok(&s.signing, Some(&consumer), &["keys", "jwks"])?;
    let jwks_file = cli.write("jwks.json", &jwks)?;

    // Others can verify us: an independent JOSE implementation accepts the JWS...
    let out = jose_verify(&jwks_file, &jws_file)?;
    assert!(out.status.success(), "jwcrypto rejected our JWS: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout)?.trim(), id);
    // ...and rejects it once tampered with.
    let parts: Vec<&str> = jws.split('.').collect();
    let mut payload: serde_json::Value = serde_json::from_slice(&zhengzhao_crypto::b64url_decode(parts[1])?)?;
    payload["holder"]["name"] = "冒名".into();
    let tampered = format!("{}.{}.{}", parts[0], zhengzhao_crypto::b64url(payload.to_string().as_bytes()), parts[2]);
    let tampered_file = cli.write("tampered.jws", &tampered)?;
    assert!(!jose_verify(&jwks_file, &tampered_file)?.status.success(), "jwcrypto accepted a tampered JWS");

    let verified = cli.run(&s.front, Some(&consumer), &["verify", &id])?;
    assert_eq!(verified.status.code(), Some(0), "{}", String::from_utf8_lossy(&verified.stdout));
    assert!(String::from_utf8(verified.stdout)?.starts_with("valid:"));
    let doc = cli.run(&s.front, Some(&consumer), &["verify", "--document", &jws_file.display().to_string()])?;
    assert_eq!(doc.status.code(), Some(0));
    let forged = cli.run(&s.front, Some(&consumer), &["verify", "--document", &tampered_file.display().to_string()])?;
    assert_eq!(forged.status.code(), Some(3));
    assert!(String::from_utf8(forged.stdout)?.starts_with("signature invalid:"));

    // A consumer applies for the type (through the front door), the
    // administrator approves at the exchange, and the consumer uses it.
    let item = "11100000000013338W3000111005000";
    let use_args = ["--cause", "办理食品经营许可延续", "--service-item", item, "--case-number", "2026-0001"];
    let fetch_args: Vec<&str> = ["licence", "fetch", id.as_str()].into_iter().chain(use_args).collect();
    let refused = cli.run(&s.front, Some(&consumer), &fetch_args)?;
    assert_eq!(refused.status.code(), Some(1), "not on the list yet");
    let app = cli.ok(
        &s.front,
        Some(&consumer),
        &["usage-list", "apply", "--type", &code, "--service-item", item, "--purpose", "延续审查", "--all-fields"],
    )?;
    cli.ok(&s.exchange, Some(&admin), &["usage-list", "approve", &app, "--reason", "同意"])?;
    let fetched: serde_json::Value = serde_json::from_str(&cli.ok(&s.front, Some(&consumer), &fetch_args)?)?;
    assert_eq!(fetched["identifier"], id.as_str());
    let found_args: Vec<&str> =
        ["licence", "find", "--holder-id-type", "001", "--holder-id", ISSUER].into_iter().chain(use_args).collect();
    let found = cli.ok(&s.front, Some(&consumer), &found_args)?;
    assert_eq!(found.lines().count(), 1, "{found}");
    let no_cause = cli.run(
        &s.front,
        Some(&consumer),
        &["licence", "fetch", &id, "--cause", "", "--service-item", item, "--case-number", "1"],
    )?;
    assert!(!no_cause.status.success());

    // A holder, logged in by a registered front end, lists their licences
    // and presents one in an approved scenario; staff verify it once.
    let portal = cli.token("portal", "11350000MB01234560")?;
    let scenario = cli.ok(
        &s.front,
        Some(&consumer),
        &[
            "scenario",
            "propose",
            "--name",
            "窗口核验",
            "--type",
            &code,
            "--fields",
            "holder_name,premises",
            "--purpose",
            "窗口核验许可证",
        ],
    )?;
    cli.ok(&s.exchange, Some(&admin), &["scenario", "approve", &scenario])?;
    cli.ok(
        &s.exchange,
        Some(&admin),
        &["frontend", "register", "--name", "闽政通", "--agency", "11350000MB01234560", "--scenario", &scenario],
    )?;
    let holder =
        cli.ok(&s.front, Some(&portal), &["holder", "login", "--holder-id-type", "001", "--holder-id", ISSUER])?;
    let mine = cli.ok(&s.front, Some(&holder), &["holder", "licences"])?;
    assert!(mine.contains(&id), "{mine}");
    let presentation = cli.ok(&s.front, Some(&holder), &["present", &id, "--scenario", &scenario, "--qr", "p.png"])?;
    let p_file = cli.write("presentation.txt", &presentation)?;
    let p_arg = p_file.display().to_string();
    let offline = cli.run(
        &s.front,
        None,
        &["verify", "--presentation", &p_arg, "--offline", "--keys", &jwks_file.display().to_string()],
    )?;
    assert_eq!(offline.status.code(), Some(0), "{}", String::from_utf8_lossy(&offline.stdout));
    let online = cli.run(&s.front, Some(&consumer), &["verify", "--presentation", &p_arg])?;
    assert_eq!(online.status.code(), Some(0), "{}", String::from_utf8_lossy(&online.stdout));
    let replay = cli.run(&s.front, Some(&consumer), &["verify", "--presentation", &p_arg])?;
    assert_eq!(replay.status.code(), Some(3));
    assert!(String::from_utf8(replay.stdout)?.contains("\"replayed\""));

    // Lifecycle verbs: review, loss and its withdrawal, mortgage and release,
    // seizure and return, then a renewal (a new version), then cancellation.
    let next_due = "2099-12-31";
    cli.ok(
        &s.issuance,
        Some(&issuer),
        &["licence", "review", &id, "--reason", "年审", "--result", "合格", "--next-due", next_due],
    )?;
    cli.ok(
        &s.issuance,
        Some(&issuer),
        &["licence", "inspect", &id, "--reason", "年检", "--result", "pass", "--next-due", next_due],
    )?;
    let lost = cli.ok(&s.issuance, Some(&issuer), &["licence", "report-loss", &id, "--reason", "遗失"])?;
    assert!(lost.ends_with("valid, reported lost"), "{lost}");
    let lost_verify = cli.run(&s.front, Some(&consumer), &["verify", &id])?;
    assert!(String::from_utf8(lost_verify.stdout)?.starts_with("reported lost:"));
    for (verb, reason) in
        [("withdraw-loss", "找回"), ("mortgage", "抵押"), ("release", "解押"), ("seize", "暂扣"), ("return", "发还")]
    {
        cli.ok(&s.issuance, Some(&issuer), &["licence", verb, &id, "--reason", reason])?;
    }
    let refused = cli.run(&s.issuance, Some(&issuer), &["licence", "return", &id, "--reason", "再次发还"])?;
    assert!(
        String::from_utf8(refused.stderr)?
            .contains("failed precondition: cannot return a licence whose status is valid (01)")
    );
    let renewed = cli.ok(&s.issuance, Some(&issuer), &["licence", "renew", &id, "--reason", "延续"])?;
    assert_eq!(zhengzhao_core::LicenceId::parse(&renewed)?.version(), 2, "{renewed}");
    // The renewed version stays in force until its successor takes effect.
    let pending = cli.run(&s.front, Some(&consumer), &["verify", &id])?;
    let pending = String::from_utf8(pending.stdout)?;
    assert!(pending.starts_with("valid:") && pending.contains(&renewed), "{pending}");
    let successor = cli.run(&s.front, Some(&consumer), &["verify", &renewed])?;
    assert!(String::from_utf8(successor.stdout)?.starts_with("not yet valid:"));
    let id = renewed;
    let cancelled = cli.ok(&s.issuance, Some(&issuer), &["licence", "cancel", &id, "--reason", "企业申请注销"])?;
    assert!(cancelled.ends_with("cancelled"), "{cancelled}");
    let after = cli.run(&s.front, Some(&consumer), &["verify", &id])?;
    assert_eq!(after.status.code(), Some(3));
    assert!(String::from_utf8(after.stdout)?.starts_with("cancelled:"));
    let history = cli.ok(&s.front, Some(&issuer), &["licence", "history", &id])?;
    let kinds: Vec<String> = history
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(kinds, vec!["renew", "cancel"]);
    // The change feed holds every event, in order.
    let sync = cli.token("sync", ADMIN)?;
    let feed = cli.ok(&s.issuance, Some(&sync), &["licence", "watch"])?;
    let feed_kinds: Vec<String> = feed
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(
        feed_kinds[..12],
        [
            "issue",
            "review",
            "inspect",
            "report_loss",
            "withdraw_loss",
            "mortgage",
            "release",
            "seize",
            "return",
            "renew",
            "renew",
            "cancel"
        ],
        "{feed}"
    );
    // Historical licences from a CSV file: good rows land, a re-run changes nothing,
    // a bad row is reported by number and field with exit code 3.
    let csv = format!(
        "source_key,type_code,issuer_name,serial,holder_name,holder_id_type_code,holder_id_number,issue_date,area_code,\
         face.business_scope,face.premises,face.permit_number,face.main_format\n\
         OLD-1,{code},示例区市场监督管理局,HIST0001,甲公司,001,91350100M000100Y43,2023-05-01,350102,食品销售,某路1号,JY13501020000001,单位食堂\n\
         OLD-2,{code},示例区市场监督管理局,HIST0002,乙公司,001,91110000802100433B,2023-06-01,350102,餐饮服务,某路2号,JY13501020000002,餐饮服务经营者\n"
    );
    let csv_file = cli.write("history.csv", &csv)?;
    let csv_path = csv_file.display().to_string();
    let imported = cli.ok(&s.issuance, Some(&issuer), &["licence", "import", "--file", &csv_path])?;
    assert_eq!(
        imported.lines().last(),
        Some("rows 2, imported 2, already present 0, legacy identifiers 0, refused 0"),
        "{imported}"
    );
    let rerun = cli.ok(&s.issuance, Some(&issuer), &["licence", "import", "--file", &csv_path])?;
    assert!(rerun.ends_with("rows 2, imported 0, already present 2, legacy identifiers 0, refused 0"), "{rerun}");
    let bad = cli.write("bad.csv", &csv.replace("OLD-2", "OLD-3").replace("餐饮服务经营者", "不存在的业态"))?;
    let out = cli.run(&s.issuance, Some(&issuer), &["licence", "import", "--file", &bad.display().to_string()])?;
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("\"row\":2") && stderr.contains("face_fields.main_format"), "{stderr}");

    // Keys and the transparency log: an auditor keeps a checkpoint; the
    // issuer's key is rotated to SM2; the old licence still verifies, the new
    // one is sealed with SM2 and verifies with its log proof; the audit from
    // the kept checkpoint passes for both.
    let auditor = cli.token("auditor", ADMIN)?;
    let checkpoint = cli.ok(&s.front, Some(&auditor), &["log", "checkpoint"])?;
    let checkpoint_file = cli.write("checkpoint.jws", &checkpoint)?;
    let refused = cli.run(&s.signing, Some(&issuer), &["keys", "rotate", "--issuer", ISSUER, "--alg", "sm2"])?;
    assert!(String::from_utf8(refused.stderr)?.starts_with("error: permission denied"));
    let rotated: serde_json::Value = serde_json::from_str(&cli.ok(
        &s.signing,
        Some(&admin),
        &["keys", "rotate", "--issuer", ISSUER, "--alg", "sm2", "--reason", "国密改造"],
    )?)?;
    assert_eq!(
        (rotated["retired"]["status"].as_str(), rotated["active"]["algorithm"].as_str()),
        (Some("retired"), Some("sm2"))
    );
    let sealed =
        cli.ok(&s.issuance, Some(&issuer), &["licence", "issue", "--file", &licence_file.display().to_string()])?;
    let sealed_jws = cli.ok(&s.front, Some(&issuer), &["licence", "get", &sealed, "--jws"])?;
    assert_eq!(zhengzhao_crypto::jws::parse(&sealed_jws)?.header.alg, "SM2SM3");
    let proven = cli.run(&s.front, Some(&consumer), &["verify", &sealed, "--with-proof"])?;
    let proven_out = String::from_utf8(proven.stdout)?;
    assert_eq!(proven.status.code(), Some(0), "{proven_out}");
    assert!(proven_out.contains("log: 1 event(s) proven against the checkpoint of"), "{proven_out}");
    let keys = cli.ok(&s.signing, Some(&consumer), &["keys", "list", "--issuer", ISSUER])?;
    assert_eq!(keys.lines().count(), 2, "{keys}");
    let ids = cli.write("audit-licences.txt", &format!("{id}\n{sealed}\n"))?;
    let audited = cli.ok(
        &s.front,
        Some(&auditor),
        &["audit", "--from", &checkpoint_file.display().to_string(), "--licences", &ids.display().to_string()],
    )?;
    assert!(audited.starts_with("audit passed:") && audited.ends_with("2 licence(s) proven"), "{audited}");

    // No token: a clear error.
    let anonymous = cli.run(&s.front, None, &["verify", &id])?;
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(String::from_utf8(anonymous.stderr)?.contains("no token"));
    Ok(())
}

#[tokio::test]
async fn all_in_one_on_sqlite() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let d = data.display().to_string();
    let server = ServerProcess::start(
        "zhengzhao",
        &["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), d],
        &[],
    )
    .await?;
    assert!(data.join("token-key.pem").exists(), "the library's keys are created on first start");
    assert!(data.join("issuance.db").exists(), "SQLite files live under the data directory");
    let url = server.url();
    let cli = Cli { data_dir: data, work: work.path().to_path_buf() };
    let servers = Servers {
        catalog: url.clone(),
        issuance: url.clone(),
        signing: url.clone(),
        exchange: url.clone(),
        front: url,
    };
    let result = tokio::task::spawn_blocking(move || tour(&cli, &servers)).await?;
    server.stop().await;
    result
}

#[tokio::test]
async fn separate_services_on_postgres_behind_the_gateway() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let url = db.url().context("postgres")?.to_owned();
    let work = tempfile::tempdir()?;
    let data = work.path().join("keys");
    // Each process gets only the directory `init --split` lays out for it;
    // the CLI mints tokens from the operator's.
    zhengzhao_server::keys::init_split(&data)?;
    let dir_of = |name: &str| data.join(name).display().to_string();
    let base_in = |name: &str, extra: &[String]| -> Vec<String> {
        let d = dir_of(name);
        let mut v: Vec<String> = ["--listen", "127.0.0.1:0", "--data-dir", &d, "--database-url", &url]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        v.extend_from_slice(extra);
        v
    };
    // Every process but the catalogue follows the catalogue's list of revoked tokens.
    let catalog = ServerProcess::start("zhengzhao-catalog", &base_in("catalog", &[]), &[]).await?;
    let signing =
        ServerProcess::start("zhengzhao-signing", &base_in("signing", &["--catalog-url".into(), catalog.url()]), &[])
            .await?;
    let issuance = ServerProcess::start(
        "zhengzhao-issuance",
        &base_in("issuance", &["--catalog-url".into(), catalog.url(), "--signing-url".into(), signing.url()]),
        &[],
    )
    .await?;
    let verification = ServerProcess::start(
        "zhengzhao-verification",
        &base_in(
            "verification",
            &[
                "--issuance-url".into(),
                issuance.url(),
                "--signing-url".into(),
                signing.url(),
                "--catalog-url".into(),
                catalog.url(),
            ],
        ),
        &[],
    )
    .await?;
    let exchange = ServerProcess::start(
        "zhengzhao-exchange",
        &base_in(
            "exchange",
            &[
                "--issuance-url".into(),
                issuance.url(),
                "--catalog-url".into(),
                catalog.url(),
                "--signing-url".into(),
                signing.url(),
            ],
        ),
        &[],
    )
    .await?;
    let gateway_config = work.path().join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "[[gateway.libraries]]\nname = \"city\"\naddress = \"{}\"\nissuance = \"{}\"\nverification = \"{}\"\nexchange = \"{}\"\n",
            issuance.url(),
            issuance.url(),
            verification.url(),
            exchange.url()
        ),
    )?;
    let gateway = ServerProcess::start(
        "zhengzhao-gateway",
        &[
            "--config".into(),
            gateway_config.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir_of("gateway"),
            "--catalog-url".into(),
            catalog.url(),
        ],
        &[],
    )
    .await?;
    let cli = Cli { data_dir: data.join("operator"), work: work.path().to_path_buf() };
    let servers = Servers {
        catalog: catalog.url(),
        issuance: issuance.url(),
        signing: signing.url(),
        exchange: exchange.url(),
        front: gateway.url(),
    };
    let result = tokio::task::spawn_blocking(move || tour(&cli, &servers)).await?;
    for p in [gateway, exchange, verification, issuance, catalog, signing] {
        p.stop().await;
    }
    result
}
