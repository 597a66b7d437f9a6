"""A user's folder for tests: `mymods.py` with an autoencoder class in it, and commands run there in
fresh processes started the way the `ensemble` console script starts them (a script in another folder,
whose folder, not the current directory, comes first on the path), with PYTHONPATH holding only this
checkout, never the user's folder."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent

MYMODS = '''
from torch import nn


class AE(nn.Module):
    """A user's autoencoder for 8 x 8 digits, in the folder the user works in."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        hidden = max(1, round(10 * width))
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
        self.dec = nn.Sequential(nn.Linear(hidden, 64), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x):
        return self.enc(x)

    def forward(self, x):
        return self.dec(self.enc(x))
'''

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
