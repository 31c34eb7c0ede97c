//! Renders copies and reads them back with poppler-utils (pdftotext,
//! pdftoppm, pdfinfo) and zbar-tools (zbarimg). These tools are required:
//! a missing one fails the test (scripts/test installs them).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use zhengzhao_pdf::{CopyFace, CopyFont, PdfError, render};

const URL: &str = "http://127.0.0.1:8080/copies/3f2a9c1e-7b4d-4e8a-9f10-2c6d8e5b7a31/verify";

/// Runs a tool, failing with what to install when it is missing.
fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        anyhow::anyhow!("cannot run {tool} ({e}): install poppler-utils and zbar-tools (scripts/test installs them)")
    })?;
    if !out.status.success() {
        bail!("{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn s(x: &str) -> String {
    x.to_string()
}

fn face() -> CopyFace {
    CopyFace {
        title: s("食品经营许可证"),
        identifier: s("1.2.156.3005.2.11100000000013127D.JY0001.11010520250001.001"),
        licence_number: s("JY11105052025000123"),
        holder_name: s("张三餐饮有限公司"),
        holder_id: s("91110105****1234X"),
        issuer_name: s("北京市朝阳区市场监督管理局"),
        issue_date: s("2025-03-01"),
        valid_from: s("2025-03-01"),
        valid_until: s("2030-02-28"),
        fields: vec![
            (s("经营场所"), s("北京市朝阳区建国路88号\n1层101室")),
            (
                s("经营项目"),
                s(
                    "热食类食品制售；冷食类食品制售；自制饮品制售；预包装食品（含冷藏冷冻食品）销售；散装食品（含冷藏冷冻食品）销售，包括但不限于熟食、糕点、面包、饮料与乳制品；以及 Some Latin words wrapping nicely",
                ),
            ),
            // 𓀀 is not in the font: drawn as .notdef, no error.
            (s("备注"), s("含缺字 𓀀 测试")),
        ],
        withheld: 2,
        annotation: vec![
            (s("用证单位"), s("北京市朝阳区政务服务管理局")),
            (s("经办人"), s("李四")),
            (s("用证事由"), s("办理食品经营许可变更")),
            (s("办件编号"), s("BJCY-2025-000321")),
            (s("用证时间"), s("2025-06-01 10:30:00")),
            (s("加注件有效期至"), s("2025-07-01")),
            (s("加注件编号"), s("3f2a9c1e-7b4d-4e8a-9f10-2c6d8e5b7a31")),
        ],
        watermark: s("仅供 北京市朝阳区政务服务管理局 用于 办理食品经营许可变更 使用"),
        verify_url: s(URL),
    }
}

fn pages(pdf: &Path) -> Result<usize> {
    let info = run("pdfinfo", &[pdf.to_str().context("path")?])?;
    let line = info.lines().find(|l| l.starts_with("Pages:")).context("no Pages: in pdfinfo")?;
    Ok(line["Pages:".len()..].trim().parse()?)
}

#[test]
fn copy_has_text_qr_and_watermark() -> Result<()> {
    let font = CopyFont::find_default()?;
    let started = std::time::Instant::now();
    let pdf = render(&font, &face())?;
    eprintln!("rendered {} bytes in {:?} with {font:?}", pdf.len(), started.elapsed());
    assert!(pdf.len() < 2_000_000, "the font should be subsetted: {} bytes", pdf.len());

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("copy.pdf");
    std::fs::write(&file, &pdf)?;
    let path = file.to_str().context("path")?;
    assert_eq!(pages(&file)?, 1);

    let text = run("pdftotext", &["-layout", path, "-"])?;
    for want in
        ["食品经营许可证", "张三餐饮有限公司", "办理食品经营许可变更", "另有 2 项内容按用证清单不予显示", "用证单位"]
    {
        assert!(text.contains(want), "{want:?} not in the text:\n{text}");
    }
    // The newline inside a value was printed as a space.
    assert!(text.contains("建国路88号 1层101室"), "{text}");
    // The watermark is rotated 30°: pdftotext cuts it into one-character
    // words, which -layout scatters; -raw keeps them in drawing order, so the
    // three repetitions come back whole once whitespace is removed.
    let raw = run("pdftotext", &["-raw", path, "-"])?;
    let squeezed: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let mark = "仅供北京市朝阳区政务服务管理局用于办理食品经营许可变更使用";
    assert_eq!(squeezed.matches(mark).count(), 3, "watermark not found 3 times in:\n{raw}");

    let png = dir.path().join("page");
    run("pdftoppm", &["-r", "150", "-png", "-singlefile", path, png.to_str().context("path")?])?;
    let decoded = run("zbarimg", &["--quiet", "--raw", dir.path().join("page.png").to_str().context("path")?])?;
    assert_eq!(decoded.trim(), URL);
    Ok(())
}

#[test]
fn long_faces_continue_on_new_pages() -> Result<()> {
    let font = CopyFont::find_default()?;
    let mut face = face();
    face.fields = (1..=40)
        .map(|i| (format!("字段标签{i:02}"), format!("第{i}项的值，").repeat(12 + i % 5)))
        .chain([(s("超长"), "很长的内容".repeat(700))]) // taller than a page
        .collect();
    let pdf = render(&font, &face)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("long.pdf");
    std::fs::write(&file, &pdf)?;
    let n = pages(&file)?;
    eprintln!("{n} pages, {} bytes", pdf.len());
    assert!(n >= 2, "{n} pages");
    let text = run("pdftotext", &["-layout", file.to_str().context("path")?, "-"])?;
    for i in 1..=40 {
        let label = format!("字段标签{i:02}");
        assert!(text.contains(&label), "{label} missing");
    }
    // pdftotext drops the narrow spaces of the page numbers.
    let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(squeezed.contains(&format!("第{n}页/共{n}页")), "no page number {n}");
    assert!(squeezed.contains("（续）"), "a split row is marked as continued");
    Ok(())
}

#[test]
fn fonts_load_or_say_why() -> Result<()> {
    let font = CopyFont::find_default()?;
    assert!(font.path().exists());
    assert!(!format!("{font:?}").contains("data"));

    let dir = tempfile::tempdir()?;
    let bogus = dir.path().join("not-a-font.ttf");
    std::fs::write(&bogus, b"this is no font")?;
    match CopyFont::load(&bogus, 0) {
        Err(e @ PdfError::Font { .. }) => assert!(e.to_string().contains(bogus.to_str().context("path")?), "{e}"),
        other => panic!("expected PdfError::Font, got {other:?}"),
    }
    match CopyFont::load(&dir.path().join("missing.ttc"), 0) {
        Err(PdfError::Font { .. }) => {}
        other => panic!("expected PdfError::Font, got {other:?}"),
    }
    let none = PdfError::NoFont { tried: vec!["/a.ttc".into()] }.to_string();
    assert!(none.contains("/a.ttc") && none.contains("fonts-noto-cjk"), "{none}");
    Ok(())
}
