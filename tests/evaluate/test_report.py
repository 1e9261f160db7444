"""Results document and report rendering on hand-made results (no models involved)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from robustdistiller.evaluate.report import (
    Bullets,
    Code,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
    write_report,
)
from robustdistiller.evaluate.results import Results, drop_above_chance, headline_rows


def _results() -> Results:
    conditions = [
        {"id": "clean", "kind": "clean", "snr_db": None, "rt60": None},
        {"id": "noise/white/snr+0", "kind": "noise", "snr_db": 0.0, "rt60": None},
        {"id": "noise/white/snr+10", "kind": "noise", "snr_db": 10.0, "rt60": None},
        {"id": "reverb/rt0.6", "kind": "reverb", "snr_db": None, "rt60": 0.6},
    ]
    scores = {"a": [0.9, 0.3, 0.6, 0.6], "b": [0.8, 0.6, 0.7, 0.7]}
    probes = [
        {"model": m, "task": "kw", "condition": c["id"], "metric": "accuracy", "value": v, "degradation": s[0] - v}
        for m, s in scores.items()
        for c, v in zip(conditions, s)
    ]
    distortion = [
        {
            "model": m,
            "condition": c["id"],
            "reference": ref,
            "layer": f"L{i}",
            "index_a": i,
            "index_b": i,
            "l1": 0.1 * i + (0.5 if m == "a" else 0.2),
            "cosine": 0.9 - 0.1 * i,
            "frames": 10,
        }
        for m in scores
        for c in conditions
        for i in (1, 2)
        for ref in ("self_clean", "teacher_clean")
        if not (ref == "self_clean" and c["kind"] == "clean")
    ]
    return Results(
        seed=0,
        train_on="clean",
        quick=True,
        condition_fingerprint="abc",
        conditions=conditions,
        tasks=[
            {
                "name": "kw",
                "metric": "accuracy",
                "description": "keywords",
                "notes": [],
                "splits": {"train": 5, "val": 2, "test": 3},
            }
        ],
        models=[
            {
                "name": m,
                "kind": "student",
                "format": "s3prl",
                "parameters": 1234,
                "path": f"{m}.ckpt",
                "teacher": None,
                "has_enhancement": False,
            }
            for m in scores
        ],
        probes=probes,
        distortion=distortion,
        efficiency=[
            {
                "model": m,
                "parameters": 1234,
                "macs_per_second": 2e9,
                "rtf_1_thread": 0.02,
                "rtf_2_threads": 0.012,
                "peak_memory_mb": None,
            }
            for m in scores
        ],
        skipped=[{"path": "x.wav", "reason": "too_short", "detail": ""}],
    )


def test_headline_rows() -> None:
    rows = {r["model"]: r for r in headline_rows(_results())}
    assert rows["a"]["clean"] == 0.9 and rows["a"]["mean_corrupted"] == pytest.approx(0.5)
    assert rows["a"]["mean_noise"] == pytest.approx(0.45) and rows["a"]["mean_reverb"] == pytest.approx(0.6)
    assert rows["a"]["relative_drop"] == pytest.approx(0.4 / 0.9)
    assert rows["b"]["relative_drop"] == pytest.approx((0.8 - 2.0 / 3.0) / 0.8)
    assert rows["b"]["parameters"] == 1234 and rows["b"]["rtf_1_thread"] == 0.02
    assert rows["a"]["drop_above_chance"] is None  # the task records no chance level


def test_drop_above_chance_by_hand() -> None:
    # clean 0.9, corrupted 0.5, chance 0.1: 0.8 above chance clean, 0.4 left -> half of it lost.
    assert drop_above_chance(0.9, 0.5, 0.1) == pytest.approx(0.5)
    assert drop_above_chance(0.9, 0.1, 0.1) == pytest.approx(1.0)  # down to chance: everything lost
    assert drop_above_chance(0.9, 0.9, 0.1) == pytest.approx(0.0)
    assert drop_above_chance(0.1, 0.1, 0.1) is None  # at chance on clean audio: nothing to lose
    assert drop_above_chance(None, 0.5, 0.1) is None
    results = _results()
    results.tasks[0]["chance"] = 0.5
    rows = {r["model"]: r for r in headline_rows(results)}
    assert rows["a"]["drop_above_chance"] == pytest.approx(1 - (0.5 - 0.5) / (0.9 - 0.5))
    assert rows["a"]["noise_drop_above_chance"] == pytest.approx(1 - (0.45 - 0.5) / 0.4)
    assert rows["b"]["reverb_drop_above_chance"] == pytest.approx(1 - (0.7 - 0.5) / (0.8 - 0.5))


def test_results_roundtrip_turns_nan_into_null(tmp_path: Path) -> None:
    results = _results()
    results.probes[0]["value"] = math.nan
    paths = results.write(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["probes"][0]["value"] is None
    assert Results.read(paths["json"]).condition_fingerprint == "abc"
    assert (tmp_path / "tables" / "skipped.csv").read_text().splitlines()[1].startswith("x.wav,too_short")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        Results.read(bad)


def test_markdown_and_html_say_the_same_thing(tmp_path: Path) -> None:
    blocks = [
        Heading("T", 1),
        Paragraph("a **bold** `code` line"),
        Bullets(("x", "y")),
        Table(("h1", "h2"), (("a|b", "1"),)),
        Code("cmd --flag"),
    ]
    md = render_markdown(blocks)
    assert "# T" in md and "| a\\|b | 1 |" in md and "```\ncmd --flag\n```" in md and "- x\n- y" in md
    html = render_html(blocks, tmp_path)
    assert (
        "<b>bold</b>" in html
        and "<code>code</code>" in html
        and "<td>a|b</td>" in html
        and "<pre>cmd --flag</pre>" in html
    )


def test_write_report_plots_and_sections(tmp_path: Path) -> None:
    results = _results()
    results.headline = headline_rows(results)
    md_path, html_path = write_report(results, tmp_path, title="My eval", intro=[Paragraph("hello intro")])
    md = md_path.read_text()
    assert md.startswith("# My eval\n\nhello intro")
    for section in (
        "## Headline",
        "## Plots",
        "## Setup",
        "## Probes",
        "## Representation distortion",
        "## Efficiency",
        "## Skipped inputs",
    ):
        assert section in md
    assert "Speech enhancement" not in md  # no enhancement rows, no section
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert plots == [
        "distortion_a.png",
        "distortion_b.png",
        "reverb_kw.png",
        "snr_kw.png",
        "teacher_distortion_vs_snr.png",
    ]
    assert html_path.read_text().count("data:image/png;base64,") == len(plots)
