"""Fetches known corpora into data/real/text/, verified by size and digest.

    python -m launch.download_data --tiny_shakespeare
    BYTELM_DATA_MIRROR=../shared/data python -m launch.download_data --tiny_shakespeare
    python -m launch.download_data --tiny_shakespeare --source=/path/to/input.txt

Sources, first given wins: --source, $BYTELM_DATA_MIRROR (a folder holding the mirror paths),
the canonical URL. A re-run with the right file already in place does nothing.
"""

from absl import flags

from bytelm.data import download
from bytelm.errors import UsageError
from launch import cli

_CORPORA = {
    name: flags.DEFINE_bool(name, False, f"fetch {name} ({c.size:,} bytes)")
    for name, c in download.KNOWN_CORPORA.items()
}
_SOURCE = flags.DEFINE_string("source", "", "a file path or URL to fetch from (wins over the mirror and the URL)")
_DATA_DIR = flags.DEFINE_string("data_dir", download.DEFAULT_DATA_DIR, "where corpora land")


def main() -> None:
    chosen = [name for name, flag in _CORPORA.items() if flag.value]
    if not chosen:
        raise UsageError("name a corpus to fetch: " + " or ".join(c.flag for c in download.KNOWN_CORPORA.values()))
    if _SOURCE.value and len(chosen) > 1:
        raise UsageError("--source names one file: fetch one corpus at a time with it")
    for name in chosen:
        print(download.fetch_and_say(name, _DATA_DIR.value, source=_SOURCE.value or None))


if __name__ == "__main__":
    cli.run(main)
