"""Seeing a run: the loss plot, the report page (rendered in real headless Chromium), the terminal
summary and the inferred shapes."""

import html
import json
import math
import os
import shutil
import subprocess
import sys
from xml.etree import ElementTree

import pytest

from bytelm import models
from bytelm.artifacts import train_log
from bytelm.reporting import browser, charts, plots, report, shapes
from bytelm.training.loop import train_and_evaluate
from conftest import CONFIGS, REPO, load_config, mirror_env, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def inspect(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "launch.inspect", *args],
        cwd=REPO,
        env=mirror_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def plotted_run(tiny_shakespeare, tmp_path_factory):
    """A real 6-step run with a sample, evaluating every 2 steps and plotting at each evaluation;
    `drawn` holds the number of evaluations in the log at each drawing of the plot."""
    drawn = []
    real_write = plots.write

    def counting_write(out, runs):
        drawn.append(len(runs[0][1]["evaluations"]))
        return real_write(out, runs)

    workdir = tmp_path_factory.mktemp("seen")
    cfg = tiny_config(
        tiny_shakespeare, sample__generate=24, train__steps=6, train__eval_every=2, train__plot_every_eval=True
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "write", counting_write)
        summary = train_and_evaluate(cfg, workdir, out=lambda s: None, stream=lambda s: None)
    return cfg, workdir, summary, drawn


def test_training_draws_the_plot_at_every_evaluation_and_at_the_end(plotted_run):
    _, workdir, _, drawn = plotted_run
    # Evaluations at steps 0, 2, 4 and 6: redrawn after each of the three in training, then once at the end.
    assert drawn == [2, 3, 4, 4]
    assert (workdir / "loss.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_cli_draws_several_runs(plotted_run, tmp_path):
    _, workdir, _, _ = plotted_run
    other = tmp_path / "other"
    other.mkdir()
    log = json.loads((workdir / "train_log.json").read_text())
    log["series"][0]["values"] = [v + 0.5 for v in log["series"][0]["values"]]
    (other / "train_log.json").write_text(json.dumps(log))
    out = tmp_path / "both.png"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.plot", str(workdir / "train_log.json"), str(other / "train_log.json"),
         f"--out={out}"],
        cwd=REPO, env=mirror_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "(2 runs)" in proc.stdout
    assert out.read_bytes().startswith(PNG_MAGIC)
    # Both runs are drawn and labelled by their folder: the legend holds both names.
    png, warnings = plots.render([(workdir.name, log), ("other", log)])
    assert png.startswith(PNG_MAGIC) and warnings == []


def test_plot_of_a_mismatched_log_warns_and_still_draws():
    log = {"series": [{"name": "loss", "values": [3.0, 2.0, 1.5], "steps": [1, 2]}]}
    png, warnings = plots.render([("bad", log)])
    assert png.startswith(PNG_MAGIC)
    assert warnings == ["bad: series 'loss' has 3 values but 2 steps: using the common part"]


def _assert_page_holds_the_run(page: str, workdir, summary) -> None:
    """Charts, the last steps, both probes, the sample, the parameter table and the config."""
    assert '<div class="charts" id="charts">' in page
    # matplotlib's charts: every series of the log drawn and named, the per-step fields beside them.
    assert 'id="series-loss"' in page and 'id="series-val_loss"' in page and 'aria-label="grad_norm"' in page
    assert 'aria-label="loss (nats per byte)"' in page and 'aria-label="tokens_per_s"' in page
    assert page.count("<tr>", page.index('id="last-steps"'), page.index("Probe")) == 1 + 6  # header + 6 steps
    assert "before training: loss" in page and "after training: loss" in page
    log = train_log.read(workdir / "train_log.json")
    generated = html.escape(log["sample"]["generated"], quote=True)
    assert f'<pre id="sample"><b>{log["sample"]["prompt"]}</b>{generated}</pre>' in page
    assert 'id="parameters"' in page and "params/wte" in page and 'class="hist"' in page
    assert f"{summary['params']:,} parameters in" in page
    assert "<details><summary>config.json</summary>" in page and "warning:" not in page


def test_report_page_holds_the_run(plotted_run, tmp_path):
    """The page as `launch.inspect` writes it; no browser needed, so this runs everywhere."""
    _, workdir, summary, _ = plotted_run
    run_copy = tmp_path / "run"
    shutil.copytree(workdir, run_copy)
    proc = inspect(f"--workdir={run_copy}")
    assert f"report: {run_copy}/report.html" in proc.stdout
    assert f"{summary['params']:,} params, 6 steps" in proc.stdout  # the terminal summary
    _assert_page_holds_the_run((run_copy / "report.html").read_text(), run_copy, summary)


def test_report_page_in_headless_chromium(plotted_run):
    """The same page as Chromium parses and lays it out, and its screenshot."""
    if browser.find_chromium() is None:
        # CI (.ci/run) installs Chromium and says so: there, a browser we cannot find is a failure.
        # Elsewhere only the rendering goes unchecked: the page's content is checked above.
        if os.environ.get("BYTELM_REQUIRE_CHROMIUM") == "1":
            pytest.fail("BYTELM_REQUIRE_CHROMIUM=1 but browser.find_chromium() found no Chromium")
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium): the page was not rendered")
    _, workdir, summary, _ = plotted_run
    inspect(f"--workdir={workdir}", "--screenshot")
    _assert_page_holds_the_run(browser.rendered_dom(workdir / "report.html"), workdir, summary)
    shot = workdir / "report.png"
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 20_000


def test_report_warns_about_a_broken_run_instead_of_crashing(plotted_run, tmp_path):
    _, workdir, _, _ = plotted_run
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    log = json.loads((broken / "train_log.json").read_text())
    log["series"][1]["steps"] = log["series"][1]["steps"][:-1]  # val_loss: one step short
    log["sample"] = None
    (broken / "train_log.json").write_text(json.dumps(log))
    (broken / "params.json").unlink()
    page, warnings, _ = report.render(broken)
    assert any("series 'val_loss' has 4 values but 3 steps" in w for w in warnings)
    assert any("no sample in the log" in w for w in warnings)
    assert any("params.json is missing" in w for w in warnings)
    assert page.count('<div class="warn">') == len(warnings) == 3
    (broken / "train_log.json").write_text("{not json")
    page, warnings, _ = report.render(broken)
    assert any("could not be read" in w for w in warnings) and "<h1>" in page


@pytest.mark.parametrize("config, total", [("gpt2_tiny", 834_304), ("mamba_tiny", 499_328), ("gpt2_speedrun", 426_752)])
def test_shapes_print_modules_and_parameters_without_training(config, total):
    proc = inspect(f"--config={CONFIGS}/{config}.py", "--shapes")
    lines = proc.stdout.splitlines()
    assert lines[-1].split()[0] == "total" and lines[-1].split()[-1] == f"{total:,}"
    if config == "gpt2_tiny":
        assert any(line.split()[:2] == ["h_0/mlp/fc", "Dense"] and "float32[12, 64, 512]" in line for line in lines)
    elif config == "gpt2_speedrun":  # QK-norm over each head's 32 channels; rotary positions: no wpe
        assert any(line.split()[:2] == ["h_0/attn/q_norm", "RMSNorm"] and "[24, 64, 4, 32]" in line for line in lines)
        assert "params/wpe" not in proc.stdout and "params/h_0/attn/qkv/bias" not in proc.stdout
    else:
        expected = "float32[12, 256, 128] -> float32[12, 256, 512]"
        assert any(line.split()[:2] == ["layers_0/mixer/in_proj", "Dense"] and expected in line for line in lines)
    # The same count training reports: shapes come from the model, not from a second bookkeeping.
    model = models.build(load_config(config).model)
    assert models.count_params(shapes.parameter_shapes(model)) == total


def test_gpt2_small_has_gpt2_small_shapes_at_the_byte_vocabulary():
    model = models.build(load_config("gpt2_small").model)  # shapes only: nothing is allocated
    params = shapes.parameter_shapes(model)  # {"params/h_0/attn/qkv/kernel": shape, ...}
    shape = lambda path: tuple(getattr(params[f"params/{path}"], "shape", params[f"params/{path}"]))
    assert shape("h_11/mlp/fc/kernel") == (768, 3072)
    assert shape("wpe") == (1024, 768) and shape("wte") == (256, 768)
    # 12 × 7,087,872 per block + 256·768 + 1024·768 + the final LayerNorm's 1,536
    assert models.count_params(shapes.parameter_shapes(model)) == 86_039_040


def test_shapes_total_matches_what_training_reported(plotted_run):
    cfg, _, summary, _ = plotted_run
    calls = shapes.module_calls(models.build(cfg.model), 2, cfg.model.seq_len)
    assert calls[0].path == "" and calls[0].outputs == [f"float32[2, {cfg.model.seq_len}, 256]"]
    assert models.count_params(shapes.parameter_shapes(models.build(cfg.model))) == summary["params"]


def _tick_labels(svg: str, axis: str) -> list[str]:
    """The labels of the ticks matplotlib drew on `axis` ('x' or 'y'), in order (unlabelled minor
    ticks left out)."""
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ElementTree.fromstring(svg)
    ticks = [g for g in root.iterfind(".//s:g", ns) if g.get("id", "").startswith(f"{axis}tick_")]
    texts = [t for g in ticks for t in g.iterfind(".//s:text", ns)]
    return ["".join(t.itertext()).strip() for t in texts]


def _is_round_step(step: float) -> bool:
    """1, 2, 2.5, 4 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 4, 5, 10))


@pytest.mark.parametrize("log_y", [False, True])
def test_charts_have_round_ticks_a_legend_and_no_scripts(log_y):
    """The values that the hand-drawn charts labelled 5.523, 4.685 … and 16,421.175."""
    series = [
        charts.Series("loss", "#1f77b4", list(range(1, 301)), [5.523 - 0.0105 * i for i in range(300)]),
        charts.Series("val_loss", "#ff7f0e", [0, 100, 200, 300], [5.523, 4.685, 3.1, 2.38]),
    ]
    svg = charts.line_chart(series, "loss (nats per byte)", 720, 260, log_y=log_y)
    assert svg.startswith('<svg role="img" aria-label="loss (nats per byte)" width="720" height="260"')
    assert 'id="series-loss"' in svg and 'id="series-val_loss"' in svg and ">val_loss</text>" in svg  # legend
    assert "<script" not in svg and "http" not in svg.replace('xmlns="http', "").replace('xlink="http', "")
    xs = [float(t.replace(",", "")) for t in _tick_labels(svg, "x")]
    assert xs and all(x.is_integer() for x in xs) and _is_round_step(xs[1] - xs[0])
    ys = _tick_labels(svg, "y")
    if not log_y:
        values = [float(t) for t in ys]
        steps = {round(b - a, 9) for a, b in zip(values, values[1:], strict=False)}
        assert len(steps) == 1 and _is_round_step(steps.pop()), ys
    else:  # within less than a decade a log axis would have no labelled tick: linear ticks instead
        assert ys == _tick_labels(charts.line_chart(series, "loss (nats per byte)", 720, 260), "y")
    wide = [charts.Series("grad_norm", "#6a51a3", [1, 2, 3, 4], [0.5, 3.0, 20.0, 200.0])]
    decades = _tick_labels(charts.line_chart(wide, "grad_norm", 340, 170, log_y=True), "y")
    assert decades and all(math.log10(float(t)).is_integer() for t in decades), decades
    tokens = charts.line_chart([charts.Series("tokens_per_s", "#6a51a3", [1, 2, 3], [16421.175, 17030.5, 15500.2])],
                               "tokens_per_s", 340, 170)  # fmt: skip
    assert "16,421.175" not in tokens and all("," in t or float(t) < 1000 for t in _tick_labels(tokens, "y"))
