"""The README's headline numbers, generated from a report's summary table so they cannot drift:
`python -m benchmarks.report results/quickstart --readme README.md` rewrites what lies between the two
markers below (and nothing else)."""
from __future__ import annotations

from pathlib import Path

from molere.config import ConfigError

BEGIN = "<!-- report-summary:begin (generated: python -m benchmarks.report STORE --readme README.md) -->"
END = "<!-- report-summary:end -->"


def summary_block(table, source: str, counts: dict) -> str:
    """The summary table as Markdown (bold cells marked), its legend and where it came from."""
    cols = list(table.frame.columns)
    cell = lambda i, c: (f"**{table.frame.at[i, c]}**" if (i, c) in table.bold else str(table.frame.at[i, c]))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(i, c).replace("|", "\\|") for c in cols) + " |" for i in table.frame.index]
    done = ", ".join(f"{v} {k}" for k, v in counts.items())
    return "\n".join([*lines, "", table.legend, f"Generated from `{source}` ({done}) by "
                      f"`python -m benchmarks.report {source} --readme README.md`."])


def _parts(path: Path) -> tuple[str, str]:
    """(text before BEGIN, text after END); ConfigError (one line) when unreadable or a marker is missing."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--readme: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ConfigError(f"--readme: {path} has no '{BEGIN[:28]}...' and '{END}' marker lines to write between")
    return head, tail


def check_readme(path: str | Path) -> None:
    _parts(Path(path))


def write_readme(path: str | Path, block: str) -> None:
    """Replace the text between BEGIN and END in `path`, nothing else."""
    head, tail = _parts(Path(path))
    Path(path).write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")
