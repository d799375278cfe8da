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

from bytelm.errors import UsageError
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "a training run's folder")
_SCREENSHOT = flags.DEFINE_bool("screenshot", False, "also render the page to DIR/report.png in headless Chromium")
_SHAPES = flags.DEFINE_bool("shapes", False, "print the model's module and parameter shapes (needs --config)")
_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file, for --shapes")


def main() -> None:
    if _SHAPES.value:
        if _CONFIG.value is None:
            raise UsageError("--shapes needs --config=configs/NAME.py")
        from bytelm.reporting import shapes

        print(shapes.format_tables(_CONFIG.value.model, _CONFIG.value.train.batch_size))
        return
    if _WORKDIR.value is None:
        raise UsageError("pass --workdir=DIR (a run's folder), or --config=... --shapes")
    from bytelm.reporting import report

    print(report.write_report(_WORKDIR.value, screenshot=_SCREENSHOT.value))


if __name__ == "__main__":
    cli.run(main)
