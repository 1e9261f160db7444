"""``report.md`` and ``report.html`` from evaluation results: the same blocks rendered twice.

A report is a list of blocks (heading, paragraph, bullet list, table, image); both renderers walk
the same list, so the two files always say the same thing. Images are PNGs next to the report,
linked from Markdown and embedded (base64) in the HTML so that file can be mailed on its own.
"""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from robustdistiller.atomic import atomic_write
from robustdistiller.evaluate.plots import all_plots, caption
from robustdistiller.evaluate.results import Results
from robustdistiller.evaluate.rows import DistortionRow


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report's folder
    caption: str


Block = Heading | Paragraph | Bullets | Table | Code | Image


def fmt(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    """A table cell: "-" for a missing or non-finite value, floats to ``digits`` places (with their sign
    when ``signed``: a difference), large integers in thousands or millions."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value / 1e6:.2f} M" if abs(value) >= 1_000_000 else f"{value:,}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    return Table(tuple(header), tuple(tuple(fmt(v) for v in row) for row in rows))


# -------------------------------------------------------------------------------- content


def _setup_blocks(results: Results) -> list[Block]:
    models = [
        f"**{m['name']}** ({m['kind']}, {m['format']}, {fmt(m['parameters'])} parameters"
        + (f", teacher `{m['teacher']}`" if m.get("teacher") else "")
        + (", with enhancement head" if m.get("has_enhancement") else "")
        + f"): `{m['path']}`"
        for m in results.models
    ]
    kinds: dict[str, int] = defaultdict(int)
    for c in results.conditions:
        kinds[c["kind"]] += 1
    tasks = [
        f"**{t['name']}**: {t['description']}; train/val/test = "
        f"{t['splits']['train']}/{t['splits']['val']}/{t['splits']['test']}"
        + (f" ({'; '.join(t['notes'])})" if t.get("notes") else "")
        for t in results.tasks
    ]
    return [
        Heading("Setup"),
        Bullets(tuple(models)),
        Paragraph(
            f"{len(results.conditions)} conditions ("
            + ", ".join(f"{n} {k}" for k, n in kinds.items())
            + f"), seed {results.seed}, condition-set fingerprint `{results.condition_fingerprint}`; "
            f"probes trained on **{results.train_on}** features"
            + (" (quick mode: small subsets, short probe training)" if results.quick else "")
            + "."
        ),
        Bullets(tuple(tasks)),
    ]


def _headline_blocks(results: Results) -> list[Block]:
    if not results.headline:
        return []
    rows = [
        (
            h.model,
            h.task,
            h.metric,
            h.chance,
            h.clean,
            h.mean_corrupted,
            h.mean_noise,
            h.mean_reverb,
            None if h.relative_drop is None else f"{100 * h.relative_drop:.1f}",
            h.drop_above_chance,
            h.parameters,
            h.rtf_1_thread,
        )
        for h in results.headline
    ]
    return [
        Heading("Headline"),
        Paragraph(
            "Probe score on clean audio, its mean over every corrupted condition (and over the noise-only "
            "and reverberation-only ones), the relative drop from clean in %, the drop above chance "
            "(1 - (mean corrupted - chance) / (clean - chance): the share of the above-chance accuracy lost; "
            "chance = always answering the test split's most frequent class), size and 1-thread real-time factor."
        ),
        _table(
            (
                "model",
                "task",
                "metric",
                "chance",
                "clean",
                "mean corrupted",
                "mean noise",
                "mean reverb",
                "drop %",
                "drop above chance",
                "params",
                "RTF (1 thr)",
            ),
            rows,
        ),
    ]


def _probe_blocks(results: Results) -> list[Block]:
    blocks: list[Block] = []
    models = list(dict.fromkeys(p.model for p in results.probes))
    for task in dict.fromkeys(p.task for p in results.probes):
        value = {(p.model, p.condition): p for p in results.probes if p.task == task}
        rows = []
        for c in results.conditions:
            cells: list[Any] = [c["id"]]
            for m in models:
                p = value.get((m, c["id"]))
                cells.append(
                    "-"
                    if p is None
                    else f"{fmt(p.value)} ({fmt(-p.degradation, 3)})"
                    if c["id"] != "clean"
                    else fmt(p.value)
                )
            rows.append(cells)
        metric = next(p.metric for p in results.probes if p.task == task)
        blocks += [
            Heading(f"Probe {metric}: {task}", 3),
            Paragraph("In brackets: difference from clean, signed so that negative is worse."),
            Table(("condition", *models), tuple(tuple(r) for r in rows)),
        ]
    return [Heading("Probes"), *blocks] if blocks else []


def _distortion_blocks(results: Results) -> list[Block]:
    rows_by: dict[tuple[str, str, str], list[DistortionRow]] = defaultdict(list)
    for r in results.distortion:
        rows_by[(r.model, r.reference, r.condition)].append(r)
    if not rows_by:
        return []
    models = list(dict.fromkeys(k[0] for k in rows_by))
    blocks: list[Block] = [
        Heading("Representation distortion"),
        Paragraph(
            "Mean over compared layers of the per-element L1 distance and the per-frame cosine similarity. "
            "*vs teacher(clean)*: each student's prediction heads on corrupted audio against the teacher "
            "layers they were trained to predict, on clean audio (for the teacher: its own layers). "
            "*vs own clean*: every hidden state on corrupted vs clean audio. Per-layer values are in "
            "`tables/distortion.csv`."
        ),
    ]
    for reference, title in (("teacher_clean", "vs teacher(clean)"), ("self_clean", "vs own clean")):
        rows = []
        for c in results.conditions:
            cells: list[Any] = [c["id"]]
            present = False
            for m in models:
                got = rows_by.get((m, reference, c["id"]))
                if got:
                    present = True
                    cells.append(
                        f"{fmt(sum(r.l1 for r in got) / len(got))} / {fmt(sum(r.cosine for r in got) / len(got))}"
                    )
                else:
                    cells.append("-")
            if present:
                rows.append(tuple(cells))
        if rows:
            blocks += [Heading(f"L1 / cosine {title}", 3), Table(("condition", *models), tuple(rows))]
    return blocks


def _enhancement_blocks(results: Results) -> list[Block]:
    if not results.enhancement:
        return []
    rows = [
        (e.model, e.dataset, e.condition, e.n, e.noisy_pesq_wb, e.pesq_wb, e.noisy_stoi, e.stoi, e.si_snr_improvement)
        for e in results.enhancement
    ]
    return [
        Heading("Speech enhancement"),
        Paragraph(
            "Enhancement heads applied to corrupted audio, scored against the clean signal "
            "(means over utterances; '-' where the metric could not be computed)."
        ),
        _table(
            (
                "model",
                "data",
                "condition",
                "n",
                "PESQ-wb noisy",
                "PESQ-wb enh.",
                "STOI noisy",
                "STOI enh.",
                "SI-SNR impr. (dB)",
            ),
            rows,
        ),
    ]


def _efficiency_blocks(results: Results) -> list[Block]:
    if not results.efficiency:
        return []
    rows = [
        (
            e.model,
            e.parameters,
            None if e.macs_per_second is None else e.macs_per_second / 1e9,
            e.rtf_1_thread,
            e.rtf_2_threads,
            e.peak_memory_mb,
        )
        for e in results.efficiency
    ]
    return [
        Heading("Efficiency"),
        Paragraph(
            "CPU, one forward pass of the upstream. GMACs per second of audio; real-time factor = "
            "compute time / audio duration (median); peak memory = resident-set growth while loading the "
            "model and running one pass, in a fresh process."
        ),
        _table(("model", "params", "GMACs/s", "RTF 1 thr", "RTF 2 thr", "peak MiB"), rows),
    ]


def _skipped_blocks(results: Results) -> list[Block]:
    if not results.skipped:
        return []
    reasons: dict[str, int] = defaultdict(int)
    for s in results.skipped:
        reasons[s["reason"]] += 1
    return [
        Heading("Skipped inputs"),
        Paragraph(
            f"{len(results.skipped)} files could not be used ("
            + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            + "); see `tables/skipped.csv`."
        ),
    ]


def build_blocks(results: Results, images: Sequence[Path], title: str, intro: Sequence[Block] = ()) -> list[Block]:
    plots: list[Block] = [Heading("Plots"), *(Image(p, caption(p, results)) for p in images)] if images else []
    return [
        Heading(title, 1),
        *intro,
        *_headline_blocks(results),
        *plots,
        *_setup_blocks(results),
        *_probe_blocks(results),
        *_distortion_blocks(results),
        *_enhancement_blocks(results),
        *_efficiency_blocks(results),
        *_skipped_blocks(results),
    ]


# ----------------------------------------------------------------------------- renderers


def render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Image):
            out.append(f"![{b.caption}]({b.path.as_posix()})\n\n*{b.caption}*")  # alt text is not shown as a caption
        else:
            lines = ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """The two inline Markdown marks the report uses: **bold** and `code`."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = f"<code>{parts[i]}</code>"
    joined = "".join(parts)
    bold = joined.split("**")
    for i in range(1, len(bold), 2):
        bold[i] = f"<b>{bold[i]}</b>"
    joined = "".join(bold)
    italic = joined.split("*")
    for i in range(1, len(italic), 2):
        italic[i] = f"<i>{italic[i]}</i>"
    return "".join(italic)


_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
    "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}td:first-child{text-align:left}"
    "img{max-width:min(100%,720px)}code,pre{background:#f3f3f3}"
    # Long commands and paths wrap instead of widening the page.
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;padding:0.5em}code{overflow-wrap:anywhere}"
    "figure{margin:1em 0}figcaption{font-size:0.9em;color:#444}"
)


def render_html(blocks: Sequence[Block], base_dir: Path) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "report")
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>"
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Image):
            data = base64.b64encode((base_dir / b.path).read_bytes()).decode()
            out.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b.caption)}'>"
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><tr>{head}</tr>{body}</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _utf8_writer(text: str) -> Callable[[BinaryIO], object]:
    """A writer for :func:`atomic_write` that stores ``text`` as UTF-8."""
    return lambda fh: fh.write(text.encode("utf-8"))


def write_report(
    results: Results, out_dir: str | Path, *, title: str = "Robustness evaluation", intro: Sequence[Block] = ()
) -> tuple[Path, Path]:
    """Plots under ``out_dir/plots``, then ``report.md`` and ``report.html``; returns both report paths."""
    out_dir = Path(out_dir)
    images = [p.relative_to(out_dir) for p in all_plots(results, out_dir / "plots")]
    blocks = build_blocks(results, images, title, intro)
    md, page = out_dir / "report.md", out_dir / "report.html"
    for path, text in ((md, render_markdown(blocks)), (page, render_html(blocks, out_dir))):
        atomic_write(path, _utf8_writer(text))
    return md, page
