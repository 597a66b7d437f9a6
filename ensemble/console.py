"""What the command line prints besides a run's progress: the library's log records on stderr, and
Markdown tables aligned for a console. Only the CLI uses these (the steps publish to `observers.progress`)."""

from __future__ import annotations

import logging
import sys
import textwrap


class CommandLineLog(logging.Formatter):
    """The command line's rendering of the library's log records (logger `ensemble`): info as plain
    lines, warnings and worse with their level, as the CLI's own messages read."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class CurrentStderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record comes (a redirected or captured one too)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def command_line_logging(quiet: bool = False) -> None:
    """Show the `ensemble` logger's records on stderr (info too, unless `quiet`); once per process."""
    logger = logging.getLogger("ensemble")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if any(isinstance(h, CurrentStderr) for h in logger.handlers):
        return
    handler = CurrentStderr()
    handler.setFormatter(CommandLineLog("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False  # a root handler a user's or Ray's setup installed would print it twice


def wrapped(text: str, width: int = 100) -> str:
    """Prose lines wrapped to `width`; table rows (starting with '|') left whole."""
    out = []
    for line in text.splitlines():
        out += [line] if line.startswith("|") or len(line) <= width else textwrap.wrap(line, width)
    return "\n".join(out)


def aligned(markdown: str) -> str:
    """Markdown pipe tables with their columns padded to one width: aligned in a console and still
    markdown (the same text renders in report.md); prose wrapped at 100 characters."""
    lines, out, block = markdown.splitlines(), [], []
    for line in lines + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            columns = max(len(row) for row in block)
            widths = [max(len(row[i]) if i < len(row) else 0 for row in block) for i in range(columns)]
            for row in block:
                cells = [("-" * widths[i] if set(cell) <= {"-"} and cell else cell.ljust(widths[i]))
                         for i, cell in enumerate(row)]
                out.append("| " + " | ".join(cells) + " |")
            block = []
        out.append(line)
    return wrapped("\n".join(out[:-1]))
