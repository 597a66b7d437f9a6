"""A user's folder for tests: `mymods.py` with an autoencoder class in it, and commands run there in
fresh processes started the way the `ensemble` console script starts them (a script in another folder,
whose folder, not the current directory, comes first on the path), with PYTHONPATH holding only this
checkout, never the user's folder."""

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tests.tiny import TinyAE

ROOT = Path(__file__).resolve().parent.parent

# tests/tiny.py's autoencoder, as a user would save it in a module file of their own
MYMODS = "from torch import nn\n\n\n" + inspect.getsource(TinyAE).replace("class TinyAE(", "class AE(")

# what pip's console script `ensemble` runs
CONSOLE_SCRIPT = "import sys\nfrom ensemble.cli import main\nsys.exit(main())\n"


def user_folder(tmp_path: Path) -> Path:
    """The user's folder with mymods.py, and a launcher outside it (as the console script lives in bin/)."""
    work, bin_dir = tmp_path / "work", tmp_path / "bin"
    work.mkdir()
    bin_dir.mkdir()
    (work / "mymods.py").write_text(MYMODS)
    (bin_dir / "ensemble_cli.py").write_text(CONSOLE_SCRIPT)
    return work


def launched(folder: Path, script: str, *args: str, timeout: int = 600, env: Optional[dict] = None
             ) -> subprocess.CompletedProcess:
    """`script` (a file in the launcher's folder) run in `folder`, with only this checkout on PYTHONPATH
    (and `env`'s variables)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(folder.parent / "bin" / script), *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ensemble_command(folder: Path, *args: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return launched(folder, "ensemble_cli.py", *args, env=env)
