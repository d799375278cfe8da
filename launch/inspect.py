"""Looks at a run, or at a model before any run.

python -m launch.inspect --workdir=runs/gpt2_tiny [--screenshot]
    writes DIR/report.html (one self-contained page: summary, curves, probes, sample, parameter
    table, config), prints a short summary and the page's path; --screenshot also renders the
    page in headless Chromium to DIR/report.png.
python -m launch.inspect --config=configs/gpt2_tiny.py --shapes
    prints every module's input and output shapes and every parameter's shape, inferred with
    jax.eval_shape: nothing is trained or allocated.
"""

from absl import flags
from ml_collections import config_flags

from bytelm import atomic_io, browser, report, shapes
from bytelm.errors import UsageError
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "a training run's folder")
_SCREENSHOT = flags.DEFINE_bool("screenshot", False, "also render the page to DIR/report.png in headless Chromium")
_SHAPES = flags.DEFINE_bool("shapes", False, "print the model's module and parameter shapes (needs --config)")
_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file, for --shapes")

REPORT_FILE = "report.html"
SCREENSHOT_FILE = "report.png"


def main() -> None:
    if _SHAPES.value:
        if _CONFIG.value is None:
            raise UsageError("--shapes needs --config=configs/NAME.py")
        print(shapes.format_tables(_CONFIG.value.model, _CONFIG.value.train.batch_size))
        return
    if _WORKDIR.value is None:
        raise UsageError("pass --workdir=DIR (a run's folder), or --config=... --shapes")
    page, warnings, log = report.build(_WORKDIR.value)
    path = f"{_WORKDIR.value}/{REPORT_FILE}"
    atomic_io.atomic_write_text(path, page)
    print(report.text_summary(log, path, warnings))
    if _SCREENSHOT.value:
        browser.screenshot(path, f"{_WORKDIR.value}/{SCREENSHOT_FILE}")
        print(f"screenshot: {_WORKDIR.value}/{SCREENSHOT_FILE}")


if __name__ == "__main__":
    cli.run(main)
